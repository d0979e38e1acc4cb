"""The QA page of a run: ``<reprocess_dir>/qa/index.html``, built from the step registry.

The page opens with one verdict per band (:mod:`jwstgal.verdicts`) and a summary table. Then, for
every target/band on disk, a section folded under its verdict: one row per registered step (what
happened to it in this run, what its record says, its hash key, how many outputs), each step's
figures and notes (final products first), the band's kernels and its anchoring. Links are
relative, so the folder can be copied or served.
"""

from __future__ import annotations

import contextlib
import html
import json
import logging
import math
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from astropy.io import fits

from jwstgal import layout
from jwstgal.bands import Band, get_band
from jwstgal.config import RunConfig
from jwstgal.provenance import write_text_atomic
from jwstgal.steps import StepRecord, run_order, with_needs
from jwstgal.verdicts import BandFacts, band_verdict

log = logging.getLogger(__name__)

_STYLE = ("body{font-family:sans-serif;margin:2em;max-width:1400px}"
          ".verdict-ok{color:#070;font-weight:bold}.verdict-check{color:#b60;font-weight:bold}"
          ".verdict-failed{color:#b00;font-weight:bold}"
          "table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:2px 8px}"
          ".figs{display:flex;flex-wrap:wrap;gap:1em}figure{margin:0}img{max-width:420px}"
          ".fail,.failed{color:#b00;font-weight:bold}.complete,.ran{color:#070}.started{color:#b60}"
          ".skipped{color:#555}summary{cursor:pointer}summary h2{display:inline}")

#: Bands' sections are folded (the page opens short); a link to one (the verdict table's) opens it.
_OPEN_LINKED = ("<script>function openLinked(){const s=document.getElementById(location.hash.slice(1));"
                "const d=s&&s.querySelector('details');if(d){d.open=true;s.scrollIntoView();}}"
                "window.addEventListener('hashchange',openLinked);openLinked();</script>")


def _img(path: Path, root: Path, alt: str) -> str:
    rel = path.relative_to(root.parent) if path.is_relative_to(root.parent) else path
    href = html.escape(f"../{rel}")
    return (f'<figure><a href="{href}"><img src="{href}" alt="{html.escape(alt)}" loading="lazy"></a>'
            f"<figcaption>{html.escape(alt)}</figcaption></figure>")


def _css(word: str) -> str:
    return word.split(" ")[0] if word else ""


def _step_rows(bdir: Path, steps: list[str], status: dict[str, str]) -> str:
    rows = []
    steps = with_needs(s for s in steps if s != "all")
    for step in run_order(steps):
        rec = StepRecord(bdir.parent if step.scope == "target" else bdir, step.name).read()
        if step.name not in steps and not rec:
            continue
        record = "complete" if rec.get("complete") else ("started" if rec else "not run")
        now = status.get(step.name, "")
        rows.append(f"<tr><td>{step.name}</td><td class='{_css(now)}'>{html.escape(now or '-')}</td>"
                    f"<td class='{_css(record)}'>{record}</td><td><code>{rec.get('key', '')}</code></td>"
                    f"<td>{len(rec.get('outputs', []))}</td></tr>")
    return ("<table><tr><th>step</th><th>this run</th><th>record</th><th>input/parameter hash</th>"
            "<th>outputs</th></tr>" + "".join(rows) + "</table>")


def _kernel_rows(cfg: RunConfig, band: str, max_wminus: float) -> str:
    rows = []
    for t in cfg.science.kernel_targets:
        for m in cfg.science.kernels.methods:
            kp = layout.kernel_path(cfg.psf_dir, m, band, t)
            if "KERN_WM" in (h := _header(kp)):
                flag = " class='fail'" if h["KERN_WM"] > max_wminus else ""
                models = html.escape(f"{h.get('PSFMODS', '?')} → {h.get('PSFMODT', '?')}")
                rows.append(f"<tr{flag}><td>{t}</td><td>{m}</td><td>{h['KERN_D']:.2e}</td>"
                            f"<td>{h['KERN_WM']:.3f}</td><td>{h['SAFETY']}</td><td>{models}</td></tr>")
    if not rows:
        return ""
    return ("<table><tr><th>kernel to</th><th>method</th><th>D = Σ|S⊗K − T| (dimensionless)</th>"
            "<th>W− (total negative weight)</th><th>safety (Aniano 2011)</th>"
            "<th>PSF models (source → target)</th></tr>"
            + "".join(rows) + "</table>")


