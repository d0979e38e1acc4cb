"""Users' empirical PSFs as kernel sources ([kernels] psf_files), and the PSF model in each kernel."""

import numpy as np
import pytest
from astropy.io import fits
from scipy.signal import fftconvolve

from jwstgal.config import KernelsConfig
from jwstgal.kernel_products import band_psf, make_kernel_set, psf_file_problems
from jwstgal.kernels import centroid, fwhm_of, gaussian_psf, make_aniano_kernel, moffat_psf, resample_psf
from jwstgal.psfs import read_empirical_psf

PIX = 0.0075     # arcsec: a quarter of a NIRCam short-wave pixel


def _shift(img, dy, dx):
    fy, fx = np.fft.fftfreq(img.shape[0])[:, None], np.fft.fftfreq(img.shape[1])[None, :]
    return np.fft.ifft2(np.fft.fft2(img) * np.exp(-2j * np.pi * (fy * dy + fx * dx))).real


def _as_a_user_gives_it(psf, path, *, header=None, dy=1.3, dx=-0.7, scale=37.0):
    """Off-centre, on an even non-square grid, not normalised, with NaN in a corner."""
    img = _shift(psf, dy, dx)[5:-5, 10:-9] * scale
    img[:3, :3] = np.nan
    hdr = fits.Header(header if header is not None else {"PIXSCALE": PIX})
    fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(img, hdr)]).writeto(path)
    return path


def _real(model_fwhm, beta, blur):
    """A 'real' PSF: the model's, widened by what the model lacks (wavefront error, pixels, jitter)."""
    model = moffat_psf(model_fwhm, beta, PIX, 301)
    return model, fftconvolve(model, gaussian_psf(blur, PIX, 101), mode="same")


def test_an_empirical_psf_is_centred_normalised_and_its_scale_read(tmp_path):
    psf = moffat_psf(0.07, 2.5, PIX, 201)
    emp = read_empirical_psf(_as_a_user_gives_it(psf, tmp_path / "f200w.fits"), "F200W")
    assert emp.pixscale == pytest.approx(PIX)
    assert emp.data.shape[0] == emp.data.shape[1] and emp.data.shape[0] % 2 == 1
    assert emp.data.sum() == pytest.approx(1.0)
    cx, cy = centroid(emp.data)
    mid = (emp.data.shape[0] - 1) / 2
    assert abs(cx - mid) < 0.02 and abs(cy - mid) < 0.02
    assert fwhm_of(emp.data, PIX) == pytest.approx(fwhm_of(psf, PIX), rel=0.005)
    assert emp.origin.startswith("empirical f200w.fits ")
    # a WCS instead of a scale keyword
    wcs = {"CTYPE1": "RA---TAN", "CTYPE2": "DEC--TAN", "CD1_1": -PIX / 3600, "CD2_2": PIX / 3600,
           "CD1_2": 0.0, "CD2_1": 0.0, "CRVAL1": 10.0, "CRVAL2": 5.0, "CRPIX1": 50.0, "CRPIX2": 50.0}
    emp2 = read_empirical_psf(_as_a_user_gives_it(psf, tmp_path / "wcs.fits", header=wcs), "F200W")
    assert emp2.pixscale == pytest.approx(PIX, rel=1e-6)


def test_an_unusable_empirical_psf_is_refused_naming_the_file_and_what_is_missing(tmp_path):
    psf = moffat_psf(0.07, 2.5, PIX, 101)
    noscale = _as_a_user_gives_it(psf, tmp_path / "noscale.fits", header={})
    with pytest.raises(ValueError, match="noscale.fits: no pixel scale .*PIXELSCL, PIXSCALE"):
        read_empirical_psf(noscale, "F200W")
    fits.PrimaryHDU(np.full((50, 50), np.nan), fits.Header({"PIXSCALE": PIX})).writeto(tmp_path / "nan.fits")
    with pytest.raises(ValueError, match="100% of its pixels are not finite"):
        read_empirical_psf(tmp_path / "nan.fits", "F200W")
    cfg = KernelsConfig(targets=["gauss0.5"], psf_source="gaussian", psf_files={"F200W": "absent.fits"})
    (problem,) = psf_file_problems(cfg, tmp_path)
    assert problem.startswith("[kernels] psf_files.F200W: empirical PSF") and "absent.fits" in problem
    with pytest.raises(ValueError, match="psf_files"):
        KernelsConfig(psf_files={"F200W": "../outside.fits"})


@pytest.mark.pipeline
def test_kernels_from_empirical_psfs_remove_the_bias_of_model_psfs(tmp_path):
    """Model PSFs narrower than the real ones (as stpsf's without the telescope's wavefront error
    are): a kernel between the models leaves the real image off its real target; one between the
    users' empirical PSFs matches it."""
    model_s, real_s = _real(0.066, 2.5, 0.040)       # F200W-like: the real one ~20 % wider
    model_t, real_t = _real(0.145, 2.5, 0.050)       # F444W-like
    want = fwhm_of(real_t, PIX)
    k_model = make_aniano_kernel(model_s, PIX, model_t, PIX).kernel
    psf_dir = tmp_path / "psf"
    (psf_dir / "empirical").mkdir(parents=True)
    _as_a_user_gives_it(real_s, psf_dir / "empirical" / "F200W_epsf.fits")
    _as_a_user_gives_it(real_t, psf_dir / "empirical" / "F444W_epsf.fits", dy=-0.4, dx=2.2, scale=0.01)
    cfg = KernelsConfig(targets=["F444W"], psf_source="gaussian",
                        psf_files={"F200W": "F200W_epsf.fits", "F444W": "F444W_epsf.fits"})
    (path,) = make_kernel_set(["F200W"], cfg, psf_dir, psf_dir)
    h = fits.getheader(path)
    assert h["PSFMODS"].startswith("empirical F200W_epsf.fits") and h["PSFMODT"].startswith("empirical F444W")
    k_emp = resample_psf(fits.getdata(path).astype(float), h["PIXELSCL"], PIX, 301)

    def miss(kernel):
        return fwhm_of(fftconvolve(real_s, kernel, mode="same"), PIX) / want - 1

    assert abs(miss(k_model)) > 0.03                  # the models' kernel: several per cent off
    assert abs(miss(k_emp)) < 0.01                    # the empirical PSFs' kernel: within 1 %
    # a new file is a new PSF: the kernel is remade from it
    mtime = path.stat().st_mtime_ns
    (psf_dir / "empirical" / "F200W_epsf.fits").unlink()
    _as_a_user_gives_it(model_s, psf_dir / "empirical" / "F200W_epsf.fits")
    make_kernel_set(["F200W"], cfg, psf_dir, psf_dir)
    assert path.stat().st_mtime_ns != mtime
    assert band_psf("F200W", cfg, psf_dir, psf_dir).origin != h["PSFMODS"]
