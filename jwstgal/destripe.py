"""Single-frame removal of NIRCam 1/f stripes (pure functions on arrays).

HxRG detectors read each amplifier's band of columns pixel by pixel along rows, so 1/f noise in
time becomes horizontal stripes, different in every amplifier band, plus weaker column structure;
MIRI shows row and column striping. Every method here builds an additive *stripe model* from the
sky-free part of the frame (DQ-bad pixels, sources and optionally diffuse emission masked) and the
caller subtracts it.

Methods for the row pass (``method``):

- ``median_filter`` (default): multi-scale high-pass of the masked row-median profile of each
  amplifier: for each scale s, ``n_s = r - median_filter(r, s)`` is removed from ``r``; the model
  is the sum of all ``n_s``, so row structure on scales below the largest ``s`` goes and slower sky
  gradients stay. A row median of ``data - n(y)`` is ``median(data) - n(y)``, so the profile is
  measured once, not once per scale as in the seed and pjpipe (identical result, far faster).
- ``row_median``: sigma-clipped row median per amplifier, minus its median.
- ``remstripe``: row then column clipped medians per amplifier (CEERS-like).
- ``smooth``: multi-scale boxcar high-pass of the clipped row profile.
- ``pca``: columns of each amplifier are observations of the shared row pattern; a robust
  eigensystem (:mod:`pca`) is fitted to the least-masked columns and every column is reconstructed
  from its unmasked pixels by gappy projection.

Before the row pass, amplifier offsets can be levelled on the amplifier boundaries and a column pass
removes column structure (multi-scale like the rows). The DQ mask uses the full bit depth (the seed
cast DQ to uint8 and lost NON_SCIENCE = 512). Optional diffuse-emission filtering (a Butterworth
high-pass in Fourier space, deterministic) lets stripes be measured through extended emission.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from typing import Literal

import numpy as np
from scipy.ndimage import median_filter, uniform_filter1d

from jwstgal.dq import bad_pixel_mask
from jwstgal.masking import (
    clipped_median,
    fill_nan_1d,
    filter_diffuse,
    masked_median,
    source_mask,
)

log = logging.getLogger(__name__)

METHODS = ("median_filter", "row_median", "remstripe", "smooth", "pca")


@dataclass(frozen=True)
class DestripeParams:
    """Parameters of :func:`destripe` (the ``[destripe]`` config table has the same keys).

    Attributes
    ----------
    method : str
        Row-pass method, one of :data:`METHODS`.
    quadrants : bool
        Fit each amplifier band separately (ignored for one-output readouts).
    level_amplifiers : bool
        Remove amplifier offsets measured across the amplifier boundaries first.
    vertical : bool
        Column pass before the row pass.
    filter_scales : list of int
        Median-filter scales (pixels) of the multi-scale methods, small to large.
    min_mask_frac : float
        Minimum unmasked fraction of an amplifier row; emptier rows use the full-row value.
    sigma : float
        Detection and clipping threshold (standard deviations).
    npixels : int
        Minimum connected pixels of a source.
    dilate_size : int
        Size of the square dilating the source mask.
    max_iters : int
        Sigma-clipping iterations.
    filter_diffuse : bool
        Remove emission on scales larger than ``diffuse_scale`` before measuring the stripes.
    diffuse_scale : float
        Cut-off scale of the diffuse filter (pixels).
    pca_components : int
        Eigenvectors fitted by the ``pca`` method.
    pca_reconstruct_components : int
        Eigenvectors used to reconstruct each column.
    pca_seed : int
        Seed of the robust PCA streaming order.
    dq_flags : list of str
        DQ flags (jwst pixel flag names, :mod:`jwstgal.dq`) that exclude a pixel.
    lyot : {"mask", "adjust", "include"}
        MIRI full frame: ``mask`` keeps the Lyot coronagraph out of the fit and flags it
        DO_NOT_USE in the output; ``adjust`` destripes it separately and levels it to the imager's
        background; ``include`` treats it as imager.
    """

    method: Literal["median_filter", "row_median", "remstripe", "smooth", "pca"] = "median_filter"
    quadrants: bool = True
    level_amplifiers: bool = True
    vertical: bool = True
    filter_scales: list[int] = field(default_factory=lambda: [3, 7, 15, 31, 63, 127])
    min_mask_frac: float = 0.2
    sigma: float = 3.0
    npixels: int = 3
    dilate_size: int = 11
    max_iters: int = 10
    filter_diffuse: bool = False
    diffuse_scale: float = 200.0
    pca_components: int = 10
    pca_reconstruct_components: int = 5
    pca_seed: int = 0
    dq_flags: list[str] = field(default_factory=lambda: ["DO_NOT_USE", "NON_SCIENCE"])
    lyot: Literal["mask", "adjust", "include"] = "mask"

    def as_dict(self) -> dict:
        """Plain dict (for headers and step records)."""
        return asdict(self)


@dataclass
class DestripeResult:
    """What :func:`destripe` measured.

    Attributes
    ----------
    model : numpy.ndarray
        Additive stripe model (subtract it from the data); 0 where nothing was measured.
    mask : numpy.ndarray
        Pixels excluded from the fit (DQ, non-finite, sources, emission).
    amp_offsets : numpy.ndarray
        Offsets removed per amplifier (included in ``model``).
    """

    model: np.ndarray
    mask: np.ndarray
    amp_offsets: np.ndarray


def amplifier_slices(nx: int, n_amps: int) -> list[slice]:
    """Column ranges of the amplifier bands."""
    w = nx // n_amps
    return [slice(i * w, (i + 1) * w if i < n_amps - 1 else nx) for i in range(n_amps)]


def level_amplifiers(data: np.ndarray, mask: np.ndarray, amps: list[slice], width: int = 20,
                     sigma: float = 3.0) -> np.ndarray:
    """Offsets of the amplifier bands, measured on the columns either side of each boundary.

    For each boundary the per-row medians of ``width`` columns on each side are differenced and the
    sigma-clipped median of that difference is the step; steps accumulate from the first amplifier
    and the offsets are then centred (their mean is 0, so the frame's mean level is kept).

    Parameters
    ----------
    data : numpy.ndarray
        Image.
    mask : numpy.ndarray
        Pixels to ignore.
    amps : list of slice
        Amplifier column ranges.
    width : int
        Columns used on each side of a boundary.
    sigma : float
        Clipping threshold.

    Returns
    -------
    numpy.ndarray
        Offset to subtract from each amplifier.
    """
    def strip(cols: slice) -> np.ndarray:        # the masked columns only (not a masked frame)
        return np.where(mask[:, cols], np.nan, data[:, cols])

    offsets = np.zeros(len(amps))
    for i in range(1, len(amps)):
        left = masked_median(strip(slice(amps[i].start - width, amps[i].start)), 1)
        right = masked_median(strip(slice(amps[i].start, amps[i].start + width)), 1)
        step = clipped_median((right - left)[None], 1, sigma, 10)[0]
        offsets[i] = offsets[i - 1] + (step if np.isfinite(step) else 0.0)
    return offsets - offsets.mean()


def _multiscale(profile: np.ndarray, scales: list[int], smooth: bool = False) -> np.ndarray:
    """High-pass a 1-D profile scale by scale; the sum of what each scale removed."""
    r = fill_nan_1d(profile)
    total = np.zeros_like(r)
    for s in scales:
        low = (uniform_filter1d(r, s, mode="reflect") if smooth
               else median_filter(r, size=s, mode="reflect"))
        n = r - low
        r = r - n
        total += n
    return total


def row_profiles(d: np.ndarray, amps: list[slice], min_frac: float, clip: tuple[float, int] | None,
                 overwrite: bool = False) -> list[np.ndarray]:
    """Masked row medians per amplifier (sparse rows: the full row's); ``overwrite``: sorts ``d``."""
    def med(block: np.ndarray, own: bool = False) -> np.ndarray:
        return clipped_median(block, 1, *(clip or (3.0, 0)), overwrite_input=own)

    out, sparse = [], []
    for sl in amps:
        block = d[:, sl]
        if len(amps) > 1:
            sparse.append(np.count_nonzero(np.isfinite(block), axis=1) < min_frac * block.shape[1])
        out.append(med(block, overwrite))
    if sparse and np.any(sparse):         # full-row medians, only for the rows that need them
        rows = np.flatnonzero(np.any(sparse, axis=0))
        full = med(d[rows])
        for r, sp in zip(out, sparse, strict=True):
            r[rows] = np.where(sp[rows], full, r[rows])
    return out


def column_model(d: np.ndarray, scales: list[int] | None, clip: tuple[float, int] = (3.0, 5)
                 ) -> np.ndarray:
    """Column structure c(x) of masked data ``d`` (NaN = masked).

    A multi-scale high-pass of the clipped column medians, or the centred medians themselves when
    ``scales`` is None.
    """
    c = clipped_median(d, 0, *clip)
    if scales:
        return _multiscale(c, scales)
    c = fill_nan_1d(c)
    return c - np.median(c)


def row_model(d: np.ndarray, amps: list[slice], params: DestripeParams,
              err: np.ndarray | None = None, *, overwrite: bool = False) -> np.ndarray:
    """The row-pass stripe model of masked ``d`` (NaN = masked); ``overwrite``: ``d`` may be sorted."""
    ny, nx = d.shape
    # every method writes every amplifier band, and the bands cover the frame: no zeroing
    model = np.empty((ny, nx), np.float32 if d.dtype == np.float32 else float)
    clip = (params.sigma, params.max_iters)
    if params.method == "median_filter":
        for sl, r in zip(amps, row_profiles(d, amps, params.min_mask_frac, None, overwrite), strict=True):
            model[:, sl] = _multiscale(r, params.filter_scales)[:, None]
    elif params.method == "smooth":
        for sl, r in zip(amps, row_profiles(d, amps, params.min_mask_frac, clip, overwrite), strict=True):
            model[:, sl] = _multiscale(r, params.filter_scales, smooth=True)[:, None]
    elif params.method == "row_median":
        for sl, r in zip(amps, row_profiles(d, amps, params.min_mask_frac, clip, overwrite), strict=True):
            r = fill_nan_1d(r)
            model[:, sl] = (r - np.median(r))[:, None]
    elif params.method == "remstripe":
        for sl, r in zip(amps, row_profiles(d, amps, params.min_mask_frac, clip), strict=True):
            r = fill_nan_1d(r)
            rows = r - np.median(r)
            cols = fill_nan_1d(clipped_median(d[:, sl] - rows[:, None], 0, *clip))
            model[:, sl] = rows[:, None] + (cols - np.median(cols))[None, :]
    elif params.method == "pca":
        for sl in amps:
            model[:, sl] = pca_model(d[:, sl], None if err is None else err[:, sl], params)
    else:
        msg = f"unknown destriping method {params.method!r} (allowed: {', '.join(METHODS)})"
        raise ValueError(msg)
    return model


def pca_model(d: np.ndarray, err: np.ndarray | None, params: DestripeParams) -> np.ndarray:
    """Stripe model of one amplifier band by robust + gappy PCA of its columns.

    Each column (length ny) is one observation; masked pixels are gaps. The eigensystem is fitted
    on the least-masked half of the columns (at least those with < 25 % masked), then every column
    is reconstructed from its own unmasked pixels with ``pca_reconstruct_components`` eigenvectors.
    The model is that reconstruction minus its median (stripes only carry relative structure).

    Parameters
    ----------
    d : numpy.ndarray
        Masked data of the band (NaN = masked), shape (ny, w).
    err : numpy.ndarray or None
        Per-pixel errors (inverse variances weight the projection); None = uniform.
    params : DestripeParams
        PCA settings.

    Returns
    -------
    numpy.ndarray
        Model, shape (ny, w).
    """
    from jwstgal.pca import gappy_scores, reconstruct, robust_pca

    cols = d.T                                                 # observations = columns
    good = np.isfinite(cols)
    if err is not None:
        e = err.T
        good &= np.isfinite(e) & (e > 0)
        w = np.where(good, 1.0 / np.where(good, e, 1.0) ** 2, 0.0)
    else:
        w = good.astype(float)
    med = np.nanmedian(cols) if good.any() else 0.0
    x = np.where(good, cols - med, 0.0)
    frac_masked = 1.0 - good.mean(axis=1)
    order = np.argsort(frac_masked, kind="stable")
    n_train = max(int((frac_masked < 0.25).sum()), cols.shape[0] // 2, params.pca_components + 1)
    train = order[:min(n_train, cols.shape[0])]
    es = robust_pca(x[train], good[train].astype(float), n_components=params.pca_components,
                    seed=params.pca_seed)
    es = es.truncated(params.pca_reconstruct_components)
    scores, norm = gappy_scores(x, w, es.mean, es.eigvecs)
    bad = ~np.isfinite(scores).all(axis=1)
    recon = reconstruct(np.where(bad[:, None], 0.0, scores), np.where(bad, 1.0, norm), es.mean,
                        es.eigvecs)
    model = recon.T
    return model - np.median(model)


def destripe(
    data: np.ndarray,
    dq: np.ndarray | None = None,
    err: np.ndarray | None = None,
    params: DestripeParams | None = None,
    *,
    n_amps: int = 1,
    extra_mask: np.ndarray | None = None,
) -> DestripeResult:
    """Measure the stripe model of one frame.

    Parameters
    ----------
    data : numpy.ndarray
        Rate or calibrated image (any unit; the model has the same unit).
    dq : numpy.ndarray, optional
        DQ array; pixels with any of ``params.dq_flags`` set are ignored.
    err : numpy.ndarray, optional
        Error array (non-finite errors are ignored; used as weights by ``pca``).
    params : DestripeParams, optional
        Method and settings (defaults: multi-scale median filter with amplifier levelling).
    n_amps : int
        Amplifier bands of the readout (NOUTPUTS): 4 for NIRCam full frames, 1 for subarrays and MIRI.
    extra_mask : numpy.ndarray, optional
        More pixels to keep out of the fit (e.g. MIRI's coronagraphs).

    Returns
    -------
    DestripeResult
        Model to subtract, the mask used and the amplifier offsets.
    """
    p = params or DestripeParams()
    data = np.asarray(data)
    if data.dtype != np.float32:                 # float32 works as float32, the rest as float64
        data = np.asarray(data, float)
    bad = bad_pixel_mask(data, dq, err, p.dq_flags)
    if extra_mask is not None:
        bad |= extra_mask
    amps = amplifier_slices(data.shape[1], n_amps if p.quadrants else 1)
    mask = bad | source_mask(data, bad, p.sigma, p.npixels, p.dilate_size, p.max_iters)
    offsets = np.zeros(len(amps))
    per_col = np.zeros(data.shape[1], data.dtype)  # amplifier offsets, c(x): in the data's type
    if p.level_amplifiers and len(amps) > 1:
        offsets = level_amplifiers(data, mask, amps, sigma=p.sigma)
        for sl, o in zip(amps, offsets, strict=True):
            per_col[sl] = o
    work = data - per_col[None, :] if per_col.any() else data
    if p.filter_diffuse:
        work = filter_diffuse(work, bad, p.diffuse_scale)
        mask = bad | source_mask(work, bad, p.sigma, p.npixels, p.dilate_size, p.max_iters)
    d = np.array(data) if work is data else work        # ours, masked in place
    np.copyto(d, np.nan, where=mask)
    if p.vertical:
        col = column_model(d, p.filter_scales if p.method != "row_median" else None,
                           (p.sigma, p.max_iters))
        per_col += col
        d -= col[None, :]
    model = row_model(d, amps, p, err, overwrite=True)     # d is ours, and not read after
    model += per_col[None, :]
    if log.isEnabledFor(logging.DEBUG):  # the statistics cost ~10 % of the method
        log.debug("destripe %s: model rms %.3g, %.1f%% masked", p.method, np.nanstd(model), 100 * mask.mean())
    return DestripeResult(model=model, mask=mask, amp_offsets=offsets)


def _linear_weights(n_in: int, n_out: int, box: int) -> np.ndarray:
    """The ``(n_out, n_in)`` matrix of linear interpolation from block centres to pixels.

    As ``scipy.ndimage.zoom(order=1, grid_mode=True, mode="nearest")`` interpolates: pixel ``i``
    reads block coordinate ``(i + 0.5) / box - 0.5``, clamped to the first and last block.
    """
    x = np.clip((np.arange(n_out) + 0.5) / box - 0.5, 0, n_in - 1)
    j0 = np.minimum(np.floor(x).astype(int), max(n_in - 2, 0))
    f = x - j0
    w = np.zeros((n_out, n_in))
    np.add.at(w, (np.arange(n_out), j0), 1 - f)
    np.add.at(w, (np.arange(n_out), np.minimum(j0 + 1, n_in - 1)), f)
    return w


def _smooth_background(d: np.ndarray, box: int) -> np.ndarray:
    """Median of ``box`` x ``box`` blocks (NaN ignored), interpolated back to every pixel.

    The interpolation is two small matrix products (what ``zoom(order=1)`` gives, 5x faster).
    """
    ny, nx = (-(-n // box) for n in d.shape)
    pad = np.full((ny * box, nx * box), np.nan)
    pad[:d.shape[0], :d.shape[1]] = d
    # each block's pixels in one row, medians by one sort (numpy's nanmedian loops over the blocks)
    blocks = masked_median(pad.reshape(ny, box, nx, box).transpose(0, 2, 1, 3).reshape(ny * nx, box * box),
                           axis=1).reshape(ny, nx)
    blocks = np.where(np.isfinite(blocks), blocks, np.nanmedian(blocks) if np.isfinite(blocks).any() else 0)
    return (_linear_weights(ny, d.shape[0], box) @ blocks) @ _linear_weights(nx, d.shape[1], box).T


def stripe_residual(image: np.ndarray, mask: np.ndarray, *, box: int = 32, min_pixels: int = 50
                    ) -> float:
    """Stripes in a frame: line-to-line scatter of its row and column medians over pixel noise.

    A smooth background (median of ``box``-pixel blocks) is taken out, then the medians of every
    row (and column) over the unmasked pixels are differenced line to line (what is left of sky
    and emission varies too slowly to survive that; stripes do not), and compared with what
    pixel noise alone gives a median of n pixels (1.2533 sigma / sqrt(n),
    sigma the robust rms of pixel-to-pixel differences along rows). About 1 means no stripes; the
    worse of rows and columns is returned.

    Parameters
    ----------
    image : numpy.ndarray
        Frame (any unit).
    mask : numpy.ndarray of bool
        Pixels left out (sources, bad pixels); non-finite pixels are left out too.
    box : int
        Block size (pixels) of the smooth background taken out first.
    min_pixels : int
        Fewest unmasked pixels of a line that counts.

    Returns
    -------
    float
        The ratio (NaN when fewer than 10 lines have enough pixels).
    """
    d = np.where(np.asarray(mask, bool) | ~np.isfinite(image), np.nan, np.asarray(image, float))
    d = d - _smooth_background(d, box)        # a median is noisier on a slope: take slopes out
    step = np.diff(d, axis=1)                 # neighbours in a row: sky, emission and stripes cancel
    if not np.isfinite(step).any():
        return float("nan")
    sigma = 1.4826 * float(np.nanmedian(np.abs(step - np.nanmedian(step)))) / np.sqrt(2)
    ratios = []
    for axis in (1, 0):                           # rows, then columns
        n = np.sum(np.isfinite(d), axis=axis)
        ok = np.flatnonzero(n >= min_pixels)
        if ok.size < 10 or sigma <= 0:
            continue
        med = masked_median(d[ok] if axis == 1 else d[:, ok], axis=axis)     # vectorised
        var = (1.2533 * sigma) ** 2 / n[ok]
        first = np.diff(med)
        ratios.append(float(np.sqrt(np.mean(first ** 2 / (var[1:] + var[:-1])))))
    return max(ratios) if ratios else float("nan")
