"""Step ``lv3``: jwst Image3Pipeline, one task per band (``cal`` -> mosaic, catalogue, ``crf``).

Inputs are the upstream step's exposures. When the target has an ``[alignment]`` catalogue and the
band does not run ``astrometric_align``, tweakreg aligns absolutely to it. The detection kernels of
tweakreg and source_catalog match the band's PSF unless configured. Parameters:
``[lv3_parameters]``; ``[lv3]`` sets how tweakreg and skymatch group the exposures (the original
scripts' ``group_tweakreg_dithers`` / ``group_skymatch_dithers``). A mosaic is all-or-nothing:
stage 3 runs in a temporary folder and the products replace the previous ones only when it
succeeded (a failed rerun keeps the last good mosaic).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from jwstgal import layout
from jwstgal.bands import Band
from jwstgal.memory import budget_bytes, low_memory_stage3, stage3_task_peak, workers_here
from jwstgal.provenance import hash_params, write_text_atomic
from jwstgal.settings import StepSettings, added_field
from jwstgal.stages import run_stage3
from jwstgal.steps.base import BandContext, BandTask, Step, StepPlan, alignment_catalogue, file_id

log = logging.getLogger(__name__)

NAME = "lv3"


Grouping = Literal["exposure", "visit", "file"]
GROUPING_HELP = ("`exposure` (jwst's own: the detectors of one exposure move together), `visit` (all "
                 "dithers of a visit together) or `file` (every file alone)")


class Lv3Settings(StepSettings):
    """The ``[lv3]`` table (step ``lv3``: how tweakreg and skymatch group the exposures).

    jwst's own stage-3 parameters are ``[lv3_parameters]``.
    """

    tweakreg_groups: Grouping = added_field(
        "exposure", f"Groups that tweakreg fits one shift to: {GROUPING_HELP}.")
    skymatch_groups: Grouping = added_field(
        "exposure", f"Groups that skymatch gives one sky level: {GROUPING_HELP}.")


@dataclass(frozen=True)
class Lv3Task(BandTask):
    """Stage 3 of one band: its mosaic ``product`` from the exposures, tweakreg to ``refcat`` if set.

    ``groups``: the tweakreg and skymatch grouping (``{"tweakreg": mode, "skymatch": mode}``).
    """

    cal_files: tuple[Path, ...]
    product: str
    out_dir: Path
    params: dict[str, Any]
    config_hash: str
    refcat: Path | None = None
    groups: dict[str, str] | None = None

    def run(self) -> list[str]:
        """Run calwebb_image3 into ``out_dir``."""
        return [str(p) for p in run_stage3(list(self.cal_files), self.product, self.out_dir, self.params,
                                           self.config_hash, self.refcat, self.groups)]


def astrometric_residuals(catalog: Path, refcat: Path, match_arcsec: float = 0.3) -> dict[str, Any]:
    """Offsets (mas) of a stage-3 catalogue's sources from an astrometric reference catalogue."""
    from astropy.coordinates import SkyCoord
    from astropy.table import Table

    cat = Table.read(catalog)
    ref = Table.read(refcat)
    cols = {c.lower(): c for c in ref.colnames}
    rc = SkyCoord(ref[cols["ra"]], ref[cols["dec"]], unit="deg")
    sc = cat["sky_centroid"]
    idx, sep, _ = sc.match_to_catalog_sky(rc)
    good = sep.arcsec < match_arcsec
    dra = ((sc.ra[good] - rc.ra[idx[good]]) * np.cos(rc.dec[idx[good]].radian)).to_value("mas")
    ddec = (sc.dec[good] - rc.dec[idx[good]]).to_value("mas")
    return {"n": int(good.sum()), "median_dra_mas": float(np.median(dra)) if good.any() else None,
            "median_ddec_mas": float(np.median(ddec)) if good.any() else None,
            "rms_mas": float(np.sqrt(np.mean(dra**2 + ddec**2))) if good.any() else None,
            "ra": sc.ra.deg[good].tolist(), "dec": sc.dec.deg[good].tolist(),
            "dra": dra.tolist(), "ddec": ddec.tolist()}


