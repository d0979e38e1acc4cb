"""Step ``stack_destripe``: multi-exposure stripe subtraction (after ``level_match``).

Every frame is compared with the average of the overlapping (already level-matched) other frames,
resampled onto its own pixels through the SCI WCS; the stripes of the difference are measured with
:func:`jwstgal.destripe_stack.stack_stripe_model` and removed, in a few passes whose references are
rebuilt each time (:func:`jwstgal.destripe_stack.stack_destripe_iter`). Memory is bounded by one
frame and its overlapping neighbours, whatever the number of exposures.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from astropy.io import fits
from pydantic import Field

from jwstgal import dq, layout
from jwstgal.bands import Band
from jwstgal.destripe import DestripeResult, stripe_residual
from jwstgal.destripe_frames import good_pixels
from jwstgal.destripe_stack import (
    StackParams,
    corrected_frame,
    fit_frame,
    rms_change,
    stack_destripe_iter,
)
from jwstgal.dq import bad_pixel_mask
from jwstgal.frame_maps import boxes_meet, coarse_map, coverage, resample_onto
from jwstgal.provenance import atomic_path, hash_params, stamp_header, write_text_atomic
from jwstgal.settings import StepSettings, added_field
from jwstgal.stack_frames import Frames, empty_frames, frame_weight, load_model, save_model
from jwstgal.steps.base import BandContext, BandTask, Stage, Step, StepPlan
from jwstgal.steps.destripe import DQ_CHOICES

log = logging.getLogger(__name__)

NAME = "stack_destripe"


class StackDestripeSettings(StepSettings):
    """The ``[stack_destripe]`` table (step ``stack_destripe``, after level matching).

    The fields of :class:`jwstgal.destripe_stack.StackParams` (a test holds them together) plus
    ``iterations``, the number of passes.
    """

    quadrants: bool = Field(True, description="Fit amplifier bands separately.")
    vertical: bool = Field(False, description="Also fit column structure.")
    min_mask_frac: float = Field(0.2, ge=0, le=1, description="Minimum unmasked fraction of a row.")
    sigma: float = Field(3.0, gt=0, description="Detection and clipping threshold.")
    dilate_size: int = Field(7, ge=1, le=256, description="Dilation of the residual-source mask.")
    max_iters: int = Field(10, ge=0, description="Clipping iterations.")
    min_overlap_frac: float = Field(0.5, gt=0, le=1, description="Coverage another frame needs to "
                                    "enter a frame's reference.")
    iterations: int = Field(3, ge=1, le=20, description="Passes (references rebuilt each time).")
    smooth_scale: int = Field(31, ge=0, description="Median-filter the row profiles over this many "
                              "rows (0 = off): small scales are the single-frame step's job.")
    dq_flags: list[DQ_CHOICES] = added_field(list(dq.DEFAULT_BAD), "DQ flags excluded.")
    combine: Literal["mean", "median"] = added_field("mean", "References: weighted mean or median of "
                                                     "the overlapping frames.")
    large_scale: bool = added_field(False, "Also a full-width row pass against the reference smoothed "
                                    "along columns (the original's do_large_scale; NIRCam long).")
    large_scale_factor: int = added_field(4, "That smoothing is the frame height over this.", ge=1)
    tolerance: float = added_field(0.0, "Stop once no model changes by more than this rms between "
                                   "passes (0: run every pass).", ge=0)
    weight: Literal["equal", "exptime", "ivm"] = added_field(
        "equal", "Frame weights in the mean: equal, exposure time, or inverse read-noise variance.")


def stack_destripe_files(files: list[Path], out_dir: Path, params: StackParams, *, iterations: int = 3,
                         config_hash: str = "", plot_dir: Path | None = None, weight: str = "equal"
                         ) -> list[Path]:
    """Multi-exposure stripe subtraction of one band's cal files into ``out_dir``.

    Memory is bounded by one frame and its overlapping neighbours, whatever the number of files:
    frames are read when needed (a few cached), pixel maps between overlapping frames are kept on
    a coarse grid and interpolated when used, models are kept as profiles, and each output is
    written as soon as its model is final.

    Parameters
    ----------
    files : list of pathlib.Path
        Level-matched cal files (read only).
    out_dir : pathlib.Path
        Destination (same file names).
    params : StackParams
        Settings.
    iterations : int
        Passes of :func:`jwstgal.destripe_stack.stack_destripe_iter`.
    config_hash : str
        Recorded in the headers.
    plot_dir : pathlib.Path, optional
        Where to draw per-file diagnostics.

    Returns
    -------
    list of pathlib.Path
        The written files.
    """
    load = Frames(files)
    n = len(files)
    empty = empty_frames(load)
    coarse: dict[tuple[int, int], tuple[np.ndarray, ...]] = {}
    overlaps = np.zeros((n, n), bool)
    for i in range(n):
        for j in neighbours(load, empty, i, params):
            coarse[(i, j)] = coarse_map(load.wcss[i], load.shapes[i], load.wcss[j])
            overlaps[i, j] = True

    def resample(j: int, i: int, img: np.ndarray) -> np.ndarray:
        return resample_onto(img, coarse[(i, j)], load.shapes[i])

    weights = [frame_weight(f, weight) for f in files]
    outputs = []
    for i, res in stack_destripe_iter(n, load, resample, params, n_amps=load.amps,
                                      iterations=iterations, overlaps=overlaps, weights=weights):
        outputs.append(write_output(files[i], *load(i), res, out_dir, int(overlaps[i].sum()), empty[i],
                                    {**params.as_dict(), "iterations": iterations, "weight": weight},
                                    config_hash, plot_dir))
    log.info("stack destriping: %d frames, %d overlapping pairs, %d passes", n, int(overlaps.sum()),
             iterations)
    return outputs


def write_output(f: Path, sci: np.ndarray, dq_arr: np.ndarray | None, res: DestripeResult, out_dir: Path,
                 n_ref: int, empty: bool, params: dict, config_hash: str, plot_dir: Path | None) -> Path:
    """Write a frame with its stack stripe model subtracted (and its panels)."""
    good = good_pixels(sci, dq_arr)
    out = out_dir / f.name
    with fits.open(f) as h:
        h["SCI"].data = np.where(good, sci - res.model, sci).astype(h["SCI"].data.dtype)
        rms = float(np.std(res.model[good])) if good.any() else 0.0
        h[0].header["STKSTRMS"] = (rms, "rms of the stack stripe model [BUNIT]")
        h[0].header["STKNREF"] = (n_ref, "overlapping frames resampled for its reference")
        for key, img, what in (("DSTRRES0", sci, "stripes before"),
                               ("DSTRRES", h["SCI"].data, "stripes left")):
            r = stripe_residual(img, res.mask | ~good)
            h[0].header[key] = (round(r, 3) if np.isfinite(r) else "n/a",
                                f"{what} [x noise], 1 = none")
        if empty:
            h[0].header["STKSKIP"] = ("no valid pixel", "left out of stack-based destriping")
        stamp_header(h[0].header, step=NAME, params=params, config_hash=config_hash)
        with atomic_path(out) as tmp:
            h.writeto(tmp)
    if plot_dir is not None:
        from jwstgal.plots import stripe_panels

        stripe_panels(sci, res.model, res.mask, good,
                      plot_dir / f"{f.stem}.png", f"{f.name}: stack-based, model rms {rms:.3g}")
    return out


def neighbours(load: Frames, empty: list[bool], i: int, p: StackParams) -> list[int]:
    """The frames covering enough of frame ``i`` to be resampled for its reference.

    Frames whose outlines cannot meet on the sky are skipped without mapping them; the others
    must cover more than :func:`min_cover` of the frame.
    """
    if empty[i]:
        return []
    return [j for j in range(len(load.files)) if j != i and not empty[j]
            and boxes_meet(load.boxes[i], load.boxes[j])
            and coverage(load.wcss[i], load.shapes[i], load.wcss[j], load.shapes[j]) > min_cover(p)]


def min_cover(p: StackParams) -> float:
    """Fraction of a frame another must cover (on the coarse map) to be resampled at all.

    The first pass drops references covering less than ``min_overlap_frac`` of the frame's valid
    pixels after resampling them; a frame whose coarse-map coverage is clearly below that (by a
    margin far above the coarse map's error) is not resampled in the first place.
    """
    return max(0.02, 0.8 * p.min_overlap_frac)


#: Folder (in the step's output folder) of the per-pass state of the per-frame tasks.
STATE = ".passes"


def _split(params: StackDestripeSettings | dict[str, Any]) -> tuple[StackParams, int, str]:
    p = params.model_dump(exclude={"override"}) if isinstance(params, StackDestripeSettings) else dict(params)
    iterations, weight = p.pop("iterations"), p.pop("weight", "equal")
    return StackParams(**p), int(iterations), weight


@dataclass(frozen=True)
class GraphTask(BandTask):
    """Which frames may overlap which, from their WCS and headers alone (before the passes).

    No pixel is read: a frame with no valid pixel, and the ``ivm`` weights, are found by the
    first pass, which reads each frame and its neighbours anyway (issue #29).
    """

    files: tuple[Path, ...]
    state: Path
    settings: StackDestripeSettings

    def run(self) -> list[str]:
        """Write ``graph.json`` in the state folder."""
        p, _, _ = _split(self.settings)
        load = Frames(list(self.files), keep=1)
        n, none = len(self.files), [False] * len(self.files)
        doc = {"files": [f.name for f in self.files], "amps": load.amps,
               "neighbours": [neighbours(load, none, i, p) for i in range(n)]}
        out = self.state / "graph.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(out, json.dumps(doc))
        return [str(out)]


@dataclass(frozen=True)
class ConvergeTask(BandTask):
    """The largest model change of pass ``it`` over the ``n`` frames, in one file (between passes).

    Each task of a later pass then reads this one file to know whether pass ``it`` converged,
    rather than every frame's record (O(N) reads per pass instead of O(N^2)).
    """

    state: Path
    it: int
    n: int

    def run(self) -> list[str]:
        """Write ``pass<it>/change.json``."""
        out = self.state / f"pass{self.it}" / "change.json"
        write_text_atomic(out, json.dumps({"change": _max_change(self.state, self.it, self.n)}))
        return [str(out)]


def _max_change(state: Path, it: int, n: int) -> float:
    return max((json.loads((state / f"pass{it}" / f"{k}.json").read_text())["change"] for k in range(n)),
               default=0.0)


def _pass_role(state: Path, it: int, iterations: int, tolerance: float, n: int) -> str:
    """``fit`` (an intermediate pass), ``last`` (fit and write) or ``done`` (an earlier pass was last)."""
    for q in range(it):
        if tolerance > 0 and q < iterations - 1:
            summary = state / f"pass{q}" / "change.json"      # written by converge_task
            change = (json.loads(summary.read_text())["change"] if summary.is_file()
                      else _max_change(state, q, n))
            if change < tolerance:            # converged after pass q: pass q + 1 is the last
                return "last" if q + 1 == it else "done"
    return "last" if it == iterations - 1 else "fit"


@dataclass(frozen=True)
class PassTask(BandTask):
    """Pass ``it`` of frame ``i``: its reference from its neighbours' previous models.

    Reads the overlap graph and the neighbours' models of the previous pass; writes this frame's
    model of this pass, and in the last pass the destriped frame (as
    :func:`stack_destripe_files` would, to the bit). The first pass also records whether the frame
    has a valid pixel, which neighbours do, and their weights: the only full-frame reads of the
    step are in its passes, each a frame and its neighbours (O(N) per pass).
    """

    files: tuple[Path, ...]
    i: int
    it: int
    state: Path
    settings: StackDestripeSettings
    out_dir: Path
    config_hash: str
    plot_dir: Path

    def run(self) -> list[str]:
        """Write this pass's model of the frame (and, in the last pass, the frame)."""
        return one_pass(list(self.files), self.i, self.it, self.state, self.settings, self.out_dir,
                        self.config_hash, self.plot_dir)


def one_pass(paths: list[Path], i: int, it: int, st: Path, params: StackDestripeSettings, out_dir: Path,
             config_hash: str, plot_dir: Path) -> list[str]:
    """The work of a :class:`PassTask`."""
    p, iterations, weight = _split(params)
    graph = json.loads((st / "graph.json").read_text())
    n = len(paths)
    role = _pass_role(st, it, iterations, p.tolerance, n)
    out = out_dir / paths[i].name
    me = st / f"pass{it}" / str(i)
    if role == "fit" and me.with_suffix(".json").is_file():    # a resumed run: this pass is done
        return []
    if role == "done":                        # an earlier pass was the last and wrote it
        return []
    if role == "last" and out.is_file():
        return [str(out)]
    prev = (lambda k: load_model(st / f"pass{it - 1}" / str(k))) if it > 0 else (lambda k: None)
    first = None if it == 0 else json.loads((st / "pass0" / f"{i}.json").read_text())
    neighbours = graph["neighbours"][i] if first is None else first["kept"]
    load = Frames([paths[i], *(paths[j] for j in neighbours)], keep=2)
    data, dq_arr = load(0)
    if first is None:                         # the first pass judges the frame and its neighbours
        first = {"empty": not good_pixels(data, dq_arr).any(), "n_ref": 0, "weights": {}}
        if first["empty"]:
            log.warning("%s: no valid pixel (all NaN, zero or DO_NOT_USE): left out of stack-based "
                        "destriping and copied unchanged", paths[i])
    weights = np.ones(n)
    for j, w in first["weights"].items():
        weights[int(j)] = w
    model_i = prev(i)

    def others() -> Iterator[tuple[int, np.ndarray]]:
        for k, j in enumerate(neighbours):
            frame = load(k + 1)
            if it == 0:                       # an empty neighbour is left out, as by the band at once
                if not good_pixels(*frame).any():
                    continue
                first["n_ref"] += 1
                weights[j] = first["weights"][str(j)] = frame_weight(paths[j], weight)
            yield j, resample_onto(corrected_frame(*frame, prev(j), p),
                                   coarse_map(load.wcss[0], load.shapes[0], load.wcss[k + 1]), load.shapes[0])

    model, mask, kept = (None, None, []) if first["empty"] or n < 2 else fit_frame(
        data, dq_arr, model_i, others(), p, weights, graph["amps"][i], prune=it == 0)
    if model is None:                         # nothing covers it: it keeps its previous model
        model = model_i
    change = rms_change(model_i, model, data.shape)
    save_model(me, model, kept if it == 0 else neighbours, change, first if it == 0 else None)
    if role != "last":
        return []
    res = DestripeResult(model.expand(data.shape) if model is not None else np.zeros(data.shape),
                         mask if mask is not None else bad_pixel_mask(data, dq_arr, None, p.dq_flags),
                         np.zeros(1))
    return [str(write_output(paths[i], data, dq_arr, res, out_dir, first["n_ref"], first["empty"],
                             {**p.as_dict(), "iterations": iterations, "weight": weight},
                             config_hash, plot_dir))]


class StackDestripe(Step):
    """Stack-based destriping."""

    name = NAME
    repeatable = True
    summary = ("multi-exposure stripe subtraction against the overlapping level-matched exposures, "
               "`[stack_destripe]`")
    settings = StackDestripeSettings
    stpipe = True

    def plan(self, ctx: BandContext, upstream: str, inputs: list[Path]) -> StepPlan:
        """The overlap graph, then one task per frame and pass (a pass waits for the previous one)."""
        inputs = ctx.science_cal(inputs, "stack-based destriping")
        params = self.resolved(ctx)
        key = hash_params([self.name, self.key_params(params), upstream, [p.name for p in inputs]])
        if (begun := ctx.begin(self.name, key, params)).done:
            return begun.done
        out_dir = begun.out_dir
        outputs = [out_dir / p.name for p in inputs]
        log.info("%s: stack-based destriping of %d exposures", ctx.label, len(inputs))
        files, state, qa = tuple(inputs), out_dir / STATE, ctx.qa_dir / self.name
        settings = StackDestripeSettings(**params)

        def passes(it: int) -> list[BandTask]:
            return [PassTask(files, i, it, state, settings, out_dir, ctx.run.config_hash, qa)
                    for i in range(len(files))]

        def after(it: int) -> list[Stage]:    # with a tolerance, each pass's largest change in one file
            if params["tolerance"] <= 0 or it >= params["iterations"] - 1:
                return []
            return [Stage([ConvergeTask(state, it, len(files))])]

        plan = StepPlan(self.name, key, params, outputs, passes(0))
        plan.stages = [Stage([GraphTask(files, state, settings)]), plan.main, *after(0),
                       *(s for it in range(1, params["iterations"]) for s in (Stage(passes(it)), *after(it)))]
        return plan

    def diagnostics(self, ctx: BandContext, plan: StepPlan) -> list[Path | None]:
        """Contact sheet of the corrected exposures."""
        from jwstgal.plots import contact_sheet

        return [contact_sheet(plan.outputs, ctx.qa_dir / f"{self.name}.png",
                              f"{ctx.label}: after stack-based destriping")]

    def figures(self, band_dir: Path, target: str, band: Band) -> list[tuple[Path, str]]:
        """Contact sheet, then the first three exposures' panels."""
        panels = sorted((layout.qa_dir(band_dir) / self.name).glob("*.png"))[:3]
        return [(layout.qa_dir(band_dir) / f"{self.name}.png", "after stack-based destriping"),
                *((p, f"stack-based destriping of {p.stem}: input, mask, stripe model, result")
                  for p in panels)]
