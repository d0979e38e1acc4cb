"""The one place where work is spread over processes or a cluster.

Chosen in ``local.toml`` (``[local] executor``):

- ``serial``: in this process (easy to debug);
- ``processes``: a ``spawn`` process pool of ``processes`` workers on this machine;
- ``dask``: a Dask cluster, either an existing scheduler (``dask_scheduler = "tcp://host:8786"``) or
  a local one with ``processes`` single-threaded worker processes;
- ``slurm``: a Dask cluster of Slurm jobs started with dask-jobqueue from ``[local.slurm]``.

Tasks are module-level functions with picklable arguments that import jwst themselves, so every
worker (local or remote) imports the pipeline afresh; each task carries the CRDS environment it
needs, because remote workers do not inherit this process's environment. There is no nested
multiprocessing: pipeline steps run single-process inside a worker.

Workers die with the driver (a ``kill -9`` of the driver leaves no orphan processing on), ignore
the terminal's Ctrl-C (the driver handles it: queued tasks are cancelled, running ones killed, and
:class:`KeyboardInterrupt` goes up to the entry point), and never see the MAST token.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from typing import Any

from tqdm import tqdm

from jwstgal.logs import bar_disabled, forward_worker_logs, worker_logging

log = logging.getLogger(__name__)

#: Environment variables a worker must share with the driver (the MAST token is not one).
SHARED_ENV = ("CRDS_PATH", "CRDS_SERVER_URL", "CRDS_CONTEXT", "STPIPE_DISABLE_CRDS_STEPPARS",
              "STPSF_PATH")
#: Variables a worker never keeps, even where it inherits the driver's environment.
PRIVATE_ENV = ("MAST_API_TOKEN",)
#: Threads one task of a local worker may use (set in the workers of a pool: cores / workers).
THREADS_ENV = "JWSTGAL_THREADS"


def task_threads() -> int:
    """Threads a task may use for its FFTs: its worker's share of the cores, or all of them (-1)."""
    try:
        return max(1, int(os.environ[THREADS_ENV]))
    except (KeyError, ValueError):
        return -1


def _watch_parent(parent: int) -> None:
    while True:
        if os.getppid() != parent:
            os._exit(1)
        time.sleep(1.0)


@contextlib.contextmanager
def interrupts_deferred() -> Iterator[None]:
    """Hold Ctrl-C while processes are spawned and the queues and locks they share are made.

    A :class:`KeyboardInterrupt` in the middle of either leaves a named semaphore behind (the
    resource tracker warns about it at exit) or a half-started worker. Here ``SIGINT`` is recorded
    instead, and blocked in this thread so that processes spawned meanwhile start with it blocked
    (:func:`worker_init` ignores it, then unblocks it); the interrupt is raised on leaving, so a
    Ctrl-C is delayed by milliseconds, never lost. Outside the main thread it does nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: caught.append(signum))
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)   # a pending SIGINT lands in `caught`
        signal.signal(signal.SIGINT, previous)
        if caught and callable(previous):
            previous(signal.SIGINT, None)       # Python's default handler: KeyboardInterrupt
        elif caught and previous == signal.SIG_DFL:
            os.kill(os.getpid(), signal.SIGINT)  # what it would have done: end the process


def worker_init(parent: int, log_queue: Any = None, level: int = logging.INFO, threads: int = 0) -> None:
    """Set up a local worker process: die with the driver, leave Ctrl-C to it, drop secrets.

    ``threads``: the worker's share of the cores, for the threads of its tasks' FFTs (so that
    workers running together do not oversubscribe the machine); 0 leaves them unbounded.

    On Linux the kernel kills the worker when the driver dies (``PR_SET_PDEATHSIG``); everywhere a
    watchdog thread exits when the worker's parent changes. With ``log_queue``, every record goes to
    the driver's handlers (its stderr and ``--log-file``) with its levels and warning filters.
    """
    if log_queue is not None:
        worker_logging(log_queue, level)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})   # blocked since the spawn
    for name in PRIVATE_ENV:
        os.environ.pop(name, None)
    if threads > 0:
        os.environ[THREADS_ENV] = str(threads)
    if sys.platform.startswith("linux"):
        import ctypes

        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    if os.getppid() != parent:  # the driver died before we got here
        os._exit(1)
    threading.Thread(target=_watch_parent, args=(parent,), daemon=True).start()


@dataclass(frozen=True)
class ExecutorSpec:
    """How to run tasks (built from ``local.toml``).

    Attributes
    ----------
    kind : {"serial", "processes", "dask", "slurm"}
        Backend.
    workers : int
        Worker processes (processes/local dask) or Slurm jobs.
    scheduler : str
        Address of an existing Dask scheduler ('' = start a local cluster).
    slurm : dict
        Keyword arguments of ``dask_jobqueue.SLURMCluster`` (queue, account, cores, memory, ...).
    memory_budget : float
        Bytes the tasks running at once may need together (0: no cap); see :meth:`Executor.map`.
    """

    kind: str = "serial"
    workers: int = 1
    scheduler: str = ""
    slurm: dict = field(default_factory=dict)
    memory_budget: float = 0.0


def _with_env(env: dict[str, str], fn: Callable[..., Any], *args: Any) -> Any:
    """Run ``fn(*args)`` after adopting the driver's shared environment (in a worker)."""
    for name in PRIVATE_ENV:
        os.environ.pop(name, None)
    os.environ.update(env)
    return fn(*args)


