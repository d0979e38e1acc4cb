"""Download JWST data from MAST into the raw tree the reprocessing reads.

download_phangs_jwst.py [CONFIG [LOCAL]] [--target T] [--dry-run]
    every [projects] target of CONFIG (and the observations it borrows, [extra_obs_to_include]),
    products chosen by [download], into <raw_dir>/<target>/mastDownload/JWST/<obs_id>/.

archive_download.py (--object NAME | --ra RA --dec DEC) [--proposal-id ID] [--instrument NIRCAM]
    [--filter F200W] [--calib-level 1] [--product-type SCIENCE] [--subgroup UNCAL] --out-dir DIR
    any query, into DIR/mastDownload/JWST/<obs_id>/.

Files already complete (size as reported by MAST, FITS checksums) are skipped, a broken transfer
resumes, and a manifest (download_manifest.ecsv) lists what is there. The MAST token comes from
[local] api_key or $MAST_API_TOKEN and is never printed. --dry-run lists what would be fetched and
its size, and writes nothing.
"""

from __future__ import annotations

import argparse
import logging
import os
from collections.abc import Sequence
from pathlib import Path

from jwstgal.cli._common import DEFAULT_CONFIG, add_version, describe, parse, run_main
from jwstgal.errors import DownloadError

log = logging.getLogger(__name__)


def _positive(text: str) -> float:
    """A finite number > 0 (an argparse type)."""
    value = _non_negative(text)
    if value == 0:
        msg = f"{text!r} is not > 0"
        raise argparse.ArgumentTypeError(msg)
    return value


def _non_negative(text: str) -> float:
    """A finite number >= 0 (an argparse type)."""
    import math

    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < 0:
        msg = f"{text!r} is not a finite number >= 0"
        raise argparse.ArgumentTypeError(msg)
    return value


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dry-run", action="store_true", help="list what would be fetched; write nothing")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (cron)")
    p.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    p.add_argument("--log-file", type=Path, default=None, help="also write the log to this file")


def _report(plans: list, dry_run: bool) -> None:
    total = sum(p.total_bytes for p in plans)
    n = sum(len(p.products) for p in plans)
    for plan in plans:
        log.info("%s: %d files, %.1f MB -> %s", plan.label, len(plan.products), plan.total_bytes / 1e6,
                 plan.dest / "mastDownload" / "JWST")
        if dry_run:
            for row in plan.products:
                log.info("  %s/%s  %d bytes", row["obs_id"], row["productFilename"], int(row["size"]))
    log.info("%s %d files, %.1f MB in all", "would fetch" if dry_run else "fetching", n, total / 1e6)


def main_phangs(argv: Sequence[str] | None = None) -> int:
    """``download_phangs_jwst.py`` entry point."""
    p = add_version(argparse.ArgumentParser(description=describe(__doc__),
                                            formatter_class=argparse.RawDescriptionHelpFormatter))
    p.add_argument("config", nargs="?", default=str(DEFAULT_CONFIG), help="science config")
    p.add_argument("local", nargs="?", default=None, help="machine config (default: local.toml beside)")
    p.add_argument("--target", dest="targets", action="append", default=[], help="only this target")
    _common(p)
    args = parse(p, argv)
    from jwstgal.logs import setup_logging

    setup_logging(args.log_level, args.log_file)

    def run() -> int:
        from jwstgal.archive import MastArchive, plan_config_downloads
        from jwstgal.config import load_config

        cfg = load_config(args.config, args.local, check_jwst=False)
        unknown = [t for t in args.targets if t not in cfg.science.targets]
        if unknown:
            msg = (f"target(s) {', '.join(unknown)} not in {cfg.config_path} "
                   f"(targets: {', '.join(cfg.science.targets)})")
            raise DownloadError(msg)
        token = cfg.local.api_key or os.environ.get("MAST_API_TOKEN") or None
        dl = cfg.science.download
        archive = MastArchive(cfg.local.mast_server, token, retries=dl.retries,
                              connect_timeout=dl.connect_timeout, read_timeout=dl.read_timeout,
                              max_bytes=int(dl.max_file_gb * 2**30), min_rate=dl.min_rate_kbs * 1000,
                              rate_window=dl.rate_window)
        plans, missing = plan_config_downloads(cfg.science, cfg.raw_dir, archive, args.targets or None)
        _report(plans, args.dry_run)
        if not args.dry_run:
            for plan in plans:
                manifest = archive.download(plan, progress=not args.no_progress)
                done = sum(s != "already complete" for s in manifest["status"]) if len(manifest) else 0
                log.info("%s: %d fetched, %d already complete", plan.label, done, len(manifest) - done)
        for m in missing:
            log.error("%s", m)
        return 1 if missing else 0

    return run_main(run)


