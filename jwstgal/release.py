"""Flatten the reduction into a documented release tree.

``<working_dir>/jwst_release/<data_version>/<target>/`` receives, per band, the mosaic (science,
error, weight and a coverage map derived from the context image), the source catalogue, the
convolved products and (each optional, see :data:`OPTIONS`) the alignment's tables, the per-field
and background-field mosaics and the QA figures; names follow the suite's scheme or MAST's HLSP
one. Only *copies* are slimmed (VAR_* and CON extensions dropped when
``remove_bloat``); the working and raw data are never touched. Every file gets provenance keywords,
and the release carries ``MANIFEST.ecsv`` (file, target, band, kind, size, SHA-256), ``SHA256SUMS``
and a ``README.md`` describing the products.

The release always describes exactly what is in it: the manifest lists every file of the tree (a
run for some bands keeps the others' rows), and a released product older than its source (the
band was reprocessed, or realigned) is rebuilt rather than kept.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from astropy.io import fits
from astropy.table import Table

from jwstgal import layout
from jwstgal.bands import get_band
from jwstgal.errors import ReductionError
from jwstgal.layout import (
    anchored_mosaic,
    convolved_dir,
    final_mosaic,
    product_name,
    step_folder,
)
from jwstgal.provenance import atomic_path, stamp_header, write_text_atomic
from jwstgal.release_readme import release_readme

log = logging.getLogger(__name__)

BLOAT = ("VAR_POISSON", "VAR_RNOISE", "VAR_FLAT", "CON", "ASDF")

#: What a release holds unless told otherwise (the ``[release]`` keys of the same names).
OPTIONS: dict[str, Any] = {
    "remove_bloat": True, "include_convolved": True, "include_segm": True, "include_crf": False,
    "include_alignment": True, "include_fields": True, "include_backgrounds": True,
    "include_qa": True, "naming": "suite", "hlsp_project": "", "overwrite": False,
}
#: The QA figures of a band a reader needs (``<band>/qa/<name>``), released under ``qa/<BAND>/``.
QA_FIGURES = ("lv3_astrometry.png", "astrometric_align.png", "astrometric_align_mosaic.png",
              "lv2_cal.png", "destripe.png", "rate_destripe.png", "stack_destripe.png",
              "level_match.png", "bg_sub.png", "bgr_mosaics.png")


def release_options(given: dict[str, Any]) -> dict[str, Any]:
    """:data:`OPTIONS` with ``given`` applied (an unknown option is a programming error)."""
    unknown = set(given) - set(OPTIONS)
    if unknown:
        msg = f"unknown release option(s) {', '.join(sorted(unknown))} (allowed: {', '.join(OPTIONS)})"
        raise TypeError(msg)
    opts = {**OPTIONS, **given}
    if opts["naming"] == "hlsp" and not opts["hlsp_project"]:
        msg = "naming = 'hlsp' needs hlsp_project"
        raise ValueError(msg)
    return opts


def release_name(name: str, stem: str, target: str, band: Any, opts: dict[str, Any], version: str) -> str:
    """A released file's name: as made (``naming = "suite"``) or in MAST's HLSP scheme.

    HLSP: ``hlsp_<project>_jwst_<instrument>_<target>_<band>_<version>_<rest>``, lower case, where
    ``<rest>`` is what follows the product stem (``i2d.fits``, ``cat.ecsv``, ...).
    """
    if opts["naming"] != "hlsp" or stem not in name:
        return name
    rest = name.split(stem, 1)[1].lstrip("_")
    head = f"hlsp_{opts['hlsp_project']}_jwst_{band.instrument}_{target}_{band.name}_{version}"
    return f"{head}_{rest}".lower()


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


def release_mosaic(i2d: Path, out: Path, *, remove_bloat: bool, config_hash: str,
                   coverage: bool = True) -> list[Path]:
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
        if coverage and "CON" in names:
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


def release_catalogue(src: Path, mosaic: Path, dst: Path) -> Path:
    """Copy a stage-3 catalogue with its sky positions recomputed through the released mosaic's WCS.

    Stage 3 measured the sources on the mosaic's pixels before the absolute alignment; the pixel
    positions stay valid, the sky positions do not. ``sky_centroid`` (and the ``sky_bbox_*``
    corners) are recomputed from ``xcentroid``/``ycentroid`` (and ``bbox_*``) with the FITS WCS of
    the mosaic released beside it, so catalogue and mosaic agree by construction.
    """
    from astropy.wcs import WCS

    table = Table.read(src, format="ascii.ecsv")
    wcs = WCS(fits.getheader(mosaic, "SCI")).celestial
    if {"xcentroid", "ycentroid"} <= set(table.colnames):
        table["sky_centroid"] = wcs.pixel_to_world(np.asarray(table["xcentroid"], float),
                                                   np.asarray(table["ycentroid"], float))
    corners = {"sky_bbox_ll": ("bbox_xmin", "bbox_ymin", -0.5, -0.5),
               "sky_bbox_ul": ("bbox_xmin", "bbox_ymax", -0.5, 0.5),
               "sky_bbox_lr": ("bbox_xmax", "bbox_ymin", 0.5, -0.5),
               "sky_bbox_ur": ("bbox_xmax", "bbox_ymax", 0.5, 0.5)}
    for col, (xc, yc, dx, dy) in corners.items():
        if col in table.colnames and xc in table.colnames and yc in table.colnames:
            table[col] = wcs.pixel_to_world(np.asarray(table[xc], float) + dx,
                                            np.asarray(table[yc], float) + dy)
    state = "aligned" if fits.getheader(mosaic).get("ASTALIGN") else "stage 3"
    table.meta["jwstgal_sky_positions"] = (f"recomputed from pixel positions with the WCS of "
                                           f"{mosaic.name} ({state})")
    with atomic_path(dst) as tmp:
        table.write(tmp, format="ascii.ecsv")
    return dst


def _copy(src: Path, dst: Path, overwrite: bool, config_hash: str = "") -> Path:
    """Release a file as it is; a FITS file gets the release's provenance in its primary header."""
    if needs_release(src, dst, overwrite):
        with atomic_path(dst) as tmp:
            if src.suffix == ".fits":
                with fits.open(src) as h:
                    stamp_header(h[0].header, step="release", params={"source": src.name},
                                 config_hash=config_hash)
                    h.writeto(tmp)
            else:
                shutil.copyfile(src, tmp)
    return dst


