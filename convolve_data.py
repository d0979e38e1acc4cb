"""Convolve the final mosaics to every rung of the resolution ladder ([convolve] targets).

Usage: python convolve_data.py [config/config.toml [config/local.toml [BAND]]] [--overwrite]
"""

from jwstgal.cli.convolve_data import main
from jwstgal.convolve import convolve_image
from jwstgal.convolve_products import to_rung

__all__ = ["convolve_image", "main", "to_rung"]

if __name__ == "__main__":
    raise SystemExit(main())
