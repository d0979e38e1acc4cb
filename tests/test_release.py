import hashlib
import re
import subprocess
import sys

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table
from conftest import REPO
from factories import fake_mosaic, write_config

from jwstgal.release import build_release, coverage_from_context

SCIENCE = """
[projects.1]
targets = ["ngc0000"]
[pipeline]
data_version = "t1"
nircam_bands = ["F200W"]
miri_bands = ["F2100W"]
[kernels]
targets = ["F2100W"]
psf_source = "gaussian"
[convolve]
target = "F2100W"
"""


def test_coverage_counts_bits_over_planes():
    con = np.zeros((2, 2, 2), np.int32)
    con[0, 0, 0] = 0b1011
    con[1, 0, 0] = np.int32(-2**31)     # bit 31 of plane 1 (image 63): stored as a negative int32
    con[0, 1, 1] = 0b1
    cov = coverage_from_context(con)
    assert cov[0, 0] == 4 and cov[1, 1] == 1 and np.isnan(cov[0, 1])


def test_release_slims_copies_only_and_checksums(tmp_path):
    rep = tmp_path / "rep"
    i2d = fake_mosaic(rep / "ngc0000" / "F200W" / "lv3" / "ngc0000_nircam_lv3_f200w_i2d.fits")
    before = hashlib.sha256(i2d.read_bytes()).hexdigest()
    rel = tmp_path / "release"
    files = build_release(rep, rel, ["ngc0000"], ["F200W", "F2100W"], config_hash="abc")
    assert hashlib.sha256(i2d.read_bytes()).hexdigest() == before   # working data untouched
    mosaic = rel / "ngc0000" / i2d.name
    with fits.open(mosaic) as h:
        names = [x.name for x in h]
        assert names == ["PRIMARY", "SCI", "ERR", "WHT"]
        assert h[0].header["JGAL_CFG"] == "abc"
    cov = fits.getdata(rel / "ngc0000" / "ngc0000_nircam_lv3_f200w_coverage.fits", "COVERAGE")
    assert cov[60, 80] == 3 and cov[60, 10] == 1 and np.isnan(cov[0, 0])
    manifest = Table.read(rel / "MANIFEST.ecsv")
    assert sorted(manifest["kind"]) == ["coverage", "mosaic"] and len(files) == 2
    for row in manifest:
        assert hashlib.sha256((rel / row["file"]).read_bytes()).hexdigest() == row["sha256"]
    assert subprocess.run(["sha256sum", "-c", "SHA256SUMS"], cwd=rel, capture_output=True).returncode == 0


def run(script, cfg, loc, *extra):
    return subprocess.run([sys.executable, str(REPO / script), str(cfg), str(loc), "--no-progress", *extra],
                          capture_output=True, text=True, cwd=REPO, timeout=600)


def dry_run(script, cfg, loc):
    """``script --dry-run``: its plan (stdout), after checking that it wrote nothing."""
    root = cfg.parent

    def tree():
        return sorted((str(p), p.stat().st_mtime_ns) for p in root.rglob("*"))

    before = tree()
    res = run(script, cfg, loc, "--dry-run")
    assert res.returncode == 0, res.stderr[-3000:]
    assert tree() == before, f"{script} --dry-run wrote something"
    return res.stdout


