"""What every step shares: the step protocol, the band context, plans and step records.

A step (one module in :mod:`jwstgal.steps`) declares

- ``name`` (its ``[pipeline.steps]`` key, also its folder, record, header and QA name),
- ``settings`` (its :class:`~jwstgal.settings.StepSettings` model, the ``[<name>]`` config table),
- :meth:`Step.plan` (inputs, outputs and hash key of one target/band, and the tasks to run),
- its task (a frozen :class:`~jwstgal.steps.plan.BandTask` dataclass: typed fields, and a
  ``run`` method that does the work in a worker of the executor),
- :meth:`Step.diagnostics` (PNGs written once the step is complete) and :meth:`Step.figures`
  (what the QA page shows).

A step is *complete* when its record says so with the same key (a hash of its parameters, its
inputs and the upstream step's key) and its outputs still exist; otherwise it is (re)run, reusing
per-exposure outputs already written under the same key, so an interrupted run resumes.

This module knows nothing of the driver or of the config package: a step reads the run through
:class:`RunView`, which :class:`jwstgal.config.RunConfig` satisfies.
"""

from __future__ import annotations

import copy
import hashlib
import logging
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol

from jwstgal import layout
from jwstgal.backgrounds import background_reason, instrument_of, is_background
from jwstgal.bands import Band
from jwstgal.errors import InputNotFoundError, StepFailedError
from jwstgal.provenance import hash_params
from jwstgal.settings import StepSettings
from jwstgal.stages import stage_parameters
from jwstgal.steps.plan import BandTask, Stage, StepPlan, StepRecord

log = logging.getLogger(__name__)

__all__ = ["BandContext", "BandTask", "RunView", "Stage", "Step", "StepPlan", "StepRecord", "TargetContext",
           "alignment_catalogue", "background_reason", "content_hash", "file_id", "instrument_of",
           "is_background"]


class RunView(Protocol):
    """What a step reads of a validated run (:class:`jwstgal.config.RunConfig` is one)."""

    science: Any
    raw_dir: Path
    reprocess_dir: Path
    alignment_dir: Path
    config_path: Path
    config_hash: str


def content_hash(p: Path) -> str | None:
    """SHA-256 of a small file's content (None if it does not exist)."""
    return hashlib.sha256(p.read_bytes()).hexdigest()[:16] if p.is_file() else None


def file_id(p: Path) -> list[Any]:
    """Name, size and modification time (whole seconds) of a file, for hash keys."""
    st = p.stat()
    return [p.name, st.st_size, int(st.st_mtime)]


def alignment_catalogue(run: RunView, target: str) -> Path:
    """The target's ``[alignment]`` catalogue in ``alignment_dir``.

    Raises
    ------
    StepFailedError
        If the file is missing (the band fails with this message; the others go on).
    """
    name = run.science.alignment[target]
    path = run.alignment_dir / name
    if not path.is_file():
        msg = (f"{run.config_path}: [alignment] {target} = {name!r}: no such file in "
               f"{run.alignment_dir} (set [local] alignment_dir, or fix the name)")
        raise StepFailedError(msg)
    return path


