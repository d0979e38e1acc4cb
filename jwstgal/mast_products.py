"""What MAST lists, and what may be written from it.

Pure selection of observations and products, server-supplied names checked before they touch the
disk, and verification of what arrived.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field
from fnmatch import fnmatch
from pathlib import Path
from typing import Any

import numpy as np
from astropy.table import Table

from jwstgal.errors import DownloadError
from jwstgal.settings import PATH_COMPONENT, name_skipped

#: Extensions of the products MAST serves for JWST imaging (anything else is refused).
PRODUCT_SUFFIXES = (".fits", ".json", ".ecsv", ".jpg", ".png", ".txt", ".csv", ".xml", ".asdf")
#: Bytes a transfer may run past the size MAST reported before it counts as corrupt.
SIZE_MARGIN = 65536


def name_key(name: str) -> str:
    """Target name normalised for matching: lower case, alphanumerics only, no zero padding.

    ``"NGC-628"``, ``"ngc0628"`` and ``"NGC 0628"`` all give ``"ngc628"``.
    """
    s = re.sub(r"[^a-z0-9]", "", str(name).lower())
    return re.sub(r"\d+", lambda m: str(int(m.group())), s)


def _col(table: Table, name: str) -> np.ndarray:
    return np.array([("" if np.ma.is_masked(v) else str(v)) for v in table[name]]) if len(table) else \
        np.array([], str)


def select_observations(obs: Table, *, target: str | None = None, instruments: Iterable[str] = (),
                        filters: Iterable[str] = ()) -> Table:
    """Observations of one target, instrument modes and filters.

    Parameters
    ----------
    obs : astropy.table.Table
        MAST observation rows (``target_name``, ``instrument_name``, ``filters``).
    target : str, optional
        Target name (compared with :func:`name_key`).
    instruments : iterable of str
        ``instrument_name`` values, e.g. ``NIRCAM/IMAGE`` (none = any).
    filters : iterable of str
        Filter names; a row matches if any of its ``;``-separated filters is listed (none = any).

    Returns
    -------
    astropy.table.Table
    """
    keep = np.ones(len(obs), bool)
    if target is not None and len(obs):
        keep &= np.array([name_key(t) == name_key(target) for t in _col(obs, "target_name")])
    inst = {i.upper() for i in instruments}
    if inst and len(obs):
        keep &= np.array([i.upper() in inst for i in _col(obs, "instrument_name")])
    flt = {f.upper() for f in filters}
    if flt and len(obs):
        keep &= np.array([bool(flt & set(f.upper().split(";"))) for f in _col(obs, "filters")])
    return obs[keep]


def select_products(products: Table, *, product_types: Iterable[str] = ("SCIENCE",),
                    subgroups: Iterable[str] = ("UNCAL",), calib_levels: Iterable[int] = (1,),
                    skip: Iterable[str] = (), patterns: Iterable[str] | None = None) -> Table:
    """Products to fetch, duplicates removed.

    Parameters
    ----------
    products : astropy.table.Table
        MAST product rows.
    product_types : iterable of str
        ``productType`` values (SCIENCE, PREVIEW, INFO, AUXILIARY).
    subgroups : iterable of str
        ``productSubGroupDescription`` values (UNCAL, RATE, CAL, ...); empty = any.
    calib_levels : iterable of int
        ``calib_level`` values.
    skip : iterable of str
        ``obs_to_skip`` entries: file-name substrings or globs never fetched
        (:func:`jwstgal.settings.name_skipped`).
    patterns : iterable of str, optional
        Keep only file names matching one of these globs (a prefix matches as ``prefix*``).

    Returns
    -------
    astropy.table.Table
    """
    if not len(products):
        return products
    names = _col(products, "productFilename")
    keep = np.isin(_col(products, "productType"), list(product_types))
    sub = [s.upper() for s in subgroups]
    if sub:
        keep &= np.isin(np.char.upper(_col(products, "productSubGroupDescription")), sub)
    keep &= np.isin(np.asarray(products["calib_level"]).astype(int), list(calib_levels))
    skip = tuple(skip)
    keep &= np.array([not name_skipped(str(n), skip) for n in names])
    if patterns is not None:
        pats = [p if any(c in p for c in "*?[") else f"{p}*" for p in patterns]
        keep &= np.array([any(fnmatch(n, p) for p in pats) for n in names])
    out = products[keep]
    _, first = np.unique(_col(out, "dataURI"), return_index=True)
    return out[np.sort(first)]


def verify_file(path: Path, size: int | None) -> str:
    """Why a downloaded file is not good ('' if it is): wrong size or failed FITS checksums."""
    if size is not None and size > 0 and path.stat().st_size != size:
        return f"size {path.stat().st_size} bytes, MAST reports {size}"
    if path.name.endswith((".fits", ".fits.part")):
        from astropy.io import fits

        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                with fits.open(path, checksum=True) as h:
                    for hdu in h:
                        _ = hdu.data  # read everything: the checksum covers the data
            bad = [str(w.message) for w in caught if "checksum" in str(w.message).lower()
                   or "datasum" in str(w.message).lower()]
            if bad:
                return f"FITS checksum failed ({bad[0]})"
        except (OSError, ValueError) as err:
            return f"not a readable FITS file ({err})"
    return ""


@dataclass
class DownloadPlan:
    """What one destination tree will receive."""

    dest: Path
    products: Table
    label: str = ""
    notes: list[str] = field(default_factory=list)

    @property
    def total_bytes(self) -> int:
        """Sum of the MAST-reported sizes."""
        return int(np.sum(np.asarray(self.products["size"], dtype=np.int64))) if len(self.products) else 0


def safe_name(value: Any, what: str, suffixes: tuple[str, ...] | None = None) -> str:
    """A server-supplied file or folder name, checked to be one plain path component.

    Parameters
    ----------
    value : Any
        The value from MAST (``obs_id``, ``productFilename``).
    what : str
        What it is, for the message.
    suffixes : tuple of str, optional
        Allowed extensions.

    Returns
    -------
    str

    Raises
    ------
    DownloadError
        For an empty name, a path (a separator or ``..``), odd characters or a refused extension.
    """
    name = "" if np.ma.is_masked(value) else str(value)
    if not PATH_COMPONENT.fullmatch(name) or ".." in name:
        msg = (f"MAST sent {what} {name!r}, which is not a plain file name (letters, digits, '._+-'); "
               "refusing to write it")
        raise DownloadError(msg)
    if suffixes is not None and not name.lower().endswith(suffixes):
        msg = f"MAST sent {what} {name!r}: not a product type this suite fetches ({', '.join(suffixes)})"
        raise DownloadError(msg)
    return name


def product_path(dest: Path, row: Any) -> Path:
    """Where a product row is written, ``<dest>/mastDownload/JWST/<obs_id>/<file>``, names checked.

    Raises
    ------
    DownloadError
        If a name is unsafe, or a non-FITS product comes without a size to verify it by.
    """
    obs_id = safe_name(row["obs_id"], "obs_id")
    name = safe_name(row["productFilename"], "productFilename", PRODUCT_SUFFIXES)
    size = row["size"]
    if not name.endswith(".fits") and (np.ma.is_masked(size) or int(size) <= 0):
        msg = f"MAST sent {name!r} without a size: a non-FITS product can only be verified by its size"
        raise DownloadError(msg)
    path = dest / "mastDownload" / "JWST" / obs_id / name
    if not path.resolve().is_relative_to(dest.resolve()):
        msg = f"{name!r}: would be written outside {dest}"
        raise DownloadError(msg)
    return path
