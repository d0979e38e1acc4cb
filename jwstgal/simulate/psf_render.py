"""Draw a band's sky through a model PSF, integrated over the detector's pixels.

A detector pixel collects the optical PSF (stpsf's oversampled product, or any PSF the kernels are
built from) over its area; a star's image depends on where in the pixel it falls. Drawing the
simulated sky this way, with the same PSF the PSF-matching kernels start from, lets the demo check
its own resolution ladder: a kernel that is right turns the simulated stars into the target PSF.

- :func:`jwstgal.psfs.pixel_integrated` samples an oversampled PSF onto detector pixels for a star at any
  sub-pixel phase (cubic-spline resampling of the oversampled grid, then sums over the
  ``oversample x oversample`` blocks).
- :func:`render_scene` convolves an extended image (sampled at pixel centres) and point sources with
  the pixel-integrated PSF: one FFT convolution of the image and of the stars placed on their nearest
  pixel, then each star's core is redrawn at its own phase.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from scipy.signal import fftconvolve

from jwstgal.psfs import PSF, pixel_integrated

log = logging.getLogger(__name__)

#: Half-size of a star's phase-exact core, in PSF FWHMs (at least :data:`MIN_CORE_PIX` pixels):
#: beyond it a star is drawn centred on its nearest pixel (the wing moves < 0.5 pixel).
CORE_FWHM = 3.0
#: Smallest core half-size, detector pixels.
MIN_CORE_PIX = 8


@dataclass(frozen=True)
class DetectorPSF:
    """A PSF ready to draw on one detector.

    Attributes
    ----------
    over : numpy.ndarray
        The PSF oversampled ``oversample`` times relative to the detector pixel, unit sum, centred
        on the array's centre.
    spline : numpy.ndarray
        Its cubic-spline coefficients.
    oversample : int
        Oversampling factor.
    full : numpy.ndarray
        The whole PSF integrated over detector pixels for a star at a pixel's centre (odd size,
        centred on the middle pixel).
    core : int
        Half-size (pixels) of the cores redrawn at each star's phase.
    name : str
        The PSF's description (for the truth records).
    """

    over: np.ndarray
    spline: np.ndarray
    oversample: int
    full: np.ndarray
    core: int
    name: str


def detector_psf(psf: PSF, pixel_scale: float, oversample: int = 4) -> DetectorPSF:
    """Prepare a PSF (any pixel scale) for drawing on a detector of ``pixel_scale`` arcsec.

    The PSF is resampled to ``pixel_scale / oversample`` (cubic spline, unit sum, its centroid on
    the middle sample) and integrated over an odd number of detector pixels that holds all of it.
    """
    from jwstgal.kernels import resample_psf

    target = pixel_scale / oversample
    size = int(np.ceil(max(psf.data.shape) * psf.pixscale / target)) | 1
    data = resample_psf(psf.data, psf.pixscale, target, size)     # centred on the middle sample
    half = int(np.ceil(size / oversample / 2))
    full = pixel_integrated(data, oversample, half)
    fwhm_pix = _fwhm_pixels(data) / oversample
    core = max(MIN_CORE_PIX, int(np.ceil(CORE_FWHM * fwhm_pix)))
    spline = ndimage.spline_filter(data, order=3)
    return DetectorPSF(data, spline, oversample, full, min(core, half), psf.origin)


def _fwhm_pixels(img: np.ndarray) -> float:
    """Width (pixels) of the area above half the peak, as a circle's diameter."""
    return float(2 * np.sqrt(np.count_nonzero(img >= 0.5 * img.max()) / np.pi))


def render_scene(extended: np.ndarray, x: np.ndarray, y: np.ndarray, flux: np.ndarray, psf: DetectorPSF,
                 pad: int) -> np.ndarray:
    """An image seen through the PSF and integrated over pixels.

    Parameters
    ----------
    extended : numpy.ndarray
        Extended emission at the pixel centres of the detector grown by ``pad`` pixels on each
        side (so that light from outside the detector is scattered in).
    x, y : numpy.ndarray
        Point sources' zero-based positions on the detector (not the grown grid).
    flux : numpy.ndarray
        Their total fluxes (the image's unit per pixel).
    psf : DetectorPSF
        The PSF.
    pad : int
        Width of the extra border of ``extended``.

    Returns
    -------
    numpy.ndarray
        The detector's image (``extended``'s shape less the border).
    """
    ny, nx = extended.shape[0] - 2 * pad, extended.shape[1] - 2 * pad
    points = np.zeros_like(extended, dtype=float)
    ix, iy = np.round(x).astype(int), np.round(y).astype(int)
    h = psf.core
    inside = (ix >= -pad) & (iy >= -pad) & (ix < nx + pad) & (iy < ny + pad)
    np.add.at(points, (iy[inside] + pad, ix[inside] + pad), flux[inside])
    image = fftconvolve(extended + points, psf.full, mode="same")[pad:pad + ny, pad:pad + nx]
    centre = psf.full.shape[0] // 2
    core0 = psf.full[centre - h:centre + h + 1, centre - h:centre + h + 1]
    near = (ix >= -h) & (iy >= -h) & (ix < nx + h) & (iy < ny + h)
    for xi, yi, cx, cy, fi in zip(x[near], y[near], ix[near], iy[near], flux[near], strict=True):
        fix = fi * (pixel_integrated(psf.over, psf.oversample, h, (xi - cx, yi - cy), psf.spline) - core0)
        y0, x0 = cy - h, cx - h
        sy = slice(max(y0, 0), min(y0 + 2 * h + 1, ny))
        sx = slice(max(x0, 0), min(x0 + 2 * h + 1, nx))
        image[sy, sx] += fix[sy.start - y0:sy.stop - y0, sx.start - x0:sx.stop - x0]
    return image
