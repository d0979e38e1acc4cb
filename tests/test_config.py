import re

import pytest
from factories import MINIMAL_SCIENCE, write_config

from jwstgal.bands import get_band
from jwstgal.config import load_config, resolve, stage_parameters
from jwstgal.errors import ConfigError


def error_of(tmp_path, **kw):
    cfg, loc = write_config(tmp_path, **kw)
    with pytest.raises(ConfigError) as info:
        load_config(cfg, loc)
    return str(info.value).replace(str(tmp_path), "<d>")


def test_valid_minimal_config_resolves_paths_relative_to_local(tmp_path):
    cfg, loc = write_config(tmp_path)
    run = load_config(cfg, loc)
    assert run.raw_dir == tmp_path / "raw"
    assert run.crds_dir == tmp_path / "work" / "crds"
    assert run.reprocess_dir == tmp_path / "work" / "jwst_lv3_reprocessed_v0p1"
    assert run.science.bands == ["F200W", "F300M", "F770W"]
    assert run.science.targets == ["ngc0628", "ngc1365"]
    assert re.fullmatch(r"[0-9a-f]{16}", run.config_hash)


def test_unknown_table_names_file_key_allowed_and_suggestion(tmp_path):
    msg = error_of(tmp_path, science=MINIMAL_SCIENCE + "\n[pipline]\ndata_version='x'\n")
    assert msg == (
        "<d>/config.toml: unknown key 'pipline' (allowed: pipeline, projects, extra_obs_to_include, "
        "download, alignment, lv1_parameters, lv2_parameters, lv3_parameters, simulation, kernels, "
        "convolve, anchor, release, qa, rate_destripe, rate_bg_sub, lyot_adjust, destripe, bg_sub, "
        "wcs_adjust, level_match, "
        "stack_destripe, lv3, astrometric_catalog, astrometric_align, field_mosaics); "
        "did you mean 'pipeline'?")


def test_unknown_band_lists_allowed_and_closest(tmp_path):
    sci = MINIMAL_SCIENCE.replace('["F200W", "F300M"]', '["F200W", "F20W"]')
    msg = error_of(tmp_path, science=sci)
    assert msg.startswith("<d>/config.toml: key 'pipeline.nircam_bands': value ['F200W', 'F20W']: "
                          "unknown band 'F20W' (allowed: NIRCam F070W, F090W,")
    assert "MIRI F560W, F770W" in msg
    assert msg.endswith("did you mean F200W or F2550W or F2100W?")


def test_band_of_wrong_instrument(tmp_path):
    msg = error_of(tmp_path, science=MINIMAL_SCIENCE.replace('["F770W"]', '["F200W"]'))
    assert msg == ("<d>/config.toml: key 'pipeline.miri_bands': value ['F200W']: 'F200W' is a "
                   "NIRCAM band, not a MIRI one")


def test_unknown_step(tmp_path):
    msg = error_of(tmp_path, science=MINIMAL_SCIENCE + "\n[pipeline.steps]\nnircam=['lv1','lv22']\n")
    assert msg == ("<d>/config.toml: key 'pipeline.steps.nircam': value ['lv1', 'lv22']: unknown "
                   "step 'lv22' (allowed: lv1, rate_destripe, rate_bg_sub, lv2, lyot_adjust, destripe, "
                   "bg_sub, wcs_solve, wcs_adjust, level_match, "
                   "stack_destripe, lv3, astrometric_catalog, astrometric_align, field_mosaics, "
                   "bgr_mosaics; a repeat is <step>_2 ... <step>_9 of destripe, bg_sub, level_match, "
                   "stack_destripe); did you mean 'lv2'?")


