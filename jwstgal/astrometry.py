"""Absolute and relative astrometric alignment.

Pure functions first: catalogues are projected onto a tangent plane (arcsec) about the image centre,
matched with tweakwcs' ``XYXYMatch`` and fitted with ``iter_linear_fit`` (shift, rshift or rscale)
in successive passes, each starting from the previous solution (wide search, then tight). A pass that
finds too few matches keeps the previous pass's solution. Reference catalogues may carry proper
motions (Gaia), propagated to the observation epoch.

The file layer corrects a stage-3 mosaic (its FITS WCS) and pushes the same sky correction back to
the per-exposure ``crf`` files (jwst's ``adjust_wcs``), writes a residual table and a quiver plot.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from astropy.table import Table

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AlignPass:
    """Matching and fitting parameters of one pass (arcsec)."""

    searchrad: float
    separation: float = 0.5
    tolerance: float = 0.5
    use2dhist: bool = True
    nclip: int = 3
    sigma: float = 3.0


@dataclass(frozen=True)
class AlignResult:
    """A fitted correction: reference = matrix @ image + shift, in the tangent plane (arcsec).

    Attributes
    ----------
    shift : numpy.ndarray
        (xi, eta) shift in arcsec: east (RA) and north (Dec) on the sky.
    matrix : numpy.ndarray
        2x2 linear part (identity for a shift fit).
    rotation_deg, scale : float
        Rotation and scale of the fit.
    rms_mas : float
        Rms of the fit residuals.
    n_matches : int
        Matches used in the final pass.
    passes_ok : int
        Passes that succeeded (a failed later pass keeps the earlier solution).
    center : tuple of float
        Tangent point (RA, Dec) in degrees.
    residuals : numpy.ndarray
        (n, 2) residuals in arcsec of the fitted matches.
    positions : numpy.ndarray
        (n, 2) tangent-plane positions (arcsec) of the fitted matches.
    """

    shift: np.ndarray
    matrix: np.ndarray
    rotation_deg: float
    scale: float
    rms_mas: float
    n_matches: int
    passes_ok: int
    center: tuple[float, float]
    residuals: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))
    positions: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))

    def to_dict(self) -> dict[str, Any]:
        """JSON/TOML-friendly summary (no per-star arrays)."""
        return {"shift_arcsec": [float(x) for x in self.shift],
                "matrix": [[float(x) for x in r] for r in self.matrix],
                "rotation_deg": self.rotation_deg, "scale": self.scale, "rms_mas": self.rms_mas,
                "n_matches": self.n_matches, "passes_ok": self.passes_ok,
                "center_deg": list(self.center)}


def tangent_plane(ra: np.ndarray, dec: np.ndarray, ra0: float, dec0: float) -> np.ndarray:
    """Gnomonic projection about (ra0, dec0): (n, 2) array of (xi, eta) in arcsec."""
    ra, dec = np.deg2rad(np.asarray(ra, float)), np.deg2rad(np.asarray(dec, float))
    a0, d0 = np.deg2rad(ra0), np.deg2rad(dec0)
    cosc = np.sin(d0) * np.sin(dec) + np.cos(d0) * np.cos(dec) * np.cos(ra - a0)
    xi = np.cos(dec) * np.sin(ra - a0) / cosc
    eta = (np.cos(d0) * np.sin(dec) - np.sin(d0) * np.cos(dec) * np.cos(ra - a0)) / cosc
    return np.rad2deg(np.column_stack([xi, eta])) * 3600


def from_tangent_plane(xy: np.ndarray, ra0: float, dec0: float) -> tuple[np.ndarray, np.ndarray]:
    """Inverse of :func:`tangent_plane`: (xi, eta) arcsec -> RA, Dec degrees."""
    xi, eta = np.deg2rad(xy[:, 0] / 3600), np.deg2rad(xy[:, 1] / 3600)
    a0, d0 = np.deg2rad(ra0), np.deg2rad(dec0)
    rho = np.hypot(xi, eta)
    c = np.arctan(rho)
    with np.errstate(invalid="ignore", divide="ignore"):
        dec = np.arcsin(np.cos(c) * np.sin(d0) + np.where(rho > 0, eta * np.sin(c) * np.cos(d0) / rho, 0))
    ra = a0 + np.arctan2(xi * np.sin(c), rho * np.cos(d0) * np.cos(c) - eta * np.sin(d0) * np.sin(c))
    return np.rad2deg(ra) % 360, np.rad2deg(dec)


def propagate_proper_motion(ref: Table, epoch: float) -> tuple[np.ndarray, np.ndarray]:
    """Positions of a reference catalogue at ``epoch`` (decimal year).

    Uses ``pmra`` (mas/yr, including cos dec, as Gaia) and ``pmdec`` with ``ref_epoch`` (default
    2016.0) when present; otherwise returns the catalogue positions.
    """
    cols = {c.lower(): c for c in ref.colnames}
    ra = np.asarray(ref[cols["ra"]], float)
    dec = np.asarray(ref[cols["dec"]], float)
    if "pmra" not in cols or "pmdec" not in cols:
        return ra, dec
    ref_epoch = np.asarray(ref[cols["ref_epoch"]], float) if "ref_epoch" in cols else 2016.0
    dt = epoch - ref_epoch
    pmra = np.nan_to_num(np.asarray(ref[cols["pmra"]], float))
    pmdec = np.nan_to_num(np.asarray(ref[cols["pmdec"]], float))
    return (ra + pmra * dt / 3.6e6 / np.cos(np.deg2rad(dec)), dec + pmdec * dt / 3.6e6)


def align_catalogs(
    img_ra: np.ndarray, img_dec: np.ndarray, ref_ra: np.ndarray, ref_dec: np.ndarray,
    passes: Sequence[AlignPass], *, fitgeom: str = "shift", min_matches: int = 5,
    center: tuple[float, float] | None = None,
) -> AlignResult | None:
    """Fit the correction that brings image source positions onto a reference catalogue.

    Parameters
    ----------
    img_ra, img_dec : numpy.ndarray
        Positions measured in the image (degrees).
    ref_ra, ref_dec : numpy.ndarray
        Reference positions at the image's epoch (degrees).
    passes : sequence of AlignPass
        Successive passes, e.g. wide then tight.
    fitgeom : {"shift", "rshift", "rscale"}
        Fit geometry.
    min_matches : int
        A pass with fewer matches fails; if the first pass fails the result is None.
    center : tuple, optional
        Tangent point; default the median image position.

    Returns
    -------
    AlignResult or None
    """
    c = center or (float(np.median(img_ra)), float(np.median(img_dec)))
    img = tangent_plane(img_ra, img_dec, *c)
    ref = tangent_plane(ref_ra, ref_dec, *c)
    refcat = Table({"TPx": ref[:, 0], "TPy": ref[:, 1]})
    result: AlignResult | None = None
    offset = np.zeros(2)
    for k, p in enumerate(passes):
        moved = img + offset if result is None else (result.matrix @ img.T).T + result.shift
        imcat = Table({"TPx": moved[:, 0], "TPy": moved[:, 1]})
        # tweakwcs' 2-D histogram can lock onto a spurious peak in crowded fields: try both ways of
        # finding the initial offset and keep the better fit
        fits_ = [f for f in (_match_and_fit(refcat, imcat, ref, img, p, use2dhist, fitgeom, c, k + 1)
                             for use2dhist in dict.fromkeys([p.use2dhist, not p.use2dhist]))
                 if f is not None and f.n_matches >= min_matches]
        if not fits_:
            log.warning("alignment pass %d: fewer than %d matches%s", k + 1, min_matches,
                        "; keeping the previous pass" if result else "")
            break
        result = max(fits_, key=lambda f: (f.rms_mas <= 500 * p.tolerance, f.n_matches, -f.rms_mas))
    return result


def _match_and_fit(refcat: Table, imcat: Table, ref: np.ndarray, img: np.ndarray, p: AlignPass,
                   use2dhist: bool, fitgeom: str, center: tuple[float, float], npass: int
                   ) -> AlignResult | None:
    """One matching + clipped linear fit (reference = matrix @ image + shift)."""
    from tweakwcs.linearfit import iter_linear_fit
    from tweakwcs.matchutils import XYXYMatch

    match = XYXYMatch(searchrad=p.searchrad, separation=p.separation, tolerance=p.tolerance,
                      use2dhist=use2dhist)
    try:
        ridx, iidx = match(refcat, imcat, tp_units="arcsec")
    except Exception as err:  # tweakwcs raises on degenerate inputs
        # stsci.stimage's xyxymatch allots one match per image source and overflows when reference
        # stars come in close pairs (real catalogues have them): the same matching, roles swapped
        log.debug("alignment pass %d: matching failed (%s); matching the other way round", npass, err)
        try:
            iidx, ridx = match(imcat, refcat, tp_units="arcsec")
        except Exception as err2:
            log.debug("alignment pass %d: matching failed: %s", npass, err2)
            return None
    if len(ridx) < 3:
        return None
    # about the tangent point: reference = matrix @ image + shift (tweakwcs defaults to the points' centre)
    fit = iter_linear_fit(ref[ridx], img[iidx], fitgeom=fitgeom, center=(0.0, 0.0), nclip=p.nclip,
                          sigma=(p.sigma, "rmse"))
    m = fit["fitmask"]
    mat = np.asarray(fit["matrix"], float)
    resid = ref[ridx][m] - ((mat @ img[iidx][m].T).T + fit["shift"])
    rot = float(np.degrees(np.arctan2(mat[1, 0], mat[0, 0])))  # counter-clockwise in (xi, eta)
    scale = float(np.sqrt(abs(np.linalg.det(mat))))
    return AlignResult(np.asarray(fit["shift"], float), mat, rot, scale, float(fit["rmse"]) * 1000,
                       int(m.sum()), npass, center, resid, img[iidx][m])


def apply_to_positions(result: AlignResult, ra: np.ndarray, dec: np.ndarray
                       ) -> tuple[np.ndarray, np.ndarray]:
    """Corrected positions of sources measured in the image."""
    xy = tangent_plane(ra, dec, *result.center)
    return from_tangent_plane((result.matrix @ xy.T).T + result.shift, *result.center)


def own_star_offsets(result: AlignResult, img_ra: np.ndarray, img_dec: np.ndarray, ref_ra: np.ndarray,
                     ref_dec: np.ndarray, radius_arcsec: float = 1.0) -> tuple[int, float]:
    """How well a correction (one borrowed from another band) fits a band's own stars.

    Parameters
    ----------
    result : AlignResult
        The correction.
    img_ra, img_dec : numpy.ndarray
        The band's own sources, as measured (degrees).
    ref_ra, ref_dec : numpy.ndarray
        Reference positions at the band's epoch (degrees).
    radius_arcsec : float
        Largest distance of a match after the correction.

    Returns
    -------
    (int, float)
        Sources matched, and the length (mas) of their median offset from the reference (NaN
        when none matched).
    """
    from scipy.spatial import cKDTree

    if len(img_ra) == 0 or len(ref_ra) == 0:
        return 0, float("nan")
    ra, dec = apply_to_positions(result, np.asarray(img_ra, float), np.asarray(img_dec, float))
    img = tangent_plane(ra, dec, *result.center)
    ref = tangent_plane(np.asarray(ref_ra, float), np.asarray(ref_dec, float), *result.center)
    dist, idx = cKDTree(ref).query(img, distance_upper_bound=radius_arcsec)
    ok = np.isfinite(dist)
    if not ok.any():
        return 0, float("nan")
    offset = np.median(ref[idx[ok]] - img[ok], axis=0)
    return int(ok.sum()), float(np.hypot(*offset) * 1000)


def correct_fits_wcs(header, result: AlignResult):
    """Apply a correction to a celestial FITS WCS header (returns a new header).

    The tangent point moves with the shift and the linear part multiplies the CD/PC matrix.
    """
    from astropy.wcs import WCS

    w = WCS(header).celestial.deepcopy()
    ra, dec = apply_to_positions(result, np.array([w.wcs.crval[0]]), np.array([w.wcs.crval[1]]))
    w.wcs.crval = [float(ra[0]), float(dec[0])]
    # FITS intermediate world coordinates are the standard coordinates (xi east, eta north)
    lin = result.matrix
    if w.wcs.has_cd():
        w.wcs.cd = lin @ w.wcs.cd
    else:
        w.wcs.pc = lin @ w.wcs.get_pc()
    out = header.copy()
    for k, v in w.to_header().items():
        out[k] = v
    return out


#: Epoch (decimal year) of an image that records no time at all: JWST's second year of science.
FALLBACK_EPOCH = 2024.0


def observation_epoch(mjds: list[Any], date: str | None = None, *, what: str = "") -> float:
    """Decimal year of an observation: the first MJD given (mid-exposure first), else its date.

    Without either, :data:`FALLBACK_EPOCH` with a warning (proper motions then move the reference
    stars to that epoch). The pipeline's step and the stpipe step use this one rule.
    """
    from astropy.time import Time

    for mjd in mjds:
        if mjd not in (None, "") and np.isfinite(float(mjd)):
            return float(Time(float(mjd), format="mjd").decimalyear)
    if date:
        return float(Time(str(date)).decimalyear)
    log.warning("%s: no observation time (MJD-AVG, EXPMID, EXPSTART, DATE-OBS): proper motions "
                "propagated to %.1f", what or "image", FALLBACK_EPOCH)
    return FALLBACK_EPOCH


#: Gaia quality cuts for astrometric reference stars: a good single-star fit (RUWE), a full 5/6-parameter
#: solution (proper motions), no duplicate, no significant excess noise (galaxy knots, blends).
GAIA_MAX_RUWE = 1.4
GAIA_MAX_EXCESS_NOISE_SIG = 2.0


def select_gaia_stars(table: Table) -> Table:
    """The rows of a Gaia table fit to be astrometric references (cuts applied where columns exist)."""
    keep = np.ones(len(table), bool)

    def col(name: str) -> np.ndarray | None:
        if name not in table.colnames:
            return None
        return np.ma.filled(np.ma.asarray(table[name]).astype(float), np.nan)

    if (ruwe := col("ruwe")) is not None:
        keep &= ruwe < GAIA_MAX_RUWE
    if (pmra := col("pmra")) is not None:
        keep &= np.isfinite(pmra)
    if (noise := col("astrometric_excess_noise_sig")) is not None:
        keep &= ~(noise > GAIA_MAX_EXCESS_NOISE_SIG)
    if "duplicated_source" in table.colnames:
        keep &= ~np.asarray(np.ma.filled(table["duplicated_source"], True), bool)
    return table[keep]


def footprint_cone(wcs: Any, shape: tuple[int, int], margin: float = 1.1) -> tuple[float, float, float]:
    """A cone covering an image: centre (RA, Dec, deg) and radius (arcmin).

    The radius is ``margin`` x the distance to the farthest corner.
    """
    ny, nx = shape
    cx, cy = (nx - 1) / 2, (ny - 1) / 2
    xs = np.array([cx, 0, nx - 1, 0, nx - 1], float)
    ys = np.array([cy, 0, 0, ny - 1, ny - 1], float)
    ra, dec = (np.deg2rad(np.asarray(v, float)) for v in wcs.pixel_to_world_values(xs, ys))
    cos_d = (np.sin(dec[0]) * np.sin(dec[1:]) + np.cos(dec[0]) * np.cos(dec[1:]) * np.cos(ra[1:] - ra[0]))
    radius = float(np.rad2deg(np.arccos(np.clip(cos_d, -1, 1))).max()) * 60 * margin
    return float(np.rad2deg(ra[0]) % 360), float(np.rad2deg(dec[0])), radius


def image_offset(image: np.ndarray, reference: np.ndarray, *, upsample: int = 100, n_sub: int = 2
                 ) -> tuple[np.ndarray, np.ndarray]:
    """The shift that registers an image onto a reference on the same grid, with its error.

    For bands too poor in point sources to be matched star by star (pjpipe's ``cross_corr``):
    the two images (NaN and median removed) are cross-correlated in Fourier space
    (scikit-image's ``phase_cross_correlation`` without phase normalisation, so that bands of
    different resolution and noise still agree), to ``1 / upsample`` pixel. The 1-sigma error is
    the spread of the same measurement over ``n_sub`` x ``n_sub`` sub-images, over sqrt(n - 1).

    Parameters
    ----------
    image, reference : numpy.ndarray
        The two images on one pixel grid (any units; NaN where there is no data).
    upsample : int
        Sub-pixel precision of the correlation peak.
    n_sub : int
        Sub-images a side for the error.

    Returns
    -------
    (numpy.ndarray, numpy.ndarray)
        ``(dy, dx)`` in pixels: what is at pixel ``p`` of ``image`` is at ``p + (dy, dx)`` of
        ``reference``; and its 1-sigma errors.
    """
    from skimage.registration import phase_cross_correlation

    ok = np.isfinite(image) & np.isfinite(reference)
    if ok.sum() < 100:
        msg = "fewer than 100 pixels with data in both images"
        raise ValueError(msg)

    def prep(a: np.ndarray, good: np.ndarray) -> np.ndarray:
        return np.where(good, a - np.median(a[good]), 0.0)

    def measure(a: np.ndarray, b: np.ndarray, good: np.ndarray) -> np.ndarray:
        shift, _, _ = phase_cross_correlation(prep(b, good), prep(a, good), upsample_factor=upsample,
                                              normalization=None)
        return np.asarray(shift, float)

    total = measure(image, reference, ok)
    ny, nx = image.shape
    subs = []
    for j in range(n_sub):
        for i in range(n_sub):
            sl = (slice(j * ny // n_sub, (j + 1) * ny // n_sub),
                  slice(i * nx // n_sub, (i + 1) * nx // n_sub))
            if ok[sl].sum() >= 100:
                subs.append(measure(image[sl], reference[sl], ok[sl]))
    err = (np.std(subs, axis=0, ddof=1) / np.sqrt(len(subs) - 1) if len(subs) > 2
           else np.full(2, np.nan))
    return total, err
