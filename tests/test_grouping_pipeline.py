"""tweakreg/skymatch grouping of dithers (``[lv3]``) through the real stage 3 on the simulator (slow)."""

import numpy as np
import pytest
from astropy.io import fits
from factories import reprocess_cli, run_reprocessing

pytestmark = pytest.mark.slow

SCIENCE = """
[projects.9999]
targets = ["ngc0000"]

[simulation]
seed = 11
detector_size = 256
n_dithers = 2
n_tiles = 2
n_stars = 1500
pointing_error_mas = 40.0
background_offset = 0.2

[pipeline]
data_version = "grp"
nircam_bands = ["F200W"]
miri_bands = []

[pipeline.steps]
nircam = ["lv1", "lv2", "lv3"]

[lv2_parameters.resample]
skip = true

[lv3_parameters.tweakreg]
snr_threshold = 5
fitgeometry = "shift"
searchrad = 0.5
separation = 0.5
tolerance = 0.2
bkg_boxsize = 50

[lv3_parameters.source_catalog]
snr_threshold = 5
bkg_boxsize = 50
"""

GROUPED = """
[lv3]
tweakreg_groups = "visit"
skymatch_groups = "visit"
"""


def _corrections(root):
    """Per crf file: visit, tweakreg's correction at the detector centre (mas) and sky level."""
    from stdatamodels.jwst.datamodels import ImageModel

    out = {}
    band = root / "work" / "jwst_lv3_reprocessed_grp" / "ngc0000" / "F200W"
    for crf in sorted((band / "lv3").glob("*_crf.fits")):
        cal = band / "cal" / ("_".join(crf.name.split("_")[:4]) + "_cal.fits")
        with ImageModel(str(crf)) as a, ImageModel(str(cal)) as b:
            ny, nx = a.data.shape
            ra1, dec1 = a.meta.wcs(nx / 2, ny / 2)
            ra0, dec0 = b.meta.wcs(nx / 2, ny / 2)
            level = a.meta.background.level
        shift = np.array([(ra1 - ra0) * np.cos(np.deg2rad(dec0)), dec1 - dec0]) * 3.6e6
        out[crf.name] = (fits.getheader(crf)["VISIT"], shift, level)
    return out


def _within_visit_spread(corr):
    """Largest difference of the correction and of the sky level between files of one visit."""
    shift = level = 0.0
    for visit in {v for v, _, _ in corr.values()}:
        rows = [(s, lv) for v, s, lv in corr.values() if v == visit]
        s = np.array([r[0] for r in rows])
        lv = np.array([r[1] for r in rows], float)
        shift = max(shift, float(np.abs(s - s[0]).max()))
        level = max(level, float(np.abs(lv - lv[0]).max()))
    return shift, level


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = run_reprocessing(tmp_path_factory.mktemp("grp"), SCIENCE + GROUPED)
    page = (root / "work" / "jwst_lv3_reprocessed_grp" / "qa" / "index.html").read_text()
    assert "Stage 3 grouping: tweakreg on 2 groups (by visit), skymatch on 2 groups (by visit)." in page
    grouped = _corrections(root)
    # the same run with jwst's grouping: only lv3 is redone (the grouping is in its key)
    (root / "s.toml").write_text(SCIENCE)
    res = reprocess_cli(root / "s.toml", root / "l.toml")
    assert res.returncode == 0, res.stderr[-3000:]
    return grouped, _corrections(root), res.stderr


def test_visit_grouping_moves_and_levels_the_dithers_of_a_visit_together(runs):
    grouped, default, _ = runs
    assert len(grouped) == len(default) == 4
    shift, level = _within_visit_spread(grouped)
    assert shift < 0.05, shift                      # one tweakreg solution per visit
    assert level == 0.0                             # one skymatch level per visit
    # the two visits still move and level apart from each other
    visits = {v: (s, lv) for v, s, lv in grouped.values()}
    (s1, l1), (s2, l2) = visits.values()
    assert np.hypot(*(s1 - s2)) > 1.0 and l1 != l2


def test_jwst_grouping_fits_each_dither_on_its_own(runs):
    _, default, log = runs
    shift, level = _within_visit_spread(default)
    assert shift > 5.0, shift                       # dithers have independent 40 mas pointing errors
    assert level > 0.0
    assert "F200W: ran lv3, skipped lv1,lv2" in log   # the grouping is in lv3's key alone
