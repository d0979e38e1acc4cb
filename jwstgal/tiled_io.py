"""Images read and written by tiles, so that a step's memory is that of a tile, not of the mosaic.

- :class:`FitsImage` reads any rectangle of an uncompressed FITS image HDU by positioned reads of
  its rows (no memory map: what was read does not stay resident in the process).
- :class:`ScratchImage` is a float32 image in a raw scratch file, written and read by rectangles.
- :func:`write_image_file` writes a FITS file of image HDUs from arrays or either of the above, a
  band of rows at a time (astropy's ``StreamingHDU``), atomically.
- :func:`copy_with_headers` copies a FITS file with some headers replaced, each data block copied
  byte for byte in chunks.

Both image classes slice like a 2-D array (``img[y0:y1, x0:x1]`` returns a float32 array) and turn
into one with ``numpy.asarray`` (the whole image, for callers that need it).
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from astropy.io import fits

from jwstgal.provenance import atomic_path

log = logging.getLogger(__name__)

#: bytes copied at a time by :func:`copy_with_headers`
CHUNK = 16 * 2**20


def _window(key: Any, shape: tuple[int, int]) -> tuple[int, int, int, int]:
    """(y0, y1, x0, x1) of a 2-D slice with unit steps, clipped to ``shape`` as numpy clips."""
    if not isinstance(key, tuple):
        key = (key, slice(None))
    if len(key) != 2 or not all(isinstance(k, slice) for k in key):
        msg = f"tiled images take two slices, got {key!r}"
        raise TypeError(msg)
    out = []
    for k, n in zip(key, shape, strict=True):
        start, stop, step = k.indices(n)
        if step != 1:
            msg = f"tiled images take slices of unit step, got {k!r}"
            raise ValueError(msg)
        out += [start, max(start, stop)]
    return out[0], out[1], out[2], out[3]


class _RowFile:
    """A 2-D array stored row after row in a file from ``offset``, read and written by rectangles."""

    def __init__(self, path: Path, shape: tuple[int, int], dtype: np.dtype, offset: int, mode: str) -> None:
        self.path, self.shape, self.file_dtype, self.offset = Path(path), shape, np.dtype(dtype), offset
        self.ndim = 2
        self.dtype = np.dtype(np.float32)
        self._fh = open(self.path, mode)  # noqa: SIM115 - held for the object's life, closed by close()

    @property
    def _row_bytes(self) -> int:
        return self.shape[1] * self.file_dtype.itemsize

    def _read(self, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        buf = np.empty((y1 - y0, x1 - x0), self.file_dtype)
        if buf.size == 0:
            return buf.astype(np.float32)
        raw = buf.view(np.uint8).reshape(y1 - y0, -1)
        start = self.offset + x0 * self.file_dtype.itemsize
        if x0 == 0 and x1 == self.shape[1] and y1 > y0:          # whole rows: one read
            self._fh.seek(start + y0 * self._row_bytes)
            self._fh.readinto(memoryview(raw.reshape(-1)))
        else:
            for i in range(y1 - y0):
                self._fh.seek(start + (y0 + i) * self._row_bytes)
                self._fh.readinto(memoryview(raw[i]))
        return buf.astype(np.float32)                            # native byte order, a new array

    def _write(self, y0: int, x0: int, value: np.ndarray) -> None:
        raw = np.ascontiguousarray(value, self.file_dtype)
        start = self.offset + x0 * self.file_dtype.itemsize
        if x0 == 0 and raw.shape[1] == self.shape[1]:
            self._fh.seek(start + y0 * self._row_bytes)
            self._fh.write(raw.tobytes())
        else:
            for i in range(raw.shape[0]):
                self._fh.seek(start + (y0 + i) * self._row_bytes)
                self._fh.write(raw[i].tobytes())

    def __getitem__(self, key: Any) -> np.ndarray:
        return self._read(*_window(key, self.shape))

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> np.ndarray:
        a = self._read(0, self.shape[0], 0, self.shape[1])
        return a if dtype is None else a.astype(dtype, copy=False)

    @property
    def size(self) -> int:
        """Number of pixels."""
        return self.shape[0] * self.shape[1]

    def row_bands(self, rows: int) -> Iterator[tuple[int, np.ndarray]]:
        """(first row, band) for bands of ``rows`` whole rows, top to bottom."""
        for y0 in range(0, self.shape[0], rows):
            yield y0, self._read(y0, min(y0 + rows, self.shape[0]), 0, self.shape[1])

    def close(self) -> None:
        """Close the file."""
        self._fh.close()


class FitsImage(_RowFile):
    """A 2-D image HDU of a FITS file, read by rectangles (float32, NaN kept).

    Parameters
    ----------
    path : path-like
        The FITS file.
    ext : str or int
        The HDU (name or index).
    zero_is_nan : bool
        Read exact zeros as NaN (resample writes 0 where nothing contributed).

    Notes
    -----
    Scaled (``BSCALE``/``BZERO``) or compressed HDUs cannot be read by rows; they are read whole,
    once, and served from memory.
    """

    def __init__(self, path: str | os.PathLike[str], ext: str | int = "SCI", *,
                 zero_is_nan: bool = False) -> None:
        path = Path(path)
        with fits.open(path, memmap=False, lazy_load_hdus=True) as h:
            hdu = h[ext]
            hdr = hdu.header
            if hdr.get("NAXIS") != 2:
                msg = f"{path}[{ext}]: not a 2-D image (NAXIS = {hdr.get('NAXIS')})"
                raise ValueError(msg)
            shape = (int(hdr["NAXIS2"]), int(hdr["NAXIS1"]))
            direct = (type(hdu) in (fits.ImageHDU, fits.PrimaryHDU) and hdr["BITPIX"] in (-32, -64)
                      and hdr.get("BSCALE", 1) == 1 and hdr.get("BZERO", 0) == 0)
            offset = int(h.fileinfo(h.index_of(ext))["datLoc"])
            self._memory = None if direct else np.asarray(hdu.data, np.float32).copy()
        if self._memory is not None:
            log.debug("%s[%s] is scaled or compressed: read whole", path, ext)
        super().__init__(path, shape, np.dtype(">f4" if hdr["BITPIX"] == -32 else ">f8"), offset, "rb")
        self.zero_is_nan = zero_is_nan

    def _read(self, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        a = self._memory[y0:y1, x0:x1].copy() if self._memory is not None else super()._read(y0, y1, x0, x1)
        if self.zero_is_nan:
            a[a == 0] = np.nan
        return a


class ScratchImage(_RowFile):
    """A float32 image in a raw file (native byte order), written and read by rectangles.

    Pixels never written read as 0. The file is removed by :meth:`close`.
    """

    def __init__(self, path: str | os.PathLike[str], shape: tuple[int, int]) -> None:
        path = Path(path)
        with open(path, "wb") as f:
            f.truncate(shape[0] * shape[1] * 4)                 # sparse where the file system allows
        super().__init__(path, (int(shape[0]), int(shape[1])), np.dtype(np.float32), 0, "r+b")

    def __setitem__(self, key: Any, value: Any) -> None:
        y0, y1, x0, x1 = _window(key, self.shape)
        value = np.broadcast_to(np.asarray(value, np.float32), (y1 - y0, x1 - x0))
        self._write(y0, x0, value)

    def close(self) -> None:
        """Close and remove the file."""
        super().close()
        self.path.unlink(missing_ok=True)


def band_rows(shape: Sequence[int], target_bytes: int = 64 * 2**20) -> int:
    """Rows per band so that a float32 band of a ``shape`` image holds about ``target_bytes``."""
    return max(1, target_bytes // (4 * max(1, int(shape[-1]))))


def _rows_of(data: Any, rows: int) -> Iterator[np.ndarray]:
    if isinstance(data, _RowFile):
        for _, band in data.row_bands(rows):
            yield band
    else:
        a = np.asarray(data)
        for y0 in range(0, a.shape[0], rows):
            yield a[y0:y0 + rows]


def write_image_file(out: Path, primary: fits.Header | None,
                     images: Sequence[tuple[str, fits.Header, Any]]) -> Path:
    """Write a FITS file of 2-D float32 image extensions, a band of rows at a time, atomically.

    Parameters
    ----------
    out : pathlib.Path
        The file to write (replaced only once complete).
    primary : astropy.io.fits.Header or None
        Header of the (data-less) primary HDU.
    images : sequence of (name, header, data)
        Each extension: its ``EXTNAME``, its header (WCS, units...; the structural cards are set
        here) and its data: an array, a :class:`FitsImage` or a :class:`ScratchImage`.

    Returns
    -------
    pathlib.Path
        ``out``.
    """
    with atomic_path(out) as tmp:
        fits.PrimaryHDU(header=primary).writeto(tmp)
        for name, header, data in images:
            ny, nx = data.shape
            hdu = fits.ImageHDU(np.zeros((1, 1), np.float32), header=header, name=name)
            hdu.header["NAXIS1"], hdu.header["NAXIS2"] = nx, ny
            stream = fits.StreamingHDU(str(tmp), hdu.header)   # (a Path would be taken by its name)
            for band in _rows_of(data, band_rows((ny, nx))):
                stream.write(np.ascontiguousarray(band, np.float32))
            stream.close()
    return out


STRUCTURAL = ("SIMPLE", "XTENSION", "BITPIX", "NAXIS", "NAXIS1", "NAXIS2", "NAXIS3", "NAXIS4",
              "PCOUNT", "GCOUNT", "TFIELDS")


def copy_with_headers(src: Path, out: Path, headers: dict[int, fits.Header], *,
                      drop: Sequence[str] = ()) -> Path:
    """Copy a FITS file with the headers of some HDUs replaced; data copied byte for byte in chunks.

    Parameters
    ----------
    src, out : pathlib.Path
        The file to copy and the copy (written atomically).
    headers : dict
        HDU index -> its new header. A new header must keep the structure of the HDU (``BITPIX``,
        ``NAXISn``, ``PCOUNT``, ...): only the data's description may change. A ``CHECKSUM`` it
        carries is dropped (it no longer holds); ``DATASUM`` still does.
    drop : sequence of str
        Names of HDUs left out of the copy (e.g. a stale ``ASDF`` extension).

    Returns
    -------
    pathlib.Path
        ``out``.
    """
    with fits.open(src, memmap=False, lazy_load_hdus=True) as h, open(src, "rb") as fin, \
            atomic_path(out) as tmp, open(tmp, "wb") as fout:
        i = 0
        while True:
            try:
                hdu = h[i]
            except IndexError:
                break
            if i > 0 and hdu.name in drop:
                i += 1
                continue
            old = hdu.header
            new = headers.get(i, old)
            for k in STRUCTURAL:
                if old.get(k) != new.get(k):
                    msg = f"{src}[{i}]: the new header changes {k} ({old.get(k)!r} -> {new.get(k)!r})"
                    raise ValueError(msg)
            if new is not old and "CHECKSUM" in new:
                new = new.copy()
                del new["CHECKSUM"]
            fout.write(new.tostring(padding=True).encode("ascii"))
            info = h.fileinfo(i)
            fin.seek(info["datLoc"])
            left = int(info["datSpan"])
            while left > 0:
                chunk = fin.read(min(CHUNK, left))
                if not chunk:
                    msg = f"{src}[{i}]: file ends inside the data block"
                    raise OSError(msg)
                fout.write(chunk)
                left -= len(chunk)
            i += 1
        fout.flush()
        os.fsync(fout.fileno())
    return out


def _owner_tag() -> str:
    """``<host>-<pid>-`` of this process, the part of a scratch folder's name that names its owner."""
    import socket

    host = "".join(c if c.isalnum() else "_" for c in socket.gethostname())[:40] or "host"
    return f"{host}-{os.getpid()}-"


