"""Anchor every band's absolute background to external maps and to the instrument's reference band.

Usage: python anchor_data.py [config/config.toml [config/local.toml]] [--target T] [--overwrite]
"""

from jwstgal.anchor import binned_fit, estimate_offset
from jwstgal.cli.anchor_data import main

__all__ = ["binned_fit", "estimate_offset", "main"]

if __name__ == "__main__":
    raise SystemExit(main())
