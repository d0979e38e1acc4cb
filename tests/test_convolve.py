import numpy as np
import pytest
from astropy.convolution import convolve_fft
from scipy.signal import fftconvolve

from jwstgal.convolve import convolve_image
from jwstgal.kernels import gaussian_psf


def test_matches_scipy_in_the_interior_whatever_the_tiling():
    rng = np.random.default_rng(0)
    img = rng.normal(size=(300, 260))
    k = gaussian_psf(0.5, 0.05, 31)
    ref = fftconvolve(img, k / k.sum(), mode="same")
    for block in (64, 100, 1000):
        out = convolve_image(img, k, block=block).data
        assert np.allclose(out[20:-20, 20:-20], ref[20:-20, 20:-20], atol=1e-10), block


def test_nan_handling_matches_astropy_interpolation():
    rng = np.random.default_rng(1)
    img = 5 + rng.normal(size=(128, 128))
    img[40:45, 60:70] = np.nan
    k = gaussian_psf(0.3, 0.05, 21)
    ours = convolve_image(img, k, block=50).data
    ref = convolve_fft(img, k, nan_treatment="interpolate", preserve_nan=True, boundary="fill",
                       fill_value=0, normalize_kernel=True)
    inner = (slice(15, -15), slice(15, -15))
    assert np.all(np.isnan(ours[40:45, 60:70]))
    assert np.allclose(ours[inner], ref[inner], equal_nan=True, atol=1e-8)


def test_flux_conserved_and_errors_propagated():
    img = np.zeros((101, 101))
    img[50, 50] = 100.0
    err = np.ones_like(img)
    k = gaussian_psf(0.4, 0.05, 41)
    res = convolve_image(img, k, err=err, block=64)
    assert np.nansum(res.data) == pytest.approx(100.0, rel=1e-9)
    # independent unit errors convolved with K: sigma = sqrt(sum K^2)
    kn = k / k.sum()
    assert res.err[50, 50] == pytest.approx(np.sqrt((kn**2).sum()), rel=1e-9)


def test_input_is_not_modified():
    img = np.arange(64.0).reshape(8, 8)
    img[2, 2] = np.nan
    before = img.copy()
    convolve_image(img, np.ones((3, 3)))
    assert np.array_equal(img, before, equal_nan=True)


def test_rejects_even_kernel():
    with pytest.raises(ValueError, match="odd-sized"):
        convolve_image(np.zeros((8, 8)), np.ones((4, 4)))
