"""Step ``field_mosaics``: one mosaic per field (visit) besides the combined one (after stage 3).

The exposures of each visit are resampled on their own (jwst ResampleStep, with the
``[lv3_parameters.resample]`` settings) from stage 3's ``crf`` files, the same (relatively aligned)
exposures as the combined mosaic. By default each field is drawn on the combined mosaic's pixel
grid, so fields and mosaic compare pixel for pixel (``same_grid = false``: each on its own grid).
When ``astrometric_align`` ran, the fields' FITS WCS get its correction exactly as the combined
mosaic did (the stale gwcs dropped). Products:
``field_mosaics/<product>_field<OOOVVV>_i2d.fits`` (observation and visit numbers) with a quicklook
each on the QA page.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import Field, field_validator

from jwstgal import layout
from jwstgal.astrometry_io import visit_id
from jwstgal.bands import Band
from jwstgal.errors import InputNotFoundError
from jwstgal.provenance import hash_params
from jwstgal.settings import StepSettings
from jwstgal.stages import run_resample
from jwstgal.steps.base import BandContext, BandTask, Step, StepPlan, content_hash, file_id

log = logging.getLogger(__name__)

NAME = "field_mosaics"


class FieldMosaicsSettings(StepSettings):
    """The ``[field_mosaics]`` table (step ``field_mosaics``, after stage 3 and alignment)."""

    fields: list[str] = Field(default_factory=list, description="Visits to mosaic, as OOOVVV "
                              "(observation and visit numbers, e.g. '001002'); empty: every visit.")
    same_grid: bool = Field(True, description="Draw each field on the combined mosaic's grid.")

    @field_validator("fields")
    @classmethod
    def _fields(cls, fields: list[str]) -> list[str]:
        for f in fields:
            if len(f) != 6 or not f.isdigit():
                msg = f"field {f!r} is not OOOVVV (six digits: observation and visit numbers)"
                raise ValueError(msg)
        return fields


def field_of(path: Path) -> str:
    """The field (OOOVVV) of an exposure: ``jwPPPPPOOOVVV_...`` -> ``OOOVVV``."""
    return visit_id(path)[-6:]


def field_product(product: str, field: str) -> str:
    """``<product>_field<OOOVVV>``."""
    return f"{product}_field{field}"


@dataclass(frozen=True)
class FieldsTask(BandTask):
    """Resample every field of one band (``groups``: field -> its crf files), then align each.

    ``params``: the resample step's parameters; ``grid``: the mosaic whose grid they share (None:
    their own); ``solution``: the band's absolute alignment (None: not aligned).
    """

    groups: dict[str, tuple[Path, ...]]
    product: str
    out_dir: Path
    params: dict[str, Any]
    grid: Path | None
    solution: Path | None
    config_hash: str

    def run(self) -> list[str]:
        """Write one mosaic per field."""
        return field_mosaics(self.groups, self.product, self.out_dir, self.params, self.grid, self.solution,
                             self.config_hash)


def field_mosaics(groups: dict[str, tuple[Path, ...]], product: str, out_dir: Path, params: dict[str, Any],
                  grid: Path | None, solution: Path | None, config_hash: str) -> list[str]:
    """Resample every field of one band, then give it the absolute alignment."""
    import json

    from jwstgal.astrometry_io import result_from_dict, write_aligned_mosaic

    result = result_from_dict(json.loads(solution.read_text())) if solution else None
    out = []
    for field, files in groups.items():
        name = field_product(product, field)
        made = run_resample(list(files), name, out_dir, params, config_hash, grid)
        mosaic = out_dir / f"{name}_i2d.fits"
        if result is not None:
            aligned = write_aligned_mosaic(mosaic, mosaic.with_name(f".{mosaic.name}.aligned"), result,
                                           config_hash)
            aligned.replace(mosaic)
        out += [str(p) for p in made]
        log.info("field %s: %d exposures -> %s", field, len(files), mosaic.name)
    return out


class FieldMosaics(Step):
    """Per-field mosaics."""

    name = NAME
    summary = ("one mosaic per field (visit) from the same aligned exposures, on the combined "
               "mosaic's grid by default, `[field_mosaics]`")
    settings = FieldMosaicsSettings

    def plan(self, ctx: BandContext, upstream: str, inputs: list[Path]) -> StepPlan:
        """One task for the band: every wanted field."""
        files = sorted((ctx.band_dir / layout.step_folder("lv3")).glob("*_crf.fits"))
        if not files:
            msg = f"{ctx.label}: per-field mosaics need the aligned exposures (crf) of stage 3"
            raise InputNotFoundError(msg)
        params = self.resolved(ctx)
        groups: dict[str, list[Path]] = {}
        for f in files:
            if not params["fields"] or field_of(f) in params["fields"]:
                groups.setdefault(field_of(f), []).append(f)
        if not groups:
            msg = (f"{ctx.label}: none of the fields {params['fields']} has exposures "
                   f"(fields: {', '.join(sorted({field_of(f) for f in files}))})")
            raise InputNotFoundError(msg)
        resample = ctx.stage_params("lv3_parameters")["steps"].get("resample", {})
        resample = {k: v for k, v in resample.items() if k not in ("skip", "output_wcs")}
        grid = layout.stage3_mosaic(ctx.band_dir, ctx.target, ctx.band) if params["same_grid"] else None
        solution = ctx.band_dir / layout.step_folder("astrometric_align") / "solution.json"
        aligned = "astrometric_align" in ctx.steps
        key = hash_params([NAME, self.key_params(params), upstream, resample, sorted(groups),
                           [f.name for f in files], file_id(grid) if grid else None,
                           content_hash(solution) if aligned else None])
        if (begun := ctx.begin(NAME, key, params)).done:
            return begun.done
        out_dir = begun.out_dir
        product = layout.product_name(ctx.target, ctx.band)
        outputs = [out_dir / f"{field_product(product, g)}_i2d.fits" for g in sorted(groups)]
        return StepPlan(NAME, key, params, outputs, [FieldsTask(
            {g: tuple(fs) for g, fs in sorted(groups.items())}, product, out_dir, resample, grid,
            solution if aligned else None, ctx.run.config_hash)])

    def diagnostics(self, ctx: BandContext, plan: StepPlan) -> list[Path | None]:
        """A quicklook of each field mosaic."""
        from jwstgal.plots import quicklook_png

        return [quicklook_png(m, ctx.qa_dir / NAME / f"{m.stem}.png", title=f"{ctx.label}: {m.stem}")
                for m in plan.outputs if m.is_file()]

    def figures(self, band_dir: Path, target: str, band: Band) -> list[tuple[Path, str]]:
        """Every field's quicklook."""
        return [(p, f"field mosaic {p.stem}") for p in sorted((layout.qa_dir(band_dir) / NAME).glob("*.png"))]

    def qa_summary(self, band_dir: Path, target: str, band: Band) -> dict[str, str]:
        """How many field mosaics there are."""
        n = len(list((band_dir / NAME).glob("*_i2d.fits")))
        return {"field mosaics": str(n)} if n else {}
