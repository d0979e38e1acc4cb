"""Run run_jwst_reprocessing with its whole log also written to a time-stamped file.

Usage: python log_jwst_reprocessing.py [CONFIG [LOCAL [BAND]]] [options of run_jwst_reprocessing]

The log goes to <working_dir>/jwst_reprocess_log_<YYYYmmdd_HHMMSS>.log (or --log-file).
"""

from __future__ import annotations

import datetime
import sys
from collections.abc import Sequence

from jwstgal.cli import run_jwst_reprocessing
from jwstgal.cli._common import base_parser, parse, run_main


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit code of the reprocessing run."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse(base_parser(__doc__), argv)
    if args.log_file is None and not args.dry_run:   # a dry run writes nothing, not even a log
        from jwstgal.config import load_config

        def working_dir() -> int:
            cfg = load_config(args.config, args.local, check_jwst=False)
            stamp = datetime.datetime.now().strftime("%Y%m%d_%H%M%S")
            argv.extend(["--log-file", str(cfg.working_dir / f"jwst_reprocess_log_{stamp}.log")])
            return 0

        from jwstgal.logs import setup_logging

        setup_logging(args.log_level)
        if (code := run_main(working_dir)) != 0:
            return code
    return run_jwst_reprocessing.main(argv)


if __name__ == "__main__":
    raise SystemExit(main())
