"""File layer of destriping: the ``destripe`` and ``stack_destripe`` steps and the standalone scripts.

``destripe_file`` reads a rate or cal file with astropy (SCI, ERR, DQ), measures the stripe model
with :func:`jwstgal.destripe.destripe` (NIRCam) or :func:`jwstgal.destripe.miri_destripe` (MIRI),
subtracts it from the good pixels and writes a copy (the input is never modified) whose primary
header records the method, its parameters and the model rms; a three-panel PNG (before, model,
after) goes next to it when asked.

``stack_destripe_files`` does the multi-exposure subtraction of one band: every frame is compared
with the average of the overlapping (already level-matched) others resampled onto its own pixels
through the SCI WCS.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS
from scipy.interpolate import RegularGridInterpolator
from scipy.ndimage import map_coordinates

from jwstgal.destripe import (
    DestripeParams,
    StackParams,
    destripe,
    miri_destripe,
    stack_destripe_all,
)
from jwstgal.provenance import atomic_path, stamp_header

log = logging.getLogger(__name__)

DO_NOT_USE, NON_SCIENCE = 1, 512


def frame_layout(primary: fits.Header, shape: tuple[int, int]) -> tuple[str, int, bool]:
    """Instrument, number of amplifier bands and whether the frame is a full-frame readout.

    NOUTPUTS gives the amplifier count when present; otherwise NIRCam full frames (2048 wide,
    SUBARRAY FULL) have four and everything else one.
    """
    instrument = str(primary.get("INSTRUME", "NIRCAM")).upper()
    subarray = str(primary.get("SUBARRAY", "FULL")).upper()
    full = subarray == "FULL"
    if "NOUTPUTS" in primary:
        n_amps = int(primary["NOUTPUTS"])
    else:
        n_amps = 4 if (instrument == "NIRCAM" and full and shape[1] == 2048) else 1
    if instrument == "MIRI":
        n_amps = 1
    return instrument, max(n_amps, 1), full


def plot_destripe(before: np.ndarray, model: np.ndarray, mask: np.ndarray, png: Path, title: str) -> Path:
    """Four panels: input, mask, stripe model and destriped frame (same stretch for data panels)."""
    from jwstgal.qa import _plt
    from jwstgal.quicklook import stretch_limits

    plt = _plt()
    after = before - model
    lo, hi = stretch_limits(after[np.isfinite(after)])
    mlim = max(float(np.nanpercentile(np.abs(model), 99)), 1e-12)
    fig, axes = plt.subplots(1, 4, figsize=(14, 4))
    panels = ((before, "input", (lo, hi), "gray"),
              (mask.astype(float), "mask (fit ignores)", (0, 1), "gray_r"),
              (model, "stripe model", (-mlim, mlim), "RdBu_r"), (after, "destriped", (lo, hi), "gray"))
    for ax, (img, name, (a, b), cmap) in zip(axes, panels, strict=True):
        ax.imshow(img, origin="lower", vmin=a, vmax=b, cmap=cmap, interpolation="nearest")
        ax.set_title(name, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(title, fontsize=10)
    png.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(png) as tmp:
        fig.savefig(tmp, dpi=80, bbox_inches="tight", format="png")
    plt.close(fig)
    return png


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
        sci = np.array(h["SCI"].data, float)
        err = np.array(h["ERR"].data, float) if "ERR" in h else None
        dq = np.array(h["DQ"].data) if "DQ" in h else None
        instrument, n_amps, full = frame_layout(h[0].header, sci.shape)
        if instrument == "MIRI":
            res, lyot = miri_destripe(sci, dq, err, params, full_frame=full)
        else:
            res = destripe(sci, dq, err, params, n_amps=n_amps)
            lyot = np.zeros(sci.shape, bool)
        good = np.isfinite(sci) & (sci != 0)
        if dq is not None:
            good &= (dq.astype(np.int64) & DO_NOT_USE) == 0
        out = np.where(good, sci - res.model, sci)
        if lyot.any():
            out[lyot] = np.nan
            if "ERR" in h:
                h["ERR"].data[lyot] = np.nan
            if "DQ" in h:
                h["DQ"].data[lyot] |= DO_NOT_USE | NON_SCIENCE
        h["SCI"].data = out.astype(h["SCI"].data.dtype)
        stats = {"model_rms": float(np.std(res.model[good])) if good.any() else 0.0,
                 "masked_frac": float(res.mask.mean()),
                 "amp_offsets": [float(o) for o in res.amp_offsets],
                 "lyot_masked": int(lyot.sum())}
        hdr = h[0].header
        hdr["DSTRMETH"] = (params.method, "jwstgal destriping method")
        hdr["DSTRRMS"] = (stats["model_rms"], "rms of the subtracted stripe model [BUNIT]")
        hdr["DSTRAMPS"] = (n_amps, "amplifier bands fitted separately")
        stamp_header(hdr, step="destripe", params=params.as_dict(), config_hash=config_hash)
        with atomic_path(dst) as tmp:
            h.writeto(tmp)
    if plot_png is not None:
        plot_destripe(np.where(good, sci, np.nan), np.where(good, res.model, 0.0), res.mask, plot_png,
                      f"{src.name}: {params.method}, model rms {stats['model_rms']:.3g}")
    log.info("destriped %s (%s, %d amplifier bands): model rms %.3g", src.name, params.method, n_amps,
             stats["model_rms"])
    return stats


def _pixel_map(wcs_from: WCS, shape_from: tuple[int, int], wcs_to: WCS, step: int = 16
               ) -> tuple[np.ndarray, np.ndarray]:
    """Pixel coordinates in ``wcs_to`` of every pixel of a ``shape_from`` frame.

    Computed on a coarse grid and interpolated: distortions are smooth on 16-pixel scales.
    """
    ny, nx = shape_from
    gy = np.unique(np.r_[np.arange(0, ny, step), ny - 1]).astype(float)
    gx = np.unique(np.r_[np.arange(0, nx, step), nx - 1]).astype(float)
    yy, xx = np.meshgrid(gy, gx, indexing="ij")
    x2, y2 = wcs_to.world_to_pixel_values(*wcs_from.pixel_to_world_values(xx, yy))
    fy, fx = np.arange(ny, dtype=float), np.arange(nx, dtype=float)
    py, px = np.meshgrid(fy, fx, indexing="ij")
    pts = np.column_stack([py.ravel(), px.ravel()])
    ox = RegularGridInterpolator((gy, gx), x2)(pts).reshape(shape_from)
    oy = RegularGridInterpolator((gy, gx), y2)(pts).reshape(shape_from)
    return oy, ox


def stack_destripe_files(files: list[Path], out_dir: Path, params: StackParams, *, iterations: int = 3,
                         config_hash: str = "", plot_dir: Path | None = None) -> list[Path]:
    """Multi-exposure stripe subtraction of one band's cal files into ``out_dir``.

    Parameters
    ----------
    files : list of pathlib.Path
        Level-matched cal files (read only).
    out_dir : pathlib.Path
        Destination (same file names).
    params : StackParams
        Settings.
    iterations : int
        Passes of :func:`jwstgal.destripe.stack_destripe_all`.
    config_hash : str
        Recorded in the headers.
    plot_dir : pathlib.Path, optional
        Where to draw per-file diagnostics.

    Returns
    -------
    list of pathlib.Path
        The written files.
    """
    data, dqs, wcss, amps = [], [], [], []
    for f in files:
        with fits.open(f) as h:
            data.append(np.array(h["SCI"].data, float))
            dqs.append(np.array(h["DQ"].data) if "DQ" in h else None)
            wcss.append(WCS(h["SCI"].header))
            amps.append(frame_layout(h[0].header, data[-1].shape)[1])
    n = len(files)
    maps: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}
    overlaps = np.zeros((n, n), bool)
    for i in range(n):
        for j in range(n):
            if i == j:
                continue
            oy, ox = _pixel_map(wcss[i], data[i].shape, wcss[j])
            ny, nx = data[j].shape
            inside = (ox > -0.5) & (oy > -0.5) & (ox < nx - 0.5) & (oy < ny - 0.5)
            if inside.mean() > 0.02:
                maps[(i, j)] = (oy, ox)
                overlaps[i, j] = True

    def resample(j: int, i: int, img: np.ndarray) -> np.ndarray:
        # NaN-aware bilinear: a masked pixel only affects where it carries most of the weight
        oy, ox = maps[(i, j)]
        finite = np.isfinite(img)
        val = map_coordinates(np.where(finite, img, 0.0), [oy, ox], order=1, mode="nearest")
        wt = map_coordinates(finite.astype(float), [oy, ox], order=1, mode="nearest")
        ny, nx = img.shape
        inside = (ox > -0.5) & (oy > -0.5) & (ox < nx - 0.5) & (oy < ny - 0.5)
        return np.where(inside & (wt > 0.5), val / np.where(wt > 0, wt, 1.0), np.nan)

    results = stack_destripe_all(data, dqs, resample, params, n_amps=amps, iterations=iterations,
                                 overlaps=overlaps)
    outputs = []
    for i, (f, res, sci, dq) in enumerate(zip(files, results, data, dqs, strict=True)):
        good = np.isfinite(sci) & (sci != 0)
        if dq is not None:
            good &= (dq.astype(np.int64) & DO_NOT_USE) == 0
        with fits.open(f) as h:
            h["SCI"].data = np.where(good, sci - res.model, sci).astype(h["SCI"].data.dtype)
            rms = float(np.std(res.model[good])) if good.any() else 0.0
            h[0].header["STKSTRMS"] = (rms, "rms of the stack-based stripe model [BUNIT]")
            h[0].header["STKNREF"] = (int(overlaps[i].sum()), "frames in its reference")
            stamp_header(h[0].header, step="stack_destripe", params={**params.as_dict(),
                         "iterations": iterations}, config_hash=config_hash)
            out = out_dir / f.name
            with atomic_path(out) as tmp:
                h.writeto(tmp)
        outputs.append(out)
        if plot_dir is not None:
            plot_destripe(np.where(good, sci, np.nan), np.where(good, res.model, 0.0), res.mask,
                          plot_dir / f"{f.stem}.png", f"{f.name}: stack-based, model rms {rms:.3g}")
    log.info("stack destriping: %d frames, %d overlapping pairs, %d passes", n, int(overlaps.sum()),
             iterations)
    return outputs