@dataclass
class BandContext:
    """One target/band of a run: its folder, its configured steps, and the helpers steps plan with.

    Attributes
    ----------
    run : RunView
        The validated run.
    target : str
        Target name.
    band : Band
        The band.
    steps : list of str
        The band's configured steps, in order.
    overwrite : set of str
        Steps whose earlier outputs are discarded.
    notes : list of str
        What planning found worth telling (e.g. which exposures were taken as backgrounds and
        why); the run summary and the QA page show them.
    """

    run: RunView
    target: str
    band: Band
    steps: list[str] = field(default_factory=list)
    overwrite: set[str] = field(default_factory=set)
    notes: list[str] = field(default_factory=list)
    dry_run: bool = False

    @classmethod
    def of(cls, run: RunView, target: str, band: Band, *, dry_run: bool = False) -> BandContext:
        """The context of a target/band with the steps and overwrites configured for its instrument.

        ``dry_run``: plans are made exactly as for a run, but :meth:`prepare` touches nothing.
        """
        steps = [s for s in getattr(run.science.pipeline.steps, band.instrument) if s != "all"]
        over = getattr(run.science.pipeline.overwrites, band.instrument)
        return cls(run, target, band, steps, set(steps) if "all" in over else set(over), dry_run=dry_run)

    @property
    def band_dir(self) -> Path:
        """``<reprocess_dir>/<target>/<BAND>``."""
        return layout.band_dir(self.run.reprocess_dir, self.target, self.band)

    @property
    def folder(self) -> Path:
        """The band folder: where the step records of the band scope live."""
        return self.band_dir

    @property
    def qa_dir(self) -> Path:
        """The band's diagnostics folder."""
        return layout.qa_dir(self.band_dir)

    @property
    def label(self) -> str:
        """``<target> <BAND>`` for messages."""
        return f"{self.target} {self.band.name}"

    def settings(self, step: str, scope: str = "band") -> dict[str, Any]:
        """A step table resolved for this target/band (``scope="target"``: target overrides only)."""
        table: StepSettings = self.run.science.step_table(step)
        return table.for_band(self.target, None if scope == "target" else self.band)

    def stage_params(self, stage: str) -> dict[str, Any]:
        """A ``lvN_parameters`` table resolved for this target/band (jwst ``call()`` arguments)."""
        return stage_parameters(getattr(self.run.science, stage), stage, self.target, self.band)

    def is_background(self, path: Path) -> bool:
        """Whether an exposure is a dedicated background field (:func:`is_background`)."""
        return is_background(path, self.run)

    def uses_backgrounds(self) -> bool:
        """Whether this band's dedicated background exposures enter its processing."""
        types = self.run.science.pipeline.bgr_observation_types
        return self.band.band_type in types or self.band.instrument in types

    def foreign(self, path: Path) -> str:
        """Why a file does not belong to this band's folder ('' if it does).

        It is not a regular file, unreadable, or its INSTRUME/FILTER/PUPIL are another band's or its
        DETECTOR another channel's (:func:`~jwstgal.bands.header_mismatch`).
        """
        from jwstgal.bands import header_mismatch
        from jwstgal.fits_checks import checked_header

        try:
            h = checked_header(path)
        except ValueError as err:
            return str(err)
        if str(h.get("INSTRUME", "")).lower() != self.band.instrument:
            return f"INSTRUME {h.get('INSTRUME')!r} is not {self.band.name}'s {self.band.instrument.upper()}"
        return header_mismatch(self.band, h)

    def band_files(self, step: str, pattern: str) -> list[Path]:
        """The files of a step's folder that belong to this band; others are reported, left out."""
        out = []
        for p in sorted((self.band_dir / layout.step_folder(step)).glob(pattern)):
            if why := self.foreign(p):
                log.error("%s: leaving out %s: %s", self.label, p, why)
            else:
                out.append(p)
        return out

    def science_cal(self, inputs: list[Path], what: str) -> list[Path]:
        """The upstream step's outputs, or the band's science ``cal`` files when it ran no step."""
        cal_dir = self.band_dir / layout.step_folder("lv2")
        inputs = inputs or [p for p in self.band_files("lv2", "*_cal.fits") if not self.is_background(p)]
        if not inputs:
            msg = f"{self.label}: {what} has no *_cal.fits in {cal_dir}"
            raise InputNotFoundError(msg)
        return inputs

    def rate_files(self, inputs: list[Path], what: str) -> list[Path]:
        """The upstream step's outputs, or every rate file of stage 1 (backgrounds included)."""
        inputs = inputs or self.band_files("lv1", "*_rate.fits")
        if not inputs:
            msg = f"{self.label}: {what} has no *_rate.fits in {self.band_dir / layout.step_folder('lv1')}"
            raise InputNotFoundError(msg)
        return inputs

    def stage3_mosaic(self, what: str) -> Path:
        """The band's stage-3 mosaic (``InputNotFoundError`` saying ``what`` needs it if absent)."""
        i2d = layout.stage3_mosaic(self.band_dir, self.target, self.band)
        if not i2d.is_file():
            msg = f"{self.label}: {what} needs the stage 3 mosaic {i2d}"
            raise InputNotFoundError(msg)
        return i2d

    def begin(self, step: str, key: str, params: dict[str, Any], *, clear: bool = True) -> Begun:
        """Open a step under ``key``: done already, or its folder ready (the one way to start a step).

        A step complete under ``key`` (and not to be overwritten) is done: :attr:`Begun.done` is
        its plan, with nothing to run. Otherwise stale temporaries are cleared, and same-key partial
        outputs kept (resume); outputs of another key are removed unless ``clear`` is False (a step
        whose task replaces its folder's content only on success, like stage 3). A dry run writes
        nothing and says what a run would find.
        """
        rec = StepRecord(self.band_dir, step)
        if step not in self.overwrite and rec.is_complete(key):
            log.info("%s: %s complete, skipping", self.label, step)
            return Begun(StepPlan(step, key, params, [self.band_dir / o for o in rec.read()["outputs"]]),
                         self.band_dir / layout.step_folder(step), True)
        out_dir = self.band_dir / layout.step_folder(step)
        if self.dry_run:                  # what a run would find, without writing anything
            return Begun(None, out_dir, rec.read().get("key") == key and step not in self.overwrite)
        reusable = rec.start(key, params) and step not in self.overwrite
        if clear and not reusable and out_dir.exists():
            shutil.rmtree(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        for tmp in out_dir.glob(".tmp-*"):  # left by a killed run
            shutil.rmtree(tmp, ignore_errors=True)
        return Begun(None, out_dir, reusable)


@dataclass(frozen=True)
class Begun:
    """What :meth:`BandContext.begin` found: the plan of a step already done, or where to work.

    Attributes
    ----------
    done : StepPlan or None
        The finished step's plan (return it from ``plan``), or None when there is work to plan.
    out_dir : pathlib.Path
        The step's folder.
    reuse : bool
        Whether outputs already in it were made under the same key (a resumed run keeps them).
    """

    done: StepPlan | None
    out_dir: Path
    reuse: bool


@dataclass
class TargetContext:
    """One target of a run, the context of a target-scope step (``scope = "target"``).

    Its record folder is the target's (``<target>/.jwstgal/``), beside the bands' own.

    Attributes
    ----------
    run : RunView
        The validated run.
    target : str
        Target name.
    bands : list of BandContext
        The target's bands in this run that run the step.
    overwrite : set of str
        Steps whose earlier outputs are discarded.
    """

    run: RunView
    target: str
    bands: list[BandContext] = field(default_factory=list)
    overwrite: set[str] = field(default_factory=set)
    dry_run: bool = False

    @property
    def folder(self) -> Path:
        """``<reprocess_dir>/<target>``: where the step's outputs and its record live."""
        return self.run.reprocess_dir / self.target

    @property
    def label(self) -> str:
        """The target, for messages."""
        return self.target

    def settings(self, step: str) -> dict[str, Any]:
        """A step table resolved for this target (target overrides only)."""
        return self.run.science.step_table(step).for_band(self.target, None)

    def begin(self, step: str, key: str, params: dict[str, Any]) -> Begun:
        """Open a target step under ``key``: done already (its record says so), or started."""
        rec = StepRecord(self.folder, step)
        if step not in self.overwrite and rec.is_complete(key):
            log.info("%s: %s complete, skipping", self.label, step)
            return Begun(StepPlan(step, key, params, [self.folder / o for o in rec.read()["outputs"]]),
                         self.folder, True)
        if self.dry_run:
            return Begun(None, self.folder, rec.read().get("key") == key)
        return Begun(None, self.folder, rec.start(key, params) and step not in self.overwrite)


class Step:
    """Base of a pipeline step; subclasses set the class attributes and implement :meth:`plan`.

    Attributes
    ----------
    name : str
        The ``[pipeline.steps]`` key.
    summary : str
        One line for the step table of docs/steps.md and the QA page.
    settings : type of StepSettings or None
        The ``[<name>]`` table's model (None: the step has no table of its own).
    default : bool
        Run when a config names no steps (the plain STScI pipeline).
    repeatable : bool
        May run again as ``<name>_<n>`` (:meth:`repeat`): a step that turns exposures into
        exposures, whose code names its folder, record and figures by ``self.name``.
    stpipe : bool
        Also a ``jwst.stpipe`` step (``strun <name>``): :mod:`jwstgal.stpipe_steps` holds its class,
        ``<Name>Step``, whose alias, settings model and parameter spec come from this entry.
    scope : str
        ``band`` (planned per target and band on a :class:`BandContext`, records in the band
        folder) or ``target`` (planned once per target on a :class:`TargetContext`, records in
        the target folder; it makes no exposures, so the bands' chain of inputs passes it by).
    needs : tuple of str
        Target steps this step reads the outputs of: they run for every band that runs this
        one, configured or not (``wcs_adjust`` needs ``wcs_solve``).
    """

    name: str
    summary: str
    settings: ClassVar[type[StepSettings] | None] = None
    default: ClassVar[bool] = False
    repeatable: ClassVar[bool] = False
    stpipe: ClassVar[bool] = False
    scope: ClassVar[str] = "band"
    needs: ClassVar[tuple[str, ...]] = ()
    instruments: ClassVar[tuple[str, ...]] = ("nircam", "miri")

    @property
    def base(self) -> str:
        """The registered step this one is (its own name, or the step it repeats)."""
        return type(self).name

    def repeat(self, name: str) -> Step:
        """The same step again as ``name`` (``destripe_2``): own folder, record, figures and table."""
        clone = copy.copy(self)
        clone.name = name
        clone.summary = f"`{self.name}` again, `[{name}]` (its settings default to `[{self.name}]`'s)"
        return clone

    def plan(self, ctx: BandContext, upstream: str, inputs: list[Path]) -> StepPlan:
        """Plan this step for one target/band from the upstream key and outputs.

        Raises
        ------
        InputNotFoundError
            If the step has no input.
        """
        raise NotImplementedError

    def resolved(self, ctx: BandContext) -> dict[str, Any]:
        """The step's settings for the context's target/band (``{}`` for a step without a table)."""
        return ctx.settings(self.name, self.settings.scope) if self.settings else {}

    def key_params(self, params: dict[str, Any]) -> dict[str, Any]:
        """The resolved settings as they enter the hash key."""
        return self.settings.key_params(params) if self.settings else params

    def plan_per_exposure(self, ctx: BandContext, upstream: str, inputs: list[Path], what: str,
                          make_task: Callable[[Path, Path, dict[str, Any]], BandTask]) -> StepPlan:
        """The plan of a step that turns each science exposure into a copy of the same name.

        The key hashes the settings, the upstream key and the input names; one task per exposure
        (``make_task(src, dst, params)``), those already written under the same key reused.
        """
        inputs = ctx.science_cal(inputs, what)
        params = self.resolved(ctx)
        key = hash_params([self.name, self.key_params(params), upstream, [p.name for p in inputs]])
        if (begun := ctx.begin(self.name, key, params)).done:
            return begun.done
        out_dir, reuse = begun.out_dir, begun.reuse
        outputs = [out_dir / p.name for p in inputs]
        todo = [(p, o) for p, o in zip(inputs, outputs, strict=True) if not (reuse and o.is_file())]
        log.info("%s: %s on %d exposures (%d reused)", ctx.label, what, len(todo), len(inputs) - len(todo))
        return StepPlan(self.name, key, params, outputs, [make_task(p, o, params) for p, o in todo])

    def diagnostics(self, ctx: BandContext, plan: StepPlan) -> list[Path | None]:
        """Write the PNGs of a completed step (default: none)."""
        return []

    def figures(self, band_dir: Path, target: str, band: Band) -> list[tuple[Path, str]]:
        """Figures the QA page shows for this step, with captions (those that exist are shown)."""
        return []

    def notes(self, band_dir: Path, target: str, band: Band) -> list[str]:
        """Sentences (plain text) the QA page shows for this step."""
        return []

    def qa_summary(self, band_dir: Path, target: str, band: Band) -> dict[str, str]:
        """Columns (name -> short text) this step adds to the QA page's summary table."""
        return {}
