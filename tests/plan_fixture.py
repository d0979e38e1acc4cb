"""A band tree in a known state, for planning tests that run no pipeline.

:func:`build_tree` lays out raw files, stage outputs and side files with fixed names, sizes and
modification times, so every step's plan (inputs, outputs, hash key) is reproducible. The keys that
the suite computed on this tree before the step registry existed (commit 8fb61a8) are kept in
``data/plan_keys_v0.json``: a finished run of that code must stay complete after any refactor.
"""

from __future__ import annotations

import os
from pathlib import Path

from factories import fake_uncal, write_config

#: Modification time of every file of the tree (keys of lv1 and of catalogues include it).
MTIME = 1_700_000_000
#: Where the tree is built when keys are compared (``astrometric_align`` keys hold absolute paths).
FIXED_ROOT = Path("/tmp/jwstgal-plan-fixture")

SCIENCE = """
[projects.2107]
targets = ["ngc0628"]

[pipeline]
nircam_bands = ["F200W", "F300M"]
miri_bands = ["F770W"]

[pipeline.steps]
nircam = ["lv1", "lv2", "destripe", "wcs_adjust", "level_match", "stack_destripe", "lv3",
          "astrometric_align"]
miri = ["lv1", "lv2", "destripe", "level_match", "lv3"]

[destripe]
method = "median_filter"
filter_diffuse = true

[destripe.override.miri]
method = "row_median"
diffuse_scale = 25.0

[stack_destripe]
iterations = 2

[level_match]
binning = 8

[wcs_adjust]
bands = ["F200W"]

[astrometric_align]
alignment_mapping = { F300M = "F200W" }

[alignment]
ngc0628 = "ngc0628_cat.fits"

[lv1_parameters.jump]
rejection_threshold = { nircam = 5.0, miri = 6.0 }

[lv3_parameters.tweakreg]
searchrad = { nircam = 1.0, F770W = 2.0 }
"""

LOCAL = """
[local]
raw_dir = "raw"
working_dir = "work"
alignment_dir = "alignment"
"""

#: Exposure stems per band (the MIRI one with a dedicated background, sequence digit 2).
EXPOSURES = {
    "F200W": ["jw02107001001_02101_00001_nrcb1", "jw02107001001_02101_00002_nrcb1",
              "jw02107001002_02101_00001_nrcb1"],
    "F300M": ["jw02107001001_02101_00001_nrcblong", "jw02107001002_02101_00001_nrcblong"],
    "F770W": ["jw02107002001_02101_00001_mirimage", "jw02107002001_02101_00002_mirimage",
              "jw02107003001_02201_00001_mirimage"],
}
HEADERS = {"F200W": {"FILTER": "F200W", "PUPIL": "CLEAR"},
           "F300M": {"FILTER": "F300M", "PUPIL": "CLEAR"}, "F770W": {"FILTER": "F770W"}}
STEPS = ("lv1", "lv2", "destripe", "wcs_adjust", "level_match", "stack_destripe", "lv3",
         "astrometric_align")


def _touch(path: Path, text: str = "x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    os.utime(path, (MTIME, MTIME))
    return path


def _header_file(path: Path, band: str) -> Path:
    """A header-only stand-in for a rate/cal file of ``band``."""
    instrume = "MIRI" if band == "F770W" else "NIRCAM"
    if not path.is_file():
        fake_uncal(path, INSTRUME=instrume, **HEADERS[band])
    os.utime(path, (MTIME, MTIME))
    return path


def build_tree(root: Path) -> tuple[Path, Path]:
    """Write the configs and the tree under ``root``; return (science config, local config)."""
    root.mkdir(parents=True, exist_ok=True)
    cfg, loc = write_config(root, SCIENCE, LOCAL)
    _touch(root / "alignment" / "ngc0628_cat.fits", "catalogue")
    target_dir = root / "work" / "jwst_lv3_reprocessed_v0p1" / "ngc0628"
    _touch(target_dir / "wcs_adjust.toml", '[jw02107001001]\nshift = [0.01, -0.02]\n')
    for band, stems in EXPOSURES.items():
        instr = "miri" if band == "F770W" else "nircam"
        bdir = target_dir / band
        for stem in stems:
            raw = root / "raw" / "ngc0628" / "mastDownload" / "JWST" / stem / f"{stem}_uncal.fits"
            if not raw.is_file():
                fake_uncal(raw, **HEADERS[band])
                os.utime(raw, (MTIME, MTIME))
            _header_file(bdir / "rate" / f"{stem}_rate.fits", band)
            if "_02201_" not in stem:
                _header_file(bdir / "cal" / f"{stem}_cal.fits", band)
                _touch(bdir / "lv3" / f"{stem}_crf.fits")
        product = f"ngc0628_{instr}_lv3_{band.lower()}"
        _touch(bdir / "lv3" / f"{product}_i2d.fits")
        _touch(bdir / "lv3" / f"{product}_cat.ecsv")
    return cfg, loc


def relative(paths: list[Path], root: Path) -> list[str]:
    """Paths as strings relative to the tree's root (for comparing plans across folders)."""
    return [str(Path(p).relative_to(root)) for p in paths]
