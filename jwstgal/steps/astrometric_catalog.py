"""Step ``astrometric_catalog``: the point sources the absolute alignment matches (after stage 3).

Stage 3's source catalogue is made for photometry (segmentation, deblending); on MIRI mosaics with
bright extended emission its centroids of compact knots pull the alignment. This step detects point
sources in the band's stage-3 mosaic with its own settings (star finder, threshold, shape cuts,
brightest N, FWHM per band through the overrides) and writes them as
``astrometric_catalog/<product>_astro_cat.fits`` (``ra``, ``dec`` through the mosaic's WCS, pixel
centroids, flux and shape statistics). ``astrometric_align`` uses it instead of the stage-3
catalogue when this step runs.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from astropy.io import fits
from astropy.table import Table
from astropy.wcs import WCS
from astropy.wcs.utils import proj_plane_pixel_scales
from pydantic import Field, model_validator

from jwstgal import layout
from jwstgal.bands import Band
from jwstgal.point_sources import centroids, find_point_sources
from jwstgal.provenance import atomic_path, hash_params, stamp_header
from jwstgal.settings import StepSettings
from jwstgal.steps.base import BandContext, BandTask, Step, StepPlan, file_id

log = logging.getLogger(__name__)

NAME = "astrometric_catalog"


class AstrometricCatalogSettings(StepSettings):
    """The ``[astrometric_catalog]`` table (step ``astrometric_catalog``, after stage 3)."""

    finder: Literal["dao", "iraf"] = Field("dao", description="photutils DAOStarFinder or IRAFStarFinder.")
    snr: float = Field(5.0, gt=0, description="Detection threshold (background rms).")
    sharpness: list[float] | None = Field(None, min_length=2, max_length=2, description="Accepted "
                                          "sharpness range [lo, hi] (default: the finder's).")
    roundness: list[float] | None = Field(None, min_length=2, max_length=2, description="Accepted "
                                          "roundness range [lo, hi] (default: the finder's).")
    brightest: int = Field(400, ge=0, description="Keep the brightest N sources (0: all).")
    fwhm: float | None = Field(None, gt=0, description="PSF FWHM in mosaic pixels (default: the band's "
                               "FWHM at the mosaic's pixel scale).")
    bkg_box: int = Field(25, ge=5, description="Background mesh (pixels) removed before detection.")

    @model_validator(mode="after")
    def _ranges(self) -> AstrometricCatalogSettings:
        for name in ("sharpness", "roundness"):
            r = getattr(self, name)
            if r is not None and r[0] >= r[1]:
                msg = f"{name} = {r}: the range must be [lo, hi] with lo < hi"
                raise ValueError(msg)
        return self


def point_source_table(data: np.ndarray, wcs: WCS, fwhm_pix: float, s: AstrometricCatalogSettings) -> Table:
    """The point sources of a mosaic as a table with sky positions (pure: arrays in, table out)."""
    tab = find_point_sources(data, fwhm_pix, finder=s.finder, nsigma=s.snr, max_sources=s.brightest,
                             box=s.bkg_box, sharpness=s.sharpness, roundness=s.roundness)
    if tab is None or len(tab) == 0:
        return Table({"ra": [], "dec": [], "xcentroid": [], "ycentroid": [], "flux": []})
    x, y = centroids(tab)
    ra, dec = wcs.pixel_to_world_values(x, y)
    out = Table({"ra": ra, "dec": dec, "xcentroid": x, "ycentroid": y, "flux": tab["flux"]})
    for col in ("sharpness", "roundness1", "roundness2", "roundness", "peak"):
        if col in tab.colnames:
            out[col] = tab[col]
    return out


@dataclass(frozen=True)
class CatalogTask(BandTask):
    """Detect the point sources of one mosaic into ``out``; the band's FWHM is given in arcsec."""

    i2d: Path
    out: Path
    settings: AstrometricCatalogSettings
    fwhm_arcsec: float
    config_hash: str

    def run(self) -> list[str]:
        """Write the catalogue."""
        return [str(write_catalog(self.i2d, self.out, self.settings, self.fwhm_arcsec, self.config_hash))]


def write_catalog(i2d: Path, out: Path, s: AstrometricCatalogSettings, fwhm_arcsec: float,
                  config_hash: str) -> Path:
    """Detect the point sources of one mosaic and write them to ``out`` (atomically)."""
    with fits.open(i2d) as h:
        data = np.array(h["SCI"].data, float)
        wcs = WCS(h["SCI"].header).celestial
    data[data == 0] = np.nan
    fwhm = s.fwhm or fwhm_arcsec / (float(np.mean(proj_plane_pixel_scales(wcs))) * 3600)
    table = point_source_table(data, wcs, fwhm, s)
    if len(table) < 3:      # a band that borrows its alignment does not need any
        log.warning("%s: only %d point sources found (snr %g, fwhm %.2f px)", i2d.name, len(table),
                    s.snr, fwhm)
    hdu = fits.BinTableHDU(table, name="SOURCES")
    primary = fits.PrimaryHDU()
    stamp_header(primary.header, step=NAME, params={**s.model_dump(), "fwhm_pix": fwhm},
                 config_hash=config_hash)
    with atomic_path(out) as tmp:
        fits.HDUList([primary, hdu]).writeto(tmp)
    log.info("%s: %d point sources (%s finder, snr %g)", i2d.name, len(table), s.finder, s.snr)
    return out


class AstrometricCatalog(Step):
    """Point sources for the absolute alignment."""

    name = NAME
    summary = ("point sources of the stage-3 mosaic with their own finder settings, used by "
               "`astrometric_align` instead of the stage-3 catalogue, `[astrometric_catalog]`")
    settings = AstrometricCatalogSettings
    stpipe = True

    def plan(self, ctx: BandContext, upstream: str, inputs: list[Path]) -> StepPlan:
        """One task for the band's stage-3 mosaic."""
        i2d = ctx.stage3_mosaic("the astrometric catalogue")
        params = self.resolved(ctx)
        key = hash_params([NAME, self.key_params(params), upstream, file_id(i2d)])
        if (begun := ctx.begin(NAME, key, params)).done:
            return begun.done
        out = layout.astro_catalog(ctx.band_dir, ctx.target, ctx.band)
        return StepPlan(NAME, key, params, [out], [CatalogTask(
            i2d, out, AstrometricCatalogSettings(**params), ctx.band.fwhm_arcsec, ctx.run.config_hash)])

    def qa_summary(self, band_dir: Path, target: str, band: Band) -> dict[str, str]:
        """Number of point sources found."""
        cats = sorted((band_dir / NAME).glob("*_astro_cat.fits"))
        return {"astrometric sources": str(len(Table.read(cats[0])))} if cats else {}
