"""Flatten the results into a documented release tree with checksums and a manifest.

Usage: python prepare_release.py [config/config.toml [config/local.toml [BAND]]] [--overwrite]
"""

from jwstgal.cli.prepare_release import main
from jwstgal.release import build_release, coverage_from_context

__all__ = ["build_release", "coverage_from_context", "main"]

if __name__ == "__main__":
    raise SystemExit(main())