def scratch_dir(parent: Path | None, prefix: str) -> Path:
    """A new scratch folder under ``parent`` (the system's temporary folder if None).

    Its name carries the owner (host and process id), so that :func:`remove_stale_scratch` can tell
    the folders of a killed run from those of a running one.
    """
    import tempfile

    if parent is not None:
        parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=prefix + _owner_tag(), dir=parent))


def remove_stale_scratch(parent: Path, prefix: str) -> list[Path]:
    """Remove the scratch folders under ``parent`` whose owning process on this host is gone.

    A run killed with ``kill -9`` cannot remove its scratch folder; the next run does. Folders of
    live processes, of other hosts (a shared file system) and of unknown owners are kept.

    Returns
    -------
    list of Path
        The folders removed.
    """
    host = _owner_tag().split("-")[0]
    removed = []
    if not parent.is_dir():
        return removed
    for d in parent.glob(prefix + "*"):
        owner = d.name[len(prefix):].split("-")
        if not d.is_dir() or d.is_symlink() or len(owner) < 3 or owner[0] != host:
            continue
        try:
            pid = int(owner[1])
            os.kill(pid, 0)                 # alive (or not ours to signal): keep it
        except ProcessLookupError:
            remove_scratch(d)
            removed.append(d)
        except (ValueError, PermissionError):
            continue
    return removed


def remove_scratch(path: Path) -> None:
    """Remove a scratch folder made by :func:`scratch_dir`."""
    shutil.rmtree(path, ignore_errors=True)
