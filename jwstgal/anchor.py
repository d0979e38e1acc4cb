"""Background anchoring: the additive offset that puts a mosaic on the zero point of a reference map.

JWST mosaics lose the absolute sky level (the background is subtracted or matched, never measured).
A lower-resolution map that keeps it (Spitzer, WISE) anchors it: at the same resolution and on the
same grid, pixel pairs follow ``JWST = slope x reference + intercept``; the mosaic's offset is
``-intercept``. The fit is made on binned data, as in the PHANGS-JWST anchoring: pixels are binned
by the reference intensity over a range of its percentiles, the median JWST value of each bin (and
its 16th/84th percentiles) is taken, and a line is fitted to the bin medians weighted by the error
of each median, with iterative sigma clipping of outlying bins. Binning by the reference keeps
bright compact sources (which the two maps see differently) from steering the fit.

Bands anchored internally (against the instrument's reference band, at a common resolution) get
``offset = -intercept + slope x offset_ref`` (:func:`chained_offset`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BinnedFit:
    """A robust line fit of ``y = slope x + intercept`` to binned pixel pairs.

    Attributes
    ----------
    slope, intercept : float
        The line.
    slope_err, intercept_err : float
        1-sigma uncertainties (from the fit covariance, scaled up by the reduced chi^2 when > 1).
    npix : int
        Pixels in the bins used.
    x_bin, y_median, y_p16, y_p84, n_bin : numpy.ndarray
        Per bin: median x, median y, 16th/84th percentile of y, pixel count.
    used : numpy.ndarray
        Bins kept by the clipping.
    """

    slope: float
    intercept: float
    slope_err: float
    intercept_err: float
    npix: int
    x_bin: np.ndarray
    y_median: np.ndarray
    y_p16: np.ndarray
    y_p84: np.ndarray
    n_bin: np.ndarray
    used: np.ndarray

    @property
    def offset(self) -> float:
        """The additive offset that removes the intercept (``-intercept``)."""
        return -self.intercept


def binned_fit(
    x: np.ndarray,
    y: np.ndarray,
    *,
    x_range: tuple[float, float] = (1.0, 95.0),
    n_bins: int = 20,
    min_per_bin: int = 10,
    clip_sigma: float = 3.0,
    max_iter: int = 5,
) -> BinnedFit:
    """Fit ``y = slope x + intercept`` to pixel pairs binned by ``x``.

    Parameters
    ----------
    x, y : numpy.ndarray
        Reference and JWST values of the same pixels (any shape; non-finite pairs are ignored).
    x_range : tuple of float
        Percentiles of ``x`` spanned by the bins.
    n_bins : int
        Number of equal-width bins in ``x``.
    min_per_bin : int
        Bins with fewer pixels are not used.
    clip_sigma : float
        Bins further than this many errors from the line are dropped, and the line refitted.
    max_iter : int
        Most clipping iterations.

    Returns
    -------
    BinnedFit

    Raises
    ------
    ValueError
        If fewer than three bins are usable (no line can be fitted with an error).
    """
    x, y = np.ravel(x).astype(float), np.ravel(y).astype(float)
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    if x.size < 3 * min_per_bin:
        msg = f"only {x.size} valid pixel pairs: too few to fit (need {3 * min_per_bin})"
        raise ValueError(msg)
    lo, hi = np.percentile(x, x_range)
    edges = np.linspace(lo, hi, n_bins + 1)
    idx = np.digitize(x, edges) - 1
    rows = []
    for i in range(n_bins):
        sel = idx == i
        n = int(sel.sum())
        if n < min_per_bin:
            continue
        xs, ys = x[sel], y[sel]
        p16, med, p84 = np.percentile(ys, [16, 50, 84])
        rows.append((np.median(xs), med, p16, p84, n))
    if len(rows) < 3:
        msg = f"only {len(rows)} bins with >= {min_per_bin} pixels between percentiles {x_range}"
        raise ValueError(msg)
    xb, yb, p16, p84, nb = (np.array(c) for c in zip(*rows, strict=True))
    # error of a median: 1.253 sigma / sqrt(n), sigma from the 16-84 spread (floored for flat bins)
    spread = np.maximum((p84 - p16) / 2, 1e-6 * max(np.abs(yb).max(), 1e-30))
    err = 1.2533 * spread / np.sqrt(nb)
    used = np.ones(xb.size, bool)
    for _ in range(max_iter):
        coef, cov = np.polyfit(xb[used], yb[used], 1, w=1 / err[used], cov="unscaled")
        resid = np.abs(yb - np.polyval(coef, xb)) / err
        new = resid <= clip_sigma * max(1.0, float(np.median(resid[used])) / 0.6745)
        if new.sum() < 3 or np.array_equal(new, used):
            break
        used = new
    coef, cov = np.polyfit(xb[used], yb[used], 1, w=1 / err[used], cov="unscaled")
    dof = max(int(used.sum()) - 2, 1)
    chi2 = float(np.sum(((yb[used] - np.polyval(coef, xb[used])) / err[used]) ** 2)) / dof
    cov = cov * max(chi2, 1.0)
    return BinnedFit(float(coef[0]), float(coef[1]), float(np.sqrt(cov[0, 0])), float(np.sqrt(cov[1, 1])),
                     int(nb[used].sum()), xb, yb, p16, p84, nb, used)


def chained_offset(fit: BinnedFit, offset_ref: float, offset_ref_err: float) -> tuple[float, float]:
    """Offset (and error) of a band fitted against a reference band that is itself offset.

    With ``band = slope x ref + intercept`` and the reference anchored by ``offset_ref``, the band
    on the same zero point needs ``-intercept + slope x offset_ref``.
    """
    off = -fit.intercept + fit.slope * offset_ref
    err = float(np.sqrt(fit.intercept_err**2 + (fit.slope * offset_ref_err) ** 2
                        + (fit.slope_err * offset_ref) ** 2))
    return float(off), err
