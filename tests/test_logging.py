"""Logs fit for cron: workers log through the driver, ISO dates, no bars without a terminal."""

import re
import subprocess
import sys

from conftest import REPO

SCRIPT = '''
import logging, os, sys, warnings

def task(i):
    logging.getLogger("jwstgal.worker_test").info("hello from worker %d pid %d", i, os.getpid())
    warnings.warn("DEFAULT_COLUMNS is deprecated and will be removed", DeprecationWarning)  # filtered
    warnings.warn(f"a warning of task {i}", UserWarning)
    return os.getpid()

if __name__ == "__main__":
    from pathlib import Path
    from jwstgal.executor import ExecutorSpec, open_executor
    from jwstgal.logs import setup_logging

    setup_logging("INFO", Path(sys.argv[1]))
    with open_executor(ExecutorSpec("processes", 2)) as ex:
        pids = ex.map(task, [(i,) for i in range(4)], progress=True)
    logging.getLogger("jwstgal.worker_test").info("driver %d saw workers %s", os.getpid(), sorted(set(pids)))
'''


def test_worker_records_reach_the_drivers_log_file_with_dates(tmp_path):
    (tmp_path / "workers.py").write_text(SCRIPT)
    log = tmp_path / "run.log"
    res = subprocess.run([sys.executable, "workers.py", str(log)], cwd=tmp_path, capture_output=True,
                         text=True, timeout=300, env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})
    assert res.returncode == 0, res.stderr[-3000:]
    text = log.read_text()
    driver = int(re.search(r"driver (\d+)", text).group(1))
    workers = {int(p) for p in re.findall(r"hello from worker \d pid (\d+)", text)}
    assert len(re.findall("hello from worker", text)) == 4 and driver not in workers
    assert all(re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d{4} ", line) for line in text.splitlines()
               if line and not line.startswith(" "))
    assert "a warning of task 3" in text and "DEFAULT_COLUMNS" not in text   # same filters as the driver
    assert "task/s" not in res.stderr and "it/s" not in res.stderr           # no bar without a terminal


def test_other_packages_chatter_stays_out_of_the_suites_log(capsys):
    """Issue #28: tweakwcs sets its loggers to DEBUG, and its INFO lines filled batch logs."""
    import logging

    from jwstgal.logs import setup_logging

    chatty = logging.getLogger("tweakwcs.matchutils")
    try:
        chatty.setLevel(logging.DEBUG)                      # what tweakwcs does on import
        setup_logging("INFO")
        chatty.info("Matching sources from 'Unnamed' catalog")
        chatty.warning("a real problem")
        logging.getLogger("jwstgal.steps.lv3").info("our summary line")
        err = capsys.readouterr().err
        assert "our summary line" in err and "a real problem" in err
        assert "Matching sources" not in err
        setup_logging("DEBUG")                               # all of it, when asked
        chatty.info("Matching sources again")
        assert "Matching sources again" in capsys.readouterr().err
    finally:
        chatty.setLevel(logging.NOTSET)
        setup_logging("INFO")
        logging.getLogger().handlers.clear()
