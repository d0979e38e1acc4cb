"""Step ``lv1``: jwst Detector1Pipeline, one task per raw exposure (``uncal`` -> ``rate``).

Inputs are the band's raw files (:func:`raw_exposures`); the key hashes their names, sizes and
modification times, so a re-downloaded file reruns its band. Parameters: ``[lv1_parameters]``.
"""

from __future__ import annotations

import fnmatch
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jwstgal import layout
from jwstgal.bands import Band, header_mismatch
from jwstgal.errors import InputNotFoundError
from jwstgal.fits_checks import checked_header
from jwstgal.memory import stage1_peak
from jwstgal.provenance import hash_params
from jwstgal.settings import name_skipped
from jwstgal.stages import run_stage1
from jwstgal.steps.base import BandContext, BandTask, RunView, Step, StepPlan, file_id

log = logging.getLogger(__name__)

NAME = "lv1"


def raw_exposures(run: RunView, target: str, band: Band) -> list[Path]:
    """Raw ``*_uncal.fits`` files of a target in a band, extra observations included.

    Files come from ``raw_dir/<target>/mastDownload/JWST/*/`` plus, for each
    ``[extra_obs_to_include.<target>] <other> = [prefixes]``, matching files of the other target.
    Names matching an ``obs_to_skip`` entry (a substring, or a glob) are dropped; the rest are kept
    when their FILTER (and PUPIL for NIRCam) header matches the band. A file that cannot be used
    (empty, not FITS, shorter than its headers say, or not a regular file: a FIFO, a link to a device;
    :func:`~jwstgal.fits_checks.checked_header`) is reported with the reason and left out, and so
    is one whose FILTER names the band but whose INSTRUME or DETECTOR contradict it
    (:func:`~jwstgal.bands.header_mismatch`); the others go on.
    """
    def glob(t: str, pattern: str = "*") -> list[Path]:
        return sorted((run.raw_dir / t / "mastDownload" / "JWST").glob(f"{pattern}/*_uncal.fits"))

    files = glob(target)
    for other, prefixes in run.science.extra_obs_to_include.get(target, {}).items():
        for prefix in prefixes:
            files += [p for p in glob(other) if fnmatch.fnmatch(p.name, f"{prefix}*")]
    skip = run.science.pipeline.obs_to_skip
    out = []
    for p in dict.fromkeys(files):
        if name_skipped(p.name, skip):
            log.info("%s %s: skipping %s (obs_to_skip)", target, band.name, p.name)
            continue
        try:
            header = checked_header(p)
        except ValueError as err:
            log.error("%s %s: skipping %s: %s", target, band.name, p, err)
            continue
        if header.get("FILTER", "") != band.filter or (band.instrument == "nircam"
                                                       and header.get("PUPIL") != band.pupil):
            continue                                  # another band's exposure
        if why := header_mismatch(band, header):
            log.error("%s %s: leaving out %s: its FILTER names %s but %s", target, band.name, p.name,
                      band.name, why)
            continue
        out.append(p)
    return out


@dataclass(frozen=True)
class Lv1Task(BandTask):
    """Stage 1 of one exposure (``params``: the resolved ``[lv1_parameters]``)."""

    uncal: Path
    out_dir: Path
    params: dict[str, Any]
    config_hash: str

    def run(self) -> list[str]:
        """Run calwebb_detector1 into ``out_dir``."""
        return [str(p) for p in run_stage1(self.uncal, self.out_dir, self.params, self.config_hash)]


class Lv1(Step):
    """jwst stage 1."""

    name = NAME
    summary = "jwst Detector1Pipeline on every raw exposure (`uncal` -> `rate`), `[lv1_parameters]`"
    default = True

    def plan(self, ctx: BandContext, upstream: str, inputs: list[Path]) -> StepPlan:
        """Plan stage 1 of the band's raw exposures (see :func:`raw_exposures`)."""
        raw = raw_exposures(ctx.run, ctx.target, ctx.band)
        if not raw:
            msg = (f"{ctx.label}: no raw *_uncal.fits with FILTER={ctx.band.filter} under "
                   f"{ctx.run.raw_dir / ctx.target / 'mastDownload' / 'JWST'}")
            raise InputNotFoundError(msg)
        params = ctx.stage_params("lv1_parameters")
        key = hash_params([NAME, params, [file_id(p) for p in raw]])
        if (begun := ctx.begin(NAME, key, params)).done:
            return begun.done
        out_dir, reuse = begun.out_dir, begun.reuse
        outputs = [out_dir / p.name.replace("_uncal", "_rate") for p in raw]
        todo = [p for p, o in zip(raw, outputs, strict=True) if not (reuse and o.is_file())]
        log.info("%s: stage 1 on %d exposures (%d reused)", ctx.label, len(todo), len(raw) - len(todo))
        return StepPlan(NAME, key, params, outputs,
                        [Lv1Task(p, out_dir, params, ctx.run.config_hash) for p in todo],
                        memory=[stage1_peak(p) for p in todo])

    def diagnostics(self, ctx: BandContext, plan: StepPlan) -> list[Path | None]:
        """Contact sheet of the rates."""
        from jwstgal.plots import contact_sheet

        return [contact_sheet(plan.outputs, ctx.qa_dir / "lv1_rate.png", f"{ctx.label}: stage 1 rates")]

    def figures(self, band_dir: Path, target: str, band: Band) -> list[tuple[Path, str]]:
        """The contact sheet."""
        return [(layout.qa_dir(band_dir) / "lv1_rate.png", "stage 1 rates")]
