"""Step ``wcs_adjust``: relative per-visit astrometry, before level matching and stage 3.

The band-scope half of the per-visit astrometry (pjpipe's ``apply_wcs_adjust``): the target's
shifts file ``<reprocess_dir>/<target>/wcs_adjust.toml``, solved by the target-scope step
``wcs_solve`` (:mod:`jwstgal.steps.wcs_solve`) or made by hand, is applied to the exposures of
every band (jwst ``adjust_wcs``, one task per file). The file is part of the step's key: a hand
edit reruns it. This module also holds the file's format (:func:`read_wcs_adjust`,
:func:`write_shifts`, :func:`shifts_key`). The shifts are solved once per target, so the
``[wcs_adjust]`` overrides name targets only.
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
from jwstgal.astrometry_io import PassSettings, visit_id
from jwstgal.errors import InputNotFoundError, StepFailedError
from jwstgal.provenance import hash_params, write_text_atomic
from jwstgal.settings import StepSettings, added_field, check_band
from jwstgal.steps.base import BandContext, BandTask, Step, StepPlan, content_hash, is_background
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


def shifts_path(target_dir: Path) -> Path:
    """The target's shifts file, ``<target>/wcs_adjust.toml``."""
    return target_dir / "wcs_adjust.toml"


def reference_exposures(run: Any, target_dir: Path, params: dict[str, Any]) -> list[Path]:
    """The science exposures of the target's ``[wcs_adjust] bands`` the shifts are measured on."""
    cal = layout.step_folder("lv2")
    return [p for b in params["bands"] or [run.science.bands[0]]
            for p in sorted((target_dir / b / cal).glob("*_cal.fits")) if not is_background(p, run)]


def solve_inputs(run: Any, target_dir: Path, params: dict[str, Any]) -> str:
    """The hash of what the target's solve reads: its settings and the reference exposures' names."""
    names = [c.name for c in reference_exposures(run, target_dir, params)]
    return hash_params([NAME, "solve", WcsAdjustSettings.key_params(params), names])


class WcsAdjust(Step):
    """Relative per-visit astrometry: the band-scope apply."""

    name = NAME
    summary = ("the target's per-visit sky shifts (`wcs_adjust.toml`, solved by `wcs_solve`, "
               "hand-editable) applied to every exposure, `[wcs_adjust]`")
    settings = WcsAdjustSettings
    stpipe = True
    needs = ("wcs_solve",)

    def plan(self, ctx: BandContext, upstream: str, inputs: list[Path]) -> StepPlan:
        """One task per exposure, applying the target's shifts file (solved by ``wcs_solve``).

        The shifts file is an input: a hand edit reruns this step and what follows.
        """
        inputs = ctx.science_cal(inputs, "wcs_adjust")
        params = self.resolved(ctx)
        target_dir = ctx.band_dir.parent
        toml_path = shifts_path(target_dir)
        if not toml_path.is_file():
            msg = f"{ctx.label}: wcs_adjust needs the target's visit shifts {toml_path} (step wcs_solve)"
            raise InputNotFoundError(msg)
        cal = layout.step_folder("lv2")
        exposures = [p for b in ctx.run.science.bands for p in (target_dir / b / cal).glob("*_cal.fits")]
        check_known_visits(toml_path, read_wcs_adjust(toml_path), exposures)   # hand-made: about this target?
        names = [p.name for p in inputs]
        shifts = shifts_key(toml_path, solve_inputs(ctx.run, target_dir, params))
        key = hash_params([NAME, self.key_params(params), upstream, names, shifts])
        if (begun := ctx.begin(NAME, key, params)).done:
            return begun.done
        out_dir, reuse = begun.out_dir, begun.reuse
        todo = [p for p in inputs if not (reuse and (out_dir / p.name).is_file())]
        return StepPlan(NAME, key, params, [out_dir / n for n in names],
                        [ApplyTask(p, out_dir / p.name, toml_path, ctx.run.config_hash) for p in todo])
