"""Level matching on real stage-2 products of a simulated two-tile programme (slow)."""

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table
from factories import run_reprocessing

pytestmark = pytest.mark.slow

SCIENCE = """
[projects.9999]
targets = ["ngc0000"]

[simulation]
seed = 21
detector_size = 384
n_dithers = 3
n_tiles = 2
n_stars = 1500
background_offset = 0.3      # large per-tile offsets (30 % of the sky)
onef_amplitude = 0.0         # no detector artefacts: the only level difference is the offset
amp_offset_rms = 0.0
miri_stripe_amplitude = 0.0
miri_background = false
pointing_error_mas = 0.0    # exact pointings: misregistration of gradients would bias the levels
                             # (in real data wcs_adjust runs first)

[pipeline]
data_version = "lm"
nircam_bands = ["F300M"]
miri_bands = ["F770W"]

[pipeline.steps]
nircam = ["lv1", "lv2", "level_match"]
miri = ["lv1", "lv2", "level_match"]

[lv2_parameters.resample]
skip = true

[level_match]
binning = 2
"""



@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return run_reprocessing(tmp_path_factory.mktemp("lm"), SCIENCE)


@pytest.mark.parametrize("band", ["F300M", "F770W"])
def test_tile_offsets_recovered_to_one_percent_of_the_background_rms(run, band):
    truth = {r["obs_id"]: r["background_offset"]
             for r in Table.read(run / "raw" / "ngc0000" / "simulation_truth" / "exposures.ecsv")}
    band_dir = run / "work" / "jwst_lv3_reprocessed_lm" / "ngc0000" / band
    table = Table.read(band_dir / "level_match" / "offsets.ecsv")
    ids = [f.removesuffix("_cal.fits") for f in table["file"]]
    injected = np.array([truth[i] for i in ids])
    assert np.ptp(injected) > 0.01                      # the tiles really differ
    recovered = np.asarray(table["offset"])
    ref = int(np.flatnonzero(recovered == 0)[0])
    err = recovered - (injected - injected[ref])
    rms = float(np.nanmedian(fits.getdata(band_dir / "cal" / table["file"][0], "ERR")))
    assert np.max(np.abs(err)) < 0.01 * rms, (err, rms)
    # the matched copies carry the offset and the reference
    h = fits.getheader(band_dir / "level_match" / table["file"][1])
    assert h["LVLOFFST"] == pytest.approx(recovered[1]) and h["LVLREF"] == table["file"][ref]
    assert (band_dir / "qa" / "level_match.png").is_file()
