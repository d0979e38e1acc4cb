"""Atomic file writing and provenance stamping of output FITS headers.

Every product the suite writes goes through :func:`atomic_path` (write to a temporary name in the same
directory, then rename), so a crash never leaves a half-written file under a final name, and carries
:func:`stamp_header` keywords: software versions, the config hash and the step's parameters.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import uuid
from collections.abc import Iterator, Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

from astropy.io import fits

from jwstgal import __version__

#: Packages whose versions are recorded in every product.
_VERSIONED = ("jwst", "stcal", "stdatamodels", "stpipe", "crds", "gwcs", "asdf", "drizzle", "tweakwcs",
              "astropy", "numpy", "scipy", "photutils", "reproject", "scikit-image", "pypher", "stpsf",
              "poppy")


@contextlib.contextmanager
def atomic_path(final: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``final``; rename it onto ``final`` only on success.

    Parameters
    ----------
    final : path-like
        The path the product must end up at.

    Yields
    ------
    pathlib.Path
        Where to write. The suffix of ``final`` is kept, so writers that infer the format from the
        extension keep working.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp_path = final.parent / f".{final.stem}.{uuid.uuid4().hex[:12]}.tmp{final.suffix}"
    try:
        yield tmp_path
        tmp_path.replace(final)
    finally:
        tmp_path.unlink(missing_ok=True)


def write_text_atomic(path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` to ``path`` atomically and return the path."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def write_bytes_atomic(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically and return the path."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def software_versions() -> dict[str, str]:
    """Return the versions of this suite and of the pipeline packages it drives."""
    return dict(_versions())


@functools.cache
def _versions() -> tuple[tuple[str, str], ...]:
    """The versions, looked up once per process.

    Each lookup parses package metadata and leaves reference cycles behind: a worker stamping
    exposure after exposure would pile them up.
    """
    out = [("jwstgal", __version__)]
    for name in _VERSIONED:
        try:
            out.append((name, metadata.version(name)))
        except metadata.PackageNotFoundError:
            out.append((name, "absent"))
    return tuple(out)


def hash_params(params: Any) -> str:
    """Stable short SHA-256 of a JSON-serialisable structure (keys sorted)."""
    blob = json.dumps(params, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


#: Steps whose first five letters are another's: their own keyword.
_KEYWORDS = {"astrometric_align": "JG_ALIGN", "simulate_external": "JG_SIMEX"}


def step_keyword(step: str) -> str:
    """The 8-character keyword of a step's parameter hash: ``JG_`` + its name's first 5 letters.

    ``level_match`` -> ``JG_LEVEL``, ``stack_destripe`` -> ``JG_STACK``, ``lv1`` -> ``JG_LV1``.
    A repeat ``<step>_<n>`` keeps its own: the first 4 letters and its number (``destripe_2`` ->
    ``JG_DEST2``), so the second run of a step never overwrites the first one's record; and
    ``astrometric_align`` is ``JG_ALIGN`` (``JG_ASTRO`` is ``astrometric_catalog``'s).
    """
    if step in _KEYWORDS:
        return _KEYWORDS[step]
    base, _, n = step.rpartition("_")
    if base and n.isdigit() and len(n) == 1:
        return f"JG_{base.replace('_', '').upper()[:4]}{n}"
    return f"JG_{step.replace('_', '').upper()[:5]}"


def stamp_header(
    header: fits.Header,
    *,
    step: str,
    params: Mapping[str, Any] | None = None,
    config_hash: str | None = None,
) -> fits.Header:
    """Record software versions, config hash and step parameters in a FITS header.

    Standard 8-character keywords (so that jwst can re-serialise them) hold the suite version
    (``JGAL_VER``), the config hash (``JGAL_CFG``) and a hash of each step's parameters
    (``JG_<STEP>``); ``HISTORY`` cards carry the full parameters and all package versions as JSON.

    Parameters
    ----------
    header : astropy.io.fits.Header
        Header to update in place (and returned for convenience).
    step : str
        Name of the step that produced the data (its ``[pipeline.steps]`` key for a pipeline step;
        :func:`step_keyword` abbreviates it for the keyword).
    params : mapping, optional
        Parameters of that step.
    config_hash : str, optional
        Hash of the whole validated configuration of the run.

    Returns
    -------
    astropy.io.fits.Header
        The same header.
    """
    header["JGAL_VER"] = (__version__, "jwstgal version")
    if config_hash:
        header["JGAL_CFG"] = (config_hash, "jwstgal config hash")
    header[step_keyword(step)] = (hash_params(params or {}), f"jwstgal {step} parameter hash")
    header.add_history(f"jwstgal {step} versions: {json.dumps(software_versions())}")
    header.add_history(f"jwstgal {step} parameters: {json.dumps(params or {}, default=str)}")
    return header


def read_provenance(header: fits.Header) -> dict[str, dict[str, Any]]:
    """The provenance :func:`stamp_header` recorded, read back whole.

    FITS splits a long ``HISTORY`` entry over several 72-character cards; the pieces are joined
    again (an entry starts with ``jwstgal <step> versions:`` or ``... parameters:``).

    Returns
    -------
    dict
        ``{step: {"versions": {...}, "parameters": {...}}}``, the last record of each step.
    """
    import re

    entries: list[str] = []
    for card in header.get("HISTORY", []):
        text = str(card)
        if re.match(r"jwstgal \S+ (versions|parameters): ", text) or not entries:
            entries.append(text)
        else:
            entries[-1] += text
    out: dict[str, dict[str, Any]] = {}
    for entry in entries:
        m = re.match(r"jwstgal (\S+) (versions|parameters): (.*)", entry, flags=re.S)
        if m is None:
            continue
        try:
            out.setdefault(m.group(1), {})[m.group(2)] = json.loads(m.group(3))
        except json.JSONDecodeError:
            continue                              # another tool's HISTORY, or a cut card
    return out


def stamp_fits_file(
    path: str | os.PathLike[str],
    *,
    step: str,
    params: Mapping[str, Any] | None = None,
    config_hash: str | None = None,
) -> None:
    """Stamp the primary header of an existing FITS file in place (used on temporary outputs)."""
    with fits.open(path, mode="update") as hdul:
        stamp_header(hdul[0].header, step=step, params=params, config_hash=config_hash)
