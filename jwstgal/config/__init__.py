"""The configuration of a run: the science config, the machine config, and how both are validated.

- :mod:`~jwstgal.config.science`: ``config/config.toml`` (steps' tables come from their modules);
- :mod:`~jwstgal.config.local`: ``config/local.toml``;
- :mod:`~jwstgal.config.loader`: reading, validating, resolving paths (:func:`load_config`);
- :mod:`~jwstgal.config.jwst`: the ``lvN_parameters`` tables checked against the jwst step specs;
- :mod:`~jwstgal.config.messages`: validation errors as one line per problem.

Selector resolution lives below the config, in :mod:`jwstgal.settings` (``resolve``) and
:mod:`jwstgal.stages` (``stage_parameters``), and is re-exported here.
"""

from jwstgal.config.jwst import check_jwst_parameters
from jwstgal.config.loader import (
    REPO_ROOT,
    RunConfig,
    config_hash,
    load_config,
    load_local,
    load_science,
    validate_science,
)
from jwstgal.config.local import LocalConfig, SlurmConfig
from jwstgal.config.products import AnchorConfig, ConvolveConfig, KernelsConfig, ReleaseConfig
from jwstgal.config.science import DownloadConfig, PipelineConfig, ScienceConfig, SimulationConfig
from jwstgal.settings import GROUP_SELECTORS, resolve
from jwstgal.stages import STAGE_PIPELINES, stage_parameters

__all__ = [
    "GROUP_SELECTORS",
    "REPO_ROOT",
    "STAGE_PIPELINES",
    "AnchorConfig",
    "ConvolveConfig",
    "DownloadConfig",
    "KernelsConfig",
    "LocalConfig",
    "PipelineConfig",
    "ReleaseConfig",
    "RunConfig",
    "ScienceConfig",
    "SimulationConfig",
    "SlurmConfig",
    "check_jwst_parameters",
    "config_hash",
    "load_config",
    "load_local",
    "load_science",
    "resolve",
    "stage_parameters",
    "validate_science",
]
