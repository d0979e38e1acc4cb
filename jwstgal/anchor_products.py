"""Anchoring as files: fit every band of a target, write the anchored mosaics, the table and plots.

Per instrument with an ``[anchor] reference`` band:

1. the reference band is taken to the resolution of an external map
   (``<anchor_ref_dir>/<target>_<map>.fits``) through the resolution ladder
   (:func:`jwstgal.convolve_products.to_rung`), reprojected onto the map's grid and fitted against
   it (:func:`jwstgal.anchor.estimate_offset`): ``offset_ref = -f(0)``. The maps are tried in the
   configured order: one that is missing, unreadable, without a celestial WCS, too small, without
   finite surface brightness, in other units (BUNIT), without overlap, or whose fit fails or has an
   implausible slope (``[anchor] slope_range``) is passed over, and the table says which map was
   used and why the others were not;
2. every other band of the instrument and the reference band are taken to ``internal_psf`` on one
   grid, and the band is fitted against the reference where the anchored reference is zero:
   ``offset = -f(-offset_ref)``;
3. each anchored band is written as ``<BAND>/anchor/<product>_i2d_anchor.fits`` (the final mosaic
   plus its offset where it has data; ``ANCHOFF``, ``ANCHERR`` (total), ``ANCHSTAT``, ``ANCHSYS``,
   ``ANCHMETH``, ``ANCHREF``, ``ANCHSLP`` keywords) and the target's
   ``anchor/<target>_anchor.ecsv`` lists every band (anchored or why not), with the fit's method
   and the offset's statistical and systematic (sub-region spread) errors.

No usable external map, or a missing mosaic, leaves that instrument's bands un-anchored with the
reason in the table and the log, and removes anchored mosaics of an earlier run; nothing else stops
(a failed band or target leaves the others going). A run whose inputs and settings are unchanged is
skipped.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from astropy.io import fits
from astropy.table import Table
from astropy.wcs import WCS

from jwstgal import layout
from jwstgal.anchor import SKY_PERCENTILE, OffsetEstimate, estimate_offset, faint_sky
from jwstgal.anchor_maps import read_external
from jwstgal.bands import get_band
from jwstgal.convolve import image_pixel_scale, reproject_image
from jwstgal.convolve_products import Mosaic, kernel_is_refused, need_kernel, read_mosaic, to_rung
from jwstgal.errors import InputNotFoundError, ReductionError
from jwstgal.ladder import plan_rung
from jwstgal.plots import anchor_fit_png
from jwstgal.provenance import atomic_path, hash_params, stamp_header

log = logging.getLogger(__name__)


class AnchorRun(Protocol):
    """What anchoring reads of a validated run (:class:`jwstgal.config.RunConfig` is one)."""

    science: Any
    reprocess_dir: Path
    psf_dir: Path
    anchor_ref_dir: Path | None
    config_hash: str

#: Valid kernel weight a convolved pixel needs to enter a fit: pixels near edges and holes have a
#: truncated kernel, hence not the resolution of the map they are compared with.
FULL_WEIGHT = 0.99
#: What a failed map or band is caught as: its reason goes into the table, the rest goes on.
_ANCHOR_ERRORS = (ReductionError, InputNotFoundError, ValueError, OSError)


@dataclass
class AnchorRow:
    """One band's anchoring (a row of the target's table)."""

    target: str
    band: str
    instrument: str
    reference: str = ""
    psf: str = ""
    method: str = ""
    slope: float = np.nan
    slope_err: float = np.nan
    curvature: float = np.nan
    intercept: float = np.nan
    intercept_err: float = np.nan
    offset: float = np.nan
    offset_err: float = np.nan
    offset_stat_err: float = np.nan
    offset_sys_err: float = np.nan
    extrapolation: float = np.nan
    npix: int = 0
    status: str = ""
    note: str = ""
    sky: float = np.nan


def _external_maps(cfg: AnchorRun, target: str, inst: str, band: str | None = None
                   ) -> list[tuple[Path, Any]]:
    """The configured external maps of an instrument (path, settings), in order of preference.

    With ``band``, only the maps that anchor it: those listing it in ``bands``, and for the
    reference band those that list no band.
    """
    if cfg.anchor_ref_dir is None:
        return []
    ref = cfg.science.anchor.reference.get(inst)
    return [(cfg.anchor_ref_dir / f"{target}_{m.band}.fits", m)
            for m in cfg.science.anchor.external.get(inst, [])
            if band is None or band in m.bands or (not m.bands and band == ref)]


def _at(cfg: AnchorRun, mosaic: Mosaic, band: str, psf: str, grid_bands: tuple[str, ...] = (),
        grid: Path | None = None, max_pixel: float = np.inf) -> tuple[np.ndarray, WCS]:
    """A mosaic taken to ``psf`` through the ladder (kernels from make_kernels.py)."""
    conv = cfg.science.convolve
    rung = plan_rung(band, psf, mosaic.pixscale, direct_max=conv.direct_max, reproject=grid is not None,
                     bands=grid_bands, max_pixel=max_pixel)
    kfile = None
    if rung.kernel_target:
        kfile = need_kernel(layout.kernel_path(cfg.psf_dir, conv.method, band, rung.kernel_target))
        if why := kernel_is_refused(kfile, conv.allow_unsafe):
            raise ReductionError(why)
    sci, _, wcs, _ = to_rung(mosaic, rung, kfile, block_size=conv.block_size, grid=grid,
                             min_weight=FULL_WEIGHT, sampling=conv.kernel_sampling)
    return np.asarray(sci, float), wcs


def _estimate(cfg: AnchorRun, x: np.ndarray, y: np.ndarray, offset_ref: float = 0.0,
              offset_ref_err: float = 0.0) -> OffsetEstimate:
    a = cfg.science.anchor
    return estimate_offset(x, y, offset_ref=offset_ref, offset_ref_err=offset_ref_err,
                           degree=2 if a.colour_term else 1, regions=a.regions, x_range=a.fit_range,
                           n_bins=a.n_bins, min_per_bin=a.min_per_bin, clip_sigma=a.clip_sigma)


def _inputs_key(cfg: AnchorRun, paths: list[Path], bands: list[str]) -> str:
    """Hash of what an instrument's anchoring depends on: files, settings, and the bands' kernels."""
    stats = [(p.name, p.stat().st_size, int(p.stat().st_mtime)) for p in paths]
    kdir = cfg.psf_dir / "kernels" / cfg.science.convolve.method
    kernels = [(k.name, fits.getheader(k).get("JG_KERN")) for b in bands
               for k in sorted(kdir.glob(f"{b}_to_*.fits"))]
    conv = cfg.science.convolve
    return hash_params([stats, kernels, cfg.science.anchor.key_dump(), conv.method, conv.direct_max,
                        conv.kernel_sampling])


def _finite_or(value: float, fallback: float) -> float:
    return float(value) if np.isfinite(value) else fallback


def write_anchored(final: Path, out: Path, row: AnchorRow, config_hash: str = "") -> Path:
    """Copy of ``final`` with ``row.offset`` added to SCI where it has data, keywords recorded."""
    with fits.open(final) as h:
        hdus = [hdu.copy() for hdu in h]
    names = [hdu.name for hdu in hdus]
    sci = hdus[names.index("SCI")]
    data = np.asarray(sci.data, np.float32)
    has = np.isfinite(data) & (data != 0)
    if "WHT" in names:
        has &= np.asarray(hdus[names.index("WHT")].data) > 0
    sci.data = np.where(has, data + np.float32(row.offset), data).astype(np.float32)
    primary = hdus[0].header
    primary["ANCHOFF"] = (row.offset, "[MJy/sr] background offset added to SCI")
    primary["ANCHERR"] = (row.offset_err, "[MJy/sr] 1-sigma error of ANCHOFF (stat+sys)")
    primary["ANCHSTAT"] = (row.offset_stat_err, "[MJy/sr] statistical part of ANCHERR")
    primary["ANCHSYS"] = (_finite_or(row.offset_sys_err, -1.0),
                          "[MJy/sr] sub-region spread (-1: none)")
    primary["ANCHMETH"] = (row.method, "fit: line, or colour term (quadratic)")
    primary["ANCHREF"] = (row.reference, "anchored against this map or band")
    primary["ANCHSLP"] = (row.slope, "fitted slope against ANCHREF")
    stamp_header(primary, step="anchor", params={k: v for k, v in asdict(row).items()
                                                 if k not in ("target", "status", "note", "sky")},
                 config_hash=config_hash)
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as tmp:
        fits.HDUList(hdus).writeto(tmp)
    return out


def _fill(row: AnchorRow, est: OffsetEstimate, reference: str, psf: str, band: np.ndarray) -> None:
    """A row from a fit; ``band`` holds the band's pixels that were fitted (for its faint sky)."""
    fit = est.fit
    row.sky = faint_sky(band, est.offset)
    row.reference, row.psf, row.method = reference, psf, est.method
    row.slope, row.slope_err, row.curvature = fit.slope, fit.slope_err, fit.curvature
    row.intercept, row.intercept_err = fit.intercept, fit.intercept_err
    row.offset, row.offset_err, row.npix = est.offset, est.err, fit.npix
    row.offset_stat_err, row.offset_sys_err = est.stat_err, est.sys_err
    row.extrapolation = est.extrapolation
    row.status = "anchored"
    if est.model_spread:
        row.note = "; ".join(filter(None, [row.note, (
            f"read {est.extrapolation:.2f} of the fitted span outside it: the line-vs-colour-term "
            f"difference {est.model_spread:.4f} is in the systematic error")]))
    if not np.isfinite(est.sys_err):
        row.note = "; ".join(filter(None, [row.note, "systematic error not measured: fewer than 3 "
                                           "sub-regions could be fitted (error is statistical only)"]))


