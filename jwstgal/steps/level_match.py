"""Step ``level_match``: match the background levels of calibrated exposures before stage 3.

Each exposure is block-averaged (``binning``), DQ-bad pixels masked, and sampled onto the cutout
of one common celestial grid that holds its footprint (one exposure read at a time);
:func:`jwstgal.level_match.match_levels` then solves all offsets (within dither groups, then
between tiles), and copies of the cal files with the offsets subtracted are written to
``level_match/`` (``LVLOFFST`` keyword, HISTORY with plane terms), with ``offsets.ecsv`` and a
diagnostic plot. The reference exposure is the one closest in time to the dedicated background
exposures when there are any, else the first.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from astropy.io import fits
from astropy.table import Table
from astropy.wcs import WCS
from pydantic import Field
from scipy.ndimage import map_coordinates

from jwstgal import dq, layout
from jwstgal.bands import Band
from jwstgal.errors import StepFailedError
from jwstgal.level_match import LevelSolution, block_reduce, match_levels
from jwstgal.provenance import atomic_path, hash_params, stamp_header
from jwstgal.settings import StepSettings
from jwstgal.steps.base import BandContext, BandTask, Step, StepPlan
from jwstgal.tiled_io import remove_scratch, scratch_dir

log = logging.getLogger(__name__)

NAME = "level_match"


class LevelMatchSettings(StepSettings):
    """The ``[level_match]`` table (step ``level_match``, between stages 2 and 3)."""

    binning: int = Field(4, ge=1, le=32, description="Block size averaged before matching.")
    plane: bool = Field(False, description="Match planes (offset + gradient) instead of offsets.")
    mask_emission: bool = Field(True, description="Ignore bright emission and sources.")
    min_pixels: int = Field(200, ge=10, description="Smallest overlap (binned pixels) used.")
    by_group: bool = Field(True, description="Match exposures within dither groups, then tiles.")


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


def footprint_box(wcs: WCS, shape: tuple[int, int], grid: WCS, grid_shape: tuple[int, int]
                  ) -> tuple[int, int, int, int]:
    """Grid rows y0:y1 and columns x0:x1 that hold an exposure's footprint (its edges mapped)."""
    ny, nx = shape
    u, v = np.linspace(-0.5, nx - 0.5, 33), np.linspace(-0.5, ny - 0.5, 33)
    ex = np.concatenate([u, np.full(33, nx - 0.5), u, np.full(33, -0.5)])
    ey = np.concatenate([np.full(33, -0.5), v, np.full(33, ny - 0.5), v])
    gx, gy = grid.world_to_pixel_values(*wcs.pixel_to_world_values(ex, ey))
    y0 = int(np.clip(np.floor(np.nanmin(gy)) - 1, 0, grid_shape[0]))
    y1 = int(np.clip(np.ceil(np.nanmax(gy)) + 2, 0, grid_shape[0]))
    x0 = int(np.clip(np.floor(np.nanmin(gx)) - 1, 0, grid_shape[1]))
    x1 = int(np.clip(np.ceil(np.nanmax(gx)) + 2, 0, grid_shape[1]))
    return y0, y1, x0, x1