def test_steps_must_be_in_pipeline_order(tmp_path):
    msg = error_of(tmp_path, science=MINIMAL_SCIENCE + "\n[pipeline.steps]\nmiri=['lv1','lv3','lv2']\n")
    assert msg == ("<d>/config.toml: key 'pipeline.steps.miri': value ['lv1', 'lv3', 'lv2']: steps run "
                   "in the order lv1, rate_destripe, rate_bg_sub, lv2, lyot_adjust, destripe, bg_sub, "
                   "wcs_solve, wcs_adjust, level_match, "
                   "stack_destripe, lv3, astrometric_catalog, astrometric_align, field_mosaics, "
                   "bgr_mosaics (a repeat <step>_<n> right after its step); got lv1, lv3, lv2")


def test_destriping_listed_before_stage_2_points_to_the_rate_steps(tmp_path):
    msg = error_of(tmp_path, science=MINIMAL_SCIENCE + "\n[pipeline.steps]\n"
                   "nircam=['lv1','destripe','bg_sub','lv2']\n")
    assert msg.endswith("got lv1, destripe, bg_sub, lv2; on the rate files before stage 2 they are "
                        "rate_destripe, rate_bg_sub"), msg


def test_wrong_type_is_not_coerced(tmp_path):
    msg = error_of(tmp_path, science=MINIMAL_SCIENCE.replace("[pipeline]",
                                                             "[pipeline]\ndata_version = 3"))
    assert msg == ("<d>/config.toml: key 'pipeline.data_version': value 3: "
                   "Input should be a valid string")


def test_misspelt_selector(tmp_path):
    msg = error_of(tmp_path, science=MINIMAL_SCIENCE
                   + "\n[lv3_parameters.tweakreg]\nbrightest = { nircam_shrot = 3 }\n")
    assert msg == ("<d>/config.toml: lv3_parameters.tweakreg.brightest: selector 'nircam_shrot' is "
                   "not a target, band or one of nircam, nircam_short, nircam_long, miri; did you "
                   "mean 'nircam_short'?")


@pytest.mark.pipeline
def test_unknown_jwst_step_parameter_is_checked_against_the_step_spec(tmp_path):
    msg = error_of(tmp_path, science=MINIMAL_SCIENCE + "\n[lv3_parameters.tweakreg]\nbrightes = 3\n")
    assert msg.startswith("<d>/config.toml: unknown key 'lv3_parameters.tweakreg.brightes': "
                          "TweakRegStep has no parameter 'brightes' (allowed: abs_fitgeometry,")
    assert msg.endswith("did you mean 'brightest'?")


def test_unknown_jwst_step(tmp_path):
    msg = error_of(tmp_path, science=MINIMAL_SCIENCE + "\n[lv3_parameters.tweakrge]\nbrightest = 3\n")
    assert msg == ("<d>/config.toml: unknown key 'lv3_parameters.tweakrge': not a step of "
                   "Image3Pipeline nor one of its parameters (steps: assign_mtwcs, tweakreg, "
                   "skymatch, outlier_detection, resample, source_catalog); did you mean 'tweakreg'?")


def test_managed_pipeline_key_is_refused(tmp_path):
    msg = error_of(tmp_path, science=MINIMAL_SCIENCE + "\n[lv1_parameters]\noutput_dir = 'x'\n")
    assert msg == ("<d>/config.toml: key 'lv1_parameters.output_dir' is set by jwstgal itself and "
                   "may not be configured")
    # pjpipe's configs set it; passed twice, it failed stage 2 at run time (issue #31 item 5)
    msg = error_of(tmp_path, science=MINIMAL_SCIENCE + "\n[lv2_parameters]\nsave_results = true\n")
    assert msg == ("<d>/config.toml: key 'lv2_parameters.save_results' is set by jwstgal itself and "
                   "may not be configured")


def test_alignment_for_unknown_target(tmp_path):
    msg = error_of(tmp_path, science=MINIMAL_SCIENCE + "\n[alignment]\nngc628 = 'x.fits'\n")
    assert msg == ("<d>/config.toml: [alignment] names target 'ngc628', which no project lists "
                   "(targets: ngc0628, ngc1365); did you mean 'ngc0628'?")


