"""How much memory a pipeline task will need, and how much the machine can give.

The jwst stages need far more memory than their input files: calwebb_detector1 holds the ramp in
several float32 and flag copies while it fits (reports on the jwst tracker put its peak near two
orders of magnitude above the uint16 uncal file), and calwebb_image3 holds every member (and,
with ``in_memory``, the resampled copies outlier detection makes). The executor uses these
estimates to cap how many tasks run at once (:meth:`jwstgal.executor.Executor.map`), so that
``processes = N`` on a 24 GB laptop does not start N stage-1 tasks that the OOM killer then ends.

The per-value costs are deliberately generous: an estimate too high costs parallelism, one too
low costs the run.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from astropy.io import fits

log = logging.getLogger(__name__)

GIB = 1024**3
#: A worker with jwst imported, before it reads anything.
BASE_BYTES = 0.8 * GIB
#: Stage 1, per value of the ramp (groups x integrations x pixels): float32 data, error and
#: flag arrays, their working copies in jump detection and ramp fitting, and the rate products.
STAGE1_BYTES_PER_VALUE = 100.0
#: Stage 2, per pixel of a rate image (per integration): data, error, variances, flags, the WCS
#: and flat/photometric copies.
STAGE2_BYTES_PER_PIXEL = 150.0
#: Stage 3, per byte of the members' cal files: the models held at once; with ``in_memory`` the
#: drizzled copies of outlier detection come on top.
STAGE3_BYTES_PER_INPUT_BYTE = {True: 4.0, False: 1.5}


def available_bytes() -> int:
    """Memory the machine can give now (Linux ``MemAvailable``; else free, else total pages)."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    page = os.sysconf("SC_PAGE_SIZE")
    for name in ("SC_AVPHYS_PAGES", "SC_PHYS_PAGES"):
        try:
            return int(os.sysconf(name)) * page
        except (ValueError, OSError):
            continue
    return 0


def _image_header(path: Path) -> fits.Header:
    """The science header (SCI extension, else the primary) of a JWST file, read cheaply.

    An unreadable file gives an empty header (the estimates then assume a full frame); the step
    that reads it reports it.
    """
    try:
        with fits.open(path, memmap=True, lazy_load_hdus=True) as h:
            primary = h[0].header
            try:
                sci = h["SCI"].header
            except KeyError:
                sci = primary
            out = primary.copy()
            out.update(sci)
            return out
    except (OSError, ValueError, TypeError, IndexError) as err:
        log.debug("%s: no header to estimate memory from (%s)", path, err)
        return fits.Header()


def stage1_peak(uncal: Path) -> float:
    """Estimated peak memory (bytes) of stage 1 on one uncal file, from its header.

    The ramp's size is ``NGROUPS x NINTS x ny x nx`` (the SCI array's axes where present).
    """
    h = _image_header(uncal)
    axes = [int(h.get(f"NAXIS{i}", 0) or 0) for i in range(1, int(h.get("NAXIS", 0) or 0) + 1)]
    ny = int(h.get("SUBSIZE2") or (axes[1] if len(axes) > 1 else 2048))
    nx = int(h.get("SUBSIZE1") or (axes[0] if axes else 2048))
    groups = int(h.get("NGROUPS") or (axes[2] if len(axes) > 2 else 10))
    ints = int(h.get("NINTS") or (axes[3] if len(axes) > 3 else 1))
    return BASE_BYTES + STAGE1_BYTES_PER_VALUE * groups * ints * ny * nx


def stage2_peak(rate: Path) -> float:
    """Estimated peak memory (bytes) of stage 2 on one rate file."""
    h = _image_header(rate)
    n = 1
    for i in range(1, int(h.get("NAXIS", 0) or 0) + 1):
        n *= int(h.get(f"NAXIS{i}", 1) or 1)
    return BASE_BYTES + STAGE2_BYTES_PER_PIXEL * (n if n > 1 else 2048 * 2048)


def stage3_peak(members: list[Path], in_memory: bool = True) -> float:
    """Estimated peak memory (bytes) of stage 3 on its member cal files."""
    size = sum(p.stat().st_size for p in members if p.is_file())
    return BASE_BYTES + STAGE3_BYTES_PER_INPUT_BYTE[bool(in_memory)] * size


def budget_bytes(budget_gb: float, *, workers_here: bool = True) -> float:
    """The run's memory budget: ``[local] memory_budget_gb``, else 80 % of what is available now.

    The automatic budget is this machine's: with workers elsewhere (a Dask scheduler, Slurm jobs:
    ``workers_here`` False) there is none unless one is set (0 = no cap).
    """
    if budget_gb > 0:
        return budget_gb * GIB
    return 0.8 * available_bytes() if workers_here else 0.0


def workers_here(local: object) -> bool:
    """Whether a ``[local]`` table's tasks run on this machine (serial, processes, a local Dask)."""
    executor = getattr(local, "executor", "processes")
    return executor in ("serial", "processes") or (executor == "dask"
                                                  and not getattr(local, "dask_scheduler", ""))


def _in_memory(steps: dict) -> bool:
    return any(steps.get(s, {}).get("in_memory", True) for s in ("outlier_detection", "resample"))


def stage3_task_peak(params: dict, members: list[Path]) -> float:
    """Estimated peak of stage 3 with these ``[lv3_parameters]`` (their ``steps`` table)."""
    return stage3_peak(members, _in_memory(params.get("steps", {})))


def low_memory_stage3(params: dict, members: list[Path], budget: float) -> dict:
    """Stage-3 parameters with jwst's own memory options set when the members would not fit.

    With ``in_memory`` on (outlier detection and resample keep their drizzled copies in memory),
    a stage 3 whose estimate exceeds ``budget`` gets ``in_memory = False`` for both steps: their
    products are the same, the copies go to disk. ``params`` (with its ``steps`` table) is not
    changed; the copy is what the task runs with.
    """
    steps = params.get("steps", {})
    if budget <= 0 or not _in_memory(steps) or stage3_peak(members, True) <= budget:
        return params
    out = dict(params)
    out["steps"] = {k: dict(v) if isinstance(v, dict) else v for k, v in steps.items()}
    for step in ("outlier_detection", "resample"):
        out["steps"].setdefault(step, {})["in_memory"] = False
    log.warning("stage 3 of %d members needs ~%.1f GiB with in_memory, over the %.1f GiB budget: "
                "outlier_detection and resample keep their copies on disk (in_memory = False)",
                len(members), stage3_peak(members, True) / GIB, budget / GIB)
    return out
