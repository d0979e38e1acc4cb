"""Which exposures are dedicated background ("off") fields, and why (file names and headers only).

The check is per instrument (``[pipeline] bgr_check_type``); the band steps (stage 2, level
matching, background mosaics) and the QA page read the verdicts through :func:`background_reason`.
"""

from __future__ import annotations

import fnmatch
from pathlib import Path
from typing import Any

__all__ = ["background_reason", "instrument_of", "is_background"]


def instrument_of(path: Path) -> str:
    """``miri`` or ``nircam``, from a JWST file name's detector field (``mirimage``, ``nrcb1``...)."""
    return "miri" if "_mirimage" in path.name else "nircam"


def background_reason(path: Path, run: Any, check: str | None = None) -> str:
    """Why an exposure is a dedicated background ("off") field, or ``''`` when it is science.

    The check is the instrument's ``[pipeline] bgr_check_type`` (or ``check``): ``parallel_off``
    -- the sequence digit (3rd character of the second file-name field) is 2, a parallel
    sequence; ``check_in_name`` -- ``bgr_background_name`` appears in the TARGPROP header;
    ``filename`` -- the name matches ``bgr_filename_pattern``; ``none`` -- never.
    """
    pipe = run.science.pipeline
    check = check or pipe.bgr_check(instrument_of(path))
    if check == "parallel_off":
        fields = path.name.split("_")
        ok = len(fields) > 1 and len(fields[1]) > 2 and fields[1][2] == "2"
        return "parallel_off: sequence digit 2 (a parallel sequence)" if ok else ""
    if check == "filename":
        ok = fnmatch.fnmatch(path.name, pipe.bgr_filename_pattern)
        return f"filename: matches {pipe.bgr_filename_pattern!r}" if ok else ""
    if check == "check_in_name":
        from astropy.io import fits

        name = pipe.bgr_background_name.lower()
        ok = name in str(fits.getheader(path).get("TARGPROP", "")).lower()
        return f"check_in_name: {pipe.bgr_background_name!r} in TARGPROP" if ok else ""
    return ""


def is_background(path: Path, run: Any) -> bool:
    """Whether an exposure is a dedicated background field (:func:`background_reason`)."""
    return bool(background_reason(path, run))
