"""Plans and records of the band steps: what a step of one band does, and what it did.

:class:`StepPlan` (with its :class:`Stage` list) is what :meth:`jwstgal.steps.Step.plan` returns;
:class:`StepRecord` is the on-disk record (``.jwstgal/<step>.json``) that makes a run resumable.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jwstgal import layout
from jwstgal.provenance import write_text_atomic


class StepRecord:
    """The on-disk record of one step of one target/band (``.jwstgal/<step>.json``)."""

    def __init__(self, band_dir: Path, step: str) -> None:
        self.path = layout.record_dir(band_dir) / f"{step}.json"

    def read(self) -> dict[str, Any]:
        """The record, or an empty dict."""
        try:
            return json.loads(self.path.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return {}

    def is_complete(self, key: str) -> bool:
        """Whether the step finished with this key and its outputs still exist."""
        rec = self.read()
        return (rec.get("key") == key and rec.get("complete", False)
                and all((self.path.parents[1] / o).is_file() for o in rec.get("outputs", [])))

    def start(self, key: str, params: dict[str, Any]) -> bool:
        """Mark the step started; returns whether earlier partial outputs (same key) are reusable."""
        reusable = self.read().get("key") == key
        write_text_atomic(self.path, json.dumps({"key": key, "complete": False, "params": params},
                                                indent=1, default=str))
        return reusable

    def finish(self, key: str, params: dict[str, Any], outputs: list[Path]) -> None:
        """Mark the step complete with its outputs (paths relative to the band folder)."""
        rel = [str(p.relative_to(self.path.parents[1])) for p in outputs]
        write_text_atomic(self.path, json.dumps({"key": key, "complete": True, "params": params,
                                                 "outputs": rel}, indent=1, default=str))


@dataclass
class Stage:
    """One stage of a step's work: a task function and its tasks (argument tuples).

    Attributes
    ----------
    fn : callable
        The task function (module level: it runs in the executor's workers).
    tasks : list of tuple
        Arguments of each task.
    memory : list of float
        Estimated peak bytes of each task (:mod:`jwstgal.memory`); empty: unknown.
    """

    fn: Callable[..., Any]
    tasks: list[tuple[Any, ...]] = field(default_factory=list)
    memory: list[float] = field(default_factory=list)


@dataclass
class StepPlan:
    """What one step of one band needs to do.

    Attributes
    ----------
    step : str
        The step's name.
    key : str
        Hash of the step's parameters and inputs (and of the upstream step's key).
    params : dict
        Resolved parameters.
    outputs : list of pathlib.Path
        The step's products once complete.
    fn : callable or None
        The step's main task function; None when the step is already complete.
    tasks : list of tuple
        Arguments of each main task (one per exposure, or one per band).
    memory : list of float
        Estimated peak bytes of each of ``tasks`` (:mod:`jwstgal.memory`); empty: unknown.
    stages : list of Stage
        The work in order: stage *i* of every band's plan runs together, once stage *i - 1* has
        finished everywhere (per-file measurements before a band-wide solution, the passes of an
        iteration, a band that borrows another's solution one stage later). By default one
        stage, the main tasks.
    """

    step: str
    key: str
    params: dict[str, Any]
    outputs: list[Path]
    fn: Callable[..., Any] | None = None
    tasks: list[tuple[Any, ...]] = field(default_factory=list)
    memory: list[float] = field(default_factory=list)
    stages: list[Stage] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.fn is not None and not self.stages:
            self.stages = [Stage(self.fn, self.tasks, self.memory)]

    @property
    def main(self) -> Stage:
        """The stage of the main tasks (``fn``, ``tasks``)."""
        return next(s for s in self.stages if s.fn is self.fn and s.tasks is self.tasks)

    @property
    def done(self) -> bool:
        """Whether the step was already complete."""
        return self.fn is None