@pytest.mark.pipeline
def test_make_kernels_convolve_and_release_scripts(tmp_path):
    cfg, loc = write_config(tmp_path, science=SCIENCE,
                            local='[local]\nraw_dir="raw"\nworking_dir="work"\npsf_dir="psf"\n')
    rep = tmp_path / "work" / "jwst_lv3_reprocessed_t1" / "ngc0000"
    fake_mosaic(rep / "F200W" / "lv3" / "ngc0000_nircam_lv3_f200w_i2d.fits", pixscale=0.031,
                shape=(200, 200), point=(100, 100))
    fake_mosaic(rep / "F2100W" / "lv3" / "ngc0000_miri_lv3_f2100w_i2d.fits", pixscale=0.11,
                shape=(60, 60), seed=1)
    plan = dry_run("make_kernels.py", cfg, loc)
    assert plan.startswith("dry run: kernels (run scope)")
    assert re.search(r"PSF F200W +make +not cached yet \(gaussian\)", plan)
    assert re.search(r"kernel F200W -> F2100W \(aniano\) +make +PSF of F200W to be made", plan)
    assert "      out: kernels/aniano/F200W_to_F2100W.fits" in plan
    plan = dry_run("convolve_data.py", cfg, loc)
    assert re.search(r"ngc0000 F200W -> F2100W +fails +kernel .*not found; run make_kernels.py first", plan)
    assert plan.startswith("dry run: convolve (band scope)")
    plan = dry_run("prepare_release.py", cfg, loc)
    assert plan.startswith("dry run: release (run scope)") and "run: compare: nothing to do" in plan
    assert re.search(r"ngc0000 F200W mosaic +make +new or changed", plan)
    assert "      out: jwst_release/t1/ngc0000/ngc0000_nircam_lv3_f200w_i2d.fits" in plan
    res = run("make_kernels.py", cfg, loc)
    assert res.returncode == 0, res.stderr
    plan = dry_run("make_kernels.py", cfg, loc)
    assert re.search(r"kernel F200W -> F2100W \(aniano\) +skip +up to date", plan) and " make " not in plan
    kern = tmp_path / "psf" / "kernels" / "aniano" / "F200W_to_F2100W.fits"
    assert kern.is_file() and fits.getheader(kern)["SAFETY"] == "very safe"
    res = run("convolve_data.py", cfg, loc)
    assert res.returncode == 0, res.stderr
    conv = rep / "F200W" / "convolved" / "ngc0000_nircam_lv3_f200w_i2d_conv_F2100W.fits"
    with fits.open(conv) as h:
        assert h["SCI"].data.shape == (60, 60)          # reprojected onto the F2100W grid
        assert h["SCI"].header["PSF"] == "F2100W"
        assert h["SCI"].header["JG_KSAMP"] == "pixel_centre"    # auto, for Gaussian band PSFs
        # the point source is now as wide as the F2100W PSF (0.66"): its peak fell a lot
        assert np.nanmax(h["SCI"].data) < 5
    again = run("convolve_data.py", cfg, loc)
    assert "convolved product up to date" in again.stderr
    plan = dry_run("convolve_data.py", cfg, loc)
    assert re.search(r"F200W -> F2100W +skip +up to date", plan) and " make " not in plan
    res = run("prepare_release.py", cfg, loc)
    assert res.returncode == 0, res.stderr
    plan = dry_run("prepare_release.py", cfg, loc)
    assert re.search(r"ngc0000 F200W mosaic +skip +up to date", plan) and " make " not in plan
    manifest = Table.read(tmp_path / "work" / "jwst_release" / "t1" / "MANIFEST.ecsv")
    assert "convolved" in set(manifest["kind"])


@pytest.mark.pipeline
def test_make_kernels_draws_its_bar_on_a_terminal_unless_told_not_to(tmp_path):
    """On a terminal make_kernels.py shows its progress bar; ``--no-progress`` turns it off."""
    import fcntl
    import os
    import pty
    import struct
    import termios

    cfg, loc = write_config(tmp_path, science=SCIENCE,
                            local='[local]\nraw_dir="raw"\nworking_dir="work"\npsf_dir="psf"\n')

    def on_terminal(*extra):
        main, child = pty.openpty()
        fcntl.ioctl(child, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 120, 0, 0))  # 120 columns
        proc = subprocess.Popen([sys.executable, str(REPO / "make_kernels.py"), str(cfg), str(loc),
                                 "--overwrite", *extra], stdin=subprocess.DEVNULL, stdout=child,
                                stderr=child, cwd=REPO)
        os.close(child)
        out = b""
        while True:
            try:
                chunk = os.read(main, 4096)
            except OSError:                     # the child closed the terminal
                break
            if not chunk:
                break
            out += chunk
        os.close(main)
        assert proc.wait(timeout=300) == 0, out.decode(errors="replace")[-3000:]
        return out.decode(errors="replace")

    shown, quiet = on_terminal(), on_terminal("--no-progress")
    bar = re.compile(r"kernels: +\d+%\|")
    assert bar.search(shown) and "1/1" in shown, shown[-2000:]
    assert not bar.search(quiet) and "kernel/s" not in quiet, quiet[-2000:]


