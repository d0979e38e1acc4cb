"""Check the jwst pipeline parameter tables (``lvN_parameters``) against the jwst step specs."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from jwstgal.errors import ConfigError
from jwstgal.settings import did_you_mean, pixel_length
from jwstgal.stages import MANAGED_PIPELINE_KEYS, MANAGED_RUN_KEYS, STAGE_PIPELINES, pipeline_class

log = logging.getLogger(__name__)


def _leaves(value: Any, where: str) -> list[tuple[str, Any]]:
    """The plain values of a possibly selector-keyed value, each with its dotted key."""
    if isinstance(value, dict):
        return [leaf for k, v in value.items() for leaf in _leaves(v, f"{where}.{k}")]
    return [(where, value)]


def value_problem(spec: str, value: Any) -> str:
    """Why ``value`` does not pass a jwst/stpipe spec string such as ``float(min=0.0, max=1.0)``.

    Empty when it passes. A ``"<n>pix"`` length passes where a float is asked for (it is converted
    to arcsec per band, :func:`jwstgal.stages.stage_parameters`).
    """
    from configobj.validate import ValidateError, Validator, VdtMissingValue

    if pixel_length(value) is not None and spec.strip().startswith("float("):
        return ""
    if isinstance(value, bool) and not spec.strip().startswith("boolean("):
        return "a boolean where the step asks for another type"
    try:
        Validator().check(spec, value)
    except VdtMissingValue:
        return ""
    except ValidateError as err:
        return str(err) or type(err).__name__
    except Exception as err:  # a spec this checker does not understand is not held against the value
        log.debug("cannot check %r against %r: %s", value, spec, err)
    return ""


def check_jwst_parameters(science: Any, path: Path) -> None:
    """Check every ``lvN_parameters`` key and value against the jwst pipeline and step specs.

    Values are checked against the spec (type, options, min/max) of the step parameter they set,
    each selector's value on its own, so a wrong value fails at load time rather than hours later in
    the pipeline.

    Raises
    ------
    ConfigError
        Naming the unknown step or parameter, the allowed names and the closest match, or the
        value, the spec it fails and why.
    """
    problems = []
    for stage in STAGE_PIPELINES:
        table = getattr(science, stage)
        if not table:
            continue
        pipe = pipeline_class(stage)
        pipe_keys = sorted(set(pipe.load_spec_file().keys()) - MANAGED_RUN_KEYS)
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
                spec = pipe.step_defs[key].load_spec_file()
                problems += _value_problems(spec, value, f"{stage}.{key}", pipe.step_defs[key].__name__,
                                            path)
            elif key in MANAGED_RUN_KEYS:
                problems.append(f"{path}: key '{stage}.{key}' is set by jwstgal itself and may not "
                                "be configured")
            elif key in pipe_keys:
                problems += _value_problems(pipe.load_spec_file(), {key: value}, stage, pipe.__name__,
                                            path)
            else:
                allowed = step_names + pipe_keys
                problems.append(f"{path}: unknown key '{stage}.{key}': not a step of "
                                f"{pipe.__name__} nor one of its parameters (steps: "
                                f"{', '.join(step_names)}){did_you_mean(key, allowed)}")
    if problems:
        raise ConfigError("\n".join(problems))


def _value_problems(spec: Any, table: dict[str, Any], where: str, owner: str, path: Path) -> list[str]:
    """Problems of the values in ``table`` against ``spec`` (a ConfigObj of spec strings)."""
    problems = []
    for param, value in table.items():
        check = spec.get(param)
        if not isinstance(check, str):
            continue
        for key, leaf in _leaves(value, f"{where}.{param}"):
            if why := value_problem(check, leaf):
                problems.append(f"{path}: key '{key}': value {leaf!r} is not valid for {owner}'s "
                                f"{param} = {check} ({why})")
    return problems
