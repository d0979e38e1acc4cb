"""Destriping steps on real stage-2 products of a simulated programme, scored against truth (slow)."""

import re

import numpy as np
import pytest
from astropy.io import fits
from factories import run_reprocessing

pytestmark = pytest.mark.slow

SCIENCE = """
[projects.9999]
targets = ["ngc0000"]

[simulation]
seed = 5
detector_size = 512
n_dithers = 3
n_tiles = 1
n_stars = 600
onef_amplitude = 1.5
amp_offset_rms = 0.0
miri_stripe_amplitude = 2.0
miri_background = false
pointing_error_mas = 0.0

[pipeline]
data_version = "ds"
nircam_bands = ["F200W"]
miri_bands = ["F770W"]

[pipeline.steps]
nircam = ["lv1", "lv2", "destripe", "level_match", "stack_destripe"]
miri = ["lv1", "lv2", "destripe"]

[lv2_parameters.resample]
skip = true

[destripe]
method = "median_filter"

[destripe.override.miri]
method = "row_median"
filter_diffuse = true
diffuse_scale = 25.0
"""



@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return run_reprocessing(tmp_path_factory.mktemp("ds"), SCIENCE)


def _row_structure(cal, truth, band_dir):
    """Rms of the row medians of (frame - a * true sky), before and after each step.

    The gain ``a`` is fitted on the stage-2 frame (the synthetic calibration is good to ~1 %), so
    what is left is the frame's row structure: stripes, and any emission a step wrongly removed.
    (The truth STRIPES extension cannot be used for NIRCam: stage 1's side reference-pixel
    correction already changes the 1/f pattern.)
    """
    sky = fits.getdata(truth, "SKY").astype(float)
    out = {}
    gain = None
    for step in ("cal", "destripe", "stack_destripe"):
        path = band_dir / step / cal
        if not path.is_file():
            continue
        with fits.open(path) as h:
            data, dq = h["SCI"].data.astype(float), h["DQ"].data
        good = ((dq & 1) == 0) & np.isfinite(data)
        if gain is None:
            gain = np.linalg.lstsq(np.vstack([sky[good], np.ones(good.sum())]).T, data[good],
                                   rcond=None)[0][0]
        resid = np.where(good, data - gain * sky, np.nan)[8:-8, 8:-8]
        rows = np.nanmedian(resid, axis=1)
        out[step] = float(np.std(rows - np.median(rows)))
        out[f"{step}_floor"] = float(1.2533 * np.nanstd(resid - rows[:, None]) / np.sqrt(resid.shape[1]))
    return out


@pytest.mark.parametrize("band", ["F200W", "F770W"])
def test_destriping_removes_row_structure_without_eating_the_galaxy(run, band):
    band_dir = run / "work" / "jwst_lv3_reprocessed_ds" / "ngc0000" / band
    truth_dir = run / "raw" / "ngc0000" / "simulation_truth"
    cals = sorted(p.name for p in (band_dir / "destripe").glob("*_cal.fits"))
    assert len(cals) == 3
    ratios = []
    for cal in cals:
        s = _row_structure(cal, truth_dir / cal.replace("_cal.fits", "_truth.fits"), band_dir)
        assert s["cal"] > 3 * s["cal_floor"], s                   # the stripes are really there
        assert s["destripe"] < s["cal"], s                         # never worse
        ratios.append(s["destripe"] / s["cal"])
        if "stack_destripe" in s:  # three small dithers of one tile: little to gain, nothing to lose
            assert s["stack_destripe"] < 1.1 * s["destripe"], s
        h = fits.getheader(band_dir / "destripe" / cal)
        assert h["DSTRMETH"] == ("row_median" if band == "F770W" else "median_filter")
    # galaxy-filled frames: what one frame cannot tell from emission stays (see the stack test)
    assert np.mean(ratios) < 0.7, ratios


def test_destripe_diagnostics_reach_the_qa_page(run):
    band_dir = run / "work" / "jwst_lv3_reprocessed_ds" / "ngc0000" / "F200W"
    assert len(list((band_dir / "qa" / "destripe").glob("*.png"))) == 3
    assert len(list((band_dir / "qa" / "stack_destripe").glob("*.png"))) == 3
    page = (run / "work" / "jwst_lv3_reprocessed_ds" / "qa" / "index.html").read_text()
    section = re.search(r'<section id="ngc0000-F200W">(.*?)</section>', page, re.S).group(1)
    captions = re.findall(r"<figcaption>([^<]*)</figcaption>", section)
    assert sum("input, mask, stripe model, result" in c for c in captions) == 6   # 3 per step
    assert "single-frame destriping of" in page and "stack-based destriping of" in page


RATE_SCIENCE = SCIENCE.replace('''nircam = ["lv1", "lv2", "destripe", "level_match", "stack_destripe"]
miri = ["lv1", "lv2", "destripe"]''', '''nircam = ["lv1", "rate_destripe", "rate_bg_sub", "lv2"]
miri = ["lv1", "lv2"]''').replace('miri_bands = ["F770W"]', "miri_bands = []").replace(
    "n_dithers = 3", "n_dithers = 2").replace('data_version = "ds"', 'data_version = "rds"')


def test_rate_files_are_destriped_and_sky_subtracted_before_stage_2(tmp_path):
    """Issue #31 item 8: pjpipe's PHANGS order. Stage 2 reads the destriped, sky-subtracted rates."""
    from jwstgal.destripe import stripe_residual
    from jwstgal.dq import bad_pixel_mask
    from jwstgal.masking import source_mask

    run = run_reprocessing(tmp_path, RATE_SCIENCE + '\n[rate_destripe]\nmethod = "row_median"\n')
    band_dir = run / "work" / "jwst_lv3_reprocessed_rds" / "ngc0000" / "F200W"

    def stripes(path):
        with fits.open(path) as h:
            sci, dq = h["SCI"].data.astype(float), h["DQ"].data
        bad = bad_pixel_mask(sci, dq, None, ["DO_NOT_USE"])
        return stripe_residual(sci, bad | source_mask(sci, bad, 3.0, 5, 11)), float(np.nanmedian(sci[~bad]))

    rates = sorted((band_dir / "rate").glob("*_rate.fits"))
    assert len(rates) == 2
    for rate in rates:
        cal = band_dir / "cal" / rate.name.replace("_rate", "_cal")
        (before, sky), (after, cal_sky) = stripes(rate), stripes(cal)
        assert before > 3 and after < 1.5, (before, after)          # what stage 2 read was destriped
        h = fits.getheader(band_dir / "rate_bg_sub" / rate.name)
        assert h["DSTRMETH"] == "row_median" and h["BGSUBLVL"] > 0.5 * sky > 0
        assert abs(cal_sky) < 0.05 * abs(fits.getheader(cal, "SCI")["PHOTMJSR"] * sky)   # and sky-subtracted
    page = (run / "work" / "jwst_lv3_reprocessed_rds" / "qa" / "index.html").read_text()
    assert "after destriping the rate files" in page
