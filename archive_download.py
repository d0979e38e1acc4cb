"""Query MAST (astroquery) for JWST imaging and download it, resumably, with a manifest.

Usage: python archive_download.py (--target NAME | --ra RA --dec DEC | --proposal-id ID) --out DIR
       [--instrument NIRCAM] [--filter F200W] [--calib-level 1] [--subgroup UNCAL] [--dry-run]
"""

from jwstgal.archive import MastArchive, select_observations, select_products
from jwstgal.cli.download import main_archive as main

__all__ = ["MastArchive", "main", "select_observations", "select_products"]

if __name__ == "__main__":
    raise SystemExit(main())
