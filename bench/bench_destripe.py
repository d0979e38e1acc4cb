"""Destriping methods side by side on the same simulated 2048 x 2048 NIRCam frames, in one run.

Two frames from :func:`jwstgal.simulate.frames.striped_frame` (four amplifiers, read-order 1/f
stripes and amplifier offsets of rms ~ the white noise): a faint *field* and the same with a bright
extended *galaxy*. Every method sees identical data; reported per method and frame:

- ``noise``: rms of (destriped - true sky) over the irreducible floor (white noise plus 1/f noise
  faster than one row read, which no row/column method can remove); 1.00 = all removable stripes gone;
- ``coherent``: rms of the row/column-coherent stripes left (white-noise units);
- ``flux``: galaxy flux kept (1.000 = all of it, background level aside);
- ``time``: seconds per frame (one process, same machine, same run: compare ratios only).

Methods: jwstgal's (this repository), jwst's ``clean_flicker_noise`` step (run on a rate-like
ImageModel; ``median``, whole rows and per channel), and pjpipe's ``SingleTileDestripeStep``
(median_filter, row_median, remstripe) in its own environment::

    python3.12 -m venv .bench-pjpipe && .bench-pjpipe/bin/pip install pjpipe

pjpipe's package ``__init__`` imports ``spacepylot`` (not on PyPI); the driver loads its modules
without that ``__init__``, and turns its diagnostic plots off for the timing, as ours are.

Usage: .venv/bin/python bench/bench_destripe.py [--pjpipe-python .bench-pjpipe/bin/python] [--quick]
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

PJPIPE_DRIVER = PREAMBLE + r"""
from pjpipe.single_tile_destripe.single_tile_destripe_step import SingleTileDestripeStep
from stdatamodels.jwst import datamodels
# diagnostics off for timing (ours are off too); the algorithms are untouched
SingleTileDestripeStep.make_mask_plot = lambda *a, **k: None
SingleTileDestripeStep.make_destripe_plot = lambda *a, **k: None
work, methods, names = sys.argv[1], sys.argv[2].split(","), sys.argv[3].split(",")
out = {"version": importlib.metadata.version("pjpipe"), "runs": []}
for name in names:
    f = np.load(f"{work}/{name}.npz")
    m = datamodels.ImageModel(data=f["data"].astype(np.float32), err=f["err"].astype(np.float32),
                              dq=f["dq"].astype(np.uint32))
    m.meta.instrument.name = "NIRCAM"; m.meta.instrument.detector = "NRCB1"
    m.meta.exposure.type = "NRC_IMAGE"; m.meta.subarray.name = "FULL"; m.meta.subarray.slowaxis = 2
    m.save(f"{work}/{name}_cal.fits")
    for method in methods:
        step = SingleTileDestripeStep(in_dir=work, out_dir=f"{work}/{method}", step_ext="cal", procs=1,
                                      destriping_method=method)
        import os
        os.makedirs(f"{work}/{method}", exist_ok=True)
        t = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            step.parallel_destripe(f"{work}/{name}_cal.fits")
        dt = time.perf_counter() - t
        res = datamodels.open(f"{work}/{method}/{name}_cal.fits")
        np.save(f"{work}/{method}_{name}.npy", np.asarray(res.data, float))
        out["runs"].append({"frame": name, "method": method, "time": dt,
                            "result": f"{work}/{method}_{name}.npy"})