def _plot(cfg: AnchorRun, target: str, band: str, against: str, psf: str, x: np.ndarray,
          y: np.ndarray, est: OffsetEstimate, xlabel: str, x0: float = 0.0) -> None:
    anchor_fit_png(x, y, est.fit, layout.anchor_plot(cfg.reprocess_dir, target, band, against),
                   f"{target} {band} vs {against} at {psf} ({est.method}): offset {est.offset:+.4f} "
                   f"± {est.stat_err:.4f} (stat) ± {est.sys_err:.4f} (sys)", xlabel,
                   f"{band} at {psf} [MJy/sr]", x0=x0)


def _anchor_directly(cfg: AnchorRun, target: str, inst: str, band: str, final: Path,
                     row: AnchorRow) -> bool:
    """Anchor a band against an external map that lists it; False (with why in the note) if none.

    A band that no map lists, or whose maps all fail, is chained to the reference instead.
    """
    if not _external_maps(cfg, target, inst, band):
        return False
    try:
        with read_mosaic(final) as mosaic:
            used, notes = _fit_external(cfg, target, inst, band, mosaic)
    except _ANCHOR_ERRORS as err:
        used, notes = None, [f"{final.name}: {err}"]
    if notes:
        row.note = f"not used: {'; '.join(notes)}"
        log.warning("%s %s: %s", target, band, row.note)
    if used is None:
        row.note += "; chained to the reference band instead"
        return False
    _record_external(cfg, target, band, row, used)
    return True


