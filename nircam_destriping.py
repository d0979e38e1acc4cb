"""Remove NIRCam 1/f stripes from rate or cal files (single-frame methods, see jwstgal.destripe).

Usage: python nircam_destriping.py FILE [FILE ...] --out-dir DIR [--config config/config.toml]
       [--method median_filter|row_median|remstripe|smooth|pca] [--filter-diffuse] [--plot-dir DIR]
"""

from jwstgal.cli.destriping import main_nircam as main
from jwstgal.destripe import DestripeParams, destripe

__all__ = ["DestripeParams", "destripe", "main"]

if __name__ == "__main__":
    raise SystemExit(main())
