"""Single-frame removal of NIRCam 1/f stripes and MIRI row/column stripes (pure functions on arrays).

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
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Literal

import numpy as np
import scipy.fft
from scipy.ndimage import binary_dilation, median_filter, uniform_filter1d

log = logging.getLogger(__name__)

#: jwst DQ bits.
DQ_FLAGS = {"DO_NOT_USE": 1, "SATURATED": 2, "JUMP_DET": 4, "DROPOUT": 8, "OUTLIER": 16,
            "REFERENCE_PIXEL": 2**31, "NON_SCIENCE": 512, "DEAD": 1024, "HOT": 2048,
            "NO_FLAT_FIELD": 2**18}

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
        DQ flags (names of :data:`DQ_FLAGS`) that exclude a pixel.
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


def dq_bits(names: list[str]) -> int:
    """OR of the named DQ flags.

    Raises
    ------
    ValueError
        For an unknown flag name.
    """
    bits = 0
    for n in names:
        if n not in DQ_FLAGS:
            msg = f"unknown DQ flag {n!r} (allowed: {', '.join(DQ_FLAGS)})"
            raise ValueError(msg)
        bits |= DQ_FLAGS[n]
    return bits


def bad_pixel_mask(data: np.ndarray, dq: np.ndarray | None, err: np.ndarray | None = None,
                   bits: int = 1 | 512) -> np.ndarray:
    """Pixels to ignore: any of ``bits`` set in DQ (full bit depth), non-finite data or error, or 0.

    Parameters
    ----------
    data : numpy.ndarray
        Science array.
    dq : numpy.ndarray or None
        Data-quality array (any integer type; it is never narrowed).
    err : numpy.ndarray, optional
        Error array.
    bits : int
        DQ bits that mark a pixel bad.

    Returns
    -------
    numpy.ndarray
        Boolean, True = bad.
    """
    bad = ~np.isfinite(data) | (data == 0)
    if dq is not None:
        bad |= (np.asarray(dq).astype(np.int64) & bits) != 0
    if err is not None:
        bad |= ~np.isfinite(err)
    return bad


def masked_median(a: np.ndarray, axis: int = 1) -> np.ndarray:
    """NaN-ignoring median along ``axis`` (NaN where a slice is all NaN); a sort, not a Python loop."""
    return clipped_median(a, axis, max_iters=0)


def clipped_median(a: np.ndarray, axis: int = 1, sigma: float = 3.0, max_iters: int = 5) -> np.ndarray:
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

    Returns
    -------
    numpy.ndarray
        Medians; NaN where a slice has no finite value.
    """
    s = np.sort(np.ascontiguousarray(np.moveaxis(np.asarray(a, float), axis, -1)), axis=-1)
    n = np.isfinite(s).sum(axis=-1)
    lo = np.zeros_like(n)
    hi = n.copy()
    last = s.shape[-1] - 1

    def at(q: np.ndarray) -> np.ndarray:
        return np.take_along_axis(s, np.clip(q, 0, last)[..., None], -1)[..., 0]

    def median(lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
        m = hi - lo
        return 0.5 * (at(lo + np.clip((m - 1) // 2, 0, None)) + at(lo + m // 2))

    med = median(lo, hi)
    for _ in range(max_iters):
        m = hi - lo
        std = 0.5 * (at(lo + (0.8413 * (m - 1)).astype(int)) - at(lo + (0.1587 * (m - 1)).astype(int)))
        width = np.where(std > 0, sigma * std, np.inf)
        with np.errstate(invalid="ignore"):
            new_lo = (s < (med - width)[..., None]).sum(axis=-1)
            new_hi = (s <= (med + width)[..., None]).sum(axis=-1)
        new_hi = np.maximum(new_hi, new_lo + 1)
        if np.array_equal(new_lo, lo) and np.array_equal(new_hi, hi):
            break
        lo, hi = np.where(n > 0, new_lo, 0), np.where(n > 0, np.minimum(new_hi, n), 0)
        med = median(lo, hi)
    return np.where(n > 0, med, np.nan)


def _fill_nan_1d(r: np.ndarray) -> np.ndarray:
    good = np.isfinite(r)
    if good.all() or not good.any():
        return np.nan_to_num(r)
    idx = np.arange(r.size)
    return np.interp(idx, idx[good], r[good])


def background_stats(data: np.ndarray, bad: np.ndarray, sigma: float = 3.0, max_iters: int = 10,
                     stride: int = 3) -> tuple[float, float]:
    """Sigma-clipped median and standard deviation of the good pixels (on a regular subsample)."""
    sub = np.where(bad, np.nan, data)[::stride, ::stride].ravel()
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
    from photutils.segmentation import detect_sources

    med, std = background_stats(data, bad, nsigma, max_iters)
    mask = np.zeros(data.shape, bool)
    if std <= 0:
        return mask
    clean = np.where(bad, 0.0, data - med)
    for sign in (1.0, -1.0):
        segm = detect_sources(sign * clean, nsigma * std, npixels, mask=bad)
        if segm is not None:
            mask |= segm.data > 0
    if dilate_size > 1 and mask.any():  # a square is separable: two 1-D dilations
        mask = binary_dilation(mask, np.ones((1, dilate_size), bool))
        mask = binary_dilation(mask, np.ones((dilate_size, 1), bool))
    return mask


def filter_diffuse(data: np.ndarray, bad: np.ndarray, scale: float = 200.0, order: int = 2
                   ) -> np.ndarray:
    """Remove emission on scales larger than ``scale`` with a Butterworth high-pass filter.

    Bad pixels are first filled from a heavily smoothed version of the image (deterministic, unlike
    the seed's random noise) and the image is mirror-padded to suppress edge ringing.

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
        High-passed image (NaN at ``bad``).
    """
    filled = np.where(bad, np.nan, data).astype(float)
    ny, nx = filled.shape
    # deterministic fill: block medians, upsampled (blocks ~ scale/4)
    b = max(int(scale // 4), 1)
    pad_y, pad_x = (-ny) % b, (-nx) % b
    blocks = np.pad(filled, ((0, pad_y), (0, pad_x)), constant_values=np.nan)
    blocks = blocks.reshape((ny + pad_y) // b, b, (nx + pad_x) // b, b).transpose(0, 2, 1, 3)
    coarse = masked_median(blocks.reshape(*blocks.shape[:2], -1), axis=-1)
    fill_val = np.nanmedian(coarse) if np.isfinite(coarse).any() else 0.0
    coarse = np.where(np.isfinite(coarse), coarse, fill_val)
    up = np.repeat(np.repeat(coarse, b, 0), b, 1)[:ny, :nx]
    filled = np.where(np.isfinite(filled), filled, up)
    py, px = ny // 2, nx // 2
    padded = np.pad(filled, ((py, py), (px, px)), mode="reflect")
    fy = scipy.fft.fftfreq(padded.shape[0])[:, None]
    fx = scipy.fft.rfftfreq(padded.shape[1])[None, :]
    f = np.hypot(fy, fx)
    fc = 1.0 / scale
    with np.errstate(divide="ignore"):
        high = 1.0 / (1.0 + (fc / f) ** (2 * order))
    high[0, 0] = 0.0
    out = scipy.fft.irfft2(scipy.fft.rfft2(padded) * high, s=padded.shape)[py:py + ny, px:px + nx]
    out[bad] = np.nan
    return out


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
    d = np.where(mask, np.nan, data)
    offsets = np.zeros(len(amps))
    for i in range(1, len(amps)):
        left = masked_median(d[:, amps[i].start - width:amps[i].start], 1)
        right = masked_median(d[:, amps[i].start:amps[i].start + width], 1)
        step = clipped_median((right - left)[None], 1, sigma, 10)[0]
        offsets[i] = offsets[i - 1] + (step if np.isfinite(step) else 0.0)
    return offsets - offsets.mean()


def _multiscale(profile: np.ndarray, scales: list[int], smooth: bool = False) -> np.ndarray:
    """High-pass a 1-D profile scale by scale; the sum of what each scale removed."""
    r = _fill_nan_1d(profile)
    total = np.zeros_like(r)
    for s in scales:
        low = (uniform_filter1d(r, s, mode="reflect") if smooth
               else median_filter(r, size=s, mode="reflect"))
        n = r - low
        r = r - n
        total += n
    return total


def _row_profiles(d: np.ndarray, amps: list[slice], min_frac: float, clip: tuple[float, int] | None
                  ) -> list[np.ndarray]:
    """Masked (optionally clipped) row medians per amplifier; sparse rows use the full row."""
    def med(block: np.ndarray) -> np.ndarray:
        return clipped_median(block, 1, *clip) if clip else masked_median(block, 1)

    full = med(d) if len(amps) > 1 else None
    out = []
    for sl in amps:
        block = d[:, sl]
        r = med(block)
        if full is not None:
            sparse = np.isfinite(block).sum(axis=1) < min_frac * block.shape[1]
            r = np.where(sparse, full, r)
        out.append(r)
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
    c = _fill_nan_1d(c)
    return c - np.median(c)


def row_model(d: np.ndarray, amps: list[slice], params: DestripeParams,
              err: np.ndarray | None = None) -> np.ndarray:
    """The row-pass stripe model of masked data ``d`` (NaN = masked) with ``params.method``."""
    ny, nx = d.shape
    model = np.zeros((ny, nx))
    clip = (params.sigma, params.max_iters)
    if params.method == "median_filter":
        for sl, r in zip(amps, _row_profiles(d, amps, params.min_mask_frac, None), strict=True):
            model[:, sl] = _multiscale(r, params.filter_scales)[:, None]
    elif params.method == "smooth":
        for sl, r in zip(amps, _row_profiles(d, amps, params.min_mask_frac, clip), strict=True):
            model[:, sl] = _multiscale(r, params.filter_scales, smooth=True)[:, None]
    elif params.method == "row_median":
        for sl, r in zip(amps, _row_profiles(d, amps, params.min_mask_frac, clip), strict=True):
            r = _fill_nan_1d(r)
            model[:, sl] = (r - np.median(r))[:, None]
    elif params.method == "remstripe":
        for sl, r in zip(amps, _row_profiles(d, amps, params.min_mask_frac, clip), strict=True):
            r = _fill_nan_1d(r)
            rows = r - np.median(r)
            cols = _fill_nan_1d(clipped_median(d[:, sl] - rows[:, None], 0, *clip))
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
    from pca import gappy_scores, reconstruct, robust_pca

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
    data = np.asarray(data, float)
    bad = bad_pixel_mask(data, dq, err, dq_bits(p.dq_flags))
    if extra_mask is not None:
        bad |= extra_mask
    amps = amplifier_slices(data.shape[1], n_amps if p.quadrants else 1)
    model = np.zeros_like(data)
    srcmask = source_mask(data, bad, p.sigma, p.npixels, p.dilate_size, p.max_iters)
    mask = bad | srcmask
    offsets = np.zeros(len(amps))
    if p.level_amplifiers and len(amps) > 1:
        offsets = level_amplifiers(data, mask, amps, sigma=p.sigma)
        for sl, o in zip(amps, offsets, strict=True):
            model[:, sl] += o
    work = data - model
    if p.filter_diffuse:
        work = filter_diffuse(work, bad, p.diffuse_scale)
        mask = bad | source_mask(work, bad, p.sigma, p.npixels, p.dilate_size, p.max_iters)
    d = np.where(mask, np.nan, work)
    if p.vertical:
        col = column_model(d, p.filter_scales if p.method != "row_median" else None,
                           (p.sigma, p.max_iters))
        model += col[None, :]
        d = d - col[None, :]
    model += row_model(d, amps, p, err)
    log.debug("destripe %s: model rms %.3g, %.1f%% masked", p.method, np.nanstd(model), 100 * mask.mean())
    return DestripeResult(model=model, mask=mask, amp_offsets=offsets)


#: MIRI full-frame regions (row, column slices, 0-based): the Lyot coronagraph and the whole
#: coronagraph band (four-quadrant phase masks and Lyot) left of the imager.
MIRI_LYOT = (slice(735, None), slice(0, 290))
MIRI_CORONAGRAPHS = (slice(None), slice(0, 360))


def miri_destripe(
    data: np.ndarray,
    dq: np.ndarray | None = None,
    err: np.ndarray | None = None,
    params: DestripeParams | None = None,
    *,
    full_frame: bool = True,
) -> tuple[DestripeResult, np.ndarray]:
    """Row/column stripe model of a MIRI imager frame, coronagraphs handled separately.

    The stripes are measured on the imager only (coronagraph columns kept out of the fit); row
    stripes are detector-wide, so the row model is applied across the coronagraphs too, while the
    column model applies only where it was measured. The Lyot region then follows ``params.lyot``:
    ``mask`` returns it for flagging, ``adjust`` adds the offset that brings its clipped background
    to the imager's (as in the seed's ``lyot_adjust``), ``include`` fits it as imager.

    Parameters
    ----------
    data : numpy.ndarray
        Rate or calibrated MIRI image.
    dq, err : numpy.ndarray, optional
        DQ and error arrays.
    params : DestripeParams, optional
        Settings (``quadrants`` and amplifier levelling do not apply to MIRI).
    full_frame : bool
        Whether the frame is the full 1024 x 1032 readout (subarrays have no coronagraphs).

    Returns
    -------
    (DestripeResult, numpy.ndarray)
        The model (to subtract) and the Lyot pixels to flag (all False unless ``lyot="mask"``).
    """
    p = params or DestripeParams()
    lyot = np.zeros(data.shape, bool)
    corona = np.zeros(data.shape, bool)
    if full_frame:
        lyot[MIRI_LYOT] = True
        corona[MIRI_CORONAGRAPHS] = True
    extra = corona & ~lyot if p.lyot == "include" else corona
    res = destripe(data, dq, err, p, n_amps=1, extra_mask=extra)
    if full_frame and p.vertical:  # no column structure was measured over the coronagraphs
        cols = np.zeros(data.shape[1], bool)
        cols[MIRI_CORONAGRAPHS[1]] = True
        if p.lyot == "include":
            cols[MIRI_LYOT[1]] = False
        measured = res.model[:, ~cols].mean(axis=1, keepdims=True) if (~cols).any() else 0.0
        res.model[:, cols] = measured  # the row part only
    if full_frame and p.lyot == "adjust":
        cleaned = np.where(res.mask, np.nan, data - res.model)
        bad = bad_pixel_mask(data, dq, err, dq_bits(p.dq_flags))
        lyot_bkg = clipped_median(np.where(bad, np.nan, data - res.model)[lyot][None], 1,
                                  p.sigma, p.max_iters)[0]
        imager = ~corona
        img_bkg = clipped_median(cleaned[imager][None], 1, p.sigma, p.max_iters)[0]
        if np.isfinite(lyot_bkg) and np.isfinite(img_bkg):
            res.model[lyot] += lyot_bkg - img_bkg
    return res, (lyot if (full_frame and p.lyot == "mask") else np.zeros(data.shape, bool))


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
    bad = bad_pixel_mask(data, dq, None, dq_bits(p.dq_flags)) | ~np.isfinite(reference)
    diff = data - reference
    med, _ = background_stats(diff, bad, p.sigma, p.max_iters)
    diff = diff - med
    mask = bad | source_mask(diff, bad, p.sigma, 3, p.dilate_size, p.max_iters)
    d = np.where(mask, np.nan, diff)
    model = np.zeros_like(data)
    if p.vertical:
        col = _fill_nan_1d(clipped_median(d, 0, p.sigma, p.max_iters))
        col -= np.median(col)
        model += col[None, :]
        d = d - col[None, :]
    amps = amplifier_slices(data.shape[1], n_amps if p.quadrants else 1)
    for sl, r in zip(amps, _row_profiles(d, amps, p.min_mask_frac, (p.sigma, p.max_iters)), strict=True):
        r = _fill_nan_1d(r)
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
    bits = dq_bits(p.dq_flags)
    bad = [bad_pixel_mask(np.asarray(f, float), d, None, bits) for f, d in zip(frames, dqs, strict=True)]
    use = np.ones((n, n), bool) if overlaps is None else overlaps.copy()
    np.fill_diagonal(use, False)
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
                if it == 0 and ok.sum() < p.min_overlap_frac * valid_i.sum():
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
