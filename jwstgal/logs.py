"""Logging set-up, done once by the command-line entry points (never by library code)."""

from __future__ import annotations

import logging
import sys
import warnings
from pathlib import Path

FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"
#: ISO 8601 with the date and the UTC offset (logs of cron runs are read days later)
DATEFMT = "%Y-%m-%dT%H:%M:%S%z"


def bar_disabled(progress: bool) -> bool | None:
    """The ``disable`` of a tqdm bar: off when asked, and by itself without a terminal (cron)."""
    return None if progress else True


def setup_logging(level: str = "INFO", log_file: Path | None = None) -> None:
    """Send the suite's and the pipeline's log records to stderr (and optionally a file).

    Parameters
    ----------
    level : str
        Level of the suite's own loggers.
    log_file : pathlib.Path, optional
        Also append every record to this file (the ``tee`` of ``log_jwst_reprocessing.py``).
    """
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if log_file is not None:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(log_file))
    for h in handlers:
        h.setFormatter(logging.Formatter(FORMAT, datefmt=DATEFMT))
        root.addHandler(h)
    root.setLevel(logging.WARNING)
    logging.getLogger("jwstgal").setLevel(level)
    # deprecations raised inside jwst by newer photutils releases: nothing a user can act on
    warnings.filterwarnings("ignore", message=r".*(DEFAULT_COLUMNS|'progress_bar') .*deprecated")
    logging.captureWarnings(True)
    for name in ("stpipe", "jwst", "stcal", "crds", "tweakwcs"):
        logging.getLogger(name).setLevel(logging.WARNING if level != "DEBUG" else logging.INFO)
