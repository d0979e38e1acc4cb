"""Convolve the reduced mosaics to a common resolution ([convolve] target) and grid.

Usage: python convolve_data.py [config/config.toml [config/local.toml [BAND]]] [--overwrite]
"""

from jwstgal.cli.convolve_data import main
from jwstgal.convolve import convolve_image, convolve_mosaic

__all__ = ["convolve_image", "convolve_mosaic", "main"]

if __name__ == "__main__":
    raise SystemExit(main())
