"""The post-processing tables of the science configuration: kernels, the ladder, anchoring, release.

``[kernels]``, ``[convolve]``, ``[anchor]`` and ``[release]`` (with ``[release.compare_tolerances]``):
what make_kernels.py, convolve_data.py, anchor_data.py, prepare_release.py and compare_releases.py
do. Strict pydantic models like every table (unknown keys are errors).
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from jwstgal.settings import Strict

# the tables of the post-mosaic steps are their steps' own; re-exported here
from jwstgal.steps.anchor import AnchorConfig, ExternalMap  # noqa: F401
from jwstgal.steps.convolve import ConvolveConfig  # noqa: F401
from jwstgal.steps.kernels import KernelsConfig  # noqa: F401


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
