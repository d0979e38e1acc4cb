"""Background anchoring: the additive offset that puts a mosaic on the zero point of a reference map.

JWST mosaics lose the absolute sky level (the background is subtracted or matched, never measured).
A lower-resolution map that keeps it (Spitzer, WISE) anchors it: at the same resolution and on the
same grid, pixel pairs follow ``JWST = f(reference)`` with ``f(0)`` the mosaic's zero point; the
mosaic's offset is ``-f(0)``. The fit is made on binned data, as in the PHANGS-JWST anchoring:
pixels are binned by the reference intensity over a range of its percentiles, the median JWST value
of each bin (and its 16th/84th percentiles) is taken, and a polynomial is fitted to the bin medians
weighted by the error of each median, with iterative sigma clipping of outlying bins. Binning by the
reference keeps bright compact sources (which the two maps see differently) from steering the fit.

Two bands are not scaled copies of each other: discs, arms and clumps have other colours, so a
line through pixels of changing colour has an intercept even with perfect zero points.
:func:`estimate_offset` measures how far the zero point moves between spatial sub-regions of the
field: that spread is the systematic error, quoted next to the statistical one. On 200 simulated
band pairs with random colours, offsets, slopes and noise (:mod:`jwstgal.simulate.colours`), a line
and a line with a free colour term (a quadratic) are about as accurate (median error 0.007 vs
0.008 MJy/sr for chained bands), so the line is the default; with the sub-region spread, 73-77 % of
the truths lie within the quoted 1 sigma and 94-95 % within 2 sigma, where the statistical error
alone holds 8-23 % (``tests/test_anchor_coverage.py``, on 40 of them). Where the fit must be read
far outside its bins (a field that never gets faint), the data cannot say how the colour goes on:
the difference between a line and a colour term is then added to the systematic error
(:data:`MAX_EXTRAPOLATION`).

A band anchored against another band that is itself anchored (offset ``o_ref``) is evaluated where
the anchored reference is zero: ``offset = -f(-o_ref)``, with ``f'(-o_ref) x err(o_ref)`` added to
its statistical error.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

log = logging.getLogger(__name__)

#: What a fit of each degree is called in tables and plots.
METHOD_NAMES = {1: "line", 2: "colour term"}
#: How far outside its bins (in units of their span) a fit is read before the line-vs-colour-term
#: difference joins the systematic error. The simulated cases of the coverage test reach 0.25; within
#: them the sub-region spread alone covers the truth as a 1-sigma error should.
MAX_EXTRAPOLATION = 0.3


@dataclass(frozen=True)
class BinnedFit:
    """A robust polynomial fit ``y = f(x)`` to binned pixel pairs.

    Attributes
    ----------
    coef : numpy.ndarray
        Polynomial coefficients, highest power first (:func:`numpy.polyval` order).
    cov : numpy.ndarray
        Their covariance (scaled up by the reduced chi^2 when > 1).
    npix : int
        Pixels in the bins used.
    x_bin, y_median, y_p16, y_p84, n_bin : numpy.ndarray
        Per bin: median x, median y, 16th/84th percentile of y, pixel count.
    used : numpy.ndarray
        Bins kept by the clipping.
    """

    coef: np.ndarray
    cov: np.ndarray
    npix: int
    x_bin: np.ndarray
    y_median: np.ndarray
    y_p16: np.ndarray
    y_p84: np.ndarray
    n_bin: np.ndarray
    used: np.ndarray

    @property
    def degree(self) -> int:
        """Degree of the polynomial (1: a line)."""
        return len(self.coef) - 1

    @property
    def slope(self) -> float:
        """``f'(0)``: the slope of a line, the linear coefficient of a polynomial."""
        return float(self.coef[-2])

    @property
    def slope_err(self) -> float:
        """1-sigma error of :attr:`slope`."""
        return float(np.sqrt(self.cov[-2, -2]))

    @property
    def intercept(self) -> float:
        """``f(0)``."""
        return float(self.coef[-1])

    @property
    def intercept_err(self) -> float:
        """1-sigma error of :attr:`intercept`."""
        return float(np.sqrt(self.cov[-1, -1]))

    @property
    def curvature(self) -> float:
        """The quadratic coefficient (0 for a line)."""
        return float(self.coef[0]) if self.degree == 2 else 0.0

    @property
    def mean_slope(self) -> float:
        """Slope of the chord over the bins used: what a line through them would have."""
        xs = self.x_bin[self.used]
        lo, hi = float(xs.min()), float(xs.max())
        return float((np.polyval(self.coef, hi) - np.polyval(self.coef, lo)) / (hi - lo))

    @property
    def offset(self) -> float:
        """The additive offset that removes ``f(0)`` (``-intercept``)."""
        return -self.intercept

    def value(self, x0: float) -> tuple[float, float]:
        """``f(x0)`` and its 1-sigma error."""
        v = np.array([x0**k for k in range(self.degree, -1, -1)])
        return float(v @ self.coef), float(np.sqrt(max(float(v @ self.cov @ v), 0.0)))

    def derivative(self, x0: float) -> float:
        """``f'(x0)``."""
        return float(np.polyval(np.polyder(self.coef), x0))


