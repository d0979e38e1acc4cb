"""MIRI imager destriping: rows and columns, with the coronagraphs kept out of the fit (pure functions).

The MIRI full frame carries the four-quadrant phase masks and the Lyot coronagraph left of the
imager; their columns are excluded from the column fit, and the Lyot region is masked (flagged by
the caller), levelled to the imager's background, or fitted with it (``DestripeParams.lyot``).
"""

from __future__ import annotations

import numpy as np

from jwstgal.destripe import DestripeParams, DestripeResult, destripe
from jwstgal.dq import bad_pixel_mask
from jwstgal.masking import clipped_median

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
        bad = bad_pixel_mask(data, dq, err, p.dq_flags)
        lyot_bkg = clipped_median(np.where(bad, np.nan, data - res.model)[lyot][None], 1,
                                  p.sigma, p.max_iters)[0]
        imager = ~corona
        img_bkg = clipped_median(cleaned[imager][None], 1, p.sigma, p.max_iters)[0]
        if np.isfinite(lyot_bkg) and np.isfinite(img_bkg):
            res.model[lyot] += lyot_bkg - img_bkg
    return res, (lyot if (full_frame and p.lyot == "mask") else np.zeros(data.shape, bool))