class Lv3(Step):
    """jwst stage 3."""

    name = NAME
    summary = ("jwst Image3Pipeline per band (mosaic `_i2d`, catalogue, `crf` files), absolute "
               "tweakreg to `[alignment]` unless `astrometric_align` runs, `[lv3_parameters]`; "
               "tweakreg/skymatch grouping of dithers")
    settings = Lv3Settings
    default = True

    def params(self, ctx: BandContext) -> dict[str, Any]:
        """``[lv3_parameters]`` for the band, detection kernels matched to its PSF unless set."""
        params = ctx.stage_params("lv3_parameters")
        for step in ("tweakreg", "source_catalog"):
            params["steps"].setdefault(step, {}).setdefault("kernel_fwhm", round(ctx.band.fwhm_pix, 3))
        return params

    def plan(self, ctx: BandContext, upstream: str, inputs: list[Path]) -> StepPlan:
        """Plan the band's mosaic."""
        inputs = ctx.science_cal(inputs, "stage 3")
        params = self.params(ctx)
        science, run = ctx.run.science, ctx.run
        refcat = None
        if ctx.target in science.alignment and "astrometric_align" not in ctx.steps:
            refcat = alignment_catalogue(run, ctx.target)
        grouping = self.resolved(ctx)
        groups = {"tweakreg": grouping["tweakreg_groups"], "skymatch": grouping["skymatch_groups"]}
        key = hash_params([NAME, params, upstream, [p.name for p in inputs],
                           file_id(refcat) if refcat else None, *self.key_params(grouping).values()])
        # clear=False: the folder's content is replaced only when stage 3 succeeds
        if (begun := ctx.begin(NAME, key, params, clear=False)).done:
            return begun.done
        out_dir = begun.out_dir
        product = layout.product_name(ctx.target, ctx.band)
        log.info("%s: stage 3 on %d exposures -> %s", ctx.label, len(inputs), product)
        # jwst's own memory options when the members would not fit (same products: not in the key)
        local = getattr(run, "local", None)
        budget = budget_bytes(getattr(local, "memory_budget_gb", 0.0), workers_here=workers_here(local))
        task_params = low_memory_stage3(params, inputs, budget)
        return StepPlan(NAME, key, params, [layout.stage3_mosaic(ctx.band_dir, ctx.target, ctx.band)],
                        [Lv3Task(tuple(inputs), product, out_dir, task_params, run.config_hash, refcat,
                                 groups)],
                        memory=[stage3_task_peak(task_params, inputs)])

    def diagnostics(self, ctx: BandContext, plan: StepPlan) -> list[Path | None]:
        """Quicklook of the mosaic; residuals against the target's astrometric catalogue; groups."""
        from jwstgal.plots import quicklook_png, quiver_png
        from jwstgal.stages import group_ids

        task = plan.tasks[0]
        cal, groups = list(task.cal_files), task.groups or {}
        write_text_atomic(ctx.qa_dir / "lv3_groups.json", json.dumps(
            {step: [mode, len(set(group_ids(cal, mode)))] for step, mode in groups.items()}))
        mosaic = plan.outputs[0]
        out: list[Path | None] = [quicklook_png(mosaic, mosaic.with_suffix(".png"), title=ctx.label)]
        cat = layout.stage3_catalog(ctx.band_dir, ctx.target, ctx.band)
        ref = ctx.run.science.alignment.get(ctx.target)
        if cat.is_file() and ref:
            res = astrometric_residuals(cat, ctx.run.alignment_dir / ref)
            write_text_atomic(ctx.qa_dir / "lv3_astrometry.json", json.dumps(
                {k: v for k, v in res.items() if k not in ("ra", "dec", "dra", "ddec")}))
            out.append(quiver_png(res, ctx.qa_dir / "lv3_astrometry.png", f"{ctx.label} vs {ref}"))
        return out

    def figures(self, band_dir: Path, target: str, band: Band) -> list[tuple[Path, str]]:
        """Quicklook and residual plot."""
        return [(layout.quicklook(band_dir, target, band), "stage 3 mosaic"),
                (layout.qa_dir(band_dir) / "lv3_astrometry.png", "astrometric residuals")]

    def notes(self, band_dir: Path, target: str, band: Band) -> list[str]:
        """How tweakreg and skymatch grouped the exposures; the residuals against the reference."""
        out = []
        groups = layout.qa_dir(band_dir) / "lv3_groups.json"
        if groups.is_file():
            g = json.loads(groups.read_text())
            out.append("Stage 3 grouping: " + ", ".join(
                f"{step} on {n} groups (by {mode})" for step, (mode, n) in g.items()) + ".")
        astro = layout.qa_dir(band_dir) / "lv3_astrometry.json"
        a = json.loads(astro.read_text()) if astro.is_file() else {}
        if not a.get("n"):
            return out
        return [*out, f"Astrometry vs reference after stage 3 (before any astrometric_align): {a['n']} "
                f"matches, median offset ({a['median_dra_mas']:.1f}, {a['median_ddec_mas']:.1f}) mas, "
                f"rms {a['rms_mas']:.1f} mas."]
