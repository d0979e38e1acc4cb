"""External maps for anchoring (Spitzer, WISE, ...): read one, and say why it cannot anchor.

A map is the first HDU of a FITS file holding a 2-D image, with a celestial WCS, in MJy/sr (BUNIT),
large enough to fit, with finite values; blanks such as 1e30 read as NaN.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS

from jwstgal import layout
from jwstgal.errors import ReductionError

#: |surface brightness| (MJy/sr) from which an external map's value is a blank (1e30) or another unit.
MAX_BRIGHTNESS = 1e7
#: Least pixels per side of an external map that can be fitted.
MIN_MAP_PIXELS = 10


def is_mjy_per_sr(bunit: str) -> bool:
    """Whether a BUNIT string means MJy/sr (in any of the spellings maps use)."""
    compact = bunit.replace(" ", "").lower()
    if compact in ("mjy/sr", "mjysr-1", "mjy/steradian", "mjy.sr-1", "mjy/sr^1"):
        return True
    import astropy.units as u

    try:
        return u.Unit(bunit) == u.MJy / u.sr
    except ValueError:
        return False


def external_problem(data: np.ndarray, wcs: WCS, header: fits.Header) -> str:
    """Why an external map cannot anchor ('' if it may): size, WCS, values, units."""
    if min(data.shape) < MIN_MAP_PIXELS:
        return (f"a {data.shape[1]}x{data.shape[0]} image is too small to fit (at least "
                f"{MIN_MAP_PIXELS}x{MIN_MAP_PIXELS})")
    if wcs.naxis != 2 or not wcs.has_celestial:
        return "no celestial WCS"
    if not (np.isfinite(data) & (np.abs(data) < MAX_BRIGHTNESS)).any():
        return "no finite surface brightness (all NaN, or blank values such as 1e30)"
    bunit = str(header.get("BUNIT", "") or "").strip()
    if bunit and not is_mjy_per_sr(bunit):
        return f"BUNIT {bunit!r} is not MJy/sr (convert the map first)"
    return ""


def read_external(path: Path) -> tuple[np.ndarray, WCS]:
    """Image and celestial WCS of an external map (the first HDU holding a 2-D image), checked.

    Values beyond :data:`MAX_BRIGHTNESS` (blanks such as 1e30) read as NaN.

    Raises
    ------
    ReductionError
        Naming the file and what is wrong with it (:func:`external_problem`).
    """
    if why := layout.not_a_regular_file(path):
        raise ReductionError(f"{path}: {why}")
    found = None
    try:
        with fits.open(path) as h:
            for hdu in h:
                if hdu.data is not None and np.ndim(hdu.data) >= 2:
                    data = np.asarray(np.squeeze(hdu.data), float)
                    if data.ndim == 2:
                        found = data, hdu.header.copy()
                        break
        if found is None:
            msg = f"{path}: no 2-D image in any HDU"
            raise ReductionError(msg)
        data, header = found
        wcs = WCS(header).celestial
    except (OSError, ValueError, TypeError, KeyError) as err:
        msg = f"{path}: not a readable FITS image ({err})"
        raise ReductionError(msg) from None
    if why := external_problem(data, wcs, header):
        raise ReductionError(f"{path}: {why}")
    return np.where(np.abs(data) < MAX_BRIGHTNESS, data, np.nan), wcs
