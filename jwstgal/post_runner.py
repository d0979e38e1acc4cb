"""The driver of the post-mosaic steps: contexts by scope, one plan format, tasks on the executor.

:func:`run_post_steps` runs registered post-mosaic steps (:data:`jwstgal.steps.POST_STEPS`) in
order: for each it makes the contexts its scope asks for (the run, each target, or each target
and band), plans them, and runs every task of a stage, of every context together, through the
executor configured in ``local.toml`` (in parallel on a process pool, a Dask cluster or Slurm
jobs). A task that fails fails alone: the others go on, the log names it, and the exit code is 1.
``--dry-run`` prints every context's plan in the band steps' format and writes nothing.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Sequence
from typing import Any

from jwstgal.bands import get_band
from jwstgal.config import RunConfig
from jwstgal.errors import ConfigError
from jwstgal.executor import Executor, open_executor
from jwstgal.reprocess import executor_spec
from jwstgal.steps import get_post_step
from jwstgal.steps.post import PostContext, PostStep, Task, run_task

log = logging.getLogger(__name__)


def contexts(step: PostStep, cfg: RunConfig, bands: Sequence[str] | None = None,
             targets: Sequence[str] | None = None, *, overwrite: bool = False,
             dry_run: bool = False) -> list[PostContext]:
    """The contexts of a step's scope: the run, each target, or each target and band."""
    chosen = list(bands or cfg.science.bands)
    names = list(targets or cfg.science.targets)
    common = {"run": cfg, "bands": chosen, "targets": names, "overwrite": overwrite, "dry_run": dry_run}
    if step.scope == "run":
        return [PostContext(**common)]
    if step.scope == "target":
        return [PostContext(target=t, **common) for t in names]
    return [PostContext(target=t, band=get_band(b), **common) for t in names for b in chosen]


def format_post_plan(step: PostStep, plans: list[tuple[PostContext, list[list[Task]]]], cfg: RunConfig
                     ) -> str:
    """The dry-run text of one step: per context, each task's action, reason and files in/out."""
    root = step.root(cfg)
    lines = [f"dry run: {step.name} ({step.scope} scope) under {root} (nothing is written)"]
    for ctx, stages in plans:
        tasks = [t for stage in stages for t in stage]
        lines.append(f"{ctx.label}: {step.name}" + ("" if tasks else ": nothing to do"))
        for t in tasks:
            lines.extend(t.lines(root))
    return "\n".join(lines) + "\n"


def _run_step(step: PostStep, plans: list[tuple[PostContext, list[list[Task]]]], ex: Executor,
              progress: bool) -> list[str]:
    """Run a planned step's tasks, stage by stage; returns the failures, in words."""
    results: dict[int, list[tuple[Task, Any]]] = {i: [] for i in range(len(plans))}
    for n in range(max((len(stages) for _, stages in plans), default=0)):
        todo = [(i, t) for i, (_, stages) in enumerate(plans) if n < len(stages) for t in stages[n]]
        make = [(i, t) for i, t in todo if t.action == "make"]
        done = ex.map(run_task, [(t,) for _, t in make], desc=step.name, progress=progress,
                      return_exceptions=True)
        got = {id(t): res for (_, t), res in zip(make, done, strict=True)}
        for i, t in todo:
            results[i].append((t, got.get(id(t))))
    failures = []
    for i, (ctx, _) in enumerate(plans):
        step.finish(ctx, results[i])
        for t, res in results[i]:
            if why := step.failed(t, res):
                log.error("%s: %s%s", t.label, "refused: " if t.action == "refused" else "", why)
                failures.append(f"{t.label}: {why}")
    return failures


def run_post_steps(cfg: RunConfig, names: Sequence[str], bands: Sequence[str] | None = None,
                   targets: Sequence[str] | None = None, *, overwrite: bool = False,
                   dry_run: bool = False, progress: bool = True, executor: Executor | None = None) -> int:
    """Run (or, with ``dry_run``, plan) post-mosaic steps in order; returns the exit code.

    ``executor``: an open executor to run on (the band steps' one, in a whole-chain run: its
    workers, with what they have imported, are reused); default, one opened for these steps.

    Raises
    ------
    ConfigError
        When a step's configuration cannot work (checked for every step before any work).
    """
    steps = [get_post_step(n) for n in names]
    problems = [p for s in steps for p in s.check(cfg, list(bands or cfg.science.bands))]
    if problems:
        raise ConfigError("\n".join(problems))
    if dry_run:
        for step in steps:
            ctxs = contexts(step, cfg, bands, targets, overwrite=overwrite, dry_run=True)
            sys.stdout.write(format_post_plan(step, [(c, step.plan(c)) for c in ctxs], cfg))
        return 0
    failures: list[str] = []
    opened = contextlib.nullcontext(executor) if executor is not None else open_executor(executor_spec(cfg))
    with opened as ex:
        for step in steps:
            ctxs = contexts(step, cfg, bands, targets, overwrite=overwrite)
            plans = [(c, step.plan(c)) for c in ctxs]
            made = sum(t.action == "make" for _, stages in plans for stage in stages for t in stage)
            failed = _run_step(step, plans, ex, progress)
            log.info("%s: %d tasks run, %d failed", step.name, made, len(failed))
            failures += failed
    if failures:
        log.error("%d tasks failed or were refused (the others were done):\n  %s", len(failures),
                  "\n  ".join(failures))
    return 1 if failures else 0
