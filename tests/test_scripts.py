"""The users' interface: root scripts exist, stay thin and answer --help."""

import subprocess
import sys

import pytest
from conftest import REPO

SCRIPTS = ["run_jwst_reprocessing.py", "jwst_reprocess.py", "log_jwst_reprocessing.py", "make_kernels.py",
           "convolve_data.py", "anchor_data.py", "compare_releases.py", "prepare_release.py",
           "PSF/generate_JWST_PSF_and_kernels.py",
           "nircam_destriping.py", "miri_destriping.py", "archive_download.py",
           "download_phangs_jwst.py", "migrate_config.py"]


@pytest.mark.parametrize("script", SCRIPTS)
def test_help_and_thin(script):
    path = REPO / script
    assert len(path.read_text().splitlines()) <= 20
    res = subprocess.run([sys.executable, str(path), "--help"], capture_output=True, text=True,
                         cwd=REPO, timeout=120)
    assert res.returncode == 0, res.stderr
    assert "usage:" in res.stdout and "config" in res.stdout
    assert "--dry-run" in res.stdout and "--version" in res.stdout and "--log-file" in res.stdout


def test_config_error_exit_code_and_message(tmp_path):
    (tmp_path / "c.toml").write_text('[projects.1]\ntargets=["a"]\n[pipeline]\nnircam_bands=["F20W"]\n')
    (tmp_path / "l.toml").write_text('[local]\nraw_dir="r"\nworking_dir="w"\n')
    res = subprocess.run([sys.executable, str(REPO / "run_jwst_reprocessing.py"),
                          str(tmp_path / "c.toml"), str(tmp_path / "l.toml")],
                         capture_output=True, text=True, cwd=REPO, timeout=120)
    assert res.returncode == 3
    assert "unknown band 'F20W'" in res.stderr and "did you mean F200W" in res.stderr
    assert not (tmp_path / "w").exists(), "nothing may be written when the config is invalid"


def test_band_argument_must_be_configured(tmp_path):
    (tmp_path / "c.toml").write_text('[projects.1]\ntargets=["a"]\n[pipeline]\nnircam_bands=["F200W"]\n')
    (tmp_path / "l.toml").write_text('[local]\nraw_dir="r"\nworking_dir="w"\n')
    res = subprocess.run([sys.executable, str(REPO / "run_jwst_reprocessing.py"),
                          str(tmp_path / "c.toml"), str(tmp_path / "l.toml"), "F444W"],
                         capture_output=True, text=True, cwd=REPO, timeout=120)
    assert res.returncode == 3
    assert "band 'F444W' from the command line is not configured" in res.stderr


def test_log_script_writes_a_timestamped_log_in_working_dir(tmp_path):
    (tmp_path / "c.toml").write_text('[projects.1]\ntargets=["a"]\n[pipeline]\nnircam_bands=["F200W"]\n')
    (tmp_path / "l.toml").write_text('[local]\nraw_dir="r"\nworking_dir="w"\ncrds_dir="crds"\n')
    (tmp_path / "r").mkdir()                        # an empty raw tree (a missing one is a config error)
    res = subprocess.run([sys.executable, str(REPO / "log_jwst_reprocessing.py"),
                          str(tmp_path / "c.toml"), str(tmp_path / "l.toml"), "--no-progress"],
                         capture_output=True, text=True, cwd=REPO, timeout=300)
    assert res.returncode == 1                      # no raw data: nothing processed
    logs = list((tmp_path / "w").glob("jwst_reprocess_log_*.log"))
    assert len(logs) == 1
    text = logs[0].read_text()
    assert "a F200W: no raw *_uncal.fits with FILTER=F200W" in text
    assert "nothing was processed" in text


def test_three_kinds_of_config_errors_in_one_pass(tmp_path):
    """A science key, a machine key and a jwst step parameter wrong at once: one message, all
    three, exit 3, nothing created."""
    (tmp_path / "c.toml").write_text('[projects.1]\ntargets=["a"]\n[pipeline]\nnircam_bands=["F200W"]\n'
                                     '[destripe]\nmethd = "row_median"\n'
                                     '[lv3_parameters.tweakreg]\nsearchradius = 1.0\n')
    (tmp_path / "l.toml").write_text('[local]\nraw_dir="r"\nworking_dir="w"\nprocesess=2\n')
    res = subprocess.run([sys.executable, str(REPO / "run_jwst_reprocessing.py"),
                          str(tmp_path / "c.toml"), str(tmp_path / "l.toml")],
                         capture_output=True, text=True, cwd=REPO, timeout=300)
    assert res.returncode == 3, res.stderr[-3000:]
    assert "destripe.methd" in res.stderr and "did you mean 'method'" in res.stderr
    assert "local.procesess" in res.stderr
    assert "lv3_parameters.tweakreg.searchradius" in res.stderr and "did you mean 'searchrad'" in res.stderr
    assert not (tmp_path / "w").exists()