def _record_external(cfg: AnchorRun, target: str, band: str, row: AnchorRow,
                     used: tuple[Path, Any, np.ndarray, np.ndarray, OffsetEstimate]) -> None:
    path, ext, ext_data, jw_on_ext, est = used
    _fill(row, est, ext.band, ext.psf, jw_on_ext)
    _plot(cfg, target, band, ext.band, ext.psf, ext_data, jw_on_ext, est,
          f"{ext.band} ({path.name}) [MJy/sr]")


def _fit_external(cfg: AnchorRun, target: str, inst: str, ref: str, ref_mosaic: Mosaic
                  ) -> tuple[tuple[Path, Any, np.ndarray, np.ndarray, OffsetEstimate] | None, list[str]]:
    """The first external map a band (``ref``) fits against, and why each one before was not used."""
    lo, hi = cfg.science.anchor.slope_range
    notes = []
    for path, ext in _external_maps(cfg, target, inst, ref):
        if not path.is_file():
            notes.append(f"{ext.band}: no file {path}")
            continue
        try:
            ext_data, ext_wcs = read_external(path)
            # a grid 3x finer than the map's, so that reprojection averages over the map's pixels
            jw, jw_wcs = _at(cfg, ref_mosaic, ref, ext.psf, max_pixel=image_pixel_scale(ext_wcs) / 3)
            jw_on_ext = reproject_image(jw, jw_wcs, ext_wcs, ext_data.shape)
            if not (np.isfinite(jw_on_ext) & np.isfinite(ext_data)).any():
                notes.append(f"{ext.band}: {path.name} does not overlap the {ref} mosaic")
                continue
            est = _estimate(cfg, ext_data, jw_on_ext)
        except _ANCHOR_ERRORS as err:
            notes.append(f"{ext.band}: {err}")
            continue
        if not lo <= (slope := est.fit.mean_slope) <= hi:
            notes.append(f"{ext.band}: fitted slope {slope:.3g} is outside [anchor] slope_range "
                         f"{lo:g}-{hi:g} (a map in other units, or of another field?)")
            continue
        return (path, ext, ext_data, jw_on_ext, est), notes
    return None, notes


