"""Memory-aware scheduling: task estimates from file headers, and a pool that keeps to its budget."""

import contextlib
import logging
import sys
import threading
import time

import numpy as np
import psutil
import pytest
from astropy.io import fits

from jwstgal.executor import ExecutorSpec, open_executor
from jwstgal.memory import (
    BASE_BYTES,
    STAGE1_BYTES_PER_VALUE,
    low_memory_stage3,
    stage1_peak,
    stage3_task_peak,
)

MIB = 1024**2

HOG = '''
import time

import numpy as np


def hog(mib, seconds):
    """Hold ``mib`` MiB of touched memory for ``seconds``."""
    block = np.ones(int(mib * 2**20 // 8))
    time.sleep(seconds)
    return float(block[-1])
'''


def test_stage1_estimate_follows_the_ramp_size(tmp_path):
    path = tmp_path / "jw_uncal.fits"
    primary = fits.PrimaryHDU()
    primary.header.update({"NGROUPS": 7, "NINTS": 2, "SUBSIZE1": 64, "SUBSIZE2": 48})
    fits.HDUList([primary, fits.ImageHDU(np.zeros((2, 7, 48, 64), np.uint16), name="SCI")]).writeto(path)
    assert stage1_peak(path) == pytest.approx(BASE_BYTES + STAGE1_BYTES_PER_VALUE * 2 * 7 * 48 * 64)
    full = tmp_path / "full_uncal.fits"     # no SUBSIZE: the SCI array's axes
    fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(np.zeros((1, 3, 32, 40), np.uint16), name="SCI")]
                 ).writeto(full)
    assert stage1_peak(full) == pytest.approx(BASE_BYTES + STAGE1_BYTES_PER_VALUE * 3 * 32 * 40)


def test_a_stage3_that_would_not_fit_keeps_its_copies_on_disk(tmp_path, caplog):
    members = []
    for i in range(4):
        members.append(tmp_path / f"m{i}_cal.fits")
        members[-1].write_bytes(b"\0" * (10 * MIB))
    params = {"steps": {"resample": {"in_memory": True, "rotation": 0.0}}}
    big = stage3_task_peak(params, members)
    assert low_memory_stage3(params, members, budget=2 * big) is params          # it fits: unchanged
    with caplog.at_level(logging.WARNING, logger="jwstgal.memory"):
        low = low_memory_stage3(params, members, budget=big / 2)
    assert low["steps"]["resample"] == {"in_memory": False, "rotation": 0.0}
    assert low["steps"]["outlier_detection"] == {"in_memory": False}
    assert params["steps"]["resample"]["in_memory"] is True                       # not changed
    assert stage3_task_peak(low, members) < big and "in_memory = False" in caplog.text


def _peak_rss_of_children(run):
    """Run ``run()`` while sampling the summed RSS of this process's children; (result, peak)."""
    me, peak, stop = psutil.Process(), [0], threading.Event()

    def sample():
        while not stop.is_set():
            total = 0
            for child in me.children(recursive=True):
                with contextlib.suppress(psutil.Error):     # a worker that just ended
                    total += child.memory_info().rss
            peak[0] = max(peak[0], total)
            time.sleep(0.02)

    t = threading.Thread(target=sample, daemon=True)
    t.start()
    try:
        result = run()
    finally:
        stop.set()
        t.join()
    return result, peak[0]


@pytest.mark.pipeline
@pytest.mark.parametrize("capped", [True, False])
def test_the_pool_keeps_its_peak_memory_under_the_budget(tmp_path, monkeypatch, caplog, capped):
    """8 tasks of 300 MiB on 4 workers with a 1000 MiB budget (estimates 400 MiB): two run at
    once and the pool's summed RSS stays under the budget; without estimates all four run and it
    does not (the measurement can fail)."""
    (tmp_path / "memhog.py").write_text(HOG)
    monkeypatch.syspath_prepend(str(tmp_path))     # spawned workers get this sys.path
    import memhog

    spec = ExecutorSpec("processes", 4, memory_budget=1000 * MIB)
    tasks = [(300, 0.8)] * 8
    with caplog.at_level(logging.INFO, logger="jwstgal.executor"), open_executor(spec) as ex:
        ex.map(abs, [(-1,)] * 4, progress=False)                      # the workers exist first
        results, peak = _peak_rss_of_children(lambda: ex.map(
            memhog.hog, tasks, progress=False, memory=[400 * MIB] * 8 if capped else None))
    assert results == [1.0] * 8
    if capped:
        assert "at most 2 of 4 workers run at once" in caplog.text
        assert 600 * MIB < peak < 1000 * MIB, peak / MIB          # two at once, never three
    else:
        assert peak > 1000 * MIB, peak / MIB
    sys.modules.pop("memhog", None)


@pytest.mark.pipeline
def test_a_dask_cluster_keeps_to_the_budget_too(caplog):
    """The same cap on a (local) Dask cluster: one task at a time, every result in task order."""
    spec = ExecutorSpec("dask", 2, memory_budget=1.5 * 1024**3)
    with caplog.at_level(logging.INFO, logger="jwstgal.executor"), open_executor(spec) as ex:
        out = ex.map(abs, [(-i,) for i in range(5)], progress=False, memory=[1024**3] * 5)
    assert out == [0, 1, 2, 3, 4]
    assert "at most 1 of 2 workers run at once" in caplog.text


def test_an_unreadable_file_gets_a_full_frame_estimate(tmp_path):
    bad = tmp_path / "jw_uncal.fits"
    bad.write_text("not FITS")
    assert stage1_peak(bad) == pytest.approx(BASE_BYTES + STAGE1_BYTES_PER_VALUE * 10 * 2048 * 2048)


def test_the_automatic_budget_is_this_machines_and_only_for_workers_here():
    from types import SimpleNamespace

    from jwstgal.memory import GIB, available_bytes, budget_bytes, workers_here

    assert budget_bytes(3.0) == 3 * GIB
    assert 0 < budget_bytes(0.0) <= available_bytes()
    for executor, scheduler, here in (("processes", "", True), ("dask", "", True),
                                      ("dask", "tcp://host:8786", False), ("slurm", "", False)):
        local = SimpleNamespace(executor=executor, dask_scheduler=scheduler)
        assert workers_here(local) is here
        assert (budget_bytes(0.0, workers_here=here) > 0) is here   # a cluster: no cap unless set
    assert budget_bytes(2.0, workers_here=False) == 2 * GIB


def _threads_seen() -> tuple[str | None, int]:
    import os

    from jwstgal.executor import THREADS_ENV, task_threads

    return os.environ.get(THREADS_ENV), task_threads()


@pytest.mark.pipeline
def test_pool_workers_share_the_cores_among_their_ffts():
    """Each worker of a pool of N gets cores / N threads for its FFTs (no oversubscription); the
    driver, running alone, keeps them all."""
    import os

    from jwstgal.executor import ExecutorSpec, open_executor, task_threads

    share = max(1, (os.cpu_count() or 1) // 2)
    with open_executor(ExecutorSpec("processes", 2)) as ex:
        seen = ex.map(_threads_seen, [()] * 4, progress=False)
    assert seen == [(str(share), share)] * 4
    assert task_threads() == -1