@pytest.mark.pipeline
def test_convolve_needs_kernels_first(tmp_path):
    cfg, loc = write_config(tmp_path, science=SCIENCE,
                            local='[local]\nraw_dir="raw"\nworking_dir="work"\npsf_dir="psf"\n')
    rep = tmp_path / "work" / "jwst_lv3_reprocessed_t1" / "ngc0000"
    fake_mosaic(rep / "F200W" / "lv3" / "ngc0000_nircam_lv3_f200w_i2d.fits")
    fake_mosaic(rep / "F2100W" / "lv3" / "ngc0000_miri_lv3_f2100w_i2d.fits")
    res = run("convolve_data.py", cfg, loc)
    assert res.returncode == 1
    assert "F200W_to_F2100W.fits not found; run make_kernels.py first" in res.stderr


@pytest.mark.parametrize(("bad", "message"), [
    ('[convolve]\ntargets = ["gauss4", "F44W"]\n', "unknown band 'F44W'"),
    ('[convolve]\ntarget = "F2100W"\nmethod = "pypher"\n', "method 'pypher' is not among"),
    ('[convolve]\ntarget = "F2100W"\nkernel_sampling = "point"\n',
     "key 'convolve.kernel_sampling': value 'point': "
     "Input should be 'auto', 'band_limited' or 'pixel_centre'"),
    ('[convolve]\ntarget = "F2100W"\n[anchor]\nreference = {miri = "F770W"}\n'
     'external = {miri = [{band = "irac4", psf = "gauss4"}]}\n', "reference F770W is not among"),
    ('[convolve]\ntarget = "F2100W"\n[anchor]\nreference = {miri = "F2100W"}\n', "lists no map"),
    ('[convolve]\ntarget = "F2100W"\n[anchor]\nreference = {nircam = "F200W"}\n'
     'external = {nircam = [{band = "../x", psf = "gauss4"}]}\n', "external map band"),
])
def test_convolve_and_anchor_tables_are_checked(tmp_path, bad, message):
    from jwstgal.config import load_config
    from jwstgal.errors import ConfigError

    sci = SCIENCE.replace('[convolve]\ntarget = "F2100W"\n', bad)
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(*write_config(tmp_path, science=sci))


def test_kernels_of_the_ladder_are_made_without_being_listed(tmp_path):
    from jwstgal.config import load_config

    sci = SCIENCE.replace('target = "F2100W"', 'targets = ["F2100W", "gauss4", "gauss15"]')
    cfg = load_config(*write_config(tmp_path, science=sci))
    assert cfg.science.kernel_targets == ["F2100W", "gauss2"]        # 4" and 15" go through 2"


def test_release_always_lists_what_it_holds_and_rebuilds_stale_products(tmp_path):
    import os

    rep, rel = tmp_path / "rep", tmp_path / "release"
    f200 = fake_mosaic(rep / "ngc0000" / "F200W" / "lv3" / "ngc0000_nircam_lv3_f200w_i2d.fits", seed=1)
    f2100 = fake_mosaic(rep / "ngc0000" / "F2100W" / "lv3" / "ngc0000_miri_lv3_f2100w_i2d.fits", seed=2)
    build_release(rep, rel, ["ngc0000"], ["F200W", "F2100W"])
    full = sorted(Table.read(rel / "MANIFEST.ecsv")["file"])
    assert len(full) == 4
    build_release(rep, rel, ["ngc0000"], ["F200W"])                 # one band only: others stay listed
    assert sorted(Table.read(rel / "MANIFEST.ecsv")["file"]) == full
    # the band is reprocessed: its new mosaic must replace the released one
    released = rel / "ngc0000" / f200.name
    fake_mosaic(f200.parent / "new.fits", seed=7).replace(f200)
    os.utime(f200, ns=(released.stat().st_mtime_ns + 10**9,) * 2)
    build_release(rep, rel, ["ngc0000"], ["F200W"])
    assert np.array_equal(fits.getdata(released, "SCI"), fits.getdata(f200, "SCI"))
    (rel / "ngc0000" / "ngc0000_miri_lv3_f2100w_coverage.fits").unlink()  # gone: no longer listed
    (rel / "ngc0000" / "notes.txt").write_text("added by hand")              # there: listed
    build_release(rep, rel, ["ngc0000"], ["F200W"])
    manifest = Table.read(rel / "MANIFEST.ecsv")
    assert sorted(manifest["file"]) == sorted([f for f in full if "f2100w_coverage" not in f]
                                              + ["ngc0000/notes.txt"])
    assert dict(zip(manifest["file"], manifest["kind"], strict=True))["ngc0000/notes.txt"] == "other"
    assert subprocess.run(["sha256sum", "-c", "SHA256SUMS"], cwd=rel, capture_output=True).returncode == 0
    assert f2100.is_file()


