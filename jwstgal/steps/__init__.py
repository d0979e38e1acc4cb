"""The pipeline steps of a band, one module each, and :data:`STEPS`, the only list of them.

The registry's order is the only order in which steps may run; the config validator, the driver,
the QA page and the step table of docs/steps.md (:func:`markdown_table`) all read it. A new step is one
module here (settings model, plan, task, diagnostics; see :mod:`jwstgal.steps.base`) plus one line
below.

A *repeatable* step may also run again under ``<step>_<n>`` (``destripe_2``, n = 2-9): right after
the step (and its lower repeats), into its own folder, with its own ``[<step>_<n>]`` table
(:func:`get_step`, :func:`run_order`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from jwstgal.steps.anchor import Anchor
from jwstgal.steps.astrometric_align import AstrometricAlign
from jwstgal.steps.astrometric_catalog import AstrometricCatalog
from jwstgal.steps.base import BandContext, BandTask, Stage, Step, StepPlan, StepRecord, TargetContext
from jwstgal.steps.bg_sub import BgSub
from jwstgal.steps.bgr_mosaics import BgrMosaics
from jwstgal.steps.compare import Compare
from jwstgal.steps.convolve import Convolve
from jwstgal.steps.destripe import Destripe
from jwstgal.steps.field_mosaics import FieldMosaics
from jwstgal.steps.kernels import Kernels
from jwstgal.steps.level_match import LevelMatch
from jwstgal.steps.lv1 import Lv1
from jwstgal.steps.lv2 import Lv2
from jwstgal.steps.lv3 import Lv3
from jwstgal.steps.lyot_adjust import LyotAdjust
from jwstgal.steps.post import PostStep
from jwstgal.steps.rate_bg_sub import RateBgSub
from jwstgal.steps.rate_destripe import RateDestripe
from jwstgal.steps.release import Release
from jwstgal.steps.stack_destripe import StackDestripe
from jwstgal.steps.wcs_adjust import WcsAdjust
from jwstgal.steps.wcs_solve import WcsSolve

#: Every step, in the only order in which they may run.
STEPS: tuple[Step, ...] = (
    Lv1(),
    RateDestripe(),
    RateBgSub(),
    Lv2(),
    LyotAdjust(),
    Destripe(),
    BgSub(),
    WcsSolve(),
    WcsAdjust(),
    LevelMatch(),
    StackDestripe(),
    Lv3(),
    AstrometricCatalog(),
    AstrometricAlign(),
    FieldMosaics(),
    BgrMosaics(),
)

#: The post-mosaic steps, in the order they run (:mod:`jwstgal.steps.post`).
POST_STEPS: tuple[PostStep, ...] = (
    Kernels(),
    Anchor(),
    Convolve(),
    Release(),
    Compare(),
)

#: Step names in order.
STEP_NAMES: tuple[str, ...] = tuple(s.name for s in STEPS)
#: Steps run when a config names none: the plain STScI pipeline.
DEFAULT_STEPS: tuple[str, ...] = tuple(s.name for s in STEPS if s.default)
#: Steps with a settings table of their own.
STEP_SETTINGS = {s.name: s.settings for s in STEPS if s.settings is not None}


#: Steps that may run again as ``<step>_<n>``.
REPEATABLE: tuple[str, ...] = tuple(s.name for s in STEPS if s.repeatable)
_REPEAT = re.compile(r"(?P<base>[a-z0-9_]+?)_(?P<n>[2-9])")
_REPEATS: dict[str, Step] = {}


def repeat_of(name: str) -> tuple[str, int] | None:
    """``(step, n)`` when ``name`` is ``<registered step>_<n>`` (n = 2-9), else None."""
    m = _REPEAT.fullmatch(name)
    return (m["base"], int(m["n"])) if m and m["base"] in STEP_NAMES else None


def order_key(name: str) -> tuple[int, int]:
    """Where a step (or a repeat) runs: its step's place in the registry, then the repeat's number."""
    base, n = repeat_of(name) or (name, 1)
    return STEP_NAMES.index(base), n


def get_step(name: str) -> Step:
    """The step called ``name``: a registered one or a repeat of a repeatable one.

    Raises
    ------
    KeyError
        Naming the allowed steps (or the repeatable ones, for a repeat of another step).
    """
    for s in STEPS:
        if s.name == name:
            return s
    if (rep := repeat_of(name)) is not None:
        base = next(s for s in STEPS if s.name == rep[0])
        if not base.repeatable:
            msg = (f"step {rep[0]!r} cannot run again as {name!r} (repeatable: "
                   f"{', '.join(REPEATABLE)})")
            raise KeyError(msg)
        return _REPEATS.setdefault(name, base.repeat(name))
    msg = f"unknown step {name!r} (allowed: {', '.join(STEP_NAMES)}; repeats: <step>_2 ...)"
    raise KeyError(msg)


def with_needs(names: Iterable[str]) -> list[str]:
    """A band's steps with the target steps they need (:attr:`Step.needs`), in the order they run."""
    names = list(names)
    needed = {n for name in names for n in get_step(name).needs}
    return sorted({*names, *needed}, key=order_key)


def run_order(names: Iterable[str] = ()) -> list[Step]:
    """Every registered step and the repeats among ``names``, in the order they run."""
    repeats = {n for n in names if n != "all" and repeat_of(n) is not None}
    return sorted([*STEPS, *(get_step(n) for n in repeats)], key=lambda s: order_key(s.name))


def get_post_step(name: str) -> PostStep:
    """The post-mosaic step called ``name``.

    Raises
    ------
    KeyError
        Naming the post-mosaic steps.
    """
    for s in POST_STEPS:
        if s.name == name:
            return s
    msg = f"unknown post-mosaic step {name!r} (allowed: {', '.join(s.name for s in POST_STEPS)})"
    raise KeyError(msg)


def markdown_table() -> str:
    """The step table of docs/steps.md: every step in order, its scope, settings table and what it does."""
    rows = ["| step | scope | settings | what it does |", "| --- | --- | --- | --- |"]
    for s in STEPS:
        table = f"`[{s.name}]`" if s.settings else "-"
        rows.append(f"| `{s.name}` | {s.scope} | {table} | {s.summary} |")
    return "\n".join(rows) + "\n"


def post_markdown_table() -> str:
    """The table of post-mosaic steps of docs/steps.md: each step in order, its scope, what it does."""
    rows = ["| step | scope | what it does |", "| --- | --- | --- |"]
    rows += [f"| `{s.name}` | {s.scope} | {s.summary} |" for s in POST_STEPS]
    return "\n".join(rows) + "\n"


__all__ = ["DEFAULT_STEPS", "POST_STEPS", "REPEATABLE", "STEPS", "STEP_NAMES", "STEP_SETTINGS",
           "BandContext", "BandTask", "PostStep", "Stage", "Step", "StepPlan", "StepRecord", "TargetContext",
           "get_post_step",
           "get_step", "markdown_table", "order_key", "post_markdown_table", "repeat_of", "run_order",
           "with_needs"]
