"""The QA page's verdicts (issue #28 item 2): one line per band, ok / check / failed, with the reasons."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from astropy.io import fits
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
    (BandFacts(failed_rungs=["F2100W: kernel ... not found"]), "check", "rung not convolved: F2100W"),
    (BandFacts(error="stage 3 failed", kernel_wminus={"x (aniano)": 2.0}), "failed", "reduction failed"),
    (BandFacts(failed_steps=["lv3"]), "failed", "step lv3 failed"),
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