@pytest.mark.pipeline
def test_an_unsafe_kernel_is_not_applied_unless_the_config_says_so(tmp_path):
    cfg, loc = write_config(tmp_path, science=SCIENCE,
                            local='[local]\nraw_dir="raw"\nworking_dir="work"\npsf_dir="psf"\n')
    rep = tmp_path / "work" / "jwst_lv3_reprocessed_t1" / "ngc0000"
    fake_mosaic(rep / "F200W" / "lv3" / "ngc0000_nircam_lv3_f200w_i2d.fits", pixscale=0.031,
                shape=(200, 200))
    fake_mosaic(rep / "F2100W" / "lv3" / "ngc0000_miri_lv3_f2100w_i2d.fits", pixscale=0.11,
                shape=(60, 60), seed=1)
    assert run("make_kernels.py", cfg, loc).returncode == 0
    kern = tmp_path / "psf" / "kernels" / "aniano" / "F200W_to_F2100W.fits"
    with fits.open(kern, mode="update") as h:          # as a pypher kernel to a sharper PSF would be
        h[0].header["SAFETY"], h[0].header["KERN_WM"] = "unsafe", 107.0
    res = run("convolve_data.py", cfg, loc)
    out = rep / "F200W" / "convolved" / "ngc0000_nircam_lv3_f200w_i2d_conv_F2100W.fits"
    assert res.returncode == 1 and "is unsafe (W- = 107" in res.stderr and not out.exists()
    cfg.write_text(cfg.read_text().replace('target = "F2100W"\n', 'target = "F2100W"\nallow_unsafe = true\n'))
    res = run("convolve_data.py", cfg, loc)
    assert res.returncode == 0, res.stderr[-2000:]
    assert out.is_file()


def test_release_agrees_with_itself(tmp_path):
    """Catalogue sky positions carry the alignment of the released mosaic; anchored mosaics, their
    table, segmentation maps, ladder rungs, crf files and run_config.json are released, and the
    README says what is there."""
    from astropy.coordinates import SkyCoord
    from astropy.wcs import WCS

    rep, rel = tmp_path / "rep", tmp_path / "release"
    bdir = rep / "ngc0000" / "F200W"
    stage3 = fake_mosaic(bdir / "lv3" / "ngc0000_nircam_lv3_f200w_i2d.fits", pixscale=0.031)
    pre = WCS(fits.getheader(stage3, "SCI"))
    x, y = np.array([10.0, 50.5, 80.2]), np.array([20.0, 60.0, 99.9])
    cat = Table({"label": [1, 2, 3], "xcentroid": x, "ycentroid": y,
                 "sky_centroid": pre.pixel_to_world(x, y)})
    cat.write(bdir / "lv3" / "ngc0000_nircam_lv3_f200w_cat.ecsv", format="ascii.ecsv")
    (bdir / "lv3" / "ngc0000_nircam_lv3_f200w_segm.fits").write_bytes(stage3.read_bytes())
    (bdir / "lv3" / "jw1_crf.fits").write_bytes(stage3.read_bytes())
    aligned = bdir / "astrometric_align" / "ngc0000_nircam_lv3_f200w_i2d_align.fits"
    aligned.parent.mkdir()
    with fits.open(stage3) as h:                                    # an 80 mas shift to the north
        for hdu in h[1:4]:
            hdu.header["CRVAL2"] += 0.080 / 3600
        h[0].header["ASTALIGN"] = "[0.0, 0.08]"
        h.writeto(aligned)
    (bdir / "astrometric_align" / "jw1_crf_tweakback.fits").write_bytes(stage3.read_bytes())
    anchored = bdir / "anchor" / "ngc0000_nircam_lv3_f200w_i2d_anchor.fits"
    anchored.parent.mkdir()
    with fits.open(aligned) as h:
        h[0].header["ANCHOFF"], h[0].header["ANCHERR"], h[0].header["ANCHREF"] = 0.123, 0.004, "irac1"
        h.writeto(anchored)
    (rep / "ngc0000" / "anchor").mkdir()
    Table({"band": ["F200W"], "offset": [0.123]}).write(rep / "ngc0000" / "anchor" / "ngc0000_anchor.ecsv")
    conv = bdir / "convolved" / "ngc0000_nircam_lv3_f200w_i2d_conv_gauss4.fits"
    conv.parent.mkdir()
    conv.write_bytes(stage3.read_bytes())
    build_release(rep, rel, ["ngc0000"], ["F200W"], include_crf=True, run_config={"science": {"a": 1}})
    tdir = rel / "ngc0000"
    out = Table.read(tdir / "ngc0000_nircam_lv3_f200w_cat.ecsv")
    released_wcs = WCS(fits.getheader(tdir / "ngc0000_nircam_lv3_f200w_i2d.fits", "SCI"))
    sep = out["sky_centroid"].separation(released_wcs.pixel_to_world(x, y)).to_value("mas")
    assert sep.max() < 5
    moved = out["sky_centroid"].separation(SkyCoord(cat["sky_centroid"])).to_value("mas")
    assert np.allclose(moved, 80, atol=1)                          # the pre-alignment positions were off
    assert "ASDF" not in [h.name for h in fits.open(tdir / "ngc0000_nircam_lv3_f200w_i2d.fits")]
    manifest = Table.read(rel / "MANIFEST.ecsv")
    kinds = dict(zip(manifest["file"], manifest["kind"], strict=True))
    assert kinds["ngc0000/ngc0000_nircam_lv3_f200w_i2d_anchor.fits"] == "anchored mosaic"
    assert kinds["ngc0000/anchor/ngc0000_anchor.ecsv"] == "anchoring"
    assert kinds["ngc0000/ngc0000_nircam_lv3_f200w_segm.fits"] == "segmentation"
    assert kinds["ngc0000/convolved/ngc0000_nircam_lv3_f200w_i2d_conv_gauss4.fits"] == "convolved"
    assert kinds["ngc0000/exposures/F200W/jw1_crf_tweakback.fits"] == "exposure"   # the aligned one
    assert kinds["run_config.json"] == "configuration"
    for row in manifest:
        assert hashlib.sha256((rel / row["file"]).read_bytes()).hexdigest() == row["sha256"]
        if row["file"].endswith(".fits"):
            assert fits.getheader(rel / row["file"]).get("JGAL_VER")      # provenance everywhere
    readme = (rel / "README.md").read_text()
    assert "| ngc0000 | F200W | yes | +0.1230 ± 0.0040 (irac1) | 3 | gauss4 |" in readme