print(json.dumps(out))
"""


def _row(label: str, frame: str, score: dict, dt: float) -> dict:
    return {"method": label, "frame": frame, "noise": score["noise_ratio"],
            "coherent": score["coherent_rms"], "flux": score["flux_kept"], "time": dt}


def _jwst_cfn(frame, fit_by_channel: bool) -> tuple[np.ndarray, float]:
    from jwst.clean_flicker_noise import CleanFlickerNoiseStep
    from stdatamodels.jwst import datamodels

    m = datamodels.ImageModel(data=frame.data.astype(np.float32), err=frame.err.astype(np.float32),
                              dq=frame.dq)
    m.meta.instrument.name, m.meta.instrument.detector = "NIRCAM", "NRCB1"
    m.meta.instrument.filter, m.meta.instrument.pupil = "F200W", "CLEAR"
    m.meta.exposure.type, m.meta.exposure.noutputs = "NRC_IMAGE", 4
    m.meta.subarray.name, m.meta.subarray.xstart, m.meta.subarray.ystart = "FULL", 1, 1
    m.meta.subarray.xsize = m.meta.subarray.ysize = 2048
    m.meta.subarray.fastaxis, m.meta.subarray.slowaxis = -1, 2
    step = CleanFlickerNoiseStep(skip=False, fit_method="median", fit_by_channel=fit_by_channel)
    t = time.perf_counter()
    out = step.run(m)
    return np.asarray(out.data, float), time.perf_counter() - t


def main() -> None:
    """Run the benchmark and print a Markdown table."""
    from jwstgal.destripe import DestripeParams, destripe
    from jwstgal.simulate.frames import score, striped_frame

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pjpipe-python", default=".bench-pjpipe/bin/python")
    p.add_argument("--quick", action="store_true", help="skip the slow pca method")
    args = p.parse_args()
    frames = {"field": striped_frame(2048, seed=1, scene="field"),
              "galaxy": striped_frame(2048, seed=1, scene="galaxy")}
    long = [3, 7, 15, 31, 63, 127, 255, 511, 1023]
    ours = {"jwstgal median_filter": DestripeParams(),
            "jwstgal median_filter to 1023": DestripeParams(filter_scales=long),
            "jwstgal median_filter + diffuse": DestripeParams(filter_diffuse=True),
            "jwstgal row_median": DestripeParams(method="row_median"),
            "jwstgal row_median + diffuse": DestripeParams(method="row_median", filter_diffuse=True),
            "jwstgal remstripe": DestripeParams(method="remstripe"),
            "jwstgal smooth": DestripeParams(method="smooth", filter_scales=long)}
    if not args.quick:
        ours["jwstgal pca"] = DestripeParams(method="pca")
    rows = []
    for name, fr in frames.items():
        rows.append(_row("(no destriping)", name, score(fr, fr.data), 0.0))
        destripe(fr.data[:256, :256], fr.dq[:256, :256], fr.err[:256, :256])   # imports, warm-up
        for label, params in ours.items():
            t = time.perf_counter()
            res = destripe(fr.data, fr.dq, fr.err, params, n_amps=fr.n_amps)
            rows.append(_row(label, name, score(fr, fr.data - res.model), time.perf_counter() - t))
        for by_channel in (False, True):
            out, dt = _jwst_cfn(fr, by_channel)
            rows.append(_row(f"jwst clean_flicker_noise median{' by channel' if by_channel else ''}",
                             name, score(fr, out), dt))
    pj_version = None
    if Path(args.pjpipe_python).is_file():
        with tempfile.TemporaryDirectory() as work:
            for name, fr in frames.items():
                np.savez(f"{work}/{name}.npz", data=fr.data, err=fr.err, dq=fr.dq)
            methods = ["median_filter", "row_median", "remstripe"]
            res = subprocess.run([args.pjpipe_python, "-c", PJPIPE_DRIVER, work, ",".join(methods),
                                  ",".join(frames)], capture_output=True, text=True, check=True)
            out = json.loads(res.stdout.strip().splitlines()[-1])
            pj_version = out["version"]
            for run in out["runs"]:
                fr = frames[run["frame"]]
                rows.append(_row(f"pjpipe {run['method']}", run["frame"],
                                 score(fr, np.load(run["result"])), run["time"]))
    else:
        print(f"(pjpipe not found at {args.pjpipe_python}: its rows are missing)")
    print(f"\n2048 x 2048 NIRCam frames, 4 amplifiers; pjpipe {pj_version or 'n/a'}\n")
    print("| method | frame | noise / floor | coherent stripes left | galaxy flux kept | s / frame |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        flux = "" if np.isnan(r["flux"]) else f"{r['flux']:.4f}"
        print(f"| {r['method']} | {r['frame']} | {r['noise']:.3f} | {r['coherent']:.3f} | {flux} | "
              f"{r['time']:.2f} |")
    ref = {r["frame"]: r["time"] for r in rows if r["method"] == "pjpipe median_filter"}
    mine = {r["frame"]: r["time"] for r in rows if r["method"] == "jwstgal median_filter"}
    for f in ref:
        print(f"\nspeed-up of jwstgal median_filter over pjpipe median_filter ({f}): {ref[f] / mine[f]:.1f}x")
    cache = Path(__file__).parent / ".cache"
    cache.mkdir(exist_ok=True)
    (cache / "bench_destripe.json").write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
