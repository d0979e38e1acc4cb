"""Step ``rate_bg_sub``: each rate file's own sky level subtracted, before stage 2.

The ``bg_sub`` method on the count-rate images (pjpipe's order, after ``rate_destripe`` when both
run), dedicated background exposures included, with the step's own ``[rate_bg_sub]`` table (the
keys of ``[bg_sub]``). The outputs keep their ``_rate`` names in ``rate_bg_sub/``; stage 2 reads
them.
"""

from __future__ import annotations

from pathlib import Path

from jwstgal.steps.base import BandContext, StepPlan
from jwstgal.steps.bg_sub import BgSub

NAME = "rate_bg_sub"


class RateBgSub(BgSub):
    """Per-exposure sky subtraction of the rate files (before stage 2)."""

    name = NAME
    repeatable = False
    stpipe = False              # the stpipe step of `destripe` / `bg_sub` serves rate files too
    summary = "`bg_sub` on every rate file before stage 2, `[rate_bg_sub]` (the keys of `[bg_sub]`)"

    def plan(self, ctx: BandContext, upstream: str, inputs: list[Path]) -> StepPlan:
        """One task per rate file (dedicated backgrounds included)."""
        return super().plan(ctx, upstream, ctx.rate_files(inputs, "rate sky subtraction"))
