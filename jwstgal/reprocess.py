"""The driver: every configured target x band x step, through one executor, resumable.

Layout of the products: :mod:`jwstgal.layout`; the steps and their order: :mod:`jwstgal.steps`.
For each step in registry order, every band that runs it is planned (:meth:`Step.plan`), the
tasks of all bands run together on the executor, stage by stage (:attr:`StepPlan.stages`: stage
*i* of every band once stage *i - 1* finished everywhere), and each band whose tasks all succeeded
gets its step record and diagnostics. A band whose
task fails is reported and the others go on; a band without input for a step is skipped. Each band
folder is locked for the whole run, so two runs never write the same products.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jwstgal import layout
from jwstgal.bands import get_band
from jwstgal.config import RunConfig
from jwstgal.errors import CRDSError, InputNotFoundError, NothingToDo, StepFailedError
from jwstgal.executor import Executor, ExecutorSpec, open_executor
from jwstgal.steps import BandContext, Step, StepPlan, StepRecord, run_order, with_needs
from jwstgal.steps.base import BandTask, Stage, TargetContext

log = logging.getLogger(__name__)

#: Status words of a step of one band in one run (run summary, QA page).
RAN, SKIPPED, NO_INPUT, FAILED, NOT_CONFIGURED = ("ran", "skipped (complete)", "skipped (no input)",
                                                   "failed", "not configured")


@dataclass(frozen=True)
class BandResult:
    """What processing one target/band produced (``error`` is set when a step failed).

    ``status`` maps every registered step to what happened to it in this run (:data:`RAN`,
    :data:`SKIPPED`, :data:`NO_INPUT`, :data:`FAILED`, :data:`NOT_CONFIGURED`, or ``""`` for a
    configured step that a failure upstream kept from running).
    """

    target: str
    band: str
    mosaic: Path | None
    quicklook: Path | None
    steps_run: tuple[str, ...]
    steps_skipped: tuple[str, ...]
    error: str = ""
    status: dict[str, str] = field(default_factory=dict)
    notes: tuple[str, ...] = ()


@dataclass
class _BandState:
    ctx: BandContext
    upstream: str = ""
    outputs: list[Path] = field(default_factory=list)
    status: dict[str, str] = field(default_factory=dict)
    error: str = ""
    missing: bool = False

    def steps_with(self, word: str) -> tuple[str, ...]:
        return tuple(s for s, st in self.status.items() if st == word)


def executor_spec(cfg: RunConfig) -> ExecutorSpec:
    """The executor configured in ``local.toml``."""
    from jwstgal.memory import budget_bytes, workers_here

    loc = cfg.local
    return ExecutorSpec(loc.executor, loc.processes, loc.dask_scheduler,
                        loc.slurm.model_dump(exclude_none=True) if loc.slurm else {},
                        budget_bytes(loc.memory_budget_gb, workers_here=workers_here(loc)))


def _states(cfg: RunConfig, bands: list[str] | None, targets: list[str] | None, *, dry_run: bool = False
            ) -> list[_BandState]:
    """Every selected target/band, its configured steps with the target steps they need."""
    states = [_BandState(BandContext.of(cfg, t, get_band(b), dry_run=dry_run))
              for t in (targets or cfg.science.targets) for b in (bands or cfg.science.bands)]
    for st in states:
        st.ctx.steps = with_needs(st.ctx.steps)
    return states


@contextlib.contextmanager
def band_locks(cfg: RunConfig, bands: list[str] | None = None, targets: list[str] | None = None
               ) -> Iterator[None]:
    """Hold the lock of every selected band folder (a :class:`BandLock` each) for a whole run."""
    with contextlib.ExitStack() as locks:
        for st in _states(cfg, bands, targets):
            locks.enter_context(BandLock(st.ctx.band_dir))
        yield


def run_all(cfg: RunConfig, bands: list[str] | None = None, targets: list[str] | None = None,
            progress: bool = True, executor: Executor | None = None, *, lock: bool = True
            ) -> list[BandResult]:
    """Process every configured target and band (optionally a subset), step by step.

    Parameters
    ----------
    cfg : RunConfig
        Validated configuration.
    bands, targets : list of str, optional
        Restrict the run.
    progress : bool
        Show progress bars.
    executor : Executor, optional
        An open executor; default the one configured in ``local.toml``.
    lock : bool
        Take the band locks (False: the caller holds them, see :func:`band_locks`).

    Returns
    -------
    list of BandResult
        One per target/band that had input for at least one step.
    """
    if executor is None:
        with open_executor(executor_spec(cfg)) as ex:
            return run_all(cfg, bands, targets, progress, ex, lock=lock)
    states = _states(cfg, bands, targets)
    steps = run_order(s for st in states for s in st.ctx.steps)   # with the configured repeats
    for st in states:
        st.status = {s.name: "" if s.name in st.ctx.steps else NOT_CONFIGURED for s in steps}
    # the locks are held for the whole run: one run per band at a time
    with band_locks(cfg, bands, targets) if lock else contextlib.nullcontext():
        for st in states:
            remove_temporaries(st.ctx.band_dir)
        for step in steps:
            _run_step(step, states, executor, progress)
    results = []
    for st in states:
        ran, skipped = st.steps_with(RAN), st.steps_with(SKIPPED)
        if st.missing and not ran and not skipped:
            continue
        ctx = st.ctx
        final = layout.final_mosaic(ctx.band_dir, ctx.target, ctx.band)   # aligned when there is one
        quick = layout.quicklook(ctx.band_dir, ctx.target, ctx.band)
        results.append(BandResult(ctx.target, ctx.band.name, final if final.is_file() else None,
                                  quick if quick.is_file() else None, ran, skipped, st.error,
                                  dict(st.status), tuple(dict.fromkeys(ctx.notes))))
    return results


@dataclass(frozen=True)
class PlannedStep:
    """What a run would do with one step of one target/band (:func:`plan_all`).

    ``action`` is ``run``, ``skip``, ``not configured``, ``no input``, ``fails`` or ``later``
    (planned once an upstream step that would run has made its outputs); ``reason`` says why.
    """

    step: str
    action: str
    reason: str
    inputs: tuple[Path, ...] = ()
    outputs: tuple[Path, ...] = ()
    tasks: int = 0
    scope: str = "band"


def _why_run(folder: Path, overwrite: set[str], step: str, key: str) -> str:
    if step in overwrite:
        return "overwrites configured for this step"
    rec = StepRecord(folder, step).read()
    if not rec:
        return "not run before"
    if rec.get("key") != key:
        return "settings or inputs changed since the last run"
    if not rec.get("complete"):
        return "resumes an interrupted run (finished outputs are reused)"
    return "outputs of the last run are missing"


def plan_all(cfg: RunConfig, bands: list[str] | None = None, targets: list[str] | None = None
             ) -> dict[tuple[str, str], list[PlannedStep]]:
    """What :func:`run_all` would do, step by step, without writing anything (``--dry-run``).

    Every step is planned as in a run (same keys, same completeness checks) on contexts whose
    :meth:`~jwstgal.steps.BandContext.begin` touches nothing and no task runs. A step whose plan
    needs the files of an upstream step that would run is reported as ``later``.
    """
    out: dict[tuple[str, str], list[PlannedStep]] = {}
    for st in _states(cfg, bands, targets, dry_run=True):
        rows: list[PlannedStep] = []
        pending = blocked = ""
        for step in run_order(st.ctx.steps):
            if step.name not in st.ctx.steps:
                rows.append(PlannedStep(step.name, "not configured", ""))
                continue
            if blocked:
                rows.append(PlannedStep(step.name, "no input", blocked))
                continue
            inputs = tuple(st.outputs)
            try:
                if step.scope == "target":         # the band's row says what its target's step does
                    (_, tctx), = _contexts(step, [st], dry_run=True)
                    plan = step.plan(tctx)
                    inputs = ()
                else:
                    plan = step.plan(st.ctx, st.upstream, st.outputs)
            except (InputNotFoundError, NothingToDo, StepFailedError, OSError, KeyError, ValueError) as err:
                if pending:
                    rows.append(PlannedStep(step.name, "later", f"planned once {pending} has run"))
                    continue
                kind = "fails" if isinstance(err, StepFailedError) else "no input"
                rows.append(PlannedStep(step.name, kind, str(err).splitlines()[0]))
                blocked = f"{step.name}: {kind}"
                continue
            folder = st.ctx.band_dir.parent if step.scope == "target" else st.ctx.band_dir
            if plan.done:
                rows.append(PlannedStep(step.name, "skip", "complete with the same settings and inputs",
                                        inputs, tuple(plan.outputs)))
            else:
                rows.append(PlannedStep(step.name, "run", _why_run(folder, st.ctx.overwrite, step.name,
                                                                   plan.key), inputs,
                                        tuple(plan.outputs), len(plan.tasks), step.scope))
                pending = pending or step.name
            if step.scope != "target":
                st.upstream, st.outputs = plan.key, plan.outputs
        out[(st.ctx.target, st.ctx.band.name)] = rows
    return out


def format_plan(plans: dict[tuple[str, str], list[PlannedStep]], root: Path) -> str:
    """The text of a dry run: per target/band, each step's action, reason and files in/out."""

    def rel(p: Path) -> str:
        return str(p.relative_to(root)) if p.is_relative_to(root) else str(p)

    lines = []
    for (target, band), rows in plans.items():
        lines.append(f"{target} {band}:")
        for r in rows:
            if r.action == "not configured":
                continue
            lines.append(f"  {r.step:<18} {r.action:<8} {r.reason}")
            if r.action != "run":
                continue
            folders = ", ".join(sorted({rel(p.parent) for p in r.inputs}))
            lines.append(f"      in : {len(r.inputs)} files from {folders}" if r.inputs
                         else "      in : the target's exposures (a step of the target, for all its bands)"
                         if r.scope == "target" else "      in : the raw exposures of the band")
            lines.append(f"      out: {len(r.outputs)} files ({r.tasks} tasks)")
            lines.extend(f"           {rel(p)}" for p in r.outputs)
    return "\n".join(lines) + "\n"