def sample_on_grid(data: np.ndarray, wcs: WCS, binning: int, grid: WCS, shape: tuple[int, int]
                   ) -> tuple[np.ndarray, tuple[int, int]]:
    """Block-average an exposure and sample it (bilinearly) on a common grid.

    Returns the cutout of the grid that holds the exposure's footprint (NaN outside it) and the
    grid (row, column) of its first pixel: memory goes with the exposure, not with the mosaic.
    """
    y0, y1, x0, x1 = footprint_box(wcs, data.shape, grid, shape)
    binned = block_reduce(data, size=max(data.shape) // binning)
    yy, xx = np.mgrid[y0:y1, x0:x1].astype(float)
    ra, dec = grid.pixel_to_world_values(xx, yy)
    x, y = wcs.world_to_pixel_values(ra, dec)
    b = data.shape[1] / binned.shape[1]
    xb, yb = (x - (b - 1) / 2) / b, (y - (b - 1) / 2) / b
    out = map_coordinates(binned, [yb, xb], order=1, mode="constant", cval=np.nan)
    outside = (xb < -0.5) | (yb < -0.5) | (xb > binned.shape[1] - 0.5) | (yb > binned.shape[0] - 0.5)
    out[outside] = np.nan
    return out, (y0, x0)


class CutoutStore(Sequence[np.ndarray]):
    """Cutouts kept in ``.npy`` files of a folder, read back when indexed.

    The solve visits the cutouts pair by pair, so memory holds the last few read (``keep``), not
    every exposure's. :func:`jwstgal.level_match.match_levels` also asks for ``derived`` (a function
    of each cutout, e.g. its emission mask, stored the same way), ``subset`` and ``new`` (a store
    for the dither groups' mean images).
    """

    def __init__(self, folder: Path, paths: list[Path] | None = None, keep: int = 4) -> None:
        self.folder, self.paths, self.keep = folder, list(paths or []), keep
        self._recent: dict[int, np.ndarray] = {}

    def append(self, a: np.ndarray) -> None:
        """Store one more cutout."""
        path = self.folder / f"{len(self.paths)}.npy"
        np.save(path, a)
        self.paths.append(path)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> np.ndarray:  # type: ignore[override]
        if not -len(self) <= i < len(self):
            raise IndexError(i)
        i %= len(self)
        if i not in self._recent:
            if len(self._recent) >= self.keep:
                self._recent.pop(next(iter(self._recent)))
            self._recent[i] = np.load(self.paths[i])
        return self._recent[i]

    def new(self) -> CutoutStore:
        """An empty store in a new subfolder."""
        sub = self.folder / f"sub{len(list(self.folder.glob('sub*')))}"
        sub.mkdir()
        return CutoutStore(sub, keep=self.keep)

    def derived(self, fn: Any) -> CutoutStore:
        """``fn`` of every cutout, computed one at a time and stored in a new subfolder."""
        out = self.new()
        for k in range(len(self)):
            out.append(fn(self[k]))
        return out

    def subset(self, idx: list[int]) -> CutoutStore:
        """The cutouts ``idx`` (the same files)."""
        return CutoutStore(self.folder, [self.paths[i] for i in idx], self.keep)


def _read_header(path: Path) -> tuple[WCS, tuple[int, int]]:
    with fits.open(path) as h:
        missing = [e for e in ("SCI", "DQ") if e not in h]
        if missing:
            msg = f"{path}: no {'/'.join(missing)} extension: not a calibrated exposure"
            raise StepFailedError(msg)
        hdr = h["SCI"].header
        return WCS(hdr), (int(hdr["NAXIS2"]), int(hdr["NAXIS1"]))


def _read(path: Path) -> np.ndarray:
    with fits.open(path) as h:
        data = np.array(h["SCI"].data, float)
        data[dq.flagged(np.asarray(h["DQ"].data), ["DO_NOT_USE"])] = np.nan
    return data


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
    params: LevelMatchSettings | dict[str, Any],
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
    params : LevelMatchSettings or dict
        ``[level_match]`` settings (a dict may give some; the others take their defaults).
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
    s = params if isinstance(params, LevelMatchSettings) else LevelMatchSettings(**params)
    heads = [_read_header(f) for f in cal_files]      # headers first: the grid, then one frame at a time
    scale = float(np.sqrt(abs(np.linalg.det(heads[0][0].celestial.pixel_scale_matrix))) * 3600)
    grid, shape = common_grid([w for w, _ in heads], [sh for _, sh in heads], scale * s.binning)
    scratch = scratch_dir(out_dir, ".level_match-")       # the cutouts wait on disk, not in memory
    try:
        cutouts, origins = CutoutStore(scratch), []
        for f, (w, _) in zip(cal_files, heads, strict=True):
            cut, origin = sample_on_grid(_read(f), w, s.binning, grid, shape)
            cutouts.append(cut)
            origins.append(origin)
        groups = [dither_group(f) for f in cal_files] if s.by_group else None
        ref = choose_reference(cal_files, backgrounds or [])
        sol = match_levels(cutouts, groups=groups, reference=ref, plane=s.plane,
                           mask_emission=s.mask_emission, min_pixels=s.min_pixels, origins=origins)
    finally:
        remove_scratch(scratch)
    outputs = []
    for f, (wcs, _), coef in zip(cal_files, heads, sol.offsets, strict=True):
        with fits.open(f) as h:
            sci = np.array(h["SCI"].data, float)
            if len(coef) == 1:
                level = coef[0]
            else:  # plane in common-grid pixels, evaluated at every exposure pixel
                yy, xx = np.indices(sci.shape, dtype=float)
                gx, gy = grid.world_to_pixel_values(*wcs.pixel_to_world_values(xx, yy))
                level = coef[0] + coef[1] * gx + coef[2] * gy
            h["SCI"].data = (sci - level).astype(np.float32)
            h[0].header["LVLOFFST"] = (float(coef[0]), "level subtracted [BUNIT], grid origin")
            h[0].header["LVLREF"] = (cal_files[ref].name, "level-match reference")
            stamp_header(h[0].header, step=NAME, params={**s.model_dump(), "offset": coef.tolist()},
                         config_hash=config_hash)
            out = out_dir / f.name
            with atomic_path(out) as tmp:
                h.writeto(tmp)
        outputs.append(out)
    table = Table({"file": [f.name for f in cal_files], "group": groups or [""] * len(cal_files),
                   "offset": sol.offsets[:, 0],
                   "isolated": [i in sol.isolated for i in range(len(cal_files))]},
                  meta={"n_pairs": len(sol.pairs) + len(sol.group_pairs), "n_rejected": len(sol.rejected),
                        "reference": cal_files[ref].name})
    with atomic_path(out_dir / "offsets.ecsv") as tmp:
        table.write(tmp, format="ascii.ecsv")
    if qa_png is not None:
        from jwstgal.plots import offsets_png

        offsets_png(list(table["file"]), list(table["group"]), np.asarray(table["offset"]), qa_png,
                    f"level matching: {len(sol.pairs)} pairs, {len(sol.rejected)} rejected, "
                    f"reference #{ref}", unit=_unit(cal_files[0]))
    log.info("level matching: %d exposures, %d pairs, %d rejected, reference %s", len(cal_files),
             len(sol.pairs), len(sol.rejected), cal_files[ref].name)
    return outputs, sol


def _unit(path: Path) -> str:
    """The BUNIT of a file's SCI extension ('' when it has none)."""
    try:
        return str(fits.getheader(path, "SCI").get("BUNIT", ""))
    except (OSError, KeyError):
        return ""


@dataclass(frozen=True)
class LevelMatchTask(BandTask):
    """Level-match one band's exposures (the reference: the one closest in time to ``backgrounds``)."""

    cal_files: tuple[Path, ...]
    out_dir: Path
    settings: LevelMatchSettings
    backgrounds: tuple[Path, ...]
    config_hash: str
    qa_png: Path

    def run(self) -> list[str]:
        """Write the matched copies, the offsets table and the figure."""
        outputs, _ = level_match_files(list(self.cal_files), self.out_dir, self.settings,
                                       backgrounds=list(self.backgrounds), config_hash=self.config_hash,
                                       qa_png=self.qa_png)
        return [str(p) for p in outputs]


class LevelMatch(Step):
    """Background level matching."""

    name = NAME
    repeatable = True
    summary = ("background levels of overlapping exposures matched (dither groups, then tiles), "
               "`[level_match]`")
    settings = LevelMatchSettings
    stpipe = True

    def plan(self, ctx: BandContext, upstream: str, inputs: list[Path]) -> StepPlan:
        """One task for the band; the reference is the exposure closest in time to the backgrounds."""
        inputs = ctx.science_cal(inputs, "level matching")
        params = self.resolved(ctx)
        rate_dir = ctx.band_dir / layout.step_folder("lv1")
        backgrounds = ([p for p in sorted(rate_dir.glob("*_rate.fits")) if ctx.is_background(p)]
                       if ctx.uses_backgrounds() else [])
        key = hash_params([self.name, self.key_params(params), upstream, [p.name for p in inputs]])
        if (begun := ctx.begin(self.name, key, params)).done:
            return begun.done
        out_dir = begun.out_dir
        outputs = [out_dir / p.name for p in inputs]
        log.info("%s: level matching %d exposures", ctx.label, len(inputs))
        return StepPlan(self.name, key, params, outputs, [LevelMatchTask(
            tuple(inputs), out_dir, LevelMatchSettings(**params), tuple(backgrounds), ctx.run.config_hash,
            ctx.qa_dir / f"{self.name}.png")])

    def qa_summary(self, band_dir: Path, target: str, band: Band) -> dict[str, str]:
        """Spread (rms) of the level offsets subtracted."""
        path = band_dir / layout.step_folder(self.name) / "offsets.ecsv"
        if not path.is_file():
            return {}
        t = Table.read(path, format="ascii.ecsv")
        off = np.asarray(t["offset"], float)
        unit = _unit(band_dir / layout.step_folder(self.name) / str(t["file"][0])) or "no unit"
        return {f"level offsets: rms [{unit}]": f"{np.sqrt(np.mean((off - off.mean()) ** 2)):.3g} "
                                                f"({off.size} exp.)"}

    def figures(self, band_dir: Path, target: str, band: Band) -> list[tuple[Path, str]]:
        """The offsets (drawn by the task)."""
        return [(layout.qa_dir(band_dir) / f"{self.name}.png", "level offsets")]
