"""File layer of the astrometry steps.

``wcs_adjust`` (before level matching and stage 3): per-visit shifts are measured once per target on
the star-rich ``[wcs_adjust] bands`` (stars detected in every calibrated exposure, each exposure
aligned to the reference visit's stars, shifts averaged per visit), written to
``<reprocess_dir>/<target>/wcs_adjust.toml`` (a hand-made file is used as it is), and applied to the
exposures of every band (jwst ``adjust_wcs``).

``astrometric_align`` (after stage 3): the mosaic's catalogue is matched to the ``[alignment]``
catalogue (proper motions propagated to the observation epoch) or to Gaia, in successive passes; the
correction is applied to the mosaic's FITS WCS (``_i2d_align.fits``) and pushed back to the
per-exposure ``crf`` files (``_crf_tweakback.fits``). Bands in ``alignment_mapping`` borrow another
band's solution, which is a sky-plane correction (arcsec), so it applies at any pixel scale.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from astropy.io import fits
from astropy.table import Table

from jwstgal.astrometry import (
    AlignPass,
    AlignResult,
    align_catalogs,
    correct_fits_wcs,
    propagate_proper_motion,
)
from jwstgal.errors import InputNotFoundError, StepFailedError
from jwstgal.provenance import atomic_path, stamp_header, write_text_atomic

log = logging.getLogger(__name__)


def detect_stars(data: np.ndarray, fwhm_pix: float, *, nsigma: float = 5.0, max_sources: int = 400,
                 box: int = 25) -> tuple[np.ndarray, np.ndarray]:
    """Point sources on top of extended emission: local background removed, then DAOStarFinder.

    Returns
    -------
    x, y : numpy.ndarray
        Zero-based positions of the brightest ``max_sources`` detections.
    """
    from astropy.stats import SigmaClip
    from photutils.background import Background2D, MedianBackground
    from photutils.detection import DAOStarFinder

    img = np.where(np.isfinite(data), data, np.nan)
    mask = ~np.isfinite(img)
    bkg = Background2D(np.nan_to_num(img), box, mask=mask, filter_size=3,
                       sigma_clip=SigmaClip(sigma=3.0), bkg_estimator=MedianBackground())
    sub = np.nan_to_num(img - bkg.background)
    std = float(np.median(bkg.background_rms))
    finder = DAOStarFinder(threshold=nsigma * std, fwhm=fwhm_pix, brightest=max_sources,
                           exclude_border=True)
    tab = finder(sub, mask=mask)
    if tab is None:
        return np.array([]), np.array([])
    return np.asarray(tab["xcentroid"]), np.asarray(tab["ycentroid"])


def _visit(path: Path) -> str:
    """Visit id of an exposure: ``jwPPPPPOOOVVV``."""
    return path.name.split("_")[0]


def exposure_stars(cal: Path, fwhm_pix: float) -> tuple[np.ndarray, np.ndarray]:
    """RA/Dec of stars detected in a calibrated exposure (through its gwcs)."""
    from stdatamodels.jwst.datamodels import ImageModel

    with ImageModel(str(cal)) as m:
        data = np.array(m.data, float)
        data[(np.asarray(m.dq) & 1) != 0] = np.nan
        x, y = detect_stars(data, fwhm_pix)
        if x.size == 0:
            return x, y
        ra, dec = m.meta.wcs(x, y)
    return np.asarray(ra), np.asarray(dec)


def measure_visit_shifts(cal_files: list[Path], fwhm_pix: float, passes: list[AlignPass], *,
                         min_matches: int = 5) -> dict[str, dict[str, Any]]:
    """Per-visit sky shifts (arcsec) that align every visit with the reference visit.

    The reference visit is the one with most detected stars; every exposure of the other visits is
    aligned (shift fit) to the reference visit's stars and the shifts are averaged per visit.
    """
    stars = {f: exposure_stars(f, fwhm_pix) for f in cal_files}
    visits: dict[str, list[Path]] = {}
    for f in cal_files:
        visits.setdefault(_visit(f), []).append(f)
    ref = max(visits, key=lambda v: sum(stars[f][0].size for f in visits[v]))
    ref_ra, ref_dec = merge_detections([stars[f] for f in visits[ref]], radius_arcsec=0.1)
    out: dict[str, dict[str, Any]] = {ref: {"shift": [0.0, 0.0], "n_exposures": 0, "reference": True}}
    for v, files in visits.items():
        if v == ref:
            continue
        shifts = []
        for f in files:
            res = align_catalogs(*stars[f], ref_ra, ref_dec, passes, fitgeom="shift",
                                 min_matches=min_matches)
            if res is not None:
                shifts.append(res.shift)
        if shifts:  # the median resists one exposure that matched badly
            out[v] = {"shift": [float(x) for x in np.median(shifts, axis=0)],
                      "n_exposures": len(shifts), "reference": False}
        else:
            log.warning("wcs_adjust: visit %s could not be aligned to %s; left unchanged", v, ref)
    return out


def merge_detections(catalogs: list[tuple[np.ndarray, np.ndarray]], radius_arcsec: float = 0.1
                     ) -> tuple[np.ndarray, np.ndarray]:
    """One star list from several exposures of a visit: detections closer than ``radius`` are one star."""
    from scipy.spatial import cKDTree

    from jwstgal.astrometry import from_tangent_plane, tangent_plane

    ra = np.concatenate([c[0] for c in catalogs])
    dec = np.concatenate([c[1] for c in catalogs])
    if ra.size == 0:
        return ra, dec
    center = (float(np.median(ra)), float(np.median(dec)))
    xy = tangent_plane(ra, dec, *center)
    tree = cKDTree(xy)
    label = -np.ones(len(xy), int)
    for i in range(len(xy)):
        if label[i] < 0:
            label[tree.query_ball_point(xy[i], radius_arcsec)] = i
    merged = np.array([xy[label == k].mean(axis=0) for k in np.unique(label)])
    return from_tangent_plane(merged, *center)


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with (path.parent / f".{path.name}.lock").open("w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def ensure_wcs_adjust(toml_path: Path, ref_cal_files: list[Path], fwhm_pix: float | dict[str, float],
                      passes: list[AlignPass]) -> dict[str, Any]:
    """Read the per-visit shifts of a target, measuring and writing them first if absent.

    ``ref_cal_files`` live in ``<target>/<BAND>/<step>/``; each band's visits are measured on its
    own exposures, with ``fwhm_pix`` given per band (dict) or for all.
    """
    import tomli_w

    with _locked(toml_path):
        if toml_path.is_file():
            return tomllib.loads(toml_path.read_text()).get("wcs_adjust", {})
        if not ref_cal_files:
            msg = f"{toml_path}: no exposures of the [wcs_adjust] bands to measure visit shifts on"
            raise InputNotFoundError(msg)
        by_band: dict[str, list[Path]] = {}
        for f in ref_cal_files:  # visits of different bands/instruments are measured separately
            by_band.setdefault(f.parent.parent.name, []).append(f)
        shifts: dict[str, dict[str, Any]] = {}
        for files in by_band.values():
            for v, sh in measure_visit_shifts(files, fwhm_pix.get(files[0].parent.parent.name, 2.0)
                                              if isinstance(fwhm_pix, dict) else fwhm_pix,
                                              passes).items():
                shifts.setdefault(v, sh)
        doc = {"wcs_adjust": {v: {"shift": s["shift"]} for v, s in shifts.items()}}
        write_text_atomic(toml_path, "# per-visit sky shifts [arcsec east, north] (jwstgal wcs_adjust)\n"
                          + tomli_w.dumps(doc))
        log.info("wcs_adjust: visit shifts written to %s", toml_path)
        return doc["wcs_adjust"]


def apply_wcs_adjust(cal: Path, out: Path, shift_arcsec: list[float], config_hash: str = "") -> Path:
    """Copy of a calibrated exposure whose gwcs is shifted on the sky by (east, north) arcsec."""
    from jwst.assign_wcs.util import update_fits_wcsinfo
    from jwst.tweakreg.utils import adjust_wcs
    from stdatamodels.jwst.datamodels import ImageModel

    with ImageModel(str(cal)) as m:
        dec = float(m.meta.wcsinfo.dec_ref)
        m.meta.wcs = adjust_wcs(m.meta.wcs, delta_ra=shift_arcsec[0] / 3600 / np.cos(np.deg2rad(dec)),
                                delta_dec=shift_arcsec[1] / 3600)
        update_fits_wcsinfo(m, max_pix_error=0.01, npoints=16)
        with atomic_path(out) as tmp:
            m.save(tmp)
    stamp = fits.open(out, mode="update")
    with stamp:
        stamp[0].header["WCSADJ"] = (json.dumps(shift_arcsec), "wcs_adjust shift [arcsec E, N]")
        stamp_header(stamp[0].header, step="wcsad", params={"shift_arcsec": shift_arcsec},
                     config_hash=config_hash)
    return out


def reference_positions(ref_path: Path, epoch: float) -> tuple[np.ndarray, np.ndarray]:
    """Reference catalogue positions at ``epoch`` (proper motions propagated when given)."""
    return propagate_proper_motion(Table.read(ref_path), epoch)


def query_gaia(ra: float, dec: float, radius_arcmin: float, out: Path) -> Path:
    """Gaia DR3 sources around a position, cached as ECSV (needs the internet)."""
    import astropy.units as u
    from astropy.coordinates import SkyCoord

    if out.is_file():
        return out
    try:
        from astroquery.gaia import Gaia

        Gaia.ROW_LIMIT = -1
        job = Gaia.cone_search_async(SkyCoord(ra, dec, unit="deg"), radius=radius_arcmin * u.arcmin,
                                     columns=["ra", "dec", "pmra", "pmdec", "ref_epoch",
                                              "phot_g_mean_mag"])
        table = job.get_results()
    except OSError as err:
        msg = f"Gaia query around ({ra:.5f}, {dec:.5f}) failed (no network?): {err}"
        raise StepFailedError(msg) from err
    with atomic_path(out) as tmp:
        table.write(tmp, format="ascii.ecsv")
    return out


def mosaic_epoch(i2d: Path) -> float:
    """Decimal year of a mosaic's mid-exposure time."""
    from astropy.time import Time

    h = fits.getheader(i2d)
    mjd = h.get("MJD-AVG") or h.get("EXPMID") or h.get("EXPSTART")
    return float(Time(mjd, format="mjd").decimalyear) if mjd else 2024.0


