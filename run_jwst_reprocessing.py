"""Reprocess JWST imaging with the STScI pipeline, stages 1 -> 2 -> 3, as configured.

Usage: python run_jwst_reprocessing.py [config/config.toml [config/local.toml [BAND]]]
In IPython, a bare ``%run run_jwst_reprocessing.py`` loads config/config.toml.
"""

from jwstgal.cli.run_jwst_reprocessing import main

if __name__ == "__main__":
    raise SystemExit(main())
