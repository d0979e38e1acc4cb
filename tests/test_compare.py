"""Release-to-release regression: a known flux scale and sky shift are recovered and flagged."""

import subprocess
import sys

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table
from conftest import REPO

from jwstgal.compare import Tolerances, compare_releases, exceeds
from jwstgal.release import build_release
from jwstgal.simulate.external import external_wcs
from jwstgal.simulate.sky import Galaxy, galaxy_surface_brightness, render_points

PIX = 0.11


def _mosaic(path, scale=1.0, shift_mas=(0.0, 0.0), seed=0, n=300, content_mas=(0.0, 0.0)):
    """The simulated galaxy plus stars; ``shift_mas`` (E, N) moves the WCS (same pixels),
    ``content_mas`` the sky rendered on the same WCS."""
    g = Galaxy(24.17, 15.78)
    w = external_wcs(g.ra, g.dec, PIX, n)
    yy, xx = np.mgrid[0:n, 0:n]
    cx, cy = -content_mas[0] / 1000 / PIX, content_mas[1] / 1000 / PIX    # east is -x
    ra, dec = w.pixel_to_world_values(xx - cx, yy - cy)
    rng = np.random.default_rng(1)
    sx, sy = rng.uniform(10, n - 10, 80) + cx, rng.uniform(10, n - 10, 80) + cy
    sky = galaxy_surface_brightness(ra, dec, g, __import__("jwstgal.bands").bands.get_band("F770W"), 7)
    sky += render_points((n, n), sx, sy, rng.uniform(5, 50, 80), 2.5)
    sky = scale * sky + 0.002 * np.random.default_rng(seed).standard_normal((n, n))
    hdr = w.to_header()
    hdr["CRVAL1"] += shift_mas[0] / 3.6e6 / np.cos(np.deg2rad(g.dec))   # the same pixels, elsewhere
    hdr["CRVAL2"] += shift_mas[1] / 3.6e6
    hdr["BUNIT"] = "MJy/sr"
    path.parent.mkdir(parents=True, exist_ok=True)
    fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(sky.astype(np.float32), hdr, name="SCI")]).writeto(path)


def _release(tmp_path, name, **kw):
    rep = tmp_path / f"rep_{name}"
    _mosaic(rep / "ngc0000" / "F770W" / "lv3" / "ngc0000_miri_lv3_f770w_i2d.fits", **kw)
    build_release(rep, tmp_path / "jwst_release" / name, ["ngc0000"], ["F770W"])
    return tmp_path / "jwst_release" / name


@pytest.mark.pipeline
def test_known_flux_scale_and_shift_are_recovered(tmp_path):
    old = _release(tmp_path, "v1")
    new = _release(tmp_path, "v2", scale=1.03, shift_mas=(30.0, -45.0), seed=1)
    (row,) = compare_releases(old, new, png_dir=tmp_path / "cmp")
    assert row.flux_ratio == pytest.approx(1.03, abs=0.002)
    assert row.shift_e_mas == pytest.approx(30.0, abs=3) and row.shift_n_mas == pytest.approx(-45.0, abs=3)
    assert row.background_diff == pytest.approx(0.0, abs=0.03)
    assert [w.split(" ")[0] for w in exceeds(row, Tolerances())] == ["flux", "shift"]
    moved = _release(tmp_path, "v4", content_mas=(-20.0, 35.0), seed=3)   # same WCS, sky moved
    (row,) = compare_releases(old, moved)
    assert row.shift_e_mas == pytest.approx(-20.0, abs=3) and row.shift_n_mas == pytest.approx(35.0, abs=3)
    same = _release(tmp_path, "v3", seed=2)
    (row,) = compare_releases(old, same)
    assert row.flux_ratio == pytest.approx(1.0, abs=0.002) and np.hypot(row.shift_e_mas, row.shift_n_mas) < 3
    assert exceeds(row, Tolerances()) == []


