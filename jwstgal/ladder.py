"""The resolution ladder: how a mosaic reaches each target PSF, and the coarse-grid path of wide Gaussians.

A rung is reached in at most two stages:

1. **On the mosaic's own grid**, a PSF-matching kernel from the band to the rung (a band or a
   Gaussian up to ``direct_max`` arcsec), or, for wider Gaussians, to the *intermediate* Gaussian
   ``gauss<direct_max>``. Kernels of wide Gaussians at a NIRCam working pixel would not fit any
   grid (F200W -> 15" needs > 20 000 pixels a side); the intermediate one does.
2. **On a coarser grid**, for Gaussians wider than ``direct_max``: the image is block-averaged to a
   pixel that samples the target by at least :data:`PIXELS_PER_FWHM` pixels per FWHM and the
   intermediate Gaussian by at least :data:`INTERMEDIATE_PIXELS` (so that it does not alias), then
   convolved with the Gaussian that takes the intermediate Gaussian to the target
   (FWHM^2 = target^2 - intermediate^2). A pixel value is the sky convolved with the PSF and
   integrated over the pixel, so block-averaging keeps the PSF what it was (only the pixel grows)
   and the analytic step is exact; memory and time stay bounded whatever the target.

Everything here is a pure function on arrays and WCS objects; :mod:`jwstgal.convolve_products`
reads and writes the files.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.fft

log = logging.getLogger(__name__)

#: Coarse-grid pixels per FWHM of a wide Gaussian target, at least.
PIXELS_PER_FWHM = 4.0
#: Coarse-grid pixels per FWHM of the intermediate Gaussian, at least. The block-averaged image is
#: the intermediate Gaussian integrated over the coarse pixel: sampled any coarser, it aliases, and
#: a compact source's FWHM at the rung depends on where it falls in the coarse pixel (at 0.53
#: pixels per FWHM, 15" varied by -0.8 to +1.9 %; at 3 it stays within 0.1 %).
INTERMEDIATE_PIXELS = 3.0
_GAUSS = re.compile(r"^gauss(\d+(?:\.\d+)?)$")
_FWHM_TO_SIGMA = 1.0 / (2.0 * np.sqrt(2.0 * np.log(2.0)))


def gaussian_fwhm(name: str) -> float | None:
    """FWHM (arcsec) of a ``gauss<FWHM>`` PSF name; None for any other name."""
    m = _GAUSS.match(name.lower())
    return float(m.group(1)) if m else None


def intermediate_name(direct_max: float) -> str:
    """Name of the intermediate Gaussian of the coarse-grid path, e.g. ``gauss2``."""
    return f"gauss{direct_max:g}"


@dataclass(frozen=True)
class Rung:
    """How one band reaches one target PSF.

    Attributes
    ----------
    target : str
        The target PSF (a band, ``gauss<FWHM>`` or ``moffat<FWHM>b<beta>``).
    kernel_target : str or None
        Target of the kernel applied on the mosaic's grid (the rung itself, or the intermediate
        Gaussian); None when the band already has the target PSF.
    block : int
        Block-averaging factor after the kernel (1: the mosaic's grid is kept).
    gauss_fwhm : float
        FWHM (arcsec) of the Gaussian applied on the coarse grid (0: none).
    reproject_band : str or None
        Band whose mosaic grid the result is reprojected onto (band targets).
    """

    target: str
    kernel_target: str | None
    block: int = 1
    gauss_fwhm: float = 0.0
    reproject_band: str | None = None

    @property
    def grid(self) -> str:
        """Short description of the output grid."""
        if self.reproject_band:
            return f"{self.reproject_band} mosaic"
        return "mosaic" if self.block == 1 else f"mosaic block-averaged {self.block}x{self.block}"


def plan_rung(band: str, target: str, pixscale: float, *, direct_max: float = 2.0,
              reproject: bool = True, bands: tuple[str, ...] = (), max_pixel: float = np.inf) -> Rung:
    """The stages that take ``band``'s mosaic (pixel ``pixscale`` arcsec) to ``target``.

    Parameters
    ----------
    band : str
        The mosaic's band.
    target : str
        The rung (band or analytic PSF name).
    pixscale : float
        The mosaic's pixel (arcsec).
    direct_max : float
        Widest Gaussian reached by a kernel on the mosaic's grid (arcsec).
    reproject : bool
        Reproject onto the target band's grid when the target is a band among ``bands``.
    bands : tuple of str
        The bands that have mosaics.
    max_pixel : float
        Largest coarse-grid pixel (arcsec), e.g. a third of the pixel of a map the result is
        reprojected onto (so that reprojection integrates over that map's pixels, as it does).

    Returns
    -------
    Rung
    """
    if target == band:
        return Rung(target, None)
    fwhm = gaussian_fwhm(target)
    if fwhm is None or fwhm <= direct_max:
        regrid = target if reproject and target in bands else None
        return Rung(target, target, reproject_band=regrid)
    pixel = min(fwhm / PIXELS_PER_FWHM, direct_max / INTERMEDIATE_PIXELS, max_pixel)
    block = max(1, int(np.floor(pixel / pixscale)))
    return Rung(target, intermediate_name(direct_max), block, float(np.sqrt(fwhm**2 - direct_max**2)))


def kernel_targets(targets: list[str], direct_max: float) -> list[str]:
    """Kernel targets the rungs ``targets`` need.

    The rungs themselves, wide Gaussians replaced by the intermediate Gaussian.
    """
    out: list[str] = []
    for t in targets:
        fwhm = gaussian_fwhm(t)
        k = intermediate_name(direct_max) if fwhm is not None and fwhm > direct_max else t
        if k not in out:
            out.append(k)
    return out


def block_average(data: Any, factor: int, err: Any = None,
                  min_valid: float = 0.5) -> tuple[Any, Any]:
    """Average ``factor`` x ``factor`` blocks, ignoring NaNs.

    Edge rows and columns that do not fill a block are dropped. The image is read a band of rows
    at a time, so it may be a tiled image (:mod:`jwstgal.tiled_io`) larger than memory.

    Parameters
    ----------
    data : array-like
        Surface brightness; NaN = missing.
    factor : int
        Block side (pixels).
    err : array-like, optional
        1-sigma errors, propagated for independent pixels: sqrt(sum err^2) / n.
    min_valid : float
        Blocks with a smaller fraction of valid pixels become NaN.

    Returns
    -------
    data, err : numpy.ndarray
        (``data`` and ``err`` themselves when ``factor`` is 1.)
    """
    if factor == 1:
        return data, err
    ny, nx = (s // factor for s in data.shape)
    step = factor * max(1, 2**22 // max(1, nx * factor * factor))     # ~4 M pixels read at a time
    mean = np.full((ny, nx), np.nan)
    out_err = np.full((ny, nx), np.nan) if err is not None else None
    for y0 in range(0, ny * factor, step):
        y1 = min(y0 + step, ny * factor)
        rows = slice(y0 // factor, y1 // factor)

        def blocks(a: Any, y0: int = y0, y1: int = y1) -> np.ndarray:
            return np.asarray(a[y0:y1, : nx * factor], float).reshape(-1, factor, nx, factor)

        d = blocks(data)
        valid = np.isfinite(d)
        n = valid.sum(axis=(1, 3))
        keep = n >= min_valid * factor * factor
        with np.errstate(divide="ignore", invalid="ignore"):
            m = np.where(valid, d, 0.0).sum(axis=(1, 3)) / n
            m[~keep] = np.nan
            mean[rows] = m
            if err is not None:
                e = blocks(err)
                eb = np.sqrt(np.where(valid, e**2, 0.0).sum(axis=(1, 3))) / n
                eb[~keep] = np.nan
                out_err[rows] = eb
    return mean, out_err


def block_wcs(wcs, factor: int):
    """The celestial WCS of an image block-averaged by ``factor`` (pixel edges kept aligned).

    A CD matrix is first written as PC and CDELT: astropy's step slicing scales CDELT only, and a
    CD matrix would keep the fine pixels' scale (13" off at 700 blocks of 3 pixels; tested).
    """
    if factor == 1:
        return wcs
    wcs = wcs.celestial.deepcopy()
    if wcs.wcs.has_cd():
        cd = wcs.wcs.cd.copy()
        del wcs.wcs.cd
        wcs.wcs.pc = cd
        wcs.wcs.cdelt = [1.0, 1.0]
        wcs.wcs.set()
    return wcs.slice((slice(None, None, factor), slice(None, None, factor)))


def gaussian_kernel(fwhm: float, pixscale: float) -> np.ndarray:
    """Band-limited circular Gaussian kernel of ``fwhm`` arcsec on a ``pixscale`` grid, unit sum.

    The kernel is the inverse transform of the Gaussian's transform over the grid's frequencies,
    so discrete convolution with it equals continuous convolution of the band-limited image, even
    when the Gaussian is narrower than a pixel.
    """
    sigma = fwhm * _FWHM_TO_SIGMA / pixscale
    n = int(np.ceil(10 * sigma)) + 3
    n += 1 - n % 2
    f = scipy.fft.fftfreq(n)
    line = scipy.fft.fftshift(scipy.fft.ifft(np.exp(-2 * np.pi**2 * sigma**2 * f**2)).real)
    line /= line.sum()
    return np.outer(line, line)
