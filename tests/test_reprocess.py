from factories import fake_uncal, write_config

from jwstgal.bands import get_band
from jwstgal.config import load_config
from jwstgal.layout import product_name
from jwstgal.steps import StepRecord
from jwstgal.steps.base import is_background
from jwstgal.steps.lv1 import raw_exposures


def make_tree(raw):
    base = raw / "ngc0628" / "mastDownload" / "JWST"
    files = {
        "sw1": ("jw02107001001_02101_00001_nrcb1", "F200W", "CLEAR"),
        "sw2": ("jw02107001001_02101_00002_nrcb1", "F200W", "CLEAR"),
        "narrow": ("jw02107001001_02101_00003_nrcb1", "F150W2", "F164N"),
        "skipme": ("jw02107007003_02105_00003_nrcb1", "F200W", "CLEAR"),
        "miri": ("jw02107002001_02101_00001_mirimage", "F770W", None),
    }
    for stem, filt, pupil in files.values():
        hdr = {"FILTER": filt}
        if pupil:
            hdr["PUPIL"] = pupil
        fake_uncal(base / stem / f"{stem}_uncal.fits", **hdr)
    other = raw / "ngc7496" / "mastDownload" / "JWST"
    for stem in ("jw02107041001_02201_00001_mirimage", "jw02107042001_02101_00001_mirimage"):
        fake_uncal(other / stem / f"{stem}_uncal.fits", FILTER="F770W")


def test_raw_selection_by_header_skip_and_extra_obs(tmp_path):
    extra = """
[pipeline.steps]
nircam = ["lv1"]
[extra_obs_to_include.ngc0628]
ngc7496 = ["jw02107041001_0?2*"]
"""
    cfg, loc = write_config(tmp_path, extra=extra)
    (tmp_path / "config.toml").write_text(cfg.read_text().replace(
        "[pipeline]", "[pipeline]\nobs_to_skip = ['jw02107007003_02105_00003']"))
    run = load_config(cfg, loc)
    make_tree(run.raw_dir)
    names = [p.name for p in raw_exposures(run, "ngc0628", get_band("F200W"))]
    assert names == ["jw02107001001_02101_00001_nrcb1_uncal.fits",
                     "jw02107001001_02101_00002_nrcb1_uncal.fits"]
    miri = [p.name for p in raw_exposures(run, "ngc0628", get_band("F770W"))]
    assert miri == ["jw02107002001_02101_00001_mirimage_uncal.fits",
                    "jw02107041001_02201_00001_mirimage_uncal.fits"]
    assert [p.name for p in raw_exposures(run, "ngc0628", get_band("F164N"))] == [
        "jw02107001001_02101_00003_nrcb1_uncal.fits"]


def test_background_recognition(tmp_path):
    run = load_config(*write_config(tmp_path))
    assert is_background(tmp_path / "jw02107041001_02201_00001_mirimage_rate.fits", run)
    assert not is_background(tmp_path / "jw02107041001_02101_00001_mirimage_rate.fits", run)


def test_step_record_completion_needs_same_key_and_outputs(tmp_path):
    rec = StepRecord(tmp_path, "lv1")
    out = tmp_path / "rate" / "a_rate.fits"
    assert rec.start("k1", {}) is False
    out.parent.mkdir()
    out.write_text("x")
    rec.finish("k1", {}, [out])
    assert rec.is_complete("k1") and not rec.is_complete("k2")
    assert rec.start("k1", {}) is True          # same key: partial outputs reusable
    rec.finish("k1", {}, [out])
    out.unlink()
    assert not rec.is_complete("k1")            # an output went missing: rerun


def test_product_name():
    assert product_name("ngc0628", get_band("F2100W")) == "ngc0628_miri_lv3_f2100w"
