"""Stack-based stripe subtraction: each frame against the overlapping others (pure functions).

A frame's stripes are measured on its difference with a reference built from the other frames that
cover it (already level-matched, resampled onto its pixels by the caller's ``resample``); iterating
removes the other frames' own stripes from the references as well.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
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

    def as_dict(self) -> dict:
        """Plain dict (for headers and step records)."""
        return asdict(self)


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
    p = params or StackParams()
    data = np.asarray(data, float)
    bad = bad_pixel_mask(data, dq, None, p.dq_flags) | ~np.isfinite(reference)
    diff = data - reference
    med, _ = background_stats(diff, bad, p.sigma, p.max_iters)
    diff = diff - med
    mask = bad | source_mask(diff, bad, p.sigma, 3, p.dilate_size, p.max_iters)
    d = np.where(mask, np.nan, diff)
    model = np.zeros_like(data)
    if p.vertical:
        col = fill_nan_1d(clipped_median(d, 0, p.sigma, p.max_iters))
        col -= np.median(col)
        model += col[None, :]
        d = d - col[None, :]
    amps = amplifier_slices(data.shape[1], n_amps if p.quadrants else 1)
    for sl, r in zip(amps, row_profiles(d, amps, p.min_mask_frac, (p.sigma, p.max_iters)), strict=True):
        r = fill_nan_1d(r)
        if p.smooth_scale > 1:
            r = median_filter(r, size=p.smooth_scale, mode="reflect")
        model[:, sl] += r[:, None]
    model -= np.median(model)
    return DestripeResult(model=model, mask=mask, amp_offsets=np.zeros(len(amps)))


def stack_destripe_all(
    frames: list[np.ndarray],
    dqs: list[np.ndarray | None],
    resample: Callable[[int, int, np.ndarray], np.ndarray],
    params: StackParams | None = None,
    *,
    n_amps: list[int] | None = None,
    iterations: int = 3,
    overlaps: np.ndarray | None = None,
) -> list[DestripeResult]:
    """Iterated multi-exposure stripe subtraction for a set of overlapping frames.

    Each pass builds, for every frame, the average of the *other* frames (each already corrected
    with its current model, levelled to this frame by the clipped median of their difference, and
    resampled onto this frame's pixels), then re-measures the frame's stripes against it with
    :func:`stack_stripe_model`. Other frames' stripes enter a reference at 1/sqrt(N-1) and at other
    detector rows; iterating removes them from the references as well.

    Parameters
    ----------
    frames : list of numpy.ndarray
        Frames (each on its own detector grid).
    dqs : list of numpy.ndarray or None
        DQ arrays.
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

    Returns
    -------
    list of DestripeResult
        One model per frame (subtract it).
    """
    p = params or StackParams()
    n = len(frames)
    amps = n_amps or [1] * n
    bad = [bad_pixel_mask(np.asarray(f, float), d, None, p.dq_flags)
           for f, d in zip(frames, dqs, strict=True)]
    use = np.ones((n, n), bool) if overlaps is None else overlaps.copy()
    np.fill_diagonal(use, False)
    empty = np.array([not (~b).any() for b in bad])  # no valid pixel: neither fitted nor a reference
    use[empty, :] = False
    use[:, empty] = False
    models = [np.zeros(np.shape(f)) for f in frames]
    results = [DestripeResult(m, b, np.zeros(1)) for m, b in zip(models, bad, strict=True)]
    if n < 2:
        return results
    for it in range(iterations):
        corrected = [np.where(b, np.nan, f - m) for f, b, m in zip(frames, bad, models, strict=True)]
        new_results = []
        for i in range(n):
            acc = np.zeros(np.shape(frames[i]))
            cnt = np.zeros_like(acc)
            valid_i = ~bad[i]
            for j in np.flatnonzero(use[i]):
                other = resample(int(j), i, corrected[j])
                ok = np.isfinite(other) & valid_i
                if it == 0 and (not ok.any() or ok.sum() < p.min_overlap_frac * valid_i.sum()):
                    use[i, j] = False
                    continue
                delta = clipped_median((other - corrected[i])[ok][None], 1, p.sigma, p.max_iters)[0]
                acc[ok] += other[ok] - delta
                cnt[ok] += 1
            if not cnt.any():
                new_results.append(results[i])
                continue
            reference = np.where(cnt > 0, acc / np.maximum(cnt, 1), np.nan)
            new_results.append(stack_stripe_model(frames[i], reference, dqs[i], p, n_amps=amps[i]))
        results = new_results
        models = [r.model for r in results]
        log.debug("stack destripe pass %d: model rms %s", it + 1,
                  ", ".join(f"{np.std(m):.3g}" for m in models))
    return results
