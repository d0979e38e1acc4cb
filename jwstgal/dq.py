"""The one DQ vocabulary of the suite: jwst pixel flags by name, and the masks built from them.

Flag values come from ``stdatamodels.jwst.datamodels.dqflags.pixel``, the table the jwst pipeline
itself writes with, so a name means here what it means in a cal file. Every module that masks
pixels (destriping, level matching, astrometry, the simulator) goes through this one.

DQ arrays are never narrowed: NON_SCIENCE is bit 9 and REFERENCE_PIXEL bit 31, both lost by an
8-bit cast.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping

import numpy as np

#: Flags that mark a pixel without usable science by default (any step may ask for more).
DEFAULT_BAD: tuple[str, ...] = ("DO_NOT_USE", "NON_SCIENCE")


@functools.cache
def pixel_flags() -> Mapping[str, int]:
    """Name -> bit value of every jwst pixel DQ flag (``GOOD`` excluded)."""
    from stdatamodels.jwst.datamodels.dqflags import pixel

    return {name: int(value) for name, value in pixel.items() if int(value)}


def bit(name: str) -> int:
    """The bit value of one named flag.

    Raises
    ------
    ValueError
        For a name that is not a jwst pixel flag (the message lists the allowed names).
    """
    flags = pixel_flags()
    if name not in flags:
        msg = f"unknown DQ flag {name!r} (allowed: {', '.join(flags)})"
        raise ValueError(msg)
    return flags[name]


def bits(names: Iterable[str]) -> int:
    """OR of the named flags (see :func:`bit`)."""
    out = 0
    for name in names:
        out |= bit(name)
    return out


def flagged(dq: np.ndarray, names: Iterable[str] = DEFAULT_BAD) -> np.ndarray:
    """Boolean map of the pixels with any of the named flags set (full bit depth)."""
    dq = np.asarray(dq)
    b = bits(names)
    if np.issubdtype(dq.dtype, np.integer) and b <= np.iinfo(dq.dtype).max:
        return (dq & dq.dtype.type(b)) != 0         # the flags fit the array's own type: no copy
    return (dq.astype(np.int64) & b) != 0


def bad_pixel_mask(data: np.ndarray, dq: np.ndarray | None, err: np.ndarray | None = None,
                   names: Iterable[str] = DEFAULT_BAD) -> np.ndarray:
    """Pixels to ignore: a named flag set in DQ, non-finite data or error, or exactly 0.

    Parameters
    ----------
    data : numpy.ndarray
        Science array.
    dq : numpy.ndarray or None
        Data-quality array (any integer type; it is never narrowed).
    err : numpy.ndarray, optional
        Error array.
    names : iterable of str
        DQ flags that mark a pixel bad.

    Returns
    -------
    numpy.ndarray
        Boolean, True = bad.
    """
    good = np.isfinite(data)            # built in place: one boolean frame, few temporaries
    good &= data != 0
    if err is not None:
        good &= np.isfinite(err)
    bad = np.logical_not(good, out=good)
    if dq is not None:
        bad |= flagged(dq, names)
    return bad