def anchor_instrument(cfg: AnchorRun, target: str, inst: str) -> list[AnchorRow]:
    """Fit and write every band of one instrument of one target; the rows of the table.

    Nothing here stops the run: a band or map that fails is recorded in its row's status (and the
    maps passed over in ``note``), and the other bands go on.
    """
    a = cfg.science.anchor
    bands = getattr(cfg.science.pipeline, f"{inst}_bands")
    ref = a.reference[inst]
    rows = {b: AnchorRow(target, b, inst) for b in bands}
    folders = {b: layout.band_dir(cfg.reprocess_dir, target, b) for b in bands}
    finals = {b: layout.final_mosaic(folders[b], target, get_band(b)) for b in bands}
    missing = [b for b in bands if not finals[b].is_file()]
    for b in missing:
        rows[b].status = f"not anchored: no mosaic {finals[b]}"
    if ref in missing:
        for b in bands:
            rows[b].status = rows[b].status or f"not anchored: reference band {ref} has no mosaic"
        return list(rows.values())
    maps = [p for p, _ in _external_maps(cfg, target, inst)]
    if not any(p.is_file() for p in maps):
        where = ", ".join(map(str, maps)) if maps else "(set [local] anchor_ref_dir)"
        log.warning("%s %s: no external map to anchor to; expected one of %s; %s bands left "
                    "un-anchored", target, inst.upper(), where, inst.upper())
        for b in bands:
            rows[b].status = rows[b].status or f"not anchored: no external map ({where})"
        return list(rows.values())
    with read_mosaic(finals[ref]) as ref_mosaic:     # its scratch files go when done
        used, notes = _fit_external(cfg, target, inst, ref, ref_mosaic)
        if used is None:
            why = "; ".join(notes)
            log.warning("%s %s: no usable external map (%s); %s bands left un-anchored", target,
                        inst.upper(), why, inst.upper())
            for b in bands:
                rows[b].status = rows[b].status or f"not anchored: no usable external map ({why})"
            return list(rows.values())
        if notes:
            rows[ref].note = f"not used: {'; '.join(notes)}"
            log.warning("%s %s: anchored against %s; %s", target, inst.upper(), used[1].band, rows[ref].note)
        _record_external(cfg, target, ref, rows[ref], used)
        est_ref = used[4]
        others = [b for b in bands if b != ref and b not in missing
                  and not _anchor_directly(cfg, target, inst, b, finals[b], rows[b])]
        if others:
            psf = a.internal_psf[inst]
            grid = finals[psf] if psf in finals and psf not in missing else None
            try:
                x, x_wcs = _at(cfg, ref_mosaic, ref, psf, tuple(bands), grid)
            except _ANCHOR_ERRORS as err:
                for b in others:
                    rows[b].status = f"not anchored: {ref} at {psf} failed ({err})"
                others = []
            for b in others:
                try:
                    with read_mosaic(finals[b]) as mosaic:
                        y, y_wcs = _at(cfg, mosaic, b, psf, tuple(bands), grid)
                    if y.shape != x.shape or not y_wcs.wcs.compare(x_wcs.wcs, tolerance=1e-9):
                        y = reproject_image(y, y_wcs, x_wcs, x.shape)
                    est = _estimate(cfg, x, y, est_ref.offset, est_ref.err)
                except _ANCHOR_ERRORS as err:
                    rows[b].status = f"not anchored: fit against {ref} failed ({err})"
                    log.warning("%s %s: %s", target, b, rows[b].status)
                    continue
                _fill(rows[b], est, ref, psf, y)
                _plot(cfg, target, b, ref, psf, x, y, est, f"{ref} at {psf} [MJy/sr]", -est_ref.offset)
    for b, row in rows.items():
        if row.status == "anchored":
            write_anchored(finals[b], layout.anchored_mosaic(folders[b], target, get_band(b)), row,
                           cfg.config_hash)
            log.info("%s %s: offset %+.5f ± %.5f (stat) ± %.5f (sys) MJy/sr (against %s at %s, %s, "
                     "slope %.3f, %d px)", target, b, row.offset, row.offset_stat_err, row.offset_sys_err,
                     row.reference, row.psf, row.method, row.slope, row.npix)
    return list(rows.values())


def _previous(table_path: Path) -> tuple[list[AnchorRow], dict[str, str]]:
    """Rows and per-instrument keys of a target's last anchoring table (empty if none)."""
    if not table_path.is_file():
        return [], {}
    old = Table.read(table_path, format="ascii.ecsv")
    return [AnchorRow(**{k: (v.item() if hasattr(v, "item") else v) for k, v in zip(
        old.colnames, r, strict=True)}) for r in old], dict(old.meta.get("keys", {}))


