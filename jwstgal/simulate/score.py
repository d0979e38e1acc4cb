"""Score pipeline products against the simulation's truth."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from astropy.coordinates import SkyCoord
from astropy.io import fits
from astropy.table import Table
from astropy.wcs import WCS


@dataclass(frozen=True)
class AstrometryScore:
    """Offsets of measured sources from the true positions, in mosaic pixels.

    Attributes
    ----------
    n_matched : int
        Sources matched to a true star.
    median_dx, median_dy : float
        Median offset (measured - true) along x and y.
    median_offset : float
        Length of the median offset vector (the systematic astrometric error).
    rms : float
        Rms of the individual offsets about the median.
    pixel_scale : float
        Mosaic pixel scale (arcsec).
    """

    n_matched: int
    median_dx: float
    median_dy: float
    median_offset: float
    rms: float
    pixel_scale: float


def score_mosaic_astrometry(
    mosaic: Path, catalog: Path, stars: Path, match_radius_pix: float = 1.0
) -> AstrometryScore:
    """Compare a stage-3 source catalogue with the true star positions.

    Parameters
    ----------
    mosaic : pathlib.Path
        The ``_i2d.fits`` mosaic (its WCS converts true RA/Dec to pixels).
    catalog : pathlib.Path
        The ``_cat.ecsv`` written by source_catalog (``xcentroid``, ``ycentroid``).
    stars : pathlib.Path
        The simulator's ``stars.ecsv``.
    match_radius_pix : float
        Largest separation that counts as a match.

    Returns
    -------
    AstrometryScore
    """
    from stdatamodels.jwst.datamodels import ImageModel

    cat = Table.read(catalog)
    truth = Table.read(stars)
    with ImageModel(str(mosaic)) as m:
        wcs = m.meta.wcs
        tx, ty = wcs.world_to_pixel_values(np.asarray(truth["ra"]), np.asarray(truth["dec"]))
    scale = float(np.sqrt(abs(np.linalg.det(WCS(fits.getheader(mosaic, "SCI")).celestial
                                            .pixel_scale_matrix))) * 3600)
    mx, my = np.asarray(cat["xcentroid"]), np.asarray(cat["ycentroid"])
    ok = np.isfinite(tx) & np.isfinite(ty)
    tx, ty = tx[ok], ty[ok]
    t_sky = SkyCoord(tx, ty, 0, representation_type="cartesian")
    m_sky = SkyCoord(mx, my, 0, representation_type="cartesian")
    idx, _, dist = m_sky.match_to_catalog_3d(t_sky)
    good = dist.value < match_radius_pix
    dx = mx[good] - tx[idx[good]]
    dy = my[good] - ty[idx[good]]
    if good.sum() == 0:
        return AstrometryScore(0, np.nan, np.nan, np.nan, np.nan, scale)
    mdx, mdy = float(np.median(dx)), float(np.median(dy))
    rms = float(np.sqrt(np.mean((dx - mdx) ** 2 + (dy - mdy) ** 2)))
    return AstrometryScore(int(good.sum()), mdx, mdy, float(np.hypot(mdx, mdy)), rms, scale)
