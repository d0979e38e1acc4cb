"""The one place where work is spread over processes.

Tasks are module-level functions with picklable arguments. ``processes == 1`` runs them in this
process (easy to debug); more uses a ``spawn`` process pool so that every worker imports jwst afresh
and inherits the CRDS environment, with no nested multiprocessing.
"""

from __future__ import annotations

import logging
import multiprocessing
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from typing import Any

from tqdm import tqdm

log = logging.getLogger(__name__)


def map_tasks[T](
    fn: Callable[..., T],
    tasks: Sequence[tuple[Any, ...]] | Iterable[tuple[Any, ...]],
    *,
    processes: int = 1,
    desc: str = "",
    progress: bool = True,
) -> list[T]:
    """Run ``fn(*task)`` for every task; results come back in task order.

    Parameters
    ----------
    fn : callable
        Module-level function.
    tasks : sequence of tuple
        Positional arguments of each call.
    processes : int
        Worker processes; 1 runs serially in this process.
    desc : str
        Progress-bar label.
    progress : bool
        Show a progress bar.

    Returns
    -------
    list
        ``fn``'s results.

    Raises
    ------
    Exception
        The first task failure, after the other running tasks have finished (their results are
        kept on disk by the tasks themselves).
    """
    tasks = list(tasks)
    if not tasks:
        return []
    bar = tqdm(total=len(tasks), desc=desc, unit="task", disable=not progress)
    try:
        if processes <= 1 or len(tasks) == 1:
            out = []
            for t in tasks:
                out.append(fn(*t))
                bar.update()
            return out
        ctx = multiprocessing.get_context("spawn")
        results: dict[int, T] = {}
        first_error: BaseException | None = None
        with ProcessPoolExecutor(max_workers=min(processes, len(tasks)), mp_context=ctx) as pool:
            futures = {pool.submit(fn, *t): i for i, t in enumerate(tasks)}
            for fut in as_completed(futures):
                bar.update()
                try:
                    results[futures[fut]] = fut.result()
                except Exception as err:  # keep the others running, report the first
                    log.error("%s: task %d failed: %s", desc, futures[fut], err)
                    first_error = first_error or err
        if first_error is not None:
            raise first_error
        return [results[i] for i in range(len(tasks))]
    finally:
        bar.close()
