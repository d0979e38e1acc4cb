"""Pixel maps between exposures through their WCS, and NaN-aware resampling along them.

A frame's pixels are mapped into another frame on a coarse grid (distortions are smooth on
16-pixel scales) and the full map is interpolated from it by two small matrix products; images are
then sampled bilinearly, NaN-aware, over the part of the frame the other covers. Used by the
stack-based destriping.
"""

from __future__ import annotations

import numpy as np
from astropy.wcs import WCS
from scipy.ndimage import map_coordinates


def coarse_map(wcs_from: WCS, shape_from: tuple[int, int], wcs_to: WCS, step: int = 16
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Pixel coordinates in ``wcs_to`` of a coarse grid of a ``shape_from`` frame's pixels.

    Returns the grid's rows and columns and the target x and y there; distortions are smooth on
    16-pixel scales, so :func:`resample_onto` interpolates the full map from this.
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


def sky_boxes(wcss: list[WCS], shapes: list[tuple[int, int]], samples: int = 9) -> np.ndarray:
    """Bounding boxes of frames in one tangent plane: (n, 4) rows of x0, x1, y0, y1 [deg].

    Each frame's outline (``samples`` points along every edge) is projected gnomonically about
    the mean of the frames' centres: a cheap test of which frames can overlap at all, before
    :func:`coverage` maps them.
    """
    outlines = []
    for w, (ny, nx) in zip(wcss, shapes, strict=True):
        tx, ty = np.linspace(-0.5, nx - 0.5, samples), np.linspace(-0.5, ny - 0.5, samples)
        x = np.r_[tx, np.full(samples, nx - 0.5), tx, np.full(samples, -0.5)]
        y = np.r_[np.full(samples, -0.5), ty, np.full(samples, ny - 0.5), ty]
        outlines.append(np.radians(np.array(w.pixel_to_world_values(x, y), float)))
    vec = [np.array([np.cos(d) * np.cos(a), np.cos(d) * np.sin(a), np.sin(d)]) for a, d in outlines]
    centre = np.sum([v.mean(axis=1) for v in vec], axis=0)
    centre /= np.linalg.norm(centre)
    east = np.cross([0.0, 0.0, 1.0], centre)
    east = east / np.linalg.norm(east) if np.linalg.norm(east) > 0 else np.array([0.0, 1.0, 0.0])
    north = np.cross(centre, east)
    boxes = np.zeros((len(vec), 4))
    for k, v in enumerate(vec):
        z = centre @ v                                  # gnomonic: points within 90 deg of the centre
        x, y = np.degrees(east @ v / z), np.degrees(north @ v / z)
        boxes[k] = x.min(), x.max(), y.min(), y.max()
    return boxes


def boxes_meet(a: np.ndarray, b: np.ndarray, margin: float = 0.05) -> bool:
    """Whether two :func:`sky_boxes` boxes intersect once each is widened by ``margin`` of its size."""
    pa = margin * max(a[1] - a[0], a[3] - a[2])
    pb = margin * max(b[1] - b[0], b[3] - b[2])
    return bool(a[0] - pa <= b[1] + pb and b[0] - pb <= a[1] + pa
                and a[2] - pa <= b[3] + pb and b[2] - pb <= a[3] + pa)


def coverage(wcs_from: WCS, shape_from: tuple[int, int], wcs_to: WCS, shape_to: tuple[int, int],
             nodes: int = 32) -> float:
    """Fraction of a ``shape_from`` frame's pixels that fall on a ``shape_to`` frame.

    Counted on a grid of about ``nodes`` + 1 nodes a side (every 64th pixel of a 2048^2 frame: an
    error of a few per cent, for 1/16 of the cost of the resampling map's grid).
    """
    c = coarse_map(wcs_from, shape_from, wcs_to, max(1, min(shape_from) // nodes))
    return float(inside(c[2], c[3], shape_to).mean())


def resample_onto(img: np.ndarray, coarse: tuple[np.ndarray, ...], shape_from: tuple[int, int]
                  ) -> np.ndarray:
    """``img`` (another frame) on the pixels of a ``shape_from`` frame, from their coarse map.

    Only the box of the frame that the other covers is mapped and sampled (:func:`nan_bilinear`);
    the rest is NaN. The box is that of the coarse nodes falling on ``img``, widened by one node on
    each side, so it holds every covered pixel.
    """
    gy, gx, x2, y2 = coarse
    out = np.full(shape_from, np.nan, _float_type(img))
    on = inside(np.asarray(x2), np.asarray(y2), img.shape)
    if not on.any():
        return out
    rows, cols = np.flatnonzero(on.any(axis=1)), np.flatnonzero(on.any(axis=0))
    y0 = int(gy[max(rows[0] - 1, 0)])
    y1 = int(gy[min(rows[-1] + 1, gy.size - 1)]) + 1
    x0 = int(gx[max(cols[0] - 1, 0)])
    x1 = int(gx[min(cols[-1] + 1, gx.size - 1)]) + 1
    # bilinear between the nodes: the grid is a product of two 1-D grids, so the full map is
    # Wy @ map @ Wx.T with the 1-D linear-interpolation matrices (two small matrix products)
    wy = _linear_weights(shape_from[0], gy)[y0:y1]
    wx = _linear_weights(shape_from[1], gx)[x0:x1]
    oy = wy @ np.asarray(y2, float) @ wx.T
    ox = wy @ np.asarray(x2, float) @ wx.T
    out[y0:y1, x0:x1] = nan_bilinear(img, oy, ox)
    return out


def nan_bilinear(img: np.ndarray, oy: np.ndarray, ox: np.ndarray) -> np.ndarray:
    """``img`` sampled bilinearly at (oy, ox), NaN-aware; NaN outside ``img`` or mostly on NaNs.

    A NaN pixel only affects the samples it carries weight in: there the finite neighbours are
    renormalised, or the sample is NaN when they carry half the weight or less. One bilinear pass
    over ``img`` as it is finds those samples (a NaN corner makes the sample NaN); only they (a few
    per cent of a frame) are sampled again from the zero-filled image and its finite-pixel weights.
    A float32 image is sampled into float32 (scipy interpolates in float64 and rounds once).
    """
    img = np.asarray(img, _float_type(img))
    val = map_coordinates(img, [oy, ox], order=1, mode="nearest")
    need = ~np.isfinite(val)
    if need.any():
        finite = np.isfinite(img)
        at = [oy[need], ox[need]]
        num = map_coordinates(np.where(finite, img, 0.0), at, order=1, mode="nearest")
        wt = map_coordinates(finite.astype(img.dtype), at, order=1, mode="nearest")
        val[need] = np.where(wt > 0.5, num / np.where(wt > 0, wt, 1.0), np.nan)
    val[~inside(ox, oy, img.shape)] = np.nan
    return val


def _float_type(img: np.ndarray) -> type:
    """The type an image is sampled in: float32 stays float32 (the positions stay float64), else float64."""
    return np.float32 if np.asarray(img).dtype == np.float32 else np.float64


def inside(ox: np.ndarray, oy: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Whether pixel positions (x, y) fall on a frame of ``shape``."""
    ny, nx = shape
    return (ox > -0.5) & (oy > -0.5) & (ox < nx - 0.5) & (oy < ny - 0.5)
