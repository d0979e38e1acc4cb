"""Run the STScI jwst pipelines (stages 1-3) on one exposure or one association.

Each runner writes the pipeline's outputs into a private temporary folder, stamps provenance into
them, and only then moves them into the final folder (same filesystem, atomic renames). Inputs are
only ever read, so raw data are never modified.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from astropy.io import fits
from astropy.table import Table

from jwstgal.bands import Band
from jwstgal.crds_setup import crds_guard, import_jwst_pipelines
from jwstgal.errors import StepFailedError
from jwstgal.provenance import stamp_fits_file
from jwstgal.settings import MISSING, pixel_length, resolve

log = logging.getLogger(__name__)


def _run_into(out_dir: Path, step: str, params: Mapping[str, Any], config_hash: str, run, *,
              replace: bool = False) -> list[Path]:
    """Run ``run(tmp_dir)``, stamp every FITS it wrote, move everything into ``out_dir``.

    With ``replace`` the products are all-or-nothing: only once ``run`` succeeded are the files
    of ``out_dir`` that it did not write again removed (a failed rerun keeps the previous ones).
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = out_dir / f".tmp-{step}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        run(tmp)
        produced = sorted(p for p in tmp.iterdir() if p.is_file())
        for p in produced:
            if p.suffix == ".fits":
                stamp_fits_file(p, step=step, params=dict(params), config_hash=config_hash)
        final = []
        for p in produced:
            p.replace(out_dir / p.name)
            final.append(out_dir / p.name)
        if replace:
            for old in out_dir.iterdir():
                if old.is_file() and not old.name.startswith(".") and old not in final:
                    old.unlink()
        return final
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _call(pipeline: str, what: str, *args: Any, **kwargs: Any) -> Any:
    cls = import_jwst_pipelines()[pipeline]
    with crds_guard(what):
        try:
            return cls.call(*args, configure_log=False, **kwargs)
        except Exception as err:
            if type(err).__module__.startswith("crds"):
                raise
            msg = f"{pipeline} failed on {what}: {type(err).__name__}: {err}"
            raise StepFailedError(msg) from err


def run_stage1(uncal: Path, out_dir: Path, params: Mapping[str, Any], config_hash: str = "") -> list[Path]:
    """Detector1Pipeline: ``*_uncal.fits`` -> ``*_rate.fits`` in ``out_dir``.

    Parameters
    ----------
    uncal : pathlib.Path
        Raw ramp file (read only).
    out_dir : pathlib.Path
        Destination folder.
    params : mapping
        ``call()`` keywords resolved from ``[lv1_parameters]`` (``steps`` and pipeline keys).
    config_hash : str
        Hash of the run's config, recorded in the output headers.

    Returns
    -------
    list of pathlib.Path
        Files written.
    """
    return _run_into(out_dir, "lv1", params, config_hash, lambda tmp: _call(
        "Detector1Pipeline", f"stage 1 of {uncal.name}", str(uncal), output_dir=str(tmp),
        save_results=True, **params))


def _program_and_target(path: Path) -> tuple[str, str]:
    """Program (5 digits) and target name of an exposure, from its primary header."""
    h = fits.getheader(path)
    program = str(h.get("PROGRAM", "") or "").strip()
    target = str(h.get("TARGPROP") or h.get("TARGNAME") or "none").strip()
    return (program.zfill(5) if program.isdigit() else program or "noprogram"), target


def _relative(path: Path, base: Path) -> str:
    """``path`` relative to ``base`` (how jwst resolves association members: from the asn's folder)."""
    return os.path.relpath(path.resolve(), base.resolve())


def write_image2_asn(science: Path, backgrounds: list[Path], path: Path) -> Path:
    """Write a level-2 image association: one product, a science rate file plus background members.

    (``asn_from_list`` would make one product per member for level-2 rules.) A standard
    association: ``asn_type`` image2, program and target from the science header. Member paths
    are absolute: jwst 3.0's Image2Pipeline opens them from the working directory, not from the
    association's folder (relative members fail; the association is temporary, never kept).
    """
    from importlib.metadata import version

    stem = science.name.removesuffix("_rate.fits")
    program, target = _program_and_target(science)
    members = [{"expname": str(science.resolve()), "exptype": "science"}]
    members += [{"expname": str(b.resolve()), "exptype": "background"} for b in backgrounds]
    asn = {"asn_type": "image2", "asn_rule": "DMSLevel2bBase", "version_id": None,
           "code_version": version("jwst"), "program": program, "target": target,
           "asn_id": f"o{stem[7:10]}", "asn_pool": "jwstgal",
           "products": [{"name": stem, "members": members}]}
    path.write_text(json.dumps(asn, indent=2))
    return path


