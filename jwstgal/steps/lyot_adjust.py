"""Step ``lyot_adjust``: the MIRI Lyot coronagraph of full-frame exposures, without destriping.

MIRI full-frame imaging includes the Lyot coronagraph's field (rows 735+, columns < 290), whose
background differs from the imager's. This step (MIRI only, after stage 2) handles it on its own,
as the original scripts' ``lyot_adjust`` did:

- ``mask``: the Lyot pixels are flagged (SCI and ERR NaN, DQ ``DO_NOT_USE | NON_SCIENCE``);
- ``mask_overlap``: only Lyot pixels that another exposure of the band covers with good imager
  pixels are flagged, so the Lyot still fills sky no other exposure sees;
- ``adjust``: the Lyot is levelled to the imager (source-masked, sigma-clipped medians of both).

Subarray exposures have no Lyot and are copied unchanged. The ``destripe`` step handles the Lyot
too (``[destripe] lyot``); with both configured, set ``[destripe] lyot = "include"``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Literal

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS
from pydantic import Field

from jwstgal import dq
from jwstgal.bands import Band
from jwstgal.destripe_miri import MIRI_LYOT
from jwstgal.masking import sky_level
from jwstgal.provenance import atomic_path, stamp_header
from jwstgal.settings import StepSettings
from jwstgal.steps.base import BandContext, BandTask, Step, StepPlan

log = logging.getLogger(__name__)

NAME = "lyot_adjust"

#: The imager's columns used as the reference background (clear of the coronagraphs).
IMAGER_COLUMNS = slice(360, None)

#: A MIRI full frame (rows, columns).
MIRI_FULL = (1024, 1032)


class LyotAdjustSettings(StepSettings):
    """The ``[lyot_adjust]`` table (step ``lyot_adjust``, MIRI full frames, after stage 2)."""

    method: Literal["mask", "mask_overlap", "adjust"] = Field(
        "mask", description="Flag the Lyot, flag it where other exposures cover it, or level it.")
    sigma: float = Field(3.0, gt=0, description="Clipping and source-detection threshold (adjust).")
    npixels: int = Field(5, ge=1, description="Minimum connected pixels of a source (adjust).")
    dilate_size: int = Field(5, ge=1, le=256, description="Dilation of the source mask (adjust).")
    max_iters: int = Field(10, ge=1, description="Clipping iterations (adjust).")


def lyot_mask(shape: tuple[int, int]) -> np.ndarray:
    """The Lyot pixels of a MIRI frame (none unless it is a full frame)."""
    mask = np.zeros(shape, bool)
    if tuple(shape) == MIRI_FULL:
        mask[MIRI_LYOT] = True
    return mask


def good_imager(sci: np.ndarray, dq_arr: np.ndarray | None) -> np.ndarray:
    """Usable imager pixels: finite, non-zero, unflagged and outside the Lyot."""
    good = np.isfinite(sci) & (sci != 0) & ~lyot_mask(sci.shape)
    if dq_arr is not None:
        good &= dq_arr == 0
    return good


def lyot_offset(sci: np.ndarray, dq_arr: np.ndarray | None, s: LyotAdjustSettings) -> float:
    """What to add to the Lyot to level it with the imager (0 for a frame without Lyot)."""
    lyot = lyot_mask(sci.shape)
    if not lyot.any():
        return 0.0
    bad = ~np.isfinite(sci) | (sci == 0)
    if dq_arr is not None:
        bad |= dq_arr != 0
    imager = np.zeros(sci.shape, bool)
    imager[:, IMAGER_COLUMNS] = True
    lyot_level = sky_level(sci, bad | ~lyot, s.sigma, s.npixels, s.dilate_size, s.max_iters)
    imager_level = sky_level(sci, bad | ~imager, s.sigma, s.npixels, s.dilate_size, s.max_iters)
    return float(imager_level - lyot_level)


def covered_by_others(wcs: WCS, shape: tuple[int, int], others: list[tuple[WCS, np.ndarray]]) -> np.ndarray:
    """The Lyot pixels of one frame that another frame's good imager pixels cover (nearest pixel)."""
    lyot = lyot_mask(shape)
    out = np.zeros(shape, bool)
    if not lyot.any():
        return out
    yy, xx = np.nonzero(lyot)
    ra, dec = wcs.pixel_to_world_values(xx, yy)
    for w, good in others:
        ox, oy = w.world_to_pixel_values(ra, dec)
        ix, iy = np.round(ox).astype(int), np.round(oy).astype(int)
        inside = (ix >= 0) & (iy >= 0) & (ix < good.shape[1]) & (iy < good.shape[0])
        hit = np.zeros(ix.size, bool)
        hit[inside] = good[iy[inside], ix[inside]]
        out[yy[hit], xx[hit]] = True
    return out


