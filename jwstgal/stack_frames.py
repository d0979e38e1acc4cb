"""The frames of a band as stack-based destriping reads them, and the state its passes keep (I/O).

:class:`Frames` reads frames on demand and keeps a few (memory does not grow with their number);
:func:`frame_weight` is a frame's weight in the others' references; :func:`save_model` and
:func:`load_model` keep each frame's stripe model between the passes that the step runs as
separate executor tasks (:mod:`jwstgal.steps.stack_destripe`).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS

from jwstgal.destripe_frames import frame_layout, good_pixels
from jwstgal.destripe_stack import StripeModel, working_frame
from jwstgal.frame_maps import sky_boxes
from jwstgal.provenance import atomic_path, write_text_atomic

log = logging.getLogger(__name__)

__all__ = ["Frames", "empty_frames", "frame_weight", "load_model", "save_model"]


class Frames:
    """Frames of a band read on demand, a few kept (memory does not grow with their number)."""

    def __init__(self, files: list[Path], keep: int = 4) -> None:
        self.files = files
        self.keep = keep
        self._cache: dict[int, tuple[np.ndarray, np.ndarray | None]] = {}
        self.shapes, self.wcss, self.amps = [], [], []
        for f in files:                   # headers only: no pixel is read here
            with fits.open(f) as h:
                sci = h["SCI"].header
                shape = (int(sci["NAXIS2"]), int(sci["NAXIS1"]))
                self.shapes.append(shape)
                self.wcss.append(WCS(sci))
                self.amps.append(frame_layout(h[0].header, shape)[1])
        self._boxes: np.ndarray | None = None

    @property
    def boxes(self) -> np.ndarray:
        """The frames' boxes on the sky (:func:`jwstgal.frame_maps.sky_boxes`)."""
        if self._boxes is None:
            self._boxes = sky_boxes(self.wcss, self.shapes)
        return self._boxes

    def __call__(self, i: int) -> tuple[np.ndarray, np.ndarray | None]:
        """SCI (float32 as cal files hold it, float64 if the file's is) and DQ (or None) of frame ``i``."""
        if i not in self._cache:
            if len(self._cache) >= self.keep:
                self._cache.pop(next(iter(self._cache)))
            with fits.open(self.files[i], memmap=False) as h:
                self._cache[i] = (working_frame(h["SCI"].data),
                                  np.array(h["DQ"].data) if "DQ" in h else None)
        return self._cache[i]


def frame_weight(path: Path, how: str) -> float:
    """A frame's weight in the others' references: 1, its exposure time, or 1 / its read-noise variance.

    ``ivm`` uses the median VAR_RNOISE of the good pixels (ERR squared when there is no
    VAR_RNOISE), one number per frame.
    """
    if how == "equal":
        return 1.0
    with fits.open(path) as h:
        if how == "exptime":
            t = h[0].header.get("EFFEXPTM", h[0].header.get("EXPTIME"))
            if t is None:
                msg = f"{path.name}: no EFFEXPTM/EXPTIME for [stack_destripe] weight = 'exptime'"
                raise ValueError(msg)
            return float(t)
        ext = "VAR_RNOISE" if "VAR_RNOISE" in h else "ERR"
        var = np.array(h[ext].data, float) ** (1 if ext == "VAR_RNOISE" else 2)
        good = np.isfinite(var) & (var > 0)
        if not good.any():
            msg = f"{path.name}: no usable {ext} for [stack_destripe] weight = 'ivm'"
            raise ValueError(msg)
        return float(1.0 / np.median(var[good]))


def empty_frames(load: Frames) -> list[bool]:
    """Which frames have no valid pixel; each is logged (it is left out and copied unchanged)."""
    empty = []
    for i, f in enumerate(load.files):
        empty.append(not good_pixels(*load(i)).any())
        if empty[-1]:
            log.warning("%s: no valid pixel (all NaN, zero or DO_NOT_USE): left out of stack-based "
                        "destriping and copied unchanged", f)
    return empty


def save_model(path: Path, model: StripeModel | None, kept: list[int], change: float,
               first: dict | None = None) -> None:
    """Keep a frame's model of one pass (``<path>.npz``) and its record (``<path>.json``).

    The record holds the neighbours ``kept``, the model's rms ``change`` from the previous pass,
    and, from the first pass, what it judged of the frame (``first``).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {} if model is None else {
        "rows": np.array(model.rows), "amps": np.array([[a.start or 0, a.stop] for a in model.amps]),
        "cols": model.cols if model.cols is not None else np.zeros(0), "offset": np.array(model.offset)}
    with atomic_path(path.with_suffix(".npz")) as tmp, tmp.open("wb") as fh:
        np.savez(fh, **arrays)
    record = {"kept": kept, "change": change, **(first or {})}
    write_text_atomic(path.with_suffix(".json"), json.dumps(record))


def load_model(path: Path) -> StripeModel | None:
    """A model kept by :func:`save_model` (None: the frame had none)."""
    with np.load(path.with_suffix(".npz")) as z:
        if "rows" not in z:
            return None
        cols = z["cols"] if z["cols"].size else None
        return StripeModel(tuple(z["rows"]), tuple(slice(int(a), int(b)) for a, b in z["amps"]), cols,
                           float(z["offset"]))
