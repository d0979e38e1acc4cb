"""Robust statistics and masks of sky-dominated images (pure functions on arrays).

NaN-aware and sigma-clipped medians along an axis (a sort, not a Python loop), clipped background
level and noise, source masks (photutils segmentation, dilated) and a deterministic Butterworth
high-pass that removes diffuse emission. Used by the destriping methods.
"""

from __future__ import annotations

import functools

import numpy as np
import scipy.fft

#: Up to this many slices :func:`clipped_median` searches each with ``numpy.searchsorted`` (the
#: vectorised search pays ~11 Python-level steps per clipping bound, whatever the number of slices).
FEW_SLICES = 32


def masked_median(a: np.ndarray, axis: int = 1) -> np.ndarray:
    """NaN-ignoring median along ``axis`` (NaN where a slice is all NaN); a sort, not a Python loop."""
    return clipped_median(a, axis, max_iters=0)


def _slices_copy(a: np.ndarray, axis: int, block: int = 128) -> np.ndarray:
    """A float copy of ``a`` with ``axis`` last and contiguous (to be sorted in place).

    float32 stays float32 (half the memory traffic; a median of float32 values is one of them).

    Columns of an image are copied in blocks of ``block`` rows: a transposing copy a block at a
    time stays in the cache (2-3x faster than one strided copy of a 2048^2 frame).
    """
    dtype = np.float32 if a.dtype == np.float32 else float     # float32 data sorts as float32
    if a.ndim == 2 and axis in (0, -2):
        out = np.empty(a.shape[::-1], dtype)
        for i in range(0, a.shape[0], block):
            out[:, i:i + block] = a[i:i + block].T
        return out
    return np.array(np.moveaxis(a, axis, -1), dtype=dtype, order="C")


