"""Assemble the release: <working_dir>/jwst_release/<data_version>/<target>/...

Usage: python prepare_release.py [CONFIG [LOCAL [BAND]]] [--target T] [--overwrite] [--dry-run]

Mosaics (slimmed copies + coverage maps), anchored mosaics and their fits, catalogues (sky
positions through the released WCS), segmentation maps, quicklooks, every rung of the resolution
ladder and optionally the crf exposures, with run_config.json, MANIFEST.ecsv, SHA256SUMS and a
README generated from what is there. Working and raw data are never modified.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from jwstgal.cli._common import base_parser, parse, run_main, selected

log = logging.getLogger(__name__)


def run_config(cfg) -> dict:
    """The resolved configuration of a run, as released (``run_config.json``).

    Secrets and this machine's folders are left out (``local``'s paths, the Slurm set-up, the
    scheduler address), and any absolute path left is reduced to its last component: a release
    says how it was made, not where.
    """
    from jwstgal.config.messages import SECRET_KEYS
    from jwstgal.provenance import software_versions

    machine = {"slurm", "dask_scheduler", "mast_server"}
    local = {k: v for k, v in cfg.local.model_dump(mode="json").items()
             if k not in SECRET_KEYS and k not in machine and not k.endswith("_dir")}
    return _no_machine_paths({"config_file": cfg.config_path.name, "config_hash": cfg.config_hash,
                              "versions": software_versions(),
                              "science": cfg.science.model_dump(mode="json"), "local": local})


def _no_machine_paths(obj: Any) -> Any:
    """``obj`` with every absolute path string reduced to its last component."""
    from pathlib import PurePosixPath, PureWindowsPath

    if isinstance(obj, dict):
        return {k: _no_machine_paths(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_no_machine_paths(v) for v in obj]
    if isinstance(obj, str) and (obj.startswith(("/", "~")) or PureWindowsPath(obj).drive):
        return PurePosixPath(obj.replace("\\", "/")).name
    return obj


def _dry_run(cfg, release_dir, targets: list[str], bands: list[str], overwrite: bool) -> int:
    """Print what the release would hold and which files would be (re)made; write nothing."""
    import sys

    from jwstgal.release import plan_release

    rel = cfg.science.release
    plan = plan_release(cfg.reprocess_dir, release_dir, targets, bands,
                        **{**rel.options(), "overwrite": rel.overwrite or overwrite})
    sys.stdout.write(f"dry run: release {release_dir} (nothing is written)\n")
    if not plan:
        sys.stdout.write(f"  nothing to release under {cfg.reprocess_dir}\n")
    for src, dst, kind, due in plan:
        sys.stdout.write(f"  {'make' if due else 'keep'} {kind:<16} {dst.relative_to(release_dir)}"
                         f"  <- {src.relative_to(cfg.reprocess_dir)}\n")
    if rel.compare_with:
        sys.stdout.write(f"  then compare with {rel.compare_with}\n")
    return 0


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
        if args.dry_run:
            return _dry_run(cfg, release_dir, targets or cfg.science.targets, bands or cfg.science.bands,
                            args.overwrite)
        files = build_release(cfg.reprocess_dir, release_dir, targets or cfg.science.targets,
                              bands or cfg.science.bands, config_hash=cfg.config_hash,
                              run_config=run_config(cfg),
                              **{**rel.options(), "overwrite": rel.overwrite or args.overwrite})
        if not files:
            log.error("nothing to release under %s", cfg.reprocess_dir)
            return 1
        log.info("released %d files into %s", len(files), release_dir)
        if cfg.reprocess_dir.is_dir():
            from jwstgal.report import write_report

            log.info("QA page updated: %s", write_report(cfg))
        if rel.compare_with:
            from pathlib import Path

            from jwstgal.cli.compare_releases import run_comparison
            from jwstgal.compare import Tolerances

            old = Path(rel.compare_with)
            old = old if old.is_absolute() else (cfg.config_path.parent / old).resolve()
            return run_comparison(old, release_dir, None, Tolerances(**rel.compare_tolerances.model_dump()))
        return 0

    return run_main(run)


if __name__ == "__main__":
    raise SystemExit(main())