@pytest.mark.pipeline
def test_nothing_to_release_writes_nothing(tmp_path):
    cfg, loc = write_config(tmp_path, science=SCIENCE, local='[local]\nraw_dir="raw"\nworking_dir="work"\n')
    res = run("prepare_release.py", cfg, loc)
    assert res.returncode == 1 and "nothing to release" in res.stderr
    assert not (tmp_path / "work").exists()


@pytest.mark.pipeline
def test_shipped_config_runs_the_quickstart_commands_up_to_their_inputs(tmp_path):
    """config/config.toml has every table the README's quickstart commands need: each stops at its
    missing inputs with a one-line message (exit 1), never at its configuration (exit 3)."""
    import shutil

    shutil.copytree(REPO / "config", tmp_path / "config")
    (tmp_path / "data" / "raw").mkdir(parents=True)
    for script in ("anchor_data.py", "convolve_data.py", "prepare_release.py"):   # (make_kernels.py
        res = subprocess.run([sys.executable, str(REPO / script),                # would compute PSFs)
                              str(tmp_path / "config" / "config.toml"), "--band", "F770W",
                              "--target", "ngc0628", "--no-progress"],
                             capture_output=True, text=True, cwd=tmp_path, timeout=600)
        assert res.returncode in (0, 1), (script, res.stderr[-2000:])
        assert "configuration error" not in res.stderr, (script, res.stderr[-2000:])


@pytest.fixture
def full_disk_at_ngc0001(monkeypatch):
    """Releasing any file of target ngc0001 fails as on a full disk."""
    import errno

    import jwstgal.release as rel_mod

    real = rel_mod.make_item

    def fills_the_disk(item, *args, **kw):
        if item.target == "ngc0001":
            raise OSError(errno.ENOSPC, "No space left on device", str(item.dst))
        return real(item, *args, **kw)

    monkeypatch.setattr(rel_mod, "make_item", fills_the_disk)


