"""Turn a config of the original PHANGS-JWST scripts (or of pjpipe) into this suite's config.

Usage: python migrate_config.py OLD_CONFIG [OLD_LOCAL] --out-dir DIR [--overwrite] [--dry-run]

Writes DIR/config.toml and DIR/local.toml (local only with OLD_LOCAL), each opening with the list of
old keys that could not be carried over and why, after checking that they validate (nothing is
written otherwise: exit code 3). docs/migration.md gives the whole mapping.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import tomllib
from collections.abc import Sequence
from pathlib import Path

from jwstgal.cli._common import add_dry_run, add_version, describe, parse, run_main
from jwstgal.errors import ConfigError

log = logging.getLogger(__name__)


def _read(path: Path) -> dict:
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as err:
        msg = f"{path}: cannot read the old config ({err})"
        raise ConfigError(msg) from err


def _header(title: str, unmapped: list[tuple[str, str]]) -> str:
    lines = [f"# {title}",
             "# written by migrate_config.py (jwstgal); keys of the old config not carried over:"]
    lines += [f"#   {k}: {why}" for k, why in unmapped] or ["#   (none)"]
    return "\n".join(lines) + "\n\n"


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit code."""
    p = add_version(argparse.ArgumentParser(description=describe(__doc__),
                                            formatter_class=argparse.RawDescriptionHelpFormatter))
    p.add_argument("config", type=Path, help="the original's config.toml (or a pjpipe config)")
    p.add_argument("local", type=Path, nargs="?", default=None, help="the original's local.toml")
    p.add_argument("--out-dir", type=Path, required=True, help="where config.toml and local.toml go")
    p.add_argument("--overwrite", action="store_true", help="replace files already in --out-dir")
    p.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    p.add_argument("--log-file", type=Path, default=None, help="also write the log to this file")
    add_dry_run(p)
    args = parse(p, argv)
    from jwstgal.logs import setup_logging

    setup_logging(args.log_level, args.log_file)

    def run() -> int:
        import tomli_w

        from jwstgal.config import load_config
        from jwstgal.migrate import migrate
        from jwstgal.provenance import write_text_atomic

        old, old_local = _read(args.config), _read(args.local) if args.local else None
        try:
            m = migrate(old, old_local)
        except (AttributeError, TypeError, KeyError, ValueError) as err:   # valid TOML, wrong shape
            msg = (f"{args.config}{' / ' + str(args.local) if args.local else ''}: not a config of the "
                   f"original scripts or of pjpipe: a table or value has an unexpected shape "
                   f"({type(err).__name__}: {err})")
            raise ConfigError(msg) from None
        science = _header(f"migrated from {args.config}", m.unmapped) + tomli_w.dumps(m.science)
        local = tomli_w.dumps(m.local if m.local else {"local": {"raw_dir": "raw", "working_dir": "work"}})
        if not m.local:
            local = "# placeholder paths: edit them for this machine\n" + local
        with tempfile.TemporaryDirectory() as tmp:    # validate before anything is written
            (Path(tmp) / "config.toml").write_text(science)
            (Path(tmp) / "local.toml").write_text(local)
            try:
                load_config(Path(tmp) / "config.toml", Path(tmp) / "local.toml")
            except ConfigError as err:    # name the file the user gave, not the temporary copy
                msg = (f"{args.config}: its migration does not validate (nothing written): "
                       f"{str(err).replace(str(Path(tmp) / 'config.toml') + ': ', '')}")
                raise ConfigError(msg) from None
        for key, why in m.unmapped:
            log.warning("not carried over: %s: %s", key, why)
        targets = {args.out_dir / "config.toml": science, args.out_dir / "local.toml": local}
        if args.dry_run:
            sys.stdout.write(f"dry run: would write {', '.join(map(str, targets))} (nothing is written)\n")
            sys.stdout.write(science)
            return 0
        sources = {p.resolve() for p in (args.config, args.local) if p is not None}
        if clash := [str(t) for t in targets if t.resolve() in sources]:
            msg = (f"{', '.join(clash)} is the old config itself; write the migrated one to another "
                   "--out-dir (--overwrite never replaces the file it reads)")
            raise ConfigError(msg)
        taken = [str(t) for t in targets if t.exists()]
        if taken and not args.overwrite:
            msg = f"{', '.join(taken)} already exist; use --overwrite to replace them"
            raise ConfigError(msg)
        for path, text in targets.items():
            write_text_atomic(path, text)
        log.info("wrote %s (valid; %d old keys not carried over, listed at its top)",
                 " and ".join(map(str, targets)), len(m.unmapped))
        return 0

    return run_main(run)


if __name__ == "__main__":
    raise SystemExit(main())