def _anchor_part(cfg: RunConfig, target: str, band: str, root: Path) -> str:
    """The band's anchoring: its row of the target's table and its fit's scatter plot."""
    table = layout.anchor_table(cfg.reprocess_dir, target)
    if not table.is_file():
        return ""
    from astropy.table import Table

    rows = [r for r in Table.read(table, format="ascii.ecsv") if r["band"] == band]
    if not rows:
        return ""
    r = rows[0]
    parts = ""
    if "offset_sys_err" in r.colnames:         # tables from before the systematic errors lack them
        parts = (f" (statistical {r['offset_stat_err']:.4f}, systematic {r['offset_sys_err']:.4f}; "
                 f"fit: {r['method']})")
    text = (f"offset {r['offset']:+.4f} ± {r['offset_err']:.4f} MJy/sr{parts} against {r['reference']} "
            f"at {r['psf']} (slope {r['slope']:.3f}, {r['npix']} pixels)" if r["status"] == "anchored"
            else str(r["status"]))
    if "note" in r.colnames and str(r["note"]).strip() not in ("", "--"):
        text += f" ({r['note']})"
    figs = [_img(p, root, p.stem) for p in sorted(table.parent.glob(f"{target}_{band}_vs_*.png"))]
    return (f"<h3>anchoring</h3><p>{html.escape(text)}</p>" + _truth_line(cfg, target, band)
            + '<div class="figs">' + "".join(figs) + "</div>")


def _truth_line(cfg: RunConfig, target: str, band: str) -> str:
    """A simulated band's anchoring against the simulation's truth, with issue #26 item 3's verdict."""
    path = layout.anchor_truth(cfg.reprocess_dir, target)
    t = json.loads(path.read_text()).get(band) if path.is_file() else None
    if not t:
        return ""
    if "error" not in t:
        return f"<p>Against the simulation's truth: {html.escape(str(t.get('note', '')))}</p>"
    target_text = (f"within 10 % of its sky ({t['sky']:.3g} MJy/sr): ±{t['limit']:.3g}" if t["chained"]
                   else f"within half its pixel noise at 4\" ({t['noise']:.3g} MJy/sr): ±{t['limit']:.3g}")
    word, css = ("met", "ok") if t["met"] else ("missed", "check")
    return (f"<p>Against the simulation's truth: {t['error']:+.4f} ± {t['error_err']:.4f} MJy/sr, "
            f"{t['sigmas']:+.1f} quoted sigma, {100 * t['error'] / t['sky']:+.0f} % of the sky; target "
            f"{html.escape(target_text)} and within 2 sigma: <span class='verdict-{css}'>{word}</span></p>")


def _header(path: Path) -> Any:
    """A file's primary header, or an empty one when it is missing or unreadable.

    The page is written whatever state the products are in.
    """
    try:
        return fits.getheader(path) if path.is_file() else fits.Header()
    except OSError as err:
        log.warning("QA page: %s unreadable (%s)", path, err)
        return fits.Header()


def _bands_on_disk(cfg: RunConfig) -> Iterator[tuple[str, Band, Path]]:
    """(target, band, band folder) of every configured target/band that has a folder."""
    for target in cfg.science.targets:
        for name in cfg.science.bands:
            band = get_band(name)
            bdir = layout.band_dir(cfg.reprocess_dir, target, band)
            if bdir.is_dir():
                yield target, band, bdir


