"""Remove MIRI row/column stripes from rate or cal files, coronagraphs handled separately.

Usage: python miri_destriping.py FILE [FILE ...] --out-dir DIR [--config config/config.toml]
       [--method median_filter|row_median|...] [--lyot mask|adjust|include] [--plot-dir DIR]
"""

from jwstgal.cli.destriping import main_miri as main
from jwstgal.destripe import DestripeParams
from jwstgal.destripe_miri import miri_destripe

__all__ = ["DestripeParams", "main", "miri_destripe"]

if __name__ == "__main__":
    raise SystemExit(main())
