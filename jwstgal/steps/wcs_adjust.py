"""Step ``wcs_adjust``: relative per-visit astrometry, before level matching and stage 3.

Per-visit shifts are measured once per target on the star-rich ``[wcs_adjust] bands`` (stars
detected in every calibrated exposure, each exposure aligned to the reference visit's stars, shifts
averaged per visit), written to ``<reprocess_dir>/<target>/wcs_adjust.toml`` (a hand-made or edited
file is used as it is, and is part of the step's key), and applied to the exposures of every band
(jwst ``adjust_wcs``). The step is solved once per target, so its overrides name targets only.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from pydantic import Field, field_validator

from jwstgal import layout
from jwstgal.astrometry import AlignPass, align_catalogs
from jwstgal.astrometry_io import PassSettings, align_pass, apply_wcs_adjust, exposure_stars, visit_id
from jwstgal.bands import get_band
from jwstgal.errors import InputNotFoundError
from jwstgal.provenance import hash_params, write_text_atomic
from jwstgal.settings import StepSettings, check_band
from jwstgal.steps.base import BandContext, Step, StepPlan, content_hash

log = logging.getLogger(__name__)

NAME = "wcs_adjust"


def _visit_passes() -> list[PassSettings]:
    # JWST visits are misaligned by <~0.3": a wider first search aliases in crowded fields
    return [PassSettings(searchrad=0.5, tolerance=0.3),
            PassSettings(searchrad=0.2, tolerance=0.12, use2dhist=False)]


class WcsAdjustSettings(StepSettings):
    """The ``[wcs_adjust]`` table (step ``wcs_adjust``: relative per-visit shifts)."""

    scope: ClassVar[str] = "target"

    bands: list[str] = Field(default_factory=list, description="Star-rich bands the visit shifts "
                             "are measured on (default: the target's first configured band).")
    passes: list[PassSettings] = Field(default_factory=_visit_passes, description="Matching passes.")

    @field_validator("bands")
    @classmethod
    def _bands(cls, bands: list[str]) -> list[str]:
        return [check_band(b) for b in bands]


def merge_detections(catalogs: list[tuple[np.ndarray, np.ndarray]], radius_arcsec: float = 0.1
                     ) -> tuple[np.ndarray, np.ndarray]:
    """One star list from several exposures of a visit: detections closer than ``radius`` are one star."""
    from scipy.spatial import cKDTree

    from jwstgal.astrometry import from_tangent_plane, tangent_plane

    ra = np.concatenate([c[0] for c in catalogs])
    dec = np.concatenate([c[1] for c in catalogs])
    if ra.size == 0:
        return ra, dec
    center = (float(np.median(ra)), float(np.median(dec)))
    xy = tangent_plane(ra, dec, *center)
    tree = cKDTree(xy)
    label = -np.ones(len(xy), int)
    for i in range(len(xy)):
        if label[i] < 0:
            label[tree.query_ball_point(xy[i], radius_arcsec)] = i
    merged = np.array([xy[label == k].mean(axis=0) for k in np.unique(label)])
    return from_tangent_plane(merged, *center)


def measure_visit_shifts(cal_files: list[Path], fwhm_pix: float, passes: list[AlignPass], *,
                         min_matches: int = 5) -> dict[str, dict[str, Any]]:
    """Per-visit sky shifts (arcsec) that align every visit with the reference visit.

    The reference visit is the one with most detected stars; every exposure of the other visits is
    aligned (shift fit) to the reference visit's stars and the shifts are averaged per visit.
    """
    stars = {f: exposure_stars(f, fwhm_pix) for f in cal_files}
    visits: dict[str, list[Path]] = {}
    for f in cal_files:
        visits.setdefault(visit_id(f), []).append(f)
    ref = max(visits, key=lambda v: sum(stars[f][0].size for f in visits[v]))
    ref_ra, ref_dec = merge_detections([stars[f] for f in visits[ref]], radius_arcsec=0.1)
    out: dict[str, dict[str, Any]] = {ref: {"shift": [0.0, 0.0], "n_exposures": 0, "reference": True}}
    for v, files in visits.items():
        if v == ref:
            continue
        shifts = []
        for f in files:
            res = align_catalogs(*stars[f], ref_ra, ref_dec, passes, fitgeom="shift",
                                 min_matches=min_matches)
            if res is not None:
                shifts.append(res.shift)
        if shifts:  # the median resists one exposure that matched badly
            out[v] = {"shift": [float(x) for x in np.median(shifts, axis=0)],
                      "n_exposures": len(shifts), "reference": False}
        else:
            log.warning("wcs_adjust: visit %s could not be aligned to %s; left unchanged", v, ref)
    return out


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with (path.parent / f".{path.name}.lock").open("w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def ensure_wcs_adjust(toml_path: Path, ref_cal_files: list[Path], fwhm_pix: float | dict[str, float],
                      passes: list[dict[str, Any]]) -> dict[str, Any]:
    """Read the per-visit shifts of a target, measuring and writing them first if absent.

    ``ref_cal_files`` live in ``<target>/<BAND>/<step>/``; each band's visits are measured on its
    own exposures, with ``fwhm_pix`` given per band (dict) or for all, and the passes' pixel
    lengths (``"5pix"``) in that band's pixels.
    """
    import tomli_w

    with _locked(toml_path):
        if toml_path.is_file():
            return tomllib.loads(toml_path.read_text()).get("wcs_adjust", {})
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
            for v, sh in measure_visit_shifts(files, fwhm, [align_pass(p, pixscale) for p in passes]
                                              ).items():
                shifts.setdefault(v, sh)
        doc = {"wcs_adjust": {v: {"shift": s["shift"]} for v, s in shifts.items()}}
        write_text_atomic(toml_path, "# per-visit sky shifts [arcsec east, north] (jwstgal wcs_adjust)\n"
                          + tomli_w.dumps(doc))
        log.info("wcs_adjust: visit shifts written to %s", toml_path)
        return doc["wcs_adjust"]


def run_task(cal_files: list[str], out_dir: str, toml_path: str, ref_cal: list[str],
             fwhm_pix: dict[str, float], passes: list[dict], config_hash: str) -> list[str]:
    """Measure (once per target) and apply the visit shifts to one band's exposures (worker)."""
    shifts = ensure_wcs_adjust(Path(toml_path), [Path(c) for c in ref_cal], fwhm_pix, passes)
    out = []
    for c in map(Path, cal_files):
        shift = shifts.get(visit_id(c), {}).get("shift", [0.0, 0.0])
        out.append(str(apply_wcs_adjust(c, Path(out_dir) / c.name, shift, config_hash)))
    return out


