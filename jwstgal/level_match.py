"""Relative background level matching of overlapping images (exposures, then mosaic tiles).

Pure functions on arrays that share one pixel grid, each image either the whole grid or a cutout
placed at an ``origin`` (row, column) of it, so that memory goes with the exposures' own areas, not
with the number of exposures times the mosaic's area. For every overlapping pair the robust
difference ``median(a_i - a_j)`` (sigma-clipped, bright emission masked) is measured, optionally as a
plane ``c0 + c1 x + c2 y``; all offsets are then solved at once by weighted sparse least squares
(each pair weighted by the inverse variance of its median, rows scaled by sqrt(weight)), one
reference image fixed per connected group of overlaps. Pairs whose residual is an outlier are
rejected and the system re-solved. An image that overlaps nothing keeps its level: its offset is 0,
never NaN (the seed's ``find_optimum_deltas`` wiped such images).

Convention: ``offsets[i]`` is what must be *subtracted* from image i to bring it to the reference's
level, so ``a_i - a_j`` ~ ``offsets[i] - offsets[j]`` on their overlap.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
from astropy.stats import sigma_clipped_stats
from scipy.ndimage import binary_dilation

from jwstgal.graph_solve import LevelSolution, PairDifference, solve_offsets

__all__ = ["LevelSolution", "PairDifference", "apply_offsets", "block_reduce", "emission_mask",
           "match_levels", "measure_pairs", "pair_difference", "solve_offsets"]


def block_reduce(data: np.ndarray, size: int = 128) -> np.ndarray:
    """Downsample an image by block means to at most ``size`` pixels per side (NaN-aware)."""
    f = max(1, int(np.ceil(max(data.shape) / size)))
    ny, nx = (data.shape[0] // f) * f, (data.shape[1] // f) * f
    blocks = data[:ny, :nx].reshape(ny // f, f, nx // f, f)
    if not np.isnan(blocks).any():
        return blocks.mean(axis=(1, 3))
    with warnings.catch_warnings():        # an all-NaN block is NaN, as it should be
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(blocks, axis=(1, 3))


def emission_mask(image: np.ndarray, nsigma: float = 3.0, dilate: int = 3) -> np.ndarray:
    """Pixels of bright emission or sources (above ``nsigma`` clipped sigma), dilated.

    Parameters
    ----------
    image : numpy.ndarray
        Image (NaNs allowed).
    nsigma : float
        Threshold above the clipped median.
    dilate : int
        Dilation iterations (pixels).

    Returns
    -------
    numpy.ndarray of bool
    """
    finite = np.isfinite(image)
    if not finite.any():
        return np.zeros(image.shape, bool)
    _, med, std = sigma_clipped_stats(image[finite], sigma=3.0, maxiters=10)
    mask = np.zeros(image.shape, bool)
    mask[finite] = image[finite] > med + nsigma * std
    return binary_dilation(mask, iterations=dilate) if dilate else mask


def pair_difference(
    a: np.ndarray,
    b: np.ndarray,
    i: int = 0,
    j: int = 1,
    *,
    mask: np.ndarray | None = None,
    plane: bool = False,
    sigma: float = 3.0,
    min_pixels: int = 100,
) -> PairDifference | None:
    """Robust level difference ``a - b`` on the overlap of two images on one grid.

    Parameters
    ----------
    a, b : numpy.ndarray
        Images (NaN outside their footprint).
    i, j : int
        Their indices (recorded in the result).
    mask : numpy.ndarray of bool, optional
        Pixels to ignore (e.g. bright emission).
    plane : bool
        Fit a plane c0 + c1 x + c2 y to the difference instead of a constant.
    sigma : float
        Clipping threshold.
    min_pixels : int
        Fewer overlapping pixels than this: no measurement (None).

    Returns
    -------
    PairDifference or None
    """
    ok = np.isfinite(a) & np.isfinite(b)
    if mask is not None:
        ok &= ~mask
    n = int(ok.sum())
    if n < min_pixels:
        return None
    d = (a - b)[ok]
    mean, med, std = sigma_clipped_stats(d, sigma=sigma, maxiters=10)
    keep = np.abs(d - med) <= sigma * max(std, 1e-30)
    if not plane:  # the clipped mean: robust once clipped, and more efficient than the median
        return PairDifference(i, j, np.array([mean]), float(std / np.sqrt(keep.sum())), n, float(std))
    yy, xx = np.nonzero(ok)
    design = np.column_stack([np.ones(n), xx, yy]).astype(float)
    coef = np.zeros(3)
    for _ in range(5):  # iteratively clipped plane fit
        coef, *_ = np.linalg.lstsq(design[keep], d[keep], rcond=None)
        resid = d - design @ coef
        std = float(np.std(resid[keep]))
        new = np.abs(resid) <= sigma * max(std, 1e-30)
        if np.array_equal(new, keep):
            break
        keep = new
    return PairDifference(i, j, coef, float(std / np.sqrt(keep.sum())), n, std)


def measure_pairs(
    images: Sequence[np.ndarray],
    *,
    plane: bool = False,
    mask_emission: bool = True,
    min_pixels: int = 100,
    origins: Sequence[tuple[int, int]] | None = None,
) -> list[PairDifference]:
    """Differences of every overlapping pair of images on a common grid.

    Parameters
    ----------
    images : sequence of numpy.ndarray
        Images on one grid (NaN outside each footprint), or cutouts of it (see ``origins``).
    plane : bool
        Measure planes instead of constants.
    mask_emission : bool
        Ignore bright emission/sources (masked in either image).
    min_pixels : int
        Minimum overlap.
    origins : sequence of (int, int), optional
        Grid (row, column) of each image's first pixel (default: all at (0, 0)). Plane
        coefficients refer to the grid.

    Returns
    -------
    list of PairDifference
    """
    origins = _origins(images, origins)
    masks = _per_image(images, emission_mask) if mask_emission else None
    boxes = []
    for im, (oy, ox) in zip(images, origins, strict=True):
        f = np.isfinite(im)
        rows, cols = np.any(f, axis=1), np.any(f, axis=0)
        boxes.append((oy + np.argmax(rows), oy + len(rows) - np.argmax(rows[::-1]),
                      ox + np.argmax(cols), ox + len(cols) - np.argmax(cols[::-1])) if f.any() else None)
    pairs = []
    for i in range(len(images)):
        for j in range(i + 1, len(images)):
            bi, bj = boxes[i], boxes[j]
            if bi is None or bj is None:
                continue
            y0, y1 = max(bi[0], bj[0]), min(bi[1], bj[1])
            x0, x1 = max(bi[2], bj[2]), min(bi[3], bj[3])
            if y0 >= y1 or x0 >= x1:
                continue
            wi = _window(origins[i], y0, y1, x0, x1)
            wj = _window(origins[j], y0, y1, x0, x1)
            m = None
            if mask_emission:
                m = masks[i][wi] | masks[j][wj]
            p = pair_difference(images[i][wi], images[j][wj], i, j, mask=m, plane=plane,
                                min_pixels=min_pixels)
            if p is not None and plane:  # plane coefficients refer to the window: shift to grid
                c0, c1, c2 = p.delta
                p = PairDifference(i, j, np.array([c0 - c1 * x0 - c2 * y0, c1, c2]), p.sigma,
                                   p.npix, p.rms)
            if p is not None:
                pairs.append(p)
    return pairs


def _per_image(images: Sequence[np.ndarray], fn: Any) -> Sequence[np.ndarray]:
    """``fn`` of every image.

    A list, or what ``images.derived(fn)`` gives for a sequence that keeps its images on disk
    (``jwstgal.steps.level_match.CutoutStore``), so that memory holds a few.
    """
    derived = getattr(images, "derived", None)
    return derived(fn) if derived is not None else [fn(im) for im in images]


def _empty_like(images: Sequence[np.ndarray]) -> Any:
    """An empty list, or an empty store of the same kind (``images.new()``) for images on disk."""
    new = getattr(images, "new", None)
    return new() if new is not None else []


def _subset(images: Sequence[np.ndarray], idx: list[int]) -> Sequence[np.ndarray]:
    """The images ``idx``, still on disk if they were (``images.subset``)."""
    subset = getattr(images, "subset", None)
    return subset(idx) if subset is not None else [images[i] for i in idx]


def _origins(images: Sequence[np.ndarray], origins: Sequence[tuple[int, int]] | None
             ) -> list[tuple[int, int]]:
    if origins is None:
        return [(0, 0)] * len(images)
    if len(origins) != len(images):
        msg = f"{len(origins)} origins for {len(images)} images"
        raise ValueError(msg)
    return [(int(o[0]), int(o[1])) for o in origins]


def _window(origin: tuple[int, int], y0: int, y1: int, x0: int, x1: int) -> tuple[slice, slice]:
    """Slices of a cutout at ``origin`` that cover grid rows y0:y1 and columns x0:x1."""
    return slice(y0 - origin[0], y1 - origin[0]), slice(x0 - origin[1], x1 - origin[1])


def match_levels(
    images: Sequence[np.ndarray],
    *,
    groups: Sequence[int] | None = None,
    reference: Sequence[int] | int = 0,
    plane: bool = False,
    mask_emission: bool = True,
    min_pixels: int = 100,
    origins: Sequence[tuple[int, int]] | None = None,
) -> LevelSolution:
    """Match the levels of images on a common grid: within groups first, then between groups.

    Parameters
    ----------
    images : sequence of numpy.ndarray
        Images on one grid (NaN outside each footprint), or cutouts of it (``origins``). Not
        modified. A sequence that reads them from disk when indexed works too (it may offer
        ``derived`` and ``subset``, see :func:`_per_image`): then a few are in memory at a time.
    groups : sequence of int, optional
        Group label of each image (e.g. the dither group / mosaic tile). Without groups all
        images are matched in one solve.
    reference : int or sequence of int
        Preferred reference image(s) (e.g. closest in time to the background exposure).
    plane : bool
        Match planes instead of constant offsets.
    mask_emission : bool
        Ignore bright emission when measuring differences.
    min_pixels : int
        Minimum overlap of a pair.
    origins : sequence of (int, int), optional
        Grid (row, column) of each image's first pixel (default: all at (0, 0)).

    Returns
    -------
    LevelSolution
        Total offsets (within-group plus group offsets) relative to the reference.
    """
    n = len(images)
    origins = _origins(images, origins)
    prefs = [reference] if isinstance(reference, int) else list(reference)
    if groups is None or len(set(groups)) <= 1:
        pairs = measure_pairs(images, plane=plane, mask_emission=mask_emission, min_pixels=min_pixels,
                              origins=origins)
        return solve_offsets(n, pairs, reference=prefs)
    groups = list(groups)
    labels = list(dict.fromkeys(groups))
    k = 3 if plane else 1
    offsets = np.zeros((n, k))
    all_pairs: list[PairDifference] = []
    rejected: list[PairDifference] = []
    stacks, stack_origins = _empty_like(images), []
    for g in labels:
        idx = [i for i in range(n) if groups[i] == g]
        sub = _subset(images, idx)
        pairs = measure_pairs(sub, plane=plane, mask_emission=mask_emission, min_pixels=min_pixels,
                              origins=[origins[i] for i in idx])
        sol = solve_offsets(len(idx), pairs, reference=[idx.index(r) for r in prefs if r in idx])
        for local, i in enumerate(idx):
            offsets[i] = sol.offsets[local]
        all_pairs += [PairDifference(idx[p.i], idx[p.j], p.delta, p.sigma, p.npix, p.rms)
                      for p in sol.pairs]
        rejected += sol.rejected
        stack, origin = _group_mean(sub, [origins[i] for i in idx],
                                    [offsets[i] for i in idx])
        stacks.append(stack)
        stack_origins.append(origin)
    group_pairs = measure_pairs(stacks, plane=plane, mask_emission=mask_emission,
                                min_pixels=min_pixels, origins=stack_origins)
    ref_groups = [labels.index(groups[r]) for r in prefs if 0 <= r < n]
    gsol = solve_offsets(len(labels), group_pairs, reference=ref_groups)
    for i in range(n):
        offsets[i] += gsol.offsets[labels.index(groups[i])]
    refs = [r for r in prefs if 0 <= r < n][:1] or [0]
    linked = {p.i for p in all_pairs} | {p.j for p in all_pairs}
    linked_groups = {p.i for p in gsol.pairs} | {p.j for p in gsol.pairs}
    isolated = [i for i in range(n) if i not in linked and labels.index(groups[i]) not in linked_groups]
    return LevelSolution(offsets, refs, all_pairs, rejected + gsol.rejected, isolated,
                         list(gsol.pairs))


def _group_mean(images: Sequence[np.ndarray], origins: Sequence[tuple[int, int]],
                offsets: Sequence[np.ndarray]) -> tuple[np.ndarray, tuple[int, int]]:
    """NaN-aware mean of level-corrected images over the box that holds them all, and its origin."""
    y0 = min(o[0] for o in origins)
    x0 = min(o[1] for o in origins)
    y1 = max(o[0] + im.shape[0] for im, o in zip(images, origins, strict=True))
    x1 = max(o[1] + im.shape[1] for im, o in zip(images, origins, strict=True))
    total = np.zeros((y1 - y0, x1 - x0))
    count = np.zeros((y1 - y0, x1 - x0))
    for im, (oy, ox), coef in zip(images, origins, offsets, strict=True):
        yy, xx = np.indices(im.shape)
        corr = im - _level(coef, xx + ox, yy + oy)
        ok = np.isfinite(corr)
        win = (slice(oy - y0, oy - y0 + im.shape[0]), slice(ox - x0, ox - x0 + im.shape[1]))
        total[win][ok] += corr[ok]
        count[win] += ok
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / count, np.nan), (y0, x0)


def _level(coef: np.ndarray, xx: np.ndarray, yy: np.ndarray) -> np.ndarray | float:
    if len(coef) == 1:
        return float(coef[0])
    return coef[0] + coef[1] * xx + coef[2] * yy


def apply_offsets(images: Sequence[np.ndarray], solution: LevelSolution,
                  origins: Sequence[tuple[int, int]] | None = None) -> list[np.ndarray]:
    """Subtract solved offsets (or planes) from images on the common grid (new arrays)."""
    out = []
    for im, coef, (oy, ox) in zip(images, solution.offsets, _origins(images, origins), strict=True):
        yy, xx = np.indices(im.shape)
        out.append(im - _level(coef, xx + ox, yy + oy))
    return out
