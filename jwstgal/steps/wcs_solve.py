"""Step ``wcs_solve``: the target's per-visit shifts, solved once per target (target scope).

The target-scope half of the per-visit astrometry (pjpipe's ``get_wcs_adjust``); ``wcs_adjust``
needs it, so it runs for every target whose bands run ``wcs_adjust``. Stars are detected in every
calibrated exposure of the star-rich ``[wcs_adjust] bands`` (one executor task per file, reading
only its arrays and FITS WCS; kept in ``<target>/.wcs_adjust_stars/``), merged per visit, and the
visits' shifts solved together over the graph of overlapping visits into
``<reprocess_dir>/<target>/wcs_adjust.toml``, marked as solved from those inputs. A shifts file
already there (solved before, hand-made or edited) is used as it is: to solve again, delete it.
The step's record is the target's (``<target>/.jwstgal/wcs_solve.json``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from jwstgal.astrometry import AlignPass
from jwstgal.astrometry_io import align_pass, exposure_stars, visit_id
from jwstgal.bands import get_band
from jwstgal.errors import InputNotFoundError
from jwstgal.provenance import atomic_path
from jwstgal.steps.base import BandTask, Stage, Step, StepPlan, TargetContext
from jwstgal.steps.wcs_adjust import (
    read_wcs_adjust,
    reference_exposures,
    shifts_path,
    solve_inputs,
    write_shifts,
)
from jwstgal.visit_shifts import merge_detections, solve_visit_shifts

log = logging.getLogger(__name__)

NAME = "wcs_solve"
#: The settings table it reads (the shifts are ``wcs_adjust``'s).
TABLE = "wcs_adjust"


#: Folder (in the target's folder) of the stars detected in each exposure.
STARS_DIR = ".wcs_adjust_stars"


def stars_cache(target_dir: Path, cal: Path) -> Path:
    """Where the stars of an exposure (``<target>/<BAND>/<step>/<file>``) are kept."""
    return target_dir / STARS_DIR / cal.parent.parent.name / f"{cal.stem}_stars.ecsv"


def cached_stars(cal: Path, fwhm_pix: float, cache: Path | None = None) -> tuple[np.ndarray, np.ndarray]:
    """RA/Dec of the stars of an exposure, from ``cache`` when it was made from this very file.

    The cache records the file's size and modification time and the FWHM; any change detects
    again (and rewrites the cache atomically).
    """
    from astropy.table import Table

    st = cal.stat()
    stamp = f"{st.st_size}:{st.st_mtime_ns}:{fwhm_pix:.6g}"
    if cache is not None and cache.is_file():
        t = Table.read(cache, format="ascii.ecsv")
        if t.meta.get("source") == stamp:
            return np.asarray(t["ra"], float), np.asarray(t["dec"], float)
    ra, dec = exposure_stars(cal, fwhm_pix)
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(cache) as tmp:
            Table({"ra": ra, "dec": dec}, meta={"source": stamp, "file": cal.name}).write(
                tmp, format="ascii.ecsv")
    return ra, dec


def measure_visit_shifts(cal_files: list[Path], fwhm_pix: float, passes: list[AlignPass], *,
                         min_matches: int = 5, fitgeom: str = "shift", cache_dir: Path | None = None
                         ) -> dict[str, dict[str, Any]]:
    """Per-visit sky shifts (arcsec) that align the visits with each other.

    Stars are detected in every exposure (or read from ``cache_dir``, see :func:`stars_cache`) and
    merged per visit; the visits' shifts are then solved together over all overlapping pairs
    (:func:`jwstgal.visit_shifts.solve_visit_shifts`).
    """
    stars = {f: cached_stars(f, fwhm_pix, stars_cache(cache_dir, f) if cache_dir else None)
             for f in cal_files}
    visits: dict[str, list[Path]] = {}
    for f in cal_files:
        visits.setdefault(visit_id(f), []).append(f)
    catalogs = {v: merge_detections([stars[f] for f in files], radius_arcsec=0.1)
                for v, files in visits.items()}
    return solve_visit_shifts(catalogs, passes, min_matches=min_matches, fitgeom=fitgeom)


def solve_wcs_adjust(toml_path: Path, ref_cal_files: list[Path], fwhm_pix: float | dict[str, float],
                     passes: list[dict[str, Any]], fitgeom: str = "shift", solved_from: str = ""
                     ) -> dict[str, Any]:
    """The per-visit shifts of a target: read, or measured and written when there is no file yet.

    ``ref_cal_files`` live in ``<target>/<BAND>/<step>/``; each band's visits are measured on its
    own exposures, with ``fwhm_pix`` given per band (dict) or for all, and the passes' pixel
    lengths (``"5pix"``) in that band's pixels. The step runs this once per target, in a stage of
    its own between the star finding and the corrections (no lock: no other task writes the file).
    ``solved_from`` (the hash of the solve's inputs) is written on the file's first line, with a
    hash of the rest, so that the step knows its own file from an edited one (:func:`shifts_key`).
    """
    if toml_path.is_file():
        return read_wcs_adjust(toml_path)
    if not ref_cal_files:
        msg = f"{toml_path}: no exposures of the [wcs_adjust] bands to measure visit shifts on"
        raise InputNotFoundError(msg)
    by_band: dict[str, list[Path]] = {}
    for f in ref_cal_files:  # visits of different bands/instruments are measured separately
        by_band.setdefault(f.parent.parent.name, []).append(f)
    shifts: dict[str, dict[str, Any]] = {}
    for band, files in by_band.items():
        fwhm = fwhm_pix.get(band, 2.0) if isinstance(fwhm_pix, dict) else fwhm_pix
        pixscale = get_band(band).pixel_scale
        for v, sh in measure_visit_shifts(files, fwhm, [align_pass(p, pixscale) for p in passes],
                                          fitgeom=fitgeom, cache_dir=toml_path.parent).items():
            shifts.setdefault(v, {**sh, "group": f"{band} {sh['group']}"})
    keep = ("shift", "rotation_deg", "center_deg", "group", "n_pairs")
    doc = {"wcs_adjust": {v: {**{k: s[k] for k in keep if k in s},
                              "residual_mas": round(s["residual_mas"], 2)} for v, s in shifts.items()}}
    write_shifts(toml_path, doc, solved_from)
    log.info("wcs_solve: visit shifts written to %s", toml_path)
    return doc["wcs_adjust"]


@dataclass(frozen=True)
class DetectTask(BandTask):
    """Detect the stars of one exposure of a reference band into its cache (before the solve)."""

    cal: Path
    fwhm_pix: float
    cache: Path

    def run(self) -> list[str]:
        """Write the cache (kept when it was made from this very file)."""
        cached_stars(self.cal, self.fwhm_pix, self.cache)
        return [str(self.cache)]


@dataclass(frozen=True)
class SolveTask(BandTask):
    """Solve a target's visit shifts from the cached stars into its shifts file (once per target).

    Every band of the target plans this same task; the driver runs it once.
    """

    toml_path: Path
    ref_cal: tuple[Path, ...]
    fwhm_pix: dict[str, float]
    passes: list[dict[str, Any]]
    fitgeom: str = "shift"
    solved_from: str = ""

    def run(self) -> list[str]:
        """Write the shifts file."""
        solve_wcs_adjust(self.toml_path, list(self.ref_cal), self.fwhm_pix, self.passes, self.fitgeom,
                         self.solved_from)
        return [str(self.toml_path)]


class WcsSolve(Step):
    """The target's per-visit shifts."""

    name = NAME
    scope = "target"
    summary = ("per-visit sky shifts of the target measured on its star-rich bands into "
               "`wcs_adjust.toml` (needed by `wcs_adjust`; a file already there is kept), "
               "`[wcs_adjust]`")

    def plan(self, ctx: TargetContext, upstream: str = "", inputs: list[Path] | None = None) -> StepPlan:
        """Star finding per reference exposure, then the solve; done when the shifts file exists."""
        params = ctx.settings(TABLE)
        toml_path = shifts_path(ctx.folder)
        key = solve_inputs(ctx.run, ctx.folder, params)
        if toml_path.is_file():              # solved before, or made by hand: used as it is
            return StepPlan(NAME, key, params, [toml_path])
        ref_cal = reference_exposures(ctx.run, ctx.folder, params)
        if not ref_cal:
            msg = (f"{ctx.label}: no exposures of the [wcs_adjust] bands "
                   f"({', '.join(params['bands'] or ctx.run.science.bands[:1])}) to measure visit shifts on")
            raise InputNotFoundError(msg)
        if (begun := ctx.begin(NAME, key, params)).done:
            return begun.done
        fwhm = {c.parent.parent.name: get_band(c.parent.parent.name).fwhm_pix for c in ref_cal}
        plan = StepPlan(NAME, key, params, [toml_path], [SolveTask(
            toml_path, tuple(ref_cal), fwhm, params["passes"], params["fitgeom"], key)])
        detect = Stage([DetectTask(c, fwhm[c.parent.parent.name], stars_cache(ctx.folder, c))
                        for c in ref_cal])
        plan.stages = [detect, plan.main]
        log.info("%s: visit shifts to solve from %d exposures", ctx.label, len(ref_cal))
        return plan