def run_stage2(rate: Path, backgrounds: list[Path], out_dir: Path, params: Mapping[str, Any],
               config_hash: str = "") -> list[Path]:
    """Image2Pipeline: one ``*_rate.fits`` (with background exposures) -> ``*_cal.fits``.

    Parameters
    ----------
    rate : pathlib.Path
        Science rate file.
    backgrounds : list of pathlib.Path
        Dedicated background rate files subtracted by ``bkg_subtract`` (may be empty).
    out_dir : pathlib.Path
        Destination folder.
    params : mapping
        Resolved ``[lv2_parameters]``.
    config_hash : str
        Recorded in the output headers.

    Returns
    -------
    list of pathlib.Path
    """
    call = dict(params)
    if backgrounds:     # the background subtracted is kept (and released) unless told otherwise
        steps = {k: dict(v) for k, v in dict(call.get("steps", {})).items()}
        steps.setdefault("bkg_subtract", {}).setdefault("save_combined_background", True)
        call["steps"] = steps

    def run(tmp: Path) -> None:
        src = rate
        if backgrounds:
            src = write_image2_asn(rate, backgrounds, tmp / f"{rate.stem}_asn.json")
        _call("Image2Pipeline", f"stage 2 of {rate.name}", str(src), output_dir=str(tmp),
              save_results=True, **call)
        for p in tmp.glob("*_asn.json"):
            p.unlink()

    return _run_into(out_dir, "lv2", params, config_hash, run)


def write_image3_asn(cal_files: list[Path], product: str, path: Path, base: Path | None = None,
                     group_ids: list[str] | None = None) -> Path:
    """Write a level-3 image association of science cal files.

    A standard association (``asn_from_list`` with ``asn_type`` image3, the program and target of
    the exposures' headers), member paths relative to ``base`` (default: the association's folder).
    ``group_ids`` (one per file) are written into the members, where jwst's ModelLibrary takes
    them from instead of the files' headers.
    """
    from jwst.associations import asn_from_list
    from jwst.associations.lib.rules_level3_base import DMS_Level3_Base

    base = base or path.parent
    names = [_relative(p, base) for p in cal_files]
    asn = asn_from_list.asn_from_list(names, rule=DMS_Level3_Base, product_name=product)
    asn["asn_type"] = "image3"
    asn["program"], asn["target"] = _program_and_target(cal_files[0])
    asn["asn_pool"] = "jwstgal"
    if group_ids is not None:
        for member, gid in zip(asn["products"][0]["members"], group_ids, strict=True):
            member["group_id"] = gid
    _, serialized = asn.dump(format="json")
    path.write_text(serialized)
    return path


#: How exposures are grouped in tweakreg and skymatch: ``exposure`` (jwst's own: the detectors of
#: one exposure together), ``visit`` (every dither of a visit together: one shift and one sky level
#: per visit) or ``file`` (every file alone).
GROUPINGS = ("exposure", "visit", "file")


def group_ids(files: list[Path], mode: str) -> list[str]:
    """The group of each file for ``mode`` (one of :data:`GROUPINGS`), from its observation keywords."""
    from jwst.datamodels.utils import attrs_to_group_id
    from stdatamodels.jwst.datamodels import read_metadata

    if mode not in GROUPINGS:
        msg = f"grouping {mode!r} is not one of {', '.join(GROUPINGS)}"
        raise ValueError(msg)
    out = []
    for p in files:
        if mode == "file":
            out.append(p.name)
            continue
        obs = read_metadata(str(p), flatten=False)["meta"]["observation"]
        try:
            out.append(attrs_to_group_id(obs) if mode == "exposure" else
                       f"jw{obs['program_number']}{obs['observation_number']}{obs['visit_number']}")
        except KeyError as err:
            msg = f"{p}: cannot group it by {mode}: header keyword missing ({err})"
            raise StepFailedError(msg) from err
    return out


