"""Step ``stack_destripe``: multi-exposure stripe subtraction (after ``level_match``).

Every frame is compared with the average of the overlapping (already level-matched) other frames,
resampled onto its own pixels through the SCI WCS; the stripes of the difference are measured with
:func:`jwstgal.destripe_stack.stack_stripe_model` and removed, in a few passes whose references are
rebuilt each time (:func:`jwstgal.destripe_stack.stack_destripe_iter`). Memory is bounded by one
frame and its overlapping neighbours, whatever the number of exposures.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Literal

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS
from pydantic import Field
from scipy.interpolate import RegularGridInterpolator
from scipy.ndimage import map_coordinates

from jwstgal import dq
from jwstgal.bands import Band
from jwstgal.destripe_stack import StackParams, stack_destripe_iter
from jwstgal.provenance import atomic_path, hash_params, stamp_header
from jwstgal.settings import StepSettings, added_field
from jwstgal.steps.base import BandContext, Step, StepPlan
from jwstgal.steps.destripe import DQ_CHOICES, frame_layout, good_pixels

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
    dilate_size: int = Field(7, ge=1, description="Dilation of the residual-source mask.")
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


def _coarse_map(wcs_from: WCS, shape_from: tuple[int, int], wcs_to: WCS, step: int = 16
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Pixel coordinates in ``wcs_to`` of a coarse grid of a ``shape_from`` frame's pixels.

    Returns the grid's rows and columns and the target x and y there; distortions are smooth on
    16-pixel scales, so :func:`_pixel_map` interpolates the full map from this.
    """
    ny, nx = shape_from
    gy = np.unique(np.r_[np.arange(0, ny, step), ny - 1]).astype(float)
    gx = np.unique(np.r_[np.arange(0, nx, step), nx - 1]).astype(float)
    yy, xx = np.meshgrid(gy, gx, indexing="ij")
    x2, y2 = wcs_to.world_to_pixel_values(*wcs_from.pixel_to_world_values(xx, yy))
    return gy, gx, np.asarray(x2), np.asarray(y2)


def _pixel_map(coarse: tuple[np.ndarray, ...], shape_from: tuple[int, int]
               ) -> tuple[np.ndarray, np.ndarray]:
    """Full-resolution pixel map (y, x in the other frame) of every pixel, from a coarse map."""
    gy, gx, x2, y2 = coarse
    ny, nx = shape_from
    py, px = np.meshgrid(np.arange(ny, dtype=float), np.arange(nx, dtype=float), indexing="ij")
    pts = np.column_stack([py.ravel(), px.ravel()])
    ox = RegularGridInterpolator((gy, gx), x2)(pts).reshape(shape_from)
    oy = RegularGridInterpolator((gy, gx), y2)(pts).reshape(shape_from)
    return oy, ox