@pytest.mark.pipeline
def test_compare_releases_script_exit_codes(tmp_path):
    old = _release(tmp_path, "v1")
    new = _release(tmp_path, "v2", scale=1.05, seed=1)
    cmd = [sys.executable, str(REPO / "compare_releases.py"), str(old), str(new)]
    res = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=300)
    assert res.returncode == 1, res.stderr[-2000:]
    assert "flux ratio 1.05" in res.stderr
    out = tmp_path / "jwst_release" / "comparison_v1_to_v2"
    table = Table.read(out / "comparison.ecsv")
    assert table["flux_ratio"][0] == pytest.approx(1.05, abs=0.003)
    assert (out / "index.html").is_file() and (out / "ngc0000_F770W.png").is_file()
    res = subprocess.run([*cmd, "--flux-tol", "0.1"], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    res = subprocess.run([*cmd[:2], str(old), str(tmp_path)], capture_output=True, text=True, cwd=REPO)
    assert res.returncode == 1 and "not a release (no MANIFEST.ecsv)" in res.stderr


@pytest.mark.pipeline
def test_prepare_release_compares_with_the_previous_release(tmp_path):
    from factories import write_config

    old = _release(tmp_path, "v1")
    science = f"""
[projects.1]
targets = ["ngc0000"]
[pipeline]
data_version = "v2"
miri_bands = ["F770W"]
[release]
compare_with = "{old}"
compare_tolerances = {{ flux_ratio = 0.01 }}
"""
    cfg, loc = write_config(tmp_path, science=science, local='[local]\nraw_dir="raw"\nworking_dir="work"\n')
    _mosaic(tmp_path / "work" / "jwst_lv3_reprocessed_v2" / "ngc0000" / "F770W" / "lv3" /
            "ngc0000_miri_lv3_f770w_i2d.fits", scale=0.98, seed=4)
    res = subprocess.run([sys.executable, str(REPO / "prepare_release.py"), str(cfg), str(loc)],
                         capture_output=True, text=True, cwd=REPO, timeout=300)
    assert res.returncode == 1 and "flux ratio 0.98" in res.stderr, res.stderr[-2000:]
    table = Table.read(tmp_path / "work" / "jwst_release" / "comparison_v1_to_v2" / "comparison.ecsv")
    assert table["flux_ratio"][0] == pytest.approx(0.98, abs=0.002)


# ---------------------------------------------------------------- garbage releases (issue #30)

def _compare(*args):
    return subprocess.run([sys.executable, str(REPO / "compare_releases.py"), *map(str, args)],
                          capture_output=True, text=True, cwd=REPO, timeout=300)


@pytest.mark.parametrize("garbage", ["manifest_text", "manifest_columns", "mosaic_text", "mosaic_no_sci",
                                     "escaping_row"])
@pytest.mark.pipeline
def test_a_garbage_release_is_reported_not_a_traceback(tmp_path, garbage):
    old = _release(tmp_path, "v1")
    new = _release(tmp_path, "v2")
    manifest = new / "MANIFEST.ecsv"
    mosaic = next(new.rglob("*_i2d.fits"))
    if garbage == "manifest_text":
        manifest.write_text("this is not an ECSV table\n\x00\x01")
    elif garbage == "manifest_columns":
        manifest.write_text("# %ECSV 1.0\n# ---\n# datatype:\n# - {name: a, datatype: int64}\na\n1\n")
    elif garbage == "mosaic_text":
        mosaic.write_text("not FITS\n" * 500)
    elif garbage == "mosaic_no_sci":
        fits.PrimaryHDU(np.zeros((4, 4))).writeto(mosaic, overwrite=True)
    elif garbage == "escaping_row":
        text = manifest.read_text().replace("ngc0000/", "../../", 1)
        manifest.write_text(text)
    res = _compare(old, new, "--out-dir", tmp_path / "cmp")
    assert res.returncode == 1, res.stderr[-2000:]
    assert "Traceback" not in res.stderr
    if garbage.startswith("manifest"):
        assert "MANIFEST.ecsv" in res.stderr
    elif garbage.startswith("mosaic"):
        table = Table.read(tmp_path / "cmp" / "comparison.ecsv")
        assert str(table["status"][0]).startswith("unreadable") and mosaic.name in table["status"][0]


@pytest.mark.pipeline
def test_an_out_dir_inside_a_release_is_refused(tmp_path):
    old = _release(tmp_path, "v1")
    new = _release(tmp_path, "v2")
    before = sorted(p.name for p in new.rglob("*"))
    res = _compare(old, new, "--out-dir", new / "cmp")
    assert res.returncode == 3 and "inside the release" in res.stderr
    assert sorted(p.name for p in new.rglob("*")) == before
