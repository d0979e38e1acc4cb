"""File layer shared by the astrometry steps (``wcs_adjust`` and ``astrometric_align``).

Star detection on exposures and mosaics (the finders themselves are in
:mod:`jwstgal.point_sources`), reference catalogues (table with proper motions, or
Gaia), shifting an exposure's gwcs on the sky (jwst ``adjust_wcs``), writing an aligned mosaic and
pushing a solution back to the ``crf`` files, and :class:`PassSettings`, the config form of one
matching pass (:class:`jwstgal.astrometry.AlignPass`, a test holds the two together).
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Annotated, Any

import numpy as np
from astropy.io import fits
from astropy.table import Table
from pydantic import AfterValidator, Field

from jwstgal import dq
from jwstgal.astrometry import (
    AlignPass,
    AlignResult,
    correct_fits_wcs,
    observation_epoch,
    propagate_proper_motion,
    select_gaia_stars,
    tangent_plane,
)
from jwstgal.errors import StepFailedError
from jwstgal.point_sources import detect_stars
from jwstgal.provenance import atomic_path, stamp_header
from jwstgal.settings import Strict
from jwstgal.wcs_corrections import card_list, free_datamodels

log = logging.getLogger(__name__)


#: A length in pixels of the image being aligned, as PHANGS configs write them: ``"5pix"``.
_PIXELS = re.compile(r"[0-9]+(\.[0-9]*)?pix")


def _length(value: float | str) -> float | str:
    if isinstance(value, str) and _PIXELS.fullmatch(value) and float(value[:-3]) > 0:
        return value
    if not isinstance(value, str) and value > 0:
        return value
    msg = "a length is arcsec (a number > 0) or pixels of the image (e.g. '5pix')"
    raise ValueError(msg)


#: A pass length: arcsec (> 0) or pixels (``"5pix"``).
Length = Annotated[float | str, AfterValidator(_length)]


def to_arcsec(value: float | str, pixscale: float) -> float:
    """A pass length in arcsec: a number is arcsec already, ``"<n>pix"`` is n pixels of ``pixscale``."""
    if isinstance(value, str):
        return float(value.removesuffix("pix")) * pixscale
    return float(value)


class PassSettings(Strict):
    """One matching pass: the config form of :class:`jwstgal.astrometry.AlignPass`.

    Lengths are arcsec, or pixels of the image being aligned written ``"5pix"``.
    """

    searchrad: Length = Field(description="Search radius for the initial offset.")
    separation: Length = Field(0.5, description="Minimum separation of sources.")
    tolerance: Length = Field(0.5, description="Matching tolerance.")
    use2dhist: bool = Field(True, description="Find the initial offset with a 2-D histogram.")
    nclip: int = Field(3, ge=0, description="Clipping iterations of the fit.")
    sigma: float = Field(3.0, gt=0, description="Clipping threshold (in fit rms).")


def align_pass(settings: dict[str, Any], pixscale: float) -> AlignPass:
    """An :class:`AlignPass` from one pass's settings, pixel lengths turned into arcsec."""
    return AlignPass(**{k: to_arcsec(v, pixscale) if k in ("searchrad", "separation", "tolerance")
                        else v for k, v in settings.items()})


def visit_id(path: Path) -> str:
    """Visit id of an exposure: ``jwPPPPPOOOVVV``."""
    return path.name.split("_")[0]


def exposure_stars(cal: Path, fwhm_pix: float) -> tuple[np.ndarray, np.ndarray]:
    """RA/Dec of stars detected in a calibrated exposure.

    Reads only the SCI and DQ arrays and the SCI header's FITS WCS: the pipeline writes there the
    SIP approximation of the gwcs, good to 0.01 pixel (``sip_max_pix_error``), well below what a
    visit shift is measured to. A file without a celestial FITS WCS is opened as a datamodel and
    its gwcs used.
    """
    from astropy.wcs import WCS

    with fits.open(cal) as h:
        data = np.array(h["SCI"].data, float)
        if "DQ" in h:
            data[dq.flagged(np.asarray(h["DQ"].data), ["DO_NOT_USE"])] = np.nan
        hdr = h["SCI"].header
        fits_wcs = WCS(hdr).celestial if str(hdr.get("CTYPE1", "")).startswith("RA---") else None
    x, y = detect_stars(data, fwhm_pix)
    if x.size == 0:
        return x, y
    if fits_wcs is not None:
        ra, dec = fits_wcs.pixel_to_world_values(x, y)
    else:
        from stdatamodels.jwst.datamodels import ImageModel

        with ImageModel(str(cal)) as m:
            ra, dec = m.meta.wcs(x, y)
        del m
        free_datamodels()
    return np.asarray(ra), np.asarray(dec)


def reference_positions(ref_path: Path, epoch: float) -> tuple[np.ndarray, np.ndarray]:
    """Reference catalogue positions at ``epoch`` (proper motions propagated when given)."""
    return propagate_proper_motion(Table.read(ref_path), epoch)


def query_gaia(ra: float, dec: float, radius_arcmin: float, out: Path) -> Path:
    """Gaia DR3 stars around a position, cached as ECSV (needs the internet).

    Only stars fit to be references are kept (:func:`~jwstgal.astrometry.select_gaia_stars`).
    """
    import astropy.units as u
    from astropy.coordinates import SkyCoord

    if out.is_file():
        return out
    try:
        from astroquery.gaia import Gaia

        Gaia.ROW_LIMIT = -1
        job = Gaia.cone_search_async(SkyCoord(ra, dec, unit="deg"), radius=radius_arcmin * u.arcmin,
                                     columns=["ra", "dec", "pmra", "pmdec", "ref_epoch", "phot_g_mean_mag",
                                              "ruwe", "astrometric_excess_noise_sig", "duplicated_source"])
        table = select_gaia_stars(job.get_results())
    except OSError as err:
        msg = f"Gaia query around ({ra:.5f}, {dec:.5f}) failed (no network?): {err}"
        raise StepFailedError(msg) from err
    with atomic_path(out) as tmp:
        table.write(tmp, format="ascii.ecsv")
    return out


