"""Compare two releases: flux ratio, sky shift, background and coverage of every mosaic.

Usage: python compare_releases.py OLD_RELEASE NEW_RELEASE [--out-dir DIR] [--flux-tol 0.02]
       [--shift-tol 10] [--background-tol 0.01] [--coverage-tol 0.05] [--dry-run]

OLD/NEW are release folders (jwst_release/<data_version>, with MANIFEST.ecsv). Writes
comparison.ecsv, one figure per mosaic and index.html to --out-dir (default: a folder beside NEW,
comparison_<old>_to_<new>). Exit code 1 when any mosaic moved, changed flux, background or coverage
beyond the tolerances (or is only in one release), so that cron can alert; 0 otherwise. To run it
after every prepare_release.py, set [release] compare_with (and compare_tolerances) in the config.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from pathlib import Path

from jwstgal.cli._common import add_dry_run, add_version, describe, run_main

log = logging.getLogger(__name__)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit code."""
    p = add_version(argparse.ArgumentParser(description=describe(__doc__),
                                            formatter_class=argparse.RawDescriptionHelpFormatter))
    p.add_argument("old", type=Path, help="the previous release folder")
    p.add_argument("new", type=Path, help="the new release folder")
    p.add_argument("--out-dir", type=Path, default=None, help="where the table and page go")
    p.add_argument("--flux-tol", type=float, default=0.02, help="largest |flux ratio - 1|")
    p.add_argument("--shift-tol", type=float, default=10.0, help="largest shift (mas)")
    p.add_argument("--background-tol", type=float, default=0.01, help="largest background change (MJy/sr)")
    p.add_argument("--coverage-tol", type=float, default=0.05, help="largest coverage change (fraction)")
    p.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    p.add_argument("--log-file", type=Path, default=None, help="also write the log to this file")
    add_dry_run(p)
    args = p.parse_args(list(argv) if argv is not None else None)
    from jwstgal.logs import setup_logging

    setup_logging(args.log_level, args.log_file)

    def run() -> int:
        from jwstgal.compare import Tolerances, run_comparison

        tol = Tolerances(args.flux_tol, args.shift_tol, args.background_tol, args.coverage_tol)
        return run_comparison(args.old.resolve(), args.new.resolve(), args.out_dir, tol,
                              dry_run=args.dry_run)

    return run_main(run)


if __name__ == "__main__":
    raise SystemExit(main())
