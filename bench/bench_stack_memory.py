"""Peak memory and time of stack-based destriping (``stack_destripe``) against the number of frames.

N dithered, overlapping frames (simulated NIRCam, 1/f stripes, a galaxy, four amplifiers) are
written as cal-like files with a celestial WCS and destriped by
:func:`jwstgal.steps.stack_destripe.stack_destripe_files`, each N in a fresh process, so that its
peak resident memory (``ru_maxrss``) is its own. Memory should stay flat in N (one frame and its
neighbours are held, whatever N); time grows with the number of overlapping pairs (here every frame
overlaps every other: N (N - 1)).

Usage: .venv/bin/python bench/bench_stack_memory.py [--size 512] [--frames 4 8 16] [--iterations 2]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _write_frames(folder: Path, n: int, size: int) -> list[Path]:
    import numpy as np
    from astropy.io import fits
    from astropy.wcs import WCS

    from jwstgal.simulate.frames import striped_frame

    rng = np.random.default_rng(1)
    files = []
    for k in range(n):
        fr = striped_frame(size, seed=100 + k, scene="galaxy", n_amps=4)
        dx, dy = rng.uniform(-0.1, 0.1, 2) * size              # dithers: every frame overlaps
        w = WCS(naxis=2)
        w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
        w.wcs.crval = [10.0, 20.0]
        w.wcs.crpix = [size / 2 + 1 + dx, size / 2 + 1 + dy]
        w.wcs.cdelt = [-8.6e-6, 8.6e-6]
        ph = fits.PrimaryHDU()
        ph.header.update(INSTRUME="NIRCAM", SUBARRAY="FULL", NOUTPUTS=4)
        path = folder / f"jw0{k:04d}001001_02101_00001_nrcb1_cal.fits"
        fits.HDUList([ph, fits.ImageHDU(fr.data.astype(np.float32), w.to_header(), name="SCI"),
                      fits.ImageHDU(fr.dq, name="DQ")]).writeto(path)
        files.append(path)
    return files


def child(n: int, size: int, iterations: int) -> dict:
    """Write N frames, destripe them, report wall time and peak RSS of this process."""
    from jwstgal.destripe_stack import StackParams
    from jwstgal.steps.stack_destripe import stack_destripe_files

    with tempfile.TemporaryDirectory() as tmp:
        files = _write_frames(Path(tmp), n, size)
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        (Path(tmp) / "out").mkdir()
        t0 = time.perf_counter()
        stack_destripe_files(files, Path(tmp) / "out", StackParams(), iterations=iterations)
        wall = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"n": n, "wall_s": wall, "peak_mb": peak / 1024, "before_mb": base / 1024}


def main() -> None:
    """Run each N in its own process and print the table."""
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--frames", type=int, nargs="+", default=[4, 8, 16])
    p.add_argument("--iterations", type=int, default=2)
    p.add_argument("--child", type=int, default=0, help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.child:
        print(json.dumps(child(a.child, a.size, a.iterations)))
        return
    load = os.getloadavg()
    rows = []
    for n in a.frames:
        out = subprocess.run([sys.executable, __file__, "--child", str(n), "--size", str(a.size),
                              "--iterations", str(a.iterations)], capture_output=True, text=True,
                             check=True)
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    frame_mb = a.size * a.size * 8 / 2**20
    print(f"stack_destripe, {a.size}^2 frames ({frame_mb:.0f} MiB as float64), {a.iterations} passes; "
          f"load average before {load[0]:.2f} on {os.cpu_count()} cores")
    print("| frames | overlapping pairs | wall [s] | peak RSS [MiB] | peak / peak(N0) | time / pair [s] |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        pairs = r["n"] * (r["n"] - 1)
        print(f"| {r['n']} | {pairs} | {r['wall_s']:.1f} | {r['peak_mb']:.0f} | "
              f"{r['peak_mb'] / rows[0]['peak_mb']:.2f} | {r['wall_s'] / pairs:.3f} |")


if __name__ == "__main__":
    main()
