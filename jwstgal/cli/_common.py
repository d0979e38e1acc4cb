"""Argument parsing shared by the scripts, and the error wrapper of every entry point."""

from __future__ import annotations

import argparse
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from jwstgal.errors import ConfigError, ReductionError

log = logging.getLogger(__name__)

#: The repository root (a source checkout; in an installed wheel, where the package sits).
REPO_ROOT = Path(__file__).resolve().parents[2]


def default_config() -> Path:
    """The config used when none is given: ``./config/config.toml``, else the checkout's."""
    here = Path.cwd() / "config" / "config.toml"
    if here.is_file():
        return here
    from jwstgal.data import checkout_root

    root = checkout_root()
    return root / "config" / "config.toml" if root else here


DEFAULT_CONFIG = default_config()


#: The top-level scripts of a checkout, and the command each one is once installed.
SCRIPT_COMMANDS = {
    "run_jwst_reprocessing.py": "reprocess", "log_jwst_reprocessing.py": "log-reprocess",
    "download_phangs_jwst.py": "download", "archive_download.py": "archive-download",
    "nircam_destriping.py": "nircam-destripe", "miri_destriping.py": "miri-destripe",
    "make_kernels.py": "kernels", "anchor_data.py": "anchor", "convolve_data.py": "convolve",
    "prepare_release.py": "release", "compare_releases.py": "compare-releases",
    "migrate_config.py": "migrate-config",
}  # fmt: skip


def describe(doc: str | None) -> str:
    """A command's ``--help`` text for how it was invoked.

    Run as a checkout script (``python make_kernels.py``) the text names the scripts; run as an
    installed command (``jwstgal-kernels``, ``jwstgal kernels``, ``python -m jwstgal kernels``) it
    names the commands, and the IPython ``%run`` notes of the scripts are left out.
    """
    import sys

    doc = doc or ""
    prog = Path(sys.argv[0]).name
    if prog.endswith(".py") and prog != "__main__.py":
        return doc
    doc = "\n".join(line for line in doc.splitlines() if "%run" not in line)
    for script, cmd in SCRIPT_COMMANDS.items():
        doc = doc.replace(f"python {script}", f"jwstgal {cmd}").replace(script, f"jwstgal {cmd}")
    return doc