def test_a_full_disk_mid_release_is_one_message_and_leaves_a_manifest_of_what_is_there(tmp_path,
                                                                                        full_disk_at_ngc0001):
    """Issue #30: a full disk during prepare_release gave a traceback and a release without manifest."""
    from jwstgal.errors import ReductionError

    rep = tmp_path / "rep"
    fake_mosaic(rep / "ngc0000" / "F200W" / "lv3" / "ngc0000_nircam_lv3_f200w_i2d.fits")
    fake_mosaic(rep / "ngc0001" / "F200W" / "lv3" / "ngc0001_nircam_lv3_f200w_i2d.fits", seed=1)
    rel = tmp_path / "release"
    with pytest.raises(ReductionError, match="release incomplete: the disk is full") as err:
        build_release(rep, rel, ["ngc0000", "ngc0001"], ["F200W"])
    assert "MANIFEST.ecsv and SHA256SUMS list what is there" in str(err.value)
    manifest = Table.read(rel / "MANIFEST.ecsv")
    assert {str(t) for t in manifest["target"]} == {"ngc0000"}
    assert subprocess.run(["sha256sum", "-c", "SHA256SUMS"], cwd=rel, capture_output=True).returncode == 0
    assert not list(rel.rglob("*.tmp*"))


def test_a_full_disk_mid_release_step_is_the_same_one_message(tmp_path, full_disk_at_ngc0001):
    """The release step (files released as tasks) reports a full disk as build_release does."""
    from jwstgal.config import load_config
    from jwstgal.errors import ReductionError
    from jwstgal.post_runner import run_post_steps

    science = SCIENCE.replace('targets = ["ngc0000"]', 'targets = ["ngc0000", "ngc0001"]')
    cfg, loc = write_config(tmp_path, science=science, local='[local]\nraw_dir="raw"\nworking_dir="work"\n')
    run = load_config(cfg, loc, check_jwst=False)
    for i, t in enumerate(("ngc0000", "ngc0001")):
        fake_mosaic(run.reprocess_dir / t / "F200W" / "lv3" / f"{t}_nircam_lv3_f200w_i2d.fits", seed=i)
    with pytest.raises(ReductionError, match="release incomplete: the disk is full"):
        run_post_steps(run, ["release"], ["F200W"], progress=False)
    manifest = Table.read(run.release_dir / "MANIFEST.ecsv")
    assert {str(t) for t in manifest["target"]} == {"ngc0000"}
    assert subprocess.run(["sha256sum", "-c", "SHA256SUMS"], cwd=run.release_dir,
                          capture_output=True).returncode == 0


def test_the_released_run_config_holds_no_machine_path_or_secret(tmp_path):
    """Issue #31 item 9: run_config.json carried this machine's absolute paths."""
    import json

    from jwstgal.config import load_config

    (tmp_path / "raw").mkdir()
    local = (f'[local]\nraw_dir = "{tmp_path / "raw"}"\nworking_dir = "{tmp_path / "work"}"\n'
             f'api_key = "s3cret-token"\nanchor_ref_dir = "{tmp_path / "ext"}"\n')
    cfg, loc = write_config(tmp_path, science=SCIENCE + f'[release]\ncompare_with = "{tmp_path / "v0"}"\n',
                            local=local)
    text = json.dumps(load_config(cfg, loc, check_jwst=False).released_config())
    assert str(tmp_path) not in text and "s3cret-token" not in text
    doc = json.loads(text)
    assert doc["config_file"] == "config.toml" and doc["science"]["release"]["compare_with"] == "v0"
    assert doc["local"]["executor"] and "jwst" in doc["versions"]


def _full_band(rep):
    """A band folder with every optional product: alignment tables, field and background mosaics,
    QA figures (and a per-exposure panel folder, which is not released)."""
    bdir = rep / "ngc0000" / "F200W"
    stem = "ngc0000_nircam_lv3_f200w"
    fake_mosaic(bdir / "lv3" / f"{stem}_i2d.fits")
    fake_mosaic(bdir / "field_mosaics" / f"{stem}_field001001_i2d.fits", seed=1)
    fake_mosaic(bdir / "bgr_mosaics" / f"{stem}_bgr_i2d.fits", seed=2)
    (bdir / "astrometric_align").mkdir()
    Table({"ra": [1.0], "dec": [2.0], "dra_mas": [3.0], "ddec_mas": [1.0]}).write(
        bdir / "astrometric_align" / f"{stem}_i2d_align_table.fits")
    (bdir / "astrometric_catalog").mkdir()
    Table({"ra": [1.0], "dec": [2.0]}).write(bdir / "astrometric_catalog" / f"{stem}_astro_cat.fits")
    fake_mosaic(bdir / "cal" / "jw09999002001_02103_00001_mirimage_combinedbackground.fits", seed=3)
    (bdir / "qa" / "destripe").mkdir(parents=True)
    for name in ("astrometric_align.png", "astrometric_align_mosaic.png", "level_match.png",
                 "destripe/jw01_cal.png"):
        (bdir / "qa" / name).write_bytes(b"\x89PNG fake")
    return stem


