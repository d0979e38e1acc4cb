"""The post-processing tables of the science configuration: kernels, the ladder, anchoring, release.

``[kernels]``, ``[convolve]``, ``[anchor]`` and ``[release]`` (with ``[release.compare_tolerances]``):
what make_kernels.py, convolve_data.py, anchor_data.py, prepare_release.py and compare_releases.py
do. Strict pydantic models like every table (unknown keys are errors).
"""

from __future__ import annotations

# the tables of the post-mosaic steps are their steps' own; re-exported here
from jwstgal.steps.anchor import AnchorConfig, ExternalMap  # noqa: F401
from jwstgal.steps.convolve import ConvolveConfig  # noqa: F401
from jwstgal.steps.kernels import KernelsConfig  # noqa: F401
from jwstgal.steps.release import CompareTolerances, ReleaseConfig  # noqa: F401
