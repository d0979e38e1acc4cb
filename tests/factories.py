"""Small builders of test inputs (plain functions, usable from any test)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from astropy.io import fits

MINIMAL_SCIENCE = """
[projects.2107]
targets = ["ngc0628", "ngc1365"]

[pipeline]
nircam_bands = ["F200W", "F300M"]
miri_bands = ["F770W"]
"""

MINIMAL_LOCAL = """
[local]
raw_dir = "raw"
working_dir = "work"
"""


def write_config(tmp_path: Path, science: str = MINIMAL_SCIENCE, local: str = MINIMAL_LOCAL,
                 extra: str = "") -> tuple[Path, Path]:
    """Write a science config (plus ``extra`` TOML) and a local config; return both paths."""
    cfg = tmp_path / "config.toml"
    cfg.write_text(science + "\n" + extra)
    loc = tmp_path / "local.toml"
    loc.write_text(local)
    return cfg, loc


def fake_uncal(path: Path, **header: Any) -> Path:
    """A header-only stand-in for an uncal file (for file-selection tests)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    h = fits.Header()
    for k, v in header.items():
        h[k] = v
    fits.PrimaryHDU(header=h).writeto(path)
    return path


def fake_mosaic(path: Path, *, shape=(120, 100), pixscale=0.11, crval=(24.17, 15.78), seed=0,
                n_inputs=3, point=None) -> Path:
    """A small stage-3-like mosaic: SCI/ERR/WHT/CON/VAR_* with a celestial WCS."""
    import numpy as np
    from astropy.wcs import WCS

    rng = np.random.default_rng(seed)
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval = crval
    w.wcs.crpix = [shape[1] / 2, shape[0] / 2]
    w.wcs.cdelt = [-pixscale / 3600, pixscale / 3600]
    hdr = w.to_header()
    hdr["BUNIT"] = "MJy/sr"
    sci = (1.0 + 0.01 * rng.standard_normal(shape)).astype(np.float32)
    if point is not None:
        sci[point] += 100.0
    con = np.zeros((1, *shape), np.int32)
    con[0] = (1 << n_inputs) - 1          # every input contributes...
    con[0, :, : shape[1] // 4] = 1        # ...but only one on the left quarter
    sci[:5, :5] = 0.0                     # uncovered corner, as resample writes it
    con[0, :5, :5] = 0
    hdus = [fits.PrimaryHDU(), fits.ImageHDU(sci, hdr, name="SCI"),
            fits.ImageHDU(np.full(shape, 0.01, np.float32), hdr, name="ERR"),
            fits.ImageHDU(np.ones(shape, np.float32), hdr, name="WHT"),
            fits.ImageHDU(con, name="CON")]
    hdus += [fits.ImageHDU(np.ones(shape, np.float32), name=n)
             for n in ("VAR_POISSON", "VAR_RNOISE", "VAR_FLAT")]
    path.parent.mkdir(parents=True, exist_ok=True)
    fits.HDUList(hdus).writeto(path)
    return path


#: ``[local]`` of the offline end-to-end runs: synthetic CRDS, two worker processes.
SYNTHETIC_LOCAL = """
[local]
raw_dir = "raw"
working_dir = "work"
crds_dir = "crds"
crds_mode = "synthetic"
processes = 2
alignment_dir = "alignment"
"""


def reprocess_cli(science: Path, local: Path, *extra: str, timeout: int = 2400):
    """Run ``run_jwst_reprocessing.py SCIENCE LOCAL --no-progress *extra``; the CompletedProcess."""
    import subprocess
    import sys

    from conftest import REPO

    return subprocess.run([sys.executable, str(REPO / "run_jwst_reprocessing.py"), str(science),
                           str(local), "--no-progress", *extra], capture_output=True, text=True,
                          cwd=REPO, timeout=timeout)


def run_reprocessing(workdir: Path, science: str, local: str = SYNTHETIC_LOCAL, *, timeout: int = 2400,
                     extra_args: tuple[str, ...] = ()) -> Path:
    """Write a science + local config into ``workdir`` and run ``run_jwst_reprocessing.py`` on it.

    Asserts a zero exit code (showing the end of stderr otherwise) and returns ``workdir``.
    """
    (workdir / "s.toml").write_text(science)
    (workdir / "l.toml").write_text(local)
    res = reprocess_cli(workdir / "s.toml", workdir / "l.toml", *extra_args, timeout=timeout)
    assert res.returncode == 0, res.stderr[-5000:]
    return workdir
