"""jwstgal: reduce JWST NIRCam and MIRI imaging of nearby galaxies.

The top-level scripts of the repository (``run_jwst_reprocessing.py`` and friends) are thin shims over
the command-line modules in :mod:`jwstgal.cli`; the science lives in plain functions on arrays in the
modules of this package.
"""

import importlib
from typing import Any

__version__ = "0.1.0"

def __getattr__(name: str) -> Any:
    """The stpipe step classes (``strun jwstgal.DestripeStep``), imported on first use.

    ``import jwstgal`` stays light: jwst is loaded only by whoever asks for a step.
    """
    if name.endswith("Step") and not name.startswith("_"):
        module = importlib.import_module("jwstgal.stpipe_steps")
        if name in {c.__name__ for c in module.STPIPE_STEPS}:
            return getattr(module, name)
    msg = f"module 'jwstgal' has no attribute {name!r}"
    raise AttributeError(msg)
