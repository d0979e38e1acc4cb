"""Tiled FITS reading and writing, and that the mosaic-level steps hold a tile, not the mosaic."""

from __future__ import annotations

import tracemalloc
import warnings

import numpy as np
import pytest
from astropy.io import fits

from jwstgal import tiled_io
from jwstgal.convolve import convolve_image
from jwstgal.tiled_io import FitsImage, ScratchImage, copy_with_headers, write_image_file


def _peak(fn, *args, **kwargs):
    """(result, peak bytes traced by tracemalloc while ``fn`` ran: numpy's buffers included)."""
    tracemalloc.start()
    try:
        out = fn(*args, **kwargs)
        return out, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_fits_image_reads_rectangles(tmp_path, dtype):
    rng = np.random.default_rng(1)
    a = rng.normal(size=(37, 53)).astype(dtype)
    a[3, 4] = 0.0
    a[5, 6] = np.nan
    path = tmp_path / "m.fits"
    fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(a, name="SCI")]).writeto(path)
    img = FitsImage(path, "SCI")
    assert img.shape == a.shape
    for key in [(slice(None), slice(None)), (slice(2, 9), slice(None)), (slice(0, 37), slice(10, 20)),
                (slice(30, 50), slice(-5, None)), (slice(5, 5), slice(0, 3))]:
        np.testing.assert_array_equal(img[key], a[key].astype(np.float32))
    np.testing.assert_array_equal(np.asarray(img, float), a.astype(np.float32).astype(float))
    nan0 = FitsImage(path, 1, zero_is_nan=True)[0:10, 0:10]
    assert np.isnan(nan0[3, 4]) and np.isnan(nan0[5, 6]) and np.isfinite(nan0).sum() == 98
    with pytest.raises(ValueError, match="unit step"):
        img[::2, :]
    img.close()


def test_fits_image_scaled_hdu_read_as_astropy_does(tmp_path):
    path = tmp_path / "scaled.fits"
    hdu = fits.ImageHDU(np.arange(60, dtype=np.int16).reshape(6, 10), name="SCI")
    hdu.header["BSCALE"], hdu.header["BZERO"] = 0.5, 10.0
    fits.HDUList([fits.PrimaryHDU(), hdu]).writeto(path)
    expect = fits.getdata(path, "SCI").astype(np.float32)
    np.testing.assert_array_equal(FitsImage(path, "SCI")[1:4, 2:9], expect[1:4, 2:9])
    fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(np.zeros((2, 3, 4)), name="SCI")]).writeto(
        tmp_path / "cube.fits")
    with pytest.raises(ValueError, match=r"cube.fits\[SCI\]: not a 2-D image"):
        FitsImage(tmp_path / "cube.fits", "SCI")


def test_scratch_image_round_trip(tmp_path):
    img = ScratchImage(tmp_path / "s.f32", (20, 30))
    img[2:5, 3:7] = np.arange(12).reshape(3, 4)
    img[10:12, :] = 7.0
    out = np.asarray(img)
    assert out.dtype == np.float32
    assert out[2:5, 3:7].tolist() == np.arange(12, dtype=float).reshape(3, 4).tolist()
    assert (out[10:12] == 7).all()
    assert out.sum() == np.arange(12).sum() + 7 * 60                     # never written: 0
    img.close()
    assert not (tmp_path / "s.f32").exists()


def test_write_image_file_by_bands(tmp_path, monkeypatch):
    monkeypatch.setattr(tiled_io, "band_rows", lambda shape: 7)         # several bands of rows
    rng = np.random.default_rng(2)
    sci = rng.normal(size=(50, 41)).astype(np.float32)
    scratch = ScratchImage(tmp_path / "e.f32", (50, 41))
    scratch[:, :] = np.abs(sci)
    hdr = fits.Header({"BUNIT": "MJy/sr", "CTYPE1": "RA---TAN"})
    primary = fits.Header({"TARGNAME": "NGC 0628"})
    out = write_image_file(tmp_path / "o.fits", primary, [("SCI", hdr, sci), ("ERR", hdr, scratch)])
    with fits.open(out, checksum=True) as h:
        h.verify("exception")
        assert [x.name for x in h] == ["PRIMARY", "SCI", "ERR"]
        assert h[0].header["TARGNAME"] == "NGC 0628" and h["ERR"].header["BUNIT"] == "MJy/sr"
        np.testing.assert_array_equal(h["SCI"].data, sci)
        np.testing.assert_array_equal(h["ERR"].data, np.abs(sci))
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []   # no temp file left


def test_copy_with_headers_copies_data_bytes(tmp_path, monkeypatch):
    monkeypatch.setattr(tiled_io, "CHUNK", 1000)                        # several chunks per HDU
    rng = np.random.default_rng(3)
    src = tmp_path / "i2d.fits"
    con = rng.integers(0, 2**31, size=(2, 30, 40), dtype=np.int32)
    hdus = [fits.PrimaryHDU(), fits.ImageHDU(rng.normal(size=(30, 40)).astype(np.float32), name="SCI"),
            fits.ImageHDU(con, name="CON"), fits.ImageHDU(np.zeros(10, np.uint8), name="ASDF"),
            fits.BinTableHDU.from_columns([fits.Column("a", "E", array=np.arange(5.0))], name="HDRTAB")]
    hdus[1].header["CRVAL1"] = 10.0
    fits.HDUList(hdus).writeto(src, checksum=True)
    with fits.open(src) as h:
        new = h["SCI"].header.copy()
    new["CRVAL1"] = 10.5
    out = copy_with_headers(src, tmp_path / "out.fits", {1: new}, drop=("ASDF",))
    with warnings.catch_warnings():
        warnings.simplefilter("error")                                 # DATASUM still holds
        with fits.open(out, checksum=True) as h, fits.open(src) as s:
            assert [x.name for x in h] == ["PRIMARY", "SCI", "CON", "HDRTAB"]
            assert h["SCI"].header["CRVAL1"] == 10.5 and "CHECKSUM" not in h["SCI"].header
            np.testing.assert_array_equal(h["SCI"].data, s["SCI"].data)
            np.testing.assert_array_equal(h["CON"].data, con)
            np.testing.assert_array_equal(h["HDRTAB"].data["a"], np.arange(5.0))
    bad = new.copy()
    bad["NAXIS1"] = 41
    with pytest.raises(ValueError, match=r"i2d.fits\[1\]: the new header changes NAXIS1"):
        copy_with_headers(src, tmp_path / "bad.fits", {1: bad})
    assert not (tmp_path / "bad.fits").exists()


