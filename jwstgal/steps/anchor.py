"""Step ``anchor``: the absolute background of every band, anchored to external maps and chained.

Target scope, a task per instrument (its reference band fitted against the first usable external
map, every other band against the reference; see :mod:`jwstgal.anchor_products`), the
instruments in parallel on the executor. Once a target's tasks ran, its table
``<target>/anchor/<target>_anchor.ecsv`` lists every band (anchored or why not). An instrument
whose mosaics, maps and settings are those of the table's last run keeps its rows.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from jwstgal import layout
from jwstgal.bands import get_band
from jwstgal.settings import Strict, check_band, check_path_component
from jwstgal.steps.post import PostContext, PostRun, PostStep, Task

log = logging.getLogger(__name__)


class ExternalMap(Strict):
    """One external map that can anchor an instrument: ``<anchor_ref_dir>/<target>_<band>.fits``."""

    band: str = Field(description="Its name in the file name, e.g. 'irac1', 'wise3'.")
    psf: str = Field(description="Its resolution as a PSF name, e.g. 'gauss4' (Gaussian FWHM 4\").")
    bands: list[str] = Field(
        default_factory=list, description="The bands this map anchors directly, because its "
        "wavelength covers theirs, e.g. ['F2100W'] for MIPS 24 um; the bands no map lists are "
        "chained to the reference band. Empty: the instrument's reference band.")

    @field_validator("bands")
    @classmethod
    def _bands(cls, bands: list[str]) -> list[str]:
        return [get_band(check_band(b)).name for b in bands]

    @field_validator("band")
    @classmethod
    def _band(cls, band: str) -> str:
        return check_path_component(band, "[anchor] external map band")

    @field_validator("psf")
    @classmethod
    def _psf(cls, psf: str) -> str:
        from jwstgal.psfs import check_psf_name

        return check_psf_name(psf)


Instrument = Literal["nircam", "miri"]


class AnchorConfig(Strict):
    """The ``[anchor]`` table: the absolute background of every band (anchor_data.py).

    Per instrument, the reference band is fitted against the first external map found (in the
    order given); every other band is fitted against the reference band at ``internal_psf``.
    """

    reference: dict[Instrument, str] = Field(
        default_factory=dict, description="Reference band per instrument, e.g. "
        "{nircam = 'F300M', miri = 'F770W'}; an instrument without one is not anchored.")
    external: dict[Instrument, list[ExternalMap]] = Field(
        default_factory=dict, description="External maps per instrument, in order of preference, "
        "e.g. {miri = [{band = 'irac4', psf = 'gauss4'}, {band = 'wise3', psf = 'gauss15'}]}.")
    internal_psf: dict[Instrument, str] = Field(
        default_factory=dict, description="Common resolution of the internal fits per instrument "
        "(a band or gauss<FWHM>), e.g. {nircam = 'F300M', miri = 'F2100W'}.")
    fit_range: tuple[float, float] = Field((1.0, 95.0), description="Percentiles of the reference "
                                           "intensity spanned by the bins.")
    n_bins: int = Field(20, ge=3, le=200, description="Bins of the reference intensity.")
    min_per_bin: int = Field(10, ge=1, description="Least pixels for a bin to be used.")
    clip_sigma: float = Field(3.0, gt=0, description="Bins further from the line (in errors) are "
                              "dropped and the line refitted.")
    slope_range: tuple[float, float] = Field(
        (0.2, 5.0), description="Plausible slopes of the reference band against an external map; a "
        "fit outside (a map in other units, a wrong map) is not used and the next map is tried.")
    colour_term: bool = Field(
        False, description="Fit a line and a colour term (a quadratic) instead of a line. On "
        "simulated band pairs of changing colour it is no more accurate on average "
        "(tests/test_anchor_coverage.py); it may help where a band's colour changes smoothly with "
        "brightness.")
    regions: int = Field(2, ge=1, le=5, description="The field is cut into regions x regions parts, "
                         "each fitted alone; the spread of their offsets is the systematic error "
                         "(1: none is measured).")

    @field_validator("reference")
    @classmethod
    def _reference(cls, ref: dict[str, str]) -> dict[str, str]:
        out = {}
        for inst, band in ref.items():
            b = get_band(check_band(band))
            if b.instrument != inst:
                msg = f"reference {band!r} is a {b.instrument.upper()} band, not a {inst.upper()} one"
                raise ValueError(msg)
            out[inst] = b.name
        return out

    @field_validator("internal_psf")
    @classmethod
    def _internal(cls, psfs: dict[str, str]) -> dict[str, str]:
        from jwstgal.psfs import check_psf_name

        return {k: check_psf_name(v) for k, v in psfs.items()}

    @model_validator(mode="after")
    def _complete(self) -> AnchorConfig:
        for inst, ref in self.reference.items():
            if not self.external.get(inst):
                msg = f"[anchor] reference of {inst} is set but external.{inst} lists no map"
                raise ValueError(msg)
            if not any(not m.bands or ref in m.bands for m in self.external[inst]):
                msg = (f"[anchor] no map of external.{inst} anchors the reference {ref}: give one "
                       f"map no 'bands' (or list {ref} in its bands)")
                raise ValueError(msg)
        for inst, maps in self.external.items():
            for m in maps:
                if other := [b for b in m.bands if get_band(b).instrument != inst]:
                    msg = (f"[anchor] external.{inst} map {m.band!r} lists {', '.join(other)}, not "
                           f"{inst.upper()} bands")
                    raise ValueError(msg)
        if self.fit_range[0] >= self.fit_range[1] or not 0 <= self.fit_range[0] < self.fit_range[1] <= 100:
            msg = f"[anchor] fit_range must be two increasing percentiles in 0-100, got {self.fit_range}"
            raise ValueError(msg)
        if not 0 < self.slope_range[0] < self.slope_range[1] < float("inf"):
            msg = f"[anchor] slope_range must be two increasing positive slopes, got {self.slope_range}"
            raise ValueError(msg)
        return self

    def key_dump(self) -> dict[str, Any]:
        """The settings that enter anchoring's input key.

        ``slope_range`` is left out at its default, so anchoring done before it existed stays done.
        ``colour_term`` and ``regions`` are always in: anchoring made before the systematic errors
        existed is remade.
        """
        return self.model_dump(exclude={"slope_range"} if self.slope_range == (0.2, 5.0) else None)

    @property
    def psfs(self) -> list[str]:
        """Every resolution anchoring convolves to."""
        out = [m.psf for maps in self.external.values() for m in maps]
        return out + list(self.internal_psf.values())


@dataclass(frozen=True)
class AnchorScience:
    """The tables of the science configuration anchoring reads (plain, picklable models)."""

    anchor: AnchorConfig
    convolve: Any
    pipeline: Any


@dataclass(frozen=True)
class AnchorRunView:
    """What an anchoring task reads of the run: settings and folders, nothing else.

    The validated run holds models built at import time from the step registry, which do not
    pickle: a task sent to a worker process carries this instead.
    """

    science: AnchorScience
    reprocess_dir: Path
    psf_dir: Path
    anchor_ref_dir: Path | None
    config_hash: str

    @classmethod
    def of(cls, run: Any) -> AnchorRunView:
        """The view of a validated run."""
        sci = run.science
        return cls(AnchorScience(sci.anchor, sci.convolve, sci.pipeline), run.reprocess_dir, run.psf_dir,
                   run.anchor_ref_dir, run.config_hash)


@dataclass(frozen=True, kw_only=True)
class AnchorTask(Task):
    """One instrument of one target: refitted (``make``) or kept (``skip``, with its rows)."""

    cfg: AnchorRunView
    target: str
    instrument: str
    key: str
    kept: tuple[Any, ...] = ()

    def run(self) -> list[Any]:
        """Fit the instrument's bands and write their anchored mosaics; returns the table rows."""
        from jwstgal.anchor_products import refit_instrument

        return refit_instrument(self.cfg, self.target, self.instrument)


