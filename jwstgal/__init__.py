"""jwstgal: reduce JWST NIRCam and MIRI imaging of nearby galaxies.

The top-level scripts of the repository (``run_jwst_reprocessing.py`` and friends) are thin shims over
the command-line modules in :mod:`jwstgal.cli`; the science lives in plain functions on arrays in the
modules of this package.
"""

__version__ = "0.1.0"
