"""Assemble the release: <working_dir>/jwst_release/<data_version>/<target>/...

Usage: python prepare_release.py [CONFIG [LOCAL [BAND]]] [--target T] [--overwrite] [--dry-run]

Mosaics (slimmed copies + coverage maps), anchored mosaics and their fits, catalogues (sky
positions through the released WCS), segmentation maps, quicklooks, every rung of the resolution
ladder and optionally the crf exposures, with run_config.json, MANIFEST.ecsv, SHA256SUMS and a
README generated from what is there. Working and raw data are never modified. The files are
released in parallel on the executor of local.toml; with [release] compare_with, the new release
is then compared with that one (exit code 1 beyond [release.compare_tolerances]).
"""

from __future__ import annotations

from collections.abc import Sequence

from jwstgal.cli._common import run_post_command


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit code."""
    return run_post_command(__doc__, ["release", "compare"], argv, overwrite_help="replace released files")


if __name__ == "__main__":
    raise SystemExit(main())
