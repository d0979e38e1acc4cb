"""The ``level_match`` step: match the background levels of calibrated exposures before stage 3.

Each exposure is block-averaged (``binning``), DQ-bad pixels masked, and sampled onto one common
celestial grid; :func:`jwstgal.level_match.match_levels` then solves all offsets (within dither
groups, then between tiles), and copies of the cal files with the offsets subtracted are written to
``level_match/`` (``LVLOFFST`` keyword, HISTORY with plane terms), with ``offsets.ecsv`` and a
diagnostic plot. The reference exposure is the one closest in time to the dedicated background
exposures when there are any, else the first.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
from astropy.io import fits
from astropy.table import Table
from astropy.wcs import WCS
from scipy.ndimage import map_coordinates

from jwstgal.level_match import LevelSolution, match_levels
from jwstgal.provenance import atomic_path, stamp_header
from jwstgal.qa import block_reduce

log = logging.getLogger(__name__)

DO_NOT_USE = 1


def dither_group(path: Path) -> str:
    """Exposures taken in one visit/visit group/sequence/activity: ``jwPPPPPOOOVVV_GGSAA``."""
    return "_".join(path.name.split("_")[:2])


def common_grid(wcss: list[WCS], shapes: list[tuple[int, int]], pixscale: float
                ) -> tuple[WCS, tuple[int, int]]:
    """A north-up TAN grid covering every footprint at ``pixscale`` (arcsec)."""
    import astropy.units as u
    from reproject.mosaicking import find_optimal_celestial_wcs

    return find_optimal_celestial_wcs(list(zip(shapes, wcss, strict=True)),
                                      resolution=pixscale * u.arcsec)


def sample_on_grid(data: np.ndarray, wcs: WCS, binning: int, grid: WCS, shape: tuple[int, int]
                   ) -> np.ndarray:
    """Block-average an exposure and sample it (bilinearly) on a common grid; NaN outside."""
    binned = block_reduce(data, size=max(data.shape) // binning)
    yy, xx = np.indices(shape, dtype=float)
    ra, dec = grid.pixel_to_world_values(xx, yy)
    x, y = wcs.world_to_pixel_values(ra, dec)
    b = data.shape[1] / binned.shape[1]
    xb, yb = (x - (b - 1) / 2) / b, (y - (b - 1) / 2) / b
    out = map_coordinates(binned, [yb, xb], order=1, mode="constant", cval=np.nan)
    outside = (xb < -0.5) | (yb < -0.5) | (xb > binned.shape[1] - 0.5) | (yb > binned.shape[0] - 0.5)
    out[outside] = np.nan
    return out


def _read(path: Path) -> tuple[np.ndarray, WCS, fits.Header]:
    with fits.open(path) as h:
        data = np.array(h["SCI"].data, float)
        dq = np.array(h["DQ"].data)
        hdr = h["SCI"].header.copy()
        primary = h[0].header.copy()
    data[(dq & DO_NOT_USE) != 0] = np.nan
    return data, WCS(hdr), primary


def choose_reference(files: list[Path], backgrounds: list[Path]) -> int:
    """Index of the exposure closest in time to the background exposures (else 0)."""
    if not backgrounds:
        return 0
    bkg_t = np.mean([fits.getheader(b)["EXPSTART"] for b in backgrounds])
    times = [fits.getheader(f)["EXPSTART"] for f in files]
    return int(np.argmin(np.abs(np.asarray(times) - bkg_t)))


def level_match_files(
    cal_files: list[Path],
    out_dir: Path,
    params: dict[str, Any],
    *,
    backgrounds: list[Path] | None = None,
    config_hash: str = "",
    qa_png: Path | None = None,
) -> tuple[list[Path], LevelSolution]:
    """Match the levels of cal files and write offset-subtracted copies into ``out_dir``.

    Parameters
    ----------
    cal_files : list of pathlib.Path
        Science exposures of one band (never modified).
    out_dir : pathlib.Path
        Destination folder (same file names).
    params : dict
        ``[level_match]`` parameters: binning, plane, mask_emission, min_pixels, by_group.
    backgrounds : list of pathlib.Path, optional
        Background exposures (their start time picks the reference exposure).
    config_hash : str
        Recorded in the outputs.
    qa_png : pathlib.Path, optional
        Where to draw the offsets.

    Returns
    -------
    (list of pathlib.Path, LevelSolution)
    """
    loaded = [_read(f) for f in cal_files]
    b = int(params.get("binning", 4))
    scale = float(np.sqrt(abs(np.linalg.det(loaded[0][1].celestial.pixel_scale_matrix))) * 3600)
    grid, shape = common_grid([w for _, w, _ in loaded], [d.shape for d, _, _ in loaded], scale * b)
    images = [sample_on_grid(d, w, b, grid, shape) for d, w, _ in loaded]
    groups = [dither_group(f) for f in cal_files] if params.get("by_group", True) else None
    ref = choose_reference(cal_files, backgrounds or [])
    sol = match_levels(images, groups=groups, reference=ref, plane=bool(params.get("plane", False)),
                       mask_emission=bool(params.get("mask_emission", True)),
                       min_pixels=int(params.get("min_pixels", 200)))
    outputs = []
    for f, (_, wcs, _), coef in zip(cal_files, loaded, sol.offsets, strict=True):
        with fits.open(f) as h:
            sci = np.array(h["SCI"].data, float)
            if len(coef) == 1:
                level = coef[0]
            else:  # plane in common-grid pixels, evaluated at every exposure pixel
                yy, xx = np.indices(sci.shape, dtype=float)
                gx, gy = grid.world_to_pixel_values(*wcs.pixel_to_world_values(xx, yy))
                level = coef[0] + coef[1] * gx + coef[2] * gy
            h["SCI"].data = (sci - level).astype(np.float32)
            h[0].header["LVLOFFST"] = (float(coef[0]), "level offset subtracted [BUNIT] (at grid origin)")
            h[0].header["LVLREF"] = (cal_files[ref].name, "level-matching reference exposure")
            stamp_header(h[0].header, step="lvlmt", params={**params, "offset": coef.tolist()},
                         config_hash=config_hash)
            out = out_dir / f.name
            with atomic_path(out) as tmp:
                h.writeto(tmp)
        outputs.append(out)
    table = Table({"file": [f.name for f in cal_files], "group": groups or [""] * len(cal_files),
                   "offset": sol.offsets[:, 0],
                   "isolated": [i in sol.isolated for i in range(len(cal_files))]})
    with atomic_path(out_dir / "offsets.ecsv") as tmp:
        table.write(tmp, format="ascii.ecsv")
    if qa_png is not None:
        plot_offsets(table, sol, qa_png, ref)
    log.info("level matching: %d exposures, %d pairs, %d rejected, reference %s", len(cal_files),
             len(sol.pairs), len(sol.rejected), cal_files[ref].name)
    return outputs, sol


def plot_offsets(table: Table, sol: LevelSolution, png: Path, ref: int) -> Path:
    """Bar chart of the solved offsets, coloured by dither group."""
    from jwstgal.qa import _plt

    plt = _plt()
    fig, ax = plt.subplots(figsize=(max(5, 0.35 * len(table)), 3.5))
    groups = list(dict.fromkeys(table["group"]))
    colours = [groups.index(g) for g in table["group"]]
    ax.bar(range(len(table)), table["offset"], color=plt.cm.tab10(np.asarray(colours) % 10))
    ax.axhline(0, color="k", lw=0.5)
    ax.set_xticks(range(len(table)), [f[:25] for f in table["file"]], rotation=90, fontsize=6)
    ax.set_ylabel("offset subtracted")
    ax.set_title(f"level matching: {len(sol.pairs)} pairs, {len(sol.rejected)} rejected, "
                 f"reference #{ref}", fontsize=9)
    with atomic_path(png) as tmp:
        fig.savefig(tmp, dpi=90, bbox_inches="tight", format="png")
    plt.close(fig)
    return png
