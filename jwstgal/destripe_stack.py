"""Stack-based stripe subtraction: each frame against the overlapping others (pure functions).

A frame's stripes are measured on its difference with a reference built from the other frames that
cover it (already level-matched, resampled onto its pixels by the caller's ``resample``); iterating
removes the other frames' own stripes from the references as well.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
from scipy.ndimage import median_filter

from jwstgal.destripe import DestripeResult, amplifier_slices, row_profiles
from jwstgal.dq import bad_pixel_mask
from jwstgal.masking import background_stats, clipped_median, fill_nan_1d, source_mask

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StackParams:
    """Parameters of :func:`stack_stripe_model` (the ``[stack_destripe]`` table).

    Attributes
    ----------
    quadrants : bool
        Fit each amplifier band separately.
    vertical : bool
        Also fit column structure.
    min_mask_frac : float
        Minimum unmasked fraction of an amplifier row (else the full row is used).
    sigma : float
        Detection and clipping threshold.
    dilate_size : int
        Dilation of the mask of residual sources.
    max_iters : int
        Clipping iterations.
    min_overlap_frac : float
        Other exposures must cover this fraction of a frame to enter its reference.
    smooth_scale : int
        Median-filter the measured row profiles over this many rows (0 = off): the single-frame
        step already took the small scales, and the reference's own noise is smoothed away.
    dq_flags : list of str
        DQ flags that exclude a pixel.
    combine : {"mean", "median"}
        How the levelled overlapping frames make a frame's reference (a weighted mean, or the
        median, which resists a frame with residual artefacts).
    large_scale : bool
        After the stripe fit, a full-width row pass against the reference smoothed along columns
        (boxcar of ``ny / large_scale_factor`` rows), for stripes on scales of the emission
        (the original's ``do_large_scale``, used for NIRCam long).
    large_scale_factor : int
        The boxcar is the frame height over this.
    tolerance : float
        Stop iterating once no frame's model changes by more than this rms between passes
        (0: always run every pass); the pass after convergence writes the results.
    """

    quadrants: bool = True
    vertical: bool = False
    min_mask_frac: float = 0.2
    sigma: float = 3.0
    dilate_size: int = 7
    max_iters: int = 10
    min_overlap_frac: float = 0.5
    smooth_scale: int = 31
    dq_flags: list[str] = field(default_factory=lambda: ["DO_NOT_USE", "NON_SCIENCE"])
    combine: str = "mean"
    large_scale: bool = False
    large_scale_factor: int = 4
    tolerance: float = 0.0

    def as_dict(self) -> dict:
        """Plain dict (for headers and step records)."""
        return asdict(self)


@dataclass(frozen=True)
class StripeModel:
    """A stripe model kept as its profiles (a few rows of numbers, not a frame).

    ``expand(shape)`` gives the frame: ``cols`` on every row, each amplifier band's ``rows`` on
    its columns, minus ``offset`` (the model's median), exactly as the model was built.
    """

    rows: tuple[np.ndarray, ...]
    amps: tuple[slice, ...]
    cols: np.ndarray | None = None
    offset: float = 0.0

    def expand(self, shape: tuple[int, ...], dtype: np.dtype | type = np.float64) -> np.ndarray:
        """The model as a frame of ``shape`` (in ``dtype``: a float32 frame's model in float32)."""
        model = np.zeros(shape, dtype)
        if self.cols is not None:
            model += self.cols[None, :].astype(dtype)
        for sl, r in zip(self.amps, self.rows, strict=True):
            model[:, sl] += np.asarray(r, dtype)[:, None]
        model -= model.dtype.type(self.offset)
        return model


def _stripe_profiles(data: np.ndarray, reference: np.ndarray, dq: np.ndarray | None, p: StackParams,
                     n_amps: int) -> tuple[StripeModel, np.ndarray]:
    """The compact stripe model of ``data - reference`` and the mask it was measured under."""
    bad = bad_pixel_mask(data, dq, None, p.dq_flags) | ~np.isfinite(reference)
    diff = data - reference
    med, _ = background_stats(diff, bad, p.sigma, p.max_iters)
    diff = diff - med
    mask = bad | source_mask(diff, bad, p.sigma, 3, p.dilate_size, p.max_iters)
    d = np.where(mask, np.nan, diff)
    cols = None
    if p.vertical:
        cols = fill_nan_1d(clipped_median(d, 0, p.sigma, p.max_iters))
        cols -= np.median(cols)
        d = d - cols[None, :]
    amps = amplifier_slices(data.shape[1], n_amps if p.quadrants else 1)
    rows = []
    for r in row_profiles(d, amps, p.min_mask_frac, (p.sigma, p.max_iters)):
        r = fill_nan_1d(r)
        if p.smooth_scale > 1:
            r = median_filter(r, size=p.smooth_scale, mode="reflect")
        rows.append(r)
    model = StripeModel(tuple(rows), tuple(amps), cols)
    if p.large_scale:
        model, mask = _large_scale_pass(data, reference, bad, model, p)
    return StripeModel(model.rows, model.amps, cols, float(np.median(model.expand(data.shape)))), mask


def _large_scale_pass(data: np.ndarray, reference: np.ndarray, bad: np.ndarray, model: StripeModel,
                      p: StackParams) -> tuple[StripeModel, np.ndarray]:
    """Full-width row structure left against the reference smoothed along columns (added to the rows)."""
    from scipy.ndimage import uniform_filter1d

    ref = np.array(reference, float)
    row_fill = np.nanmedian(np.where(np.isfinite(ref), ref, np.nan), axis=1)
    ref = np.where(np.isfinite(ref), ref, np.nan_to_num(row_fill)[:, None])
    smooth = uniform_filter1d(ref, size=max(data.shape[0] // p.large_scale_factor, 1), axis=0, mode="reflect")
    d2 = data - model.expand(data.shape) - smooth
    med, _ = background_stats(d2, bad, p.sigma, p.max_iters)
    d2 = d2 - med
    mask = bad | source_mask(d2, bad, p.sigma, 3, p.dilate_size, p.max_iters)
    r = fill_nan_1d(clipped_median(np.where(mask, np.nan, d2), 1, p.sigma, p.max_iters))
    r -= np.median(r)
    return StripeModel(tuple(rr + r for rr in model.rows), model.amps, model.cols), mask


def stack_stripe_model(
    data: np.ndarray,
    reference: np.ndarray,
    dq: np.ndarray | None = None,
    params: StackParams | None = None,
    *,
    n_amps: int = 1,
) -> DestripeResult:
    """Stripe model of a frame from its difference with the stack of overlapping frames.

    ``reference`` is the (level-matched) average of the *other* exposures resampled onto this
    frame's pixels. Real emission cancels in ``data - reference`` while this frame's stripes do not
    (the others' stripes are independent and average down), so the stripes can be measured even
    across bright extended emission where a single-frame method must mask or filter.

    Parameters
    ----------
    data : numpy.ndarray
        The frame.
    reference : numpy.ndarray
        Average of the other frames on this frame's grid (NaN where none covers).
    dq : numpy.ndarray, optional
        DQ of the frame.
    params : StackParams, optional
        Settings.
    n_amps : int
        Amplifier bands (NOUTPUTS).

    Returns
    -------
    DestripeResult
        Model to subtract (rows per amplifier, plus columns with ``vertical``), centred.
    """
    data = working_frame(data)
    model, mask = _stripe_profiles(data, reference, dq, params or StackParams(), n_amps)
    return DestripeResult(model=model.expand(data.shape), mask=mask,
                          amp_offsets=np.zeros(len(model.amps)))


def stack_destripe_iter(
    n: int,
    load: Callable[[int], tuple[np.ndarray, np.ndarray | None]],
    resample: Callable[[int, int, np.ndarray], np.ndarray],
    params: StackParams | None = None,
    *,
    n_amps: list[int] | None = None,
    iterations: int = 3,
    overlaps: np.ndarray | None = None,
    weights: Sequence[float] | None = None,
) -> Iterator[tuple[int, DestripeResult]]:
    """Iterated multi-exposure stripe subtraction, streamed: memory of one frame and its neighbours.

    Each pass builds, for every frame, the average of the *other* frames (each already corrected
    with its current model, levelled to this frame by the clipped median of their difference, and
    resampled onto this frame's pixels), then re-measures the frame's stripes against it with
    :func:`stack_stripe_model`. Other frames' stripes enter a reference at 1/sqrt(N-1) and at other
    detector rows; iterating removes them from the references as well.

    Frames are fetched through ``load`` when needed and the models are kept as profiles
    (:class:`StripeModel`), so memory does not grow with the number of frames; each frame's final
    result is yielded as soon as it is known (in the last pass), for the caller to write.

    Parameters
    ----------
    n : int
        Number of frames.
    load : callable
        ``load(i)`` returns frame i (float) and its DQ (or None).
    resample : callable
        ``resample(j, i, image)`` returns ``image`` (frame j's grid) on frame i's grid, NaN where j
        does not cover.
    params : StackParams, optional
        Settings.
    n_amps : list of int, optional
        Amplifier bands per frame (default 1).
    iterations : int
        Passes.
    overlaps : numpy.ndarray, optional
        Boolean (n, n): which frames may enter which reference (default: all pairs; pairs covering
        less than ``min_overlap_frac`` of a frame are dropped on the first pass).
    weights : sequence of float, optional
        Weight of each frame in the others' references (``combine = "mean"``; default equal).

    Yields
    ------
    (int, DestripeResult)
        Frame index and its model (subtract it), in frame order.
    """
    p = params or StackParams()
    amps = n_amps or [1] * n
    use = np.ones((n, n), bool) if overlaps is None else overlaps.copy()
    np.fill_diagonal(use, False)
    empty = np.array([not (~_bad(p, *load(i))).any() for i in range(n)], bool)
    use[empty, :] = False  # no valid pixel: neither fitted nor a reference
    use[:, empty] = False
    models: list[StripeModel | None] = [None] * n

    def unchanged(i: int) -> DestripeResult:
        data, dq = load(i)
        model = models[i].expand(data.shape) if models[i] is not None else np.zeros(data.shape)
        return DestripeResult(model, _bad(p, data, dq), np.zeros(1))

    if n < 2 or iterations < 1:
        yield from ((i, unchanged(i)) for i in range(n))
        return
    w = np.ones(n) if weights is None else np.asarray(weights, float)
    converged = False
    for it in range(iterations):
        last = it == iterations - 1 or converged
        new_models = list(models)
        for i in range(n):
            data_i, dq_i = load(i)
            others = ((int(j), resample(int(j), i, corrected_frame(*load(int(j)), models[int(j)], p)))
                      for j in np.flatnonzero(use[i]))
            model, mask, kept = fit_frame(data_i, dq_i, models[i], others, p, w, amps[i], prune=it == 0)
            if it == 0:
                use[i] = False
                use[i, kept] = True
            if model is None:
                if last:
                    yield i, unchanged(i)
                continue
            new_models[i] = model
            if last:
                yield i, DestripeResult(model.expand(data_i.shape), mask, np.zeros(len(model.amps)))
        if p.tolerance > 0 and not last:
            change = max((rms_change(models[i], new_models[i], load(i)[0].shape) for i in range(n)),
                         default=0.0)
            converged = change < p.tolerance
            log.debug("stack destripe pass %d: largest model change %.3g", it + 1, change)
        models = new_models
        if last:
            log.info("stack destriping: %d passes%s", it + 1, " (converged)" if converged else "")
            return


def _bad(p: StackParams, data: np.ndarray, dq: np.ndarray | None) -> np.ndarray:
    return bad_pixel_mask(data, dq, None, p.dq_flags)


def corrected_frame(data: np.ndarray, dq: np.ndarray | None, model: StripeModel | None,
                    p: StackParams) -> np.ndarray:
    """A frame with its current stripe model subtracted, NaN on bad pixels (in the frame's float type)."""
    m = model.expand(data.shape, data.dtype) if model is not None else 0.0
    return np.where(_bad(p, data, dq), np.nan, data - m)


def fit_frame(data: np.ndarray, dq: np.ndarray | None, model: StripeModel | None,
              others: Iterable[tuple[int, np.ndarray]], p: StackParams, weights: np.ndarray, n_amps: int,
              *, prune: bool = False) -> tuple[StripeModel | None, np.ndarray | None, list[int]]:
    """One pass of one frame: its reference from the others, then its stripes against it.

    Parameters
    ----------
    data, dq : numpy.ndarray
        The frame and its DQ.
    model : StripeModel or None
        Its current model (from the previous pass).
    others : iterable of (int, numpy.ndarray)
        Each other frame's index and its corrected image resampled onto this frame (consumed one
        at a time: memory of one frame).
    p : StackParams
        Settings.
    weights : numpy.ndarray
        Weight of every frame (indexed by the others' indices).
    n_amps : int
        Amplifier bands of this frame.
    prune : bool
        Drop others covering less than ``min_overlap_frac`` of the frame (the first pass).

    Returns
    -------
    (StripeModel or None, numpy.ndarray or None, list of int)
        The new model and its mask (None when no other frame covers this one) and the others used.
    """
    data = working_frame(data)
    valid = ~_bad(p, data, dq)
    corrected_i = corrected_frame(data, dq, model, p)
    kind = data.dtype.type                    # a float32 frame is stacked in float32 (issue #29)
    acc = np.zeros(data.shape, data.dtype)
    cnt = np.zeros_like(acc)
    stack, kept = [], []
    n_valid = np.count_nonzero(valid)
    for j, other in others:
        ok = np.isfinite(other) & valid
        n_ok = np.count_nonzero(ok)
        if prune and (n_ok == 0 or n_ok < p.min_overlap_frac * n_valid):
            continue
        kept.append(j)
        delta = kind(level_offset(other - corrected_i, p))
        acc += np.where(ok, kind(weights[j]) * (other - delta), kind(0))
        cnt += np.where(ok, kind(weights[j]), kind(0))
        if p.combine == "median":
            stack.append(np.where(ok, other - delta, np.nan))
    if not cnt.any():
        return None, None, kept
    if stack:                       # median where at least one other frame covers
        reference = np.full(data.shape, np.nan, data.dtype)
        covered = cnt > 0
        reference[covered] = np.nanmedian(np.array(stack)[:, covered], axis=0)
    else:
        reference = np.where(cnt > 0, acc / np.where(cnt > 0, cnt, 1), np.nan)
    new, mask = _stripe_profiles(data, reference, dq, p, n_amps)
    return new, mask, kept


def working_frame(data: np.ndarray) -> np.ndarray:
    """A frame as the stack works on it: float32 and float64 frames in their own type, others as float64.

    In native byte order (FITS data are big-endian), without a copy when it already is.
    """
    data = np.asarray(data)
    if data.dtype.kind == "f" and data.dtype.itemsize in (4, 8):
        return data.astype(data.dtype.newbyteorder("="), copy=False)
    return data.astype(np.float64)


def level_offset(diff: np.ndarray, p: StackParams, stride: int = 3) -> float:
    """Clipped median of the finite pixels of a difference of two frames (their level offset).

    Taken on every ``stride``-th pixel in each direction (as :func:`jwstgal.masking.background_stats`
    does): a 2048^2 overlap still gives ~4e5 pixels, whose median is known to 0.2 % of a pixel's
    noise, for a ninth of the sort. All finite pixels are used when the subsample has none.
    """
    sub = diff[::stride, ::stride]
    sub = sub[np.isfinite(sub)]
    if sub.size == 0:
        sub = diff[np.isfinite(diff)]
    return float(clipped_median(sub[None], 1, p.sigma, p.max_iters)[0])


def rms_change(old: StripeModel | None, new: StripeModel | None, shape: tuple[int, ...]) -> float:
    """Rms difference of two models of a frame (infinite when there was none before)."""
    if new is None:
        return 0.0
    if old is None:
        return float("inf")
    return float(np.sqrt(np.mean((new.expand(shape) - old.expand(shape)) ** 2)))


def stack_destripe_all(
    frames: list[np.ndarray],
    dqs: list[np.ndarray | None],
    resample: Callable[[int, int, np.ndarray], np.ndarray],
    params: StackParams | None = None,
    *,
    n_amps: list[int] | None = None,
    iterations: int = 3,
    overlaps: np.ndarray | None = None,
    weights: Sequence[float] | None = None,
) -> list[DestripeResult]:
    """:func:`stack_destripe_iter` on frames held in memory; one result per frame (subtract it).

    Parameters
    ----------
    frames : list of numpy.ndarray
        Frames (each on its own detector grid).
    dqs : list of numpy.ndarray or None
        DQ arrays.
    resample, params, n_amps, iterations, overlaps, weights
        As for :func:`stack_destripe_iter`.

    Returns
    -------
    list of DestripeResult
    """
    arrays = [working_frame(f) for f in frames]
    return [res for _, res in stack_destripe_iter(
        len(arrays), lambda i: (arrays[i], dqs[i]), resample, params, n_amps=n_amps,
        iterations=iterations, overlaps=overlaps, weights=weights)]
