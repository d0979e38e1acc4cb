"""The pipeline steps of a band, one module each, and :data:`STEPS`, the only list of them.

The registry's order is the only order in which steps may run; the config validator, the driver,
the QA page and the README's step table (:func:`markdown_table`) all read it. A new step is one
module here (settings model, plan, task, diagnostics; see :mod:`jwstgal.steps.base`) plus one line
below.
"""

from __future__ import annotations

from jwstgal.steps.astrometric_align import AstrometricAlign
from jwstgal.steps.astrometric_catalog import AstrometricCatalog
from jwstgal.steps.base import BandContext, Step, StepPlan, StepRecord
from jwstgal.steps.bg_sub import BgSub
from jwstgal.steps.bgr_mosaics import BgrMosaics
from jwstgal.steps.destripe import Destripe
from jwstgal.steps.field_mosaics import FieldMosaics
from jwstgal.steps.level_match import LevelMatch
from jwstgal.steps.lv1 import Lv1
from jwstgal.steps.lv2 import Lv2
from jwstgal.steps.lv3 import Lv3
from jwstgal.steps.lyot_adjust import LyotAdjust
from jwstgal.steps.stack_destripe import StackDestripe
from jwstgal.steps.wcs_adjust import WcsAdjust

#: Every step, in the only order in which they may run.
STEPS: tuple[Step, ...] = (
    Lv1(),
    Lv2(),
    LyotAdjust(),
    Destripe(),
    BgSub(),
    WcsAdjust(),
    LevelMatch(),
    StackDestripe(),
    Lv3(),
    AstrometricCatalog(),
    AstrometricAlign(),
    FieldMosaics(),
    BgrMosaics(),
)

#: Step names in order.
STEP_NAMES: tuple[str, ...] = tuple(s.name for s in STEPS)
#: Steps run when a config names none: the plain STScI pipeline.
DEFAULT_STEPS: tuple[str, ...] = tuple(s.name for s in STEPS if s.default)
#: Steps with a settings table of their own.
STEP_SETTINGS = {s.name: s.settings for s in STEPS if s.settings is not None}


def get_step(name: str) -> Step:
    """The registered step called ``name`` (``KeyError`` naming the allowed steps otherwise)."""
    for s in STEPS:
        if s.name == name:
            return s
    msg = f"unknown step {name!r} (allowed: {', '.join(STEP_NAMES)})"
    raise KeyError(msg)


def markdown_table() -> str:
    """The README's step table: every step in order, its settings table and what it does."""
    rows = ["| step | settings | what it does |", "| --- | --- | --- |"]
    for s in STEPS:
        table = f"`[{s.name}]`" if s.settings else "-"
        rows.append(f"| `{s.name}` | {table} | {s.summary} |")
    return "\n".join(rows) + "\n"


__all__ = ["DEFAULT_STEPS", "STEPS", "STEP_NAMES", "STEP_SETTINGS", "BandContext", "Step", "StepPlan",
           "StepRecord", "get_step", "markdown_table"]