def band_facts(cfg: RunConfig, target: str, band: Band, bdir: Path, res: Any) -> BandFacts:
    """What the page knows about a band, for its verdict (:func:`jwstgal.verdicts.band_verdict`)."""
    status = dict(getattr(res, "status", {}) or {})
    facts = BandFacts(error=str(getattr(res, "error", "") or ""),
                      failed_steps=[s for s, w in status.items() if w.startswith("failed")],
                      skipped_steps=[s for s, w in status.items() if w == "skipped (no input)"])
    for t in cfg.science.kernel_targets:
        for m in cfg.science.kernels.methods:
            if "KERN_WM" in (h := _header(layout.kernel_path(cfg.psf_dir, m, band.name, t))):
                facts.kernel_wminus[f"{t} ({m})"] = float(h["KERN_WM"])
    sol = bdir / "astrometric_align" / "solution.json"
    if sol.is_file():
        with contextlib.suppress(ValueError, KeyError, TypeError):
            s = json.loads(sol.read_text())
            facts.alignment_shift_mas = float(math.hypot(*s["shift_arcsec"]) * 1000)
            facts.alignment_rms_mas = float(s["rms_mas"])
            facts.alignment_matches = int(s["n_matches"])
            lender = str(s.get("borrowed_from") or "")
            facts.alignment_borrowed = Path(lender).parent.parent.name if lender else ""
            if s.get("cross_correlated_with"):      # no stars matched: its error stands for the rms
                facts.alignment_borrowed = f"{s['cross_correlated_with']}, cross-correlated"
            own = s.get("own_stars") or {}
            facts.borrowed_own_stars = int(own.get("n") or 0)
            facts.borrowed_offset_mas = float(own.get("offset_mas") or math.nan)
    table = layout.anchor_table(cfg.reprocess_dir, target)
    if table.is_file():
        from astropy.table import Table

        with contextlib.suppress(ValueError, KeyError, OSError):
            for r in Table.read(table, format="ascii.ecsv"):
                if r["band"] == band.name:
                    facts.anchor_status, facts.anchor_error = str(r["status"]), float(r["offset_err"])
                    if "sky" in r.colnames:           # tables from before it lack the faint sky
                        facts.anchor_sky = float(r["sky"])
    rungs = layout.rung_failures(bdir)
    if rungs.is_file():
        with contextlib.suppress(ValueError):
            facts.failed_rungs = [str(x) for x in json.loads(rungs.read_text())]
    widths = layout.ladder_widths(bdir)
    if widths.is_file():
        with contextlib.suppress(ValueError, AttributeError):
            facts.ladder_widths = dict(json.loads(widths.read_text()).get("rungs", {}))
    _destripe_and_level_facts(facts, cfg, band, bdir)
    return facts


def _ladder_rows(bdir: Path, limit: float) -> str:
    """The table of the rung products' star widths against their PSFs."""
    path = layout.ladder_widths(bdir)
    try:
        rungs = json.loads(path.read_text()).get("rungs", {}) if path.is_file() else {}
    except (ValueError, OSError):
        return ""
    if not rungs:
        return ""
    rows = []
    for rung, w in rungs.items():
        if w.get("ratio") is None:
            rows.append(f"<tr><td>{html.escape(rung)}</td><td>{w.get('n', 0)}</td><td colspan='3'>"
                        f"not measured: {html.escape(str(w.get('note', '')))}</td></tr>")
            continue
        err = w.get("ratio_err") or 0.0
        word = "check" if w["n"] >= 3 and abs(w["ratio"] - 1) - 2 * err > limit else "ok"
        rows.append(f"<tr><td>{html.escape(rung)}</td><td>{w['n']}</td>"
                    f"<td>{w['measured_fwhm_arcsec']:.4f}\" / {w['expected_fwhm_arcsec']:.4f}\"</td>"
                    f"<td>{100 * (w['ratio'] - 1):+.2f} ± {100 * err:.2f} %</td>"
                    f"<td class='verdict-{word}'>{word}</td></tr>")
    return ("<h3>ladder: stars against each rung's PSF</h3><table><tr><th>rung</th><th>stars</th>"
            "<th>FWHM (stars / PSF, Gaussian fit)</th><th>difference</th><th></th></tr>"
            + "".join(rows) + "</table>")


