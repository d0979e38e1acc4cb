"""Settings models and selectors: the base every config table and step settings model builds on.

A *selector* names where a value applies: a target, a band (``F200W``), a band type
(``nircam_short``, ``nircam_long``) or an instrument (``nircam``, ``miri``); the most specific one
wins (target > band > band type > instrument). Selectors appear in two styles:

- in the jwst ``lvN_parameters`` tables, as a value keyed by selectors
  (``searchrad = { nircam = 1.0, F770W = 2.0 }``, :func:`resolve`);
- in every step table, as override tables that change some settings
  (``[level_match.override.miri] binning = 8``, :meth:`StepSettings.for_band`).

This module is below the config and the steps: it imports neither.
"""

from __future__ import annotations

import difflib
import re
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, create_model

from jwstgal.bands import Band, get_band

#: Instrument-level selector keys.
GROUP_SELECTORS: tuple[str, ...] = ("nircam", "nircam_short", "nircam_long", "miri")

#: What :func:`resolve` returns when no selector matches.
MISSING = object()
#: One plain path component (a file or folder name): what a name that becomes a path must be.
PATH_COMPONENT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,199}")


def check_path_component(value: str, what: str) -> str:
    """``value`` if it is one plain path component, else ``ValueError`` saying what is allowed."""
    if not PATH_COMPONENT.fullmatch(value) or ".." in value:
        msg = (f"{what} {value!r} becomes a folder name: use letters, digits and '._+-' only "
               "(no '/', no '..', not starting with '.' or '-')")
        raise ValueError(msg)
    return value


class Strict(BaseModel):
    """Base of all config tables: unknown keys are errors, values are not coerced, nothing mutates."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


def did_you_mean(value: str, allowed: list[str] | tuple[str, ...]) -> str:
    """``"; did you mean 'x'?"`` for the closest allowed value, or ``""``."""
    close = difflib.get_close_matches(value, list(allowed), n=1, cutoff=0.6)
    if not close:
        close = [a for a in allowed if a.lower() == value.lower()]
    return f"; did you mean {close[0]!r}?" if close else ""


def check_band(name: str) -> str:
    """The canonical name of a band (``ValueError`` naming the allowed bands otherwise)."""
    try:
        return get_band(name).name
    except KeyError as err:
        raise ValueError(err.args[0]) from None


def resolve(value: Any, target: str, band: Band) -> Any:
    """Resolve a possibly selector-keyed value for one target and band.

    Parameters
    ----------
    value : Any
        A plain value, or a dict keyed by selectors (target, band, band type, instrument), possibly
        nested.
    target : str
        Target name.
    band : Band
        Band being processed.

    Returns
    -------
    Any
        The most specific matching value, or :data:`MISSING` if none matches.
    """
    if not isinstance(value, dict):
        return value
    for key in (target, *band.selectors):
        if key in value:
            return resolve(value[key], target, band)
    return MISSING


def name_skipped(name: str, patterns: list[str] | tuple[str, ...]) -> bool:
    """Whether a file name matches an ``obs_to_skip`` entry.

    An entry matches anywhere in the name: a plain one as a substring (the original scripts'
    rule), one with glob characters (``*?[``) as a glob (pjpipe's), e.g. ``jw02107001001_0210?_00001``.
    """
    from fnmatch import fnmatchcase

    return any(fnmatchcase(name, f"*{p}*") if any(c in p for c in "*?[") else p in name for p in patterns)


#: A length in pixels of the band's detector, as the original scripts wrote it (``"5pix"``).
_PIXELS = re.compile(r"\s*([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*pix\s*", re.IGNORECASE)


def pixel_length(value: Any) -> float | None:
    """The number of pixels in a ``"<n>pix"`` string (None for anything else)."""
    if isinstance(value, str) and (m := _PIXELS.fullmatch(value)):
        return float(m.group(1))
    return None


def added_field(default: Any, description: str, **kwargs: Any) -> Any:
    """A settings field added after runs were made with its step.

    While it keeps its default it is left out of the step's hash key (:meth:`StepSettings.key_params`),
    so a finished run stays complete; setting it reruns the step as any other change does. Use it
    only where the default reproduces what the step did before the field existed.
    """
    return Field(default, description=description, json_schema_extra={"added": True}, **kwargs)


class StepSettings(Strict):
    """Base of a step's settings model (one ``[<step>]`` config table).

    The config table of a step is :meth:`table`: these settings plus
    ``[<step>.override.<selector>]`` tables that change some of them for a target, a band, a band
    type or an instrument. ``scope = "target"`` marks a step solved once per target, whose overrides
    may name targets only.
    """

    scope: ClassVar[str] = "band"
    _table: ClassVar[type[BaseModel] | None] = None

    @classmethod
    def table(cls) -> type[BaseModel]:
        """The config-table model: the settings plus ``override`` (cached per class)."""
        if cls.__dict__.get("_table") is None:
            fields = {k: (f.annotation | None, Field(None, description=f.description))
                      for k, f in cls.model_fields.items()}
            override = create_model(f"{cls.__name__}Override", __base__=Strict, **fields)
            cls._table = create_model(
                f"{cls.__name__}Table", __base__=cls, __doc__=cls.__doc__,
                override=(dict[str, override], Field(  # type: ignore[valid-type]
                    default_factory=dict, description="Selector -> settings that differ there "
                    "(target > band > nircam_short/nircam_long > nircam/miri).")))
        return cls._table

    def for_band(self, target: str, band: Band | None) -> dict[str, Any]:
        """The settings of one target/band (``band=None``: the target alone), overrides applied."""
        out = {k: v for k, v in self.model_dump().items() if k != "override"}
        overrides: dict[str, BaseModel] = getattr(self, "override", {})
        for sel in (*reversed(band.selectors if band else ()), target):
            if sel in overrides:
                out.update(overrides[sel].model_dump(exclude_none=True))
        return out

    @classmethod
    def key_params(cls, params: dict[str, Any]) -> dict[str, Any]:
        """The part of resolved settings that enters a step's hash key (see :func:`added_field`)."""
        out = dict(params)
        for name, f in cls.model_fields.items():
            extra = f.json_schema_extra if isinstance(f.json_schema_extra, dict) else {}
            if extra.get("added") and out.get(name) == f.get_default(call_default_factory=True):
                out.pop(name, None)
        return out

    @classmethod
    def check_selectors(cls, table: BaseModel, step: str, targets: list[str], selectors: list[str]
                        ) -> None:
        """Check the override selectors of a validated table (``ValueError`` naming the bad one)."""
        allowed = targets if cls.scope == "target" else selectors
        for sel in getattr(table, "override", {}):
            if sel not in allowed:
                what = ("a target: this step is solved once per target" if cls.scope == "target"
                        else f"a target, band or one of {', '.join(GROUP_SELECTORS)}")
                msg = (f"[{step}.override] selector {sel!r} is not {what}"
                       f"{did_you_mean(sel, allowed)}")
                raise ValueError(msg)