def remove_temporaries(band_dir: Path) -> int:
    """Delete what killed runs left in a band folder (``.<name>.<id>.tmp.<ext>``, ``.tmp-*``).

    Only called with the band's lock held, so no live run is writing them.
    """
    n = 0
    for p in sorted(band_dir.rglob(".*.tmp.*")) + sorted(band_dir.rglob(".tmp-*")):
        if p.is_file():
            p.unlink(missing_ok=True)
        elif p.is_dir():
            shutil.rmtree(p, ignore_errors=True)
        n += 1
    if n:
        log.info("%s: removed %d temporaries left by an interrupted run", band_dir, n)
    return n


def _contexts(step: Step, states: list[_BandState], *, dry_run: bool = False
              ) -> list[tuple[list[_BandState], BandContext | TargetContext]]:
    """The contexts ``step`` is planned on, each with the bands it stands for.

    A band step: each band that runs it. A target step: each target, for its bands that run it.
    """
    live = [st for st in states if not (st.error or st.missing) and step.name in st.ctx.steps]
    if step.scope != "target":
        return [([st], st.ctx) for st in live]
    by_target: dict[str, list[_BandState]] = {}
    for st in live:
        by_target.setdefault(st.ctx.target, []).append(st)
    return [(members, TargetContext(members[0].ctx.run, target, [m.ctx for m in members],
                                    set.union(*(m.ctx.overwrite for m in members)), dry_run))
            for target, members in by_target.items()]


