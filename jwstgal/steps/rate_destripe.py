"""Step ``rate_destripe``: single-frame destriping of the rate files, before stage 2.

pjpipe's PHANGS order: the 1/f stripes are taken out of the count-rate images, so that stage 2
(flat field, background subtraction) sees destriped frames. Every rate file is destriped,
dedicated background exposures included (they enter stage 2 as backgrounds); the method and keys
are those of ``destripe``, in the step's own ``[rate_destripe]`` table. The outputs keep their
``_rate`` names in ``rate_destripe/``; stage 2 reads them. ``destripe`` may still run on the
calibrated exposures after stage 2.
"""

from __future__ import annotations

from pathlib import Path

from jwstgal.steps.base import BandContext, StepPlan
from jwstgal.steps.destripe import Destripe

NAME = "rate_destripe"


class RateDestripe(Destripe):
    """Single-frame destriping of the rate files (before stage 2)."""

    name = NAME
    repeatable = False
    stpipe = False              # the stpipe step of `destripe` / `bg_sub` serves rate files too
    summary = ("`destripe` on every rate file before stage 2 (pjpipe's PHANGS order), "
               "`[rate_destripe]` (the keys of `[destripe]`)")
    pattern = "*_rate.fits"
    caption = "after destriping the rate files"

    def plan(self, ctx: BandContext, upstream: str, inputs: list[Path]) -> StepPlan:
        """One task per rate file (dedicated backgrounds included)."""
        return super().plan(ctx, upstream, ctx.rate_files(inputs, "rate destriping"))
