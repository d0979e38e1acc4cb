import pytest
from factories import fake_uncal, write_config

from jwstgal.bands import get_band
from jwstgal.config import load_config
from jwstgal.errors import ConfigError
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


NIRCAM_PARALLEL = "jw02107001001_02201_00001_nrca1_rate.fits"   # a coordinated parallel: science
MIRI_OFF = "jw02107041001_02201_00001_mirimage_rate.fits"


def test_nircam_parallels_are_science_and_background_checks_are_per_instrument(tmp_path):
    from pathlib import Path

    from jwstgal.steps.base import background_reason

    run = load_config(*write_config(tmp_path))
    assert not is_background(Path(NIRCAM_PARALLEL), run)             # the seed's bug: dropped
    assert background_reason(Path(MIRI_OFF), run).startswith("parallel_off")
    cases = {
        'bgr_check_type = "parallel_off"': (False, True),             # a plain value is MIRI's
        'bgr_check_type = { nircam = "parallel_off", miri = "none" }': (True, False),
        'bgr_check_type = { miri = "filename" }\nbgr_filename_pattern = "*_02201_*"': (False, True),
    }
    for line, (nircam, miri) in cases.items():
        cfg, loc = write_config(tmp_path)
        cfg.write_text(cfg.read_text().replace("[pipeline]", f"[pipeline]\n{line}"))
        run = load_config(cfg, loc)
        assert (is_background(Path(NIRCAM_PARALLEL), run), is_background(Path(MIRI_OFF), run)) == \
            (nircam, miri), line
    cfg, loc = write_config(tmp_path)
    cfg.write_text(cfg.read_text().replace("[pipeline]", '[pipeline]\nbgr_check_type = "filename"'))
    with pytest.raises(ConfigError, match="needs bgr_filename_pattern"):
        load_config(cfg, loc)


def test_check_in_name_reads_targprop(tmp_path):
    from factories import fake_uncal

    cfg, loc = write_config(tmp_path)
    cfg.write_text(cfg.read_text().replace("[pipeline]", '[pipeline]\nbgr_check_type = "check_in_name"'))
    run = load_config(cfg, loc)
    off = fake_uncal(tmp_path / "a" / "jw1_02101_00001_mirimage_rate.fits", TARGPROP="NGC0628-OFF")
    on = fake_uncal(tmp_path / "b" / "jw1_02101_00001_mirimage_rate.fits", TARGPROP="NGC0628")
    assert is_background(off, run) and not is_background(on, run)


def test_a_nircam_parallel_once_taken_for_a_background_reruns_stage2_and_is_reported(tmp_path):
    from plan_fixture import _header_file, build_tree

    from jwstgal.steps import BandContext, get_step

    cfg, loc = build_tree(tmp_path)
    run = load_config(cfg, loc, check_jwst=False)
    ctx = BandContext.of(run, "ngc0628", get_band("F200W"))
    plain = get_step("lv2").plan(ctx, "U", [])
    _header_file(ctx.band_dir / "rate" / "jw02107001001_02201_00001_nrcb1_rate.fits", "F200W")
    ctx = BandContext.of(run, "ngc0628", get_band("F200W"))
    plan = get_step("lv2").plan(ctx, "U", [])
    assert len(plan.tasks) == len(plain.tasks) + 1 and not ctx.notes   # calibrated as science
    miri = BandContext.of(run, "ngc0628", get_band("F770W"))
    mplan = get_step("lv2").plan(miri, "U", [])
    assert len(mplan.tasks) == 2 and mplan.tasks[0].backgrounds        # the off field as background
    assert miri.notes == ["background exposure jw02107003001_02201_00001_mirimage_rate.fits "
                          "(parallel_off: sequence digit 2 (a parallel sequence))"]


def test_a_missing_alignment_catalogue_fails_its_band_and_the_run_goes_on(tmp_path):
    from plan_fixture import build_tree

    from jwstgal.executor import Executor, ExecutorSpec
    from jwstgal.reprocess import FAILED, SKIPPED, run_all
    from jwstgal.steps import BandContext, StepRecord, get_step

    cfg, loc = build_tree(tmp_path)
    text = cfg.read_text()
    start = text.index("nircam = [")
    end = text.index("]", text.index("miri = [")) + 1
    cfg.write_text(text[:start] + 'nircam = ["lv1", "astrometric_align"]\nmiri = ["lv1"]' + text[end:])
    run = load_config(cfg, loc, check_jwst=False)
    for band in ("F200W", "F770W"):
        ctx = BandContext.of(run, "ngc0628", get_band(band))
        plan = get_step("lv1").plan(ctx, "", [])
        for p in plan.outputs:
            p.write_text("rate")
        StepRecord(ctx.band_dir, "lv1").finish(plan.key, plan.params, plan.outputs)
    (run.alignment_dir / "ngc0628_cat.fits").unlink()
    results = run_all(run, bands=["F200W", "F770W"], progress=False,
                      executor=Executor(ExecutorSpec("serial")))
    by_band = {r.band: r for r in results}
    assert by_band["F200W"].status["astrometric_align"] == FAILED
    assert "ngc0628_cat.fits" in by_band["F200W"].error and "no such file" in by_band["F200W"].error
    assert by_band["F770W"].status["lv1"] == SKIPPED and not by_band["F770W"].error


def _tree(root):
    return sorted((str(p.relative_to(root)), p.stat().st_mtime_ns) for p in root.rglob("*"))


@pytest.mark.pipeline
def test_dry_run_prints_the_plan_and_writes_nothing(tmp_path):
    from factories import reprocess_cli

    cfg, loc = write_config(tmp_path, extra='[pipeline.steps]\nnircam = ["lv1", "lv2", "destripe"]\n')
    run = load_config(cfg, loc)
    make_tree(run.raw_dir)
    before = _tree(tmp_path)
    res = reprocess_cli(cfg, loc, "--dry-run", "--target", "ngc0628", "--band", "F200W", timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    assert _tree(tmp_path) == before                       # not a folder, not a record, not a log
    out = res.stdout
    assert "ngc0628 F200W:" in out and "ngc1365" not in out and "F770W" not in out
    lv1 = next(line for line in out.splitlines() if line.strip().startswith("lv1"))
    assert "run" in lv1 and "not run before" in lv1
    # the three F200W exposures as stage-1 outputs (not the F164N one that shares the detector)
    for stem in ("jw02107001001_02101_00001", "jw02107001001_02101_00002", "jw02107007003_02105_00003"):
        assert f"{stem}_nrcb1_rate.fits" in out
    assert "jw02107001001_02101_00003" not in out
    assert "stack_destripe" not in out                     # not configured: not listed