def _run_step(step: Step, states: list[_BandState], executor: Executor, progress: bool) -> None:
    """Plan ``step`` on every context (band or target), run all its tasks together, record what succeeded."""
    plans: list[tuple[list[_BandState], Any, StepPlan]] = []
    for members, ctx in _contexts(step, states):
        try:
            plans.append((members, ctx, step.plan(ctx, members[0].upstream, members[0].outputs)
                          if step.scope != "target" else step.plan(ctx)))
        except (InputNotFoundError, NothingToDo) as err:
            log.warning("%s", err)
            for st in members:     # a band without input skips; a target step its bands need fails them
                if step.scope == "target":
                    st.error, st.status[step.name] = str(err), FAILED
                else:
                    st.missing, st.status[step.name] = True, NO_INPUT
        except StepFailedError as err:  # the band cannot run this step: it fails, the others go on
            for st in members:
                st.error, st.status[step.name] = str(err), FAILED
            log.error("%s failed in %s: %s", ctx.label, step.name, err)
    failed: dict[int, BaseException] = {}
    running = [(i, plan) for i, (_, _, plan) in enumerate(plans) if not plan.done]
    for n in range(max((len(plan.stages) for _, plan in running), default=0)):
        work = [(i, task, mem) for i, plan in running if i not in failed
                and n < len(plan.stages) for stage in (plan.stages[n],)
                for task, mem in zip(stage.tasks, _memory(stage), strict=True)]
        # equal tasks of several contexts run once
        keys = [(type(task).__module__, repr(task)) for _, task, _ in work]
        order = list(dict.fromkeys(keys))
        first = {k: keys.index(k) for k in order}
        results = executor.map(_run_task, [(work[first[k]][1],) for k in order],
                               desc=step.name, progress=progress, return_exceptions=True,
                               memory=[work[first[k]][2] for k in order])
        by_key = dict(zip(order, results, strict=True))
        for (i, *_), k in zip(work, keys, strict=True):
            if isinstance(by_key[k], BaseException):
                failed.setdefault(i, by_key[k])
    for i, (members, ctx, plan) in enumerate(plans):
        if i in failed:
            log.error("%s failed in %s: %s", ctx.label, step.name, failed[i])
        elif not plan.done:
            _finish(step, ctx, plan)
        for st in members:
            if i in failed:
                st.error, st.status[step.name] = str(failed[i]), FAILED
                continue
            st.status[step.name] = SKIPPED if plan.done else RAN
            if step.scope != "target":     # a target step makes no exposures: the chain passes it by
                st.upstream, st.outputs = plan.key, plan.outputs


