"""migrate_config.py: configs of the original scripts and of pjpipe into this suite's (validated)."""

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from conftest import REPO

from jwstgal.config import load_config
from jwstgal.migrate import migrate, pix_to_arcsec

DATA = Path(__file__).parent / "data"


def run(*args):
    return subprocess.run([sys.executable, str(REPO / "migrate_config.py"), *map(str, args)],
                          capture_output=True, text=True, cwd=REPO, timeout=300)


@pytest.fixture(scope="module")
def migrated(tmp_path_factory):
    out = tmp_path_factory.mktemp("mig")
    res = run(DATA / "original_config.toml", DATA / "original_local.toml", "--out-dir", out)
    assert res.returncode == 0, res.stderr[-3000:]
    return out, res


@pytest.mark.pipeline
def test_the_migrated_config_validates_and_keeps_the_science(migrated):
    out, _ = migrated
    cfg = load_config(out / "config.toml", out / "local.toml")          # jwst parameters checked too
    s = cfg.science
    assert s.targets == ["ic5332", "ngc0628", "ngc7496"] and s.pipeline.data_version == "v0p8p1"
    assert s.pipeline.steps.nircam == ["lv1", "lv2", "destripe", "wcs_adjust", "level_match",
                                       "stack_destripe", "lv3", "astrometric_align"]
    assert s.pipeline.steps.miri == ["lv1", "lv2", "lyot_adjust", "wcs_adjust", "level_match", "lv3",
                                     "astrometric_catalog", "astrometric_align"]
    assert s.lyot_adjust.method == "mask"
    assert s.pipeline.bgr_check_type == {"nircam": "none", "miri": "parallel_off"}
    assert s.pipeline.obs_to_skip == ["jw02107007003_02105_00003"]
    assert s.destripe.method == "median_filter" and s.destripe.filter_diffuse and s.destripe.dilate_size == 7
    assert s.stack_destripe.sigma == 3 and s.stack_destripe.weight == "ivm"
    assert s.stack_destripe.override["nircam_long"].large_scale is True
    assert s.stack_destripe.override["nircam_short"].large_scale is False
    assert s.astrometric_catalog.snr == 10 and s.astrometric_catalog.roundness == [-0.5, 0.5]
    align = s.astrometric_align
    assert align.alignment_mapping == {"F770W": "F1000W", "F1130W": "F1000W", "F2100W": "F1000W"}
    assert [p.searchrad for p in align.passes] == [10, 2]
    assert [p.searchrad for p in align.override["nircam_short"].passes] == [40, 2]
    assert [p.use2dhist for p in align.passes] == [True, False]
    tweakreg = s.lv3_parameters["tweakreg"]
    assert tweakreg["tolerance"] == {"nircam_short": 0.155, "nircam_long": 0.3, "miri": 1}   # '5pix'
    assert tweakreg["brightest"] == {"nircam_short": 125, "nircam_long": 500, "miri": 500}
    assert s.lv2_parameters["bkg_subtract"]["sigma"] == 1.5
    assert s.release.include_crf and s.release.remove_bloat
    for band_type in ("nircam_short", "nircam_long", "miri"):       # group_*_dithers
        assert s.lv3.override[band_type].tweakreg_groups == "visit"
        assert s.lv3.override[band_type].skymatch_groups == "visit"
    assert s.lv3.tweakreg_groups == "exposure"
    assert cfg.local.processes == 20 and cfg.local.executor == "processes"
    assert str(cfg.raw_dir) == "/data/jwst/raw" and cfg.local.crds_dir == ""


def test_every_key_left_behind_is_named_with_why(migrated):
    out, res = migrated
    text = (out / "config.toml").read_text()
    for key in ("pipeline.flush_crds", "pipeline.lev3_fields",
                "lv3_parameters.tweakreg.align_to_gaia",
                "lv3_parameters.tweakreg_source_catalog", "destripe_parameters.do_vertical_subtraction",
                "dither_match_parameters.weight_method",
                "psf_model", "local.updated_flats_dir"):
        line = next((li for li in text.splitlines() if li.startswith(f"#   {key}")), None)
        assert line and len(line.split(": ", 1)[1]) > 10, key       # named, with a reason
        assert key in res.stderr
    body = tomllib.loads(text)
    assert "align_to_gaia" not in body["lv3_parameters"]["tweakreg"]
    assert "flush_crds" not in body["pipeline"]


@pytest.mark.pipeline
def test_nothing_replaced_without_overwrite_and_dry_run_writes_nothing(migrated, tmp_path):
    out, _ = migrated
    again = run(DATA / "original_config.toml", "--out-dir", out)
    assert again.returncode == 3 and "--overwrite" in again.stderr
    dry = run(DATA / "original_config.toml", "--out-dir", tmp_path / "new", "--dry-run")
    assert dry.returncode == 0 and "[pipeline]" in dry.stdout
    assert not (tmp_path / "new").exists()


