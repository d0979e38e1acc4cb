"""Benchmark of the resolution ladder: F200W -> 4", 7.5", 15" on an 8k x 8k mosaic (issue #11).

Each rung is taken by :func:`jwstgal.convolve_products.to_rung` in a fresh process (the kernel to
the intermediate gauss2 on the 0.031" grid, block-averaging, the analytic Gaussian on the coarse
grid), reporting wall time, CPU time and the process's peak RSS; the target is a peak below 4 GB
whatever the rung. For scale, the same process first reports the peak after only reading the
whole mosaic into memory (SCI + ERR, float32; the rungs read it by tiles), and the time of one
plain ``scipy.signal.fftconvolve`` of the mosaic with the intermediate kernel. Kernels use
Gaussian band PSFs (cached in bench/.cache).

Usage: .venv/bin/python bench/bench_ladder.py [--size 8192]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

CACHE = Path(__file__).resolve().parent / ".cache" / "ladder"


def make_inputs(size: int) -> tuple[Path, Path]:
    """An 8k x 8k F200W-like mosaic (noise + point sources) and the kernel F200W -> gauss2."""
    from astropy.io import fits

    from jwstgal.config import KernelsConfig
    from jwstgal.kernel_products import make_kernel_set
    from jwstgal.layout import kernel_path
    from jwstgal.simulate.external import external_wcs

    CACHE.mkdir(parents=True, exist_ok=True)
    make_kernel_set(["F200W"], KernelsConfig(psf_source="gaussian"), CACHE, CACHE, progress=False,
                    targets=["gauss2"])
    mosaic = CACHE / f"mosaic_{size}.fits"
    if not mosaic.is_file():
        rng = np.random.default_rng(0)
        sci = (0.1 + 0.01 * rng.standard_normal((size, size))).astype(np.float32)
        ys, xs = rng.integers(50, size - 50, (2, 2000))
        sci[ys, xs] += 50.0
        hdr = external_wcs(24.17, 15.78, 0.031, size).to_header()
        fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(sci, hdr, name="SCI"),
                      fits.ImageHDU(np.full_like(sci, 0.01), hdr, name="ERR")]).writeto(mosaic)
    return mosaic, kernel_path(CACHE, "aniano", "F200W", "gauss2")


def child(mosaic: str, kernel: str, rung: str) -> None:
    """Run one rung (or 'read' / 'fftconvolve') and print a JSON line."""
    from jwstgal.convolve_products import read_mosaic, to_rung
    from jwstgal.ladder import plan_rung

    t0, c0 = time.perf_counter(), time.process_time()
    m = read_mosaic(Path(mosaic))             # opened: read tile by tile by to_rung
    if rung == "read":                        # the whole mosaic in memory, for scale
        sci, err = np.asarray(m.sci), np.asarray(m.err)
        assert np.isfinite(sci).any() and np.isfinite(err).any()
    elif rung == "fftconvolve":
        from astropy.io import fits
        from scipy.signal import fftconvolve

        from jwstgal.kernels import resample_kernel

        kh = fits.getheader(kernel)
        k = resample_kernel(fits.getdata(kernel).astype(float), kh["PIXELSCL"], m.pixscale)
        fftconvolve(np.nan_to_num(m.sci), k.astype(np.float32), mode="same")
    else:
        r = plan_rung("F200W", rung, m.pixscale)
        sci, _, _, _ = to_rung(m, r, Path(kernel))
        assert np.isfinite(sci).any()
    m.close()
    print(json.dumps({"rung": rung, "wall_s": time.perf_counter() - t0,
                      "cpu_s": time.process_time() - c0,
                      "peak_gb": _peak_kib() / 1024**2}))


def _peak_kib() -> float:
    """Peak RSS of the process (KiB).

    ``VmHWM``, which starts afresh at exec (``ru_maxrss`` keeps the parent's peak at the fork),
    else ``ru_maxrss``.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return float(line.split()[1])
    except OSError:
        pass
    return float(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)


def main() -> None:
    """Run every case in its own process and print the table."""
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--size", type=int, default=8192)
    p.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        child(*args.child)
        return
    mosaic, kernel = make_inputs(args.size)
    print(f"{args.size}^2 F200W mosaic (0.031\"), {os.cpu_count()} cores, load average "
          f"{os.getloadavg()[0]:.2f} at start")
    print(f"{'case':>12} {'wall s':>8} {'cpu s':>8} {'peak GB':>8}")
    for rung in ("read", "fftconvolve", "gauss4", "gauss7.5", "gauss15"):
        out = subprocess.run([sys.executable, __file__, "--child", str(mosaic), str(kernel), rung],
                             capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
        r = json.loads(out)
        print(f"{r['rung']:>12} {r['wall_s']:8.1f} {r['cpu_s']:8.1f} {r['peak_gb']:8.2f}")
    print(f"load average at end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