def binned_fit(
    x: np.ndarray,
    y: np.ndarray,
    *,
    degree: int = 1,
    x_range: tuple[float, float] = (1.0, 95.0),
    n_bins: int = 20,
    min_per_bin: int = 10,
    clip_sigma: float = 3.0,
    max_iter: int = 5,
) -> BinnedFit:
    """Fit ``y = f(x)`` (a polynomial of ``degree``) to pixel pairs binned by ``x``.

    Parameters
    ----------
    x, y : numpy.ndarray
        Reference and JWST values of the same pixels (any shape; non-finite pairs are ignored).
    degree : int
        1 (a line) or 2 (a line with a colour term).
    x_range : tuple of float
        Percentiles of ``x`` spanned by the bins.
    n_bins : int
        Number of equal-width bins in ``x``.
    min_per_bin : int
        Bins with fewer pixels are not used.
    clip_sigma : float
        Bins further than this many errors from the fit are dropped, and the fit repeated.
    max_iter : int
        Most clipping iterations.

    Returns
    -------
    BinnedFit

    Raises
    ------
    ValueError
        If there are too few pairs, or too few usable bins to fit with an error.
    """
    if degree not in METHOD_NAMES:
        msg = f"degree must be one of {sorted(METHOD_NAMES)}, got {degree}"
        raise ValueError(msg)
    x, y = np.ravel(x).astype(float), np.ravel(y).astype(float)
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    need_bins = degree + 2
    if x.size < need_bins * min_per_bin:
        msg = f"only {x.size} valid pixel pairs: too few to fit (need {need_bins * min_per_bin})"
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
    if len(rows) < need_bins:
        msg = (f"only {len(rows)} bins with >= {min_per_bin} pixels between percentiles {x_range} "
               f"(need {need_bins})")
        raise ValueError(msg)
    xb, yb, p16, p84, nb = (np.array(c) for c in zip(*rows, strict=True))
    # error of a median: 1.253 sigma / sqrt(n), sigma from the 16-84 spread (floored for flat bins)
    spread = np.maximum((p84 - p16) / 2, 1e-6 * max(np.abs(yb).max(), 1e-30))
    err = 1.2533 * spread / np.sqrt(nb)
    used = np.ones(xb.size, bool)
    for _ in range(max_iter):
        coef = np.polyfit(xb[used], yb[used], degree, w=1 / err[used])
        resid = np.abs(yb - np.polyval(coef, xb)) / err
        new = resid <= clip_sigma * max(1.0, float(np.median(resid[used])) / 0.6745)
        if new.sum() < need_bins or np.array_equal(new, used):
            break
        used = new
    coef, cov = np.polyfit(xb[used], yb[used], degree, w=1 / err[used], cov="unscaled")
    dof = max(int(used.sum()) - degree - 1, 1)
    chi2 = float(np.sum(((yb[used] - np.polyval(coef, xb[used])) / err[used]) ** 2)) / dof
    return BinnedFit(np.asarray(coef, float), np.asarray(cov, float) * max(chi2, 1.0),
                     int(nb[used].sum()), xb, yb, p16, p84, nb, used)


@dataclass(frozen=True)
class OffsetEstimate:
    """A band's offset with its statistical and systematic errors.

    Attributes
    ----------
    offset : float
        Added to the band, it puts ``f`` through zero where the (anchored) reference is zero.
    stat_err : float
        From the fit's covariance, plus the reference's own error carried by the slope.
    sys_err : float
        Standard deviation of the offset over the field's sub-regions (NaN when fewer than three
        sub-regions could be fitted), and, when the fit is read far outside its range, the
        difference a colour term makes (``model_spread``), in quadrature.
    fit : BinnedFit
        The fit over the whole field.
    region_offsets : tuple of float
        The offset of each sub-region that could be fitted.
    extrapolation : float
        How far outside the bins used the fit is read, in units of their span (0 inside).
    model_spread : float
        ``|offset(line) - offset(colour term)|`` when ``extrapolation`` exceeds the limit, else 0.
    """

    offset: float
    stat_err: float
    sys_err: float
    fit: BinnedFit
    region_offsets: tuple[float, ...]
    extrapolation: float = 0.0
    model_spread: float = 0.0

    @property
    def err(self) -> float:
        """Total 1-sigma error: statistical and systematic in quadrature.

        Statistical only when the systematic could not be measured.
        """
        sys = self.sys_err if np.isfinite(self.sys_err) else 0.0
        return float(np.hypot(self.stat_err, sys))

    @property
    def method(self) -> str:
        """'line' or 'colour term'."""
        return METHOD_NAMES[self.fit.degree]