def write_truth(run: Any, target: str, rows: list[Any]) -> Path:
    """A simulated target's anchored bands scored against the simulation's truth (issue #26 item 3).

    Each band's zero-point error, against its quoted error, its sky and its pixel noise at 4",
    with the targets' verdict (:class:`jwstgal.simulate.score.AnchorTruth`), for the QA page.
    Written by the driver once the target's tasks ran (a few seconds a band).
    """
    from jwstgal.provenance import write_text_atomic
    from jwstgal.simulate.score import anchoring_truth

    sim = run.science.simulation
    bands = {*run.science.pipeline.nircam_bands, *run.science.pipeline.miri_bands}
    scores = {}
    for r in rows:
        if r.status != "anchored":
            continue
        anchored = layout.anchored_mosaic(layout.band_dir(run.reprocess_dir, target, r.band), target,
                                          get_band(r.band))
        psf = None
        if sim.psf == "kernels":              # the sky as the simulator drew it, through the optics
            from jwstgal.kernel_products import band_psf

            psf = band_psf(r.band, run.science.kernels, run.psf_dir, run.psf_data_dir, optics=True)
        try:
            truth = anchoring_truth(anchored, r.band, r.reference, r.reference in bands, sim.ra, sim.dec,
                                    sim.seed, psf=psf)
        except (OSError, ValueError, KeyError) as err:    # a QA record: it never stops the step
            log.warning("%s %s: not scored against the simulation's truth (%s)", target, r.band, err)
            scores[r.band] = {"note": f"not scored: {err}"}
            continue
        scores[r.band] = truth.as_dict()
        log.info("%s %s against the simulation's truth: %+.4f MJy/sr (%.1f quoted sigma, %.0f %% of "
                 "the sky, %.1fx the pixel noise at 4\"): %s", target, r.band, truth.error, truth.sigmas,
                 100 * truth.error / truth.sky, abs(truth.error) / truth.noise,
                 "within the targets" if truth.met else "outside the targets")
    out = layout.anchor_truth(run.reprocess_dir, target)
    write_text_atomic(out, json.dumps(scores, indent=1))
    return out