@contextlib.contextmanager
def _private_env_withheld() -> Iterator[None]:
    """Keep :data:`PRIVATE_ENV` out of the environment while a cluster starts and runs.

    Dask's local workers inherit the driver's environment and ``sbatch`` exports it to Slurm jobs
    by default, so the token must not be in it while either starts processes; it is restored after.
    """
    saved = {name: os.environ.pop(name) for name in PRIVATE_ENV if name in os.environ}
    try:
        yield
    finally:
        os.environ.update(saved)


class Executor:
    """Runs batches of tasks on one backend; open it with :func:`open_executor`."""

    def __init__(self, spec: ExecutorSpec, pool: Any = None, client: Any = None) -> None:
        self.spec = spec
        self._pool = pool
        self._client = client

    def map(self, fn: Callable[..., Any], tasks: Sequence[tuple[Any, ...]], *, desc: str = "",
            progress: bool = True, return_exceptions: bool = False,
            memory: Sequence[float] | None = None) -> list[Any]:
        """Run ``fn(*task)`` for every task; results come back in task order.

        With ``memory`` (each task's estimated peak, bytes; 0 = unknown) and the spec's
        ``memory_budget``, a task starts only while the estimates of those started and not yet
        finished fit in the budget (one task always runs, however large): fewer workers run than
        ``processes`` when the tasks are large, and the log says why.

        Parameters
        ----------
        fn : callable
            Module-level function.
        tasks : sequence of tuple
            Positional arguments of each call.
        desc : str
            Progress-bar label.
        progress : bool
            Show a progress bar.
        return_exceptions : bool
            Return a failed task's exception in its place instead of raising.

        Returns
        -------
        list
            ``fn``'s results.

        Raises
        ------
        Exception
            Unless ``return_exceptions``: the first task failure, after all other tasks have
            finished (their results are kept on disk by the tasks themselves).
        """
        tasks = list(tasks)
        if not tasks:
            return []
        env = {k: os.environ[k] for k in SHARED_ENV if k in os.environ}
        bar = tqdm(total=len(tasks), desc=desc, unit="task", disable=bar_disabled(progress))
        results: dict[int, Any] = {}
        errors: list[BaseException] = []

        def collect(i: int, get: Callable[[], Any]) -> None:
            bar.update()
            try:
                results[i] = get()
            except Exception as err:  # keep the others running, report the first
                log.error("%s: task %d failed: %s", desc, i, err)
                errors.append(err)
                results[i] = err

        futures: dict[Any, int] = {}
        try:
            if self._client is not None and self._capped(memory, desc):
                self._run_capped(lambda i: self._client.submit(_with_env, env, fn, *tasks[i], pure=False),
                                 _wait_dask, list(memory or ()), futures, collect)
            elif self._client is not None:
                from distributed import as_completed as dask_completed

                futures = {self._client.submit(_with_env, env, fn, *t, pure=False): i
                           for i, t in enumerate(tasks)}
                for fut in dask_completed(list(futures)):
                    collect(futures[fut], fut.result)
            elif self._pool is not None and len(tasks) > 1 and self._capped(memory, desc):
                self._run_capped(lambda i: self._pool.submit(_with_env, env, fn, *tasks[i]),
                                 _wait_pool, list(memory or ()), futures, collect)
            elif self._pool is not None and len(tasks) > 1:
                with interrupts_deferred():              # the workers are spawned here
                    futures = {self._pool.submit(_with_env, env, fn, *t): i
                               for i, t in enumerate(tasks)}
                for fut in as_completed(futures):
                    collect(futures[fut], fut.result)
            else:
                for i, t in enumerate(tasks):
                    collect(i, lambda t=t: fn(*t))
        except KeyboardInterrupt:
            self.cancel(list(futures))
            raise
        finally:
            bar.close()
        if errors and not return_exceptions:
            raise errors[0]
        return [results[i] for i in range(len(tasks))]


    def _capped(self, memory: Sequence[float] | None, desc: str) -> bool:
        """Whether the budget caps these tasks (and say so in the log when it does)."""
        budget = self.spec.memory_budget
        if not memory or budget <= 0 or sum(memory) <= budget:
            return False
        biggest = max(memory)
        fit = max(1, int(budget // biggest)) if biggest > 0 else len(memory)
        if fit < min(self.spec.workers, len(memory)):
            log.info("%s: %d tasks of up to %.1f GiB each against a %.1f GiB memory budget: at "
                     "most %d of %d workers run at once", desc or "tasks", len(memory),
                     biggest / 1024**3, budget / 1024**3, fit, self.spec.workers)
        return True

    def _run_capped(self, submit: Callable[[int], Any], wait_any: Callable[[list[Any]], list[Any]],
                    memory: list[float], futures: dict[Any, int],
                    collect: Callable[[int, Callable[[], Any]], None]) -> None:
        """Start tasks in order while their estimates fit the budget; collect them as they end."""
        budget, pending, used = self.spec.memory_budget, list(range(len(memory))), 0.0
        running: dict[Any, int] = {}
        while pending or running:
            while pending and (not running or used + memory[pending[0]] <= budget):
                i = pending.pop(0)
                with interrupts_deferred():              # workers may be spawned here
                    fut = submit(i)
                futures[fut] = running[fut] = i
                used += memory[i]
            for fut in wait_any(list(running)):
                i = running.pop(fut)
                used -= memory[i]
                collect(i, fut.result)

    def cancel(self, futures: list[Any]) -> None:
        """Stop everything at once (Ctrl-C): queued tasks cancelled, running ones killed."""
        log.debug("interrupted: cancelling %d queued tasks and stopping the running ones",
                  sum(not f.done() for f in futures))
        if self._client is not None:
            self._client.cancel(futures, force=True)
        elif self._pool is not None:
            for f in futures:
                f.cancel()
            for proc in list(getattr(self._pool, "_processes", {}).values()):
                proc.kill()
            self._pool.shutdown(wait=False, cancel_futures=True)


def _wait_pool(futures: list[Any]) -> list[Any]:
    from concurrent.futures import FIRST_COMPLETED, wait

    return list(wait(futures, return_when=FIRST_COMPLETED).done)


def _wait_dask(futures: list[Any]) -> list[Any]:
    from distributed import wait

    return list(wait(futures, return_when="FIRST_COMPLETED").done)


def _join_queue_feeders(timeout: float) -> None:
    """Wait (a bounded time) for this process's multiprocessing queue feeder threads to end.

    They are daemon threads holding the last references to their queues' named semaphores: one
    that ends during interpreter shutdown is frozen between unlinking a semaphore and telling the
    resource tracker, which then warns of a leak at exit.
    """
    deadline = time.monotonic() + timeout
    for thread in threading.enumerate():
        if thread.name != "QueueFeederThread" or thread is threading.current_thread():
            continue
        # a feeder being started as we look (in threading's limbo) cannot be joined yet: it
        # belongs to a queue still in use, not to one being released
        with contextlib.suppress(RuntimeError):
            thread.join(timeout=max(0.0, deadline - time.monotonic()))


@contextlib.contextmanager
def open_executor(spec: ExecutorSpec | None = None) -> Iterator[Executor]:
    """Start the backend of ``spec`` (pool, local cluster or Slurm jobs) for the duration of a run."""
    spec = spec or ExecutorSpec()
    if spec.kind == "serial" or (spec.kind == "processes" and spec.workers <= 1):
        yield Executor(spec)
        return
    if spec.kind == "processes":
        ctx = multiprocessing.get_context("spawn")
        try:
            with forward_worker_logs(ctx, interrupts_deferred) as (queue, level):
                with interrupts_deferred():
                    pool = ProcessPoolExecutor(max_workers=spec.workers, mp_context=ctx,
                                               initializer=worker_init,
                                               initargs=(os.getpid(), queue, level,
                                                         max(1, (os.cpu_count() or 1) // spec.workers)))
                try:
                    yield Executor(spec, pool=pool)
                except BaseException:
                    # interrupted or failed: the workers are killed (Executor.cancel did it on Ctrl-C),
                    # then the pool is shut down cleanly (its queues and semaphores released) - but not
                    # waited on for ever, in case a killed worker left one of its queues locked
                    for proc in list(getattr(pool, "_processes", None) or {}):
                        with contextlib.suppress(Exception):
                            pool._processes[proc].kill()
                    closing = threading.Thread(target=pool.shutdown, daemon=True,
                                               kwargs={"wait": True, "cancel_futures": True})
                    closing.start()
                    closing.join(timeout=10.0)
                    raise
                pool.shutdown(wait=True)
        finally:
            _join_queue_feeders(timeout=5.0)
        return
    try:
        from distributed import Client, LocalCluster

        if spec.kind == "slurm":
            from dask_jobqueue import SLURMCluster
    except ImportError as err:
        from jwstgal.errors import ConfigError

        msg = (f"executor = {spec.kind!r} needs Dask ({err.name} is not installed): "
               "pip install 'jwstgal[cluster]'")
        raise ConfigError(msg) from None

    with _private_env_withheld():    # not inherited by local workers, not exported by sbatch
        cluster = None
        if spec.kind == "slurm":
            cluster = SLURMCluster(**spec.slurm)
            cluster.scale(jobs=spec.workers)
            log.info("Slurm cluster: %d jobs requested (%s)", spec.workers, spec.slurm)
        elif not spec.scheduler:
            cluster = LocalCluster(n_workers=spec.workers, threads_per_worker=1, processes=True,
                                   dashboard_address=None)
        client = Client(cluster) if cluster is not None else Client(spec.scheduler)
        log.info("Dask client: %s", client)
        with contextlib.suppress(AttributeError):      # the workers' jwstgal records, logged here
            client.forward_logging("jwstgal", level=logging.getLogger("jwstgal").getEffectiveLevel())
        try:
            yield Executor(spec, client=client)
        finally:
            client.close()
            if cluster is not None:
                cluster.close()