def _memory(stage: Stage) -> list[float]:
    """Estimated peak bytes of each of a stage's tasks (0 where unknown)."""
    return stage.memory if len(stage.memory) == len(stage.tasks) else [0.0] * len(stage.tasks)


def _finish(step: Step, ctx: BandContext | TargetContext, plan: StepPlan) -> None:
    """Record a step whose tasks all succeeded, then write its diagnostics (which never fail it)."""
    StepRecord(ctx.folder, plan.step).finish(plan.key, plan.params, plan.outputs)
    try:
        step.diagnostics(ctx, plan)
    except Exception:  # diagnostics must never lose a finished step
        log.exception("%s: could not write %s diagnostics", ctx.label, step.name)


def _run_task(task: BandTask) -> Any:
    """The executor's worker function: run one task (tasks of different steps share one call)."""
    try:
        return task.run()
    except (StepFailedError, CRDSError):
        raise
    except SystemExit as err:  # CRDS's way of failing, should it escape the guard
        msg = f"task {type(task).__module__}.{type(task).__name__} exited: {err.code}"
        raise StepFailedError(msg) from None


class BandLock:
    """An exclusive lock on a band folder, so two runs never write the same products.

    Uses ``fcntl.flock``, which the OS releases when the process dies (even on ``kill -9``).
    """

    def __init__(self, band_dir: Path) -> None:
        self.path = layout.record_dir(band_dir) / "lock"
        self._fh = None

    def __enter__(self) -> BandLock:
        import fcntl

        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = self.path.open("a")  # "a": the lock file of a running run is left as it is
        try:
            fcntl.flock(self._fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._fh.close()
            msg = (f"{self.path.parent.parent}: another jwstgal run is processing this band "
                   "right now; wait for it to finish")
            raise StepFailedError(msg) from None
        return self

    def __exit__(self, *exc: object) -> None:
        import fcntl

        fcntl.flock(self._fh, fcntl.LOCK_UN)
        self._fh.close()
