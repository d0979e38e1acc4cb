"""Step ``compare``: the new release against the previous one (``[release] compare_with``).

Run scope, one task: flux ratio, sky shift, background and coverage of every mosaic in both
releases (:mod:`jwstgal.compare`), written as ``comparison.ecsv``, one figure per mosaic and a page
beside the new release. A mosaic changed beyond ``[release.compare_tolerances]`` (or in one
release only) fails the task, so that the exit code alerts cron. Nothing to do when
``compare_with`` is empty.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jwstgal.steps.post import PostContext, PostRun, PostStep, Task

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class CompareTask(Task):
    """The comparison of two release folders."""

    old: Path
    new: Path
    tolerances: dict[str, float]

    def run(self) -> int:
        """Compare and write the results; returns how many mosaics are beyond the tolerances."""
        from jwstgal.compare import Tolerances, run_comparison

        return run_comparison(self.old, self.new, None, Tolerances(**self.tolerances))


class Compare(PostStep):
    """Step ``compare`` (run by ``prepare_release.py`` when ``[release] compare_with`` is set)."""

    name = "compare"
    scope = "run"
    summary = ("the new release compared with `[release] compare_with` (flux, shift, background, "
               "coverage), `[release.compare_tolerances]`")

    def root(self, run: PostRun) -> Path:
        """Releases are shown relative to the working folder."""
        return run.working_dir

    def plan(self, ctx: PostContext) -> list[list[Task]]:
        """One task when a previous release is configured, else none."""
        rel = ctx.run.science.release
        if not rel.compare_with:
            return []
        old = Path(rel.compare_with)
        old = old if old.is_absolute() else (ctx.run.config_path.parent / old).resolve()
        new = ctx.run.release_dir
        return [[CompareTask(label=f"compare {old.name} -> {new.name}", inputs=(old, new),
                             outputs=(new.parent / f"comparison_{old.name}_to_{new.name}",),
                             reason=f"against {old}", old=old, new=new,
                             tolerances=rel.compare_tolerances.model_dump())]]

    def failed(self, task: Task, result: Any) -> str:
        """Beyond the tolerances (or not comparable) is a failure."""
        if isinstance(result, BaseException):
            return f"{type(result).__name__}: {result}"
        return "mosaics changed beyond the tolerances (see the comparison)" if result else ""
