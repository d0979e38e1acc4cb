"""Drawing the simulated sky through a model PSF, integrated over the detector pixels (issue #26 item 4)."""

from __future__ import annotations

import numpy as np
import pytest

from jwstgal.psfs import PSF, pixel_integrated
from jwstgal.simulate.psf_render import detector_psf, render_scene
from jwstgal.simulate.sky import render_points

OS = 4


def _gaussian_psf(fwhm_pix: float, pixel: float = 0.1, n: int = 201) -> PSF:
    sig = fwhm_pix * OS / 2.3548
    yy, xx = np.mgrid[0:n, 0:n] - (n - 1) / 2
    g = np.exp(-0.5 * (xx**2 + yy**2) / sig**2)
    return PSF("g", g / g.sum(), pixel / OS, "Gaussian")


def _moffat_psf(fwhm_pix: float, beta: float = 2.5, pixel: float = 0.1, n: int = 401,
                scale: float = 1.0) -> PSF:
    """A Moffat (broad wings, unlike a Gaussian) sampled ``OS * scale`` times finer than ``pixel``."""
    alpha = fwhm_pix * OS * scale / (2 * np.sqrt(2 ** (1 / beta) - 1))
    yy, xx = np.mgrid[0:n, 0:n] - (n - 1) / 2
    m = (1 + (xx**2 + yy**2) / alpha**2) ** -beta
    return PSF("m", m / m.sum(), pixel / OS / scale, "Moffat")


def _moments(img: np.ndarray) -> tuple[float, float]:
    yy, xx = np.indices(img.shape)
    return float((img * xx).sum() / img.sum()), float((img * yy).sum() / img.sum())


@pytest.mark.parametrize("phase", [(0.0, 0.0), (0.3, -0.2), (0.5, 0.5), (-0.45, 0.12)])
def test_a_gaussian_integrated_over_pixels_matches_the_exact_integral(phase):
    """A Gaussian PSF drawn this way equals the erf-integrated Gaussian of the old simulator to 1 %
    of the peak, at any sub-pixel phase, with the star's centroid where it was put."""
    d = detector_psf(_gaussian_psf(2.3), 0.1, OS)
    got = pixel_integrated(d.over, OS, 10, phase, d.spline)
    exact = render_points((21, 21), np.array([10 + phase[0]]), np.array([10 + phase[1]]), np.array([1.0]),
                          2.3, stamp=10)
    assert np.abs(got - exact).max() < 0.01 * exact.max()
    assert got.sum() == pytest.approx(1.0, abs=1e-4)
    cx, cy = _moments(got)
    assert cx - 10 == pytest.approx(phase[0], abs=2e-3) and cy - 10 == pytest.approx(phase[1], abs=2e-3)


def test_a_psf_of_another_pixel_scale_is_resampled_to_the_detector():
    """A PSF sampled 1.3x finer than ``pixel / oversample`` gives the same pixels as one sampled at it."""
    fine = detector_psf(_moffat_psf(3.0, scale=1.3, n=521), 0.1, OS)
    ref = detector_psf(_moffat_psf(3.0), 0.1, OS)
    a = pixel_integrated(fine.over, OS, 12, (0.2, 0.1), fine.spline)
    b = pixel_integrated(ref.over, OS, 12, (0.2, 0.1), ref.spline)
    assert np.abs(a - b).max() < 0.005 * b.max()


def test_a_scene_keeps_flux_centroids_and_uniform_light():
    """Through a broad-winged PSF: a star keeps its flux and position (its core is redrawn at its own
    phase), a uniform extended image stays uniform (light from outside the detector is scattered in),
    and a star off the detector's edge still sheds its wing onto it."""
    d = detector_psf(_moffat_psf(2.5), 0.1, OS)
    pad = d.full.shape[0] // 2
    n = 96
    x, y, f = np.array([40.37, 70.81, -6.0]), np.array([30.62, 60.05, 48.0]), np.array([1.0, 2.0, 50.0])
    img = render_scene(np.full((n + 2 * pad, n + 2 * pad), 0.25), x, y, f, d, pad)
    assert img.shape == (n, n)
    alone = render_scene(np.zeros((n + 2 * pad, n + 2 * pad)), x[:2], y[:2], f[:2], d, pad)
    assert np.abs(img - alone - 0.25)[:, 30:].max() < 1e-9 + 0.25 * 1e-3  # uniform light stays uniform
    for xi, yi in zip(x[:2], y[:2], strict=True):
        box = alone[round(yi) - 8:round(yi) + 9, round(xi) - 8:round(xi) + 9]
        cx, cy = _moments(box - np.median(alone))
        assert cx + round(xi) - 8 == pytest.approx(xi, abs=0.01)
        assert cy + round(yi) - 8 == pytest.approx(yi, abs=0.01)
    edge = img - render_scene(np.full((n + 2 * pad, n + 2 * pad), 0.25), x[:2], y[:2], f[:2], d, pad)
    assert edge[48, 0] > edge[48, 5] > 0            # the off-detector star's wing
    whole = render_scene(np.zeros((n + 2 * pad, n + 2 * pad)), x[:1], y[:1], f[:1], d, pad)
    assert whole.sum() == pytest.approx(1.0, rel=0.02)   # the Moffat's far wing leaves the detector


@pytest.mark.parametrize("phase", [(0.0, 0.0), (0.25, -0.4), (0.5, 0.5)])
def test_stars_are_wider_than_the_optical_psf_by_the_pixel_box(phase):
    """A star drawn through a Moffat PSF has the optical PSF's second moment plus one pixel's box, at
    any phase, within 0.5 %: the pixels integrate the PSF. The box is the sum of ``OS`` samples per
    axis (variance ``(OS^2 - 1) / (12 OS^2)`` pixel^2, 1/12 as OS grows), as stpsf bins its
    oversampled PSF into its detector-sampled one."""
    d = detector_psf(_moffat_psf(2.0, n=801), 0.1, OS)
    yy, xx = (np.indices(d.over.shape) - (d.over.shape[0] - 1) / 2) / OS
    optical = float(np.sum(d.over * (xx**2 + yy**2)))
    half = d.over.shape[0] // OS // 2 + 1
    img = pixel_integrated(d.over, OS, half, phase, d.spline)
    yy, xx = np.indices(img.shape) - half
    drawn = float(np.sum(img * ((xx - phase[0]) ** 2 + (yy - phase[1]) ** 2)) / img.sum())
    box = 2 * (OS**2 - 1) / (12 * OS**2)
    assert drawn == pytest.approx(optical + box, rel=0.005)
    assert drawn - optical == pytest.approx(box, rel=0.02)