def test_a_complete_release_holds_alignment_fields_backgrounds_and_qa_figures(tmp_path):
    """Issue #31 item 9: what a reader needs besides the mosaic, in the manifest and the README."""
    rep, rel = tmp_path / "jwst_lv3_reprocessed_t1", tmp_path / "release"
    stem = _full_band(rep)
    build_release(rep, rel, ["ngc0000"], ["F200W"])
    kinds = dict(zip(Table.read(rel / "MANIFEST.ecsv")["file"], Table.read(rel / "MANIFEST.ecsv")["kind"],
                     strict=True))
    assert kinds[f"ngc0000/alignment/{stem}_i2d_align_table.fits"] == "alignment table"
    assert kinds[f"ngc0000/alignment/{stem}_astro_cat.fits"] == "astrometric catalogue"
    assert kinds[f"ngc0000/fields/{stem}_field001001_i2d.fits"] == "field mosaic"
    assert kinds[f"ngc0000/background/{stem}_bgr_i2d.fits"] == "background mosaic"
    assert kinds["ngc0000/background/stage2/jw09999002001_02103_00001_mirimage_combinedbackground.fits"] \
        == "stage-2 background"
    assert sorted(k for k, v in kinds.items() if v == "qa figure") == [
        "ngc0000/qa/F200W/astrometric_align.png", "ngc0000/qa/F200W/astrometric_align_mosaic.png",
        "ngc0000/qa/F200W/level_match.png"]                               # not the per-exposure panels
    with fits.open(rel / "ngc0000" / "fields" / f"{stem}_field001001_i2d.fits") as h:
        assert "CON" not in h and h[0].header["JGAL_VER"]                    # slimmed, with provenance
    readme = (rel / "README.md").read_text()
    for words in ("alignment/", "fields/", "background/", "qa/<BAND>/"):
        assert words in readme
    assert subprocess.run(["sha256sum", "-c", "SHA256SUMS"], cwd=rel, capture_output=True).returncode == 0
    lean = tmp_path / "lean"
    build_release(rep, lean, ["ngc0000"], ["F200W"], include_alignment=False, include_fields=False,
                  include_backgrounds=False, include_qa=False)
    assert sorted(Table.read(lean / "MANIFEST.ecsv")["kind"]) == ["coverage", "mosaic"]
    assert not (lean / "ngc0000" / "background").exists()


def test_hlsp_names_follow_the_mast_scheme(tmp_path):
    rep, rel = tmp_path / "jwst_lv3_reprocessed_v1p2", tmp_path / "release"
    _full_band(rep)
    build_release(rep, rel, ["ngc0000"], ["F200W"], naming="hlsp", hlsp_project="phangs-jwst")
    files = set(Table.read(rel / "MANIFEST.ecsv")["file"])
    head = "hlsp_phangs-jwst_jwst_nircam_ngc0000_f200w_v1p2"
    for name in (f"ngc0000/{head}_i2d.fits", f"ngc0000/{head}_coverage.fits",
                 f"ngc0000/fields/{head}_field001001_i2d.fits", f"ngc0000/background/{head}_bgr_i2d.fits",
                 f"ngc0000/alignment/{head}_i2d_align_table.fits"):
        assert name in files, sorted(files)
    assert not [f for f in files if "ngc0000_nircam_lv3" in f]
    with pytest.raises(ValueError, match="hlsp_project"):
        build_release(rep, rel, ["ngc0000"], ["F200W"], naming="hlsp")


def test_release_naming_is_checked_in_the_config(tmp_path):
    from jwstgal.config import load_config
    from jwstgal.errors import ConfigError

    for extra, words in (('[release]\nnaming = "hlsp"\n', "needs hlsp_project"),
                         ('[release]\nnaming = "hlsp"\nhlsp_project = "PHANGS JWST"\n',
                          "lower-case letters, digits and '-'")):
        with pytest.raises(ConfigError, match=words):
            load_config(*write_config(tmp_path, science=SCIENCE, extra=extra), check_jwst=False)
