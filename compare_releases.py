"""Compare two releases (flux ratio, shift, background, coverage per mosaic); exit 1 beyond tolerance.

Usage: python compare_releases.py OLD_RELEASE NEW_RELEASE [--out-dir DIR]
"""

from jwstgal.cli.compare_releases import main
from jwstgal.compare import compare_images, compare_releases

__all__ = ["compare_images", "compare_releases", "main"]

if __name__ == "__main__":
    raise SystemExit(main())
