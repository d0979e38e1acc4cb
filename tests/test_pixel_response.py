"""The mosaics' pixel response in model PSFs ([kernels] pixel_response, issue #26 item 6a).

The "real" mosaic here is made as stage 3 makes it: a star integrated over detector pixels at
dithers that cover the pixel's phases, drizzled (the `drizzle` package jwst resamples with,
square kernel) onto the mosaic grid.
"""

import numpy as np
import pytest
from astropy.io import fits
from scipy.signal import fftconvolve

from jwstgal.bands import get_band
from jwstgal.config import KernelsConfig, load_science
from jwstgal.errors import ConfigError
from jwstgal.kernel_grids import resample_kernel
from jwstgal.kernel_products import band_psf, kernel_key, make_kernel, plan_kernel_set
from jwstgal.kernels import gaussian_psf, make_aniano_kernel, psf_fwhm, resample_psf
from jwstgal.layout import optics_psf_path, psf_path
from jwstgal.pixel_response import PixelResponse, add_pixel_response, mosaic_response
from jwstgal.psfs import analytic_psf, pixel_integrated

P = 0.031          # arcsec: the mosaic's pixel and the short-wave detector's
OS = 4             # oversampling of the optics' PSF


def _second_moment(img: np.ndarray) -> float:
    y, x = np.indices(img.shape)
    c = (img.shape[1] - 1) / 2
    return float((img * (x - c) ** 2).sum() / img.sum())


def test_each_square_adds_its_variance_and_keeps_the_flux():
    psf = gaussian_psf(0.066, P / OS, 401)
    out = add_pixel_response(psf, P / OS, (P, 0.8 * P))
    added = (_second_moment(out) - _second_moment(psf)) * (P / OS) ** 2
    assert added == pytest.approx((P**2 + (0.8 * P) ** 2) / 12, rel=1e-6)
    assert out.sum() == pytest.approx(1.0) and out.shape == psf.shape
    assert np.array_equal(add_pixel_response(psf, P / OS, ()), psf)
    with pytest.raises(ValueError, match="must be positive"):
        add_pixel_response(psf, P / OS, (-P,))