def main_archive(argv: Sequence[str] | None = None) -> int:
    """``archive_download.py`` entry point."""
    p = add_version(argparse.ArgumentParser(description=describe(__doc__),
                                            formatter_class=argparse.RawDescriptionHelpFormatter))
    p.add_argument("--object", default=None,
                   help="MAST object name, e.g. 'NGC 628' (resolved by MAST unless --proposal-id)")
    p.add_argument("--target", dest="config_target", default=None, help=argparse.SUPPRESS)
    p.add_argument("--ra", type=float, default=None, help="cone centre RA (deg)")
    p.add_argument("--dec", type=float, default=None, help="cone centre Dec (deg)")
    p.add_argument("--radius", type=float, default=0.2, help="cone radius (deg)")
    p.add_argument("--proposal-id", default=None, help="proposal id")
    p.add_argument("--instrument", action="append", default=[], choices=["NIRCAM", "MIRI"],
                   help="imaging instrument (repeatable)")
    p.add_argument("--filter", dest="filters", action="append", default=[], help="filter (repeatable)")
    p.add_argument("--calib-level", type=int, action="append", default=[], choices=[1, 2, 3])
    p.add_argument("--product-type", action="append", default=[],
                   choices=["SCIENCE", "PREVIEW", "INFO", "AUXILIARY"])
    p.add_argument("--subgroup", action="append", default=[],
                   help="productSubGroupDescription, e.g. UNCAL, RATE, CAL, I2D, ASN (default UNCAL)")
    p.add_argument("--out-dir", "--out", dest="out", type=Path, required=True,
                   help="destination directory (--out: the older name)")
    p.add_argument("--local", type=Path, default=None,
                   help="machine config (local.toml) with api_key and mast_server")
    p.add_argument("--server", default=None, help="MAST portal URL (default https://mast.stsci.edu)")
    p.add_argument("--retries", type=int, default=5)
    p.add_argument("--connect-timeout", type=float, default=30.0, help="seconds to wait for a connection")
    p.add_argument("--read-timeout", type=float, default=120.0,
                   help="seconds to wait for each block before a transfer counts as stalled")
    p.add_argument("--max-file-gb", type=_positive, default=16.0,
                   help="largest file fetched (GiB), whatever MAST lists (default 16)")
    p.add_argument("--min-rate-kbs", type=_non_negative, default=1.0,
                   help="slowest transfer kept, kB/s over 2 minutes (default 1; 0: no minimum)")
    _common(p)
    args = parse(p, argv)
    if args.config_target is not None:   # --target is a config key everywhere else: say so
        p.error(f"--target is a target of a config in the other scripts; give the MAST object name "
                f"as --object {args.config_target!r}")
    from jwstgal.logs import setup_logging

    setup_logging(args.log_level, args.log_file)

    def run() -> int:
        from jwstgal.archive import (
            DEFAULT_SERVER,
            INSTRUMENT_MODES,
            DownloadPlan,
            MastArchive,
            select_products,
        )

        if args.object is None and (args.ra is None or args.dec is None) and args.proposal_id is None:
            msg = "say what to fetch: --object NAME, --ra/--dec, or --proposal-id"
            raise DownloadError(msg)
        token, server = os.environ.get("MAST_API_TOKEN") or None, args.server
        if args.local is not None:
            from jwstgal.config import load_local

            local = load_local(args.local)
            token = local.api_key or token
            server = server or local.mast_server
        archive = MastArchive(server or DEFAULT_SERVER, token, retries=args.retries,
                              connect_timeout=args.connect_timeout, read_timeout=args.read_timeout,
                              max_bytes=int(args.max_file_gb * 2**30), min_rate=args.min_rate_kbs * 1000)
        coords = (args.ra, args.dec) if args.ra is not None and args.dec is not None else None
        obs = archive.query(proposal_id=args.proposal_id, target=args.object, coordinates=coords,
                            radius_deg=args.radius,
                            instruments=[INSTRUMENT_MODES[i.lower()] for i in args.instrument],
                            filters=args.filters)
        prods = select_products(archive.products(obs), product_types=args.product_type or ["SCIENCE"],
                                subgroups=args.subgroup or ["UNCAL"], calib_levels=args.calib_level or [1])
        if not len(prods):
            what = args.object or (f"RA {args.ra} Dec {args.dec}" if coords
                                   else f"proposal {args.proposal_id}")
            msg = f"MAST has no matching JWST products for {what} ({len(obs)} observations matched)"
            raise DownloadError(msg)
        plan = DownloadPlan(args.out, prods, args.object or "query")
        _report([plan], args.dry_run)
        if not args.dry_run:
            archive.download(plan, progress=not args.no_progress)
        return 0

    return run_main(run)


if __name__ == "__main__":
    import sys

    sys.stderr.write("run a command: python -m jwstgal --help\n")
    raise SystemExit(2)
