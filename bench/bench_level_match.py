"""Level matching of 50 overlapping exposures: jwstgal's solver against pjpipe's, same inputs.

Fifty exposures (5 tiles x 10 dithers) of one sky with known offsets are simulated on a common grid;
their pairwise differences are measured once (jwstgal.level_match.measure_pairs), and the same
difference matrices are solved by jwstgal (weighted sparse least squares) and by pjpipe's
``LevelMatchStep.find_optimum_deltas`` (iterative). Reported: solver time and the largest error of
the recovered offsets (relative to exposure 0) in units of the pixel noise. Target: well under a
second of solver time for jwstgal.

pjpipe lives in its own environment (its jwst pin differs from ours)::

    python3.12 -m venv .bench-pjpipe && .bench-pjpipe/bin/pip install pjpipe

pjpipe's package ``__init__`` imports ``spacepylot``, which is not on PyPI; the driver loads the
level-matching module without running that ``__init__`` (pjpipe's code itself is untouched).

Usage: .venv/bin/python bench/bench_level_match.py [--pjpipe-python .bench-pjpipe/bin/python]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
from _pjpipe import PREAMBLE

NOISE = 0.1
PJPIPE_DRIVER = PREAMBLE + r"""
from pjpipe.level_match.level_match_step import LevelMatchStep
m = np.load(sys.argv[1])
step = object.__new__(LevelMatchStep)
step.min_area_percent, step.rms_sig_limit, step.weight_method = 0.002, 2, "rms"
t = time.perf_counter()
deltas = step.find_optimum_deltas(m["delta"], m["npix"], m["rms"], m["lin"], m["valid"],
                                  fit_type="level", ref_idx=0)
dt = time.perf_counter() - t
deltas = deltas[0] if isinstance(deltas, tuple) else deltas
print(json.dumps({"time": dt, "offsets": np.asarray(deltas)[:, 0].tolist(),
                  "version": importlib.metadata.version("pjpipe")}))
"""


def simulate(n_tiles: int = 5, dithers: int = 10, seed: int = 0):
    """Overlapping exposures on one grid with known offsets (NaN outside each footprint)."""
    rng = np.random.default_rng(seed)
    ny, nx = 420, 260 + 160 * n_tiles
    yy, xx = np.mgrid[:ny, :nx]
    sky = 2.0 + 5.0 * np.exp(-((xx - nx / 2) ** 2 + (yy - ny / 2) ** 2) / (2 * 150.0**2))
    images, truth = [], []
    for t in range(n_tiles):
        for d in range(dithers):
            off = rng.normal(0, 0.5)
            x0, y0 = 10 + 160 * t + 9 * d, 10 + 6 * d
            im = np.full((ny, nx), np.nan)
            im[y0:y0 + 340, x0:x0 + 240] = (sky + off + rng.normal(0, NOISE, (ny, nx)))[
                y0:y0 + 340, x0:x0 + 240]
            images.append(im)
            truth.append(off)
    return images, np.asarray(truth)


def main() -> None:
    """Run the benchmark."""
    from jwstgal.level_match import measure_pairs, solve_offsets

    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--pjpipe-python", default=".bench-pjpipe/bin/python")
    args = p.parse_args()
    images, truth = simulate()
    n = len(images)
    t = time.perf_counter()
    pairs = measure_pairs(images)
    t_measure = time.perf_counter() - t
    t = time.perf_counter()
    sol = solve_offsets(n, pairs, reference=0)
    t_ours = time.perf_counter() - t
    err_ours = np.max(np.abs(sol.offsets[:, 0] - (truth - truth[0]))) / NOISE
    print(f"{n} exposures, {len(pairs)} overlapping pairs (measured in {t_measure:.2f} s)")
    print(f"  jwstgal solve_offsets            : {t_ours * 1000:8.1f} ms, max error "
          f"{100 * err_ours:.2f} % of the pixel noise")
    delta = np.zeros((n, n, 1))
    npix, rms, valid = np.zeros((n, n)), np.zeros((n, n)), np.zeros((n, n))
    for q in pairs:
        delta[q.i, q.j, 0], delta[q.j, q.i, 0] = q.delta[0], -q.delta[0]
        npix[q.i, q.j] = npix[q.j, q.i] = q.npix
        rms[q.i, q.j] = rms[q.j, q.i] = q.rms
        valid[q.i, q.j] = valid[q.j, q.i] = 1
    py = Path(args.pjpipe_python)
    if not py.is_file():
        print(f"  pjpipe: not run ({py} not found; see this script's docstring to install it)")
        return
    with tempfile.TemporaryDirectory() as tmp:
        npz = Path(tmp) / "m.npz"
        np.savez(npz, delta=delta, npix=npix, rms=rms, lin=np.ones((n, n)), valid=valid)
        res = subprocess.run([str(py), "-c", PJPIPE_DRIVER, str(npz)], capture_output=True,
                             text=True, check=True)
    out = json.loads(res.stdout.strip().splitlines()[-1])
    pj = np.asarray(out["offsets"])
    err_pj = np.max(np.abs((pj - pj[0]) - (truth - truth[0]))) / NOISE
    print(f"  pjpipe {out['version']} find_optimum_deltas: {out['time'] * 1000:8.1f} ms, max error "
          f"{100 * err_pj:.2f} % of the pixel noise")
    print(f"  speed-up: {out['time'] / t_ours:.0f}x")


if __name__ == "__main__":
    main()
