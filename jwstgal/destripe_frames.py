"""One frame destriped with its instrument's method, and what its header says of it (pure functions).

:func:`frame_layout` reads a frame's instrument, amplifier bands and readout from its primary
header; :func:`good_pixels` are the pixels a stripe model is subtracted from; :func:`destripe_arrays`
measures the model with :func:`jwstgal.destripe.destripe` (NIRCam) or
:func:`jwstgal.destripe_miri.miri_destripe` (MIRI) and subtracts it. The steps ``destripe``,
``rate_destripe``, ``stack_destripe`` and ``bg_sub`` and the stpipe steps call these on arrays.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from astropy.io import fits

from jwstgal import dq
from jwstgal.destripe import DestripeParams, destripe
from jwstgal.destripe_miri import miri_destripe

__all__ = ["MIN_AMP_WIDTH", "destripe_arrays", "frame_layout", "good_pixels", "working_array"]

#: Narrowest amplifier band believed from a header (NIRCam's are 512 columns).
MIN_AMP_WIDTH = 128


def frame_layout(primary: fits.Header, shape: tuple[int, int]) -> tuple[str, int, bool]:
    """Instrument, number of amplifier bands and whether the frame is a full-frame readout.

    NOUTPUTS gives the amplifier count when the header describes this frame; otherwise NIRCam full
    frames (2048 wide, SUBARRAY FULL) have four and everything else one. A header whose readout
    width (SUBSIZE1) is not the frame's width belongs to a larger frame (a cut-out keeps its
    parent's NOUTPUTS = 4): the cut-out's amplifier boundaries are unknown, so it is one band; so
    is a frame whose bands would be narrower than :data:`MIN_AMP_WIDTH` (real ones are 512).
    """
    instrument = str(primary.get("INSTRUME", "NIRCAM")).upper()
    subarray = str(primary.get("SUBARRAY", "FULL")).upper()
    full = subarray == "FULL"
    width = shape[1]
    if int(primary.get("SUBSIZE1", width)) != width:
        n_amps = 1
    elif "NOUTPUTS" in primary:
        n_amps = int(primary["NOUTPUTS"])
    else:
        n_amps = 4 if (instrument == "NIRCAM" and full and width == 2048) else 1
    if n_amps < 1 or width % n_amps or width // n_amps < MIN_AMP_WIDTH:
        n_amps = 1
    if instrument == "MIRI":
        n_amps = 1
    return instrument, max(n_amps, 1), full


def working_array(a: Any) -> np.ndarray:
    """An array to destripe: float32 stays float32 (native byte order), anything else is float64.

    A frame's float32 SCI read as float64 doubled the memory traffic of every median and of the
    model (the method took 1.4x as long); a median of float32 values is one of them (or the mean of
    two), so nothing is gained in precision.
    """
    a = np.asarray(a)
    return np.asarray(a, np.float32 if a.dtype.kind == "f" and a.dtype.itemsize == 4 else float)


def good_pixels(sci: np.ndarray, dq_arr: np.ndarray | None) -> np.ndarray:
    """Pixels a stripe model is subtracted from: finite, non-zero, not DO_NOT_USE."""
    good = np.isfinite(sci) & (sci != 0)
    if dq_arr is not None:
        good &= ~dq.flagged(dq_arr, ["DO_NOT_USE"])
    return good


def destripe_arrays(sci: np.ndarray, dq_arr: np.ndarray | None, err: np.ndarray | None,
                    primary: fits.Header, params: DestripeParams) -> tuple[np.ndarray, np.ndarray, Any, int]:
    """Destripe one frame's arrays (pure: the inputs are not modified).

    Parameters
    ----------
    sci, dq_arr, err : numpy.ndarray
        SCI, DQ (or None) and ERR (or None) of a rate or cal frame.
    primary : astropy.io.fits.Header
        Primary-header keywords of the frame (INSTRUME, SUBARRAY, SUBSIZE1, NOUTPUTS), see
        :func:`frame_layout`.
    params : DestripeParams
        Method and settings.

    Returns
    -------
    (numpy.ndarray, numpy.ndarray, result, int)
        The destriped SCI (NaN where the MIRI Lyot is masked), the Lyot mask, the method's result
        (``model``, ``mask``, ``amp_offsets``) and the number of amplifier bands found.
    """
    sci = working_array(sci)
    instrument, n_amps, full = frame_layout(primary, sci.shape)
    if instrument == "MIRI":
        res, lyot = miri_destripe(sci, dq_arr, err, params, full_frame=full)
    else:
        res = destripe(sci, dq_arr, err, params, n_amps=n_amps)
        lyot = np.zeros(sci.shape, bool)
    out = np.where(good_pixels(sci, dq_arr), sci - res.model, sci)
    if lyot.any():
        out[lyot] = np.nan
    return out, lyot, res, n_amps
