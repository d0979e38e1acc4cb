"""Validation errors as people read them: file, dotted key, value, what is allowed, did you mean."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from jwstgal.settings import did_you_mean

#: Keys whose values are never repeated in a message.
SECRET_KEYS = frozenset({"api_key"})


def model_at(model: type[BaseModel] | None, loc: tuple[Any, ...]) -> type[BaseModel] | None:
    """Walk a pydantic model class along an error location to the model that owns the last key."""
    skip_key = False
    for part in loc[:-1]:
        if skip_key:  # a key of a dict of models (e.g. a selector under destripe.override)
            skip_key = False
            continue
        if model is None or not isinstance(part, str) or part not in model.model_fields:
            return None
        ann = model.model_fields[part].annotation
        skip_key = getattr(ann, "__origin__", None) is dict
        candidates = [ann, *getattr(ann, "__args__", ())]
        model = next((c for c in candidates
                      if isinstance(c, type) and issubclass(c, BaseModel)), None)
    return model


def format_errors(err: ValidationError, path: Path, root: type[BaseModel]) -> str:
    """One line per problem of a validation error: file, dotted key, value, allowed, did you mean."""
    lines = []
    for e in err.errors(include_url=False):
        loc = tuple(e["loc"])
        key = ".".join(str(p) if not isinstance(p, int) else f"[{p}]" for p in loc).replace(".[", "[")
        if e["type"] == "extra_forbidden":
            owner = model_at(root, loc)
            allowed = [f for f in owner.model_fields if f != "repeat_tables"] if owner else []  # not a table
            bad = str(loc[-1])
            lines.append(f"{path}: unknown key {key!r} (allowed: {', '.join(allowed)})"
                         f"{did_you_mean(bad, allowed)}")
        elif e["type"] == "missing":
            lines.append(f"{path}: missing required key {key!r}")
        else:
            msg = e["msg"].removeprefix("Value error, ")
            whole_table = e["type"] == "value_error" and (not loc or isinstance(e["input"], dict))
            secret = bool(loc) and str(loc[-1]) in SECRET_KEYS
            shown = "" if whole_table else (": value not shown (secret)" if secret
                                            else f": value {e['input']!r}")
            lines.append(f"{path}: key {key!r}{shown}: {msg}" if key else f"{path}: {msg}")
    return "\n".join(lines)
