"""Step ``lv2``: jwst Image2Pipeline, one task per science exposure (``rate`` -> ``cal``).

Dedicated background exposures (:func:`jwstgal.steps.base.is_background`) are not calibrated as
science; for the band types in ``[pipeline] bgr_observation_types`` they are passed to each
exposure's association as backgrounds. Parameters: ``[lv2_parameters]``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jwstgal import layout
from jwstgal.bands import Band
from jwstgal.errors import InputNotFoundError
from jwstgal.memory import stage2_peak
from jwstgal.provenance import hash_params
from jwstgal.stages import run_stage2
from jwstgal.steps.base import BandContext, BandTask, Step, StepPlan, background_reason

log = logging.getLogger(__name__)

NAME = "lv2"


@dataclass(frozen=True)
class Lv2Task(BandTask):
    """Stage 2 of one exposure, with the band's dedicated backgrounds as background members."""

    rate: Path
    backgrounds: tuple[Path, ...]
    out_dir: Path
    params: dict[str, Any]
    config_hash: str

    def run(self) -> list[str]:
        """Run calwebb_image2 into ``out_dir``."""
        return [str(p) for p in run_stage2(self.rate, list(self.backgrounds), self.out_dir, self.params,
                                           self.config_hash)]


class Lv2(Step):
    """jwst stage 2."""

    name = NAME
    summary = ("jwst Image2Pipeline on every science exposure (`rate` -> `cal`), dedicated "
               "backgrounds as background members, `[lv2_parameters]`")
    default = True

    def plan(self, ctx: BandContext, upstream: str, inputs: list[Path]) -> StepPlan:
        """Plan stage 2 of the band's rates."""
        rate_dir = ctx.band_dir / layout.step_folder("lv1")
        inputs = inputs or ctx.band_files("lv1", "*_rate.fits")
        if not inputs:
            msg = f"{ctx.label}: stage 2 has no *_rate.fits in {rate_dir}"
            raise InputNotFoundError(msg)
        reasons = {p: background_reason(p, ctx.run) for p in inputs}
        science = [p for p in inputs if not reasons[p]]
        backgrounds = [p for p in inputs if reasons[p]] if ctx.uses_backgrounds() else []
        for p in inputs:
            if reasons[p]:
                ctx.notes.append(f"background exposure {p.name} ({reasons[p]})"
                                 + ("" if p in backgrounds else "; not used by this band"))
        params = ctx.stage_params("lv2_parameters")
        key_parts = [NAME, params, upstream, [p.name for p in inputs]]
        # Until bgr_check_type was per instrument, one check applied to NIRCam and MIRI alike (by
        # default parallel_off, which took NIRCam coordinated parallels for backgrounds). A file
        # classified differently now enters the key, so exactly the runs it changes are redone.
        pipe = ctx.run.science.pipeline
        legacy = pipe.bgr_check_type if isinstance(pipe.bgr_check_type, str) else "parallel_off"
        changed = [p.name for p in inputs
                   if bool(reasons[p]) != bool(background_reason(p, ctx.run, legacy))]
        if changed:
            key_parts.append({"background_classification_changed": changed})
        key = hash_params(key_parts)
        if (begun := ctx.begin(NAME, key, params)).done:
            return begun.done
        out_dir, reuse = begun.out_dir, begun.reuse
        outputs = [out_dir / p.name.replace("_rate", "_cal") for p in science]
        todo = [p for p, o in zip(science, outputs, strict=True) if not (reuse and o.is_file())]
        log.info("%s: stage 2 on %d exposures with %d background exposures", ctx.label, len(todo),
                 len(backgrounds))
        return StepPlan(NAME, key, params, outputs,
                        [Lv2Task(p, tuple(backgrounds), out_dir, params, ctx.run.config_hash) for p in todo],
                        memory=[stage2_peak(p) for p in todo])

    def diagnostics(self, ctx: BandContext, plan: StepPlan) -> list[Path | None]:
        """Contact sheet of the calibrated exposures."""
        from jwstgal.plots import contact_sheet

        return [contact_sheet(plan.outputs, ctx.qa_dir / "lv2_cal.png",
                              f"{ctx.label}: stage 2 calibrated exposures")]

    def figures(self, band_dir: Path, target: str, band: Band) -> list[tuple[Path, str]]:
        """The contact sheet."""
        return [(layout.qa_dir(band_dir) / "lv2_cal.png", "stage 2 exposures")]
