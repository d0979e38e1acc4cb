"""The QA page's verdicts (issue #28 item 2): one line per band, ok / check / failed, with the reasons."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from astropy.io import fits
from factories import MINIMAL_SCIENCE as MINIMAL
from factories import write_config

from jwstgal.verdicts import BandFacts, QaLimits, band_verdict

LIMITS = QaLimits()


@pytest.mark.parametrize(("facts", "word", "reason"), [
    (BandFacts(), "ok", ""),
    (BandFacts(kernel_wminus={"gauss0.92 (pypher)": 3.07}), "check", "very unsafe: W- = 3.07 > 0.5"),
    (BandFacts(kernel_wminus={"F2100W (aniano)": 0.7}), "check", "kernel to F2100W (aniano) unsafe"),
    (BandFacts(kernel_wminus={"F2100W (aniano)": 0.2}), "ok", ""),
    (BandFacts(alignment_rms_mas=45.0, alignment_matches=50), "check", "alignment rms 45.0 mas > 30 mas"),
    (BandFacts(alignment_rms_mas=5.0, alignment_shift_mas=2500, alignment_matches=50), "check",
     "alignment shift 2500 mas"),
    (BandFacts(alignment_rms_mas=5.0, alignment_matches=3), "check", "alignment on 3 stars"),
    (BandFacts(alignment_rms_mas=5.0, alignment_matches=0, alignment_borrowed="F770W"), "ok", ""),
    (BandFacts(anchor_status="not anchored: no usable external map (irac4: ...)"), "check",
     "not anchored: no usable external map"),
    (BandFacts(anchor_status="anchored", anchor_error=0.2), "check", "background offset error 0.200 MJy/sr"),
    # a faint band: 0.04 MJy/sr is below the absolute limit but a third of its sky (0.12)
    (BandFacts(anchor_status="anchored", anchor_error=0.04, anchor_sky=0.12), "check",
     "background offset error 0.04 MJy/sr is 33 % of the band's faint sky (0.12 MJy/sr) > 25 %"),
    (BandFacts(anchor_status="anchored", anchor_error=0.04, anchor_sky=-0.2), "ok", ""),
    (BandFacts(anchor_status="anchored", anchor_error=0.004, anchor_sky=0.12), "ok", ""),
    (BandFacts(failed_rungs=["F2100W: kernel ... not found"]), "check", "rung not convolved: F2100W"),
    (BandFacts(error="stage 3 failed", kernel_wminus={"x (aniano)": 2.0}), "failed", "reduction failed"),
    (BandFacts(failed_steps=["lv3"]), "failed", "step lv3 failed"),
    (BandFacts(skipped_steps=["bgr_mosaics"]), "check", "step bgr_mosaics skipped: no input"),
    (BandFacts(alignment_borrowed="F770W", borrowed_own_stars=12, borrowed_offset_mas=85.0), "check",
     "borrowed alignment (F770W) off by 85 mas on the band's own 12 stars > 30 mas"),
    (BandFacts(alignment_borrowed="F770W", borrowed_own_stars=12, borrowed_offset_mas=8.0), "ok", ""),
    (BandFacts(alignment_borrowed="F770W", borrowed_own_stars=2, borrowed_offset_mas=85.0), "ok", ""),
    (BandFacts(stripe_residual=4.5, stripe_residual_file="jw1_cal.fits"), "check",
     "stripes left after destriping: residual 4.5 x noise > 2 (jw1_cal.fits)"),
    (BandFacts(stripe_residual=1.1), "ok", ""),
    (BandFacts(level_pairs=6, level_rejected=4), "check", "level matching rejected 4 of 10 overlaps"),
    (BandFacts(level_pairs=9, level_rejected=1), "ok", ""),
    (BandFacts(level_pairs=9, level_isolated=1), "check", "1 exposure(s) overlap no other"),
])
def test_a_band_verdict_follows_the_limits_with_reasons_in_words(facts, word, reason):
    got, why = band_verdict(facts, LIMITS)
    assert got == word
    assert (reason in "; ".join(why)) if reason else why == []


def test_limits_are_configurable_and_leave_the_config_hash_alone(tmp_path):
    from jwstgal.config import load_config

    base = load_config(*write_config(tmp_path), check_jwst=False)
    cfg = load_config(*write_config(tmp_path, extra="[qa]\nmax_kernel_wminus = 5.0\n"), check_jwst=False)
    assert cfg.science.qa.max_kernel_wminus == 5.0 and cfg.config_hash == base.config_hash
    assert band_verdict(BandFacts(kernel_wminus={"g (pypher)": 3.07}), cfg.science.qa)[0] == "ok"
    with pytest.raises(Exception, match="max_alignment_rms_mas"):
        load_config(*write_config(tmp_path, extra="[qa]\nmax_alignment_rms_mas = -1\n"), check_jwst=False)


def test_the_qa_page_opens_with_a_linked_verdict_per_band(tmp_path):
    from jwstgal import layout
    from jwstgal.bands import get_band
    from jwstgal.config import load_config
    from jwstgal.report import write_report

    extra = ('[kernels]\ntargets = ["gauss0.92"]\nmethods = ["aniano", "pypher"]\n'
             '[convolve]\ntargets = ["gauss0.92"]\n')
    cfg, loc = write_config(tmp_path, extra=extra,
                            local='[local]\nraw_dir = "raw"\nworking_dir = "work"\npsf_dir = "psf"\n')
    run = load_config(cfg, loc, check_jwst=False)
    for name in ("F200W", "F770W"):
        (layout.band_dir(run.reprocess_dir, "ngc0628", get_band(name)) / "qa").mkdir(parents=True)
    kern = layout.kernel_path(run.psf_dir, "pypher", "F770W", "gauss0.92")
    kern.parent.mkdir(parents=True)
    fits.PrimaryHDU(np.zeros((3, 3)), fits.Header({"KERN_WM": 3.07, "KERN_D": 0.02,
                                                   "SAFETY": "unsafe"})).writeto(kern)
    f770 = layout.band_dir(run.reprocess_dir, "ngc0628", get_band("F770W"))
    layout.rung_failures(f770).write_text(json.dumps(["gauss0.92: kernel x not found"]))
    page = write_report(run).read_text()
    rows = re.findall(r"<tr class='band-verdict' data-verdict='(\w+)'><td><a href='#([\w-]+)'>.*?</tr>", page)
    assert rows == [("ok", "ngc0628-F200W"), ("check", "ngc0628-F770W")]
    assert "very unsafe: W- = 3.07 &gt; 0.5" in page and "rung not convolved: gauss0.92" in page
    assert "<tr class='fail'><td>gauss0.92</td><td>pypher</td>" in page          # the kernel row too
    assert page.index("id='verdicts'") < page.index("id='summary'")               # the page opens with it
    assert 'id="ngc0628-F770W"' in page                                           # the link's target


def test_stripes_level_matching_and_a_borrowed_alignment_reach_the_verdicts_with_units(tmp_path):
    """What the steps leave on disk (DSTRRES headers, the level matching's table, the borrowed
    solution's check on the band's own stars) becomes flags; the summary's columns carry units;
    every band's section is folded."""
    from astropy.table import Table

    from jwstgal import layout
    from jwstgal.bands import get_band
    from jwstgal.config import load_config
    from jwstgal.report import write_report

    extra = ('[pipeline.steps]\nnircam = ["lv1", "lv2", "destripe", "level_match", "lv3", '
             '"astrometric_align"]\n[astrometric_align]\nreference = "gaia"\n'
             'alignment_mapping = { F300M = "F200W" }\n')
    cfg, loc = write_config(tmp_path, science=MINIMAL.replace('"ngc0628", "ngc1365"', '"ngc0628"'),
                            extra=extra)
    run = load_config(cfg, loc, check_jwst=False)
    f200, f300 = (layout.band_dir(run.reprocess_dir, "ngc0628", get_band(b)) for b in ("F200W", "F300M"))
    for bdir, res in ((f200, [1.1, 1.3]), (f300, [1.2, 6.5])):
        (bdir / "destripe").mkdir(parents=True)
        for k, r in enumerate(res):
            sci = fits.ImageHDU(np.zeros((4, 4), np.float32), name="SCI")
            sci.header["BUNIT"] = "MJy/sr"
            fits.HDUList([fits.PrimaryHDU(header=fits.Header({"DSTRRMS": 0.01, "DSTRRES": r})),
                          sci]).writeto(bdir / "destripe" / f"jw0{k}_nrcb1_cal.fits")
    lm = f200 / layout.step_folder("level_match")
    lm.mkdir()
    fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(np.zeros((2, 2)), name="SCI")]).writeto(lm / "a_cal.fits")
    Table({"file": ["a_cal.fits", "b_cal.fits", "c_cal.fits"], "group": ["g"] * 3, "offset": [0.0, 0.1, 0.2],
           "isolated": [False, False, True]}, meta={"n_pairs": 2, "n_rejected": 3}
          ).write(lm / "offsets.ecsv", format="ascii.ecsv")
    for bdir, sol in ((f200, {"borrowed_from": None}),
                      (f300, {"borrowed_from": str(f200 / "astrometric_align" / "solution.json"),
                              "own_stars": {"n": 14, "offset_mas": 64.0}})):
        (bdir / "astrometric_align").mkdir()
        (bdir / "astrometric_align" / "solution.json").write_text(json.dumps(
            {"shift_arcsec": [0.01, 0.0], "rms_mas": 4.0, "n_matches": 30, **sol}))
    page = write_report(run).read_text()
    rows = dict(re.findall(r"<tr class='band-verdict' data-verdict='\w+'><td><a href='#[\w-]+'>"
                           r"ngc0628 (\w+)</a></td><td class='verdict-\w+'>\w+</td><td>(.*?)</td></tr>",
                           page))
    assert "level matching rejected 3 of 5 overlaps" in rows["F200W"]
    assert "1 exposure(s) overlap no other" in rows["F200W"] and "stripes" not in rows["F200W"]
    assert "stripes left after destriping: residual 6.5 x noise &gt; 2 (jw01_nrcb1_cal.fits)" in rows["F300M"]
    assert "borrowed alignment (F200W) off by 64 mas on the band&#x27;s own 14 stars" in rows["F300M"]
    summary = page[page.index("id='summary'"):]
    heads = re.findall(r"<th>(.*?)</th>", summary[:summary.index("</tr>")])
    for name in ("stripes removed", "level offsets", "alignment"):
        (head,) = [h for h in heads if h.startswith(name)]
        assert re.search(r"\[(MJy/sr|mas|no unit)\]", head), head             # with its unit
    assert page.count("<details>") == 2 and "<details open" not in page     # folded, opened by links
    assert "<td><a href='#ngc0628-F300M'>F300M</a></td>" in summary           # the summary links too
    from types import SimpleNamespace

    skipped = SimpleNamespace(target="ngc0628", band="F300M", error="", notes=[],
                              status={"level_match": "skipped (no input)", "lv3": "ran"})
    page = write_report(run, [skipped]).read_text()
    assert "step level_match skipped: no input" in page
