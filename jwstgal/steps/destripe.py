"""Step ``destripe``: single-frame stripe subtraction of every science exposure (after stage 2).

``destripe_file`` reads a rate or cal file with astropy (SCI, ERR, DQ), measures the stripe model
with :func:`jwstgal.destripe.destripe` (NIRCam) or :func:`jwstgal.destripe_miri.miri_destripe` (MIRI),
subtracts it from the good pixels and writes a copy (the input is never modified) whose primary
header records the method, its parameters and the model rms; a four-panel PNG (input, mask, model,
result) goes to ``qa/destripe/`` when asked. ``nircam_destriping.py`` / ``miri_destriping.py``
call the same function on single files.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
from astropy.io import fits
from pydantic import Field

from jwstgal import dq, layout
from jwstgal.bands import Band
from jwstgal.destripe import DestripeParams, stripe_residual
from jwstgal.destripe_frames import destripe_arrays, good_pixels, working_array
from jwstgal.provenance import atomic_path, stamp_header
from jwstgal.settings import StepSettings
from jwstgal.steps.base import BandContext, BandTask, Step, StepPlan

log = logging.getLogger(__name__)

NAME = "destripe"

#: DQ flags a user may exclude from the fit.
DQ_CHOICES = Literal["DO_NOT_USE", "SATURATED", "JUMP_DET", "DROPOUT", "OUTLIER", "REFERENCE_PIXEL",
                     "NON_SCIENCE", "DEAD", "HOT", "NO_FLAT_FIELD"]


class DestripeSettings(StepSettings):
    """The ``[destripe]`` table (single frames after stage 2), also ``[rate_destripe]`` (before it).

    Same fields as :class:`jwstgal.destripe.DestripeParams` (a test holds them together).
    """

    method: Literal["median_filter", "row_median", "remstripe", "smooth", "pca"] = Field(
        "median_filter", description="Row-pass method.")
    quadrants: bool = Field(True, description="Fit amplifier bands separately (NOUTPUTS > 1).")
    level_amplifiers: bool = Field(True, description="Remove amplifier offsets first.")
    vertical: bool = Field(True, description="Column pass before the row pass.")
    filter_scales: list[Annotated[int, Field(ge=1, le=4096)]] = Field(
        default_factory=lambda: [3, 7, 15, 31, 63, 127],
        description="Median-filter scales (pixels), small to large.")
    min_mask_frac: float = Field(0.2, ge=0, le=1, description="Minimum unmasked fraction of an "
                                 "amplifier row before the full row is used.")
    sigma: float = Field(3.0, gt=0, description="Detection and clipping threshold.")
    npixels: int = Field(3, ge=1, description="Minimum connected pixels of a source.")
    dilate_size: int = Field(11, ge=1, le=256, description="Dilation of the source mask (pixels).")
    max_iters: int = Field(10, ge=0, le=1000, description="Clipping iterations.")
    filter_diffuse: bool = Field(False, description="High-pass diffuse emission before fitting.")
    diffuse_scale: float = Field(200.0, gt=0, description="Cut-off scale of that filter (pixels).")
    pca_components: int = Field(10, ge=1, le=2048, description="Eigenvectors fitted (method pca).")
    pca_reconstruct_components: int = Field(5, ge=1, description="Eigenvectors used to reconstruct.")
    pca_seed: int = Field(0, description="Seed of the robust PCA.")
    dq_flags: list[DQ_CHOICES] = Field(default_factory=lambda: list(dq.DEFAULT_BAD),
                                       description="DQ flags excluded.")
    lyot: Literal["mask", "adjust", "include"] = Field(
        "mask", description="MIRI full frames: mask the Lyot coronagraph, level it, or fit it.")


def destripe_file(src: Path, dst: Path, params: DestripeParams, *, config_hash: str = "",
                  plot_png: Path | None = None) -> dict[str, Any]:
    """Destripe one rate or cal file into ``dst``.

    Parameters
    ----------
    src : pathlib.Path
        Input file (read only).
    dst : pathlib.Path
        Output file (written atomically).
    params : DestripeParams
        Method and settings.
    config_hash : str
        Recorded in the header.
    plot_png : pathlib.Path, optional
        Where to draw the diagnostic panels.

    Returns
    -------
    dict
        ``model_rms``, ``masked_frac``, ``amp_offsets`` and ``lyot_masked`` (pixels flagged).
    """
    with fits.open(src) as h:
        sci = working_array(h["SCI"].data)
        err = working_array(h["ERR"].data) if "ERR" in h else None
        dq_arr = np.array(h["DQ"].data) if "DQ" in h else None
        out, lyot, res, n_amps = destripe_arrays(sci, dq_arr, err, h[0].header, params)
        good = good_pixels(sci, dq_arr)
        if lyot.any():
            if "ERR" in h:
                h["ERR"].data[lyot] = np.nan
            if "DQ" in h:
                h["DQ"].data[lyot] |= dq.bits(["DO_NOT_USE", "NON_SCIENCE"])
        h["SCI"].data = out.astype(h["SCI"].data.dtype)
        stats = destripe_stats(res, good, lyot)
        hdr = h[0].header
        hdr["DSTRMETH"] = (params.method, "jwstgal destriping method")
        hdr["DSTRRMS"] = (stats["model_rms"], "rms of the stripe model [BUNIT]")
        hdr["DSTRAMPS"] = (n_amps if params.quadrants else 1, "amplifier bands fitted separately")
        hdr["DSTRRES0"] = (_finite(stripe_residual(sci, res.mask | ~good)),
                           "stripes before destriping [x noise]")
        hdr["DSTRRES"] = (_finite(stripe_residual(out, res.mask | ~good)),
                          "stripes left [x noise], 1 = none")
        stamp_header(hdr, step=NAME, params=params.as_dict(), config_hash=config_hash)
        with atomic_path(dst) as tmp:
            h.writeto(tmp)
    if plot_png is not None:
        from jwstgal.plots import stripe_panels

        stripe_panels(sci, res.model, res.mask, good, plot_png,
                      f"{src.name}: {params.method}, model rms {stats['model_rms']:.3g}")
    log.info("destriped %s (%s, %d amplifier bands): model rms %.3g", src.name, params.method,
             n_amps if params.quadrants else 1, stats["model_rms"])
    return stats


def _finite(x: float) -> float | str:
    """A header value: the number, or 'n/a' for NaN (not a FITS value)."""
    return round(x, 3) if np.isfinite(x) else "n/a"


def destripe_stats(res: Any, good: np.ndarray, lyot: np.ndarray) -> dict[str, Any]:
    """What a destriping did: model rms on good pixels, masked fraction, amplifier offsets, Lyot pixels."""
    return {"model_rms": float(np.std(res.model[good])) if good.any() else 0.0,
            "masked_frac": float(res.mask.mean()),
            "amp_offsets": [float(o) for o in res.amp_offsets],
            "lyot_masked": int(lyot.sum())}


@dataclass(frozen=True)
class DestripeTask(BandTask):
    """Destripe one exposure, drawing its four-panel figure to ``png``."""

    src: Path
    dst: Path
    params: DestripeParams
    config_hash: str
    png: Path

    def run(self) -> list[str]:
        """Write the destriped copy."""
        destripe_file(self.src, self.dst, self.params, config_hash=self.config_hash, plot_png=self.png)
        return [str(self.dst)]


class Destripe(Step):
    """Single-frame destriping."""

    name = NAME
    repeatable = True
    summary = ("single-frame 1/f stripe subtraction of every exposure (NIRCam amplifiers, MIRI "
               "rows/columns, Lyot), `[destripe]`")
    settings = DestripeSettings
    stpipe = True
    #: The files it writes, and what its figures say it did.
    pattern = "*_cal.fits"
    caption = "after single-frame destriping"

    def plan(self, ctx: BandContext, upstream: str, inputs: list[Path]) -> StepPlan:
        """One task per science exposure; finished ones are reused on a rerun with the same key."""
        panels = ctx.qa_dir / self.name
        return self.plan_per_exposure(ctx, upstream, inputs, "destriping", lambda p, o, params: DestripeTask(
            p, o, DestripeParams(**params), ctx.run.config_hash, panels / f"{p.stem}.png"))

    def diagnostics(self, ctx: BandContext, plan: StepPlan) -> list[Path | None]:
        """Contact sheet of the destriped exposures (per-exposure panels are drawn by the tasks)."""
        from jwstgal.plots import contact_sheet

        return [contact_sheet(plan.outputs, ctx.qa_dir / f"{self.name}.png", f"{ctx.label}: {self.caption}")]

    def qa_summary(self, band_dir: Path, target: str, band: Band) -> dict[str, str]:
        """Median rms of the stripe models subtracted, and the worst stripes left (x pixel noise)."""
        files = sorted((band_dir / self.name).glob(self.pattern))
        heads = [fits.getheader(p) for p in files]
        rms = [float(h["DSTRRMS"]) for h in heads if h.get("DSTRRMS") is not None]
        left = [float(v) for h in heads if isinstance(v := h.get("DSTRRES"), int | float)]
        if not rms:
            return {}
        unit = fits.getheader(files[0], "SCI").get("BUNIT") or "no unit"
        out = {f"stripes removed: median rms [{unit}]": f"{np.median(rms):.3g}"}
        if left:
            out["stripes left: worst [x noise]"] = f"{max(left):.2f}"
        return out

    def figures(self, band_dir: Path, target: str, band: Band) -> list[tuple[Path, str]]:
        """Contact sheet, then the first three exposures' panels."""
        panels = sorted((layout.qa_dir(band_dir) / self.name).glob("*.png"))[:3]
        return [(layout.qa_dir(band_dir) / f"{self.name}.png", self.caption),
                *((p, f"single-frame destriping of {p.stem}: input, mask, stripe model, result")
                  for p in panels)]

