"""Release-to-release regression: what changed between two releases of the same programme.

For every target/band mosaic found in both releases (``MANIFEST.ecsv``, kind ``mosaic``), the new
mosaic is reprojected onto the old one's grid and compared:

- **flux ratio** new/old: median and 16th/84th percentiles over bright pixels (above the 90th
  percentile of the old image and 5 robust sigma above its background);
- **shift** of the new image on the sky with respect to the old (E, N in mas), by upsampled phase
  cross-correlation (scikit-image) of the background-subtracted images: on the native arrays,
  through each release's WCS, when both grids have the same shape and pixel (the usual case; no
  interpolation bias), else after reprojection;
- **background difference**: median of new - ratio x old over the faintest 30 % of pixels (the
  additive change once the flux scale is accounted for);
- **coverage**: fraction of the old grid with data in each release.

Mosaics in only one release are listed as added or removed. :func:`exceeds` flags the rows
beyond the tolerances (``compare_releases.py`` exits 1 then, so cron can alert).
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.table import Table
from astropy.wcs import WCS

from jwstgal.convolve import image_pixel_scale, reproject_image

log = logging.getLogger(__name__)


@dataclass
class Comparison:
    """One mosaic compared between two releases (NaN where it cannot be measured)."""

    target: str
    band: str
    status: str = "compared"
    flux_ratio: float = np.nan
    flux_ratio_p16: float = np.nan
    flux_ratio_p84: float = np.nan
    n_bright: int = 0
    shift_e_mas: float = np.nan
    shift_n_mas: float = np.nan
    background_diff: float = np.nan
    coverage_old: float = np.nan
    coverage_new: float = np.nan
    file: str = ""


def _robust_sigma(a: np.ndarray) -> float:
    return float(1.4826 * np.median(np.abs(a - np.median(a))))


def compare_images(old: np.ndarray, new: np.ndarray, pixscale: float) -> dict[str, float]:
    """Compare two images on the same grid (NaN = no data).

    Parameters
    ----------
    old, new : numpy.ndarray
        The images.
    pixscale : float
        Pixel scale (arcsec), for the shift in mas.

    Returns
    -------
    dict
        ``flux_ratio`` (+ ``_p16``/``_p84``), ``n_bright``, ``shift_e_mas``, ``shift_n_mas`` (of the
        new image with respect to the old, for a north-up grid with east to the left),
        ``background_diff``, ``coverage_old``, ``coverage_new``.
    """
    fo, fn = np.isfinite(old), np.isfinite(new)
    both = fo & fn
    out: dict[str, float] = {"coverage_old": float(fo.mean()), "coverage_new": float(fn.mean())}
    if both.sum() < 100:
        return out
    o, n = old[both], new[both]
    faint = o <= np.percentile(o, 30)
    bkg, sig = np.median(o[faint]), _robust_sigma(o[faint])
    bright = (o >= np.percentile(o, 90)) & (o - bkg > 5 * sig) & (o > 0)
    scale = 1.0
    if bright.sum() >= 10:
        ratio = n[bright] / o[bright]
        p16, scale, p84 = np.percentile(ratio, [16, 50, 84])
        out.update(flux_ratio=float(scale), flux_ratio_p16=float(p16), flux_ratio_p84=float(p84),
                   n_bright=int(bright.sum()))
    # the additive change once the flux scale is accounted for
    out["background_diff"] = float(np.median(n[faint] - scale * o[faint]))
    dy, dx = pixel_shift(old, new)
    out["shift_e_mas"] = -dx * pixscale * 1000      # x grows to the west on a north-up grid
    out["shift_n_mas"] = dy * pixscale * 1000
    return out


def pixel_shift(old: np.ndarray, new: np.ndarray) -> tuple[float, float]:
    """Where the content of ``old`` is in ``new`` (dy, dx pixels), by upsampled phase correlation."""
    from skimage.filters import window
    from skimage.registration import phase_cross_correlation

    both = np.isfinite(old) & np.isfinite(new)
    # a Hann window: the edges (which do not move) must not dominate the correlation
    hann = window("hann", old.shape)
    a = np.where(both, old - np.nanmedian(old[both]), 0.0) * hann
    b = np.where(both, new - np.nanmedian(new[both]), 0.0) * hann
    shift, _, _ = phase_cross_correlation(a, b, upsample_factor=100, normalization=None)
    return -float(shift[0]), -float(shift[1])


def sky_shift_mas(old_wcs: WCS, new_wcs: WCS, shape: tuple[int, int], dy: float, dx: float
                  ) -> tuple[float, float]:
    """Sky shift (E, N mas) between two grids' views of the same content.

    The content at the centre of ``old`` is found ``(dy, dx)`` pixels away in ``new``; each
    position goes through its own release's WCS.
    """
    y, x = (shape[0] - 1) / 2, (shape[1] - 1) / 2
    a = old_wcs.pixel_to_world(x, y)
    b = new_wcs.pixel_to_world(x + dx, y + dy)
    de, dn = a.spherical_offsets_to(b)
    return float(de.to_value("mas")), float(dn.to_value("mas"))


def _mosaics(release: Path) -> dict[tuple[str, str], Path]:
    """The mosaics a release's manifest lists, by (target, band).

    Raises
    ------
    FileNotFoundError
        If the manifest is missing, unreadable, or lacks the columns of a jwstgal manifest.
    """
    from jwstgal.settings import check_path_component

    manifest = release / "MANIFEST.ecsv"
    if not manifest.is_file():
        msg = f"{release}: no MANIFEST.ecsv (not a jwstgal release?)"
        raise FileNotFoundError(msg)
    try:
        table = Table.read(manifest, format="ascii.ecsv")
    except Exception as err:                  # astropy raises many kinds on a garbage table
        msg = f"{manifest}: not a readable release manifest ({type(err).__name__}: {err})"
        raise FileNotFoundError(msg) from None
    if missing := {"file", "target", "band", "kind"} - set(table.colnames):
        msg = f"{manifest}: not a jwstgal manifest (no column {', '.join(sorted(missing))})"
        raise FileNotFoundError(msg)
    out = {}
    for r in table:
        if r["kind"] != "mosaic":
            continue
        name = str(r["file"])
        try:                                  # a manifest line names a file inside the release
            for part in name.split("/"):
                check_path_component(part, f"{manifest}: file")
        except ValueError as err:
            log.error("%s; row left out", err)
            continue
        out[(str(r["target"]), str(r["band"]))] = release / name
    return out


def _read(path: Path) -> tuple[np.ndarray, WCS]:
    """SCI image (zeros as NaN) and celestial WCS of a released mosaic.

    Raises
    ------
    ValueError
        Naming the file, if it is missing, not FITS, or has no 2-D SCI image with a celestial WCS.
    """
    try:
        with fits.open(path) as h:
            data = np.asarray(h["SCI"].data, float)
            wcs = WCS(h["SCI"].header).celestial
    except (OSError, KeyError, ValueError, TypeError) as err:
        msg = f"{path}: unreadable ({type(err).__name__}: {err})"
        raise ValueError(msg) from None
    if data.ndim != 2 or wcs.naxis != 2:
        msg = f"{path}: no 2-D SCI image with a celestial WCS"
        raise ValueError(msg)
    data[data == 0] = np.nan
    return data, wcs


def plan_comparison(old: Path, new: Path) -> list[tuple[str, str, str]]:
    """What :func:`compare_releases` would compare (``--dry-run``): (target, band, how) per mosaic."""
    a, b = _mosaics(old), _mosaics(new)
    return [(t, band, "compare" if (t, band) in a and (t, band) in b else
             "only in the old release" if (t, band) in a else "only in the new release")
            for t, band in sorted(set(a) | set(b))]


def compare_releases(old: Path, new: Path, png_dir: Path | None = None) -> list[Comparison]:
    """Compare every mosaic of two releases (see the module description).

    With ``png_dir``, one figure per compared mosaic is written there (``<target>_<band>.png``).
    """
    a, b = _mosaics(old), _mosaics(new)
    rows = []
    for key in sorted(set(a) | set(b)):
        target, band = key
        if key not in b:
            rows.append(Comparison(target, band, "removed", file=str(a[key].relative_to(old))))
            continue
        if key not in a:
            rows.append(Comparison(target, band, "added", file=str(b[key].relative_to(new))))
            continue
        try:
            od, ow = _read(a[key])
            nd, nw = _read(b[key])
        except ValueError as err:             # one garbage mosaic: its row says so, the rest go on
            rows.append(Comparison(target, band, f"unreadable: {err}", file=str(b[key].relative_to(new))))
            continue
        native = None
        if nd.shape == od.shape and np.allclose(nw.pixel_scale_matrix, ow.pixel_scale_matrix,
                                                rtol=1e-6, atol=0):
            native = sky_shift_mas(ow, nw, od.shape, *pixel_shift(od, nd))
        if nd.shape != od.shape or not nw.wcs.compare(ow.wcs, tolerance=1e-12):
            nd = reproject_image(nd, nw, ow, od.shape)
        row = Comparison(target, band, file=str(b[key].relative_to(new)))
        for k, v in compare_images(od, nd, image_pixel_scale(ow)).items():
            setattr(row, k, v)
        if native is not None:      # same grid geometry: no interpolation in the shift
            row.shift_e_mas, row.shift_n_mas = native
        rows.append(row)
        if png_dir is not None:
            from jwstgal.plots import comparison_png

            comparison_png(od, nd, png_dir / f"{target}_{band}.png",
                           f"{target} {band}: flux ratio {row.flux_ratio:.4f}, shift "
                           f"({row.shift_e_mas:+.1f}, {row.shift_n_mas:+.1f}) mas E, N, background "
                           f"{row.background_diff:+.4f}")
    return rows


@dataclass(frozen=True)
class Tolerances:
    """Largest changes that are not flagged."""

    flux_ratio: float = 0.02
    shift_mas: float = 10.0
    background: float = 0.01
    coverage: float = 0.05


def exceeds(row: Comparison, tol: Tolerances) -> list[str]:
    """What in a row is beyond the tolerances (empty: nothing)."""
    out = []
    if row.status != "compared":
        return [row.status]
    if np.isfinite(row.flux_ratio) and abs(row.flux_ratio - 1) > tol.flux_ratio:
        out.append(f"flux ratio {row.flux_ratio:.4f}")
    shift = float(np.hypot(row.shift_e_mas, row.shift_n_mas))
    if np.isfinite(shift) and shift > tol.shift_mas:
        out.append(f"shift {shift:.1f} mas")
    if np.isfinite(row.background_diff) and abs(row.background_diff) > tol.background:
        out.append(f"background {row.background_diff:+.4f}")
    if abs(row.coverage_new - row.coverage_old) > tol.coverage:
        out.append(f"coverage {row.coverage_old:.3f} -> {row.coverage_new:.3f}")
    return out


def write_comparison(rows: list[Comparison], tol: Tolerances, out_dir: Path, old: Path,
                     new: Path) -> Path:
    """Write ``comparison.ecsv`` and an ``index.html`` page (table + figures) into ``out_dir``."""
    import html

    from jwstgal.provenance import atomic_path, write_text_atomic

    table = comparison_table(rows, tol)
    table.meta.update({"old": str(old), "new": str(new)})
    out_dir.mkdir(parents=True, exist_ok=True)
    with atomic_path(out_dir / "comparison.ecsv") as tmp:
        table.write(tmp, format="ascii.ecsv")
    cols = ["target", "band", "status", "flux_ratio", "shift_e_mas", "shift_n_mas", "background_diff",
            "coverage_old", "coverage_new", "flags"]
    head = "".join(f"<th>{c}</th>" for c in cols)
    body = []
    for r in table:
        cells = [f"{r[c]:.4g}" if isinstance(r[c], float | np.floating) else html.escape(str(r[c]))
                 for c in cols]
        css = " class='fail'" if r["flags"] else ""
        body.append(f"<tr{css}>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    figs = "".join(f'<figure><a href="{p.name}"><img src="{p.name}" alt="{p.stem}"></a>'
                   f"<figcaption>{p.stem}</figcaption></figure>" for p in sorted(out_dir.glob("*.png")))
    page = ("<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>release comparison"
            "</title><style>body{font-family:sans-serif;margin:2em}td,th{border:1px solid #ccc;"
            "padding:2px 6px}table{border-collapse:collapse}.fail{color:#b00}img{max-width:900px}"
            f"</style></head><body><h1>{html.escape(new.name)} vs {html.escape(old.name)}</h1>"
            f"<p>Tolerances: {html.escape(str(asdict(tol)))}</p><table><tr>{head}</tr>{''.join(body)}"
            f"</table>{figs}</body></html>")
    write_text_atomic(out_dir / "index.html", page)
    return out_dir / "comparison.ecsv"


def comparison_table(rows: list[Comparison], tol: Tolerances) -> Table:
    """The rows as a table, with a ``flags`` column."""
    table = Table(rows=[asdict(r) for r in rows]) if rows else Table()
    if rows:
        table["flags"] = ["; ".join(exceeds(r, tol)) for r in rows]
    table.meta["tolerances"] = asdict(tol)
    return table


def run_comparison(old: Path, new: Path, out_dir: Path | None, tol: Tolerances, *, dry_run: bool = False
                   ) -> int:
    """Compare, write the table and page, log what is beyond ``tol``; returns the exit code.

    ``dry_run``: print which mosaics would be compared and where the results would go; write nothing.
    """
    import sys

    from jwstgal.errors import ConfigError, InputNotFoundError

    for rel in (old, new):
        if not (rel / "MANIFEST.ecsv").is_file():
            msg = f"{rel}: not a release (no MANIFEST.ecsv)"
            raise InputNotFoundError(msg)
    try:
        plan = plan_comparison(old, new)
    except FileNotFoundError as err:          # a garbage manifest
        raise InputNotFoundError(str(err)) from None
    out_dir = (out_dir or new.parent / f"comparison_{old.name}_to_{new.name}").resolve()
    for rel in (old, new):
        if out_dir == rel or rel in out_dir.parents:
            msg = (f"--out-dir {out_dir} is inside the release {rel}: the comparison would add files "
                   "its manifest does not list; write it beside the release")
            raise ConfigError(msg)
    if dry_run:
        sys.stdout.write(f"dry run: compare {old} -> {new} into {out_dir} (nothing is written)\n")
        sys.stdout.writelines(f"  {t} {band}: {how}\n" for t, band, how in plan)
        return 0
    rows = compare_releases(old, new, png_dir=out_dir)
    table = write_comparison(rows, tol, out_dir, old, new)
    flagged = 0
    for r in rows:
        if why := exceeds(r, tol):
            log.warning("%s %s: %s", r.target, r.band, "; ".join(why))
            flagged += 1
        else:
            log.info("%s %s: flux ratio %.4f, shift (%+.1f, %+.1f) mas, background %+.4f", r.target,
                     r.band, r.flux_ratio, r.shift_e_mas, r.shift_n_mas, r.background_diff)
    log.info("%d mosaics compared, %d beyond tolerance: %s", len(rows), flagged, table)
    return 1 if flagged else 0
