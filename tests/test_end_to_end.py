"""The whole offline chain through the command line: simulate -> uncal -> rate -> cal -> i2d.

Slow (a few minutes): run with ``pytest -m slow``. CI runs it.
"""

import hashlib
import json
from pathlib import Path

import pytest
from astropy.io import fits
from factories import SYNTHETIC_LOCAL, reprocess_cli

pytestmark = pytest.mark.slow

SCIENCE = """
[projects.9999]
targets = ["ngc0000"]

[simulation]
seed = 11
detector_size = 512
n_dithers = 3
n_tiles = 1
n_stars = 3000
pointing_error_mas = 20.0

[pipeline]
data_version = "e2e"
nircam_bands = ["F200W"]
miri_bands = ["F770W"]

[pipeline.steps]
miri = ["lv1", "lv2", "lv3", "bgr_mosaics"]      # the MIRI background field, reduced like science

[alignment]
ngc0000 = "ngc0000_sim_cat.fits"

[lv2_parameters.resample]
skip = true

[lv3_parameters.tweakreg]
snr_threshold = 5
bkg_boxsize = { nircam = 100, miri = 25 }
fitgeometry = "shift"
abs_fitgeometry = "shift"
searchrad = 1.0
separation = 0.5
tolerance = { nircam = 0.3, miri = 0.5 }
abs_searchrad = 1.0
abs_tolerance = { nircam = 0.3, miri = 0.5 }
abs_minobj = 5

[lv3_parameters.skymatch]
skymethod = "match"

[lv3_parameters.source_catalog]
snr_threshold = 5
bkg_boxsize = { nircam = 50, miri = 25 }

[kernels]
psf_source = "gaussian"

[anchor]                              # the simulator writes the external map (NIRCam's 16" field
reference = { miri = "F770W" }        # holds too few 4" pixels to fit)
external = { miri = [{ band = "irac4", psf = "gauss4" }] }
"""
LOCAL = SYNTHETIC_LOCAL + 'psf_dir = "psf"\nanchor_ref_dir = "anchor_refs"\n'

def raw_hashes(raw: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(raw.rglob("*_uncal.fits"))}


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    d = tmp_path_factory.mktemp("e2e")
    (d / "science.toml").write_text(SCIENCE)
    (d / "local.toml").write_text(LOCAL)
    res = reprocess_cli(d / "science.toml", d / "local.toml", timeout=1500)
    assert res.returncode == 0, res.stderr[-5000:]
    return d, res


def test_mosaics_exist_with_quicklooks_and_provenance(chain):
    d, res = chain
    lv3 = d / "work" / "jwst_lv3_reprocessed_e2e" / "ngc0000"
    for band, instr in (("F200W", "nircam"), ("F770W", "miri")):
        i2d = lv3 / band / "lv3" / f"ngc0000_{instr}_lv3_{band.lower()}_i2d.fits"
        assert i2d.is_file() and i2d.with_suffix(".png").is_file()
        assert str(i2d) in res.stderr                     # the run says where the mosaic is
        h = fits.getheader(i2d)
        assert "JG_LV3" in h and len(h["JGAL_CFG"]) == 16
        assert h["S_TWKREG"] == "COMPLETE" and h["S_RESAMP"] == "COMPLETE"
    run = json.loads((d / "work" / "jwst_lv3_reprocessed_e2e" / "run_config.json").read_text())
    assert run["versions"]["jwst"] == "3.0.0"


@pytest.mark.parametrize(("band", "instr"), [("F200W", "nircam"), ("F770W", "miri")])
def test_mosaic_astrometry_matches_truth(chain, band, instr):
    """Isolated bright true stars, fitted in the mosaic, sit where the WCS says (< 0.1 pixel)."""
    from jwstgal.simulate.score import score_mosaic_astrometry, score_truth_centroids

    d, _ = chain
    lv3 = d / "work" / "jwst_lv3_reprocessed_e2e" / "ngc0000" / band / "lv3"
    stem = f"ngc0000_{instr}_lv3_{band.lower()}"
    stars = d / "raw" / "ngc0000" / "simulation_truth" / "stars.ecsv"
    score = score_truth_centroids(lv3 / f"{stem}_i2d.fits", stars, band)
    assert score.n_matched >= 20, score
    assert score.median_offset < 0.1, score
    # the pipeline's own catalogue agrees with the truth too
    cat = score_mosaic_astrometry(lv3 / f"{stem}_i2d.fits", lv3 / f"{stem}_cat.ecsv", stars)
    assert cat.n_matched >= 20 and cat.median_offset < 0.2, cat