def add_version(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """``--version``: the suite's version and the jwst version it runs."""
    from importlib.metadata import PackageNotFoundError, version

    from jwstgal import __version__

    try:
        jwst = version("jwst")
    except PackageNotFoundError:
        jwst = "not installed"
    p.add_argument("--version", action="version", version=f"jwstgal {__version__} (jwst {jwst})")
    return p


def base_parser(description: str) -> argparse.ArgumentParser:
    """Parser with the seed's calling convention: ``[CONFIG] [LOCAL] [BAND]``."""
    p = argparse.ArgumentParser(description=describe(description),
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("config", nargs="?", default=str(DEFAULT_CONFIG),
                   help="science config (default: ./config/config.toml, else the checkout's; "
                        "`jwstgal init` writes one)")
    p.add_argument("local", nargs="?", default=None,
                   help="machine config (default: local.toml beside CONFIG)")
    p.add_argument("band", nargs="?", default=None, help="process only this band (e.g. F200W)")
    p.add_argument("--band", dest="bands", action="append", default=[],
                   help="process only this band (repeatable)")
    p.add_argument("--target", dest="targets", action="append", default=[],
                   help="process only this target (repeatable)")
    p.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    p.add_argument("--log-file", type=Path, default=None, help="also write the log to this file")
    p.add_argument("--no-progress", action="store_true",
                   help="no progress bars (they are off by themselves without a terminal)")
    add_dry_run(p)
    return add_version(p)


def add_dry_run(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """``--dry-run``: print the plan (what would be made or skipped and why, files in/out); write nothing."""
    p.add_argument("--dry-run", action="store_true",
                   help="print what would be done (and why), with the files in and out; write nothing")
    return p


#: Exit codes of every script: 0 done, 1 a reduction error or work left undone (named in the log),
#: 2 a command-line usage error (argparse), 3 a configuration error (nothing was written), 130 Ctrl-C.
EXIT_CONFIG = 3


def run_main(fn: Callable[[], int]) -> int:
    """Run an entry point: deliberate errors become one log line and an exit code.

    Returns :data:`EXIT_CONFIG` (3) for configuration errors, 1 for other reduction errors and 130
    for Ctrl-C (queued work cancelled, finished products and step records kept: run again to
    resume); argparse's usage errors exit with 2 before this runs. Anything else is a bug and
    keeps its traceback.
    """
    try:
        return fn()
    except KeyboardInterrupt:
        log.error("interrupted: finished products are kept; run the same command again to resume")
        return 130
    except ConfigError as err:
        log.error("configuration error:\n%s", err)
        return EXIT_CONFIG
    except ReductionError as err:
        log.error("%s", err)
        return 1


def selected(args: argparse.Namespace, cfg: Any = None) -> tuple[list[str] | None, list[str] | None]:
    """Bands and targets chosen on the command line (None = all), checked against ``cfg``.

    Raises
    ------
    ConfigError
        For a band or target the configuration does not have (one message, with the choices).
    """
    from jwstgal.settings import did_you_mean

    bands = [b.upper() for b in [*args.bands, *([args.band] if args.band else [])]]
    if cfg is not None:
        for b in bands:
            if b not in cfg.science.bands:
                msg = (f"band {b!r} from the command line is not configured in {cfg.config_path} "
                       f"(pipeline.nircam_bands/miri_bands: {', '.join(cfg.science.bands)})"
                       f"{did_you_mean(b, cfg.science.bands)}")
                raise ConfigError(msg)
        for t in args.targets:
            if t not in cfg.science.targets:
                msg = (f"target {t!r} from the command line is not in {cfg.config_path} "
                       f"(targets: {', '.join(cfg.science.targets)}){did_you_mean(t, cfg.science.targets)}")
                raise ConfigError(msg)
    return (bands or None), (args.targets or None)


def parse(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace:
    """Parse ``argv``; under IPython's ``%run`` with no arguments the defaults apply.

    A band given where the machine config goes (``CONFIG F200W``) is taken as the band, saying so:
    no file of that name exists, and the machine config is then ``local.toml`` beside CONFIG.
    """
    import sys

    from jwstgal.bands import FWHM_PIX

    args = parser.parse_intermixed_args(list(argv) if argv is not None else None)
    local = getattr(args, "local", None)
    if (local and hasattr(args, "band") and str(local).upper() in FWHM_PIX
            and not Path(local).exists()):
        if args.band:
            parser.error(f"{local!r} is a band, not a machine config, and {args.band!r} is one too: "
                         "give LOCAL before BAND, or --band twice")
        sys.stderr.write(f"{parser.prog}: {local!r} is a band, not a machine config: processing band "
                         f"{str(local).upper()} with the local.toml beside {args.config}\n")
        args.band, args.local = str(local), None
    return args


def run_post_command(doc: str | None, steps: list[str], argv: Sequence[str] | None, *,
                     overwrite_help: str = "remake existing products") -> int:
    """A script that runs post-mosaic steps (``convolve_data.py``...): one CLI for all of them.

    The config is loaded and checked, the steps are run (or planned, with ``--dry-run``) for the
    selected targets and bands through :func:`jwstgal.post_runner.run_post_steps`, and the QA
    page is brought up to date.
    """
    parser = base_parser(doc or "")
    parser.add_argument("--overwrite", action="store_true", help=overwrite_help)
    args = parse(parser, argv)
    from jwstgal.logs import setup_logging

    setup_logging(args.log_level, args.log_file)

    def run() -> int:
        from jwstgal.config import load_config
        from jwstgal.post_runner import run_post_steps

        cfg = load_config(args.config, args.local, check_jwst=False)
        bands, targets = selected(args, cfg)
        code = run_post_steps(cfg, steps, bands, targets, overwrite=args.overwrite,
                              dry_run=args.dry_run, progress=not args.no_progress)
        if not args.dry_run and cfg.reprocess_dir.is_dir():
            from jwstgal.report import write_report

            log.info("QA page updated: %s", write_report(cfg))
        return code

    return run_main(run)
