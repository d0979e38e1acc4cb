"""Data shipped with jwstgal: astrometric catalogues, stpsf instrument files, example configs.

In a source checkout they are the repository's folders (``alignment/``, ``PSF/stpsf_data/``,
``config/``), where users find and edit them; installed from a wheel they are package data of
``jwstgal.data`` (read only). :func:`data_path` finds them either way; nothing is ever written there.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

_ROOT = Path(__file__).resolve().parents[2]
_FOLDERS = {"alignment": "alignment", "stpsf_data": "PSF/stpsf_data", "config": "config"}


def checkout_root() -> Path | None:
    """The repository root when jwstgal runs from a source checkout, else None (an installed wheel)."""
    if (_ROOT / "pyproject.toml").is_file() and (_ROOT / "jwstgal" / "__init__.py").is_file():
        return _ROOT
    return None


def data_path(kind: str) -> Path:
    """Folder of shipped data: ``alignment``, ``stpsf_data`` or ``config``.

    Raises
    ------
    KeyError
        For any other name.
    """
    if kind not in _FOLDERS:
        msg = f"no shipped data {kind!r} (known: {', '.join(_FOLDERS)})"
        raise KeyError(msg)
    root = checkout_root()
    if root is not None:
        return root / _FOLDERS[kind]
    return Path(str(resources.files("jwstgal.data") / kind))
