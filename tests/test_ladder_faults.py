"""Faults of the ladder and the release (issues #30 item 5 and its low items, #31 item 2).

Kernel and cached-PSF files are checked when read: a NaN, zero, 1x1, truncated or foreign kernel fails
its rung only, with its file named; corrupt kernels and cached PSFs are made again; make_kernels.py says
when a requested kernel cannot be made. A killed convolution's scratch folder is removed by the next
run; a moved working tree keeps its products; SHA256SUMS covers the release's own files. Each test
failed before its fix."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.io import fits
from factories import fake_mosaic, write_config
from test_release import run

from jwstgal.psfs import psf_file_problem

SCIENCE = """
[projects.1]
targets = ["ngc0000"]
[pipeline]
data_version = "t1"
nircam_bands = ["F200W"]
miri_bands = ["F2100W"]
[kernels]
psf_source = "gaussian"
[convolve]
targets = ["F2100W", "gauss1.0"]
reproject = false
"""


def _kernel(path, data, **header):
    h = fits.Header({"KSOURCE": "F200W", "KTARGET": "F2100W", "PIXELSCL": 0.031, **header})
    fits.PrimaryHDU(np.asarray(data, np.float32), h).writeto(path, overwrite=True)
    return path


def test_kernel_and_psf_files_are_judged_on_what_they_hold(tmp_path):
    good = np.zeros((5, 5))
    good[2, 2] = 0.6
    good[1:4, 1:4] += 0.4 / 9
    assert psf_file_problem(_kernel(tmp_path / "k.fits", good), kernel=True) == ""
    nan = good.copy()
    nan[0, 0] = np.nan
    cases = {
        "nan": (nan, {}, "1 non-finite values"),
        "zero": (np.zeros((5, 5)), {}, "sum to 0"),
        "one": (np.ones((1, 1)), {}, "a 1x1 image"),
        "even": (np.full((4, 4), 1 / 16), {}, "odd size"),
        "unnormalised": (good * 3, {}, "sum to 3"),
        "foreign": (good, {"KSOURCE": ""}, "no KSOURCE/KTARGET"),
        "nopix": (good, {"PIXELSCL": "x"}, "no numeric PIXELSCL"),
    }
    for name, (data, hdr, why) in cases.items():
        got = psf_file_problem(_kernel(tmp_path / f"{name}.fits", data, **hdr), kernel=True)
        assert why in got, (name, got)
    whole = (tmp_path / "k.fits").read_bytes()
    (tmp_path / "cut.fits").write_bytes(whole[: len(whole) - 1000])      # truncated in the data
    assert "not a readable FITS file" in psf_file_problem(tmp_path / "cut.fits", kernel=True)
    (tmp_path / "text.fits").write_text("not FITS\n" * 400)
    assert "not a readable FITS file" in psf_file_problem(tmp_path / "text.fits")
    assert psf_file_problem(tmp_path / "missing.fits") != ""


@pytest.fixture
def tree(tmp_path):
    cfg, loc = write_config(tmp_path, science=SCIENCE,
                            local='[local]\nraw_dir="raw"\nworking_dir="work"\npsf_dir="psf"\n')
    rep = tmp_path / "work" / "jwst_lv3_reprocessed_t1" / "ngc0000"
    fake_mosaic(rep / "F200W" / "lv3" / "ngc0000_nircam_lv3_f200w_i2d.fits", pixscale=0.031,
                shape=(120, 120), point=(60, 60))
    fake_mosaic(rep / "F2100W" / "lv3" / "ngc0000_miri_lv3_f2100w_i2d.fits", pixscale=0.11,
                shape=(60, 60), seed=1)
    res = run("make_kernels.py", cfg, loc)
    assert res.returncode == 0, res.stderr[-3000:]
    return cfg, loc, tmp_path / "psf", rep


@pytest.mark.pipeline
@pytest.mark.parametrize("damage", ["nan", "truncated"])   # zero and 1x1: the unit test above
def test_a_bad_kernel_fails_its_rung_only_names_the_file_and_is_remade(tree, damage):
    cfg, loc, psf, rep = tree
    kfile = psf / "kernels" / "aniano" / "F200W_to_F2100W.fits"
    with fits.open(kfile) as h:
        data, hdr = h[0].data.copy(), h[0].header.copy()
    if damage == "nan":
        data[data.shape[0] // 2, :] = np.nan
    elif damage == "zero":
        data[:] = 0
    if damage == "one_pixel":
        fits.PrimaryHDU(np.ones((1, 1), np.float32), hdr).writeto(kfile, overwrite=True)
    elif damage == "truncated":
        kfile.write_bytes(kfile.read_bytes()[:-20000])
    else:
        fits.PrimaryHDU(data, hdr).writeto(kfile, overwrite=True)
    res = run("convolve_data.py", cfg, loc)
    assert res.returncode == 1, res.stderr[-3000:]
    assert "F200W -> F2100W" in res.stderr and str(kfile) in res.stderr and "Traceback" not in res.stderr
    conv = rep / "F200W" / "convolved"
    assert not list(conv.glob("*_F2100W.fits")) if conv.is_dir() else True    # no product from it
    made = sorted(p.name for p in rep.rglob("convolved/*.fits"))
    assert any("f200w" in n and "gauss1.0" in n for n in made), made        # the other rungs went on
    assert any("f2100w" in n and "gauss1.0" in n for n in made), made
    res = run("make_kernels.py", cfg, loc)                                  # the bad kernel is remade
    assert res.returncode == 0, res.stderr[-3000:]
    assert "is unusable" in res.stderr and psf_file_problem(kfile, kernel=True) == ""
    res = run("convolve_data.py", cfg, loc)
    assert res.returncode == 0, res.stderr[-3000:]


@pytest.mark.pipeline
def test_a_corrupt_cached_psf_is_made_again(tree):
    cfg, loc, psf, _ = tree
    cached = psf / "psfs" / "F200W.fits"
    assert cached.is_file()
    cached.write_bytes(cached.read_bytes()[:3000])
    res = run("make_kernels.py", cfg, loc, "--overwrite")
    assert res.returncode == 0 and "Traceback" not in res.stderr, res.stderr[-3000:]
    assert "cached PSF" in res.stderr and psf_file_problem(cached) == ""


@pytest.mark.pipeline
def test_make_kernels_exits_nonzero_when_a_requested_kernel_cannot_be_made(tmp_path):
    science = SCIENCE.replace('[kernels]\n', '[kernels]\ntargets = ["F200W", "gauss0.05"]\n')
    science = science.replace('targets = ["F2100W", "gauss1.0"]', 'targets = ["F2100W"]')
    cfg, loc = write_config(tmp_path, science=science,
                            local='[local]\nraw_dir="raw"\nworking_dir="work"\npsf_dir="psf"\n')
    res = run("make_kernels.py", cfg, loc)
    assert res.returncode == 1, res.stderr[-3000:]
    assert "cannot be made" in res.stderr and "gauss0.05" in res.stderr


@pytest.mark.pipeline
def test_the_scratch_folder_of_a_killed_run_is_removed_by_the_next(tree):
    import subprocess
    import sys

    from jwstgal.tiled_io import scratch_dir

    cfg, loc, _, rep = tree
    conv = rep / "F200W" / "convolved"
    code = ("import os, signal; from pathlib import Path; from jwstgal.tiled_io import scratch_dir; "
            f"d = scratch_dir(Path({str(conv)!r}), '.jwstgal-conv-'); "
            "(d / 'sci.f32').write_bytes(bytes(4096)); os.kill(os.getpid(), signal.SIGKILL)")
    assert subprocess.run([sys.executable, "-c", code]).returncode == -9          # kill -9 mid-run
    (dead,) = conv.glob(".jwstgal-conv-*")
    alive = scratch_dir(conv, ".jwstgal-conv-")                 # this process's: running, kept
    res = run("convolve_data.py", cfg, loc)
    assert res.returncode == 0, res.stderr[-3000:]
    assert not dead.exists() and alive.is_dir()
    assert "left by a killed run" in res.stderr


@pytest.mark.pipeline
def test_a_moved_working_tree_keeps_its_ladder(tree, tmp_path):
    import shutil

    cfg, loc, _, rep = tree
    science = cfg.read_text().replace("reproject = false", "reproject = true")
    cfg.write_text(science)
    res = run("convolve_data.py", cfg, loc)
    assert res.returncode == 0, res.stderr[-3000:]
    moved = tmp_path.parent / (tmp_path.name + "-moved")
    shutil.move(tmp_path, moved)
    try:
        res = run("convolve_data.py", moved / cfg.name, moved / loc.name)
        assert res.returncode == 0, res.stderr[-3000:]
        assert "convolve: 0 tasks run" in res.stderr, res.stderr[-3000:]
    finally:
        shutil.move(moved, tmp_path)


def test_sha256sums_covers_the_manifest_and_the_readme(tmp_path):
    import subprocess

    from jwstgal.release import build_release

    rep = tmp_path / "rep"
    fake_mosaic(rep / "ngc0000" / "F200W" / "lv3" / "ngc0000_nircam_lv3_f200w_i2d.fits")
    rel = tmp_path / "release"
    build_release(rep, rel, ["ngc0000"], ["F200W"], config_hash="abc")
    listed = {line.split("  ", 1)[1] for line in (rel / "SHA256SUMS").read_text().splitlines()}
    assert {"MANIFEST.ecsv", "README.md"} <= listed
    assert subprocess.run(["sha256sum", "-c", "SHA256SUMS"], cwd=rel, capture_output=True).returncode == 0
    (rel / "README.md").write_text("tampered\n")
    assert subprocess.run(["sha256sum", "-c", "SHA256SUMS"], cwd=rel, capture_output=True).returncode != 0
