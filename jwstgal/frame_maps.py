"""Pixel maps between exposures through their WCS, and NaN-aware resampling along them.

A frame's pixels are mapped into another frame on a coarse grid (distortions are smooth on
16-pixel scales) and the full map is interpolated from it by two small matrix products; images are
then sampled bilinearly, NaN-aware. Used by the stack-based destriping.
"""

from __future__ import annotations

import numpy as np
from astropy.wcs import WCS
from scipy.ndimage import map_coordinates


def coarse_map(wcs_from: WCS, shape_from: tuple[int, int], wcs_to: WCS, step: int = 16
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Pixel coordinates in ``wcs_to`` of a coarse grid of a ``shape_from`` frame's pixels.

    Returns the grid's rows and columns and the target x and y there; distortions are smooth on
    16-pixel scales, so :func:`pixel_map` interpolates the full map from this.
    """
    ny, nx = shape_from
    gy = np.unique(np.r_[np.arange(0, ny, step), ny - 1]).astype(float)
    gx = np.unique(np.r_[np.arange(0, nx, step), nx - 1]).astype(float)
    yy, xx = np.meshgrid(gy, gx, indexing="ij")
    x2, y2 = wcs_to.world_to_pixel_values(*wcs_from.pixel_to_world_values(xx, yy))
    return gy, gx, np.asarray(x2), np.asarray(y2)


def _linear_weights(n: int, nodes: np.ndarray) -> np.ndarray:
    """(n, nodes) matrix of 1-D linear interpolation from ``nodes`` (increasing) to 0..n-1."""
    f = np.interp(np.arange(n, dtype=float), nodes, np.arange(nodes.size, dtype=float))
    i0 = np.minimum(np.floor(f).astype(int), nodes.size - 2) if nodes.size > 1 else np.zeros(n, int)
    w = np.zeros((n, nodes.size))
    if nodes.size == 1:
        w[:, 0] = 1.0
        return w
    frac = f - i0
    w[np.arange(n), i0] = 1.0 - frac
    w[np.arange(n), i0 + 1] += frac
    return w


def pixel_map(coarse: tuple[np.ndarray, ...], shape_from: tuple[int, int]
               ) -> tuple[np.ndarray, np.ndarray]:
    """Full-resolution pixel map (y, x in the other frame) of every pixel, from a coarse map.

    Bilinear between the coarse grid's nodes. The grid is a product of two 1-D grids, so this is
    ``Wy @ map @ Wx.T`` with the 1-D linear-interpolation matrices: two small matrix products
    instead of a point-by-point interpolation of every pixel.
    """
    gy, gx, x2, y2 = coarse
    wy, wx = _linear_weights(shape_from[0], gy), _linear_weights(shape_from[1], gx)
    return wy @ np.asarray(y2, float) @ wx.T, wy @ np.asarray(x2, float) @ wx.T


def nan_bilinear(img: np.ndarray, oy: np.ndarray, ox: np.ndarray) -> np.ndarray:
    """``img`` sampled bilinearly at (oy, ox), NaN-aware; NaN outside ``img`` or mostly on NaNs.

    A NaN pixel only affects the samples it carries weight in: there the finite neighbours are
    renormalised, or the sample is NaN when they carry half the weight or less. The weights are
    interpolated only where a sample's cell touches a NaN (a few per cent of a frame).
    """
    finite = np.isfinite(img)
    val = map_coordinates(np.where(finite, img, 0.0), [oy, ox], order=1, mode="nearest")
    clean = finite.copy()             # cells whose four corners are finite (edges as mode "nearest")
    clean[:-1] &= finite[1:]
    clean[:, :-1] &= finite[:, 1:]
    clean[:-1, :-1] &= finite[1:, 1:]
    ny, nx = img.shape
    iy = np.clip(np.floor(oy).astype(np.intp), 0, ny - 1)
    ix = np.clip(np.floor(ox).astype(np.intp), 0, nx - 1)
    need = ~clean[iy, ix]
    wt = np.ones(oy.shape)
    wt[need] = map_coordinates(finite.astype(float), [oy[need], ox[need]], order=1, mode="nearest")
    return np.where(inside(ox, oy, img.shape) & (wt > 0.5), val / np.where(wt > 0, wt, 1.0), np.nan)


def inside(ox: np.ndarray, oy: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Whether pixel positions (x, y) fall on a frame of ``shape``."""
    ny, nx = shape
    return (ox > -0.5) & (oy > -0.5) & (ox < nx - 0.5) & (oy < ny - 0.5)