@dataclass(frozen=True)
class _Item:
    """One file a release would hold: where from, where to, what it is and how it is made."""

    src: Path
    dst: Path
    target: str
    band: str
    kind: str
    how: str = "copy"          # "mosaic", "anchored", "catalogue" (from the mosaic ``after``) or "copy"
    after: Path | None = None


def _band_items(reprocess_dir: Path, tdir: Path, target: str, name: str, opts: dict[str, Any]
                ) -> list[_Item]:
    """The files of one band's release, in order (nothing is read but the file system)."""
    band = get_band(name)
    bdir = reprocess_dir / target / band.name
    lv3 = bdir / "lv3"
    stem = product_name(target, band)
    i2d = final_mosaic(bdir, target, band)
    if not i2d.is_file():
        log.warning("%s %s: no mosaic to release (%s)", target, band.name, i2d)
        return []
    version = reprocess_dir.name.removeprefix("jwst_lv3_reprocessed_")     # the data_version

    def named(folder: Path, src_name: str) -> Path:
        return folder / release_name(src_name, stem, target, band, opts, version)

    out = named(tdir, f"{stem}_i2d.fits")   # one name whether or not it was realigned
    items = [_Item(i2d, out, target, band.name, "mosaic", "mosaic")]
    anchored = anchored_mosaic(bdir, target, band)
    if anchored.is_file() and anchored.stat().st_mtime >= i2d.stat().st_mtime:
        items.append(_Item(anchored, named(tdir, anchored.name), target, band.name, "anchored mosaic",
                           "anchored"))
    cat = lv3 / f"{stem}_cat.ecsv"
    if cat.is_file():
        items.append(_Item(cat, named(tdir, cat.name), target, band.name, "catalogue", "catalogue", out))
    extras = [(lv3 / f"{stem}_i2d.png", tdir, "quicklook", True),
              (lv3 / f"{stem}_segm.fits", tdir, "segmentation", opts["include_segm"])]
    if opts["include_convolved"]:
        extras += [(p, tdir / "convolved", "convolved", True)
                   for p in sorted(convolved_dir(bdir).glob("*_conv_*.fits"))]
    if opts["include_crf"]:
        tweaked = sorted((bdir / "astrometric_align").glob("*_crf_tweakback.fits"))
        extras += [(p, tdir / "exposures" / band.name, "exposure", True)
                   for p in (tweaked or sorted(lv3.glob("*_crf.fits")))]
    if opts["include_alignment"]:
        extras += [(layout.align_table(bdir, target, band), tdir / "alignment", "alignment table", True),
                   (layout.astro_catalog(bdir, target, band), tdir / "alignment", "astrometric catalogue",
                    True)]
    items += [_Item(src, named(folder, src.name), target, band.name, kind)
              for src, folder, kind, wanted in extras if wanted and src.is_file()]
    if opts["include_fields"]:
        items += [_Item(p, named(tdir / "fields", p.name), target, band.name, "field mosaic", "field")
                  for p in sorted((bdir / "field_mosaics").glob("*_i2d.fits"))]
    if opts["include_backgrounds"]:
        items += [_Item(p, named(tdir / "background", p.name), target, band.name, "background mosaic",
                        "field") for p in sorted((bdir / "bgr_mosaics").glob("*_bgr_i2d.fits"))]
        items += [_Item(p, tdir / "background" / "stage2" / p.name, target, band.name, "stage-2 background")
                  for p in sorted((bdir / step_folder("lv2")).glob("*_combinedbackground.fits"))]
    if opts["include_qa"]:
        qa, out = layout.qa_dir(bdir), layout.release_qa_dir(tdir, band.name)
        items += [_Item(qa / f, out / f, target, band.name, "qa figure")
                  for f in QA_FIGURES if (qa / f).is_file()]
    return items


