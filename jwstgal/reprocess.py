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

import fnmatch
import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jwstgal.bands import Band, get_band
from jwstgal.config import RunConfig, stage_parameters
from jwstgal.errors import CRDSError, InputNotFoundError, NothingToDo, StepFailedError
from jwstgal.executor import map_tasks
from jwstgal.provenance import hash_params, write_text_atomic
from jwstgal.stages import read_band_keys, run_stage1, run_stage2, run_stage3

log = logging.getLogger(__name__)

STEP_DIRS = {"lv1": "rate", "lv2": "cal", "lv3": "lv3"}


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


def _file_id(p: Path) -> list[Any]:
    st = p.stat()
    return [p.name, st.st_size, int(st.st_mtime)]


def _task_stage1(uncal: str, out_dir: str, params: dict, config_hash: str) -> list[str]:
    return [str(p) for p in run_stage1(Path(uncal), Path(out_dir), params, config_hash)]


def _task_stage2(rate: str, backgrounds: list[str], out_dir: str, params: dict,
                 config_hash: str) -> list[str]:
    return [str(p) for p in run_stage2(Path(rate), [Path(b) for b in backgrounds], Path(out_dir),
                                       params, config_hash)]


def product_name(target: str, band: Band) -> str:
    """Level-3 product name, ``<target>_<nircam|miri>_lv3_<band>``."""
    return f"{target}_{band.instrument}_lv3_{band.name.lower()}"


