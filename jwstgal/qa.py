"""Quality assurance: PNG diagnostics per step and an HTML summary page per run.

Each completed step writes its diagnostics into ``<band_dir>/qa/``:

- ``lv1_rate.png`` / ``lv2_cal.png``: contact sheets of every exposure;
- ``lv3`` the mosaic quicklook (``lv3/<product>_i2d.png``) and, when the target has an astrometric
  reference catalogue, ``lv3_astrometry.png`` (quiver plot of catalogue-minus-reference offsets) with
  ``lv3_astrometry.json`` (median offset, rms, number of matches).

:func:`write_report` gathers them, with step records and kernel metrics, into
``<reprocess_dir>/qa/index.html`` (relative links, so the folder can be copied or served).
"""

from __future__ import annotations

import html
import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from astropy.io import fits

from jwstgal.provenance import atomic_path, write_text_atomic
from jwstgal.quicklook import quicklook_png, stretch_limits

if TYPE_CHECKING:
    from jwstgal.config import RunConfig
    from jwstgal.reprocess import BandProcessor, StepPlan

log = logging.getLogger(__name__)


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def block_reduce(data: np.ndarray, size: int = 128) -> np.ndarray:
    """Downsample an image by block means to at most ``size`` pixels per side (NaN-aware)."""
    f = max(1, int(np.ceil(max(data.shape) / size)))
    ny, nx = (data.shape[0] // f) * f, (data.shape[1] // f) * f
    blocks = data[:ny, :nx].reshape(ny // f, f, nx // f, f)
    with np.errstate(invalid="ignore"):
        return np.nanmean(blocks, axis=(1, 3)) if np.isnan(blocks).any() else blocks.mean(axis=(1, 3))


def contact_sheet(files: list[Path], png: Path, title: str, ext: str = "SCI") -> Path | None:
    """Thumbnails of every exposure's ``ext`` image on one PNG."""
    files = [f for f in files if f.is_file()]
    if not files:
        return None
    plt = _plt()
    n = len(files)
    cols = min(n, 4)
    rows = int(np.ceil(n / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(3 * cols, 3 * rows + 0.4), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, f in zip(axes.ravel(), files, strict=False):
        thumb = block_reduce(np.asarray(fits.getdata(f, ext), float))
        vmin, vmax = stretch_limits(thumb, 1, 99)
        ax.imshow(thumb, origin="lower", cmap="gray", vmin=vmin, vmax=vmax)
        ax.set_title(f.name.split("_")[0][-6:] + "_" + "_".join(f.name.split("_")[1:3]), fontsize=7)
    fig.suptitle(title)
    with atomic_path(png) as tmp:
        fig.savefig(tmp, dpi=80, bbox_inches="tight", format="png")
    plt.close(fig)
    return png


def astrometric_residuals(catalog: Path, refcat: Path, match_arcsec: float = 0.3) -> dict[str, Any]:
    """Offsets (mas) of a stage-3 catalogue's sources from an astrometric reference catalogue."""
    from astropy.coordinates import SkyCoord
    from astropy.table import Table

    cat = Table.read(catalog)
    ref = Table.read(refcat)
    cols = {c.lower(): c for c in ref.colnames}
    rc = SkyCoord(ref[cols["ra"]], ref[cols["dec"]], unit="deg")
    sc = cat["sky_centroid"]
    idx, sep, _ = sc.match_to_catalog_sky(rc)
    good = sep.arcsec < match_arcsec
    dra = ((sc.ra[good] - rc.ra[idx[good]]) * np.cos(rc.dec[idx[good]].radian)).to_value("mas")
    ddec = (sc.dec[good] - rc.dec[idx[good]]).to_value("mas")
    return {"n": int(good.sum()), "median_dra_mas": float(np.median(dra)) if good.any() else None,
            "median_ddec_mas": float(np.median(ddec)) if good.any() else None,
            "rms_mas": float(np.sqrt(np.mean(dra**2 + ddec**2))) if good.any() else None,
            "ra": sc.ra.deg[good].tolist(), "dec": sc.dec.deg[good].tolist(),
            "dra": dra.tolist(), "ddec": ddec.tolist()}


def quiver_png(res: dict[str, Any], png: Path, title: str) -> Path:
    """Quiver plot of astrometric residuals."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.5, 5))
    if res["n"]:
        ra, dec = np.asarray(res["ra"]), np.asarray(res["dec"])
        x = (ra - ra.mean()) * np.cos(np.deg2rad(dec.mean())) * 3600
        y = (dec - dec.mean()) * 3600
        q = ax.quiver(x, y, res["dra"], res["ddec"], angles="xy")
        ax.quiverkey(q, 0.85, 1.03, 20, "20 mas", labelpos="E")
        ax.invert_xaxis()
    ax.set_xlabel("RA offset [arcsec]")
    ax.set_ylabel("Dec offset [arcsec]")
    med = (f"median ({res['median_dra_mas']:.1f}, {res['median_ddec_mas']:.1f}) mas, "
           f"rms {res['rms_mas']:.1f} mas" if res["n"] else "no match")
    ax.set_title(f"{title}: {res['n']} matches\n{med}", fontsize=9)
    with atomic_path(png) as tmp:
        fig.savefig(tmp, dpi=90, bbox_inches="tight", format="png")
    plt.close(fig)
    return png


def step_diagnostics(proc: BandProcessor, plan: StepPlan) -> list[Path]:
    """Write the PNG diagnostics of a completed step (never fails the step: problems are logged)."""
    qa_dir = proc.band_dir / "qa"
    out: list[Path] = []
    try:
        if plan.step == "lv1":
            out.append(contact_sheet(plan.outputs, qa_dir / "lv1_rate.png",
                                     f"{proc.label}: stage 1 rates"))
        elif plan.step == "lv2":
            out.append(contact_sheet(plan.outputs, qa_dir / "lv2_cal.png",
                                     f"{proc.label}: stage 2 calibrated exposures"))
        elif plan.step in ("destripe", "stack_destripe"):
            what = "single-frame" if plan.step == "destripe" else "stack-based"
            out.append(contact_sheet(plan.outputs, qa_dir / f"{plan.step}.png",
                                     f"{proc.label}: after {what} destriping"))
        elif plan.step == "lv3":
            mosaic = plan.outputs[0]
            out.append(quicklook_png(mosaic, mosaic.with_suffix(".png"), title=proc.label))
            cat = mosaic.with_name(mosaic.name.replace("_i2d.fits", "_cat.ecsv"))
            ref = proc.cfg.science.alignment.get(proc.target)
            if cat.is_file() and ref:
                res = astrometric_residuals(cat, proc.cfg.alignment_dir / ref)
                write_text_atomic(qa_dir / "lv3_astrometry.json", json.dumps(
                    {k: v for k, v in res.items() if k not in ("ra", "dec", "dra", "ddec")}))
                out.append(quiver_png(res, qa_dir / "lv3_astrometry.png",
                                      f"{proc.label} vs {ref}"))
    except Exception:  # diagnostics must never lose a finished step
        log.exception("%s: could not write %s diagnostics", proc.label, plan.step)
    return [p for p in out if p is not None]


def _img(path: Path, root: Path, alt: str) -> str:
    rel = path.relative_to(root.parent) if path.is_relative_to(root.parent) else path
    return (f'<figure><a href="../{html.escape(str(rel))}"><img src="../{html.escape(str(rel))}" '
            f'alt="{html.escape(alt)}" loading="lazy"></a><figcaption>{html.escape(alt)}'
            "</figcaption></figure>")


def write_report(cfg: RunConfig, results: list[Any] | None = None) -> Path:
    """Write ``<reprocess_dir>/qa/index.html`` summarising every target/band on disk.

    Parameters
    ----------
    cfg : RunConfig
        The run's configuration.
    results : list of BandResult, optional
        Outcome of this run (failures are shown); otherwise only what is on disk.

    Returns
    -------
    pathlib.Path
        The HTML page.
    """
    from jwstgal.bands import get_band
    from jwstgal.kernel_products import kernel_path
    from jwstgal.reprocess import StepRecord, product_name

    root = cfg.reprocess_dir / "qa"
    errors = {(r.target, r.band): r.error for r in (results or []) if r.error}
    parts = [f"<h1>jwstgal QA: {html.escape(cfg.config_path.name)} "
             f"({html.escape(cfg.science.pipeline.data_version)})</h1>",
             f"<p>Config hash <code>{cfg.config_hash}</code>. Raw data: "
             f"<code>{html.escape(str(cfg.raw_dir))}</code>.</p>"]
    for target in cfg.science.targets:
        for name in cfg.science.bands:
            band = get_band(name)
            bdir = cfg.reprocess_dir / target / band.name
            if not bdir.is_dir():
                continue
            parts.append(f'<section id="{target}-{band.name}"><h2>{target} {band.name}</h2>')
            if (target, band.name) in errors:
                parts.append(f'<p class="fail">FAILED: {html.escape(errors[(target, band.name)])}</p>')
            rows = []
            for step in getattr(cfg.science.pipeline.steps, band.instrument):
                rec = StepRecord(bdir, step).read()
                status = "complete" if rec.get("complete") else ("started" if rec else "not run")
                rows.append(f"<tr><td>{step}</td><td class='{status.replace(' ', '')}'>{status}</td>"
                            f"<td><code>{rec.get('key', '')}</code></td>"
                            f"<td>{len(rec.get('outputs', []))}</td></tr>")
            parts.append("<table><tr><th>step</th><th>status</th><th>input/parameter hash</th>"
                         "<th>outputs</th></tr>" + "".join(rows) + "</table>")
            figs = []
            quick = bdir / "lv3" / f"{product_name(target, band)}_i2d.png"
            for path, alt in ((quick, "stage 3 mosaic"),
                              (bdir / "qa" / "astrometric_align.png",
                               "residuals after absolute alignment"),
                              (bdir / "qa" / "lv3_astrometry.png", "astrometric residuals"),
                              (bdir / "qa" / "level_match.png", "level offsets"),
                              (bdir / "qa" / "stack_destripe.png", "after stack-based destriping"),
                              (bdir / "qa" / "destripe.png", "after single-frame destriping"),
                              (bdir / "qa" / "lv2_cal.png", "stage 2 exposures"),
                              (bdir / "qa" / "lv1_rate.png", "stage 1 rates")):
                if path.is_file():
                    figs.append(_img(path, root, alt))
            parts.append('<div class="figs">' + "".join(figs) + "</div>")
            for step, what in (("destripe", "Single-frame"), ("stack_destripe", "Stack-based")):
                panels = sorted((bdir / "qa" / step).glob("*.png"))
                if panels:  # before / mask / model / after for the first exposures
                    parts.append(f"<h3>{what} destriping: input, mask, stripe model, result "
                                 f"({min(len(panels), 3)} of {len(panels)} exposures)</h3>"
                                 '<div class="figs wide">'
                                 + "".join(_img(pth, root, f"{what} destriping {pth.stem}")
                                           for pth in panels[:3]) + "</div>")
            astro = bdir / "qa" / "lv3_astrometry.json"
            if astro.is_file():
                a = json.loads(astro.read_text())
                if a.get("n"):
                    parts.append(f"<p>Astrometry vs reference after stage 3 (before any "
                                 f"astrometric_align): {a['n']} matches, median offset "
                                 f"({a['median_dra_mas']:.1f}, {a['median_ddec_mas']:.1f}) mas, "
                                 f"rms {a['rms_mas']:.1f} mas.</p>")
            krows = []
            for t in cfg.science.kernels.targets:
                for m in cfg.science.kernels.methods:
                    kp = kernel_path(cfg.psf_dir, m, band.name, t)
                    if kp.is_file():
                        h = fits.getheader(kp)
                        krows.append(f"<tr><td>{t}</td><td>{m}</td><td>{h['KERN_D']:.2e}</td>"
                                     f"<td>{h['KERN_WM']:.3f}</td><td>{h['SAFETY']}</td></tr>")
            if krows:
                parts.append("<table><tr><th>kernel to</th><th>method</th><th>D</th><th>W-</th>"
                             "<th>safety</th></tr>" + "".join(krows) + "</table>")
            parts.append("</section>")
    page = (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>jwstgal QA</title>"
        "<style>body{font-family:sans-serif;margin:2em;max-width:1400px}"
        "table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:2px 8px}"
        ".figs{display:flex;flex-wrap:wrap;gap:1em}figure{margin:0}img{max-width:420px}"
        ".wide img{max-width:900px}"
        ".fail{color:#b00;font-weight:bold}.complete{color:#070}.started{color:#b60}</style>"
        "</head><body>" + "\n".join(parts) + "</body></html>")
    write_text_atomic(root / "index.html", page)
    return root / "index.html"
