"""Configs that used to pass validation and fail later, hang, or traceback (issues #30 and #31 item 3).

Each is refused at load time with one message naming the file, the key and the value; each test failed
before its fix.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading

import pytest
from factories import MINIMAL_LOCAL, MINIMAL_SCIENCE, write_config

from jwstgal.bands import get_band
from jwstgal.config import load_config, stage_parameters
from jwstgal.errors import ConfigError


def error_of(tmp_path, **kw) -> str:
    cfg, loc = write_config(tmp_path, **kw)
    with pytest.raises(ConfigError) as info:
        load_config(cfg, loc)
    return str(info.value).replace(str(tmp_path), "<d>")


# ------------------------------------------------------------- jwst parameter values (#31 item 3)

def test_a_jwst_parameter_value_out_of_its_range_is_refused_at_load(tmp_path):
    msg = error_of(tmp_path, extra="[lv3_parameters.resample]\npixfrac = -1\n")
    assert msg.startswith("<d>/config.toml: key 'lv3_parameters.resample.pixfrac': value -1 is not valid "
                          "for ResampleStep's pixfrac = float(min=0.0, max=1.0, default=1.0)")
    assert "too small" in msg


def test_a_wrong_type_or_option_names_the_selector_it_came_from(tmp_path):
    msg = error_of(tmp_path, extra='[lv3_parameters.tweakreg]\ntolerance = { nircam = "5px", miri = 1.0 }\n'
                                   'fitgeometry = "rshfit"\n')
    lines = msg.splitlines()
    assert len(lines) == 2
    assert "key 'lv3_parameters.tweakreg.tolerance.nircam': value '5px'" in msg and "wrong type" in msg
    assert "key 'lv3_parameters.tweakreg.fitgeometry': value 'rshfit'" in msg
    assert "option('shift', 'rshift', 'rscale', 'general'" in msg                # the allowed values


def test_a_pixel_length_is_accepted_and_converted_per_band(tmp_path):
    cfg, loc = write_config(tmp_path, extra='[lv3_parameters.tweakreg]\ntolerance = "5pix"\n'
                                             'searchrad = { miri = "2.5pix", nircam = 1.0 }\n')
    run = load_config(cfg, loc)
    table = run.science.lv3_parameters

    def tweakreg(band):
        return stage_parameters(table, "lv3_parameters", "ngc0628", get_band(band))["steps"]["tweakreg"]

    assert tweakreg("F200W")["tolerance"] == pytest.approx(5 * 0.031)
    assert tweakreg("F300M")["tolerance"] == pytest.approx(5 * 0.063)
    assert tweakreg("F770W") == {"tolerance": pytest.approx(0.55), "searchrad": pytest.approx(0.275)}
    assert tweakreg("F200W")["searchrad"] == 1.0


def test_a_pipeline_level_parameter_value_is_checked_too(tmp_path):
    msg = error_of(tmp_path, extra="[lv2_parameters]\nsave_bsub = 3\n")
    assert "key 'lv2_parameters.save_bsub': value 3" in msg and "boolean" in msg


# ------------------------------------------------------------- bounds of the suite's own keys (#30)

@pytest.mark.parametrize(("extra", "key"), [
    ("[simulation]\nn_stars = 1000000000000\n", "simulation.n_stars"),
    ("[kernels]\nnlambda = 1000000000\n", "kernels.nlambda"),
    ("[kernels]\nreg_fact = inf\n", "kernels.reg_fact"),
    ('[convolve]\ntargets = ["gauss0"]\n', "convolve.targets"),
    ('[kernels]\ntargets = ["moffat1.0b0.5"]\n', "kernels.targets"),
    ('[convolve]\ntarget = "gauss500"\n', "convolve.target"),
])
def test_absurd_values_of_the_suites_own_keys_are_refused(tmp_path, extra, key):
    msg = error_of(tmp_path, extra=extra)
    assert key in msg, msg


def test_a_fifo_config_is_refused_without_blocking(tmp_path):
    cfg, loc = write_config(tmp_path)
    cfg.unlink()
    os.mkfifo(cfg)
    errors: list[str] = []

    def load():
        try:
            load_config(cfg, loc, check_jwst=False)
        except ConfigError as err:
            errors.append(str(err))

    t = threading.Thread(target=load, daemon=True)
    t.start()
    t.join(20)
    assert not t.is_alive(), "reading a FIFO config blocked"
    assert errors and "not a regular file" in errors[0]


def test_deeply_nested_arrays_are_a_config_error_not_a_traceback(tmp_path):
    msg = error_of(tmp_path, extra="deep = " + "[" * 5000 + "]" * 5000 + "\n")
    assert "nested too deeply" in msg or "not valid TOML" in msg


def test_a_working_dir_inside_raw_dir_is_refused(tmp_path):
    msg = error_of(tmp_path, local='[local]\nraw_dir = "raw"\nworking_dir = "raw/work"\n')
    assert "key 'local.working_dir'" in msg and "inside raw_dir" in msg
    msg = error_of(tmp_path, local='[local]\nraw_dir = "raw"\nworking_dir = "raw"\n')
    assert "inside raw_dir" in msg


@pytest.mark.skipif(shutil.which("chattr") is None, reason="needs chattr (an immutable folder)")
def test_an_unwritable_working_dir_is_refused_before_anything_is_written(tmp_path):
    parent = tmp_path / "locked"
    parent.mkdir()
    if subprocess.run(["chattr", "+i", str(parent)], capture_output=True).returncode:
        pytest.skip("this file system has no immutable attribute")
    try:
        msg = error_of(tmp_path, science=MINIMAL_SCIENCE,
                       local=MINIMAL_LOCAL.replace('working_dir = "work"', 'working_dir = "locked/work"'))
    finally:
        subprocess.run(["chattr", "-i", str(parent)], check=True)
    assert "key 'local.working_dir'" in msg and "not writable" in msg
    assert not (parent / "work").exists()