def _read(path: Path) -> tuple[np.ndarray, np.ndarray | None, WCS]:
    with fits.open(path) as h:
        return (np.array(h["SCI"].data, float), np.array(h["DQ"].data) if "DQ" in h else None,
                WCS(h["SCI"].header).celestial)


def lyot_adjust_files(files: list[Path], out_dir: Path, s: LyotAdjustSettings, config_hash: str = ""
                      ) -> list[Path]:
    """Handle the Lyot of every exposure of a band, writing copies into ``out_dir``."""
    others: list[tuple[WCS, np.ndarray]] = []
    if s.method == "mask_overlap":
        for f in files:
            sci, dq_arr, w = _read(f)
            others.append((w, good_imager(sci, dq_arr)))
    outputs = []
    for k, f in enumerate(files):
        with fits.open(f) as h:
            sci = np.array(h["SCI"].data, float)
            dq_arr = np.array(h["DQ"].data) if "DQ" in h else None
            lyot = lyot_mask(sci.shape)
            flag = np.zeros(sci.shape, bool)
            offset = 0.0
            if s.method == "mask":
                flag = lyot
            elif s.method == "mask_overlap":
                flag = covered_by_others(WCS(h["SCI"].header).celestial, sci.shape,
                                         [o for j, o in enumerate(others) if j != k])
            else:
                offset = lyot_offset(sci, dq_arr, s)
                keep = lyot & np.isfinite(sci) & (sci != 0)     # zeros (no data) stay zero
                sci[keep] += offset
            sci[flag] = np.nan
            h["SCI"].data = sci.astype(h["SCI"].data.dtype)
            if "ERR" in h:
                h["ERR"].data[flag] = np.nan
            if "DQ" in h:
                h["DQ"].data[flag] |= dq.bits(["DO_NOT_USE", "NON_SCIENCE"])
            frac = float(flag.sum() / lyot.sum()) if lyot.any() else 0.0
            hdr = h[0].header
            hdr["LYOTMETH"] = (s.method, "lyot_adjust method")
            hdr["LYOTFRAC"] = (round(frac, 4), "fraction of the Lyot flagged")
            hdr["LYOTOFF"] = (offset, "level added to the Lyot [BUNIT]")
            stamp_header(hdr, step=NAME, params=s.model_dump(), config_hash=config_hash)
            out = out_dir / f.name
            with atomic_path(out) as tmp:
                h.writeto(tmp)
        log.info("%s: Lyot %s (%.0f %% flagged, offset %.4g)", f.name,
                 s.method if lyot.any() else "absent (subarray)", 100 * frac, offset)
        outputs.append(out)
    return outputs


@dataclass(frozen=True)
class LyotTask(BandTask):
    """Handle the Lyot of one band's exposures (``mask_overlap`` needs them all)."""

    files: tuple[Path, ...]
    out_dir: Path
    settings: LyotAdjustSettings
    config_hash: str

    def run(self) -> list[str]:
        """Write the adjusted copies."""
        return [str(p) for p in lyot_adjust_files(list(self.files), self.out_dir, self.settings,
                                                  self.config_hash)]


class LyotAdjust(Step):
    """MIRI Lyot handling without destriping."""

    name = NAME
    summary = ("MIRI only: the Lyot coronagraph of full frames flagged, flagged where other "
               "exposures cover it (`mask_overlap`) or levelled to the imager, `[lyot_adjust]`")
    settings = LyotAdjustSettings
    stpipe = True
    instruments: ClassVar[tuple[str, ...]] = ("miri",)

    def plan(self, ctx: BandContext, upstream: str, inputs: list[Path]) -> StepPlan:
        """One task for the band (``mask_overlap`` needs every exposure)."""
        from jwstgal.provenance import hash_params

        inputs = ctx.science_cal(inputs, "Lyot handling")
        params = self.resolved(ctx)
        key = hash_params([NAME, self.key_params(params), upstream, [p.name for p in inputs]])
        if (begun := ctx.begin(NAME, key, params)).done:
            return begun.done
        out_dir = begun.out_dir
        return StepPlan(NAME, key, params, [out_dir / p.name for p in inputs], [LyotTask(
            tuple(inputs), out_dir, LyotAdjustSettings(**params), ctx.run.config_hash)])

    def qa_summary(self, band_dir: Path, target: str, band: Band) -> dict[str, str]:
        """Median fraction of the Lyot flagged, or the median offset added."""
        files = sorted((band_dir / NAME).glob("*_cal.fits"))
        if not files:
            return {}
        heads = [fits.getheader(p) for p in files]
        frac = np.median([h.get("LYOTFRAC", 0.0) for h in heads])
        off = np.median([h.get("LYOTOFF", 0.0) for h in heads])
        unit = fits.getheader(files[0], "SCI").get("BUNIT") or "no unit"
        return {f"Lyot flagged [%] / offset [{unit}]": f"{100 * frac:.0f} / {off:.3g}"}