def _inside(ox: np.ndarray, oy: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    ny, nx = shape
    return (ox > -0.5) & (oy > -0.5) & (ox < nx - 0.5) & (oy < ny - 0.5)


class _Frames:
    """Frames of a band read on demand, a few kept (memory does not grow with their number)."""

    def __init__(self, files: list[Path], keep: int = 4) -> None:
        self.files = files
        self.keep = keep
        self._cache: dict[int, tuple[np.ndarray, np.ndarray | None]] = {}
        self.shapes, self.wcss, self.amps = [], [], []
        for f in files:
            with fits.open(f) as h:
                shape = h["SCI"].data.shape
                self.shapes.append(shape)
                self.wcss.append(WCS(h["SCI"].header))
                self.amps.append(frame_layout(h[0].header, shape)[1])

    def __call__(self, i: int) -> tuple[np.ndarray, np.ndarray | None]:
        if i not in self._cache:
            if len(self._cache) >= self.keep:
                self._cache.pop(next(iter(self._cache)))
            with fits.open(self.files[i], memmap=False) as h:
                self._cache[i] = (np.array(h["SCI"].data, float),
                                  np.array(h["DQ"].data) if "DQ" in h else None)
        return self._cache[i]


def frame_weight(path: Path, how: str) -> float:
    """A frame's weight in the others' references: 1, its exposure time, or 1 / its read-noise variance.

    ``ivm`` uses the median VAR_RNOISE of the good pixels (ERR squared when there is no
    VAR_RNOISE), one number per frame.
    """
    if how == "equal":
        return 1.0
    with fits.open(path) as h:
        if how == "exptime":
            t = h[0].header.get("EFFEXPTM", h[0].header.get("EXPTIME"))
            if t is None:
                msg = f"{path.name}: no EFFEXPTM/EXPTIME for [stack_destripe] weight = 'exptime'"
                raise ValueError(msg)
            return float(t)
        ext = "VAR_RNOISE" if "VAR_RNOISE" in h else "ERR"
        var = np.array(h[ext].data, float) ** (1 if ext == "VAR_RNOISE" else 2)
        good = np.isfinite(var) & (var > 0)
        if not good.any():
            msg = f"{path.name}: no usable {ext} for [stack_destripe] weight = 'ivm'"
            raise ValueError(msg)
        return float(1.0 / np.median(var[good]))


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
    load = _Frames(files)
    n = len(files)
    empty = []
    for f, i in zip(files, range(n), strict=True):
        empty.append(not good_pixels(*load(i)).any())
        if empty[-1]:
            log.warning("%s: no valid pixel (all NaN, zero or DO_NOT_USE): left out of stack-based "
                        "destriping and copied unchanged", f)
    coarse: dict[tuple[int, int], tuple[np.ndarray, ...]] = {}
    overlaps = np.zeros((n, n), bool)
    for i in range(n):
        for j in range(n):
            if i == j or empty[i] or empty[j]:
                continue
            c = _coarse_map(load.wcss[i], load.shapes[i], load.wcss[j])
            if _inside(c[2], c[3], load.shapes[j]).mean() > 0.02:
                coarse[(i, j)] = c
                overlaps[i, j] = True

    def resample(j: int, i: int, img: np.ndarray) -> np.ndarray:
        # NaN-aware bilinear: a masked pixel only affects where it carries most of the weight
        oy, ox = _pixel_map(coarse[(i, j)], load.shapes[i])
        finite = np.isfinite(img)
        val = map_coordinates(np.where(finite, img, 0.0), [oy, ox], order=1, mode="nearest")
        wt = map_coordinates(finite.astype(float), [oy, ox], order=1, mode="nearest")
        return np.where(_inside(ox, oy, img.shape) & (wt > 0.5), val / np.where(wt > 0, wt, 1.0), np.nan)

    weights = [frame_weight(f, weight) for f in files]
    outputs = []
    for i, res in stack_destripe_iter(n, load, resample, params, n_amps=load.amps,
                                      iterations=iterations, overlaps=overlaps, weights=weights):
        f = files[i]
        sci, dq_arr = load(i)
        good = good_pixels(sci, dq_arr)
        with fits.open(f) as h:
            h["SCI"].data = np.where(good, sci - res.model, sci).astype(h["SCI"].data.dtype)
            rms = float(np.std(res.model[good])) if good.any() else 0.0
            h[0].header["STKSTRMS"] = (rms, "rms of the stack stripe model [BUNIT]")
            h[0].header["STKNREF"] = (int(overlaps[i].sum()), "frames in its reference")
            if empty[i]:
                h[0].header["STKSKIP"] = ("no valid pixel", "left out of stack-based destriping")
            stamp_header(h[0].header, step=NAME, params={**params.as_dict(), "iterations": iterations,
                                                         "weight": weight},
                         config_hash=config_hash)
            out = out_dir / f.name
            with atomic_path(out) as tmp:
                h.writeto(tmp)
        outputs.append(out)
        if plot_dir is not None:
            from jwstgal.plots import stripe_panels

            stripe_panels(np.where(good, sci, np.nan), np.where(good, res.model, 0.0), res.mask,
                          plot_dir / f"{f.stem}.png", f"{f.name}: stack-based, model rms {rms:.3g}")
    log.info("stack destriping: %d frames, %d overlapping pairs, %d passes", n, int(overlaps.sum()),
             iterations)
    return outputs


def run_task(files: list[str], out_dir: str, params: dict, config_hash: str, plot_dir: str) -> list[str]:
    """Stack-destripe one band (worker)."""
    p = dict(params)
    iterations, weight = p.pop("iterations"), p.pop("weight", "equal")
    outputs = stack_destripe_files([Path(f) for f in files], Path(out_dir), StackParams(**p),
                                   iterations=iterations, config_hash=config_hash, plot_dir=Path(plot_dir),
                                   weight=weight)
    return [str(o) for o in outputs]


class StackDestripe(Step):
    """Stack-based destriping."""

    name = NAME
    summary = ("multi-exposure stripe subtraction against the overlapping level-matched exposures, "
               "`[stack_destripe]`")
    settings = StackDestripeSettings

    def plan(self, ctx: BandContext, upstream: str, inputs: list[Path]) -> StepPlan:
        """One task for the band (every frame needs its neighbours)."""
        inputs = ctx.science_cal(inputs, "stack-based destriping")
        params = self.resolved(ctx)
        key = hash_params([NAME, self.key_params(params), upstream, [p.name for p in inputs]])
        if (done := ctx.complete(NAME, key, params)) is not None:
            return done
        out_dir, _ = ctx.prepare(NAME, key, params)
        outputs = [out_dir / p.name for p in inputs]
        log.info("%s: stack-based destriping of %d exposures", ctx.label, len(inputs))
        return StepPlan(NAME, key, params, outputs, run_task,
                        [([str(p) for p in inputs], str(out_dir), params, ctx.run.config_hash,
                          str(ctx.qa_dir / NAME))])

    def diagnostics(self, ctx: BandContext, plan: StepPlan) -> list[Path | None]:
        """Contact sheet of the corrected exposures."""
        from jwstgal.plots import contact_sheet

        return [contact_sheet(plan.outputs, ctx.qa_dir / f"{NAME}.png",
                              f"{ctx.label}: after stack-based destriping")]

    def figures(self, band_dir: Path, target: str, band: Band) -> list[tuple[Path, str]]:
        """Contact sheet, then the first three exposures' panels."""
        panels = sorted((band_dir / "qa" / NAME).glob("*.png"))[:3]
        return [(band_dir / "qa" / f"{NAME}.png", "after stack-based destriping"),
                *((p, f"stack-based destriping of {p.stem}: input, mask, stripe model, result")
                  for p in panels)]
