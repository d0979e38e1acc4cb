"""The post-processing tables of the science configuration: kernels, the ladder, anchoring, release.

``[kernels]``, ``[convolve]``, ``[anchor]`` and ``[release]`` (with ``[release.compare_tolerances]``):
what make_kernels.py, convolve_data.py, anchor_data.py, prepare_release.py and compare_releases.py
do. Strict pydantic models like every table (unknown keys are errors).
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from jwstgal.bands import get_band
from jwstgal.settings import Strict, check_band, check_path_component

# the tables of the post-mosaic steps are their steps' own; re-exported here
from jwstgal.steps.convolve import ConvolveConfig  # noqa: F401
from jwstgal.steps.kernels import KernelsConfig  # noqa: F401


class ExternalMap(Strict):
    """One external map that can anchor an instrument: ``<anchor_ref_dir>/<target>_<band>.fits``."""

    band: str = Field(description="Its name in the file name, e.g. 'irac1', 'wise3'.")
    psf: str = Field(description="Its resolution as a PSF name, e.g. 'gauss4' (Gaussian FWHM 4\").")
    bands: list[str] = Field(
        default_factory=list, description="The bands this map anchors directly, because its "
        "wavelength covers theirs, e.g. ['F2100W'] for MIPS 24 um; the bands no map lists are "
        "chained to the reference band. Empty: the instrument's reference band.")

    @field_validator("bands")
    @classmethod
    def _bands(cls, bands: list[str]) -> list[str]:
        return [get_band(check_band(b)).name for b in bands]

    @field_validator("band")
    @classmethod
    def _band(cls, band: str) -> str:
        return check_path_component(band, "[anchor] external map band")

    @field_validator("psf")
    @classmethod
    def _psf(cls, psf: str) -> str:
        from jwstgal.psfs import check_psf_name

        return check_psf_name(psf)


Instrument = Literal["nircam", "miri"]


class AnchorConfig(Strict):
    """The ``[anchor]`` table: the absolute background of every band (anchor_data.py).

    Per instrument, the reference band is fitted against the first external map found (in the
    order given); every other band is fitted against the reference band at ``internal_psf``.
    """

    reference: dict[Instrument, str] = Field(
        default_factory=dict, description="Reference band per instrument, e.g. "
        "{nircam = 'F300M', miri = 'F770W'}; an instrument without one is not anchored.")
    external: dict[Instrument, list[ExternalMap]] = Field(
        default_factory=dict, description="External maps per instrument, in order of preference, "
        "e.g. {miri = [{band = 'irac4', psf = 'gauss4'}, {band = 'wise3', psf = 'gauss15'}]}.")
    internal_psf: dict[Instrument, str] = Field(
        default_factory=dict, description="Common resolution of the internal fits per instrument "
        "(a band or gauss<FWHM>), e.g. {nircam = 'F300M', miri = 'F2100W'}.")
    fit_range: tuple[float, float] = Field((1.0, 95.0), description="Percentiles of the reference "
                                           "intensity spanned by the bins.")
    n_bins: int = Field(20, ge=3, le=200, description="Bins of the reference intensity.")
    min_per_bin: int = Field(10, ge=1, description="Least pixels for a bin to be used.")
    clip_sigma: float = Field(3.0, gt=0, description="Bins further from the line (in errors) are "
                              "dropped and the line refitted.")
    slope_range: tuple[float, float] = Field(
        (0.2, 5.0), description="Plausible slopes of the reference band against an external map; a "
        "fit outside (a map in other units, a wrong map) is not used and the next map is tried.")
    colour_term: bool = Field(
        False, description="Fit a line and a colour term (a quadratic) instead of a line. On "
        "simulated band pairs of changing colour it is no more accurate on average "
        "(tests/test_anchor_coverage.py); it may help where a band's colour changes smoothly with "
        "brightness.")
    regions: int = Field(2, ge=1, le=5, description="The field is cut into regions x regions parts, "
                         "each fitted alone; the spread of their offsets is the systematic error "
                         "(1: none is measured).")

    @field_validator("reference")
    @classmethod
    def _reference(cls, ref: dict[str, str]) -> dict[str, str]:
        out = {}
        for inst, band in ref.items():
            b = get_band(check_band(band))
            if b.instrument != inst:
                msg = f"reference {band!r} is a {b.instrument.upper()} band, not a {inst.upper()} one"
                raise ValueError(msg)
            out[inst] = b.name
        return out

    @field_validator("internal_psf")
    @classmethod
    def _internal(cls, psfs: dict[str, str]) -> dict[str, str]:
        from jwstgal.psfs import check_psf_name

        return {k: check_psf_name(v) for k, v in psfs.items()}

    @model_validator(mode="after")
    def _complete(self) -> AnchorConfig:
        for inst, ref in self.reference.items():
            if not self.external.get(inst):
                msg = f"[anchor] reference of {inst} is set but external.{inst} lists no map"
                raise ValueError(msg)
            if not any(not m.bands or ref in m.bands for m in self.external[inst]):
                msg = (f"[anchor] no map of external.{inst} anchors the reference {ref}: give one "
                       f"map no 'bands' (or list {ref} in its bands)")
                raise ValueError(msg)
        for inst, maps in self.external.items():
            for m in maps:
                if other := [b for b in m.bands if get_band(b).instrument != inst]:
                    msg = (f"[anchor] external.{inst} map {m.band!r} lists {', '.join(other)}, not "
                           f"{inst.upper()} bands")
                    raise ValueError(msg)
        if self.fit_range[0] >= self.fit_range[1] or not 0 <= self.fit_range[0] < self.fit_range[1] <= 100:
            msg = f"[anchor] fit_range must be two increasing percentiles in 0-100, got {self.fit_range}"
            raise ValueError(msg)
        if not 0 < self.slope_range[0] < self.slope_range[1] < float("inf"):
            msg = f"[anchor] slope_range must be two increasing positive slopes, got {self.slope_range}"
            raise ValueError(msg)
        return self

    def key_dump(self) -> dict[str, Any]:
        """The settings that enter anchoring's input key.

        ``slope_range`` is left out at its default, so anchoring done before it existed stays done.
        ``colour_term`` and ``regions`` are always in: anchoring made before the systematic errors
        existed is remade.
        """
        return self.model_dump(exclude={"slope_range"} if self.slope_range == (0.2, 5.0) else None)

    @property
    def psfs(self) -> list[str]:
        """Every resolution anchoring convolves to."""
        out = [m.psf for maps in self.external.values() for m in maps]
        return out + list(self.internal_psf.values())


class CompareTolerances(Strict):
    """``[release.compare_tolerances]``: largest release-to-release changes that are not flagged."""

    flux_ratio: float = Field(0.02, gt=0, description="Largest |median flux ratio - 1|.")
    shift_mas: float = Field(10.0, gt=0, description="Largest sky shift (mas).")
    background: float = Field(0.01, gt=0, description="Largest background change (MJy/sr).")
    coverage: float = Field(0.05, gt=0, description="Largest change of the covered fraction.")


class ReleaseConfig(Strict):
    """The ``[release]`` table."""

    remove_bloat: bool = Field(True, description="Drop VAR_* and CON extensions from released "
                               "copies (coverage is released as its own map).")
    include_convolved: bool = Field(True, description="Release every rung of the resolution ladder.")
    include_segm: bool = Field(True, description="Release stage 3's segmentation maps.")
    include_crf: bool = Field(False, description="Release the per-exposure crf files (with the "
                              "absolute alignment pushed back into their WCS).")
    include_alignment: bool = Field(True, description="Release each band's absolute-alignment table "
                                    "(matched stars, residuals) and its astrometric catalogue.")
    include_fields: bool = Field(True, description="Release the per-field mosaics (field_mosaics).")
    include_backgrounds: bool = Field(True, description="Release the dedicated background fields' "
                                      "mosaics (bgr_mosaics).")
    include_qa: bool = Field(True, description="Release each band's QA figures (quicklooks, "
                             "alignment residuals, destriping and level-matching plots).")
    naming: Literal["suite", "hlsp"] = Field(
        "suite", description="File names: 'suite' (<target>_<instrument>_lv3_<band>_...) or 'hlsp' "
        "(MAST's hlsp_<project>_jwst_<instrument>_<target>_<band>_<version>_..., lower case).")
    hlsp_project: str = Field("", description="The project's short name in HLSP file names "
                              "(lower-case letters, digits and '-'), needed with naming = 'hlsp'.")
    overwrite: bool = Field(False, description="Replace files already in the release.")
    compare_with: str = Field("", description="A previous release folder to compare the new one "
                              "with after prepare_release.py (exit code 1 beyond the tolerances).")
    compare_tolerances: CompareTolerances = Field(default_factory=lambda: CompareTolerances(),
                                                  description="Largest changes not flagged.")

    @field_validator("hlsp_project")
    @classmethod
    def _project(cls, value: str) -> str:
        if value and not re.fullmatch(r"[a-z0-9][a-z0-9-]{0,31}", value):
            msg = (f"hlsp_project {value!r}: lower-case letters, digits and '-' only (at most 32, "
                   "e.g. 'phangs-jwst')")
            raise ValueError(msg)
        return value

    @model_validator(mode="after")
    def _hlsp_needs_a_project(self) -> ReleaseConfig:
        if self.naming == "hlsp" and not self.hlsp_project:
            msg = "naming = 'hlsp' needs hlsp_project (e.g. 'phangs-jwst')"
            raise ValueError(msg)
        return self

    def options(self) -> dict[str, Any]:
        """The keyword arguments of :func:`jwstgal.release.build_release` this table sets."""
        return self.model_dump(exclude={"compare_with", "compare_tolerances"})
