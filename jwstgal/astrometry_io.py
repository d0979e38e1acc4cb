"""File layer shared by the astrometry steps (``wcs_adjust`` and ``astrometric_align``).

Star detection on exposures and mosaics, reference catalogues (table with proper motions, or
Gaia), shifting an exposure's gwcs on the sky (jwst ``adjust_wcs``), writing an aligned mosaic and
pushing a solution back to the ``crf`` files, and :class:`PassSettings`, the config form of one
matching pass (:class:`jwstgal.astrometry.AlignPass`, a test holds the two together).
"""

from __future__ import annotations

import gc
import json
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
)
from jwstgal.errors import StepFailedError
from jwstgal.provenance import atomic_path, stamp_header
from jwstgal.settings import Strict

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
        _collect()
    return np.asarray(ra), np.asarray(dec)


def shift_model_wcs(model: Any, shift_arcsec: list[float]) -> None:
    """Shift an image datamodel's gwcs on the sky by (east, north) arcsec, in place.

    The FITS WCS keywords (``meta.wcsinfo``, SIP) are refitted to the shifted gwcs.
    """
    from jwst.assign_wcs.util import update_fits_wcsinfo
    from jwst.tweakreg.utils import adjust_wcs

    dec = model.meta.wcsinfo.dec_ref
    if dec is None:             # a mosaic: the declination of its centre
        ny, nx = model.data.shape[-2:]
        dec = model.meta.wcs((nx - 1) / 2, (ny - 1) / 2)[1]
    dec = float(dec)
    model.meta.wcs = adjust_wcs(model.meta.wcs, delta_ra=shift_arcsec[0] / 3600 / np.cos(np.deg2rad(dec)),
                                delta_dec=shift_arcsec[1] / 3600)
    update_fits_wcsinfo(model, max_pix_error=0.01, npoints=16)


def _collect() -> None:
    """Free closed datamodels now (call it once the caller has deleted its reference).

    A datamodel holds reference cycles, so a closed one lingers until the cyclic collector runs;
    a worker going through exposure after exposure would otherwise hold two or three at once
    (measured: a tweakback worker's peak 450 -> 610 MiB from 16 to 32 exposures; 310 -> 330 with this).
    """
    gc.collect()


def _card_list(values: list[float]) -> str:
    """A short JSON list for a header card (1 microarcsec precision: the card keeps its comment)."""
    return json.dumps([round(float(v), 6) for v in values])


def apply_wcs_adjust(cal: Path, out: Path, shift_arcsec: list[float], config_hash: str = "", *,
                     step: str = "wcs_adjust") -> Path:
    """Copy of a calibrated exposure whose gwcs is shifted on the sky by (east, north) arcsec.

    ``step`` names the step in the provenance (``wcs_adjust``, or ``astrometric_align`` for a
    tweakback).
    """
    from stdatamodels.jwst.datamodels import ImageModel

    with ImageModel(str(cal)) as m:
        shift_model_wcs(m, shift_arcsec)
        with atomic_path(out) as tmp:
            m.save(tmp)
    del m
    _collect()
    stamp = fits.open(out, mode="update")
    with stamp:
        stamp[0].header["WCSADJ"] = (_card_list(shift_arcsec), "wcs_adjust shift [arcsec E, N]")
        stamp_header(stamp[0].header, step=step, params={"shift_arcsec": shift_arcsec},
                     config_hash=config_hash)
    return out


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
    primary["ASTALIGN"] = (_card_list(result.to_dict()["shift_arcsec"]),
                           "absolute alignment shift [arcsec E, N]")
    stamp_header(primary, step="astrometric_align", params=result.to_dict(), config_hash=config_hash)
    headers[0] = primary
    return copy_with_headers(i2d, out, headers, drop=("ASDF",))


