"""jwstgal: reduce JWST NIRCam and MIRI imaging of nearby galaxies.

The top-level scripts of the repository (``run_jwst_reprocessing.py`` and friends) are thin shims over
the command-line modules in :mod:`jwstgal.cli`; the science lives in plain functions on arrays in the
modules of this package.
"""

import importlib
from typing import Any

__version__ = "0.1.0"

#: stpipe step classes exported here (``strun jwstgal.DestripeStep``), imported on first use so
#: that ``import jwstgal`` stays light (jwst is loaded only by whoever asks for a step).
_STPIPE_STEPS = ("AstrometricAlignStep", "AstrometricCatalogStep", "BgSubStep", "DestripeStep",
                 "LevelMatchStep", "LyotAdjustStep", "StackDestripeStep", "WcsAdjustStep")


def __getattr__(name: str) -> Any:
    if name in _STPIPE_STEPS:
        return getattr(importlib.import_module("jwstgal.stpipe_steps"), name)
    msg = f"module 'jwstgal' has no attribute {name!r}"
    raise AttributeError(msg)
