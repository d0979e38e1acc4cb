"""Plans and records of the band steps: what a step of one band does, and what it did.

:class:`StepPlan` (with its :class:`Stage` list) is what :meth:`jwstgal.steps.Step.plan` returns;
:class:`StepRecord` is the on-disk record (``.jwstgal/<step>.json``) that makes a run resumable.
"""

from __future__ import annotations

import json
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


@dataclass(frozen=True)
class BandTask:
    """One unit of work of a band step, run in a worker of the executor.

    Each step's task is a frozen dataclass at module level (so that it pickles to any worker) whose
    fields are all its run needs: ``pathlib.Path`` inputs and outputs (from :mod:`jwstgal.layout`),
    the step's validated settings resolved for the band, the config hash for provenance.
    :meth:`run` does the work and returns the files it wrote. Bands that plan equal tasks (a
    target's solve, planned by each of its bands) share one run of it.
    """

    def run(self) -> list[str]:
        """Do the work (in a worker); raise on failure."""
        raise NotImplementedError


@dataclass
class Stage:
    """One stage of a step's work: its tasks, run together on the executor.

    Attributes
    ----------
    tasks : list of BandTask
        The tasks.
    memory : list of float
        Estimated peak bytes of each task (:mod:`jwstgal.memory`); empty: unknown.
    """

    tasks: list[BandTask] = field(default_factory=list)
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
    tasks : list of BandTask or None
        The main tasks (one per exposure, or one per band; empty when every output is reused);
        None when the step is already complete.
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
    tasks: list[BandTask] | None = None
    memory: list[float] = field(default_factory=list)
    stages: list[Stage] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.tasks is not None and not self.stages:
            self.stages = [Stage(self.tasks, self.memory)]

    @property
    def main(self) -> Stage:
        """The stage of the main tasks."""
        return next(s for s in self.stages if s.tasks is self.tasks)

    @property
    def done(self) -> bool:
        """Whether the step was already complete."""
        return self.tasks is None
