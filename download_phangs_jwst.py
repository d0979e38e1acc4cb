"""Download the JWST data of every target in a config from MAST into <raw_dir>/<target>/.

Usage: python download_phangs_jwst.py [config/config.toml [config/local.toml]] [--target T] [--dry-run]
"""

from jwstgal.cli.download import main_phangs as main

__all__ = ["main"]

if __name__ == "__main__":
    raise SystemExit(main())
