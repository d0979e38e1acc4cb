"""Step ``wcs_adjust``: relative per-visit astrometry, before level matching and stage 3.

Per-visit shifts are measured once per target on the star-rich ``[wcs_adjust] bands``: stars are
detected in every calibrated exposure (one executor task per file, reading only its arrays and FITS
WCS; kept in ``<target>/.wcs_adjust_stars/``), merged per visit, and the visits' shifts solved
together over the graph of overlapping visits. They are written to
``<reprocess_dir>/<target>/wcs_adjust.toml`` (a hand-made or edited file is used as it is, and is
part of the step's key) and applied to the exposures of every band (jwst ``adjust_wcs``, one task
per file). The step is solved once per target, so its overrides name targets only.
"""

from __future__ import annotations

import hashlib
import logging
import re
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import Field, field_validator

from jwstgal import layout
from jwstgal.astrometry import AlignPass
from jwstgal.astrometry_io import PassSettings, align_pass, exposure_stars, visit_id
from jwstgal.bands import get_band
from jwstgal.errors import InputNotFoundError, StepFailedError
from jwstgal.provenance import atomic_path, hash_params, write_text_atomic
from jwstgal.settings import StepSettings, added_field, check_band
from jwstgal.steps.base import BandContext, BandTask, Stage, Step, StepPlan, content_hash
from jwstgal.visit_shifts import merge_detections, solve_visit_shifts
from jwstgal.wcs_corrections import apply_wcs_adjust

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
    fitgeom: Literal["shift", "rshift"] = added_field(
        "shift", "Per-visit shifts, or shifts and rotations (solved over the same graph).")

    @field_validator("bands")
    @classmethod
    def _bands(cls, bands: list[str]) -> list[str]:
        return [check_band(b) for b in bands]


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
    log.info("wcs_adjust: visit shifts written to %s", toml_path)
    return doc["wcs_adjust"]


def write_shifts(toml_path: Path, doc: dict[str, Any], solved_from: str = "") -> None:
    """Write a target's shifts file (atomically), marked as solved from ``solved_from`` if given."""
    import tomli_w

    toml_path.parent.mkdir(parents=True, exist_ok=True)
    body = ("# per-visit sky shifts [arcsec east, north] (jwstgal wcs_adjust);\n"
            "# group: visits linked by overlaps (one fixed per group), residual_mas: rms "
            "misfit of its pairs\n" + tomli_w.dumps(doc))
    if solved_from:
        body = f"# jwstgal solve {solved_from} body {_body_hash(body)}\n" + body
    write_text_atomic(toml_path, body)


#: The first line of a shifts file the step solved: the hash of the solve's inputs and of the rest.
_SOLVED = re.compile(r"# jwstgal solve (?P<inputs>[0-9a-f]{16}) body (?P<body>[0-9a-f]{16})")


def _body_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def shifts_key(toml_path: Path, solve_inputs: str) -> str | None:
    """What a band's ``wcs_adjust`` key holds of the target's shifts file.

    The file as this step solved it, unedited, stands for the solve's inputs (``solve_inputs``,
    also what a run that has yet to solve it keys on), so the key a run records is the key the
    next run computes; a hand-made or edited file (or one of an older version) is keyed on its
    content, so an edit reruns the step and what follows.
    """
    if not toml_path.is_file():
        return f"solved {solve_inputs}"
    first, _, rest = toml_path.read_text().partition("\n")
    m = _SOLVED.fullmatch(first)
    if m and m["body"] == _body_hash(rest) and m["inputs"] == solve_inputs:
        return f"solved {solve_inputs}"
    return content_hash(toml_path)


#: A visit id (``jwPPPPPOOOVVV``), as this suite's shifts file keys its entries.
_VISIT = re.compile(r"jw\d{11}")
#: How the original scripts' entries are marked once read (their shifts are not east/north).
TANGENT_PLANE = "jwst_tangent_plane"


def read_wcs_adjust(toml_path: Path, target: str | None = None, visits: Iterable[str] = ()
                    ) -> dict[str, dict[str, Any]]:
    """The per-visit corrections of a target's shifts file, in either format, by visit id.

    This suite's format is ``[wcs_adjust.<visit>]`` with ``shift`` (arcsec east, north) and
    optionally ``rotation_deg`` and ``center_deg``. The original scripts' (and pjpipe's) is
    ``[wcs_adjust.<target>.<visit>]`` with ``shift`` and ``matrix`` in the tangent plane of
    tweakwcs' ``JWSTWCSCorrector``: those entries come back with ``frame = "jwst_tangent_plane"``
    (applied with that corrector). ``target`` defaults to the name of the file's folder; where the
    file has no such target, the entries of ``visits`` are taken from whichever target holds them
    (``strun`` knows exposures, not targets).

    Raises
    ------
    StepFailedError
        A file that is not TOML, or in the original format without the target.
    """
    target = target or toml_path.parent.name
    try:
        doc = tomllib.loads(toml_path.read_text()).get("wcs_adjust", {})
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        msg = f"{toml_path}: not a TOML file ({err})"
        raise StepFailedError(msg) from None
    if not isinstance(doc, dict):
        msg = f"{toml_path}: [wcs_adjust] must be a table of visits"
        raise StepFailedError(msg)
    wanted = set(visits)
    own = {k: v for k, v in doc.items() if _VISIT.fullmatch(k) and isinstance(v, dict)}
    nested = {k: v for k, v in doc.items() if not _VISIT.fullmatch(k) and isinstance(v, dict)}
    if own or not nested:
        return own
    # the original format: [wcs_adjust.<target>.<visit>]
    entries = nested[target] if target in nested else {
        v: e for t in nested.values() for v, e in t.items() if v in wanted}
    if not entries:
        msg = (f"{toml_path}: the original scripts' format ([wcs_adjust.<target>.<visit>]) without "
               f"{target!r} (it has {', '.join(sorted(nested))})")
        raise StepFailedError(msg)
    return {v: {"frame": TANGENT_PLANE, "shift": [float(x) for x in e.get("shift", [0.0, 0.0])],
                "matrix": [[float(x) for x in r] for r in e.get("matrix", [[1.0, 0.0], [0.0, 1.0]])]}
            for v, e in entries.items() if isinstance(e, dict)}


