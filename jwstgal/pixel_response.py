"""The pixel response of a drizzled mosaic, added to a model PSF (issue #26 item 6a).

A star in a stage-3 mosaic is the optics' PSF (stpsf's OVERDIST already holds the detector's charge
diffusion and inter-pixel capacitance) integrated over each detector pixel, then dropped onto the
mosaic by drizzle as a square of ``pixfrac`` detector pixels, then integrated over each mosaic
pixel. The last integration is the sampling of the mosaic itself: it is shared by every image on
the same grid and left to whatever samples a PSF (kernels, the ladder's QA, the simulator). The
first two are not: they widen a NIRCam short-wavelength PSF (FWHM 0.066") by ~10 % and a long one
by ~15 %, which kernels built from the bare optics leave unmatched. :func:`add_pixel_response`
convolves an oversampled PSF with both squares (exactly, in Fourier space).

The squares are taken along the PSF array's axes (stpsf's detector frame); a mosaic rotated with
respect to the detector turns them, which circularised (Aniano) kernels do not see.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.fft as sfft

from jwstgal.bands import Band
from jwstgal.settings import MISSING, resolve

log = logging.getLogger(__name__)

#: Drizzle kernels whose drop is a square of ``pixfrac`` input pixels (``point``: no drop).
SQUARE_DROPS = ("square", "turbo")
#: jwst's resample defaults.
DEFAULT_PIXFRAC = 1.0
DEFAULT_KERNEL = "square"


@dataclass(frozen=True)
class PixelResponse:
    """The squares a mosaic's PSF is widened by, in arcsec.

    Attributes
    ----------
    detector : float
        The detector pixel.
    drop : float
        Drizzle's drop (``pixfrac`` x the detector pixel; 0 for the ``point`` kernel).
    """

    detector: float
    drop: float

    @property
    def widths(self) -> tuple[float, ...]:
        """The non-zero square widths (arcsec)."""
        return tuple(w for w in (self.detector, self.drop) if w > 0)

    def describe(self) -> str:
        """A short text for headers and keys."""
        return f"pixel response {self.detector:.4g}\" detector, {self.drop:.4g}\" drop"


def add_pixel_response(psf: np.ndarray, pixscale: float, widths: tuple[float, ...]) -> np.ndarray:
    """Convolve an oversampled PSF with squares of the given widths (arcsec), keeping its sum.

    Each square's transform, ``sinc(w f)`` along each axis, multiplies the PSF's; the array is
    padded by the widest square so that no light wraps around.

    Parameters
    ----------
    psf : numpy.ndarray
        2-D PSF (NaN read as 0).
    pixscale : float
        Its pixel (arcsec); the squares should span a few of its pixels (an oversampled PSF).
    widths : tuple of float
        Square widths (arcsec); none leaves the PSF as it is.

    Returns
    -------
    numpy.ndarray
        The PSF seen through the squares, same shape and sum.
    """
    data = np.nan_to_num(np.asarray(psf, float))
    if not widths:
        return data
    if pixscale <= 0 or any(w < 0 for w in widths):
        msg = f"add_pixel_response: pixel {pixscale} and widths {widths} must be positive"
        raise ValueError(msg)
    pad = int(np.ceil(max(widths) / pixscale))
    work = np.pad(data, pad)
    out = work
    for axis in (0, 1):
        n = sfft.next_fast_len(work.shape[axis] + pad, real=True)
        f = sfft.rfftfreq(n)                                      # cycles per PSF pixel
        transfer = np.prod([np.sinc(w / pixscale * f) for w in widths], axis=0)
        shape = [1, 1]
        shape[axis] = f.size
        out = sfft.irfft(sfft.rfft(out, n=n, axis=axis) * transfer.reshape(shape), n=n, axis=axis)
        out = np.take(out, np.arange(work.shape[axis]), axis=axis)
    out = out[pad:pad + data.shape[0], pad:pad + data.shape[1]]
    total = out.sum()
    return out * (data.sum() / total) if total != 0 else out


def mosaic_response(lv3_parameters: Mapping[str, Any], targets: list[str], band: Band) -> PixelResponse:
    """The pixel response of a band's mosaics, from ``[lv3_parameters.resample]``.

    ``pixfrac`` (default 1) and ``kernel`` (default ``square``) are resolved for each target; a PSF
    is made once per band, so they must agree.

    Raises
    ------
    ValueError
        When the targets' values differ, or the drizzle kernel is not one whose drop is a square.
    """
    table = lv3_parameters.get("resample", {}) if isinstance(lv3_parameters, Mapping) else {}
    seen: set[tuple[float, str]] = set()
    for target in targets or [""]:
        pixfrac = resolve(table.get("pixfrac", DEFAULT_PIXFRAC), target, band)
        kernel = resolve(table.get("kernel", DEFAULT_KERNEL), target, band)
        seen.add((DEFAULT_PIXFRAC if pixfrac is MISSING else float(pixfrac),
                  DEFAULT_KERNEL if kernel is MISSING else str(kernel)))
    if len(seen) > 1:
        msg = (f"[kernels] pixel_response: [lv3_parameters.resample] pixfrac/kernel differ between "
               f"targets for {band.name} ({sorted(seen)}); a band has one PSF, so they must agree")
        raise ValueError(msg)
    pixfrac, kernel = seen.pop()
    if kernel not in (*SQUARE_DROPS, "point"):
        msg = (f"[kernels] pixel_response: [lv3_parameters.resample] kernel = {kernel!r} for "
               f"{band.name}; the response is known for {', '.join((*SQUARE_DROPS, 'point'))}")
        raise ValueError(msg)
    if not 0 < pixfrac <= 1:
        msg = f"[lv3_parameters.resample] pixfrac = {pixfrac} for {band.name}: must be in (0, 1]"
        raise ValueError(msg)
    drop = 0.0 if kernel == "point" else pixfrac * band.pixel_scale
    return PixelResponse(band.pixel_scale, drop)