class Anchor(PostStep):
    """Step ``anchor`` (``anchor_data.py``)."""

    name = "anchor"
    scope = "target"
    summary = ("every band's absolute background anchored to external maps (reference band) and "
               "to the reference (the others), a task per instrument, `[anchor]`")

    def check(self, run: PostRun, bands: list[str]) -> list[str]:
        """Nothing to anchor is a configuration error."""
        if not run.science.anchor.reference:
            return [f"{run.config_path}: [anchor] reference is empty: no instrument to anchor (e.g. "
                    "reference = {miri = 'F770W'} with external.miri = [{band = 'irac4', psf = "
                    "'gauss4'}])"]
        return []

    def plan(self, ctx: PostContext) -> list[list[Task]]:
        """A task per instrument with an ``[anchor] reference`` band."""
        from jwstgal.anchor_products import instrument_plans

        plans = instrument_plans(ctx.run, ctx.target, ctx.overwrite)
        view = AnchorRunView.of(ctx.run)
        for p in plans:
            if p.kept is not None and not ctx.dry_run:
                log.info("%s %s: anchoring up to date", ctx.target, p.instrument.upper())
        return [[AnchorTask(label=f"{ctx.target} {p.instrument.upper()}", inputs=p.inputs,
                            action="skip" if p.kept is not None else "make", reason=p.what,
                            cfg=view, target=ctx.target, instrument=p.instrument, key=p.key,
                            kept=p.kept or ())
                 for p in plans]]

    def finish(self, ctx: PostContext, results: list[tuple[Task, Any]]) -> None:
        """Write the target's table: every instrument's rows, and the keys of those that ran."""
        from jwstgal.anchor_products import write_anchor_table

        rows: list[Any] = []
        keys: dict[str, str] = {}
        for task, res in results:
            if task.action == "skip":
                rows += list(task.kept)
                keys[task.instrument] = task.key
            elif not isinstance(res, BaseException) and res is not None:
                rows += res
                keys[task.instrument] = task.key
        if results:
            write_anchor_table(ctx.run, ctx.target, rows, keys)
            if ctx.run.science.simulation is not None:
                write_truth(ctx.run, ctx.target, rows)

    def failed(self, task: Task, result: Any) -> str:
        """A task fails when it raised or left a band un-anchored."""
        if isinstance(result, BaseException):
            return f"anchoring failed: {type(result).__name__}: {result}"
        rows = task.kept if task.action == "skip" else (result or [])
        left = [f"{r.band}: {r.status}" for r in rows if r.status != "anchored"]
        return "; ".join(left)
