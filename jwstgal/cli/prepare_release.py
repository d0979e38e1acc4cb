"""Assemble the release: <working_dir>/jwst_release/<data_version>/<target>/...

Usage: python prepare_release.py [CONFIG [LOCAL [BAND]]] [--target T] [--overwrite]

Mosaics (slimmed copies + coverage maps), catalogues, quicklooks and convolved products, with
MANIFEST.ecsv, SHA256SUMS and a README. Working and raw data are never modified.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from jwstgal.cli._common import base_parser, parse, run_main, selected

log = logging.getLogger(__name__)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit code."""
    parser = base_parser(__doc__)
    parser.add_argument("--overwrite", action="store_true", help="replace released files")
    args = parse(parser, argv)
    from jwstgal.logs import setup_logging

    setup_logging(args.log_level, args.log_file)

    def run() -> int:
        from jwstgal.config import load_config
        from jwstgal.release import build_release

        cfg = load_config(args.config, args.local, check_jwst=False)
        rel = cfg.science.release
        bands, targets = selected(args, cfg)
        release_dir = cfg.working_dir / "jwst_release" / cfg.science.pipeline.data_version
        files = build_release(cfg.reprocess_dir, release_dir, targets or cfg.science.targets,
                              bands or cfg.science.bands, remove_bloat=rel.remove_bloat,
                              include_convolved=rel.include_convolved,
                              overwrite=rel.overwrite or args.overwrite,
                              config_hash=cfg.config_hash)
        if not files:
            log.error("nothing to release under %s", cfg.reprocess_dir)
            return 1
        log.info("released %d files into %s", len(files), release_dir)
        return 0

    return run_main(run)