def is_due(item: _Item, overwrite: bool) -> bool:
    """Whether an item must be (re)made now."""
    if item.how == "catalogue" and item.after is not None and item.dst.is_file() and item.after.is_file() \
            and item.dst.stat().st_mtime_ns < item.after.stat().st_mtime_ns:
        return True             # its sky positions come from a mosaic released since
    return needs_release(item.src, item.dst, overwrite)


def make_item(item: _Item, opts: dict[str, bool], config_hash: str) -> list[ReleasedFile]:
    """Release one item (if due); the released files it stands for."""
    if is_due(item, opts["overwrite"]):
        if item.how in ("mosaic", "anchored", "field"):
            release_mosaic(item.src, item.dst, remove_bloat=opts["remove_bloat"], config_hash=config_hash,
                           coverage=item.how == "mosaic")
        elif item.how == "catalogue":
            release_catalogue(item.src, item.after or item.dst, item.dst)
        else:
            _copy(item.src, item.dst, True, config_hash)
    files = [ReleasedFile(item.dst, item.target, item.band, item.kind)]
    cov = item.dst.with_name(item.dst.name.replace("_i2d.fits", "_coverage.fits"))
    if item.how == "mosaic" and cov.is_file():
        files.append(ReleasedFile(cov, item.target, item.band, "coverage"))
    return files


def release_items(reprocess_dir: Path, release_dir: Path, targets: list[str], bands: list[str],
                  opts: dict[str, Any]) -> list[_Item]:
    """Every file the release holds, in order (the anchoring of a target that has something)."""
    out = []
    for target in targets:
        items = [i for name in bands for i in _band_items(reprocess_dir, release_dir / target, target, name,
                                                            opts)]
        anchor_dir = layout.anchor_table(reprocess_dir, target).parent
        if items and anchor_dir.is_dir():
            items += [_Item(src, release_dir / target / "anchor" / src.name, target, "", "anchoring")
                      for src in sorted([*anchor_dir.glob("*.ecsv"), *anchor_dir.glob("*.png")])]
        out += items
    return out


