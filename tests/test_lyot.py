"""The lyot_adjust step (MIRI full frames): mask, mask where others cover, level to the imager."""

import numpy as np
import pytest
from astropy.io import fits
from astropy.wcs import WCS
from factories import write_config

from jwstgal.config import load_config
from jwstgal.errors import ConfigError
from jwstgal.steps.lyot_adjust import (
    MIRI_FULL,
    LyotAdjustSettings,
    lyot_adjust_files,
    lyot_mask,
)

RA0, DEC0, PIX = 24.17, 15.78, 0.11


def write_miri(path, dx_pix=0.0, *, lyot_offset=7.0, shape=MIRI_FULL, seed=0):
    """A MIRI cal file: flat sky 10 + noise, stars, the Lyot brighter by ``lyot_offset``."""
    rng = np.random.default_rng(seed)
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval = [RA0, DEC0]
    w.wcs.crpix = [shape[1] / 2 + dx_pix, shape[0] / 2]       # frame moved dx_pix to the east
    w.wcs.cdelt = [-PIX / 3600, PIX / 3600]
    sci = 10 + rng.normal(0, 0.1, shape)
    yy, xx = rng.uniform(0, shape[0], 80), rng.uniform(0, shape[1], 80)
    sci[yy.astype(int), xx.astype(int)] += 50                  # point sources (masked by the levels)
    lyot = lyot_mask(shape)
    sci[lyot] += lyot_offset
    dq = np.zeros(shape, np.uint32)
    dq[:, :4] = 1
    h = w.to_header()
    fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(sci.astype(np.float32), h, name="SCI"),
                  fits.ImageHDU(np.full(shape, 0.1, np.float32), h, name="ERR"),
                  fits.ImageHDU(dq, h, name="DQ")]).writeto(path)
    return path


@pytest.mark.filterwarnings("ignore::photutils.utils.exceptions.NoDetectionsWarning")
def test_adjust_levels_the_lyot_with_the_imager(tmp_path):
    src = write_miri(tmp_path / "jw01_mirimage_cal.fits")
    (tmp_path / "out").mkdir()
    out, = lyot_adjust_files([src], tmp_path / "out", LyotAdjustSettings(method="adjust"))
    sci = fits.getdata(out, "SCI")
    lyot = lyot_mask(sci.shape)
    assert abs(np.median(sci[lyot]) - np.median(sci[:, 400:])) < 0.02
    assert fits.getheader(out)["LYOTOFF"] == pytest.approx(-7.0, abs=0.02)
    assert np.isfinite(sci).all()


def test_mask_flags_the_whole_lyot(tmp_path):
    src = write_miri(tmp_path / "jw01_mirimage_cal.fits")
    (tmp_path / "out").mkdir()
    out, = lyot_adjust_files([src], tmp_path / "out", LyotAdjustSettings(method="mask"))
    with fits.open(out) as h:
        lyot = lyot_mask(h["SCI"].data.shape)
        assert np.isnan(h["SCI"].data[lyot]).all() and np.isfinite(h["SCI"].data[~lyot]).all()
        assert (h["DQ"].data[lyot] & 513 == 513).all() and h[0].header["LYOTFRAC"] == 1.0


def test_mask_overlap_flags_only_what_another_exposure_covers(tmp_path):
    # a's column x is b's column x + 200: a's Lyot columns 90-289 fall on b's imager (b columns
    # 290-489), columns 0-89 on b's own Lyot (not good sky)
    a = write_miri(tmp_path / "jw01_a_mirimage_cal.fits", seed=1)
    b = write_miri(tmp_path / "jw01_b_mirimage_cal.fits", dx_pix=200.0, seed=2)
    (tmp_path / "out").mkdir()
    out_a, out_b = lyot_adjust_files([a, b], tmp_path / "out", LyotAdjustSettings(method="mask_overlap"))
    sci = fits.getdata(out_a, "SCI")
    lyot = lyot_mask(sci.shape)
    cols = np.arange(sci.shape[1])
    expect = lyot & (cols + 200 >= 290)[None, :]
    flagged = np.isnan(sci)
    assert (flagged == expect).mean() > 0.999
    assert fits.getheader(out_a)["LYOTFRAC"] == pytest.approx(200 / 290, abs=0.01)
    assert not np.isnan(fits.getdata(out_b, "SCI")[lyot]).any()   # only a's Lyot lies under b's Lyot


def test_a_subarray_is_copied_unchanged(tmp_path):
    src = write_miri(tmp_path / "jw01_mirimage_cal.fits", shape=(256, 256), lyot_offset=0.0)
    (tmp_path / "out").mkdir()
    out, = lyot_adjust_files([src], tmp_path / "out", LyotAdjustSettings(method="mask"))
    np.testing.assert_array_equal(fits.getdata(out, "SCI"), fits.getdata(src, "SCI"))
    assert fits.getheader(out)["LYOTFRAC"] == 0.0


def test_config_keeps_lyot_adjust_to_miri_and_apart_from_destripe(tmp_path):
    cfg, loc = write_config(tmp_path, extra='[pipeline.steps]\nnircam = ["lv1", "lv2", "lyot_adjust"]\n')
    with pytest.raises(ConfigError, match="'lyot_adjust' is for MIRI only"):
        load_config(cfg, loc, check_jwst=False)
    both = '[pipeline.steps]\nmiri = ["lv1", "lv2", "lyot_adjust", "destripe"]\n'
    cfg, loc = write_config(tmp_path, extra=both)
    with pytest.raises(ConfigError, match='set \\[destripe\\] lyot = "include"'):
        load_config(cfg, loc, check_jwst=False)
    cfg, loc = write_config(tmp_path, extra=both + '[destripe]\nlyot = "include"\n'
                            '[lyot_adjust]\nmethod = "mask_overlap"\n')
    assert load_config(cfg, loc, check_jwst=False).science.lyot_adjust.method == "mask_overlap"


def test_the_destripe_lyot_conflict_is_judged_as_each_miri_band_resolves_it(tmp_path):
    """Issue #31 item 6: the check read [destripe] alone, not [destripe.override.miri]."""
    both = '[pipeline.steps]\nmiri = ["lv1", "lv2", "lyot_adjust", "destripe"]\n'
    cfg, loc = write_config(tmp_path, extra=both + '[destripe]\nlyot = "include"\n'
                            '[destripe.override.miri]\nlyot = "mask"\n')
    with pytest.raises(ConfigError, match="F770W of ngc0628: lyot = 'mask'"):
        load_config(cfg, loc, check_jwst=False)
    cfg, loc = write_config(tmp_path, extra=both + '[destripe]\nlyot = "mask"\n'
                            '[destripe.override.miri]\nlyot = "include"\n')
    assert load_config(cfg, loc, check_jwst=False).science.destripe.lyot == "mask"   # NIRCam's