def test_targets_must_be_lower_case(tmp_path):
    msg = error_of(tmp_path, science=MINIMAL_SCIENCE.replace('"ngc0628"', '"NGC0628"'))
    assert msg.endswith("target names are lower case; write 'ngc0628' instead of 'NGC0628'")


def test_simulation_range(tmp_path):
    msg = error_of(tmp_path, science=MINIMAL_SCIENCE + "\n[simulation]\ndetector_size = 30\n")
    assert msg == ("<d>/config.toml: key 'simulation.detector_size': value 30: "
                   "Input should be greater than or equal to 128")


def test_local_unknown_key_and_missing_key_and_bad_choice(tmp_path):
    msg = error_of(tmp_path, local='[local]\nraw_dir="r"\nworking_dir="w"\nprocesess=2\n')
    assert msg == ("<d>/local.toml: unknown key 'local.procesess' (allowed: raw_dir, working_dir, "
                   "crds_dir, crds_mode, crds_server_url, processes, executor, dask_scheduler, "
                   "memory_budget_gb, slurm, api_key, mast_server, alignment_dir, psf_dir, anchor_ref_dir, "
                   "psf_data_dir); "
                   "did you mean 'processes'?")
    assert error_of(tmp_path, local='[local]\nraw_dir="r"\n') == (
        "<d>/local.toml: missing required key 'local.working_dir'")
    assert error_of(tmp_path, local='[local]\nraw_dir="r"\nworking_dir="w"\ncrds_mode="offline"\n') == (
        "<d>/local.toml: key 'local.crds_mode': value 'offline': "
        "Input should be 'remote' or 'synthetic'")


def test_several_problems_are_reported_together(tmp_path):
    sci = MINIMAL_SCIENCE + "\n[pipeline.steps]\nnircam=['lv9']\n\n[downlaod]\nproducts=[]\n"
    lines = error_of(tmp_path, science=sci).splitlines()
    assert len(lines) == 2
    assert any("did you mean 'download'?" in ln for ln in lines)
    assert any("unknown step 'lv9'" in ln for ln in lines)


def test_missing_file_and_bad_toml(tmp_path):
    with pytest.raises(ConfigError, match=r"nope\.toml: config file not found"):
        load_config(tmp_path / "nope.toml", tmp_path / "local.toml")
    msg = error_of(tmp_path, science="[projects.1\ntargets=1")
    assert msg.startswith("<d>/config.toml: not valid TOML: Expected ']'")


def test_no_band_configured(tmp_path):
    msg = error_of(tmp_path, science='[projects.1]\ntargets=["a"]\n')
    assert "no band to process" in msg


def test_selector_priority_target_band_type_instrument():
    value = {"nircam": 1, "nircam_short": 2, "F200W": 3, "ngc0628": {"miri": 9, "F300M": 4}}
    assert resolve(value, "ngc1365", get_band("F200W")) == 3
    assert resolve(value, "ngc1365", get_band("F150W")) == 2
    assert resolve(value, "ngc1365", get_band("F444W")) == 1
    assert resolve(value, "ngc0628", get_band("F300M")) == 4   # target first, then band inside
    assert resolve(value, "ngc0628", get_band("F770W")) == 9
    assert resolve(5, "x", get_band("F770W")) == 5


def test_stage_parameters_resolve_and_drop_unmatched(tmp_path):
    extra = """
[lv3_parameters.tweakreg]
brightest = { nircam_short = 125, miri = 500 }
skip = { F770W = true }
[lv3_parameters.skymatch]
nclip = 5
"""
    cfg, loc = write_config(tmp_path, extra=extra)
    run = load_config(cfg, loc)
    short = stage_parameters(run.science.lv3_parameters, "lv3_parameters", "ngc0628", get_band("F200W"))
    assert short == {"steps": {"tweakreg": {"brightest": 125}, "skymatch": {"nclip": 5}}}
    long_ = stage_parameters(run.science.lv3_parameters, "lv3_parameters", "ngc0628", get_band("F300M"))
    assert long_ == {"steps": {"tweakreg": {}, "skymatch": {"nclip": 5}}}
    miri = stage_parameters(run.science.lv3_parameters, "lv3_parameters", "ngc0628", get_band("F770W"))
    assert miri["steps"]["tweakreg"] == {"brightest": 500, "skip": True}


