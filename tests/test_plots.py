"""The quicklooks: what they draw of a large mosaic, and where on the sky (issue #29); the WCS of
block-averaged pixels (the quicklooks' and the wide rungs')."""

from __future__ import annotations

import resource

import numpy as np
import pytest
from astropy.io import fits
from astropy.wcs import WCS
from PIL import Image

from jwstgal.ladder import block_wcs
from jwstgal.plots import QUICKLOOK_SIDE, quicklook_png, shown_pixels


def _wcs(shape: tuple[int, int], scale_deg: float = 1e-5, form: str = "cd") -> WCS:
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval = [24.17, 15.78]
    w.wcs.crpix = [shape[1] / 2 + 0.3, shape[0] / 2 - 0.7]
    m = np.array([[-scale_deg, 2e-7], [3e-7, scale_deg]])
    if form == "cd":
        w.wcs.cd = m
    else:
        w.wcs.pc, w.wcs.cdelt = m / scale_deg, [scale_deg, scale_deg]
    w.wcs.set()
    return w


def test_a_large_image_is_shown_as_block_means_on_the_blocks_wcs():
    """Block means (NaN-aware) at most QUICKLOOK_SIDE a side, and the sliced WCS puts each block's
    pixel where the centre of its original pixels is on the sky."""
    rng = np.random.default_rng(4)
    data = rng.normal(size=(1700, 4100)).astype(np.float32)
    data[:50, :50] = np.nan                                   # an empty corner stays empty
    data[61:63, 61:63] = np.nan                               # a few NaNs do not blank their block
    shown, f = shown_pixels(data)
    assert f == 3 and max(shown.shape) <= QUICKLOOK_SIDE and shown.shape == (1700 // 3, 4100 // 3)
    assert np.isnan(shown[0, 0]) and np.isfinite(shown[20, 20])
    assert shown[30, 40] == pytest.approx(data[90:93, 120:123].mean(), rel=1e-5)
    small = rng.normal(size=(300, 500))
    assert shown_pixels(small)[0] is small and shown_pixels(small)[1] == 1
    for form in ("cd", "pc"):              # astropy's step slicing alone gets a CD matrix wrong
        w = _wcs(data.shape, form=form)
        blocks = block_wcs(w, f)
        for i, j in [(0, 0), (100, 700), (555, 1300)]:
            centre = w.pixel_to_world(j * f + (f - 1) / 2, i * f + (f - 1) / 2)
            assert blocks.pixel_to_world(j, i).separation(centre).arcsec < 1e-4


def test_the_quicklook_of_a_large_mosaic_stays_small_in_memory(tmp_path):
    """A 6000 x 9000 mosaic (216 MB as float32) is drawn within 3x its own size in memory."""
    shape = (6000, 9000)
    data = np.zeros(shape, np.float32)
    data[500:5500, 800:8200] = np.random.default_rng(1).normal(10, 1, size=(5000, 7400))
    hdu = fits.ImageHDU(data, header=_wcs(shape).to_header(), name="SCI")
    path = tmp_path / "big_i2d.fits"
    fits.HDUList([fits.PrimaryHDU(), hdu]).writeto(path)
    del data, hdu
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    png = quicklook_png(path, tmp_path / "big.png")
    grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - before
    assert grown < 3 * 4 * shape[0] * shape[1]
    with Image.open(png) as im:
        assert 500 < im.size[0] < 1200