@pytest.mark.pipeline
def test_a_config_that_cannot_validate_writes_nothing(tmp_path):
    bad = tmp_path / "old.toml"
    bad.write_text('[projects.1]\ntargets = ["a"]\n[pipeline]\nnircam_bands = ["F20W"]\n')
    res = run(bad, "--out-dir", tmp_path / "out")
    assert res.returncode == 3 and "F20W" in res.stderr and not (tmp_path / "out").exists()


def test_pjpipe_config_steps_and_parameters():
    old = {"projects": {"2107": {"targets": ["ngc0628"]}},
           "pipeline": {"nircam_bands": ["F200W"], "miri_bands": ["F770W"]},
           "steps": ["lv1", "lv2", "single_tile_destripe.nircam", "lyot_separate.miri",
                     "multi_tile_destripe.nircam", "level_match", "lv3", "astrometric_catalog.miri",
                     "astrometric_align", "release"],
           "parameters": {
               "lv1": {"jwst_parameters": {"ramp_fit": {"suppress_one_group": False}}},
               "astrometric_align": {"tweakreg_parameters": {
                   "iteration1": {"searchrad": 10, "tolerance": 1, "use2dhist": True},
                   "iteration2": {"searchrad": 2, "tolerance": 0.5, "use2dhist": False}}},
               "single_tile_destripe": {"quadrants": True}}}
    m = migrate(old)
    steps = m.science["pipeline"]["steps"]
    assert steps["nircam"] == ["lv1", "lv2", "destripe", "level_match", "stack_destripe", "lv3",
                               "astrometric_align"]
    assert steps["miri"] == ["lv1", "lv2", "level_match", "lv3", "astrometric_catalog", "astrometric_align"]
    assert "steps (nircam): lyot_separate.miri" not in dict(m.unmapped)
    assert m.science["lv1_parameters"] == {"ramp_fit": {"suppress_one_group": False}}
    assert [p["searchrad"] for p in m.science["astrometric_align"]["passes"]] == [10, 2]
    skipped = dict(m.unmapped)
    assert "lyot_separate" in " ".join(skipped)
    assert m.science["destripe"]["quadrants"] is True          # pjpipe's step settings carried over


def test_step_repeats_are_carried_over_where_the_step_may_repeat():
    old = {"projects": {"2107": {"targets": ["ngc0628"]}},
           "pipeline": {"nircam_bands": ["F200W"], "miri_bands": [],
                        "steps": ["lv1", "lv2", "destripe", "destripe_2", "level_match",
                                  "dither_match_2", "lv3", "lv3_2", "bg_sub_3"]}}
    m = migrate(old)
    assert m.science["pipeline"]["steps"]["nircam"] == ["lv1", "lv2", "destripe", "destripe_2",
                                                        "level_match", "level_match_2", "lv3"]
    skipped = dict(m.unmapped)
    assert "may run again" in skipped["pipeline.steps.nircam: lv3_2"]
    assert "bg_sub" in skipped["pipeline.steps.nircam: bg_sub_3"]       # its step is not run


def test_dither_grouping_lists_become_lv3_overrides():
    old = {"projects": {"2107": {"targets": ["ngc0628"]}},
           "pipeline": {"nircam_bands": ["F200W"], "miri_bands": ["F770W"],
                        "group_tweakreg_dithers": ["miri"], "group_skymatch_dithers": ["nircam_long"],
                        "degroup_skymatch_dithers": ["nircam_long", "nircam_short", "nirspec"]}}
    m = migrate(old)
    assert m.science["lv3"]["override"] == {"miri": {"tweakreg_groups": "visit"},
                                            "nircam_long": {"skymatch_groups": "visit"},  # group wins
                                            "nircam_short": {"skymatch_groups": "file"}}
    assert "pipeline.degroup_skymatch_dithers: nirspec" in dict(m.unmapped)
    pj = migrate({"projects": {"2107": {"targets": ["ngc0628"]}}, "steps": ["lv1", "lv2", "lv3"],
                  "parameters": {"lv3": {"tweakreg_degroup_dithers": ["nircam_short"],
                                         "skymatch_group_dithers": ["miri", "nircam"]}}})
    assert pj.science["lv3"]["override"] == {"nircam_short": {"tweakreg_groups": "file"},
                                             "miri": {"skymatch_groups": "visit"},
                                             "nircam": {"skymatch_groups": "visit"}}


def test_pixel_lengths_become_arcsec_per_band_type():
    assert pix_to_arcsec("10pix") == {"nircam_short": 0.31, "nircam_long": 0.63, "miri": 1.1}
    assert pix_to_arcsec({"miri": "2pix", "nircam": "3pix", "F200W": "1pix", "ngc0628": 0.3}) == {
        "miri": 0.22, "nircam": {"nircam_short": 0.093, "nircam_long": 0.189}, "F200W": 0.031,
        "ngc0628": 0.3}
    assert pix_to_arcsec(0.5) == 0.5