def test_rerun_skips_completed_steps_and_never_touches_raw(chain):
    d, _ = chain
    before = raw_hashes(d / "raw")
    i2d = next((d / "work").rglob("*f200w_i2d.fits"))
    mtime = i2d.stat().st_mtime_ns
    res = reprocess_cli(d / "science.toml", d / "local.toml", timeout=1500)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "ngc0000 F200W: ran -, skipped lv1,lv2,lv3" in res.stderr
    assert i2d.stat().st_mtime_ns == mtime
    assert raw_hashes(d / "raw") == before


def test_changed_stage3_parameter_reruns_only_stage3(chain):
    d, _ = chain
    cfg = d / "science.toml"
    cfg.write_text(SCIENCE.replace('[lv3_parameters.source_catalog]\nsnr_threshold = 5',
                                   '[lv3_parameters.source_catalog]\nsnr_threshold = 6'))
    res = reprocess_cli(cfg, d / "local.toml", "F200W", timeout=1500)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "ngc0000 F200W: ran lv3, skipped lv1,lv2" in res.stderr


def test_the_background_field_is_reduced_like_science(chain):
    """bgr_mosaics: the MIRI off field through stages 2 and 3 on its own, at the simulated sky level."""
    import numpy as np

    from jwstgal.bands import get_band
    from jwstgal.simulate.sky import sky_level

    d, _ = chain
    band_dir = d / "work" / "jwst_lv3_reprocessed_e2e" / "ngc0000" / "F770W"
    mosaic = band_dir / "bgr_mosaics" / "ngc0000_miri_lv3_f770w_bgr_i2d.fits"
    data = fits.getdata(mosaic, "SCI")
    good = np.isfinite(data) & (data != 0)
    assert good.mean() > 0.3
    assert np.median(data[good]) == pytest.approx(sky_level(get_band("F770W")), rel=0.05)
    cals = sorted((band_dir / "bgr_mosaics" / "cal").glob("*_cal.fits"))
    def off_field(p):                                   # jwPPPPPOOOVVV_GGSAA_...: sequence S = 2
        return p.name.split("_")[1][2] == "2"

    assert len(cals) == 3 and all(off_field(c) for c in cals)
    assert not any(off_field(c) for c in (band_dir / "cal").glob("*_cal.fits"))
    # what stage 2 subtracted from each science exposure is kept, for the release (issue #31 item 9)
    kept = sorted(p.name.replace("_combinedbackground", "_cal") for p in (band_dir / "cal").glob(
        "*_combinedbackground.fits"))
    assert kept == sorted(p.name for p in (band_dir / "cal").glob("*_cal.fits")) and kept
    assert (band_dir / "qa" / "bgr_mosaics.png").is_file()


def test_anchoring_finds_the_simulated_zero_point_within_its_errors(chain):
    """Kernels and anchoring on the chain's mosaics (``run_jwst_reprocessing.py --through anchor``:
    the band steps are complete and skipped): the anchored mosaic's zero point, scored against the
    simulated galaxy (issue #26 item 3), is within 2 quoted sigma."""
    import subprocess
    import sys

    from conftest import REPO

    from jwstgal.simulate.score import score_anchoring

    d, _ = chain
    res = subprocess.run([sys.executable, str(REPO / "run_jwst_reprocessing.py"), str(d / "science.toml"),
                          str(d / "local.toml"), "--no-progress", "--through", "anchor"],
                         capture_output=True, text=True, cwd=REPO, timeout=900)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "kernels: " in res.stderr and "anchor: 1 tasks run, 0 failed" in res.stderr, res.stderr[-3000:]
    anchored = (d / "work" / "jwst_lv3_reprocessed_e2e" / "ngc0000" / "F770W" / "anchor"
                / "ngc0000_miri_lv3_f770w_i2d_anchor.fits")
    score = score_anchoring(anchored, "F770W", 24.1739, 15.7836, 11)
    print(score)
    assert abs(score.slope - 1) < 0.05, score
    assert abs(score.zero_point) < 2 * score.offset_err, score
    assert fits.getheader(anchored)["ANCHSYS"] > 0
    # the anchor step scored it too, for the QA page (issue #26 item 3)
    run_dir = d / "work" / "jwst_lv3_reprocessed_e2e"
    truth = json.loads((run_dir / "ngc0000" / "anchor" / "ngc0000_anchor_truth.json").read_text())["F770W"]
    assert truth["error"] == pytest.approx(score.zero_point) and not truth["chained"], truth
    assert truth["noise"] > 0 and truth["quoted"] == pytest.approx(score.offset_err)
    assert "Against the simulation's truth" in (run_dir / "qa" / "index.html").read_text()
