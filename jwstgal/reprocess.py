"""Drive stages 1-3 for every target and band of a configuration.

Layout of the products (one folder per step)::

    <working_dir>/jwst_lv3_reprocessed_<data_version>/<target>/<BAND>/
        rate/   *_rate.fits            (stage 1, science and background exposures)
        cal/    *_cal.fits             (stage 2, science exposures)
        lv3/    <target>_<instr>_lv3_<band>_i2d.fits (+ _cat.ecsv, _segm.fits, *_crf.fits, .png)
        .jwstgal/<step>.json           (step records: what was done, with which inputs/parameters)

A step is *complete* when its record says so and carries the same key, a hash of its parameters and
of its inputs; otherwise it is (re)run. Per-exposure outputs already written under the same key are
reused, so an interrupted run resumes where it stopped. Raw files are only read.
"""

from __future__ import annotations

import contextlib
import fnmatch
import json
import logging
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from astropy.io import fits

from jwstgal.bands import Band, get_band
from jwstgal.config import ALLOWED_STEPS, RunConfig, stage_parameters
from jwstgal.errors import CRDSError, InputNotFoundError, NothingToDo, StepFailedError
from jwstgal.executor import Executor, ExecutorSpec, open_executor
from jwstgal.provenance import hash_params, write_text_atomic
from jwstgal.stages import read_band_keys, run_stage1, run_stage2, run_stage3

log = logging.getLogger(__name__)

STEP_DIRS = {"lv1": "rate", "lv2": "cal", "destripe": "destripe", "wcs_adjust": "wcs_adjust",
             "level_match": "level_match", "stack_destripe": "stack_destripe", "lv3": "lv3",
             "astrometric_align": "astrometric_align"}


@dataclass(frozen=True)
class BandResult:
    """What processing one target/band produced (``error`` is set when a step failed)."""

    target: str
    band: str
    mosaic: Path | None
    quicklook: Path | None
    steps_run: tuple[str, ...]
    steps_skipped: tuple[str, ...]
    error: str = ""


def raw_exposures(cfg: RunConfig, target: str, band: Band) -> list[Path]:
    """Raw ``*_uncal.fits`` files of a target in a band, extra observations included.

    Files come from ``raw_dir/<target>/mastDownload/JWST/*/`` plus, for each
    ``[extra_obs_to_include.<target>] <other> = [prefixes]``, matching files of the other target.
    Names containing an ``obs_to_skip`` substring are dropped; the rest are kept when their FILTER
    (and PUPIL for NIRCam) header matches the band.
    """
    def glob(t: str, pattern: str = "*") -> list[Path]:
        return sorted((cfg.raw_dir / t / "mastDownload" / "JWST").glob(f"{pattern}/*_uncal.fits"))

    files = glob(target)
    for other, prefixes in cfg.science.extra_obs_to_include.get(target, {}).items():
        for prefix in prefixes:
            files += [p for p in glob(other) if fnmatch.fnmatch(p.name, f"{prefix}*")]
    skip = cfg.science.pipeline.obs_to_skip
    out = []
    for p in dict.fromkeys(files):
        if any(s in p.name for s in skip):
            log.info("%s %s: skipping %s (obs_to_skip)", target, band.name, p.name)
            continue
        filt, pupil, _ = read_band_keys(p)
        if filt == band.filter and (band.instrument == "miri" or pupil == band.pupil):
            out.append(p)
    return out


def is_background(path: Path, cfg: RunConfig) -> bool:
    """Whether an exposure is a dedicated background ("off") field.

    ``parallel_off``: the sequence digit (3rd character of the second file-name field) is 2, i.e.
    the exposure was taken in a parallel sequence. ``check_in_name``: ``bgr_background_name``
    appears in the TARGPROP header keyword.
    """
    pipe = cfg.science.pipeline
    if pipe.bgr_check_type == "parallel_off":
        return path.name.split("_")[1][2] == "2"
    from astropy.io import fits

    return pipe.bgr_background_name.lower() in str(fits.getheader(path).get("TARGPROP", "")).lower()