class BandProcessor:
    """Runs the configured steps of one target/band, in order, skipping completed ones."""

    def __init__(self, cfg: RunConfig, target: str, band: Band, progress: bool = True) -> None:
        self.cfg = cfg
        self.target = target
        self.band = band
        self.progress = progress
        self.band_dir = cfg.reprocess_dir / target / band.name
        steps = getattr(cfg.science.pipeline.steps, band.instrument)
        self.steps = [s for s in steps if s != "all"]
        over = getattr(cfg.science.pipeline.overwrites, band.instrument)
        self.overwrite = set(self.steps) if "all" in over else set(over)

    def _params(self, stage: str) -> dict[str, Any]:
        params = stage_parameters(self.cfg.science, stage, self.target, self.band)
        if stage == "lv3_parameters":  # detection kernels match the band's PSF unless configured
            for step in ("tweakreg", "source_catalog"):
                params["steps"].setdefault(step, {}).setdefault("kernel_fwhm",
                                                                round(self.band.fwhm_pix, 3))
        return params

    def _prepare(self, step: str, key: str, params: dict[str, Any]) -> tuple[Path, bool]:
        out_dir = self.band_dir / STEP_DIRS[step]
        record = StepRecord(self.band_dir, step)
        reusable = record.start(key, params) and step not in self.overwrite
        if not reusable and out_dir.exists():
            shutil.rmtree(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        return out_dir, reusable

    def run(self) -> BandResult:
        """Run every configured step; returns what was produced."""
        ran, skipped = [], []
        upstream = ""
        outputs: list[Path] = []
        for step in self.steps:
            runner = {"lv1": self._lv1, "lv2": self._lv2, "lv3": self._lv3}[step]
            done, upstream, outputs = runner(upstream, outputs)
            (skipped if done else ran).append(step)
        mosaic = next((p for p in outputs if p.name.endswith("_i2d.fits")), None)
        quick = None
        if mosaic is not None:
            from jwstgal.quicklook import quicklook_png

            quick = quicklook_png(mosaic, mosaic.with_suffix(".png"),
                                  title=f"{self.target} {self.band.name}")
        return BandResult(self.target, self.band.name, mosaic, quick, tuple(ran), tuple(skipped))

    def _check(self, step: str, key: str) -> list[Path] | None:
        rec = StepRecord(self.band_dir, step)
        if step not in self.overwrite and rec.is_complete(key):
            log.info("%s %s: %s complete, skipping", self.target, self.band.name, step)
            return [self.band_dir / o for o in rec.read()["outputs"]]
        return None

    def _lv1(self, upstream: str, _inputs: list[Path]) -> tuple[bool, str, list[Path]]:
        raw = raw_exposures(self.cfg, self.target, self.band)
        if not raw:
            msg = (f"{self.target} {self.band.name}: no raw *_uncal.fits with FILTER={self.band.filter}"
                   f" under {self.cfg.raw_dir / self.target / 'mastDownload' / 'JWST'}")
            raise InputNotFoundError(msg)
        params = self._params("lv1_parameters")
        key = hash_params(["lv1", params, [_file_id(p) for p in raw]])
        if (done := self._check("lv1", key)) is not None:
            return True, key, done
        out_dir, reuse = self._prepare("lv1", key, params)
        todo = [p for p in raw
                if not (reuse and (out_dir / p.name.replace("_uncal", "_rate")).is_file())]
        log.info("%s %s: stage 1 on %d exposures (%d reused)", self.target, self.band.name,
                 len(todo), len(raw) - len(todo))
        map_tasks(_task_stage1, [(str(p), str(out_dir), params, self.cfg.config_hash) for p in todo],
                  processes=self.cfg.local.processes, desc=f"lv1 {self.target} {self.band.name}",
                  progress=self.progress)
        outputs = [out_dir / p.name.replace("_uncal", "_rate") for p in raw]
        StepRecord(self.band_dir, "lv1").finish(key, params, outputs)
        return False, key, outputs

    def _lv2(self, upstream: str, inputs: list[Path]) -> tuple[bool, str, list[Path]]:
        if not inputs:
            inputs = sorted((self.band_dir / "rate").glob("*_rate.fits"))
        if not inputs:
            msg = f"{self.target} {self.band.name}: stage 2 has no *_rate.fits in {self.band_dir / 'rate'}"
            raise InputNotFoundError(msg)
        science = [p for p in inputs if not is_background(p, self.cfg)]
        backgrounds = ([p for p in inputs if is_background(p, self.cfg)]
                       if _uses_backgrounds(self.cfg, self.band) else [])
        params = self._params("lv2_parameters")
        key = hash_params(["lv2", params, upstream, [p.name for p in inputs]])
        if (done := self._check("lv2", key)) is not None:
            return True, key, done
        out_dir, reuse = self._prepare("lv2", key, params)
        todo = [p for p in science
                if not (reuse and (out_dir / p.name.replace("_rate", "_cal")).is_file())]
        log.info("%s %s: stage 2 on %d exposures with %d background exposures", self.target,
                 self.band.name, len(todo), len(backgrounds))
        map_tasks(_task_stage2, [(str(p), [str(b) for b in backgrounds], str(out_dir), params,
                                  self.cfg.config_hash) for p in todo],
                  processes=self.cfg.local.processes, desc=f"lv2 {self.target} {self.band.name}",
                  progress=self.progress)
        outputs = [out_dir / p.name.replace("_rate", "_cal") for p in science]
        StepRecord(self.band_dir, "lv2").finish(key, params, outputs)
        return False, key, outputs

    def _lv3(self, upstream: str, inputs: list[Path]) -> tuple[bool, str, list[Path]]:
        if not inputs:
            inputs = [p for p in sorted((self.band_dir / "cal").glob("*_cal.fits"))
                      if not is_background(p, self.cfg)]
        if not inputs:
            msg = f"{self.target} {self.band.name}: stage 3 has no *_cal.fits in {self.band_dir / 'cal'}"
            raise InputNotFoundError(msg)
        params = self._params("lv3_parameters")
        refcat = None
        if self.target in self.cfg.science.alignment:
            refcat = self.cfg.alignment_dir / self.cfg.science.alignment[self.target]
            if not refcat.is_file():
                msg = (f"{self.cfg.config_path}: [alignment] {self.target} = "
                       f"{self.cfg.science.alignment[self.target]!r}: no such file in "
                       f"{self.cfg.alignment_dir}")
                raise InputNotFoundError(msg)
        key = hash_params(["lv3", params, upstream, [p.name for p in inputs],
                           _file_id(refcat) if refcat else None])
        if (done := self._check("lv3", key)) is not None:
            return True, key, done
        out_dir, _ = self._prepare("lv3", key, params)
        shutil.rmtree(out_dir)  # a mosaic is all-or-nothing
        product = product_name(self.target, self.band)
        log.info("%s %s: stage 3 on %d exposures -> %s", self.target, self.band.name, len(inputs),
                 product)
        outputs = run_stage3(inputs, product, out_dir, params, self.cfg.config_hash, refcat)
        StepRecord(self.band_dir, "lv3").finish(key, params, outputs)
        return False, key, outputs


def run_all(cfg: RunConfig, bands: list[str] | None = None, targets: list[str] | None = None,
            progress: bool = True) -> list[BandResult]:
    """Process every configured target and band (optionally a subset).

    Parameters
    ----------
    cfg : RunConfig
        Validated configuration.
    bands, targets : list of str, optional
        Restrict the run.
    progress : bool
        Show progress bars.

    Returns
    -------
    list of BandResult
        One per target/band that had data; bands without raw data are skipped with a warning. A
        band whose step fails is reported (``error``) and the run goes on with the next band; the
        failed step's earlier results stay on disk.
    """
    results = []
    for target in targets or cfg.science.targets:
        for name in bands or cfg.science.bands:
            band = get_band(name)
            try:
                results.append(BandProcessor(cfg, target, band, progress).run())
            except (InputNotFoundError, NothingToDo) as err:
                log.warning("%s", err)
            except (StepFailedError, CRDSError) as err:
                log.error("%s %s failed: %s", target, band.name, err)
                results.append(BandResult(target, band.name, None, None, (), (), str(err)))
    return results
