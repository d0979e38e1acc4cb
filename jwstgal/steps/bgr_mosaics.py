"""Step ``bgr_mosaics``: the dedicated background exposures reduced like science (last).

A band's dedicated background (off) exposures -- those ``[pipeline] bgr_check_type`` recognises --
go through stage 2 on their own (no background subtracted from them) and stage 3 into one mosaic,
``bgr_mosaics/<product>_bgr_i2d.fits`` (the original's ``process_bgr_like_science``), with the
band's ``[lv2_parameters]`` and ``[lv3_parameters]`` (tweakreg and the source catalogue are off:
a background field has few sources). Users can then inspect the background and measure what the
science exposures had subtracted. The calibrated exposures stay in ``bgr_mosaics/cal/``.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from astropy.io import fits

from jwstgal import layout
from jwstgal.bands import Band
from jwstgal.errors import InputNotFoundError
from jwstgal.provenance import hash_params
from jwstgal.stages import run_stage2, run_stage3
from jwstgal.steps.base import BandContext, BandTask, Step, StepPlan

log = logging.getLogger(__name__)

NAME = "bgr_mosaics"


@dataclass(frozen=True)
class BgrTask(BandTask):
    """Stage 2, then stage 3 (``lv2``, ``lv3``: their parameters), of one band's background exposures."""

    rates: tuple[Path, ...]
    product: str
    out_dir: Path
    lv2: dict[str, Any]
    lv3: dict[str, Any]
    config_hash: str

    def run(self) -> list[str]:
        """Write the background mosaic (its cal files in ``cal/``)."""
        cal_dir = self.out_dir / "cal"
        cals = []
        for r in self.rates:
            cals += [p for p in run_stage2(r, [], cal_dir, self.lv2, self.config_hash)
                     if p.name.endswith("_cal.fits")]
        made = run_stage3(cals, self.product, self.out_dir, self.lv3, self.config_hash)
        log.info("%s: %d background exposures -> %s_i2d.fits", self.product, len(cals), self.product)
        return [str(p) for p in made]


class BgrMosaics(Step):
    """Background fields reduced like science."""

    name = NAME
    summary = ("the band's dedicated background exposures through stages 2 and 3 into their own "
               "mosaic, `<product>_bgr_i2d.fits`")

    def plan(self, ctx: BandContext, upstream: str, inputs: list[Path]) -> StepPlan:
        """One task for the band's background exposures."""
        rates = [p for p in ctx.band_files("lv1", "*_rate.fits") if ctx.is_background(p)]
        if not rates:
            msg = f"{ctx.label}: no dedicated background exposures to mosaic"
            raise InputNotFoundError(msg)
        lv2 = ctx.stage_params("lv2_parameters")
        lv2["steps"] = {**lv2.get("steps", {}), "bkg_subtract": {"skip": True}}
        lv3 = ctx.stage_params("lv3_parameters")
        steps = lv3.setdefault("steps", {})
        for step in ("tweakreg", "source_catalog"):
            steps[step] = {**steps.get(step, {}), "skip": True}
        params = {"lv2_parameters": lv2, "lv3_parameters": lv3}
        key = hash_params([NAME, params, upstream, [p.name for p in rates]])
        if (begun := ctx.begin(NAME, key, params)).done:
            return begun.done
        out_dir = begun.out_dir
        product = f"{layout.product_name(ctx.target, ctx.band)}_bgr"
        return StepPlan(NAME, key, params, [out_dir / f"{product}_i2d.fits"], [BgrTask(
            tuple(rates), product, out_dir, json.loads(json.dumps(lv2)), json.loads(json.dumps(lv3)),
            ctx.run.config_hash)])

    def diagnostics(self, ctx: BandContext, plan: StepPlan) -> list[Path | None]:
        """Quicklook of the background mosaic."""
        from jwstgal.plots import quicklook_png

        mosaic = plan.outputs[0]
        return [quicklook_png(mosaic, ctx.qa_dir / f"{NAME}.png",
                              title=f"{ctx.label}: background field")]

    def figures(self, band_dir: Path, target: str, band: Band) -> list[tuple[Path, str]]:
        """The background mosaic's quicklook."""
        return [(layout.qa_dir(band_dir) / f"{NAME}.png", "dedicated background field, reduced like science")]

    def qa_summary(self, band_dir: Path, target: str, band: Band) -> dict[str, str]:
        """Median level of the background mosaic."""
        mosaics = sorted((band_dir / NAME).glob("*_bgr_i2d.fits"))
        if not mosaics:
            return {}
        data, head = fits.getdata(mosaics[0], "SCI", header=True)
        good = np.isfinite(data) & (data != 0)
        unit = head.get("BUNIT") or "no unit"
        return {f"background field level [{unit}]": f"{np.median(data[good]):.4g}"} if good.any() else {}
