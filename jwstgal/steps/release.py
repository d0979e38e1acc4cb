"""Step ``release``: the flat, documented, checksummed product set of a run.

Run scope, a task per released file (slimmed mosaics with coverage maps, anchored mosaics,
catalogues with sky positions through the released WCS, segmentation maps, quicklooks, every rung
of the ladder, optionally the crf exposures; see :mod:`jwstgal.release`), in parallel on the
executor; the catalogues go in a second stage, after the mosaics whose WCS they are put on. Then
``run_config.json``, ``MANIFEST.ecsv``, ``SHA256SUMS`` and a README generated from what is there.
A released file newer than its source is kept. Working and raw data are never modified.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from jwstgal.settings import Strict
from jwstgal.steps.post import PostContext, PostRun, PostStep, Task

log = logging.getLogger(__name__)


class CompareTolerances(Strict):
    """``[release.compare_tolerances]``: largest release-to-release changes that are not flagged."""

    flux_ratio: float = Field(0.02, gt=0, description="Largest |median flux ratio - 1|.")
    shift_mas: float = Field(10.0, gt=0, description="Largest sky shift (mas).")
    background: float = Field(0.01, gt=0, description="Largest background change (MJy/sr).")
    coverage: float = Field(0.05, gt=0, description="Largest change of the covered fraction.")


class ReleaseConfig(Strict):
    """The ``[release]`` table."""

    remove_bloat: bool = Field(True, description="Drop VAR_* and CON extensions from released "
                               "copies (coverage is released as its own map).")
    include_convolved: bool = Field(True, description="Release every rung of the resolution ladder.")
    include_segm: bool = Field(True, description="Release stage 3's segmentation maps.")
    include_crf: bool = Field(False, description="Release the per-exposure crf files (with the "
                              "absolute alignment pushed back into their WCS).")
    include_alignment: bool = Field(True, description="Release each band's absolute-alignment table "
                                    "(matched stars, residuals) and its astrometric catalogue.")
    include_fields: bool = Field(True, description="Release the per-field mosaics (field_mosaics).")
    include_backgrounds: bool = Field(True, description="Release the dedicated background fields' "
                                      "mosaics (bgr_mosaics).")
    include_qa: bool = Field(True, description="Release each band's QA figures (quicklooks, "
                             "alignment residuals, destriping and level-matching plots).")
    naming: Literal["suite", "hlsp"] = Field(
        "suite", description="File names: 'suite' (<target>_<instrument>_lv3_<band>_...) or 'hlsp' "
        "(MAST's hlsp_<project>_jwst_<instrument>_<target>_<band>_<version>_..., lower case).")
    hlsp_project: str = Field("", description="The project's short name in HLSP file names "
                              "(lower-case letters, digits and '-'), needed with naming = 'hlsp'.")
    overwrite: bool = Field(False, description="Replace files already in the release.")
    compare_with: str = Field("", description="A previous release folder to compare the new one "
                              "with after prepare_release.py (exit code 1 beyond the tolerances).")
    compare_tolerances: CompareTolerances = Field(default_factory=lambda: CompareTolerances(),
                                                  description="Largest changes not flagged.")

    @field_validator("hlsp_project")
    @classmethod
    def _project(cls, value: str) -> str:
        if value and not re.fullmatch(r"[a-z0-9][a-z0-9-]{0,31}", value):
            msg = (f"hlsp_project {value!r}: lower-case letters, digits and '-' only (at most 32, "
                   "e.g. 'phangs-jwst')")
            raise ValueError(msg)
        return value

    @model_validator(mode="after")
    def _hlsp_needs_a_project(self) -> ReleaseConfig:
        if self.naming == "hlsp" and not self.hlsp_project:
            msg = "naming = 'hlsp' needs hlsp_project (e.g. 'phangs-jwst')"
            raise ValueError(msg)
        return self

    def options(self) -> dict[str, Any]:
        """The keyword arguments of :func:`jwstgal.release.build_release` this table sets."""
        return self.model_dump(exclude={"compare_with", "compare_tolerances"})


@dataclass(frozen=True, kw_only=True)
class ReleaseTask(Task):
    """One file of the release."""

    item: Any                                 # jwstgal.release's item: source, destination, kind
    options: dict[str, Any]
    config_hash: str

    def run(self) -> list[Any]:
        """Release the file; returns the released files it stands for."""
        from jwstgal.release import make_item

        return make_item(self.item, self.options, self.config_hash)


class Release(PostStep):
    """Step ``release`` (``prepare_release.py``)."""

    name = "release"
    scope = "run"
    summary = ("the release: a task per file (catalogues after their mosaics), then the manifest, "
               "checksums and README, `[release]`")

    def root(self, run: PostRun) -> Path:
        """Released files are shown relative to the working folder."""
        return run.working_dir

    def plan(self, ctx: PostContext) -> list[list[Task]]:
        """Every file of the selected targets and bands; ``make`` when due, else ``skip``."""
        from jwstgal.release import is_due, release_items, release_options

        run = ctx.run
        opts = release_options({**run.science.release.options(),
                                "overwrite": run.science.release.overwrite or ctx.overwrite})
        items = release_items(run.reprocess_dir, run.release_dir, ctx.targets, ctx.bands, opts)
        files: list[Task] = []
        catalogues: list[Task] = []            # put on the released mosaic's WCS: after it
        for item in items:
            due = is_due(item, opts["overwrite"])
            (catalogues if item.how == "catalogue" else files).append(ReleaseTask(
                label=f"{item.target} {item.band or '-'} {item.kind}".replace("  ", " "),
                inputs=(item.src,), outputs=(item.dst,), action="make" if due else "skip",
                reason="new or changed" if due else "up to date", item=item, options=opts,
                config_hash=run.config_hash))
        return [files, catalogues]

    def finish(self, ctx: PostContext, results: list[tuple[Task, Any]]) -> None:
        """Write run_config.json and the manifest; raise when a write failed (the disk is full).

        Raises
        ------
        ReductionError
            Naming the release, the file and how many files were released.
        """
        from jwstgal.errors import ReductionError
        from jwstgal.release import finish_release, has_mosaic, make_item

        run = ctx.run
        if not has_mosaic(run.reprocess_dir, run.release_dir, ctx.targets, ctx.bands):
            msg = f"nothing to release under {run.reprocess_dir}"
            raise ReductionError(msg)
        files: list[Any] = []
        error = None
        for task, res in results:
            if isinstance(res, OSError):
                error = error or res
            elif isinstance(res, BaseException):
                continue
            elif task.action == "skip":            # kept: what it stands for, nothing written
                files += make_item(task.item, task.options, task.config_hash)
            else:
                files += res
        files = finish_release(run.release_dir, files, run.released_config(), error)
        log.info("released %d files into %s", len(files), run.release_dir)

    def failed(self, task: Task, result: Any) -> str:
        """A file fails when its task raised."""
        return f"{type(result).__name__}: {result}" if isinstance(result, BaseException) else ""