def fit_wcs_adjustment(wcs: Any, shape: tuple[int, int], result: AlignResult, iterations: int = 4
                       ) -> tuple[float, float, float, float]:
    """The jwst ``adjust_wcs`` arguments that move an exposure's gwcs as ``result`` moves its stars.

    jwst rolls and scales a calibrated exposure's WCS about the telescope's V1 axis, not about the
    exposure, so the four arguments (``delta_ra``, ``delta_dec``, ``delta_roll`` in degrees and
    ``scale_factor``) are fitted (Gauss-Newton with a numerical Jacobian) to the corrected sky
    positions of a 5 x 5 grid of the exposure's pixels.
    """
    from jwst.tweakreg.utils import adjust_wcs

    from jwstgal.astrometry import apply_to_positions, tangent_plane

    ny, nx = shape
    gx, gy = np.meshgrid(np.linspace(0, nx - 1, 5), np.linspace(0, ny - 1, 5))
    ra0, dec0 = wcs(gx.ravel(), gy.ravel())
    goal = tangent_plane(*apply_to_positions(result, np.asarray(ra0), np.asarray(dec0)), *result.center)

    def positions(p: np.ndarray) -> np.ndarray:
        w = adjust_wcs(wcs, delta_ra=p[0], delta_dec=p[1], delta_roll=p[2], scale_factor=p[3])
        return tangent_plane(*(np.asarray(c) for c in w(gx.ravel(), gy.ravel())), *result.center).ravel()

    cosd = np.cos(np.deg2rad(result.center[1]))
    p = np.array([result.shift[0] / 3600 / cosd, result.shift[1] / 3600, 0.0, 1.0])
    steps = np.array([1e-6, 1e-6, 1e-4, 1e-5])
    for _ in range(iterations):
        base = positions(p)
        jac = np.column_stack([(positions(p + np.eye(4)[k] * steps[k]) - base) / steps[k] for k in range(4)])
        p = p + np.linalg.lstsq(jac, goal.ravel() - base, rcond=None)[0]
    return float(p[0]), float(p[1]), float(p[2]), float(p[3])


def tweakback(crf: Path, out: Path, result: AlignResult, config_hash: str = "") -> Path:
    """Push a mosaic's correction back to a per-exposure crf file.

    A shift is applied as it is; a fit with rotation or scale (``rshift``/``rscale``) goes through
    :func:`fit_wcs_adjustment`, so every pixel of the exposure lands where the correction puts it.
    """
    shift = [float(result.shift[0]), float(result.shift[1])]
    if np.allclose(result.matrix, np.eye(2), rtol=0, atol=1e-12):
        return apply_wcs_adjust(crf, out, shift, config_hash, step="astrometric_align")
    return apply_wcs_correction(crf, out, result, config_hash, step="astrometric_align")


def apply_wcs_correction(cal: Path, out: Path, result: AlignResult, config_hash: str = "", *,
                         step: str = "astrometric_align") -> Path:
    """Copy of an exposure whose gwcs moves every pixel as ``result`` (shift, rotation, scale) does.

    The jwst ``adjust_wcs`` arguments come from :func:`fit_wcs_adjustment`.
    """
    from jwst.assign_wcs.util import update_fits_wcsinfo
    from jwst.tweakreg.utils import adjust_wcs
    from stdatamodels.jwst.datamodels import ImageModel

    shift = [float(result.shift[0]), float(result.shift[1])]
    with ImageModel(str(cal)) as m:
        dra, ddec, droll, scale = fit_wcs_adjustment(m.meta.wcs, m.data.shape[-2:], result)
        m.meta.wcs = adjust_wcs(m.meta.wcs, delta_ra=dra, delta_dec=ddec, delta_roll=droll,
                                scale_factor=scale)
        update_fits_wcsinfo(m, max_pix_error=0.01, npoints=16)
        with atomic_path(out) as tmp:
            m.save(tmp)
    del m
    _collect()
    with fits.open(out, mode="update") as stamp:
        stamp[0].header["WCSADJ"] = (_card_list(shift), "shift [arcsec E, N]")
        stamp[0].header["WCSROT"] = (result.rotation_deg, "rotation [deg]")
        stamp[0].header["WCSSCL"] = (result.scale, "scale")
        stamp_header(stamp[0].header, step=step,
                     params={"shift_arcsec": shift, "rotation_deg": result.rotation_deg,
                             "scale": result.scale, "adjust_wcs": [dra, ddec, droll, scale]},
                     config_hash=config_hash)
    return out


def result_from_dict(d: dict[str, Any]) -> AlignResult:
    """Rebuild a (borrowed) solution saved with :meth:`AlignResult.to_dict`."""
    return AlignResult(np.asarray(d["shift_arcsec"]), np.asarray(d["matrix"]), d["rotation_deg"],
                       d["scale"], d["rms_mas"], d["n_matches"], d["passes_ok"], tuple(d["center_deg"]))