def _instrument_state(cfg: AnchorRun, target: str, inst: str, old_rows: list[AnchorRow],
                      old_keys: dict[str, str], overwrite: bool
                      ) -> tuple[str, list[AnchorRow] | None, list[Path], Path | None]:
    """Key of an instrument's inputs, its kept rows when up to date (else None), mosaics, map."""
    bands = getattr(cfg.science.pipeline, f"{inst}_bands")
    folders = {b: layout.band_dir(cfg.reprocess_dir, target, b) for b in bands}
    inputs = [p for b in bands if (p := layout.final_mosaic(folders[b], target, get_band(b))).is_file()]
    maps = [p for p, _ in _external_maps(cfg, target, inst) if p.is_file()]   # any of them may be used
    key = _inputs_key(cfg, inputs + maps, bands)
    ext_path = maps[0] if maps else None
    kept = [r for r in old_rows if r.instrument == inst]
    done = all(layout.anchored_mosaic(folders[r.band], target, get_band(r.band)).is_file()
               for r in kept if r.status == "anchored")
    current = not overwrite and old_keys.get(inst) == key and kept and done
    return key, kept if current else None, inputs, ext_path


def instrument_plans(cfg: AnchorRun, target: str, overwrite: bool = False) -> list[InstrumentPlan]:
    """What anchoring would do with each configured instrument of a target (nothing is written)."""
    old_rows, old_keys = _previous(layout.anchor_table(cfg.reprocess_dir, target))
    out = []
    for inst in cfg.science.anchor.reference:
        key, kept, inputs, ext = _instrument_state(cfg, target, inst, old_rows, old_keys, overwrite)
        if kept is not None:
            what = "up to date"
        elif not inputs:
            what = "no mosaic to anchor"
        else:
            what = (f"fit against {ext.name}" if ext else "no external map: bands left un-anchored") + \
                (" (--overwrite)" if overwrite else "")
        out.append(InstrumentPlan(inst, key, what, tuple(inputs), tuple(kept) if kept is not None else None))
    return out


@dataclass(frozen=True)
class InstrumentPlan:
    """What anchoring does with one instrument of a target.

    ``kept`` holds the rows of the last run when it is up to date (None: it is refitted).
    """

    instrument: str
    key: str
    what: str
    inputs: tuple[Path, ...]
    kept: tuple[AnchorRow, ...] | None


def refit_instrument(cfg: AnchorRun, target: str, inst: str) -> list[AnchorRow]:
    """Anchor one instrument of a target afresh, removing stale anchored mosaics.

    An anchored mosaic of an earlier run whose band is no longer anchored must be neither
    convolved nor released.
    """
    fresh = anchor_instrument(cfg, target, inst)
    for r in fresh:
        stale = layout.anchored_mosaic(layout.band_dir(cfg.reprocess_dir, target, r.band), target,
                                       get_band(r.band))
        if r.status != "anchored" and stale.is_file():
            log.warning("%s %s: removing the anchored mosaic of an earlier run (%s)", target,
                        r.band, r.status)
            stale.unlink()
    return fresh


def write_anchor_table(cfg: AnchorRun, target: str, rows: list[AnchorRow], keys: dict[str, str]) -> Path:
    """Write the target's anchoring table (rows of every instrument, their input keys in its meta)."""
    table_path = layout.anchor_table(cfg.reprocess_dir, target)
    table = Table(rows=[asdict(r) for r in rows]) if rows else Table()
    table.meta["keys"] = keys
    table.meta["comments"] = ["offset [MJy/sr] is added to the mosaic; slope/intercept of "
                              "band = slope x reference + intercept at resolution psf; sky [MJy/sr]: "
                              f"the band's faint sky after anchoring ({SKY_PERCENTILE:g}th percentile "
                              "of its fitted pixels)"]
    table_path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(table_path) as tmp:
        table.write(tmp, format="ascii.ecsv")
    log.debug("anchoring table %s: %s", table_path, json.dumps(keys))
    return table_path


def anchor_target(cfg: AnchorRun, target: str, overwrite: bool = False) -> list[AnchorRow]:
    """Anchor every configured instrument of a target; writes and returns its table's rows.

    An instrument whose inputs (mosaics, external maps) and settings are those of the table's
    last run, with its anchored mosaics on disk, keeps its rows without being refitted.
    """
    rows: list[AnchorRow] = []
    keys: dict[str, str] = {}
    for plan in instrument_plans(cfg, target, overwrite):
        keys[plan.instrument] = plan.key
        if plan.kept is not None:
            log.info("%s %s: anchoring up to date", target, plan.instrument.upper())
            rows += plan.kept
        else:
            rows += refit_instrument(cfg, target, plan.instrument)
    write_anchor_table(cfg, target, rows, keys)
    return rows
