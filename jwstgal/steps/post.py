"""What the post-mosaic steps share: scopes, typed tasks and their plans.

A post-mosaic step (kernels, the resolution ladder, ...) is one module in :mod:`jwstgal.steps`
with a :class:`PostStep` subclass and one line in :data:`jwstgal.steps.POST_STEPS`. It declares

- ``name`` and ``summary`` (the command and the docs' table),
- ``scope``: ``"run"`` (one context for the whole run, e.g. the kernels), ``"target"`` (one per
  target) or ``"band"`` (one per target and band, e.g. the ladder of one mosaic),
- :meth:`PostStep.plan`: the tasks of one context, in stages (each stage runs once the previous
  one has finished everywhere), each task a frozen dataclass (:class:`Task`) that names its
  inputs and outputs, says what a run would do with it and why, and does it (:meth:`Task.run`,
  in a worker of the executor: a task holds paths and validated settings, nothing else),
- :meth:`PostStep.finish`: what is recorded once a context's tasks ran.

The driver (:mod:`jwstgal.post_runner`) makes the contexts, prints the plans of ``--dry-run`` in
one format, runs every task of a stage through the executor together, in parallel, and turns
failures into the exit code. Like the band steps, this module knows nothing of the config package:
the run is read through :class:`PostRun`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal, Protocol

from jwstgal.bands import Band

log = logging.getLogger(__name__)

Scope = Literal["run", "target", "band"]
#: What a run does with a task: make its outputs, keep them (up to date), or cannot make them.
Action = Literal["make", "skip", "fails", "refused"]
SCOPES: tuple[str, ...] = ("run", "target", "band")


class PostRun(Protocol):
    """What a post-mosaic step reads of a validated run (:class:`jwstgal.config.RunConfig` is one)."""

    science: Any
    working_dir: Path
    reprocess_dir: Path
    psf_dir: Path
    psf_data_dir: Path
    config_path: Path
    config_hash: str


@dataclass(frozen=True, kw_only=True)
class Task:
    """One unit of work of a post-mosaic step: what it reads and makes, and why it runs.

    Subclasses add the fields their :meth:`run` needs (paths, validated settings) and implement
    it; a task is pickled to the executor's workers, so it holds plain data only.

    Attributes
    ----------
    label : str
        What the task is about, for the plan and the log (``ngc0628 F200W -> gauss4``).
    inputs, outputs : tuple of pathlib.Path
        Files it reads and writes.
    action : str
        ``make``, ``skip`` (outputs up to date), ``fails`` or ``refused`` (it cannot be made;
        ``reason`` says why, naming the file).
    reason : str
        Why: ``not made yet``, ``inputs or settings changed``, ``--overwrite``, ``up to date``, or
        the problem.
    """

    label: str
    inputs: tuple[Path, ...] = ()
    outputs: tuple[Path, ...] = ()
    action: Action = "make"
    reason: str = ""

    def run(self) -> Any:
        """Make the outputs (in a worker); raise on failure (the task's label names it)."""
        raise NotImplementedError

    def lines(self, root: Path) -> list[str]:
        """The task in a dry run's format (the same as the band steps')."""

        def rel(p: Path) -> str:
            return str(p.relative_to(root)) if p.is_relative_to(root) else str(p)

        out = [f"  {self.label:<30} {self.action:<8} {self.reason}"]
        if self.action == "make":
            out.append(f"      in : {', '.join(rel(p) for p in self.inputs) or '-'}")
            out.extend(f"      out: {rel(p)}" for p in self.outputs)
        return out


def run_task(task: Task) -> Any:
    """The executor's worker function: run one task."""
    return task.run()


@dataclass
class PostContext:
    """One context of a post-mosaic step: the run, or one target, or one target and band.

    Attributes
    ----------
    run : PostRun
        The validated run.
    target : str or None
        The target (None for a run-scope step).
    band : Band or None
        The band (band scope only).
    bands, targets : list of str
        The bands and targets selected on the command line (all configured ones by default).
    overwrite : bool
        Remake outputs that are up to date.
    dry_run : bool
        Plan only: nothing may be written.
    """

    run: Any
    target: str | None = None
    band: Band | None = None
    bands: list[str] = field(default_factory=list)
    targets: list[str] = field(default_factory=list)
    overwrite: bool = False
    dry_run: bool = False

    @property
    def label(self) -> str:
        """``<target> <BAND>``, ``<target>`` or ``run``."""
        return " ".join(x for x in (self.target, self.band.name if self.band else None) if x) or "run"


class PostStep:
    """Base of a post-mosaic step; subclasses set the class attributes and implement :meth:`plan`.

    Attributes
    ----------
    name : str
        The step's name (``kernels``, ``convolve``).
    scope : str
        ``run``, ``target`` or ``band``: what one context is.
    summary : str
        One line for the docs' table.
    """

    name: ClassVar[str]
    scope: ClassVar[Scope]
    summary: ClassVar[str]

    def root(self, run: PostRun) -> Path:
        """The folder the plan's paths are shown relative to (the working tree by default)."""
        return run.reprocess_dir.parent

    def check(self, run: PostRun, bands: list[str]) -> list[str]:
        """Problems of the configuration that stop the step before any work (none by default)."""
        return []

    def plan(self, ctx: PostContext) -> list[list[Task]]:
        """The tasks of one context, in stages (each after the previous one everywhere)."""
        raise NotImplementedError

    def finish(self, ctx: PostContext, results: list[tuple[Task, Any]]) -> None:
        """Record what a context's tasks did (``results``: each task with its result or exception)."""

    def failed(self, task: Task, result: Any) -> str:
        """Why a task counts as failed ('' when it did its work)."""
        if isinstance(result, BaseException):
            return f"{type(result).__name__}: {result}"
        return task.reason if task.action in ("fails", "refused") else ""