def image_sources(i2d: Path, catalog: Path, fwhm_pix: float) -> tuple[np.ndarray, np.ndarray]:
    """Point sources of a mosaic: the stage-3 catalogue's compact sources, else own detections."""
    if catalog.is_file():
        cat = Table.read(catalog)
        if "is_extended" in cat.colnames:
            cat = cat[~np.asarray(cat["is_extended"], bool)]
        sc = cat["sky_centroid"]
        return np.asarray(sc.ra.deg), np.asarray(sc.dec.deg)
    from astropy.wcs import WCS

    with fits.open(i2d) as h:
        data = np.array(h["SCI"].data, float)
        data[data == 0] = np.nan
        w = WCS(h["SCI"].header)
    x, y = detect_stars(data, fwhm_pix)
    return w.pixel_to_world_values(x, y)


def write_aligned_mosaic(i2d: Path, out: Path, result: AlignResult, config_hash: str = "") -> Path:
    """Copy of a mosaic with every celestial FITS WCS corrected (the stale gwcs ASDF is dropped)."""
    with fits.open(i2d) as h:
        hdus = []
        for hdu in h:
            if hdu.name == "ASDF":
                continue
            new = hdu.copy()
            if hdu.header.get("CTYPE1", "").startswith("RA"):
                new.header = correct_fits_wcs(hdu.header, result)
            hdus.append(new)
        primary = hdus[0].header
        primary["ASTALIGN"] = (json.dumps(result.to_dict()["shift_arcsec"]),
                               "absolute alignment shift [arcsec E, N]")
        stamp_header(primary, step="astal", params=result.to_dict(), config_hash=config_hash)
        with atomic_path(out) as tmp:
            fits.HDUList(hdus).writeto(tmp)
    return out


def tweakback(crf: Path, out: Path, result: AlignResult, config_hash: str = "") -> Path:
    """Push a mosaic's shift back to a per-exposure crf file."""
    return apply_wcs_adjust(crf, out, [float(result.shift[0]), float(result.shift[1])], config_hash)


def result_from_dict(d: dict[str, Any]) -> AlignResult:
    """Rebuild a (borrowed) solution saved with :meth:`AlignResult.to_dict`."""
    return AlignResult(np.asarray(d["shift_arcsec"]), np.asarray(d["matrix"]), d["rotation_deg"],
                       d["scale"], d["rms_mas"], d["n_matches"], d["passes_ok"], tuple(d["center_deg"]))