def check_known_visits(toml_path: Path, shifts: dict[str, Any], exposures: list[Path]) -> None:
    """Refuse a shifts file that names visits, none of them the target's (it would shift nothing)."""
    known = {visit_id(p) for p in exposures}
    if known and shifts and not known & set(shifts):       # an empty file says "no shifts": kept
        msg = (f"{toml_path}: names no visit of this target's exposures (it has "
               f"{', '.join(sorted(shifts)[:5]) or 'none'}; the exposures are of "
               f"{', '.join(sorted(known)[:5])}): every exposure would keep its WCS")
        raise StepFailedError(msg)


def apply_visit_correction(cal: Path, out: Path, entry: dict[str, Any], config_hash: str = "") -> Path:
    """Apply one visit's ``wcs_adjust.toml`` entry to an exposure.

    The entry is a shift (east, north), a shift and a rotation, or an original tangent-plane shift
    and matrix (:func:`read_wcs_adjust`).
    """
    if entry.get("frame") == TANGENT_PLANE:
        from jwstgal.wcs_corrections import apply_tangent_plane_correction

        return apply_tangent_plane_correction(cal, out, entry["shift"], entry["matrix"], config_hash)
    shift = [float(x) for x in entry.get("shift", [0.0, 0.0])]
    rot = float(entry.get("rotation_deg", 0.0))
    if rot == 0.0:
        return apply_wcs_adjust(cal, out, shift, config_hash)
    from jwstgal.astrometry import AlignResult
    from jwstgal.wcs_corrections import apply_wcs_correction

    t = np.deg2rad(rot)
    result = AlignResult(np.asarray(shift), np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]]),
                         rot, 1.0, 0.0, 0, 0, tuple(entry["center_deg"]))
    return apply_wcs_correction(cal, out, result, config_hash, step=NAME)


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


@dataclass(frozen=True)
class ApplyTask(BandTask):
    """Apply the target's visit shifts (solved in the stage before) to one exposure."""

    cal: Path
    out: Path
    toml_path: Path
    config_hash: str

    def run(self) -> list[str]:
        """Write the corrected copy."""
        if not self.toml_path.is_file():
            msg = f"{self.toml_path}: no visit shifts (the solve of this target failed; see the log)"
            raise InputNotFoundError(msg)
        entry = read_wcs_adjust(self.toml_path).get(visit_id(self.cal), {})
        return [str(apply_visit_correction(self.cal, self.out, entry, self.config_hash))]


class WcsAdjust(Step):
    """Relative per-visit astrometry."""

    name = NAME
    summary = ("per-visit sky shifts measured on star-rich bands (`wcs_adjust.toml`, hand-editable) "
               "and applied to every band, `[wcs_adjust]`")
    settings = WcsAdjustSettings
    stpipe = True

    def plan(self, ctx: BandContext, upstream: str, inputs: list[Path]) -> StepPlan:
        """One task per exposure, after star finding on the reference bands (while no shifts file).

        The shifts file is an input: a hand edit reruns this step and what follows.
        """
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
        # the solve's inputs, the same in every band of the target (its overrides name targets only)
        solve_inputs = hash_params([NAME, "solve", self.key_params(params), [c.name for c in ref_cal]])
        shifts = shifts_key(toml_path, solve_inputs)
        key = hash_params([NAME, self.key_params(params), upstream, names, shifts])
        solved = toml_path.is_file()
        if solved:                           # hand-made or edited: it must be about this target
            exposures = [p for b in ctx.run.science.bands for p in (target_dir / b / cal).glob("*_cal.fits")]
            check_known_visits(toml_path, read_wcs_adjust(toml_path), exposures)
        if (begun := ctx.begin(NAME, key, params, may_skip=solved)).done:
            return begun.done
        out_dir, reuse = begun.out_dir, begun.reuse
        todo = [p for p in inputs if not (reuse and (out_dir / p.name).is_file())]
        plan = StepPlan(NAME, key, params, [out_dir / n for n in names],
                        [ApplyTask(p, out_dir / p.name, toml_path, ctx.run.config_hash) for p in todo])
        band = ctx.band_dir.name
        # stars of each reference exposure, then the target's solve, then the corrections
        detect, solve = Stage(), Stage()
        if not toml_path.is_file():
            if band in ref_bands:                # each reference band detects its own files
                own = [c for c in ref_cal if c.parent.parent.name == band]
                detect.tasks = [DetectTask(c, fwhm[band], stars_cache(target_dir, c)) for c in own]
            # the same task in every band of the target: the driver runs it once
            solve.tasks = [SolveTask(toml_path, tuple(ref_cal), fwhm, params["passes"], params["fitgeom"],
                                     solve_inputs)]
        plan.stages = [detect, solve, plan.main]
        return plan