def _match_grouped(cal_files: list[Path], product: str, work: Path, steps: Mapping[str, Any],
                   groups: Mapping[str, str]) -> list[Path]:
    """Run tweakreg then skymatch, each with its own grouping; the matched exposures in ``work``.

    jwst groups exposures once, by ``group_id``, for every step of stage 3; grouping dithers
    for outlier detection too would merge them into one drizzled image. So the two steps run
    here on their own, each on a library whose members carry its grouping, and stage 3 goes on
    from the files written here with jwst's grouping.
    """
    from jwst.datamodels import ModelLibrary

    work.mkdir()
    asn = write_image3_asn(cal_files, product, work / "tweakreg_asn.json",
                           group_ids=group_ids(cal_files, groups["tweakreg"]))
    lib = ModelLibrary(str(asn), on_disk=False)
    tweak = dict(steps.get("tweakreg", {}))
    if not tweak.pop("skip", False):
        log.info("%s: tweakreg on %d groups (%s)", product, len(lib.group_names), groups["tweakreg"])
        lib = _call("TweakRegStep", f"tweakreg of {product}", lib, **tweak)
    with lib:
        models = [lib.borrow(i) for i in range(len(lib))]
        for i, m in enumerate(models):
            lib.shelve(m, i, modify=False)
    for m, gid in zip(models, group_ids(cal_files, groups["skymatch"]), strict=True):
        m.meta.group_id = gid
    lib = ModelLibrary(models, on_disk=False)
    sky = dict(steps.get("skymatch", {}))
    if not sky.pop("skip", False):
        log.info("%s: skymatch on %d groups (%s)", product, len(lib.group_names), groups["skymatch"])
        lib = _call("SkyMatchStep", f"skymatch of {product}", lib, **sky)
    out = [work / p.name for p in cal_files]
    with lib:
        for i, dst in enumerate(out):
            m = lib.borrow(i)
            m.save(str(dst))
            lib.shelve(m, i, modify=False)
    return out


def reference_catalog_ecsv(catalog: Path, out: Path) -> Path:
    """Convert an astrometric catalogue (FITS/ECSV with ra/dec columns) to tweakreg's RA/DEC ECSV."""
    t = Table.read(catalog)
    cols = {c.lower(): c for c in t.colnames}
    if "ra" not in cols or "dec" not in cols:
        msg = f"{catalog}: astrometric catalogue needs 'ra' and 'dec' columns (has {t.colnames})"
        raise StepFailedError(msg)
    Table({"RA": t[cols["ra"]], "DEC": t[cols["dec"]]}).write(out, format="ascii.ecsv",
                                                              overwrite=True)
    return out


def run_stage3(cal_files: list[Path], product: str, out_dir: Path, params: Mapping[str, Any],
               config_hash: str = "", abs_refcat: Path | None = None,
               groups: Mapping[str, str] | None = None) -> list[Path]:
    """Image3Pipeline: science cal files -> ``<product>_i2d.fits`` mosaic, catalogue, crf files.

    Parameters
    ----------
    cal_files : list of pathlib.Path
        Science exposures (no backgrounds).
    product : str
        Product name, e.g. ``ngc0628_nircam_lv3_f200w``.
    out_dir : pathlib.Path
        Destination folder.
    params : mapping
        Resolved ``[lv3_parameters]``.
    config_hash : str
        Recorded in the output headers.
    abs_refcat : pathlib.Path, optional
        Astrometric catalogue for tweakreg's absolute alignment (unless the config sets one).
    groups : mapping, optional
        Grouping (:data:`GROUPINGS`) of ``tweakreg`` and ``skymatch`` (default ``exposure``,
        jwst's own). Any other grouping runs those two steps apart (:func:`_match_grouped`).

    Returns
    -------
    list of pathlib.Path
    """
    groups = {"tweakreg": "exposure", "skymatch": "exposure", **(groups or {})}
    params = {**json.loads(json.dumps(params)), "groups": groups}  # private deep copy

    def run(tmp: Path) -> None:
        call = json.loads(json.dumps(params))   # what the pipeline gets; the headers record params
        call.pop("groups")
        steps = call.setdefault("steps", {})
        tweak = steps.setdefault("tweakreg", {})
        refcat = tmp / "abs_refcat.ecsv"
        if abs_refcat is not None and "abs_refcat" not in tweak:
            tweak["abs_refcat"] = str(reference_catalog_ecsv(abs_refcat, refcat))
        inputs, ids = cal_files, None
        regroup = [s for s in ("tweakreg", "skymatch") if groups[s] != "exposure"]
        if any(not steps.get(s, {}).get("skip") for s in regroup):
            inputs = _match_grouped(cal_files, product, tmp / "grouped", steps, groups)
            ids = group_ids(inputs, "exposure")  # not the group_id the matched files now carry
            for s in ("tweakreg", "skymatch"):
                steps[s] = {**steps.get(s, {}), "skip": True}
        asn = write_image3_asn(inputs, product, tmp / f"{product}_asn.json", group_ids=ids)
        _call("Image3Pipeline", f"stage 3 of {product}", str(asn), output_dir=str(tmp),
              save_results=True, **call)
        refcat.unlink(missing_ok=True)
        # kept beside the mosaic: its members relative to where it ends up
        write_image3_asn(cal_files, product, asn, base=out_dir)

    return _run_into(out_dir, "lv3", params, config_hash, run, replace=True)


