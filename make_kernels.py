"""Make PSF-matching kernels (Aniano et al. 2011, pypher) for the configured bands and targets.

Usage: python make_kernels.py [config/config.toml [config/local.toml]] [--band F200W] [--overwrite]
"""

from jwstgal.cli.make_kernels import main
from jwstgal.kernels import make_aniano_kernel, make_pypher_kernel

__all__ = ["main", "make_aniano_kernel", "make_pypher_kernel"]

if __name__ == "__main__":
    raise SystemExit(main())