def _destripe_and_level_facts(facts: BandFacts, cfg: RunConfig, band: Band, bdir: Path) -> None:
    """Stripes left by the last destriping step (worst exposure), and the level matching's pairs."""
    for step in reversed(run_order(getattr(cfg.science.pipeline.steps, band.instrument))):
        if step.base in ("destripe", "stack_destripe", "rate_destripe"):
            pattern = getattr(step, "pattern", "*_cal.fits")
            res = {p.name: _header(p).get("DSTRRES") for p in sorted((bdir / step.name).glob(pattern))}
            res = {k: float(v) for k, v in res.items() if isinstance(v, int | float)}
            if res:
                facts.stripe_residual_file = max(res, key=res.__getitem__)
                facts.stripe_residual = res[facts.stripe_residual_file]
                break
    offsets = bdir / layout.step_folder("level_match") / "offsets.ecsv"
    if offsets.is_file():
        from astropy.table import Table

        with contextlib.suppress(ValueError, KeyError, OSError):
            t = Table.read(offsets, format="ascii.ecsv")
            facts.level_pairs = int(t.meta.get("n_pairs", 0))
            facts.level_rejected = int(t.meta.get("n_rejected", 0))
            facts.level_isolated = int(sum(bool(x) for x in t["isolated"])) if len(t) > 1 else 0


def _verdict_table(cfg: RunConfig, outcome: dict) -> str:
    """One line per band at the top of the page: ok / check / failed, with the reasons, linked."""
    rows = []
    for target, band, bdir in _bands_on_disk(cfg):
        word, why = band_verdict(band_facts(cfg, target, band, bdir, outcome.get((target, band.name))),
                                 cfg.science.qa)
        rows.append(f"<tr class='band-verdict' data-verdict='{word}'><td><a href='#{target}-{band.name}'>"
                    f"{target} {band.name}</a></td><td class='verdict-{word}'>{word}</td>"
                    f"<td>{html.escape('; '.join(why)) or 'nothing beyond the [qa] limits'}</td></tr>")
    if not rows:
        return ""
    return ("<h2>Verdicts</h2><table id='verdicts'><tr><th>band</th><th>verdict</th><th>why</th></tr>"
            + "".join(rows) + "</table>")


def _cell(row: dict[str, str], col: str) -> str:
    """A summary cell: its text, escaped; the band's is a link to the band's section."""
    text = html.escape(row.get(col, "-"))
    return f"<a href='#{row['target']}-{row['band']}'>{text}</a>" if col == "band" else text


def _summary_table(cfg: RunConfig, outcome: dict) -> str:
    """One row per target/band: what ran, and each step's, the kernels' and anchoring's figures."""
    rows: list[dict[str, str]] = []
    context: set[str] = set()
    for target, band, bdir in _bands_on_disk(cfg):
        res = outcome.get((target, band.name))
        status = dict(getattr(res, "status", {}) or {})
        counts: dict[str, int] = {}
        for word in status.values():
            if not word.startswith("not configured"):
                short = word.split(" (")[0]
                counts[short] = counts.get(short, 0) + 1
        row = {"target": target, "band": band.name,
               "steps": ", ".join(f"{n} {w}" for w, n in sorted(counts.items())) or "-",
               "exposures": str(len(list((bdir / layout.step_folder("lv2")).glob("*_cal.fits"))))}
        if getattr(res, "error", ""):
            row["steps"] = "FAILED; " + row["steps"]
        for step in run_order(getattr(cfg.science.pipeline.steps, band.instrument)):
            cols = step.qa_summary(bdir, target, band)
            row.update(cols if step.name == step.base else {f"{k} ({step.name})": v for k, v in cols.items()})
        wm = [h["KERN_WM"] for t in cfg.science.kernel_targets for m in cfg.science.kernels.methods
              if "KERN_WM" in (h := _header(layout.kernel_path(cfg.psf_dir, m, band.name, t)))]
        if wm:
            row["kernels: worst W-"] = f"{max(wm):.3f} ({len(wm)})"
        rungs = sorted(p.stem.rsplit("_conv_", 1)[-1]
                       for p in layout.convolved_dir(bdir).glob("*_conv_*.fits"))
        if rungs:
            row["convolved to"] = ", ".join(rungs)
        anchored = layout.anchored_mosaic(bdir, target, band)
        if "ANCHOFF" in (h := _header(anchored)):
            row["background offset [MJy/sr]"] = f"{h['ANCHOFF']:+.4f} ± {h['ANCHERR']:.4f} ({h['ANCHREF']})"
        if h := _header(layout.final_mosaic(bdir, target, band)):
            context.add(f"jwst {h.get('CAL_VER', '?')}, CRDS context {h.get('CRDS_CTX', '?')}")
        rows.append(row)
    if not rows:
        return ""
    cols = list(dict.fromkeys(k for r in rows for k in r))
    head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
    body = "".join("<tr>" + "".join(f"<td>{_cell(r, c)}</td>" for c in cols) + "</tr>" for r in rows)
    from jwstgal import __version__

    stamp = (f"jwstgal {__version__}; {'; '.join(sorted(context)) or 'no mosaic yet'}; page written "
             f"{datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}.")
    return (f"<h2>Summary</h2><p>{html.escape(stamp)}</p><table id='summary'><tr>{head}</tr>{body}"
            "</table>")