def run_resample(crf_files: list[Path], product: str, out_dir: Path, params: Mapping[str, Any],
                 config_hash: str = "", grid: Path | None = None) -> list[Path]:
    """Resample aligned exposures (crf) with jwst ResampleStep into ``<product>_i2d.fits``.

    ``params`` are ResampleStep parameters (the ``[lv3_parameters.resample]`` ones); with ``grid``
    (a mosaic) the exposures are drawn onto that mosaic's pixel grid.
    """
    params = dict(params)

    def run(tmp: Path) -> None:
        asn = write_image3_asn(crf_files, product, tmp / f"{product}_asn.json")
        if grid is not None:
            params["output_wcs"] = str(_grid_asdf(grid, tmp / f"{product}_grid.asdf"))
        _call("ResampleStep", f"the resampling of {product}", str(asn), output_dir=str(tmp),
              save_results=True, **params)
        (tmp / f"{product}_grid.asdf").unlink(missing_ok=True)
        made = sorted(tmp.glob("*.fits"))       # stpipe names it after the association
        if len(made) != 1:
            msg = f"ResampleStep on {product} wrote {len(made)} FITS files, not one"
            raise StepFailedError(msg)
        made[0].replace(tmp / f"{product}_i2d.fits")
        write_image3_asn(crf_files, product, asn, base=out_dir)

    return _run_into(out_dir, "field_mosaics", params, config_hash, run)


def _grid_asdf(mosaic: Path, out: Path) -> Path:
    """An ASDF file holding a mosaic's gwcs, with its array shape (ResampleStep's ``output_wcs``)."""
    import asdf
    from stdatamodels.jwst.datamodels import ImageModel

    with ImageModel(str(mosaic)) as m:
        wcs = m.meta.wcs
        wcs.array_shape = m.data.shape
        asdf.AsdfFile({"wcs": wcs}).write_to(out)
    return out


#: jwst pipeline behind each stage's parameter table.
STAGE_PIPELINES: dict[str, str] = {
    "lv1_parameters": "Detector1Pipeline",
    "lv2_parameters": "Image2Pipeline",
    "lv3_parameters": "Image3Pipeline",
}
#: Pipeline-level arguments that the suite sets itself and a config must not.
MANAGED_PIPELINE_KEYS = frozenset({"output_dir", "output_file", "input_dir", "steps", "pre_hooks",
                                   "post_hooks", "search_output_file"})
#: Arguments of a whole pipeline (not of its steps) that the suite sets itself: a config's
#: ``save_results`` would be passed twice.
MANAGED_RUN_KEYS = MANAGED_PIPELINE_KEYS | {"save_results"}


def pipeline_class(stage: str) -> Any:
    """The jwst pipeline class behind a ``lvN_parameters`` table."""
    return import_jwst_pipelines()[STAGE_PIPELINES[stage]]


def stage_parameters(table: Mapping[str, Any], stage: str, target: str, band: Band) -> dict[str, Any]:
    """Resolve a ``lvN_parameters`` table into jwst ``call()`` keyword arguments for one band.

    Parameters
    ----------
    table : mapping
        The validated ``lvN_parameters`` table (selector values allowed).
    stage : {"lv1_parameters", "lv2_parameters", "lv3_parameters"}
        Which table.
    target : str
        Target name.
    band : Band
        Band being processed.

    Returns
    -------
    dict
        ``{"steps": {step: {param: value}}, <pipeline param>: value}`` with every selector resolved
        and unmatched selector values left out; a length in pixels (``"5pix"``, as the original
        scripts accepted it) becomes arcsec at the band's native pixel scale.
    """
    def value_of(v: Any) -> Any:
        v = resolve(v, target, band)
        n = pixel_length(v)
        return v if n is None else n * band.pixel_scale

    pipeline_kw: dict[str, Any] = {}
    steps: dict[str, dict[str, Any]] = {}
    step_names = tuple(pipeline_class(stage).step_defs)
    for key, value in table.items():
        if key in step_names:
            resolved = {p: value_of(v) for p, v in value.items()}
            steps[key] = {p: v for p, v in resolved.items() if v is not MISSING}
        else:
            v = value_of(value)
            if v is not MISSING:
                pipeline_kw[key] = v
    return {**pipeline_kw, "steps": steps}
