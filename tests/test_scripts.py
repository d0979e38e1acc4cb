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


@pytest.mark.pipeline
@pytest.mark.parametrize("script", SCRIPTS)
def test_help_and_thin(script):
    path = REPO / script
    assert len(path.read_text().splitlines()) <= 20
    res = subprocess.run([sys.executable, str(path), "--help"], capture_output=True, text=True,
                         cwd=REPO, timeout=120)
    assert res.returncode == 0, res.stderr
    assert "usage:" in res.stdout and "config" in res.stdout
    assert "--dry-run" in res.stdout and "--version" in res.stdout and "--log-file" in res.stdout


@pytest.mark.pipeline
def test_config_error_exit_code_and_message(tmp_path):
    (tmp_path / "c.toml").write_text('[projects.1]\ntargets=["a"]\n[pipeline]\nnircam_bands=["F20W"]\n')
    (tmp_path / "l.toml").write_text('[local]\nraw_dir="r"\nworking_dir="w"\n')
    res = subprocess.run([sys.executable, str(REPO / "run_jwst_reprocessing.py"),
                          str(tmp_path / "c.toml"), str(tmp_path / "l.toml")],
                         capture_output=True, text=True, cwd=REPO, timeout=120)
    assert res.returncode == 3
    assert "unknown band 'F20W'" in res.stderr and "did you mean F200W" in res.stderr
    assert not (tmp_path / "w").exists(), "nothing may be written when the config is invalid"


@pytest.mark.pipeline
def test_band_argument_must_be_configured(tmp_path):
    (tmp_path / "c.toml").write_text('[projects.1]\ntargets=["a"]\n[pipeline]\nnircam_bands=["F200W"]\n')
    (tmp_path / "l.toml").write_text('[local]\nraw_dir="r"\nworking_dir="w"\n')
    res = subprocess.run([sys.executable, str(REPO / "run_jwst_reprocessing.py"),
                          str(tmp_path / "c.toml"), str(tmp_path / "l.toml"), "F444W"],
                         capture_output=True, text=True, cwd=REPO, timeout=120)
    assert res.returncode == 3
    assert "band 'F444W' from the command line is not configured" in res.stderr


@pytest.mark.pipeline
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


@pytest.mark.pipeline
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


# ---------------------------------------------------------------- installed users (issue #28 item 3)

def _run(*args, cwd=REPO):
    return subprocess.run([sys.executable, *map(str, args)], capture_output=True, text=True, cwd=cwd,
                          timeout=120)


@pytest.mark.pipeline
def test_init_writes_the_shipped_examples_and_never_replaces_without_force(tmp_path):
    from jwstgal.data import data_path

    res = _run("-m", "jwstgal", "init", tmp_path / "proj")
    assert res.returncode == 0, res.stderr
    for name in ("config.toml", "local.toml"):
        written = tmp_path / "proj" / "config" / name
        assert written.read_text() == (data_path("config") / name).read_text()
    (tmp_path / "proj" / "config" / "local.toml").write_text("# mine\n")
    res = _run("-m", "jwstgal", "init", tmp_path / "proj")
    assert res.returncode == 3 and "--force" in res.stderr
    assert (tmp_path / "proj" / "config" / "local.toml").read_text() == "# mine\n"
    assert _run("-m", "jwstgal", "init", tmp_path / "proj", "--force").returncode == 0
    assert (tmp_path / "proj" / "config" / "local.toml").read_text() != "# mine\n"


@pytest.mark.pipeline
def test_a_missing_config_says_how_to_make_one(tmp_path):
    res = _run("-m", "jwstgal", "kernels", tmp_path / "config" / "config.toml", cwd=tmp_path)
    assert res.returncode == 3 and "config file not found" in res.stderr and "jwstgal init" in res.stderr


@pytest.mark.parametrize(("command", "script"), [("reprocess", "run_jwst_reprocessing.py"),
                                                 ("kernels", "make_kernels.py"),
                                                 ("compare-releases", "compare_releases.py")])
@pytest.mark.pipeline
def test_help_of_a_command_names_the_command_not_the_checkout_script(command, script):
    res = _run("-m", "jwstgal", command, "--help")
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith(f"usage: python -m jwstgal {command}")
    assert ".py" not in res.stdout and "%run" not in res.stdout, res.stdout
    res = _run(REPO / script, "--help")                             # the checkout script keeps its name
    assert res.stdout.startswith(f"usage: {script}") and script in res.stdout.split("\n", 1)[1]


@pytest.mark.pipeline
def test_a_band_given_where_the_machine_config_goes_is_taken_as_the_band(tmp_path):
    (tmp_path / "config.toml").write_text('[projects.1]\ntargets=["a"]\n[pipeline]\nnircam_bands=["F200W"]\n'
                                          'miri_bands=["F770W"]\n')
    (tmp_path / "local.toml").write_text('[local]\nraw_dir="r"\nworking_dir="w"\n')
    (tmp_path / "r").mkdir()
    res = _run(REPO / "run_jwst_reprocessing.py", tmp_path / "config.toml", "F770W", "--dry-run")
    assert "'F770W' is a band, not a machine config" in res.stderr, res.stderr[-2000:]
    assert "config file not found" not in res.stderr
    assert "F200W" not in res.stdout and "F770W" in res.stdout, res.stdout[-2000:]