def clipped_median(a: np.ndarray, axis: int = 1, sigma: float = 3.0, max_iters: int = 5, *,
                   overwrite_input: bool = False) -> np.ndarray:
    """Sigma-clipped NaN-ignoring median along ``axis``, vectorised.

    Each slice is sorted once; clipping then only moves the bounds of the kept window in the
    sorted values (median at the window's middle, scale from its 16-84 % range).

    Parameters
    ----------
    a : numpy.ndarray
        Data (NaN = masked).
    axis : int
        Axis along which medians are taken.
    sigma : float
        Clipping threshold in standard deviations.
    max_iters : int
        Clipping iterations (0 = plain median).
    overwrite_input : bool
        Sort ``a`` itself along the last axis when it is a float32 or float64 array (its values
        are then reordered within each slice), saving the copy, as ``numpy.median`` allows.

    Returns
    -------
    numpy.ndarray
        Medians; NaN where a slice has no finite value.
    """
    a = np.asarray(a)
    in_place = (overwrite_input and a.ndim >= 1 and axis in (-1, a.ndim - 1)
                and a.dtype in (np.float32, np.float64) and a.flags.writeable)
    s = a if in_place else _slices_copy(a, axis)
    s.sort(axis=-1)
    if s.shape[-1] == 0:  # empty slices have no median
        return np.full(s.shape[:-1], np.nan)
    n = np.isfinite(s).sum(axis=-1)
    lo = np.zeros_like(n)
    hi = n.copy()
    last = s.shape[-1] - 1

    def at(q: np.ndarray) -> np.ndarray:
        return np.take_along_axis(s, np.clip(q, 0, last)[..., None], -1)[..., 0]

    def median(lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
        m = hi - lo
        return 0.5 * (at(lo + np.clip((m - 1) // 2, 0, None)) + at(lo + m // 2))

    def count(v: np.ndarray, strict: bool) -> np.ndarray:
        """Finite values ``< v`` (``<= v`` when not strict) per slice: a binary search in the sort."""
        if n.size <= FEW_SLICES:                # a few long slices: numpy's search, slice by slice
            side = "left" if strict else "right"
            flat_s, flat_n = s.reshape(-1, s.shape[-1]), n.ravel()
            flat_v = np.broadcast_to(v, n.shape).ravel()
            return np.array([np.searchsorted(row[:k], x, side) if x == x else 0  # as below: none
                             for row, k, x in zip(flat_s, flat_n, flat_v, strict=True)],
                            dtype=n.dtype).reshape(n.shape)
        a, b = np.zeros_like(n), n.copy()
        with np.errstate(invalid="ignore"):
            while (a < b).any():
                mid = (a + b) // 2
                val = at(mid)
                below = (val < v) if strict else (val <= v)
                below &= a < b
                a, b = np.where(below, mid + 1, a), np.where(below | (a >= b), b, mid)
        return a

    med = median(lo, hi)
    for _ in range(max_iters):
        m = hi - lo
        std = 0.5 * (at(lo + (0.8413 * (m - 1)).astype(int)) - at(lo + (0.1587 * (m - 1)).astype(int)))
        width = np.where(std > 0, sigma * std, np.inf)
        new_lo, new_hi = count(med - width, True), count(med + width, False)
        new_hi = np.maximum(new_hi, new_lo + 1)
        if np.array_equal(new_lo, lo) and np.array_equal(new_hi, hi):
            break
        lo, hi = np.where(n > 0, new_lo, 0), np.where(n > 0, np.minimum(new_hi, n), 0)
        med = median(lo, hi)
    return np.where(n > 0, med, np.nan)


def fill_nan_1d(r: np.ndarray) -> np.ndarray:
    """A 1-D profile with its NaN gaps linearly interpolated (all-NaN or all-finite: NaN -> 0)."""
    good = np.isfinite(r)
    if good.all() or not good.any():
        return np.nan_to_num(r)
    idx = np.arange(r.size)
    return np.interp(idx, idx[good], r[good])


def background_stats(data: np.ndarray, bad: np.ndarray, sigma: float = 3.0, max_iters: int = 10,
                     stride: int = 3) -> tuple[float, float]:
    """Sigma-clipped median and standard deviation of the good pixels (on a regular subsample)."""
    sub = np.where(bad[::stride, ::stride], np.nan, data[::stride, ::stride]).ravel()
    med = float(clipped_median(sub[None], 1, sigma, max_iters)[0])
    if not np.isfinite(med):
        return 0.0, 0.0
    dev = np.abs(sub - med)
    cut = sigma * 1.4826 * np.nanmedian(dev)
    std = float(np.nanstd(sub[dev <= cut])) if np.isfinite(cut) else 0.0
    return med, std


def source_mask(data: np.ndarray, bad: np.ndarray, nsigma: float = 3.0, npixels: int = 3,
                dilate_size: int = 11, max_iters: int = 10) -> np.ndarray:
    """Positive and negative sources beyond ``nsigma`` clipped rms, dilated by a square.

    Parameters
    ----------
    data : numpy.ndarray
        Image.
    bad : numpy.ndarray
        Pixels to ignore.
    nsigma : float
        Threshold (clipped standard deviations from the clipped median).
    npixels : int
        Minimum connected pixels.
    dilate_size : int
        Side of the dilating square (1 = none).
    max_iters : int
        Clipping iterations of the background statistics.

    Returns
    -------
    numpy.ndarray
        Boolean source mask.
    """
    from scipy.ndimage import label

    med, std = background_stats(data, bad, nsigma, max_iters)
    if std <= 0:
        return np.zeros(data.shape, bool)
    # positive and negative sources in one segmentation (a region above +t touching one below -t
    # would need a jump of 2t between neighbouring pixels; counting them together changes nothing).
    # What photutils' detect_sources does (pixels > threshold, 8-connected, at least npixels each),
    # without building its segmentation image: the labels' sizes by bincount.
    with np.errstate(invalid="ignore"):        # two comparisons: no float temporaries
        above = (data > med + nsigma * std) | (data < med - nsigma * std)
    above &= ~bad
    if npixels <= 3:                           # the usual sizes: from neighbour counts, no labels
        above &= ~_in_tiny_regions(above, npixels)
    else:
        labels, n = label(above, structure=np.ones((3, 3), bool))
        if n == 0:
            return above
        idx = np.flatnonzero(above)            # the labels' sizes from the pixels above only
        small = np.bincount(labels.ravel()[idx], minlength=n + 1) < npixels
        if small[1:].any():                    # drop them
            above.ravel()[idx[small[labels.ravel()[idx]]]] = False
    mask = above
    if dilate_size > 1 and mask.any():
        mask = dilate(mask, dilate_size)
    return mask


def _box3(a: np.ndarray, op: np.ufunc) -> np.ndarray:
    """``op`` (add or maximum) of each pixel's 3 x 3 neighbourhood, outside = 0 (two 1-D passes)."""
    p = np.pad(a, 1)
    h = op(op(p[:, :-2], p[:, 1:-1]), p[:, 2:])
    return op(op(h[:-2], h[1:-1]), h[2:])


def _in_tiny_regions(above: np.ndarray, npixels: int) -> np.ndarray:
    """Pixels of ``above`` in 8-connected regions of fewer than ``npixels`` (at most 3) pixels.

    A region of one pixel is a pixel without neighbours; one of two is a pair of pixels that each
    have exactly one neighbour. With ``N`` each above pixel's number of above neighbours, a pixel
    with ``N == 1`` is in a pair when the largest ``N`` around it (itself included) is 1. What
    ``scipy.ndimage.label`` and a count of each label's pixels give (tested), in a few passes.
    """
    if npixels <= 1:
        return np.zeros(above.shape, bool)
    a = above.view(np.uint8)
    n = _box3(a, np.add) - a                   # at most 8: uint8 holds it
    n *= a
    tiny = above & (n == 0)
    if npixels >= 3:
        tiny |= (n == 1) & (_box3(n, np.maximum) == 1)
    return tiny


def _dilate_axis(mask: np.ndarray, size: int, axis: int) -> np.ndarray:
    """``mask`` OR-ed over a window of ``size`` along ``axis`` (centred as scipy.ndimage centres it).

    The window is built by doubling: after each step a pixel holds the OR of the next ``w`` pixels,
    so ``size`` costs ~log2(size) passes over the mask. The mask is first padded with ``size // 2``
    False pixels, which shifts the forward window onto the centred one and treats the outside as
    False (as a running maximum with reflected edges does).
    """
    h = size // 2
    m = np.moveaxis(mask, axis, -1)
    f = np.concatenate([np.zeros((*m.shape[:-1], h), bool), m], axis=-1)
    w = 1
    while w < size:
        s = min(w, size - w)
        f[..., :-s] |= f[..., s:]          # numpy buffers the overlapping operands
        w += s
    return np.moveaxis(f[..., :m.shape[-1]], -1, axis)


def dilate(mask: np.ndarray, size: int) -> np.ndarray:
    """Binary dilation of a 2-D mask by a ``size`` x ``size`` square (separable: rows, then columns).

    Equal to ``scipy.ndimage.maximum_filter`` of the mask with that size, in ~log2(size) boolean
    passes per axis instead of a running maximum per pixel (5x faster at 2048^2).
    """
    if size <= 1:
        return np.array(mask, bool)
    return _dilate_axis(_dilate_axis(np.asarray(mask, bool), size, 1), size, 0)


@functools.lru_cache(maxsize=4)
def _butterworth_high(ny: int, nx: int, scale: float, order: int) -> np.ndarray:
    """Butterworth high-pass on the (ny, nx) DCT-II grid (frequency k / 2n), float32; kept per shape.

    Every frame of a band has the same shape, so a worker computes it once.
    """
    fy = (np.arange(ny, dtype=np.float32) / np.float32(2 * ny))[:, None]
    fx = (np.arange(nx, dtype=np.float32) / np.float32(2 * nx))[None, :]
    with np.errstate(divide="ignore", over="ignore"):
        ratio = np.float32(1.0 / scale) ** 2 / (fy * fy + fx * fx)      # (fc / f)^2
        high = 1.0 / (1.0 + ratio ** order)
    high[0, 0] = 0.0
    high.flags.writeable = False
    return high


def filter_diffuse(data: np.ndarray, bad: np.ndarray, scale: float = 200.0, order: int = 2
                   ) -> np.ndarray:
    """Remove emission on scales larger than ``scale`` with a Butterworth high-pass filter.

    Bad pixels are first filled from a heavily smoothed version of the image (deterministic, unlike
    the seed's random noise). The filter is applied to the DCT-II of the image, which is the
    convolution of the image mirrored about its edges (no edge ringing, no padding, no wrap-around:
    the transform is of the frame's own size). Single precision: the filter's own precision is far below
    the data's noise.

    Parameters
    ----------
    data : numpy.ndarray
        Image.
    bad : numpy.ndarray
        Pixels to fill before filtering (returned as NaN).
    scale : float
        Cut-off scale (pixels): the filter passes half the power at wavelength ``scale``.
    order : int
        Butterworth order.

    Returns
    -------
    numpy.ndarray
        High-passed image (NaN at ``bad``), float32 for float32 data, else float64.
    """
    filled = np.where(bad, np.nan, np.asarray(data, np.float32))
    ny, nx = filled.shape
    holes = ~np.isfinite(filled)
    if holes.any():
        # deterministic fill: block medians (blocks ~ scale/4), each from every other pixel of its
        # block (a quarter of the sort: it only fills holes), at the holes' blocks
        b = max(int(scale // 4), 1)
        st = 2 if b >= 8 else 1
        sub = filled[::st, ::st]
        bs = -(-b // st)
        pad_y, pad_x = (-sub.shape[0]) % bs, (-sub.shape[1]) % bs
        blocks = np.pad(sub, ((0, pad_y), (0, pad_x)), constant_values=np.nan)
        blocks = blocks.reshape(blocks.shape[0] // bs, bs, blocks.shape[1] // bs, bs).transpose(0, 2, 1, 3)
        coarse = masked_median(blocks.reshape(*blocks.shape[:2], -1), axis=-1)
        fill_val = np.nanmedian(coarse) if np.isfinite(coarse).any() else 0.0
        coarse = np.where(np.isfinite(coarse), coarse, fill_val)
        yy, xx = np.nonzero(holes)
        filled[yy, xx] = coarse[yy // (bs * st), xx // (bs * st)]
    spec = scipy.fft.dctn(filled, type=2, norm="ortho")
    spec *= _butterworth_high(ny, nx, float(scale), order)
    out = scipy.fft.idctn(spec, type=2, norm="ortho", overwrite_x=True)
    if np.asarray(data).dtype != np.float32:    # float32 data are worked on as float32
        out = out.astype(float)
    out[bad] = np.nan
    return out


def sky_level(data: np.ndarray, bad: np.ndarray, sigma: float = 3.0, npixels: int = 5,
              dilate_size: int = 5, max_iters: int = 20) -> float:
    """The sky level of an image: sigma-clipped median of the pixels off sources and bad pixels.

    Parameters
    ----------
    data : numpy.ndarray
        Image.
    bad : numpy.ndarray
        Pixels to ignore (DQ-flagged, non-finite).
    sigma : float
        Clipping and detection threshold (clipped standard deviations).
    npixels : int
        Minimum connected pixels of a source.
    dilate_size : int
        Side of the square dilating the source mask.
    max_iters : int
        Clipping iterations.

    Returns
    -------
    float
        The level (0 when no pixel is left).
    """
    mask = bad | source_mask(data, bad, sigma, npixels, dilate_size, max_iters)
    level, _ = background_stats(data, mask, sigma, max_iters, stride=1)
    return level
