"""Logging set-up, done once by the command-line entry points (never by library code)."""

from __future__ import annotations

import contextlib
import logging
import sys
import warnings
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, nullcontext
from logging.handlers import QueueHandler, QueueListener
from pathlib import Path
from typing import Any

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
    suite_first = SuiteFirst(verbose=level in ("DEBUG", logging.DEBUG))
    for h in handlers:
        h.setFormatter(logging.Formatter(FORMAT, datefmt=DATEFMT))
        h.addFilter(suite_first)
        root.addHandler(h)
    _levels_and_filters(level)


class SuiteFirst(logging.Filter):
    """The suite's log: its own records, and other packages' warnings and errors only.

    Some packages set their own loggers' levels (tweakwcs puts its loggers at DEBUG on import), so
    logger levels alone do not keep their chatter out of a batch log; this filter on the handlers
    does, whatever the loggers say. With ``--log-level DEBUG`` everything passes.
    """

    def __init__(self, verbose: bool = False) -> None:
        super().__init__()
        self.verbose = verbose

    def filter(self, record: logging.LogRecord) -> bool:
        """Whether a record goes to the log."""
        return self.verbose or record.levelno >= logging.WARNING or record.name.split(".")[0] == "jwstgal"


def _levels_and_filters(level: str | int) -> None:
    """Logger levels and warning filters shared by the driver and its worker processes."""
    root = logging.getLogger()
    root.setLevel(logging.WARNING)
    logging.getLogger("jwstgal").setLevel(level)
    # deprecations raised inside jwst by newer photutils releases: nothing a user can act on
    warnings.filterwarnings("ignore", message=r".*(DEFAULT_COLUMNS|'progress_bar') .*deprecated")
    logging.captureWarnings(True)
    quiet = level not in ("DEBUG", logging.DEBUG)
    for name in ("stpipe", "jwst", "stcal", "crds", "tweakwcs"):
        logging.getLogger(name).setLevel(logging.WARNING if quiet else logging.INFO)
    # pysiaf (imported by stpsf) warns on every import that offline it cannot check its PRD version
    logging.getLogger("pysiaf").setLevel(logging.ERROR if quiet else logging.INFO)


def worker_logging(queue: Any, level: int) -> None:
    """In a worker process: records go through ``queue`` to the driver's handlers.

    They reach its stderr and log file in its format; levels and warning filters are the driver's.
    """
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    root.addHandler(QueueHandler(queue))
    _levels_and_filters(level)


@contextlib.contextmanager
def forward_worker_logs(ctx: Any, guard: Callable[[], AbstractContextManager[Any]] = nullcontext,
                        ) -> Iterator[tuple[Any, int]]:
    """In the driver: a queue the workers log into, emptied into this process's handlers.

    Yields the queue and the level of the suite's loggers, for :func:`worker_logging`. The queue
    is made under ``guard()`` (the executor holds Ctrl-C there: see its ``interrupts_deferred``).
    """
    with guard():
        q = ctx.Queue()
        listener = QueueListener(q, *logging.getLogger().handlers, respect_handler_level=True)
        listener.start()
    try:
        yield q, logging.getLogger("jwstgal").getEffectiveLevel()
    finally:
        # A worker killed while writing a record (Ctrl-C, kill -9) leaves the queue's write lock
        # held for ever: the sentinel may never arrive. Wait a moment, then let both threads go
        # rather than hang the driver's exit on them.
        thread = listener._thread
        listener.enqueue_sentinel()
        if thread is not None:
            thread.join(timeout=5.0)
        listener._thread = None
        q.cancel_join_thread()
        q.close()
