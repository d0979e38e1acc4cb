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