@pytest.mark.pipeline
def test_convolution_from_disk_holds_a_tile(tmp_path):
    """Same result as in memory; traced peak flat in the image's area (in memory: > 2 images)."""
    rng = np.random.default_rng(4)
    yy, xx = np.mgrid[-15:16, -15:16]
    k = np.exp(-(xx**2 + yy**2) / 40.0)
    peaks = {}
    for n in (1024, 2048):
        img = rng.normal(size=(n, n)).astype(np.float32)
        img[100:300, 700:900] = np.nan
        err = np.full((n, n), 0.5, np.float32)
        path = tmp_path / f"mosaic{n}.fits"
        fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(img, name="SCI"), fits.ImageHDU(err, name="ERR")]
                     ).writeto(path)
        sci, e = FitsImage(path, "SCI"), FitsImage(path, "ERR")
        out, out_err = ScratchImage(tmp_path / "o.f32", (n, n)), ScratchImage(tmp_path / "oe.f32", (n, n))
        convolve_image(sci, k, err=e, block=256, out=out, out_err=out_err)    # warm (fft plans)
        _, peaks[n] = _peak(convolve_image, sci, k, err=e, block=256, out=out, out_err=out_err)
        ref = convolve_image(img, k, err=err, block=256)
        np.testing.assert_allclose(np.asarray(out), ref.data, rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(np.asarray(out_err), ref.err, rtol=1e-6)
        assert np.array_equal(np.isnan(np.asarray(out)), np.isnan(ref.data))
    assert peaks[2048] < 1.2 * peaks[1024], peaks                       # 4x the area
    assert peaks[2048] < img.nbytes / 2, peaks[2048] / img.nbytes
    _, peak_mem = _peak(convolve_image, img, k, err=err, block=256)
    assert peak_mem > 2 * img.nbytes                                  # what the tiles save


@pytest.mark.pipeline
def test_star_search_and_aligned_copy_hold_a_tile(tmp_path, monkeypatch):
    """Star finding on a mosaic read by tiles: peak flat in the mosaic's area; the aligned copy
    holds one chunk. Both find / keep what the in-memory versions do."""
    from jwstgal.astrometry import AlignResult
    from jwstgal.astrometry_io import write_aligned_mosaic
    from jwstgal.point_sources import find_point_sources

    rng = np.random.default_rng(5)
    peaks, found = {}, {}
    for ny in (700, 2800):                     # both with interior tiles (of 200 + 2 x 50 margin)
        img = rng.normal(0, 1, size=(ny, 500)).astype(np.float32)
        ys, xs = rng.uniform(20, ny - 20, 40), rng.uniform(20, 480, 40)
        yy, xx = np.mgrid[-6:7, -6:7]
        for y, x in zip(ys.astype(int), xs.astype(int), strict=True):
            img[y - 6:y + 7, x - 6:x + 7] += 200 * np.exp(-(xx**2 + yy**2) / 4.5)
        path = tmp_path / f"m{ny}.fits"
        fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(img, name="SCI")]).writeto(path)
        assert len(find_point_sources(img, 2.5, tile=200, max_sources=0)) >= 38    # (and imports done)
        tab, peaks[ny] = _peak(find_point_sources, FitsImage(path, "SCI"), 2.5, tile=200, max_sources=0)
        found[ny] = len(tab)
        assert found[ny] == len(find_point_sources(img, 2.5, tile=200, max_sources=0))
    assert found[700] >= 38 and found[2800] >= 38
    assert peaks[2800] < 1.15 * peaks[700], peaks                        # 4x the area

    monkeypatch.setattr(tiled_io, "CHUNK", 2**20)
    hdr = fits.Header({"CTYPE1": "RA---TAN", "CTYPE2": "DEC--TAN", "CRVAL1": 24.17, "CRVAL2": 15.78,
                       "CRPIX1": 600.0, "CRPIX2": 1200.0, "CDELT1": -8.6e-6, "CDELT2": 8.6e-6,
                       "CUNIT1": "deg", "CUNIT2": "deg"})
    src = tmp_path / "big_i2d.fits"
    data = rng.normal(size=(2400, 1200)).astype(np.float32)
    fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(data, hdr, name="SCI"),
                  fits.ImageHDU(data, hdr, name="ERR")]).writeto(src)
    result = AlignResult(shift=np.array([0.1, -0.05]), matrix=np.eye(2), rotation_deg=0.0, scale=1.0,
                         rms_mas=5.0, n_matches=10, passes_ok=2, center=(24.17, 15.78))
    out, peak = _peak(write_aligned_mosaic, src, tmp_path / "aligned.fits", result)
    assert peak < data.nbytes / 4, peak / data.nbytes
    with fits.open(out) as h:
        np.testing.assert_array_equal(h["ERR"].data, data)
        dec_shift = (h["SCI"].header["CRVAL2"] - 15.78) * 3600
        assert dec_shift == pytest.approx(-0.05, abs=1e-4)
