"""Kernels from real stpsf PSFs (instrument files in PSF/stpsf_data), through the file layer."""

import numpy as np
import pytest
from astropy.io import fits
from scipy.signal import fftconvolve

from jwstgal.config import KernelsConfig
from jwstgal.kernel_products import band_psf, make_kernel_set
from jwstgal.kernels import fwhm_of, gaussian_psf, resample_psf
from jwstgal.layout import kernel_path
from jwstgal.psfs import DEFAULT_DATA_DIR, check_psf_name


@pytest.fixture(scope="module")
def f200w_kernels(tmp_path_factory):
    psf_dir = tmp_path_factory.mktemp("psf")
    cfg = KernelsConfig(targets=["gauss0.92"], methods=["aniano", "pypher"], nlambda=5)
    paths = make_kernel_set(["F200W"], cfg, psf_dir, DEFAULT_DATA_DIR)
    return cfg, psf_dir, paths


def test_stpsf_psf_is_the_real_f200w(f200w_kernels):
    cfg, psf_dir, _ = f200w_kernels
    psf = band_psf("F200W", cfg, psf_dir, DEFAULT_DATA_DIR)
    assert psf.pixscale == pytest.approx(0.031 / 4, rel=0.02)
    size = min(psf.data.shape) - 3 + min(psf.data.shape) % 2
    fwhm = fwhm_of(resample_psf(psf.data, psf.pixscale, psf.pixscale, size), psf.pixscale)
    assert 0.060 < fwhm < 0.075          # JWST F200W: ~0.066"
    assert "stpsf" in fits.getheader(psf_dir / "psfs" / "F200W.fits")["ORIGIN"]


@pytest.mark.parametrize("method", ["aniano", "pypher"])
def test_f200w_to_gauss092_gives_a_gaussian_within_one_percent(f200w_kernels, method):
    cfg, psf_dir, paths = f200w_kernels
    path = kernel_path(psf_dir, method, "F200W", "gauss0.92")
    assert path in paths and path.with_suffix(".png").is_file()
    h = fits.getheader(path)
    kern = fits.getdata(path).astype(float)
    assert kern.sum() == pytest.approx(1.0, abs=1e-5)
    assert h["SAFETY"] in ("very safe", "safe") and h["KERN_D"] < 0.01
    assert "JG_KERN" in h and "JGAL_VER" in h
    psf = band_psf("F200W", cfg, psf_dir, DEFAULT_DATA_DIR)
    size = 1201
    conv = fftconvolve(resample_psf(psf.data, psf.pixscale, h["PIXELSCL"], size), kern, mode="same")
    target = gaussian_psf(0.92, h["PIXELSCL"], size)
    assert np.abs(conv - target).max() / target.max() < 0.01
    assert fwhm_of(conv, h["PIXELSCL"]) == pytest.approx(0.92, rel=0.01)


def test_kernels_are_not_rebuilt_when_up_to_date(f200w_kernels):
    cfg, psf_dir, paths = f200w_kernels
    mtimes = [p.stat().st_mtime_ns for p in paths]
    psf_file = psf_dir / "psfs" / "F200W.fits"
    psf_mtime = psf_file.stat().st_mtime_ns
    make_kernel_set(["F200W"], cfg, psf_dir, DEFAULT_DATA_DIR)
    band_psf("F200W", cfg, psf_dir, DEFAULT_DATA_DIR)
    assert [p.stat().st_mtime_ns for p in paths] == mtimes
    assert psf_file.stat().st_mtime_ns == psf_mtime     # the cached PSF is reused, not recomputed


def test_psf_names():
    assert check_psf_name("f770w") == "F770W"
    assert check_psf_name("Gauss0.92") == "gauss0.92"
    assert check_psf_name("moffat1.0b2.5") == "moffat1.0b2.5"
    with pytest.raises(ValueError, match="analytic targets are written gauss"):
        check_psf_name("gaus0.9")
