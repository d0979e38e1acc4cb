"""The resolution ladder as a post-mosaic step: serial against the executor's process pool.

The ``convolve`` step runs a task per rung (issue #27 item 2); this times the ladder of one target
with a NIRCam band of ``--size``² pixels and a MIRI band, five rungs each (the F2100W grid and
Gaussians of 0.85", 1", 4" and 7.5"), with ``processes = 1`` (serial, in the driver) and ``--workers``
(a spawned pool), in one run, alternating ``--repeat`` times and keeping each one's fastest, so a
burst of load hits both alike. Kernels (Gaussian PSFs) are made first and not timed. Peak RSS is
the largest single process (the driver or one worker). Compare the ratio, not the seconds.

Usage: .venv/bin/python bench/bench_ladder_parallel.py [--size 2048] [--workers 2] [--repeat 2]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS

SCIENCE = """
[projects.1]
targets = ["ngc0000"]
[pipeline]
data_version = "bench"
nircam_bands = ["F200W"]
miri_bands = ["F2100W"]
[kernels]
psf_source = "gaussian"
[convolve]
targets = ["F2100W", "gauss0.85", "gauss1.0", "gauss4", "gauss7.5"]
"""

CHILD = """
import resource, sys, time
from jwstgal.config import load_config
from jwstgal.post_runner import run_post_steps
run = load_config(sys.argv[1], sys.argv[2], check_jwst=False)
t = time.perf_counter()
code = run_post_steps(run, ["convolve"], overwrite=True, progress=False)
wall = time.perf_counter() - t
own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
print(code, wall, max(own, kids) / 1024)
"""


def mosaic(path: Path, n: int, pixscale: float, seed: int) -> None:
    """A stage-3-like mosaic (SCI, ERR) of ``n``² pixels: noise, a disc and point sources."""
    rng = np.random.default_rng(seed)
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval = [24.17, 15.78]
    w.wcs.crpix = [n / 2, n / 2]
    w.wcs.cdelt = [-pixscale / 3600, pixscale / 3600]
    hdr = w.to_header()
    hdr["BUNIT"] = "MJy/sr"
    y, x = np.mgrid[:n, :n]
    sci = np.exp(-np.hypot(x - n / 2, y - n / 2) / (n / 6)) + 0.01 * rng.standard_normal((n, n))
    for px, py in rng.integers(0, n, (200, 2)):
        sci[py, px] += 5.0
    path.parent.mkdir(parents=True, exist_ok=True)
    fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(sci.astype(np.float32), hdr, name="SCI"),
                  fits.ImageHDU(np.full((n, n), 0.01, np.float32), hdr, name="ERR")]).writeto(path)


def main() -> None:
    """Print the comparison (markdown)."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=2048)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--repeat", type=int, default=2)
    a = p.parse_args()
    load0 = os.getloadavg()[0]
    root = Path(tempfile.mkdtemp(prefix="bench-ladder-"))
    try:
        rep = root / "work" / "jwst_lv3_reprocessed_bench" / "ngc0000"
        mosaic(rep / "F200W" / "lv3" / "ngc0000_nircam_lv3_f200w_i2d.fits", a.size, 0.031, 0)
        mosaic(rep / "F2100W" / "lv3" / "ngc0000_miri_lv3_f2100w_i2d.fits", max(a.size // 4, 128), 0.11, 1)
        (root / "config.toml").write_text(SCIENCE)
        (root / "raw").mkdir()
        locs = {}
        for workers in (1, a.workers):
            locs[workers] = root / f"local{workers}.toml"
            locs[workers].write_text(f'[local]\nraw_dir = "raw"\nworking_dir = "work"\npsf_dir = "psf"\n'
                                     f'processes = {workers}\n')
        subprocess.run([sys.executable, "-m", "jwstgal.cli.make_kernels", str(root / "config.toml"),
                        str(locs[1]), "--no-progress", "--log-level", "WARNING"], check=True)
        best: dict[int, tuple[float, float]] = {}
        for _ in range(a.repeat):
            for workers, loc in locs.items():
                out = subprocess.run([sys.executable, "-c", CHILD, str(root / "config.toml"), str(loc)],
                                     capture_output=True, text=True, check=True)
                code, wall, peak = out.stdout.split()
                assert code == "0", out.stderr[-2000:]
                if workers not in best or float(wall) < best[workers][0]:
                    best[workers] = (float(wall), float(peak))
        serial, pooled = best[1], best[a.workers]
        print(f"`bench/bench_ladder_parallel.py` (size {a.size}), one run on {os.cpu_count()} cores, load "
              f"average {load0:.2f} at the start and {os.getloadavg()[0]:.2f} at the end, best of "
              f"{a.repeat}:\n")
        print("| executor | wall [s] | peak RSS [MiB] | speed-up |")
        print("|---|---|---|---|")
        print(f"| serial | {serial[0]:.1f} | {serial[1]:.0f} | 1.00 |")
        ratio = serial[0] / pooled[0]
        print(f"| processes = {a.workers} | {pooled[0]:.1f} | {pooled[1]:.0f} | {ratio:.2f} |")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
