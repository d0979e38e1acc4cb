"""Check the jwst pipeline parameter tables (``lvN_parameters``) against the jwst step specs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from jwstgal.errors import ConfigError
from jwstgal.settings import did_you_mean
from jwstgal.stages import MANAGED_PIPELINE_KEYS, STAGE_PIPELINES, pipeline_class


def check_jwst_parameters(science: Any, path: Path) -> None:
    """Check every ``lvN_parameters`` key against the jwst pipeline and step specs.

    Raises
    ------
    ConfigError
        Naming the unknown step or parameter, the allowed names and the closest match.
    """
    problems = []
    for stage in STAGE_PIPELINES:
        table = getattr(science, stage)
        if not table:
            continue
        pipe = pipeline_class(stage)
        pipe_keys = sorted(set(pipe.load_spec_file().keys()) - MANAGED_PIPELINE_KEYS)
        step_names = list(pipe.step_defs)
        for key, value in table.items():
            if key in step_names:
                if not isinstance(value, dict):
                    problems.append(f"{path}: key '{stage}.{key}': value {value!r}: a step's "
                                    f"parameters must be a table, e.g. [{stage}.{key}]")
                    continue
                allowed = sorted(pipe.step_defs[key].load_spec_file().keys())
                allowed = [a for a in allowed if a not in MANAGED_PIPELINE_KEYS]
                problems += [
                    f"{path}: unknown key '{stage}.{key}.{p}': {pipe.step_defs[key].__name__} has "
                    f"no parameter {p!r} (allowed: {', '.join(allowed)}){did_you_mean(p, allowed)}"
                    for p in value if p not in allowed
                ]
            elif key in MANAGED_PIPELINE_KEYS:
                problems.append(f"{path}: key '{stage}.{key}' is set by jwstgal itself and may not "
                                "be configured")
            elif key not in pipe_keys:
                allowed = step_names + pipe_keys
                problems.append(f"{path}: unknown key '{stage}.{key}': not a step of "
                                f"{pipe.__name__} nor one of its parameters (steps: "
                                f"{', '.join(step_names)}){did_you_mean(key, allowed)}")
    if problems:
        raise ConfigError("\n".join(problems))