def mosaic_epoch(i2d: Path) -> float:
    """Decimal year of a mosaic's mid-exposure time (:func:`observation_epoch`)."""
    h = fits.getheader(i2d)
    return observation_epoch([h.get("MJD-AVG"), h.get("EXPMID"), h.get("EXPSTART")], h.get("DATE-OBS"),
                             what=str(i2d))


def image_sources(i2d: Path, catalog: Path, fwhm_pix: float) -> tuple[np.ndarray, np.ndarray]:
    """Point sources of a mosaic: the stage-3 catalogue's compact sources, else own detections."""
    if catalog.is_file():
        cat = Table.read(catalog)
        if "is_extended" in cat.colnames:
            cat = cat[~np.asarray(cat["is_extended"], bool)]
        if "sky_centroid" not in cat.colnames:      # an astrometric_catalog table
            return np.asarray(cat["ra"], float), np.asarray(cat["dec"], float)
        sc = cat["sky_centroid"]
        return np.asarray(sc.ra.deg), np.asarray(sc.dec.deg)
    from astropy.wcs import WCS

    from jwstgal.tiled_io import FitsImage

    data = FitsImage(i2d, "SCI", zero_is_nan=True)     # read tile by tile by the search
    try:
        x, y = detect_stars(data, fwhm_pix)
    finally:
        data.close()
    return WCS(fits.getheader(i2d, "SCI")).pixel_to_world_values(x, y)


def write_aligned_mosaic(i2d: Path, out: Path, result: AlignResult, config_hash: str = "") -> Path:
    """Copy of a mosaic with every celestial FITS WCS corrected (the stale gwcs ASDF is dropped).

    Only headers change: the data are copied byte for byte, a chunk at a time.
    """
    from jwstgal.tiled_io import copy_with_headers

    headers = {}
    with fits.open(i2d, memmap=False, lazy_load_hdus=True) as h:
        for i, hdu in enumerate(h):
            if hdu.header.get("CTYPE1", "").startswith("RA"):
                headers[i] = correct_fits_wcs(hdu.header, result)
        primary = headers.get(0, h[0].header.copy())
    primary["ASTALIGN"] = (card_list(result.to_dict()["shift_arcsec"]),
                           "absolute alignment shift [arcsec E, N]")
    stamp_header(primary, step="astrometric_align", params=result.to_dict(), config_hash=config_hash)
    headers[0] = primary
    return copy_with_headers(i2d, out, headers, drop=("ASDF",))


def result_from_dict(d: dict[str, Any]) -> AlignResult:
    """Rebuild a (borrowed) solution saved with :meth:`AlignResult.to_dict`."""
    return AlignResult(np.asarray(d["shift_arcsec"]), np.asarray(d["matrix"]), d["rotation_deg"],
                       d["scale"], d["rms_mas"], d["n_matches"], d["passes_ok"], tuple(d["center_deg"]))


def cross_correlation_result(i2d: Path, reference: Path) -> tuple[AlignResult, list[float]]:
    """The correction of a mosaic found by cross-correlating it with an aligned reference mosaic.

    Both mosaics are put on the coarser of their two pixel grids (``reproject_interp``) and
    registered with :func:`jwstgal.astrometry.image_offset`; the pixel shift becomes a sky shift
    (east, north) through that grid's WCS at its centre.

    Returns
    -------
    (AlignResult, list of float)
        The shift-only correction (``rms_mas`` is the length of its 1-sigma error, no matches), and
        the 1-sigma error (mas) along each axis of the grid (x, y).
    """
    from astropy.wcs import WCS
    from astropy.wcs.utils import proj_plane_pixel_scales
    from reproject import reproject_interp

    from jwstgal.astrometry import image_offset

    def load(path: Path) -> tuple[np.ndarray, WCS]:
        with fits.open(path) as h:
            data = np.array(h["SCI"].data, float)
            wcs = WCS(h["SCI"].header).celestial
        data[data == 0] = np.nan                  # resample's uncovered pixels
        return data, wcs

    (img, iw), (ref, rw) = load(i2d), load(reference)
    coarse_is_ref = np.mean(proj_plane_pixel_scales(rw)) >= np.mean(proj_plane_pixel_scales(iw))
    grid, shape = (rw, ref.shape) if coarse_is_ref else (iw, img.shape)
    if coarse_is_ref:
        img = reproject_interp((img, iw), grid, shape_out=shape, return_footprint=False)
    else:
        ref = reproject_interp((ref, rw), grid, shape_out=shape, return_footprint=False)
    (dy, dx), (ey, ex) = image_offset(img, ref)
    cy, cx = (shape[0] - 1) / 2, (shape[1] - 1) / 2
    ra, dec = grid.pixel_to_world_values([cx, cx + dx, cx + ex, cx], [cy, cy + dy, cy, cy + ey])
    xy = tangent_plane(np.asarray(ra), np.asarray(dec), float(ra[0]), float(dec[0]))
    shift = xy[1] - xy[0]                         # what the band's WCS must move by, arcsec E, N
    err = [float(np.hypot(*(xy[2] - xy[0])) * 1000), float(np.hypot(*(xy[3] - xy[0])) * 1000)]
    result = AlignResult(shift, np.eye(2), 0.0, 1.0, float(np.hypot(*err)), 0, 1,
                         (float(ra[0]), float(dec[0])))
    return result, err