def _drizzled(optics: np.ndarray, ratio: float, n_out: int, pixfrac: float = 1.0, k: int = 8) -> np.ndarray:
    """A star drizzled from k x k dithers (a detector pixel = ``ratio`` mosaic pixels)."""
    from drizzle.resample import Drizzle

    h_in = int(np.ceil(n_out / ratio / 2)) + 3
    centre = (n_out - 1) / 2
    d = Drizzle(kernel="square", out_shape=(n_out, n_out), fillval=0.0)
    for i in range(k * k):
        phase = ((i % k + 0.5) / k - 0.5, (i // k + 0.5) / k - 0.5)
        img = pixel_integrated(optics, OS, h_in, phase)
        yy, xx = np.indices(img.shape, dtype=float)
        pixmap = np.dstack([centre + (xx - h_in - phase[0]) * ratio, centre + (yy - h_in - phase[1]) * ratio])
        d.add_image(img.astype(np.float32), exptime=1.0, pixmap=pixmap, pixfrac=pixfrac, in_units="cps")
    out = np.asarray(d.out_img, float)
    return out / out.sum()


@pytest.mark.parametrize("pixfrac", [1.0, 0.6])
def test_a_drizzled_star_is_the_optics_widened_by_detector_and_drop(pixfrac):
    optics = gaussian_psf(0.066, P / OS, 201)           # F200W's FWHM at the short-wave pixel
    star = _drizzled(optics, 1.0, 41, pixfrac)
    model = add_pixel_response(optics, P / OS, (P, pixfrac * P))
    widened, bare = pixel_integrated(model, OS, 20), pixel_integrated(optics, OS, 20)
    assert psf_fwhm(star, P) == pytest.approx(psf_fwhm(widened, P), rel=0.005)
    assert np.abs(star - widened).max() < 0.01 * widened.max()
    assert psf_fwhm(star, P) > 1.05 * psf_fwhm(bare, P)     # the bare optics are too sharp


def test_kernels_from_widened_models_match_drizzled_mosaics():
    """F200W-like -> F300M-like (twice the detector pixel), both drizzled onto 0.031" pixels: the
    kernel of the bare optics leaves the convolved star ~10 % too sharp, the widened models' < 1 %."""
    src_optics = gaussian_psf(0.066, P / OS, 201)
    tgt_optics = gaussian_psf(0.100, 2 * P / OS, 101)
    source, target = _drizzled(src_optics, 1.0, 61), _drizzled(tgt_optics, 2.0, 61)
    errors = {}
    for name, widths in (("bare", ((), ())), ("widened", ((P, P), (2 * P, 2 * P)))):
        s = add_pixel_response(src_optics, P / OS, widths[0])
        t = add_pixel_response(tgt_optics, 2 * P / OS, widths[1])
        k = make_aniano_kernel(s, P / OS, t, 2 * P / OS)
        conv = fftconvolve(source, resample_kernel(k.kernel, k.pixscale, P), mode="same")
        errors[name] = psf_fwhm(conv, P) / psf_fwhm(target, P) - 1
    assert errors["bare"] < -0.05, errors
    assert abs(errors["widened"]) < 0.01, errors


def test_the_response_is_read_from_the_stage3_resample_parameters():
    f200w, f770w = get_band("F200W"), get_band("F770W")
    assert mosaic_response({}, ["ngc1"], f200w) == PixelResponse(0.031, 0.031)       # jwst's defaults
    lv3 = {"resample": {"pixfrac": {"nircam": 0.8, "miri": 1.0}, "kernel": "square"}}
    assert mosaic_response(lv3, ["ngc1"], f200w) == PixelResponse(0.031, pytest.approx(0.0248))
    assert mosaic_response(lv3, ["ngc1"], f770w) == PixelResponse(0.11, 0.11)
    assert mosaic_response({"resample": {"kernel": "point"}}, ["ngc1"], f770w).widths == (0.11,)
    with pytest.raises(ValueError, match="kernel = 'lanczos3' for F770W.*square, turbo, point"):
        mosaic_response({"resample": {"kernel": "lanczos3"}}, ["ngc1"], f770w)
    with pytest.raises(ValueError, match="differ between targets for F200W"):
        mosaic_response({"resample": {"pixfrac": {"ngc1": 0.5, "nircam": 1.0}}}, ["ngc1", "ngc2"], f200w)


def test_a_science_config_resolves_each_bands_response(tmp_path):
    base = ('[projects.1]\ntargets = ["ngc1"]\n[pipeline]\nnircam_bands = ["F200W", "F300M"]\n'
            'miri_bands = ["F770W"]\n[kernels]\npixel_response = true\n')
    path = tmp_path / "c.toml"
    path.write_text(base + '[lv3_parameters.resample]\npixfrac = { nircam_long = 0.5 }\n')
    kernels = load_science(path).kernels
    assert kernels.response("F200W") == PixelResponse(0.031, 0.031)
    assert kernels.response("F300M") == PixelResponse(0.063, pytest.approx(0.0315))
    assert kernels.response("F770W") == PixelResponse(0.11, 0.11)
    path.write_text(base + '[lv3_parameters.resample]\nkernel = "gaussian"\n')
    with pytest.raises(ConfigError, match="pixel_response.*kernel = 'gaussian'"):
        load_science(path)
    assert KernelsConfig().response("F200W") is None                     # off by default


def test_a_widened_psf_is_cached_beside_its_optics_and_rekeys_its_kernels(tmp_path):
    off = KernelsConfig(psf_source="gaussian", methods=["aniano"], targets=["gauss0.3"])
    on = off.model_copy(update={"pixel_response": True})
    assert on.response("gauss0.3") is None
    [(_, _, _, _, why)] = plan_kernel_set(on, tmp_path, [("F200W", "gauss0.3")])     # the dry run
    assert why.startswith("PSF of F200W to be made")
    bare = band_psf("F200W", off, tmp_path, tmp_path)
    widened = band_psf("F200W", on, tmp_path, tmp_path)
    assert optics_psf_path(tmp_path, "F200W").is_file()
    assert fits.getheader(psf_path(tmp_path, "F200W"))["ORIGIN"].endswith('+pix 0.031/0.031"')
    # the simulator's PSF (what the detector integrates) is the optics, not the widened one
    optics = band_psf("F200W", on, tmp_path, tmp_path, optics=True)
    assert np.allclose(optics.data, bare.data)
    assert psf_fwhm(widened.data, widened.pixscale) > 1.05 * psf_fwhm(bare.data, bare.pixscale)
    gauss = analytic_psf("gauss0.3", bare.pixscale)
    assert kernel_key("aniano", widened, gauss, on) != kernel_key("aniano", bare, gauss, off)
    made = make_kernel("F200W", "gauss0.3", "aniano", on, tmp_path, tmp_path)
    k = fits.getdata(made)
    pix = fits.getheader(made)["PIXELSCL"]
    w = resample_psf(widened.data, widened.pixscale, pix, k.shape[0])
    conv = fftconvolve(w, k, mode="same")
    assert psf_fwhm(conv, pix) == pytest.approx(0.3, rel=0.01)
