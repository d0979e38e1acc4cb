"""Single-frame destriping against its floor: the plain row median of the same 2048^2 float32 frame.

Issue #29's goal is <= 4x the plain row median (``numpy.median(frame, axis=1)``). Reported per
method, with and without ``filter_diffuse``, on a simulated NIRCam field and galaxy frame (four
amplifiers), as the best of ``--repeat`` runs in one process, next to numpy's NaN-aware row median
(what a masked median costs at best). The machine's load is printed: compare ratios only.

Usage: .venv/bin/python bench/bench_destripe_floor.py [--repeat 5]
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

from jwstgal.destripe import DestripeParams, destripe
from jwstgal.simulate.frames import striped_frame


def best(fn, repeat: int) -> float:
    """Fastest of ``repeat`` calls (s)."""
    out = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return min(out)


def main() -> None:
    """Print the table (markdown)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    print(f"load average before: {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")
    print("| frame | method | filter_diffuse | s / frame | x floor (plain row median) | x nanmedian |")
    print("|---|---|---|---|---|---|")
    for scene in ("field", "galaxy"):
        frame = striped_frame(2048, seed=1, scene=scene)
        data = np.asarray(frame.data, np.float32)
        floor = best(lambda d=data: np.median(d, axis=1), args.repeat)
        nan_floor = best(lambda d=data: np.nanmedian(d, axis=1), args.repeat)
        for method in ("median_filter", "row_median", "remstripe"):
            for diffuse in (False, True):
                p = DestripeParams(method=method, filter_diffuse=diffuse)
                destripe(data, frame.dq, frame.err, p, n_amps=4)          # warm
                dt = best(lambda p=p, f=frame, d=data: destripe(d, f.dq, f.err, p, n_amps=4), args.repeat)
                print(f"| {scene} | {method} | {diffuse} | {dt:.3f} | {dt / floor:.1f} | "
                      f"{dt / nan_floor:.1f} |")
        print(f"| {scene} | floor: numpy.median rows | | {floor:.4f} | 1.0 | |")
        print(f"| {scene} | numpy.nanmedian rows | | {nan_floor:.4f} | {nan_floor / floor:.1f} | 1.0 |")
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
