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
