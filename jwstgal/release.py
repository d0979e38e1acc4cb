"""Flatten the reduction into a documented release tree.

``<working_dir>/jwst_release/<data_version>/<target>/`` receives, per band, the mosaic (science,
error, weight and a coverage map derived from the context image), the source catalogue and the
convolved products. Only *copies* are slimmed (VAR_* and CON extensions dropped when
``remove_bloat``); the working and raw data are never touched. Every file gets provenance keywords,
and the release carries ``MANIFEST.ecsv`` (file, target, band, kind, size, SHA-256), ``SHA256SUMS``
and a ``README.md`` describing the products.

The release always describes exactly what is in it: the manifest lists every file of the tree (a
run for some bands keeps the others' rows), and a released product older than its source (the
band was reprocessed, or realigned) is rebuilt rather than kept.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.table import Table

from jwstgal.bands import get_band
from jwstgal.layout import final_mosaic, product_name
from jwstgal.provenance import atomic_path, stamp_header, write_text_atomic

log = logging.getLogger(__name__)

BLOAT = ("VAR_POISSON", "VAR_RNOISE", "VAR_FLAT", "CON", "ASDF")


def coverage_from_context(con: np.ndarray) -> np.ndarray:
    """Number of input exposures contributing to each pixel, from a drizzle context image.

    Parameters
    ----------
    con : numpy.ndarray
        Context image (nplanes, ny, nx) or (ny, nx) of int32 bit fields: bit i of plane p is set
        where input image 32 p + i contributed.

    Returns
    -------
    numpy.ndarray
        Coverage (float32), NaN where nothing contributed.
    """
    con = np.asarray(con)
    if con.ndim == 2:
        con = con[None]
    counts = np.bitwise_count(con.view(np.uint32)).sum(axis=0).astype(np.float32)
    counts[counts == 0] = np.nan
    return counts


def needs_release(src: Path, dst: Path, overwrite: bool) -> bool:
    """Whether ``dst`` must be (re)made from ``src``: absent, asked for, or older than its source."""
    if overwrite or not dst.is_file():
        return True
    if dst.stat().st_mtime_ns < src.stat().st_mtime_ns:
        log.info("%s is older than its source %s: rebuilding it", dst, src)
        return True
    return False


@dataclass(frozen=True)
class ReleasedFile:
    """One file of the release."""

    path: Path
    target: str
    band: str
    kind: str


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def release_mosaic(i2d: Path, out: Path, *, remove_bloat: bool, config_hash: str) -> list[Path]:
    """Copy a mosaic into the release (slimmed), plus its coverage map; returns written files."""
    written = []
    with fits.open(i2d) as h:
        names = [x.name for x in h]
        keep = [x for x in h if not (remove_bloat and x.name in BLOAT)]
        hdul = fits.HDUList([x.copy() for x in keep])
        stamp_header(hdul[0].header, step="release", params={"source": i2d.name,
                                                             "remove_bloat": remove_bloat},
                     config_hash=config_hash)
        with atomic_path(out) as tmp:
            hdul.writeto(tmp)
        written.append(out)
        if "CON" in names:
            cov = coverage_from_context(h["CON"].data)
            hdr = h["SCI"].header.copy()
            hdr["BUNIT"] = ("", "number of contributing exposures")
            cov_path = out.with_name(out.name.replace("_i2d.fits", "_coverage.fits"))
            primary = fits.PrimaryHDU()
            stamp_header(primary.header, step="release", params={"source": i2d.name,
                                                                 "product": "coverage"},
                         config_hash=config_hash)
            with atomic_path(cov_path) as tmp:
                fits.HDUList([primary, fits.ImageHDU(cov, hdr, name="COVERAGE")]).writeto(tmp)
            written.append(cov_path)
    return written


def build_release(
    reprocess_dir: Path,
    release_dir: Path,
    targets: list[str],
    bands: list[str],
    *,
    remove_bloat: bool = True,
    include_convolved: bool = True,
    overwrite: bool = False,
    config_hash: str = "",
) -> list[ReleasedFile]:
    """Assemble the release tree for the given targets and bands.

    Parameters
    ----------
    reprocess_dir : pathlib.Path
        ``jwst_lv3_reprocessed_<version>`` folder (read only).
    release_dir : pathlib.Path
        Release root (``jwst_release/<version>``).
    targets, bands : list of str
        What to release.
    remove_bloat : bool
        Drop VAR_* and CON extensions from the released mosaics.
    include_convolved : bool
        Also release the convolved mosaics.
    overwrite : bool
        Replace files that are already released.
    config_hash : str
        Recorded in the released files.

    Returns
    -------
    list of ReleasedFile
    """
    files: list[ReleasedFile] = []
    for target in targets:
        tdir = release_dir / target
        for name in bands:
            band = get_band(name)
            lv3 = reprocess_dir / target / band.name / "lv3"
            stem = product_name(target, band)
            i2d = final_mosaic(reprocess_dir / target / band.name, target, band)
            if not i2d.is_file():
                log.warning("%s %s: no mosaic to release (%s)", target, band.name, i2d)
                continue
            out = tdir / f"{stem}_i2d.fits"   # one name whether or not it was realigned
            if needs_release(i2d, out, overwrite):
                release_mosaic(i2d, out, remove_bloat=remove_bloat, config_hash=config_hash)
            files.append(ReleasedFile(out, target, band.name, "mosaic"))
            cov = out.with_name(out.name.replace("_i2d.fits", "_coverage.fits"))
            if cov.is_file():
                files.append(ReleasedFile(cov, target, band.name, "coverage"))
            for src, kind in ((lv3 / f"{stem}_cat.ecsv", "catalogue"),
                              (lv3 / f"{stem}_i2d.png", "quicklook")):
                if src.is_file():
                    dst = tdir / src.name
                    if needs_release(src, dst, overwrite):
                        with atomic_path(dst) as tmp:
                            shutil.copyfile(src, tmp)
                    files.append(ReleasedFile(dst, target, band.name, kind))
            if include_convolved:
                for src in sorted((lv3.parent / "convolved").glob("*_conv_*.fits")):
                    dst = tdir / "convolved" / src.name
                    if needs_release(src, dst, overwrite):
                        with atomic_path(dst) as tmp:
                            shutil.copyfile(src, tmp)
                    files.append(ReleasedFile(dst, target, band.name, "convolved"))
    write_manifest(release_dir, files)
    return files


#: The release's own description files (not listed in the manifest).
META_FILES = ("MANIFEST.ecsv", "SHA256SUMS", "README.md")


def write_manifest(release_dir: Path, files: list[ReleasedFile]) -> Path:
    """Write MANIFEST.ecsv, SHA256SUMS and README.md at the release root.

    Every file in the tree is listed: those released now as ``files`` say, the others as the
    previous manifest said (a file it does not know is listed under its target folder, kind
    ``other``); rows of files no longer there are dropped.
    """
    known: dict[str, tuple[str, str, str]] = {}
    old = release_dir / "MANIFEST.ecsv"
    if old.is_file():
        for row in Table.read(old, format="ascii.ecsv"):
            known[str(row["file"])] = (str(row["target"]), str(row["band"]), str(row["kind"]))
    for f in files:
        known[str(f.path.relative_to(release_dir))] = (f.target, f.band, f.kind)
    present = sorted(str(p.relative_to(release_dir)) for p in release_dir.rglob("*")
                     if p.is_file() and not p.name.startswith(".")
                     and str(p.relative_to(release_dir)) not in META_FILES)
    rows = []
    for rel in present:
        target, band, kind = known.get(rel, (rel.split("/")[0], "", "other"))
        path = release_dir / rel
        rows.append((rel, target, band, kind, path.stat().st_size, _sha256(path)))
    table = Table(rows=rows or None, names=("file", "target", "band", "kind", "bytes", "sha256"),
                  dtype=(str, str, str, str, np.int64, str))
    release_dir.mkdir(parents=True, exist_ok=True)
    with atomic_path(release_dir / "MANIFEST.ecsv") as tmp:
        table.write(tmp, format="ascii.ecsv")
    write_text_atomic(release_dir / "SHA256SUMS",
                      "".join(f"{r[5]}  {r[0]}\n" for r in rows))
    write_text_atomic(release_dir / "README.md", RELEASE_README)
    return release_dir / "MANIFEST.ecsv"


RELEASE_README = """# JWST imaging release (jwstgal)

One folder per target. For each band:

- `<target>_<nircam|miri>_lv3_<band>_i2d.fits`: the stage-3 mosaic. Extensions: `SCI` (surface
  brightness, MJy/sr), `ERR` (1-sigma, MJy/sr), `WHT` (drizzle weight). The per-component variances
  (`VAR_*`) and the context image (`CON`) are dropped when the release is slimmed.
- `<...>_coverage.fits`: number of exposures contributing to each pixel (from the context image).
- `<...>_cat.ecsv`: the stage-3 source catalogue; `<...>_i2d.png`: quicklook.
- `convolved/<...>_i2d_conv_<PSF>.fits`: the mosaic convolved to a common PSF (`PSF` keyword) and,
  where the PSF is a band, reprojected onto that band's grid. `ERR` assumes independent pixels.

Every FITS file records the software versions (`JGAL_VER` and HISTORY), the configuration hash
(`JGAL_CFG`) and step parameters. `MANIFEST.ecsv` lists every file with its size and SHA-256;
`sha256sum -c SHA256SUMS` verifies the release.
"""
