"""Point sources on top of extended emission (pure functions on arrays).

A local background (photutils' ``Background2D``) is taken out, then a star finder (``DAOStarFinder``
or ``IRAFStarFinder``) runs on what is left; a large image is searched tile by tile. The astrometry
steps (``wcs_adjust``, ``astrometric_catalog``, ``astrometric_align``) find their stars here.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

log = logging.getLogger(__name__)


def find_point_sources(data: np.ndarray, fwhm_pix: float, *, finder: str = "dao", nsigma: float = 5.0,
                       max_sources: int = 400, box: int = 25, sharpness: tuple[float, float] | None = None,
                       roundness: tuple[float, float] | None = None, tile: int = 2048) -> Any:
    """Point sources on top of extended emission: local background removed, then a star finder.

    An image larger than ``tile`` pixels a side is searched tile by tile (each with a margin, each
    source kept by the tile whose core holds it, the brightest ``max_sources`` of all kept), so
    memory is that of a tile, not of the mosaic, and the threshold follows the local noise.

    Parameters
    ----------
    data : numpy.ndarray
        Image (NaN where there are no data); may be a memory map, of any float type.
    fwhm_pix : float
        PSF FWHM in pixels.
    finder : {"dao", "iraf"}
        photutils ``DAOStarFinder`` or ``IRAFStarFinder``.
    nsigma : float
        Detection threshold in units of the background rms.
    max_sources : int
        Keep the brightest this many (0: all).
    box : int
        Background mesh size (pixels).
    sharpness, roundness : (float, float), optional
        Accepted ranges of the finder's shape statistics (default: the finder's own).
    tile : int
        Tile side (pixels) above which the image is searched in tiles.

    Returns
    -------
    astropy.table.Table or None
        The finder's table (``x_centroid``, ``y_centroid``, ``flux``, ``sharpness``, ...), zero-based
        in ``data``'s pixels.
    """
    from astropy.table import vstack

    kw = {"finder": finder, "nsigma": nsigma, "max_sources": max_sources, "box": box,
          "sharpness": sharpness, "roundness": roundness}
    ny, nx = data.shape
    margin = max(2 * box, int(np.ceil(6 * fwhm_pix)))
    if max(ny, nx) <= tile + 2 * margin:
        return _find_in(np.asarray(data, float), fwhm_pix, **kw)
    found = []
    for y0 in range(0, ny, tile):
        for x0 in range(0, nx, tile):
            ya, xa = max(0, y0 - margin), max(0, x0 - margin)
            sub = np.asarray(data[ya:min(ny, y0 + tile + margin), xa:min(nx, x0 + tile + margin)], float)
            if np.isfinite(sub).mean() < 0.05:
                continue
            try:
                t = _find_in(sub, fwhm_pix, **kw)
            except ValueError as err:          # e.g. every background box masked
                log.debug("no point-source search in tile (%d, %d): %s", y0, x0, err)
                continue
            if t is None or len(t) == 0:
                continue
            new_names = "x_centroid" in t.colnames
            xcol, ycol = ("x_centroid", "y_centroid") if new_names else ("xcentroid", "ycentroid")
            t[xcol] += xa
            t[ycol] += ya
            x, y = np.asarray(t[xcol]), np.asarray(t[ycol])
            found.append(t[(x >= x0 - 0.5) & (x < x0 + tile - 0.5) & (y >= y0 - 0.5) & (y < y0 + tile - 0.5)])
    if not found:
        return None
    tab = vstack(found, metadata_conflicts="silent")
    if max_sources and len(tab) > max_sources:
        tab = tab[np.argsort(-np.asarray(tab["flux"], float))[:max_sources]]
    return tab


def _find_in(img: np.ndarray, fwhm_pix: float, *, finder: str, nsigma: float, max_sources: int, box: int,
             sharpness: tuple[float, float] | None, roundness: tuple[float, float] | None) -> Any:
    """:func:`find_point_sources` on one image held in memory."""
    from astropy.stats import SigmaClip
    from photutils.background import Background2D, MedianBackground
    from photutils.detection import DAOStarFinder, IRAFStarFinder

    img = np.where(np.isfinite(img), img, np.nan)
    mask = ~np.isfinite(img)
    bkg = Background2D(np.nan_to_num(img), box, mask=mask, filter_size=3,
                       sigma_clip=SigmaClip(sigma=3.0), bkg_estimator=MedianBackground())
    sub = np.nan_to_num(img - bkg.background)
    std = float(np.median(bkg.background_rms))
    shape = {k: tuple(v) for k, v in (("sharpness_range", sharpness), ("roundness_range", roundness))
             if v is not None}
    kind = {"dao": DAOStarFinder, "iraf": IRAFStarFinder}[finder]
    found = kind(threshold=nsigma * std, fwhm=fwhm_pix, n_brightest=max_sources or None,
                 exclude_border=True, **shape)
    return found(sub, mask=mask)


def detect_stars(data: np.ndarray, fwhm_pix: float, *, nsigma: float = 5.0, max_sources: int = 400,
                 box: int = 25) -> tuple[np.ndarray, np.ndarray]:
    """Zero-based positions of the brightest point sources (:func:`find_point_sources`, DAO defaults)."""
    tab = find_point_sources(data, fwhm_pix, nsigma=nsigma, max_sources=max_sources, box=box)
    if tab is None:
        return np.array([]), np.array([])
    return centroids(tab)


def centroids(tab: Any) -> tuple[np.ndarray, np.ndarray]:
    """Zero-based (x, y) of a star finder's table (``x_centroid`` since photutils 3, else ``xcentroid``)."""
    if "x_centroid" in tab.colnames:
        return np.asarray(tab["x_centroid"], float), np.asarray(tab["y_centroid"], float)
    return np.asarray(tab["xcentroid"], float), np.asarray(tab["ycentroid"], float)
