"""Benchmark of issue #6's targets, measured as ratios/limits within one run.

1. Time to compute a kernel pair (F200W -> F2100W and F770W -> F2100W, Aniano and pypher) from
   stpsf PSFs (PSF generation itself excluded; target: < 10 s per kernel).
2. Tiled NaN-aware convolution (with error propagation) of an 8k x 8k image against one plain
   FFT convolution of the same image (scipy.signal.fftconvolve): target ratio <= 3.

Usage: .venv/bin/python bench/bench_kernels_convolve.py [--size 8192] [--skip-kernels]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np


def best_of(fn, n=2):
    """Fastest of ``n`` timed calls of ``fn`` (seconds)."""
    times = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def bench_kernels() -> None:
    """Time kernel pairs to F2100W from stpsf PSFs."""
    from jwstgal.config import KernelsConfig
    from jwstgal.kernel_products import band_psf
    from jwstgal.kernels import make_aniano_kernel, make_pypher_kernel
    from jwstgal.psfs import DEFAULT_DATA_DIR

    cfg = KernelsConfig(targets=["F2100W"], nlambda=5)
    psf_dir = Path(__file__).resolve().parent / ".cache"
    psfs = {b: band_psf(b, cfg, psf_dir, DEFAULT_DATA_DIR) for b in ("F200W", "F770W", "F2100W")}
    t = psfs["F2100W"]
    print("kernel pair timings (s), target < 10 s:")
    for src in ("F200W", "F770W"):
        s = psfs[src]
        for name, fn in (("aniano", make_aniano_kernel), ("pypher", make_pypher_kernel)):
            start = time.perf_counter()
            res = fn(s.data, s.pixscale, t.data, t.pixscale)
            dt = time.perf_counter() - start
            print(f"  {src:>6} -> F2100W {name:6s}: {dt:6.2f} s  kernel {res.kernel.shape[0]} px  "
                  f"D={res.D:.2e}  W-={res.W_minus:.3f} ({res.safety})")


def bench_convolve(size: int) -> None:
    """Time the tiled convolution against one plain FFT convolution."""
    from scipy.signal import fftconvolve

    from jwstgal.convolve import convolve_image
    from jwstgal.kernels import gaussian_psf

    rng = np.random.default_rng(0)
    img = rng.normal(size=(size, size)).astype(np.float32)
    img[size // 3: size // 3 + 200, size // 2: size // 2 + 300] = np.nan
    err = np.full_like(img, 0.1)
    kern = gaussian_psf(0.67, 0.11, 61)          # ~F2100W-sized kernel at MIRI pixels
    plain = best_of(lambda: fftconvolve(np.nan_to_num(img), kern, mode="same"))
    ours = best_of(lambda: convolve_image(img, kern, block=2048))
    ours_err = best_of(lambda: convolve_image(img, kern, err=err, block=2048))
    print(f"convolution of a {size}x{size} image with a {kern.shape[0]}px kernel:")
    print(f"  one scipy.signal.fftconvolve        : {plain:6.2f} s (1.00x)")
    print(f"  jwstgal tiled, NaN-aware            : {ours:6.2f} s ({ours / plain:.2f}x)")
    print(f"  jwstgal tiled, NaN-aware + errors   : {ours_err:6.2f} s ({ours_err / plain:.2f}x), "
          "target <= 3x")


def main() -> None:
    """Run the benchmarks."""
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--size", type=int, default=8192)
    p.add_argument("--skip-kernels", action="store_true")
    args = p.parse_args()
    if not args.skip_kernels:
        bench_kernels()
    bench_convolve(args.size)


if __name__ == "__main__":
    main()
