"""Convolve mosaics to a common resolution and reproject them to a common grid.

:func:`convolve_image` is a NaN-aware, memory-bounded FFT convolution: the image is processed in
square tiles (plus a halo of the kernel radius), each transformed with ``scipy.fft`` at one fixed
size, so memory does not grow with the mosaic and the kernel's transforms are computed once. Missing
pixels are handled by normalised convolution (the kernel is renormalised over valid pixels); errors
are propagated as ``sqrt(conv(err**2, K**2))`` for independent pixel errors (drizzled noise is
correlated, so this is a lower bound, as in the PHANGS scripts).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.fft

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ConvolveResult:
    """Convolved data and propagated errors (``err`` is None when no errors were given)."""

    data: Any
    err: Any


def convolve_image(
    data: np.ndarray,
    kernel: np.ndarray,
    *,
    err: np.ndarray | None = None,
    block: int = 2048,
    min_weight: float = 0.5,
    preserve_nan: bool = True,
    workers: int | None = None,
    out: Any = None,
    out_err: Any = None,
) -> ConvolveResult:
    """Convolve an image with a kernel, tile by tile, ignoring NaNs.

    Parameters
    ----------
    data : array-like
        2-D image; NaNs mark missing pixels. Not modified. Anything sliced like an array works
        (e.g. a :class:`jwstgal.tiled_io.FitsImage`): only one tile and its halo is read at a time.
    kernel : numpy.ndarray
        Odd-sized, centred kernel at the image's pixel scale (normalised to unit sum here).
    err : numpy.ndarray, optional
        Per-pixel 1-sigma errors, propagated assuming independent pixels.
    block : int
        Tile side (output pixels); memory scales with ``(block + kernel size)**2``.
    min_weight : float
        Output pixels whose valid kernel weight is below this are set to NaN.
    preserve_nan : bool
        Keep input NaNs as NaN in the output.
    workers : int, optional
        Threads for scipy.fft (-1 = all cores); default: the task's share of the cores
        (:func:`jwstgal.executor.task_threads`: all of them outside a process pool).
    out, out_err : array-like, optional
        Where to write the result (and its errors), tile by tile: arrays of the image's shape or
        :class:`jwstgal.tiled_io.ScratchImage`; new arrays by default.

    Returns
    -------
    ConvolveResult
        ``out`` and ``out_err`` (or the new arrays).
    """
    if not hasattr(data, "shape") or len(data.shape) != 2:
        data = np.asarray(data)
    if kernel.shape[0] % 2 == 0 or kernel.shape[0] != kernel.shape[1]:
        msg = f"convolve_image: kernel must be square and odd-sized, got {kernel.shape}"
        raise ValueError(msg)
    if workers is None:
        from jwstgal.executor import task_threads

        workers = task_threads()
    k = np.asarray(kernel, float) / kernel.sum()
    h = k.shape[0] // 2
    ny, nx = data.shape
    by, bx = min(block, ny), min(block, nx)
    fy, fx = scipy.fft.next_fast_len(by + 2 * h, real=True), scipy.fft.next_fast_len(bx + 2 * h, real=True)

    def kernel_ft(kk: np.ndarray) -> np.ndarray:
        pad = np.zeros((fy, fx))
        pad[: kk.shape[0], : kk.shape[1]] = kk
        return scipy.fft.rfft2(pad, workers=workers)

    k_ft = kernel_ft(k)
    k2_ft = kernel_ft(k**2) if err is not None else None
    if out is None:
        out = np.full((ny, nx), np.nan, dtype=np.float32 if data.dtype == np.float32 else float)
    if out_err is None and err is not None:
        out_err = np.full((ny, nx), np.nan, dtype=out.dtype)

    def conv(tile: np.ndarray, kft: np.ndarray) -> np.ndarray:
        pad = np.zeros((fy, fx))
        pad[: tile.shape[0], : tile.shape[1]] = tile
        full = scipy.fft.irfft2(scipy.fft.rfft2(pad, workers=workers) * kft, s=(fy, fx),
                                workers=workers)
        return full[2 * h: tile.shape[0], 2 * h: tile.shape[1]]

    for y0 in range(0, ny, by):
        for x0 in range(0, nx, bx):
            y1, x1 = min(y0 + by, ny), min(x0 + bx, nx)
            # input window with halo, zero outside the image
            iy0, iy1, ix0, ix1 = y0 - h, y1 + h, x0 - h, x1 + h
            sy0, sy1, sx0, sx1 = max(iy0, 0), min(iy1, ny), max(ix0, 0), min(ix1, nx)
            shape = (iy1 - iy0, ix1 - ix0)
            win = (slice(sy0 - iy0, sy1 - iy0), slice(sx0 - ix0, sx1 - ix0))
            d = np.full(shape, np.nan)                   # outside the image: missing
            d[win] = data[sy0:sy1, sx0:sx1]
            v = np.isfinite(d)
            d[~v] = 0.0
            num = conv(d, k_ft)
            complete = v.all()
            wgt = np.ones_like(num) if complete else conv(v.astype(float), k_ft)
            lost = (wgt < min_weight) | (~v[h: h + y1 - y0, h: h + x1 - x0] if preserve_nan else False)
            with np.errstate(divide="ignore", invalid="ignore"):
                out[y0:y1, x0:x1] = np.where(lost, np.nan, num / wgt)
                if err is not None:
                    e2 = np.zeros(shape)
                    e2[win] = np.asarray(err[sy0:sy1, sx0:sx1], float) ** 2
                    e2[~v] = 0.0
                    var = np.clip(conv(e2, k2_ft), 0, None)
                    out_err[y0:y1, x0:x1] = np.where(lost, np.nan, np.sqrt(var) / wgt)
    return ConvolveResult(out, out_err)


def image_pixel_scale(wcs) -> float:
    """Pixel scale (arcsec) of a celestial astropy WCS (geometric mean of the axes)."""
    return float(np.sqrt(abs(np.linalg.det(wcs.celestial.pixel_scale_matrix))) * 3600)


def reproject_image(data: np.ndarray, wcs_in, wcs_out, shape_out: tuple[int, int]) -> np.ndarray:
    """Reproject a surface-brightness image onto another grid (NaN outside the footprint).

    Onto pixels more than 1.5 times larger, each output pixel is the area-weighted mean of the
    input over it (``reproject_exact``: the output integrates over its pixel, as a coarser image
    does); otherwise bilinear interpolation.
    """
    from reproject import reproject_exact, reproject_interp

    if image_pixel_scale(wcs_out) > 1.5 * image_pixel_scale(wcs_in):
        out, footprint = reproject_exact((data, wcs_in), wcs_out, shape_out=shape_out)
        out[footprint < 0.99] = np.nan
        return out
    out, footprint = reproject_interp((data, wcs_in), wcs_out, shape_out=shape_out, order="bilinear")
    out[footprint == 0] = np.nan
    return out