def write_report(cfg: RunConfig, results: list[Any] | None = None) -> Path:
    """Write ``<reprocess_dir>/qa/index.html`` summarising every target/band on disk.

    Parameters
    ----------
    cfg : RunConfig
        The run's configuration.
    results : list of BandResult, optional
        Outcome of this run (failures, notes and per-step status are shown; kept in
        ``qa/last_run.json``); otherwise the last reprocessing run's outcome, as kept there (the
        post-processing scripts rewrite the page so that their products appear on it).

    Returns
    -------
    pathlib.Path
        The HTML page.
    """
    root = layout.run_qa_dir(cfg.reprocess_dir)
    kept = root / "last_run.json"
    if results is not None:
        write_text_atomic(kept, json.dumps([{"target": r.target, "band": r.band, "error": r.error,
                                             "notes": list(r.notes), "status": dict(r.status)}
                                            for r in results]))
    elif kept.is_file():
        results = [SimpleNamespace(**r) for r in json.loads(kept.read_text())]
    outcome = {(r.target, r.band): r for r in (results or [])}
    parts_summary = _summary_table(cfg, outcome)
    parts = [f"<h1>jwstgal QA: {html.escape(cfg.config_path.name)} "
             f"({html.escape(cfg.science.pipeline.data_version)})</h1>",
             f"<p>Config hash <code>{cfg.config_hash}</code>. Raw data: "
             f"<code>{html.escape(str(cfg.raw_dir))}</code>.</p>", _verdict_table(cfg, outcome),
             parts_summary]
    for target, band, bdir in _bands_on_disk(cfg):
        res = outcome.get((target, band.name))
        word, _ = band_verdict(band_facts(cfg, target, band, bdir, res), cfg.science.qa)
        parts.append(f'<section id="{target}-{band.name}"><details><summary><h2>{target} {band.name}: '
                     f"<span class='verdict-{word}'>{word}</span></h2></summary>")
        if res is not None and res.error:
            parts.append(f'<p class="fail">FAILED: {html.escape(res.error)}</p>')
        if res is not None and res.notes:
            parts.append("<ul class='notes'>" + "".join(f"<li>{html.escape(n)}</li>" for n in res.notes)
                         + "</ul>")
        steps = getattr(cfg.science.pipeline.steps, band.instrument)
        parts.append(_step_rows(bdir, steps, res.status if res is not None else {}))
        for step in reversed(run_order(steps)):
            figs = [_img(p, root, alt) for p, alt in step.figures(bdir, target, band) if p.is_file()]
            notes = step.notes(bdir, target, band)
            if figs or notes:
                parts.append(f"<h3>{step.name}</h3>" + "".join(f"<p>{html.escape(n)}</p>" for n in notes)
                             + '<div class="figs">' + "".join(figs) + "</div>")
        parts.append(_kernel_rows(cfg, band.name, cfg.science.qa.max_kernel_wminus))
        if (rungs := layout.rung_failures(bdir)).is_file() and (failed := json.loads(rungs.read_text())):
            parts.append("<h3>convolution</h3><ul class='fail'>" + "".join(
                f"<li>not convolved: {html.escape(str(f))}</li>" for f in failed) + "</ul>")
        parts.append(_ladder_rows(bdir, cfg.science.qa.max_ladder_fwhm_error))
        parts.append(_anchor_part(cfg, target, band.name, root))
        parts.append("</details></section>")
    page = ("<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>jwstgal QA</title>"
            f"<style>{_STYLE}</style></head><body>" + "\n".join(parts) + _OPEN_LINKED + "</body></html>")
    write_text_atomic(root / "index.html", page)
    return root / "index.html"