class WcsAdjust(Step):
    """Relative per-visit astrometry."""

    name = NAME
    summary = ("per-visit sky shifts measured on star-rich bands (`wcs_adjust.toml`, hand-editable) "
               "and applied to every band, `[wcs_adjust]`")
    settings = WcsAdjustSettings

    def plan(self, ctx: BandContext, upstream: str, inputs: list[Path]) -> StepPlan:
        """One task for the band; the shifts file is an input (a hand edit reruns this and what follows)."""
        inputs = ctx.science_cal(inputs, "wcs_adjust")
        params = self.resolved(ctx)
        ref_bands = params["bands"] or [ctx.run.science.bands[0]]
        target_dir = ctx.band_dir.parent
        cal = layout.step_folder("lv2")
        ref_cal = [p for b in ref_bands for p in sorted((target_dir / b / cal).glob("*_cal.fits"))
                   if not ctx.is_background(p)]
        toml_path = target_dir / "wcs_adjust.toml"
        fwhm = {b: get_band(b).fwhm_pix for b in ref_bands}
        names = [p.name for p in inputs]

        def key_now() -> str:
            return hash_params([NAME, self.key_params(params), upstream, names, content_hash(toml_path)])

        key = key_now()
        if (done := ctx.complete(NAME, key, params)) is not None:
            return done
        out_dir, _ = ctx.prepare(NAME, key, params)
        plan = StepPlan(NAME, key, params, [out_dir / n for n in names], run_task,
                        [([str(p) for p in inputs], str(out_dir), str(toml_path),
                          [str(p) for p in ref_cal], fwhm, params["passes"], ctx.run.config_hash)])
        plan.rekey = key_now  # the first run writes the shifts file: key on what it wrote
        return plan
