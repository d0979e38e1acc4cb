"""Single-frame destriping as users run it (``config/config.toml``), the model defaults, and pjpipe.

On the cached frames of ``bench_programme.py --size N`` (MIRI full frames and NIRCam detectors with
an exponential-disk galaxy, ~600 stars and injected read-order stripes), each setting destripes the
same ``--files`` frames per instrument, and the stripes left are measured in rows and in columns
separately (``stripe_residual``'s measure per axis: line-to-line scatter of the row or column
medians over what pixel noise gives, 1 = noise only), with the input's sources masked and, on
MIRI, over the imager only (the coronagraph columns are not science). pjpipe 1.3's
``SingleTileDestripeStep`` (median_filter, its defaults) runs on copies of the same frames in its
own environment when ``.bench-pjpipe`` exists. Times are per frame in this process (the machine's
load is printed: compare ratios only).

Usage: .venv/bin/python bench/bench_destripe_settings.py [--size 2048] [--files 4]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
from pathlib import Path

import numpy as np
from astropy.io import fits

from jwstgal.destripe import DestripeParams, _smooth_background
from jwstgal.destripe_frames import destripe_arrays, good_pixels
from jwstgal.masking import masked_median, source_mask

HERE = Path(__file__).resolve().parent
#: MIRI full-frame columns left of the imager (coronagraphs).
MIRI_IMAGER = slice(360, None)


def per_axis(image: np.ndarray, mask: np.ndarray, box: int = 32, min_pixels: int = 50) -> tuple[float, float]:
    """Row and column stripes left: :func:`jwstgal.destripe.stripe_residual`'s ratio for each axis."""
    d = np.where(mask | ~np.isfinite(image), np.nan, image)
    d = d - _smooth_background(d, box)
    step = np.diff(d, axis=1)
    sigma = 1.4826 * float(np.nanmedian(np.abs(step - np.nanmedian(step)))) / np.sqrt(2)
    out = []
    for axis in (1, 0):
        n = np.sum(np.isfinite(d), axis=axis)
        ok = np.flatnonzero(n >= min_pixels)
        med = masked_median(d[ok] if axis == 1 else d[:, ok], axis=axis)
        var = (1.2533 * sigma) ** 2 / n[ok]
        out.append(float(np.sqrt(np.mean(np.diff(med) ** 2 / (var[1:] + var[:-1])))))
    return out[0], out[1]


def config_params() -> DestripeParams:
    """The ``[destripe]`` table of the shipped ``config/config.toml`` (what a new programme runs)."""
    table = tomllib.loads((HERE.parent / "config" / "config.toml").read_text())["destripe"]
    return DestripeParams(**{k: v for k, v in table.items() if k != "override"})


def score(frames: list[Path], outputs: list[Path]) -> np.ndarray:
    """Rows and columns left in each output, the input's sources masked."""
    out = []
    for f, o in zip(frames, outputs, strict=True):
        with fits.open(f) as h:
            sci_in, dq = np.asarray(h["SCI"].data, float), h["DQ"].data
        with fits.open(o) as h:
            sci = np.asarray(h["SCI"].data, float)
        mask = ~good_pixels(sci, dq) | source_mask(sci_in, ~good_pixels(sci_in, dq))
        cols = MIRI_IMAGER if "_mirimage" in f.name else slice(None)
        out.append(per_axis(sci[:, cols], mask[:, cols]))
    return np.array(out)


def ours(frames: list[Path], params: DestripeParams, out_dir: Path) -> float:
    """Destripe the frames' arrays into copies; seconds per frame."""
    spent = 0.0
    for f in frames:
        with fits.open(f) as h:
            t0 = time.perf_counter()
            sci = np.asarray(h["SCI"].data, float)
            res, *_ = destripe_arrays(sci, h["DQ"].data, None, h[0].header, params)
            spent += time.perf_counter() - t0
            h["SCI"].data = res.astype(np.float32)
            h.writeto(out_dir / f.name)
    return spent / len(frames)


def pjpipe(frames: list[Path], python: str, out_dir: Path, timeout: float) -> float | None:
    """Pjpipe's single-tile destriping of copies of the frames; wall seconds per frame (None: none)."""
    sys.path.insert(0, str(HERE))
    from bench_programme import PJPIPE_DRIVER

    with tempfile.TemporaryDirectory() as tmp:
        in_dir = Path(tmp) / "in"
        in_dir.mkdir()
        for f in frames:
            shutil.copy(f.resolve(), in_dir / f.name)
        (Path(tmp) / "driver.py").write_text(PJPIPE_DRIVER)
        t0 = time.perf_counter()
        try:
            subprocess.run([python, "driver.py", "pjpipe_destripe", str(in_dir), str(out_dir), "F200W"],
                           cwd=tmp, capture_output=True, timeout=timeout, check=True)
        except (subprocess.TimeoutExpired, subprocess.CalledProcessError):
            return None
        return (time.perf_counter() - t0) / len(frames)


def main() -> None:
    """Print the table (markdown)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=2048)
    parser.add_argument("--files", type=int, default=4)
    parser.add_argument("--pjpipe-python", default=str(HERE.parent / ".bench-pjpipe" / "bin" / "python"))
    parser.add_argument("--pjpipe-timeout", type=float, default=900.0)
    args = parser.parse_args()
    root = HERE / ".cache" / f"programme_{args.size}"
    if not root.is_dir():
        sys.exit(f"{root}: prepare the frames first (bench_programme.py --size {args.size} --cases destripe)")
    print(f"load average before: {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores; "
          f"{args.files} frames per instrument at size {args.size}")
    print("| frame | destriping | rows left: median (worst) | columns left: median (worst) | s / frame |")
    print("|---|---|---|---|---|")
    for instr in ("miri", "nircam"):
        frames = sorted((root / instr / "n1").glob("*_cal.fits"))[: args.files]
        runs = {"input": (frames, None)}
        with tempfile.TemporaryDirectory() as tmp:
            for label, params in (("ours, model defaults", DestripeParams()),
                                  ("ours, config/config.toml", config_params())):
                out = Path(tmp) / label.replace(" ", "_").replace("/", "_").replace(",", "")
                out.mkdir()
                runs[label] = ([out / f.name for f in frames], ours(frames, params, out))
            if Path(args.pjpipe_python).is_file():
                out = Path(tmp) / "pjpipe"
                spent = pjpipe(frames, args.pjpipe_python, out, args.pjpipe_timeout)
                if spent is not None:
                    runs["pjpipe 1.3 (median_filter)"] = ([out / f.name for f in frames], spent)
            for label, (outputs, spent) in runs.items():
                s = score(frames, outputs)
                cells = [f"{np.median(s[:, k]):.2f} ({s[:, k].max():.2f})" for k in (0, 1)]
                print(f"| {instr} | {label} | {cells[0]} | {cells[1]} | "
                      f"{'-' if spent is None else f'{spent:.2f}'} |")


if __name__ == "__main__":
    main()
