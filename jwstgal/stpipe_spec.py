"""stpipe ``spec`` strings generated from the suite's settings models, and parameters read back.

A step's settings are declared once, in its pydantic model (:mod:`jwstgal.steps`); :func:`settings_spec`
writes the configobj spec stpipe needs from it (defaults, choices, bounds, descriptions) and
:func:`settings_of` validates a step's parameters with the same model. Settings that are tables in a
config (``passes``) are JSON strings in the spec.
"""

from __future__ import annotations

import json
import types
import typing
from typing import Any

import annotated_types

from jwstgal.settings import StepSettings

#: stpipe's own parameters: a settings field may not take one of these names.
STPIPE_RESERVED = frozenset({"pre_hooks", "post_hooks", "output_file", "output_dir", "output_ext",
                             "output_use_model", "output_use_index", "save_results", "skip", "suffix",
                             "search_output_file", "input_dir"})


def _quote(value: Any) -> str:
    return json.dumps(str(value))


def _bounds(field: Any) -> str:
    out = ""
    for m in field.metadata:
        if isinstance(m, annotated_types.Ge | annotated_types.Gt):
            out += f", min={getattr(m, 'ge', getattr(m, 'gt', None))}"
        if isinstance(m, annotated_types.Le | annotated_types.Lt):
            out += f", max={getattr(m, 'le', getattr(m, 'lt', None))}"
    return out


def _kind(ann: Any, default: Any, bounds: str) -> str | None:
    """The configobj check of one annotation (None: no configobj form, the value is JSON)."""
    origin, args = typing.get_origin(ann), typing.get_args(ann)
    if origin in (typing.Union, types.UnionType) and type(None) in args and len(args) == 2:
        inner = next(a for a in args if a is not type(None))
        kind = _kind(inner, default, bounds)        # optional: None stands for "not set"
        return None if kind is None or default is not None else kind
    scalar = {bool: "boolean", int: "integer", float: "float"}
    if ann in scalar:
        fmt = "None" if default is None else str(default)
        return f"{scalar[ann]}(default={fmt}{bounds if ann is not bool else ''})"
    if ann is str:
        return f"string(default={'None' if default is None else _quote(default)})"
    if origin is typing.Literal:
        return f"option({', '.join(map(_quote, args))}, default={_quote(default)})"
    if origin is list and args:
        item = typing.get_args(args[0])[0] if typing.get_origin(args[0]) is typing.Annotated else args[0]
        items = "None" if default is None else None
        if item in (int, float):
            items = items or f"list({', '.join(map(str, default))})"
            return f"{'int' if item is int else 'float'}_list(default={items})"
        if item is str or typing.get_origin(item) is typing.Literal:
            items = items or f"list({', '.join(map(_quote, default))})"
            return f"string_list(default={items})"
    return None


def _spec_line(name: str, field: Any) -> str:
    """One configobj spec line for a settings field (strict bounds are checked by the model)."""
    kind = _kind(field.annotation, field.get_default(call_default_factory=True), _bounds(field))
    if kind is None:  # nested tables (passes, mappings): JSON, None = the model's default
        return f"{name} = string(default=None)  # JSON; {field.description}"
    return f"{name} = {kind}  # {field.description}"


def settings_spec(model: type[StepSettings], exclude: tuple[str, ...] = ()) -> str:
    """The stpipe ``spec`` of a settings model: one configobj line per field, in the model's order.

    Raises
    ------
    ValueError
        A field would shadow one of stpipe's own parameters.
    """
    lines = []
    for name, field in model.model_fields.items():
        if name in exclude:
            continue
        if name in STPIPE_RESERVED:
            msg = f"{model.__name__}.{name} shadows the stpipe parameter of that name"
            raise ValueError(msg)
        lines.append(_spec_line(name, field))
    return "\n" + "\n".join(f"    {line}" for line in lines) + "\n"


def settings_of(step: Any, model: type[StepSettings], exclude: tuple[str, ...] = ()) -> StepSettings:
    """The step's parameters validated by ``model`` (JSON strings parsed; None = model default)."""
    values: dict[str, Any] = {}
    for name, field in model.model_fields.items():
        if name in exclude:
            continue
        value = getattr(step, name)
        if value is None:
            continue
        if isinstance(value, str) and " = string(default=None)  # JSON" in _spec_line(name, field):
            try:
                value = json.loads(value)
            except json.JSONDecodeError as exc:
                msg = f"{type(step).__name__}: --{name} is not valid JSON ({exc.msg}): {value!r}"
                raise ValueError(msg) from exc
        values[name] = list(value) if isinstance(value, list | tuple) else value
    return model(**values)