def _uses_backgrounds(cfg: RunConfig, band: Band) -> bool:
    types = cfg.science.pipeline.bgr_observation_types
    return band.band_type in types or band.instrument in types


class StepRecord:
    """The on-disk record of one step of one target/band (``.jwstgal/<step>.json``)."""

    def __init__(self, band_dir: Path, step: str) -> None:
        self.path = band_dir / ".jwstgal" / f"{step}.json"

    def read(self) -> dict[str, Any]:
        """The record, or an empty dict."""
        try:
            return json.loads(self.path.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return {}

    def is_complete(self, key: str) -> bool:
        """Whether the step finished with this key and its outputs still exist."""
        rec = self.read()
        return (rec.get("key") == key and rec.get("complete", False)
                and all((self.path.parents[1] / o).is_file() for o in rec.get("outputs", [])))

    def start(self, key: str, params: dict[str, Any]) -> bool:
        """Mark the step started; returns whether earlier partial outputs (same key) are reusable."""
        reusable = self.read().get("key") == key
        write_text_atomic(self.path, json.dumps({"key": key, "complete": False, "params": params},
                                                indent=1, default=str))
        return reusable

    def finish(self, key: str, params: dict[str, Any], outputs: list[Path]) -> None:
        """Mark the step complete with its outputs (paths relative to the band folder)."""
        rel = [str(p.relative_to(self.path.parents[1])) for p in outputs]
        write_text_atomic(self.path, json.dumps({"key": key, "complete": True, "params": params,
                                                 "outputs": rel}, indent=1, default=str))


def _content_hash(p: Path) -> str | None:
    """SHA-256 of a small file's content (None if it does not exist)."""
    import hashlib

    return hashlib.sha256(p.read_bytes()).hexdigest()[:16] if p.is_file() else None


def _file_id(p: Path) -> list[Any]:
    st = p.stat()
    return [p.name, st.st_size, int(st.st_mtime)]


def _task_stage1(uncal: str, out_dir: str, params: dict, config_hash: str) -> list[str]:
    return [str(p) for p in run_stage1(Path(uncal), Path(out_dir), params, config_hash)]


def _task_stage2(rate: str, backgrounds: list[str], out_dir: str, params: dict,
                 config_hash: str) -> list[str]:
    return [str(p) for p in run_stage2(Path(rate), [Path(b) for b in backgrounds], Path(out_dir),
                                       params, config_hash)]


def _task_stage3(cal_files: list[str], product: str, out_dir: str, params: dict, config_hash: str,
                 refcat: str | None) -> list[str]:
    return [str(p) for p in run_stage3([Path(c) for c in cal_files], product, Path(out_dir), params,
                                       config_hash, Path(refcat) if refcat else None)]


def _task_level_match(cal_files: list[str], out_dir: str, params: dict, backgrounds: list[str],
                      config_hash: str, qa_png: str) -> list[str]:
    from jwstgal.level_match_step import level_match_files

    outputs, _ = level_match_files([Path(c) for c in cal_files], Path(out_dir), params,
                                   backgrounds=[Path(b) for b in backgrounds],
                                   config_hash=config_hash, qa_png=Path(qa_png))
    return [str(p) for p in outputs]


def _task_destripe(src: str, dst: str, params: dict, config_hash: str, png: str) -> list[str]:
    from jwstgal.destripe import DestripeParams
    from jwstgal.destripe_step import destripe_file

    destripe_file(Path(src), Path(dst), DestripeParams(**params), config_hash=config_hash,
                  plot_png=Path(png))
    return [dst]


def _task_stack_destripe(files: list[str], out_dir: str, params: dict, config_hash: str,
                         plot_dir: str) -> list[str]:
    from jwstgal.destripe import StackParams
    from jwstgal.destripe_step import stack_destripe_files

    p = dict(params)
    iterations = p.pop("iterations")
    outputs = stack_destripe_files([Path(f) for f in files], Path(out_dir), StackParams(**p),
                                   iterations=iterations, config_hash=config_hash,
                                   plot_dir=Path(plot_dir))
    return [str(o) for o in outputs]


def _task_wcs_adjust(cal_files: list[str], out_dir: str, toml_path: str, ref_cal: list[str],
                     fwhm_pix: dict[str, float], passes: list[dict], config_hash: str) -> list[str]:
    from jwstgal.astrometry import AlignPass
    from jwstgal.astrometry_step import _visit, apply_wcs_adjust, ensure_wcs_adjust

    shifts = ensure_wcs_adjust(Path(toml_path), [Path(c) for c in ref_cal], fwhm_pix,
                               [AlignPass(**p) for p in passes])
    out = []
    for c in map(Path, cal_files):
        shift = shifts.get(_visit(c), {}).get("shift", [0.0, 0.0])
        out.append(str(apply_wcs_adjust(c, Path(out_dir) / c.name, shift, config_hash)))
    return out


def _task_astrometric_align(i2d: str, catalog: str, crfs: list[str], out_dir: str, params: dict,
                            ref_path: str | None, borrow: str | None, fwhm_pix: float,
                            config_hash: str, qa_dir: str) -> list[str]:
    from jwstgal import qa
    from jwstgal.astrometry import AlignPass, align_catalogs
    from jwstgal.astrometry_step import (
        image_sources,
        mosaic_epoch,
        query_gaia,
        reference_positions,
        result_from_dict,
        tweakback,
        write_aligned_mosaic,
    )

    i2d_p, out = Path(i2d), Path(out_dir)
    if borrow:
        result = result_from_dict(json.loads(Path(borrow).read_text()))
        log.info("%s: borrowing the astrometric solution of %s", i2d_p.name, borrow)
    else:
        ra, dec = image_sources(i2d_p, Path(catalog), fwhm_pix)
        if ref_path is None:
            h = fits.getheader(i2d_p, "SCI")
            ref_path = str(query_gaia(float(h["CRVAL1"]), float(h["CRVAL2"]), 5.0, out / "gaia.ecsv"))
        ref_ra, ref_dec = reference_positions(Path(ref_path), mosaic_epoch(i2d_p))
        result = align_catalogs(ra, dec, ref_ra, ref_dec, [AlignPass(**p) for p in params["passes"]],
                                fitgeom=params["fitgeom"], min_matches=params["min_matches"])
        if result is None:
            msg = f"{i2d_p.name}: no match with the astrometric reference {ref_path}"
            raise StepFailedError(msg)
        res = {"n": result.n_matches, "rms_mas": result.rms_mas,
               "median_dra_mas": float(np.median(result.residuals[:, 0]) * 1000),
               "median_ddec_mas": float(np.median(result.residuals[:, 1]) * 1000),
               "ra": [], "dec": [], "dra": (result.residuals[:, 0] * 1000).tolist(),
               "ddec": (result.residuals[:, 1] * 1000).tolist()}
        from jwstgal.astrometry import from_tangent_plane

        res["ra"], res["dec"] = (x.tolist() for x in from_tangent_plane(result.positions, *result.center))
        qa.quiver_png(res, Path(qa_dir) / "astrometric_align.png",
                      f"{i2d_p.name}: residuals after alignment")
    solution = out / "solution.json"
    write_text_atomic(solution, json.dumps({**result.to_dict(), "borrowed_from": borrow}, indent=1))
    outputs = [write_aligned_mosaic(i2d_p, out / i2d_p.name.replace("_i2d.fits", "_i2d_align.fits"),
                                    result, config_hash), solution]
    for c in map(Path, crfs):
        outputs.append(tweakback(c, out / c.name.replace("_crf.fits", "_crf_tweakback.fits"), result,
                                 config_hash))
    return [str(o) for o in outputs]


def product_name(target: str, band: Band) -> str:
    """Level-3 product name, ``<target>_<nircam|miri>_lv3_<band>``."""
    return f"{target}_{band.instrument}_lv3_{band.name.lower()}"


def final_mosaic(band_dir: Path, target: str, band: Band) -> Path:
    """The band's final mosaic: the astrometrically aligned one if it exists, else stage 3's."""
    stem = product_name(target, band)
    aligned = band_dir / "astrometric_align" / f"{stem}_i2d_align.fits"
    return aligned if aligned.is_file() else band_dir / "lv3" / f"{stem}_i2d.fits"


@dataclass
class StepPlan:
    """What one step of one band needs to do.

    Attributes
    ----------
    step : str
        ``lv1``, ``lv2`` or ``lv3``.
    key : str
        Hash of the step's parameters and inputs (and of the upstream step's key).
    params : dict
        Resolved parameters.
    outputs : list of pathlib.Path
        The step's products once complete.
    fn : callable or None
        Task function; None when the step is already complete.
    tasks : list of tuple
        Arguments of each task (one per exposure for stages 1-2, one per band for stage 3).
    wave : int
        Tasks of wave 1 run after those of wave 0 (bands borrowing another band's solution).
    rekey : callable or None
        Recomputes the key once the tasks ran (for a step whose inputs include a file it writes).
    """

    step: str
    key: str
    params: dict[str, Any]
    outputs: list[Path]
    fn: Callable[..., Any] | None = None
    tasks: list[tuple[Any, ...]] = field(default_factory=list)
    wave: int = 0
    rekey: Callable[[], str] | None = None

    @property
    def done(self) -> bool:
        """Whether the step was already complete."""
        return self.fn is None


class BandProcessor:
    """Plans and records the configured steps of one target/band (the work runs elsewhere)."""

    def __init__(self, cfg: RunConfig, target: str, band: Band) -> None:
        self.cfg = cfg
        self.target = target
        self.band = band
        self.band_dir = cfg.reprocess_dir / target / band.name
        steps = getattr(cfg.science.pipeline.steps, band.instrument)
        self.steps = [s for s in steps if s != "all"]
        over = getattr(cfg.science.pipeline.overwrites, band.instrument)
        self.overwrite = set(self.steps) if "all" in over else set(over)

    @property
    def label(self) -> str:
        """``<target> <BAND>`` for messages."""
        return f"{self.target} {self.band.name}"

    def _params(self, stage: str) -> dict[str, Any]:
        params = stage_parameters(self.cfg.science, stage, self.target, self.band)
        if stage == "lv3_parameters":  # detection kernels match the band's PSF unless configured
            for step in ("tweakreg", "source_catalog"):
                params["steps"].setdefault(step, {}).setdefault("kernel_fwhm",
                                                                round(self.band.fwhm_pix, 3))
        return params

    def _complete(self, step: str, key: str) -> list[Path] | None:
        rec = StepRecord(self.band_dir, step)
        if step not in self.overwrite and rec.is_complete(key):
            log.info("%s: %s complete, skipping", self.label, step)
            return [self.band_dir / o for o in rec.read()["outputs"]]
        return None

    def _prepare(self, step: str, key: str, params: dict[str, Any]) -> tuple[Path, bool]:
        """Open a step: clear stale temporaries; keep same-key partial outputs (resume)."""
        out_dir = self.band_dir / STEP_DIRS[step]
        reusable = StepRecord(self.band_dir, step).start(key, params) and step not in self.overwrite
        if not reusable and out_dir.exists():
            shutil.rmtree(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        for tmp in out_dir.glob(".tmp-*"):  # left by a killed run
            shutil.rmtree(tmp, ignore_errors=True)
        return out_dir, reusable

    def plan(self, step: str, upstream: str, inputs: list[Path]) -> StepPlan:
        """Plan ``step`` given the upstream step's key and outputs.

        Raises
        ------
        InputNotFoundError
            If the step has no input.
        """
        return {"lv1": self._plan_lv1, "lv2": self._plan_lv2, "destripe": self._plan_destripe,
                "wcs_adjust": self._plan_wcs_adjust, "level_match": self._plan_level_match,
                "stack_destripe": self._plan_stack_destripe, "lv3": self._plan_lv3,
                "astrometric_align": self._plan_astrometric_align}[step](upstream, inputs)

    def finish(self, plan: StepPlan) -> None:
        """Record a step whose tasks all succeeded, and write its diagnostics."""
        if plan.rekey is not None:
            plan.key = plan.rekey()
        StepRecord(self.band_dir, plan.step).finish(plan.key, plan.params, plan.outputs)
        from jwstgal import qa

        qa.step_diagnostics(self, plan)

    def _plan_lv1(self, upstream: str, _inputs: list[Path]) -> StepPlan:
        raw = raw_exposures(self.cfg, self.target, self.band)
        if not raw:
            msg = (f"{self.label}: no raw *_uncal.fits with FILTER={self.band.filter} under "
                   f"{self.cfg.raw_dir / self.target / 'mastDownload' / 'JWST'}")
            raise InputNotFoundError(msg)
        params = self._params("lv1_parameters")
        key = hash_params(["lv1", params, [_file_id(p) for p in raw]])
        if (done := self._complete("lv1", key)) is not None:
            return StepPlan("lv1", key, params, done)
        out_dir, reuse = self._prepare("lv1", key, params)
        outputs = [out_dir / p.name.replace("_uncal", "_rate") for p in raw]
        todo = [p for p, o in zip(raw, outputs, strict=True) if not (reuse and o.is_file())]
        log.info("%s: stage 1 on %d exposures (%d reused)", self.label, len(todo),
                 len(raw) - len(todo))
        return StepPlan("lv1", key, params, outputs, _task_stage1,
                        [(str(p), str(out_dir), params, self.cfg.config_hash) for p in todo])

    def _plan_lv2(self, upstream: str, inputs: list[Path]) -> StepPlan:
        inputs = inputs or sorted((self.band_dir / "rate").glob("*_rate.fits"))
        if not inputs:
            msg = f"{self.label}: stage 2 has no *_rate.fits in {self.band_dir / 'rate'}"
            raise InputNotFoundError(msg)
        science = [p for p in inputs if not is_background(p, self.cfg)]
        backgrounds = ([p for p in inputs if is_background(p, self.cfg)]
                       if _uses_backgrounds(self.cfg, self.band) else [])
        params = self._params("lv2_parameters")
        key = hash_params(["lv2", params, upstream, [p.name for p in inputs]])
        if (done := self._complete("lv2", key)) is not None:
            return StepPlan("lv2", key, params, done)
        out_dir, reuse = self._prepare("lv2", key, params)
        outputs = [out_dir / p.name.replace("_rate", "_cal") for p in science]
        todo = [p for p, o in zip(science, outputs, strict=True) if not (reuse and o.is_file())]
        log.info("%s: stage 2 on %d exposures with %d background exposures", self.label, len(todo),
                 len(backgrounds))
        return StepPlan("lv2", key, params, outputs, _task_stage2,
                        [(str(p), [str(b) for b in backgrounds], str(out_dir), params,
                          self.cfg.config_hash) for p in todo])

    def _science_cal(self, inputs: list[Path]) -> list[Path]:
        inputs = inputs or [p for p in sorted((self.band_dir / "cal").glob("*_cal.fits"))
                            if not is_background(p, self.cfg)]
        if not inputs:
            msg = f"{self.label}: no *_cal.fits in {self.band_dir / 'cal'}"
            raise InputNotFoundError(msg)
        return inputs

    def _plan_destripe(self, upstream: str, inputs: list[Path]) -> StepPlan:
        inputs = self._science_cal(inputs)
        params = self.cfg.science.destripe.for_band(self.target, self.band)
        key = hash_params(["destripe", params, upstream, [p.name for p in inputs]])
        if (done := self._complete("destripe", key)) is not None:
            return StepPlan("destripe", key, params, done)
        out_dir, reuse = self._prepare("destripe", key, params)
        outputs = [out_dir / p.name for p in inputs]
        todo = [(p, o) for p, o in zip(inputs, outputs, strict=True) if not (reuse and o.is_file())]
        log.info("%s: destriping %d exposures (%s)", self.label, len(todo), params["method"])
        qa_dir = self.band_dir / "qa" / "destripe"
        return StepPlan("destripe", key, params, outputs, _task_destripe,
                        [(str(p), str(o), params, self.cfg.config_hash, str(qa_dir / f"{p.stem}.png"))
                         for p, o in todo])

    def _plan_stack_destripe(self, upstream: str, inputs: list[Path]) -> StepPlan:
        inputs = self._science_cal(inputs)
        params = self.cfg.science.stack_destripe.model_dump()
        key = hash_params(["stack_destripe", params, upstream, [p.name for p in inputs]])
        if (done := self._complete("stack_destripe", key)) is not None:
            return StepPlan("stack_destripe", key, params, done)
        out_dir, _ = self._prepare("stack_destripe", key, params)
        outputs = [out_dir / p.name for p in inputs]
        log.info("%s: stack-based destriping of %d exposures", self.label, len(inputs))
        return StepPlan("stack_destripe", key, params, outputs, _task_stack_destripe,
                        [([str(p) for p in inputs], str(out_dir), params, self.cfg.config_hash,
                          str(self.band_dir / "qa" / "stack_destripe"))])

    def _plan_wcs_adjust(self, upstream: str, inputs: list[Path]) -> StepPlan:
        inputs = self._science_cal(inputs)
        wa = self.cfg.science.wcs_adjust
        ref_bands = wa.bands or [self.cfg.science.bands[0]]
        ref_cal = [p for b in ref_bands
                   for p in sorted((self.band_dir.parent / b / "cal").glob("*_cal.fits"))
                   if not is_background(p, self.cfg)]
        toml_path = self.band_dir.parent / "wcs_adjust.toml"
        params = wa.model_dump()
        fwhm = {b: get_band(b).fwhm_pix for b in ref_bands}
        def key_now() -> str:  # the shifts file is an input: a hand edit reruns this and what follows
            return hash_params(["wcs_adjust", params, upstream, [p.name for p in inputs],
                                _content_hash(toml_path)])

        key = key_now()
        if (done := self._complete("wcs_adjust", key)) is not None:
            return StepPlan("wcs_adjust", key, params, done)
        out_dir, _ = self._prepare("wcs_adjust", key, params)
        outputs = [out_dir / p.name for p in inputs]
        plan = StepPlan("wcs_adjust", key, params, outputs, _task_wcs_adjust,
                        [([str(p) for p in inputs], str(out_dir), str(toml_path),
                          [str(p) for p in ref_cal], fwhm, params["passes"], self.cfg.config_hash)])
        plan.rekey = key_now  # the first run writes the shifts file: key on what it wrote
        return plan

    def _plan_astrometric_align(self, upstream: str, inputs: list[Path]) -> StepPlan:
        product = product_name(self.target, self.band)
        lv3 = self.band_dir / "lv3"
        i2d = lv3 / f"{product}_i2d.fits"
        if not i2d.is_file():
            msg = f"{self.label}: astrometric alignment needs the stage 3 mosaic {i2d}"
            raise InputNotFoundError(msg)
        aa = self.cfg.science.astrometric_align
        params = aa.model_dump()
        borrow_band = aa.alignment_mapping.get(self.band.name)
        borrow = (str(self.band_dir.parent / borrow_band / "astrometric_align" / "solution.json")
                  if borrow_band else None)
        ref_path = None
        if aa.reference == "table" and not borrow:
            if self.target not in self.cfg.science.alignment:
                msg = (f"{self.cfg.config_path}: [astrometric_align] reference = 'table' needs an "
                       f"[alignment] catalogue for {self.target}")
                raise InputNotFoundError(msg)
            ref_path = str(self.cfg.alignment_dir / self.cfg.science.alignment[self.target])
        crfs = sorted(lv3.glob("*_crf.fits"))
        key = hash_params(["astrometric_align", params, upstream, ref_path, borrow,
                           _file_id(Path(ref_path)) if ref_path else None])
        if (done := self._complete("astrometric_align", key)) is not None:
            return StepPlan("astrometric_align", key, params, done)
        out_dir, _ = self._prepare("astrometric_align", key, params)
        outputs = [out_dir / f"{product}_i2d_align.fits", out_dir / "solution.json"]
        outputs += [out_dir / c.name.replace("_crf.fits", "_crf_tweakback.fits") for c in crfs]
        plan = StepPlan("astrometric_align", key, params, outputs, _task_astrometric_align,
                        [(str(i2d), str(lv3 / f"{product}_cat.ecsv"), [str(c) for c in crfs],
                          str(out_dir), params, ref_path, borrow, self.band.fwhm_pix,
                          self.cfg.config_hash, str(self.band_dir / "qa"))])
        plan.wave = 1 if borrow else 0
        return plan

    def _plan_level_match(self, upstream: str, inputs: list[Path]) -> StepPlan:
        inputs = inputs or [p for p in sorted((self.band_dir / "cal").glob("*_cal.fits"))
                            if not is_background(p, self.cfg)]
        if not inputs:
            msg = f"{self.label}: level matching has no *_cal.fits in {self.band_dir / 'cal'}"
            raise InputNotFoundError(msg)
        params = self.cfg.science.level_match.model_dump()
        backgrounds = ([p for p in sorted((self.band_dir / "rate").glob("*_rate.fits"))
                        if is_background(p, self.cfg)] if _uses_backgrounds(self.cfg, self.band) else [])
        key = hash_params(["level_match", params, upstream, [p.name for p in inputs]])
        if (done := self._complete("level_match", key)) is not None:
            return StepPlan("level_match", key, params, done)
        out_dir, _ = self._prepare("level_match", key, params)
        outputs = [out_dir / p.name for p in inputs]
        log.info("%s: level matching %d exposures", self.label, len(inputs))
        return StepPlan("level_match", key, params, outputs, _task_level_match,
                        [([str(p) for p in inputs], str(out_dir), params, [str(b) for b in backgrounds],
                          self.cfg.config_hash, str(self.band_dir / "qa" / "level_match.png"))])

    def _plan_lv3(self, upstream: str, inputs: list[Path]) -> StepPlan:
        inputs = inputs or [p for p in sorted((self.band_dir / "cal").glob("*_cal.fits"))
                            if not is_background(p, self.cfg)]
        if not inputs:
            msg = f"{self.label}: stage 3 has no *_cal.fits in {self.band_dir / 'cal'}"
            raise InputNotFoundError(msg)
        params = self._params("lv3_parameters")
        refcat = None
        if self.target in self.cfg.science.alignment and "astrometric_align" not in self.steps:
            refcat = self.cfg.alignment_dir / self.cfg.science.alignment[self.target]
            if not refcat.is_file():
                msg = (f"{self.cfg.config_path}: [alignment] {self.target} = "
                       f"{self.cfg.science.alignment[self.target]!r}: no such file in "
                       f"{self.cfg.alignment_dir}")
                raise InputNotFoundError(msg)
        key = hash_params(["lv3", params, upstream, [p.name for p in inputs],
                           _file_id(refcat) if refcat else None])
        if (done := self._complete("lv3", key)) is not None:
            return StepPlan("lv3", key, params, done)
        out_dir, _ = self._prepare("lv3", key, params)
        shutil.rmtree(out_dir)  # a mosaic is all-or-nothing
        product = product_name(self.target, self.band)
        log.info("%s: stage 3 on %d exposures -> %s", self.label, len(inputs), product)
        outputs = [out_dir / f"{product}_i2d.fits"]
        return StepPlan("lv3", key, params, outputs, _task_stage3,
                        [([str(p) for p in inputs], product, str(out_dir), params,
                          self.cfg.config_hash, str(refcat) if refcat else None)])


@dataclass
class _BandState:
    proc: BandProcessor
    upstream: str = ""
    outputs: list[Path] = field(default_factory=list)
    ran: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    error: str = ""
    missing: bool = False


def executor_spec(cfg: RunConfig) -> ExecutorSpec:
    """The executor configured in ``local.toml``."""
    loc = cfg.local
    return ExecutorSpec(loc.executor, loc.processes, loc.dask_scheduler,
                        loc.slurm.model_dump(exclude_none=True) if loc.slurm else {})


def run_all(cfg: RunConfig, bands: list[str] | None = None, targets: list[str] | None = None,
            progress: bool = True, executor: Executor | None = None) -> list[BandResult]:
    """Process every configured target and band (optionally a subset), stage by stage.

    Stage 1 and 2 tasks of all bands (one per exposure) share the executor; stage 3 runs one task per
    target/band. A band whose task fails is reported (``error``) and the others go on; the failed
    step's finished exposures stay on disk and are reused by the next run. Bands without raw data are
    skipped with a warning.

    Parameters
    ----------
    cfg : RunConfig
        Validated configuration.
    bands, targets : list of str, optional
        Restrict the run.
    progress : bool
        Show progress bars.
    executor : Executor, optional
        An open executor; default the one configured in ``local.toml``.

    Returns
    -------
    list of BandResult
    """
    if executor is None:
        with open_executor(executor_spec(cfg)) as ex:
            return run_all(cfg, bands, targets, progress, ex)
    states = [_BandState(BandProcessor(cfg, t, get_band(b)))
              for t in (targets or cfg.science.targets) for b in (bands or cfg.science.bands)]
    with contextlib.ExitStack() as locks:  # held for the whole run: one run per band at a time
        for st in states:
            locks.enter_context(BandLock(st.proc.band_dir))
        for step in ALLOWED_STEPS:
            _run_step(step, states, executor, progress)
    results_out = []
    for st in states:
        if st.missing and not st.ran and not st.skipped:
            continue
        proc = st.proc
        final = final_mosaic(proc.band_dir, proc.target, proc.band)   # aligned when there is one
        mosaic = final if final.is_file() else None
        quick = proc.band_dir / "lv3" / f"{product_name(proc.target, proc.band)}_i2d.png"
        results_out.append(BandResult(st.proc.target, st.proc.band.name, mosaic,
                                      quick if quick and quick.is_file() else None,
                                      tuple(st.ran), tuple(st.skipped), st.error))
    return results_out


def _run_step(step: str, states: list[_BandState], executor: Executor, progress: bool) -> None:
    """Plan ``step`` for every band, run all its tasks together, record what succeeded."""
    plans: list[tuple[_BandState, StepPlan]] = []
    for st in states:
        if st.error or st.missing or step not in st.proc.steps:
            continue
        try:
            plans.append((st, st.proc.plan(step, st.upstream, st.outputs)))
        except (InputNotFoundError, NothingToDo) as err:
            log.warning("%s", err)
            st.missing = True
    failed: dict[int, BaseException] = {}
    for wave in sorted({plan.wave for _, plan in plans}):
        work = [(st, plan, args) for st, plan in plans
                if not plan.done and plan.wave == wave and id(st) not in failed for args in plan.tasks]
        results = executor.map(_run_task, [(plan.fn, args) for _, plan, args in work],
                               desc=step, progress=progress, return_exceptions=True)
        for (st, _, _), res in zip(work, results, strict=True):
            if isinstance(res, BaseException):
                failed.setdefault(id(st), res)
    for st, plan in plans:
        if id(st) in failed:
            st.error = str(failed[id(st)])
            log.error("%s failed in %s: %s", st.proc.label, step, st.error)
            continue
        if plan.done:
            st.skipped.append(step)
        else:
            st.proc.finish(plan)
            st.ran.append(step)
        st.upstream, st.outputs = plan.key, plan.outputs


def _run_task(fn: Callable[..., Any], args: tuple[Any, ...]) -> Any:
    """Adapter: run ``fn(*args)`` (tasks of different steps share one executor call)."""
    try:
        return fn(*args)
    except (StepFailedError, CRDSError):
        raise
    except SystemExit as err:  # CRDS's way of failing, should it escape the guard
        msg = f"task {fn.__name__} exited: {err.code}"
        raise StepFailedError(msg) from None


class BandLock:
    """An exclusive lock on a band folder, so two runs never write the same products.

    Uses ``fcntl.flock``, which the OS releases when the process dies (even on ``kill -9``).
    """

    def __init__(self, band_dir: Path) -> None:
        self.path = band_dir / ".jwstgal" / "lock"
        self._fh = None

    def __enter__(self) -> BandLock:
        import fcntl

        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = self.path.open("w")
        try:
            fcntl.flock(self._fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._fh.close()
            msg = (f"{self.path.parent.parent}: another jwstgal run is processing this band "
                   "right now; wait for it to finish")
            raise StepFailedError(msg) from None
        return self

    def __exit__(self, *exc: object) -> None:
        import fcntl

        fcntl.flock(self._fh, fcntl.LOCK_UN)
        self._fh.close()
