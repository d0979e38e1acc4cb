"""Step ``bg_sub`` (optional, after ``destripe``): subtract each exposure's own sky level.

The level is the sigma-clipped median of the pixels that are neither sources (positive or
negative, detected and dilated) nor DQ-flagged (:func:`jwstgal.masking.sky_level`); it is
subtracted from the good pixels of a copy (``BGSUBLVL`` in the header). Use it where exposures have
no dedicated background and no overlap to match levels on; with overlapping exposures,
``level_match`` keeps the relative levels instead.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from astropy.io import fits
from pydantic import Field

from jwstgal import dq, layout
from jwstgal.bands import Band
from jwstgal.destripe_frames import good_pixels
from jwstgal.masking import sky_level
from jwstgal.provenance import atomic_path, stamp_header
from jwstgal.settings import StepSettings
from jwstgal.steps.base import BandContext, BandTask, Step, StepPlan
from jwstgal.steps.destripe import DQ_CHOICES

log = logging.getLogger(__name__)

NAME = "bg_sub"


class BgSubSettings(StepSettings):
    """The ``[bg_sub]`` table (step ``bg_sub``: each exposure's sky level subtracted)."""

    sigma: float = Field(3.0, gt=0, description="Clipping and source-detection threshold.")
    npixels: int = Field(5, ge=1, description="Minimum connected pixels of a source.")
    dilate_size: int = Field(5, ge=1, le=256, description="Dilation of the source mask (pixels).")
    max_iters: int = Field(20, ge=1, description="Clipping iterations.")
    dq_flags: list[DQ_CHOICES] = Field(default_factory=lambda: list(dq.DEFAULT_BAD),
                                       description="DQ flags excluded from the level.")


def subtract_sky(src: Path, dst: Path, params: BgSubSettings, config_hash: str = "") -> float:
    """Write a copy of ``src`` with its sky level subtracted; returns the level."""
    with fits.open(src) as h:
        sci = np.array(h["SCI"].data, float)
        dq_arr = np.array(h["DQ"].data) if "DQ" in h else None
        bad = dq.bad_pixel_mask(sci, dq_arr, None, params.dq_flags)
        level = sky_level(sci, bad, params.sigma, params.npixels, params.dilate_size, params.max_iters)
        good = good_pixels(sci, dq_arr)
        h["SCI"].data = np.where(good, sci - level, sci).astype(h["SCI"].data.dtype)
        h[0].header["BGSUBLVL"] = (level, "sky level subtracted (bg_sub) [BUNIT]")
        stamp_header(h[0].header, step=NAME, params=params.model_dump(), config_hash=config_hash)
        with atomic_path(dst) as tmp:
            h.writeto(tmp)
    log.info("%s: sky level %.4g subtracted", src.name, level)
    return level


@dataclass(frozen=True)
class BgSubTask(BandTask):
    """Subtract one exposure's sky level."""

    src: Path
    dst: Path
    settings: BgSubSettings
    config_hash: str

    def run(self) -> list[str]:
        """Write the copy with its level subtracted."""
        subtract_sky(self.src, self.dst, self.settings, self.config_hash)
        return [str(self.dst)]


class BgSub(Step):
    """Per-exposure sky subtraction."""

    name = NAME
    repeatable = True
    summary = ("optional: each exposure's sigma-clipped, source- and DQ-masked median subtracted, "
               "`[bg_sub]`")
    settings = BgSubSettings
    stpipe = True

    def plan(self, ctx: BandContext, upstream: str, inputs: list[Path]) -> StepPlan:
        """One task per science exposure; finished ones are reused on a rerun with the same key."""
        return self.plan_per_exposure(ctx, upstream, inputs, "bg_sub", lambda p, o, params: BgSubTask(
            p, o, BgSubSettings(**params), ctx.run.config_hash))

    def diagnostics(self, ctx: BandContext, plan: StepPlan) -> list[Path | None]:
        """Bar chart of the levels subtracted."""
        from jwstgal.plots import offsets_png

        levels = np.array([fits.getheader(p)["BGSUBLVL"] for p in plan.outputs])
        names = [p.name for p in plan.outputs]
        return [offsets_png(names, ["_".join(n.split("_")[:2]) for n in names], levels,
                            ctx.qa_dir / f"{self.name}.png", f"{ctx.label}: sky levels subtracted")]

    def figures(self, band_dir: Path, target: str, band: Band) -> list[tuple[Path, str]]:
        """The levels."""
        return [(layout.qa_dir(band_dir) / f"{self.name}.png", "sky levels subtracted")]