def finish_release(release_dir: Path, files: list[ReleasedFile], run_config: dict | None,
                   error: OSError | None = None) -> list[ReleasedFile]:
    """Write ``run_config.json`` and the manifest of what is there; raise when ``error`` cut it short.

    Raises
    ------
    ReductionError
        Naming the release, the file and how many files were released, when a write failed.
    """
    try:
        if error is not None:
            raise error
        if run_config is not None:
            release_dir.mkdir(parents=True, exist_ok=True)
            write_text_atomic(release_dir / "run_config.json", json.dumps(run_config, indent=2, default=str))
            files = [*files, ReleasedFile(release_dir / "run_config.json", "", "", "configuration")]
    except OSError as err:            # a full disk, a quota, a folder gone: say what is there
        raise _incomplete(release_dir, files, err) from None
    write_manifest(release_dir, files)
    return files


def has_mosaic(reprocess_dir: Path, release_dir: Path, targets: list[str], bands: list[str]) -> bool:
    """Whether there is anything to release (a mosaic, or a release already there)."""
    return (any(final_mosaic(reprocess_dir / t / b, t, get_band(b)).is_file() for t in targets for b in bands)
            or (release_dir / "MANIFEST.ecsv").is_file())


def build_release(
    reprocess_dir: Path,
    release_dir: Path,
    targets: list[str],
    bands: list[str],
    *,
    config_hash: str = "",
    run_config: dict | None = None,
    **options: Any,
) -> list[ReleasedFile]:
    """Assemble the release tree for the given targets and bands, in this process.

    (The ``release`` step does the same with the files released in parallel.)

    Parameters
    ----------
    reprocess_dir : pathlib.Path
        ``jwst_lv3_reprocessed_<version>`` folder (read only).
    release_dir : pathlib.Path
        Release root (``jwst_release/<version>``).
    targets, bands : list of str
        What to release.
    config_hash : str
        Recorded in the released files.
    run_config : dict, optional
        The resolved configuration, written as ``run_config.json``.
    **options
        :data:`OPTIONS` (the ``[release]`` keys): ``remove_bloat`` (drop VAR_*, CON and ASDF
        extensions from released mosaics), ``include_convolved`` (every rung of the ladder),
        ``include_segm`` (stage 3's segmentation maps), ``include_crf`` (the per-exposure ``crf``
        files, tweaked back to the absolute alignment), ``include_alignment`` (alignment tables and
        astrometric catalogues), ``include_fields`` (per-field mosaics), ``include_backgrounds``
        (background-field mosaics), ``include_qa`` (the QA figures), ``naming`` (``"suite"`` or
        ``"hlsp"`` with ``hlsp_project``) and ``overwrite`` (replace released files).

    Returns
    -------
    list of ReleasedFile
    """
    opts = release_options(options)
    if not has_mosaic(reprocess_dir, release_dir, targets, bands):
        log.warning("no mosaic to release under %s: nothing written", reprocess_dir)
        return []                     # no empty release tree
    files: list[ReleasedFile] = []
    error = None
    try:
        for item in release_items(reprocess_dir, release_dir, targets, bands, opts):
            files += make_item(item, opts, config_hash)
    except OSError as err:
        error = err
    return finish_release(release_dir, files, run_config, error)


def _incomplete(release_dir: Path, files: list[ReleasedFile], err: OSError) -> ReductionError:
    """The error of a release cut short; the manifest is written for what is there, if it can be."""
    import errno

    what = "the disk is full" if err.errno in (errno.ENOSPC, errno.EDQUOT) else (err.strerror or str(err))
    listed = "MANIFEST.ecsv and SHA256SUMS list what is there"
    try:
        write_manifest(release_dir, files)
    except OSError:
        listed = "no manifest could be written either"
    return ReductionError(f"{release_dir}: release incomplete: {what} while writing {err.filename} "
                          f"({len(files)} files released); {listed}. Free space and run "
                          "prepare_release.py again: released files are kept")


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
    write_text_atomic(release_dir / "README.md", release_readme(release_dir, rows))
    # the manifest and the README are checked too (SHA256SUMS cannot list itself)
    own = [(name, _sha256(release_dir / name)) for name in ("MANIFEST.ecsv", "README.md")]
    write_text_atomic(release_dir / "SHA256SUMS",
                      "".join(f"{r[5]}  {r[0]}\n" for r in rows) + "".join(f"{h}  {n}\n" for n, h in own))
    return release_dir / "MANIFEST.ecsv"
