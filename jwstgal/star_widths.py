"""How wide the stars of an image are, against the PSF it should have.

A product convolved to a rung of the resolution ladder should show every point source with the
rung's PSF. :func:`star_fwhms` fits each star (a circular Gaussian on a tilted plane, in a box of
a few FWHM) and :func:`expected_fwhm` fits the rung's PSF the same way, drawn on the product's
pixels at a spread of sub-pixel phases: their ratio measures the PSF matching whatever the PSF's
shape (a Gaussian fit to a non-Gaussian PSF has its own width, the same in both).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from scipy.optimize import least_squares

log = logging.getLogger(__name__)

#: Box half-size around a star, in FWHMs of the expected PSF.
BOX_FWHM = 1.5
#: A star with another catalogue star nearer than this (in FWHMs) is not measured.
ISOLATION_FWHM = 3.0
#: Least peak signal-to-noise (against the fit's residual) of a measured star.
MIN_SNR = 30.0


def _fit(box: np.ndarray, fwhm0: float) -> tuple[float, float, float]:
    """Gaussian FWHM, peak/residual ratio and centre offset of the star in the middle of ``box``."""
    h = box.shape[0] // 2
    yy, xx = np.indices(box.shape) - h
    ok = np.isfinite(box)
    y, x, d = yy[ok], xx[ok], box[ok]
    s0 = fwhm0 / 2.3548
    edge = np.median(np.concatenate([box[0], box[-1], box[:, 0], box[:, -1]]))

    def model(p: np.ndarray) -> np.ndarray:
        amp, x0, y0, sig, c, gx, gy = p
        return amp * np.exp(-0.5 * ((x - x0) ** 2 + (y - y0) ** 2) / sig**2) + c + gx * x + gy * y

    p0 = [float(np.nanmax(box) - edge), 0.0, 0.0, s0, float(edge), 0.0, 0.0]
    res = least_squares(lambda p: model(p) - d, p0, method="lm", max_nfev=400)
    amp, x0, y0, sig = res.x[:4]
    rms = float(np.std(res.fun)) or 1e-30
    return float(2.3548 * abs(sig)), float(amp / rms), float(np.hypot(x0, y0))


@dataclass(frozen=True)
class WidthMeasure:
    """The stars measured in one image.

    Attributes
    ----------
    fwhm : numpy.ndarray
        Each measured star's Gaussian-fit FWHM (pixels).
    expected : float
        The same fit to the PSF the image should have (pixels).
    """

    fwhm: np.ndarray
    expected: float

    @property
    def n(self) -> int:
        """Stars measured."""
        return int(self.fwhm.size)

    @property
    def ratio(self) -> float:
        """Median measured FWHM over the expected one (NaN without stars)."""
        return float(np.median(self.fwhm) / self.expected) if self.n else float("nan")

    @property
    def ratio_err(self) -> float:
        """Error of :attr:`ratio` from the stars' spread (NaN with fewer than 3)."""
        if self.n < 3:
            return float("nan")
        mad = 1.4826 * np.median(np.abs(self.fwhm - np.median(self.fwhm)))
        return float(1.2533 * mad / np.sqrt(self.n) / self.expected)


def star_fwhms(image: np.ndarray, x: np.ndarray, y: np.ndarray, fwhm_pix: float, *,
               isolation: float = ISOLATION_FWHM, min_snr: float = MIN_SNR) -> np.ndarray:
    """Gaussian-fit FWHMs (pixels) of the isolated, bright, fully covered stars at ``(x, y)``.

    Parameters
    ----------
    image : numpy.ndarray
        The image (NaN or 0 where nothing was observed).
    x, y : numpy.ndarray
        Zero-based pixel positions of catalogue stars (all of them: they also decide isolation).
    fwhm_pix : float
        The expected FWHM (pixels): it sets the box, the isolation and the first guess.
    isolation, min_snr : float
        See :data:`ISOLATION_FWHM`, :data:`MIN_SNR`.
    """
    x, y = np.asarray(x, float), np.asarray(y, float)
    h = max(3, int(np.ceil(BOX_FWHM * fwhm_pix)))
    ny, nx = image.shape
    inside = (x >= h) & (y >= h) & (x < nx - h - 1) & (y < ny - h - 1)
    idx = np.nonzero(inside)[0]
    if idx.size == 0:
        return np.empty(0)
    near = np.hypot(x[idx, None] - x[None, :], y[idx, None] - y[None, :])
    near[np.arange(idx.size), idx] = np.inf
    idx = idx[near.min(axis=1) > isolation * fwhm_pix]
    out = []
    for i in idx:
        cx, cy = round(x[i]), round(y[i])
        box = np.asarray(image[cy - h:cy + h + 1, cx - h:cx + h + 1], float)
        if not np.isfinite(box).all() or (box == 0).any():
            continue
        try:
            fwhm, snr, moved = _fit(box, fwhm_pix)
        except (ValueError, RuntimeError):
            continue
        if snr >= min_snr and moved < 0.5 * fwhm_pix and 0.5 < fwhm / fwhm_pix < 2:
            out.append(fwhm)
    return np.asarray(out)


def expected_fwhm(over: np.ndarray, oversample: int, fwhm_pix: float, phases: int = 3) -> float:
    """The Gaussian-fit FWHM (pixels) of a PSF drawn on the pixels, averaged over sub-pixel phases.

    Parameters
    ----------
    over : numpy.ndarray
        The PSF sampled ``oversample`` times finer than the image's pixels, centred on the array.
    oversample : int
        Its oversampling.
    fwhm_pix : float
        A first guess of the FWHM (pixels).
    phases : int
        Phases per axis, spread over the pixel.
    """
    from scipy import ndimage

    from jwstgal.psfs import pixel_integrated

    h = max(3, int(np.ceil(BOX_FWHM * fwhm_pix)))
    spline = ndimage.spline_filter(np.asarray(over, float), order=3)
    steps = (np.arange(phases) + 0.5) / phases - 0.5
    return float(np.mean([_fit(pixel_integrated(over, oversample, h, (px, py), spline), fwhm_pix)[0]
                          for px in steps for py in steps]))
