"""A real install: the wheel, with the locked dependencies, into a fresh virtual environment, used from a
scratch folder (slow).

The fresh environment gets every package of requirements/lock.txt (hash-checked) and jwstgal only from
the wheel, as the README tells users outside the checkout to install it. uv installs from its cache
when setup.sh used it (seconds, offline); otherwise pip installs from the registry.
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO

pytestmark = pytest.mark.slow


def run(cmd, **kw):
    return subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=600, **kw)


def install_lock(py: Path) -> subprocess.CompletedProcess:
    """Install requirements/lock.txt into the environment of ``py`` as setup.sh does."""
    lock = REPO / "requirements" / "lock.txt"
    uv = shutil.which("uv") or REPO / ".venv" / "tools" / "bin" / "uv"
    if Path(uv).is_file() and os.environ.get("JWSTGAL_INSTALLER") != "pip":
        cmd = [uv, "pip", "sync", "--quiet", "--python", py, "--require-hashes", lock]
        env = {**os.environ, "UV_LINK_MODE": "copy"}
        res = run([*cmd, "--offline"], env=env)           # from the cache setup.sh filled
        return res if res.returncode == 0 else run(cmd, env=env)
    return run([py, "-m", "pip", "install", "--quiet", "--require-hashes", "-r", lock])


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    d = tmp_path_factory.mktemp("install")
    res = run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", d / "dist",
               REPO], cwd=d)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "Warning" not in res.stderr, res.stderr[-3000:]          # a clean build
    (wheel,) = (d / "dist").glob("jwstgal-*.whl")
    assert run([sys.executable, "-m", "venv", d / "venv"]).returncode == 0
    py = d / "venv" / "bin" / "python"
    site = Path(run([py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).stdout.strip())
    res = install_lock(py)
    assert res.returncode == 0, res.stderr[-3000:]
    res = run([py, "-m", "pip", "install", "--no-deps", "--no-index", wheel])
    assert res.returncode == 0, res.stderr[-3000:]
    # the wheel's requirements are all met by the locked set (pip check reads the wheel's metadata)
    res = run([py, "-m", "pip", "check"])
    assert res.returncode == 0, res.stdout[-3000:]
    res = run([py, "-c", "import importlib.metadata as m; print(m.version('jwst'), m.version('numpy'))"])
    locked = (REPO / "requirements" / "lock.txt").read_text()
    jwst_v, numpy_v = res.stdout.split()
    assert f"\njwst=={jwst_v} " in locked and f"\nnumpy=={numpy_v} " in locked
    return d, py, site, wheel


def test_wheel_holds_the_package_its_data_and_no_top_level_pca(installed):
    import zipfile

    _, _, _, wheel = installed
    names = zipfile.ZipFile(wheel).namelist()
    assert not any(n.startswith("pca/") for n in names)                       # jwstgal.pca only
    assert "jwstgal/pca/robust.py" in names and "jwstgal/__main__.py" in names
    assert "jwstgal/py.typed" in names                                        # PEP 561
    assert "jwstgal/data/alignment/ngc0628_agb_cat.fits" in names
    shipped = {n.split("/stpsf_data/", 1)[1] for n in names if "/stpsf_data/" in n}
    data = REPO / "PSF" / "stpsf_data"
    on_disk = {str(p.relative_to(data)) for p in data.rglob("*") if p.is_file()}
    assert on_disk <= shipped, f"stpsf files missing from the wheel: {sorted(on_disk - shipped)[:5]}"
    assert any(n.endswith("LICENSE") for n in names)


def test_console_scripts_and_module_entry_points(installed):
    d, py, site, _ = installed
    bin_dir = d / "venv" / "bin"
    for script in ("jwstgal-reprocess", "jwstgal-download", "jwstgal-kernels", "jwstgal-anchor",
                   "jwstgal-convolve", "jwstgal-release", "jwstgal-compare-releases"):
        res = run([bin_dir / script, "--help"], cwd=d)
        assert res.returncode == 0 and "usage:" in res.stdout, (script, res.stderr[-2000:])
        assert ".py" not in res.stdout and "%run" not in res.stdout, (script, res.stdout)  # the command's
    res = run([bin_dir / "jwstgal-init", d / "proj"], cwd=d)          # a project from the shipped examples
    assert res.returncode == 0, res.stderr[-2000:]
    assert all((d / "proj" / "config" / n).is_file() for n in ("config.toml", "local.toml"))
    res = run([bin_dir / "jwstgal-kernels"], cwd=d)                    # no config here: says how to make one
    assert res.returncode == 3 and "jwstgal init" in res.stderr, res.stderr[-2000:]
    res = run([py, "-m", "jwstgal", "--help"], cwd=d)
    assert res.returncode == 0 and "compare-releases" in res.stdout
    assert run([py, "-m", "jwstgal", "convolv"], cwd=d).returncode == 2          # unknown command
    res = run([py, "-m", "jwstgal.cli.make_kernels", "--help"], cwd=d)
    assert res.returncode == 0 and "usage:" in res.stdout                      # not a silent exit 0
    assert run([py, "-m", "jwstgal.cli.download"], cwd=d).returncode == 2
    res = run([py, "-c", "import jwstgal, jwstgal.pca; from jwstgal.data import data_path; "
               "print(jwstgal.__file__); print(data_path('alignment'))"], cwd=d)
    assert res.returncode == 0, res.stderr
    pkg, align = res.stdout.split()
    assert pkg.startswith(str(site)) and Path(align, "ngc0628_agb_cat.fits").is_file()
    # the stpipe.steps entry point of the installed wheel: `strun destripe` finds the step
    res = run([py, "-c", "import inspect; from stpipe.utilities import resolve_step_class_alias as r, "
               "import_class as i; c = i(r('destripe')); print(r('destripe'), inspect.getfile(c))"], cwd=d)
    assert res.returncode == 0, res.stderr[-2000:]
    name, where = res.stdout.split()
    assert name == "jwstgal.DestripeStep" and where.startswith(str(site))


def test_a_tiny_offline_run_from_a_scratch_folder_writes_only_there(installed, tmp_path):
    d, _, site, _ = installed
    def files():
        return {p for p in site.rglob("*") if p.is_file() and "__pycache__" not in p.parts}

    before = files()
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "config.toml").write_text(
        '[projects.1]\ntargets = ["ngc0000"]\n[pipeline]\nmiri_bands = ["F770W", "F2100W"]\n'
        '[kernels]\ntargets = ["F2100W"]\npsf_source = "gaussian"\n')
    (tmp_path / "config" / "local.toml").write_text('[local]\nraw_dir = "../raw"\nworking_dir = "../work"\n')
    res = run([d / "venv" / "bin" / "jwstgal-kernels", "--no-progress"], cwd=tmp_path)   # ./config/*.toml
    assert res.returncode == 0, res.stderr[-3000:]
    assert (tmp_path / "work" / "psf" / "kernels" / "aniano" / "F770W_to_F2100W.fits").is_file()
    assert files() == before                             # nothing written into site-packages
