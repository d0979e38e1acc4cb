"""Destripe individual rate or cal files (NIRCam 1/f stripes, MIRI row/column stripes).

Usage: python nircam_destriping.py FILE [FILE ...] --out-dir DIR [--config CONFIG] [--method M] ...
       python miri_destriping.py FILE [FILE ...] --out-dir DIR [--lyot mask|adjust|include] ...

Settings come from the [destripe] table of --config (resolved for each file's FILTER, overrides
included), then from the options given here. Inputs are never modified: results go to --out-dir
under the same names, with method and parameters in the header; files already destriped there with
the same parameters are skipped (re-running resumes). Within the reprocessing pipeline the same code
runs as the ``destripe`` and ``stack_destripe`` steps.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from jwstgal.cli._common import add_dry_run, add_version, describe, parse, run_main
from jwstgal.errors import ConfigError, InputNotFoundError, StepFailedError

#: File names the destriping scripts accept: single exposures, not mosaics or other products.
DESTRIPABLE = ("_rate.fits", "_cal.fits")

log = logging.getLogger(__name__)


def _parser(instrument: str) -> argparse.ArgumentParser:
    from jwstgal.destripe import METHODS

    p = add_version(argparse.ArgumentParser(description=describe(__doc__),
                                            formatter_class=argparse.RawDescriptionHelpFormatter))
    p.add_argument("files", nargs="+", type=Path, help=f"{instrument} *_rate.fits or *_cal.fits files")
    p.add_argument("--out-dir", type=Path, required=True, help="where destriped copies are written")
    p.add_argument("--config", type=Path, default=None, help="science config with a [destripe] table")
    p.add_argument("--method", choices=METHODS, default=None, help="row-pass method")
    p.add_argument("--filter-scales", type=int, nargs="+", default=None, help="median-filter scales")
    p.add_argument("--filter-diffuse", action=argparse.BooleanOptionalAction, default=None,
                   help="high-pass diffuse emission before fitting")
    p.add_argument("--no-vertical", action="store_true", help="skip the column pass")
    if instrument == "MIRI":
        p.add_argument("--lyot", choices=["mask", "adjust", "include"], default=None,
                       help="Lyot coronagraph: mask it, level it to the imager, or fit it")
    else:
        p.add_argument("--no-quadrants", action="store_true", help="fit whole rows, not amplifiers")
    p.add_argument("--plot-dir", type=Path, default=None, help="write before/model/after PNGs here")
    p.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    p.add_argument("--log-file", type=Path, default=None, help="also write the log to this file")
    p.add_argument("--no-progress", action="store_true",
                   help="no progress bar (off by itself without a terminal)")
    add_dry_run(p)
    return p


def _settings(args: argparse.Namespace, table: Any, header: dict) -> dict:
    """The [destripe] settings for one file (FILTER and TARGNAME pick overrides), then the options."""
    from jwstgal.bands import get_band

    try:
        band = get_band(str(header.get("FILTER", "")))
    except KeyError:
        band = None
    if band is not None:
        base = table.for_band(str(header.get("TARGNAME", "")).lower(), band)
    else:
        base = {k: v for k, v in table.model_dump().items() if k != "override"}
    for key, value in (("method", args.method), ("filter_scales", args.filter_scales),
                       ("filter_diffuse", args.filter_diffuse), ("lyot", getattr(args, "lyot", None))):
        if value is not None:
            base[key] = value
    if args.no_vertical:
        base["vertical"] = False
    if getattr(args, "no_quadrants", False):
        base["quadrants"] = False
    return base


def _main(instrument: str, argv: Sequence[str] | None) -> int:
    args = parse(_parser(instrument), argv)
    from jwstgal.logs import bar_disabled, setup_logging

    setup_logging(args.log_level, args.log_file)

    def run() -> int:
        from astropy.io import fits
        from tqdm import tqdm

        from jwstgal.config import load_science
        from jwstgal.destripe import DestripeParams
        from jwstgal.provenance import hash_params, step_keyword
        from jwstgal.steps.destripe import NAME, DestripeSettings, destripe_file

        missing = [str(f) for f in args.files if not f.is_file()]
        if missing:
            msg = f"no such file: {', '.join(missing)}"
            raise InputNotFoundError(msg)
        table = load_science(args.config).destripe if args.config else DestripeSettings.table()()
        for f in args.files:
            if f.resolve().parent == args.out_dir.resolve():
                msg = f"{f}: --out-dir would overwrite the input; choose another directory"
                raise ConfigError(msg)
        if not args.dry_run:
            args.out_dir.mkdir(parents=True, exist_ok=True)
        else:
            sys.stdout.write(f"dry run: {instrument} destriping into {args.out_dir} (nothing is written)\n")
        done, skipped, failed = 0, 0, []
        for f in tqdm(args.files, desc=f"{instrument} destriping", unit="file",
                      disable=bar_disabled(not args.no_progress)):
            try:
                if not f.name.endswith(DESTRIPABLE):
                    msg = (f"{f}: not a rate or cal file (names ending {', '.join(DESTRIPABLE)}); "
                           "mosaics and other products are not destriped")
                    raise ValueError(msg)
                header = dict(fits.getheader(f))
                inst = str(header.get("INSTRUME", instrument)).upper()
                if inst != instrument:
                    msg = f"{f}: INSTRUME is {inst}, not {instrument} (use the {inst.lower()} script)"
                    raise ValueError(msg)
                settings = _settings(args, table, header)
                dst = args.out_dir / f.name
                if dst.is_file() and fits.getheader(dst).get(step_keyword(NAME)) == hash_params(settings):
                    skipped += 1
                    if args.dry_run:
                        sys.stdout.write(f"  skip {f.name}: done with these settings\n")
                    continue
                if args.dry_run:
                    sys.stdout.write(f"  make {f} -> {dst} ({settings['method']})\n")
                    continue
                png = args.plot_dir / f"{f.stem}.png" if args.plot_dir else None
                destripe_file(f, dst, DestripeParams(**settings), plot_png=png)
                done += 1
            except (OSError, ValueError, KeyError, TypeError) as err:  # one bad file, not the batch
                text = str(err) if str(f) in str(err) else f"{f}: {type(err).__name__}: {err}"
                log.error("skipping %s", text)
                failed.append(f)
        log.info("%d files destriped into %s (%d already done, %d failed)", done, args.out_dir, skipped,
                 len(failed))
        if failed:
            msg = (f"{len(failed)} of {len(args.files)} files could not be destriped: "
                   f"{', '.join(map(str, failed))}")
            raise StepFailedError(msg)
        return 0

    return run_main(run)


def main_nircam(argv: Sequence[str] | None = None) -> int:
    """``nircam_destriping.py`` entry point."""
    return _main("NIRCAM", argv)


def main_miri(argv: Sequence[str] | None = None) -> int:
    """``miri_destriping.py`` entry point."""
    return _main("MIRI", argv)


if __name__ == "__main__":
    import sys

    sys.stderr.write("run a command: python -m jwstgal --help\n")
    raise SystemExit(2)