def test_shipped_configs_validate():
    from conftest import REPO

    for name, local in (("config.toml", "local.toml"), ("demo.toml", "demo_local.toml")):
        run = load_config(REPO / "config" / name, REPO / "config" / local)
        assert run.science.bands


def test_config_hash_changes_with_a_parameter(tmp_path):
    a = load_config(*write_config(tmp_path))
    b = load_config(*write_config(tmp_path, extra="[lv1_parameters.jump]\nrejection_threshold=5.0\n"))
    assert a.config_hash != b.config_hash


def test_slurm_executor_needs_its_table(tmp_path):
    msg = error_of(tmp_path, local='[local]\nraw_dir="r"\nworking_dir="w"\nexecutor="slurm"\n')
    assert msg == ("<d>/local.toml: key 'local': executor = 'slurm' needs a [local.slurm] table "
                   "(queue, cores, memory, walltime)")


def test_alignment_mapping_cannot_chain(tmp_path):
    msg = error_of(tmp_path, science=MINIMAL_SCIENCE
                   + "\n[astrometric_align]\nalignment_mapping = { F770W = 'F300M', F300M = 'F200W' }\n")
    assert "alignment_mapping: F770W borrows from F300M, which itself borrows from F200W" in msg


def test_default_steps_are_the_plain_stsci_pipeline(tmp_path):
    run = load_config(*write_config(tmp_path))
    assert run.science.pipeline.steps.nircam == ["lv1", "lv2", "lv3"]
    assert run.science.pipeline.steps.miri == ["lv1", "lv2", "lv3"]


def test_destripe_override_unknown_key_and_selector(tmp_path):
    msg = error_of(tmp_path, science=MINIMAL_SCIENCE + "\n[destripe.override.miri]\nlyt = 'mask'\n")
    assert "'destripe.override.miri.lyt'" in msg and "did you mean 'lyot'" in msg
    msg = error_of(tmp_path, science=MINIMAL_SCIENCE + "\n[destripe.override.F200X]\nsigma = 2.0\n")
    assert "selector 'F200X'" in msg and "did you mean 'F200W'" in msg
    msg = error_of(tmp_path, science=MINIMAL_SCIENCE + "\n[destripe]\nmethod = 'pcaa'\n")
    assert "'destripe.method'" in msg and "pca" in msg


def test_configs_keep_their_hash_across_added_tables_and_keys(tmp_path):
    """The hashes of the shipped configs before the rate steps and the release keys were added:
    a product's JGAL_CFG still names its config after an upgrade (issue #31). Set, they count."""
    from conftest import REPO

    # the demo has since gained an external map for F2100W and draws its sky through the kernels'
    # PSFs: without them, it is the config of before
    demo = (REPO / "config" / "demo.toml").read_text()
    mips = ',\n        { band = "mips24", psf = "gauss7.5", bands = ["F2100W"] }]'
    psf = 'psf = "kernels"'
    assert mips in demo and psf in demo
    (tmp_path / "demo_before.toml").write_text(demo.replace(mips, "]").replace(psf, "# " + psf))
    for path, local, old in ((REPO / "config" / "config.toml", "local.toml", "822eac37ddfb7c51"),
                             (tmp_path / "demo_before.toml", "demo_local.toml", "6892222232f5c869")):
        cfg = load_config(path, REPO / "config" / local, check_jwst=False)
        assert cfg.config_hash == old, path.name

    def hash_with(extra):
        return load_config(*write_config(tmp_path, extra=extra), check_jwst=False).config_hash

    plain = hash_with("")
    assert hash_with('[rate_destripe]\nmethod = "median_filter"\n') == plain     # the default
    assert hash_with('[rate_destripe]\nmethod = "pca"\n') != plain
    assert hash_with("[release]\ninclude_qa = false\n") != plain