def region_labels(valid: np.ndarray, regions: int) -> np.ndarray:
    """``regions x regions`` spatial sub-regions of the valid pixels, with equal counts per side.

    Returns an integer image: -1 outside ``valid``, else the sub-region's number. The cuts are the
    quantiles of the valid pixels' row and column numbers, so a rotated or ragged footprint is cut
    into parts of about equal size.
    """
    labels = np.full(valid.shape, -1, int)
    rows, cols = np.nonzero(valid)
    if rows.size == 0:
        return labels
    q = np.linspace(0, 1, regions + 1)[1:-1]
    r_id = np.searchsorted(np.quantile(rows, q), rows, side="right")
    c_id = np.searchsorted(np.quantile(cols, q), cols, side="right")
    labels[rows, cols] = r_id * regions + c_id
    return labels


def estimate_offset(
    x: np.ndarray,
    y: np.ndarray,
    *,
    offset_ref: float = 0.0,
    offset_ref_err: float = 0.0,
    degree: int = 1,
    regions: int = 2,
    max_extrapolation: float = MAX_EXTRAPOLATION,
    **fit_kw: float | int | tuple[float, float],
) -> OffsetEstimate:
    """The offset of ``y`` that anchors it to ``x``, with statistical and systematic errors.

    Parameters
    ----------
    x, y : numpy.ndarray
        Reference and band on one grid at one resolution (2-D for the sub-regions).
    offset_ref, offset_ref_err : float
        The reference's own offset and error (0 for an external map, whose zero point is adopted).
    degree : int
        1: a line; 2: a line and a colour term.
    regions : int
        The field is cut into ``regions x regions`` sub-regions, each fitted alone; the spread
        of their offsets is the systematic error. 1 measures none.
    max_extrapolation : float
        Read further than this (in units of the fitted span) outside the bins, the offset also
        gets the difference between a line and a colour term as a systematic error: the data no
        longer say how the colour goes on.
    **fit_kw
        Passed to :func:`binned_fit` (``x_range``, ``n_bins``, ``min_per_bin``, ``clip_sigma``).

    Returns
    -------
    OffsetEstimate

    Raises
    ------
    ValueError
        If the whole field cannot be fitted (:func:`binned_fit`).
    """
    x0 = -offset_ref
    fit = binned_fit(x, y, degree=degree, **fit_kw)
    value, err = fit.value(x0)
    stat = float(np.hypot(err, fit.derivative(x0) * offset_ref_err))
    found: list[float] = []
    x, y = np.asarray(x, float), np.asarray(y, float)
    if regions > 1 and x.ndim == 2 and x.shape == y.shape:
        labels = region_labels(np.isfinite(x) & np.isfinite(y), regions)
        for k in range(regions * regions):
            sel = labels == k
            try:
                found.append(-binned_fit(x[sel], y[sel], degree=degree, **fit_kw).value(x0)[0])
            except ValueError as why:
                log.debug("sub-region %d not fitted: %s", k, why)
    sys = float(np.std(found, ddof=1)) if len(found) >= 3 else float("nan")
    xs = fit.x_bin[fit.used]
    span = float(xs.max() - xs.min())
    extrapolation = max(float(xs.min()) - x0, x0 - float(xs.max()), 0.0) / span if span > 0 else 0.0
    spread = 0.0
    if extrapolation > max_extrapolation:
        other = binned_fit(x, y, degree=3 - degree, **fit_kw).value(x0)[0]
        spread = abs(other - value)
        sys = float(np.hypot(sys, spread)) if np.isfinite(sys) else spread
    return OffsetEstimate(-value, stat, sys, fit, tuple(found), extrapolation, spread)


#: The percentile of a band's fitted pixels (after anchoring) that stands for its faint sky.
SKY_PERCENTILE = 10.0


def faint_sky(band: np.ndarray, offset: float) -> float:
    """A band's faint sky after anchoring: the :data:`SKY_PERCENTILE` of its finite pixels plus ``offset``.

    The scale of the QA page's relative limit on an offset's error (NaN without a finite pixel).
    """
    finite = np.asarray(band)[np.isfinite(band)]
    return float(np.percentile(finite, SKY_PERCENTILE) + offset) if finite.size else float("nan")
