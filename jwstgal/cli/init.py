"""Start a project folder: write the example configs shipped with the suite into ``DIR/config/``.

Usage: jwstgal init [DIR] [--force]

Writes ``DIR/config/config.toml`` (the science set-up: targets, bands, steps, parameters) and
``DIR/config/local.toml`` (this machine's paths: raw data, working folder, CRDS cache, workers).
Edit both, then run ``jwstgal reprocess`` (or ``jwstgal-reprocess``) from DIR: a command without a
config reads ``./config/config.toml``. Existing files are kept unless ``--force``.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from jwstgal.cli._common import add_version, run_main
from jwstgal.errors import ConfigError

log = logging.getLogger(__name__)

#: The example files written, by name.
EXAMPLES = ("config.toml", "local.toml")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit code."""
    p = add_version(argparse.ArgumentParser(description=__doc__,
                                            formatter_class=argparse.RawDescriptionHelpFormatter))
    p.add_argument("dir", type=Path, nargs="?", default=Path(), help="project folder (default: here)")
    p.add_argument("--force", action="store_true", help="replace config files that exist")
    args = p.parse_args(list(argv) if argv is not None else None)
    from jwstgal.logs import setup_logging

    setup_logging("INFO", None)

    def run() -> int:
        from jwstgal.data import data_path
        from jwstgal.provenance import write_text_atomic

        out = args.dir / "config"
        if out.exists() and not out.is_dir():
            msg = f"{out} exists and is not a folder"
            raise ConfigError(msg)
        taken = [str(out / n) for n in EXAMPLES if (out / n).exists()]
        if taken and not args.force:
            msg = f"{', '.join(taken)} already exist; edit them, or use --force to replace them"
            raise ConfigError(msg)
        for name in EXAMPLES:
            write_text_atomic(out / name, (data_path("config") / name).read_text())
        sys.stdout.write(f"wrote {out / 'config.toml'} (science set-up) and {out / 'local.toml'} "
                         f"(this machine's paths).\nEdit both, then from {args.dir.resolve()} run:\n"
                         "  jwstgal download      # fetch the data from MAST\n"
                         "  jwstgal reprocess     # stages 1-3 and the steps between them\n")
        return 0

    return run_main(run)


if __name__ == "__main__":
    raise SystemExit(main())
