"""``python -m jwstgal <command> [options]`` (also the ``jwstgal`` console script).

Every script of the suite as a sub-command; ``python -m jwstgal <command> --help`` for each.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from importlib import import_module

#: command -> (module in jwstgal.cli, function, what it does)
COMMANDS: dict[str, tuple[str, str, str]] = {
    "init": ("init", "main", "write the example config.toml and local.toml into DIR/config/"),
    "download": ("download", "main_phangs", "fetch a programme's files from MAST (download_phangs_jwst.py)"),
    "archive-download": ("download", "main_archive", "any MAST query (archive_download.py)"),
    "reprocess": ("run_jwst_reprocessing", "main", "stages 1-3 and the steps between it"),
    "log-reprocess": ("log_jwst_reprocessing", "main", "reprocess with the log kept in a file"),
    "nircam-destripe": ("destriping", "main_nircam", "destripe NIRCam files (nircam_destriping.py)"),
    "miri-destripe": ("destriping", "main_miri", "destripe MIRI files (miri_destriping.py)"),
    "kernels": ("make_kernels", "main", "PSFs and PSF-matching kernels (make_kernels.py)"),
    "anchor": ("anchor_data", "main", "anchor the backgrounds to external maps (anchor_data.py)"),
    "convolve": ("convolve_data", "main", "the resolution ladder (convolve_data.py)"),
    "release": ("prepare_release", "main", "assemble the release (prepare_release.py)"),
    "compare-releases": ("compare_releases", "main", "what changed between releases (compare_releases.py)"),
    "migrate-config": ("migrate_config", "main", "old config -> ours (migrate_config.py)"),
}  # fmt: skip


def command(name: str) -> Callable[[Sequence[str] | None], int]:
    """The entry point of a command."""
    module, func, _ = COMMANDS[name]
    return getattr(import_module(f"jwstgal.cli.{module}"), func)


def _usage() -> str:
    from jwstgal import __version__

    width = max(map(len, COMMANDS))
    lines = [f"usage: python -m jwstgal <command> [options]   (jwstgal {__version__})", "", "commands:"]
    lines += [f"  {name:<{width}}  {doc}" for name, (_, _, doc) in COMMANDS.items()]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    """Dispatch to a command; 2 (usage error) for a missing or unknown one."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        sys.stdout.write(_usage())
        return 0 if args else 2
    if args[0] == "--version":
        from jwstgal import __version__

        sys.stdout.write(f"jwstgal {__version__}\n")
        return 0
    if args[0] not in COMMANDS:
        from difflib import get_close_matches

        near = get_close_matches(args[0], COMMANDS, n=1)
        sys.stderr.write(f"jwstgal: unknown command {args[0]!r}"
                         f"{f'; did you mean {near[0]!r}?' if near else ''}\n{_usage()}")
        return 2
    # the command's parser names itself after sys.argv[0]: "jwstgal reprocess", not "__main__.py"
    root = "python -m jwstgal" if sys.argv[0].endswith("__main__.py") else "jwstgal"
    saved, sys.argv[0] = sys.argv[0], f"{root} {args[0]}"
    try:
        return command(args[0])(args[1:])
    finally:
        sys.argv[0] = saved


if __name__ == "__main__":
    raise SystemExit(main())