def test_backgrounds_like_science_becomes_the_bgr_mosaics_step():
    old = tomllib.loads((DATA / "original_config.toml").read_text())
    old["pipeline"] = {"process_bgr_like_science": True, **old["pipeline"]}    # before [pipeline.steps]
    m = migrate(old)
    assert m.science["pipeline"]["steps"]["miri"][-1] == "bgr_mosaics"        # bgr_observation_types
    assert "bgr_mosaics" not in m.science["pipeline"]["steps"]["nircam"]
    assert "pipeline.process_bgr_like_science" not in dict(m.unmapped)


# ---------------------------------------------------------------- hostile inputs (issue #30)

@pytest.mark.parametrize("text", [
    'pipeline = 5\n[projects.1]\ntargets = ["a"]\n',
    '[projects]\n1 = "ngc0628"\n[pipeline]\nnircam_bands = ["F200W"]\n',
    'steps = ["lv1"]\nparameters = { lv1 = 3 }\n',
])
@pytest.mark.pipeline
def test_valid_toml_of_the_wrong_shape_is_one_message_not_a_traceback(tmp_path, text):
    old = tmp_path / "old.toml"
    old.write_text(text)
    res = run(old, "--out-dir", tmp_path / "out")
    assert res.returncode == 3, res.stderr[-2000:]
    assert "Traceback" not in res.stderr and str(old) in res.stderr
    assert not (tmp_path / "out").exists()


def test_an_impossible_process_count_is_named_not_dropped(tmp_path):
    m = migrate(tomllib.loads((DATA / "original_config.toml").read_text()),
                {"local": {"raw_dir": "r", "working_dir": "w", "processors": -3}})
    assert "processes" not in m.local["local"]
    assert any(k == "local.processors" and "-3" in why for k, why in m.unmapped)


@pytest.mark.pipeline
def test_overwrite_never_replaces_the_old_config_itself(tmp_path):
    old = tmp_path / "config.toml"
    old.write_text((DATA / "original_config.toml").read_text())
    before = old.read_bytes()
    res = run(old, "--out-dir", tmp_path, "--overwrite")
    assert res.returncode == 3 and "is the old config itself" in res.stderr
    assert old.read_bytes() == before


def test_per_field_mosaics_and_user_flats_are_not_called_unsupported():
    """Issue #31 item 6: the field_mosaics step exists; flats are jwst's override_flat."""
    old = {"projects": {"2107": {"targets": ["ngc0628"]}},
           "pipeline": {"nircam_bands": ["F200W"], "miri_bands": ["F770W"]},
           "steps": ["lv1", "lv2", "lv3", "mosaic_individual_fields"], "parameters": {}}
    m = migrate(old, {"local": {"raw_dir": "r", "working_dir": "w", "updated_flats_dir": "/flats"}})
    assert m.science["pipeline"]["steps"]["miri"] == ["lv1", "lv2", "lv3", "field_mosaics"]
    skipped = dict(m.unmapped)
    assert not any("not supported" in why for why in skipped.values()), skipped
    assert "override_flat" in skipped["local.updated_flats_dir"]


def test_destriping_before_stage_2_becomes_the_rate_steps():
    """Issue #31 item 8: pjpipe's PHANGS order destripes (and sky-subtracts) the rate files."""
    old = {"projects": {"2107": {"targets": ["ngc0628"]}},
           "pipeline": {"nircam_bands": ["F200W"], "miri_bands": ["F770W"]},
           "steps": ["lv1", "single_tile_destripe.nircam", "bg_sub", "lv2", "destripe.miri", "lv3"],
           "parameters": {}}
    steps = migrate(old).science["pipeline"]["steps"]
    assert steps["nircam"] == ["lv1", "rate_destripe", "rate_bg_sub", "lv2", "lv3"]
    assert steps["miri"] == ["lv1", "rate_bg_sub", "lv2", "destripe", "lv3"]


def test_cross_correlation_mapping_mode_is_carried_over():
    """Issue #31 item 7: pjpipe's alignment_mapping_mode = 'cross_corr'."""
    old = {"projects": {"2107": {"targets": ["ngc0628"]}},
           "pipeline": {"nircam_bands": [], "miri_bands": ["F770W", "F2100W"],
                        "alignment_mapping_mode": "cross_corr"},
           "alignment_mapping": {"F2100W": "F770W"}}
    m = migrate(old)
    assert m.science["astrometric_align"]["mapping_mode"] == "cross_correlate"
    assert "pipeline.alignment_mapping_mode" not in dict(m.unmapped)
