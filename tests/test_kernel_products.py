"""Kernels from real stpsf PSFs (instrument files in PSF/stpsf_data), through the file layer."""

import numpy as np
import pytest
import scipy.fft
from astropy.io import fits
from scipy.signal import fftconvolve

from jwstgal.config import KernelsConfig
from jwstgal.kernel_products import band_psf, make_kernel_set
from jwstgal.kernels import fast_odd, fwhm_of, gaussian_psf, resample_psf, working_grid
from jwstgal.layout import kernel_path
from jwstgal.psfs import DEFAULT_DATA_DIR, check_psf_name, stpsf_psf


@pytest.fixture(scope="module")
def f200w_kernels(tmp_path_factory):
    psf_dir = tmp_path_factory.mktemp("psf")
    cfg = KernelsConfig(targets=["gauss0.92"], methods=["aniano", "pypher"], nlambda=5)
    paths = make_kernel_set(["F200W"], cfg, psf_dir, DEFAULT_DATA_DIR)
    return cfg, psf_dir, paths


@pytest.mark.pipeline
def test_stpsf_psf_is_the_real_f200w(f200w_kernels):
    cfg, psf_dir, _ = f200w_kernels
    psf = band_psf("F200W", cfg, psf_dir, DEFAULT_DATA_DIR)
    assert psf.pixscale == pytest.approx(0.031 / 4, rel=0.02)
    size = min(psf.data.shape) - 3 + min(psf.data.shape) % 2
    fwhm = fwhm_of(resample_psf(psf.data, psf.pixscale, psf.pixscale, size), psf.pixscale)
    assert 0.060 < fwhm < 0.075          # JWST F200W: ~0.066"
    assert "stpsf" in fits.getheader(psf_dir / "psfs" / "F200W.fits")["ORIGIN"]


@pytest.mark.pipeline
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


def _encircled(img: np.ndarray, pix: float, radii: np.ndarray) -> np.ndarray:
    n = img.shape[0]
    y, x = np.indices(img.shape) - (n - 1) / 2
    r = np.hypot(x, y) * pix
    return np.array([img[r <= rad].sum() for rad in radii]) / img.sum()


@pytest.mark.pipeline
def test_miri_kernel_keeps_the_encircled_energy_out_to_3_arcsec(tmp_path):
    """PSFs over >= 30" (a 7.8" F770W field left 6 % of the flux, and its detector cross, outside;
    20" still 1.2 % at 3"): the encircled energy of source (x) kernel is the target's within 1 % out
    to 3".
    """
    cfg = KernelsConfig(targets=["F2100W"], methods=["aniano"], nlambda=3)
    (path,) = make_kernel_set(["F770W"], cfg, tmp_path, DEFAULT_DATA_DIR, progress=False)
    src = band_psf("F770W", cfg, tmp_path, DEFAULT_DATA_DIR)
    tgt = band_psf("F2100W", cfg, tmp_path, DEFAULT_DATA_DIR)
    assert src.data.shape[0] * src.pixscale > 29.9 and tgt.data.shape[0] * tgt.pixscale > 29.9
    h = fits.getheader(path)
    pix, n = h["PIXELSCL"], fast_odd(20 / h["PIXELSCL"])
    assert h["KERN_D"] < 0.05
    conv = fftconvolve(resample_psf(src.data, src.pixscale, pix, n), fits.getdata(path).astype(float),
                       mode="same")
    full = stpsf_psf("F2100W", fov_arcsec=30, nlambda=3)        # the target PSF, not truncated
    t = resample_psf(full.data, full.pixscale, pix, fast_odd(30 / pix))
    radii = np.array([0.25, 0.5, 1.0, 1.5, 2.0, 3.0])
    assert np.abs(_encircled(conv, pix, radii) - _encircled(t, pix, radii)).max() < 0.01


def test_working_grid_from_both_fwhms_is_fft_friendly():
    # F200W -> F2100W over 20": the pixel grows to fit the field instead of cutting it at 13.8"
    pix, size = working_grid(0.066, 0.674, 0.0078, 20.0)
    assert size * pix >= 20.0 and pix <= 0.674 / 8 and size % 2 == 1
    assert scipy.fft.next_fast_len(size) == size            # FFT-friendly
    # a sharp target keeps a fine pixel
    pix, size = working_grid(0.066, 0.1, 0.0078, 20.0)
    assert pix <= 0.1 / 8
    assert [fast_odd(n) for n in (2049, 100, 7)] == [2079, 105, 7]   # 3^3 7 11, 3 5 7, 7


def _integrated(psf, pix: float, size: int, phase: tuple[int, int], over: int = 8) -> np.ndarray:
    """A PSF integrated over pixels of ``pix``, the star ``phase`` eighths of a pixel off centre."""
    fine = resample_psf(psf.data, psf.pixscale, pix / over, size * over + 1)[:-1, :-1]
    g = np.roll(fine, phase, axis=(0, 1)).reshape(size, over, size, over).sum(axis=(1, 3))
    return g / g.sum()


@pytest.mark.pipeline
def test_real_undersampled_pair_matches_on_the_mosaic_pixel_at_every_phase(tmp_path):
    """F300M -> F360M on the 0.063" long-wavelength mosaic (undersampled), real stpsf PSFs: the
    kernel file brought to the mosaic pixel (``auto``: band-limited, for stpsf PSFs), applied to the
    source PSF integrated over the mosaic pixel, gives the target PSF integrated over the same pixel:
    FWHM within 0.1 % for a star at the pixel centre (0.04 %) and 0.25 % anywhere in the pixel
    (0.21 % at the corner), aperture flux (1 and 2 FWHM) within 0.3 % everywhere."""
    from dataclasses import replace

    from astropy.modeling import fitting, models
    from astropy.wcs import WCS

    from jwstgal.convolve_products import Mosaic, kernel_on_mosaic
    from jwstgal.kernels import circularise

    cfg = KernelsConfig(targets=["F360M"], methods=["aniano"], nlambda=3)
    (path,) = make_kernel_set(["F300M"], cfg, tmp_path, DEFAULT_DATA_DIR, progress=False)
    pix = 0.063
    wcs = WCS(naxis=2)
    wcs.wcs.ctype, wcs.wcs.cdelt = ["RA---TAN", "DEC--TAN"], [-pix / 3600, pix / 3600]
    kern, _, _, sampling = kernel_on_mosaic(path, Mosaic(np.zeros((3, 3)), None, wcs, "", None, tmp_path))
    assert sampling == "band_limited"
    src, tgt = (band_psf(b, cfg, tmp_path, DEFAULT_DATA_DIR) for b in ("F300M", "F360M"))
    src, tgt = (replace(p, data=circularise(resample_psf(p.data, p.pixscale, p.pixscale,
                                                             p.data.shape[0] - 1 + p.data.shape[0] % 2)))
                for p in (src, tgt))                   # Aniano kernels match the circularised pair

    def fwhm(img):
        y, x = np.indices(img.shape)
        c = (img.shape[0] - 1) / 2
        fit = fitting.LevMarLSQFitter()(models.Gaussian2D(img.max(), c, c, 1.0, 1.0), x, y, img)
        return np.sqrt(abs(fit.x_stddev.value * fit.y_stddev.value))

    n = 41
    yy, xx = np.indices((n, n)) - (n - 1) / 2
    width, flux = [], []
    for phase in [(0, 0), (0, 2), (0, 4), (2, 2), (2, 4), (4, 4)]:
        s, t = _integrated(src, pix, n, phase), _integrated(tgt, pix, n, phase)
        conv = fftconvolve(s, kern, mode="same")
        conv /= conv.sum()                             # as t: unit sum in the box
        r = np.hypot(xx - phase[1] / 8, yy - phase[0] / 8) * pix
        width.append(fwhm(conv) / fwhm(t) - 1)
        flux += [conv[r <= a].sum() / t[r <= a].sum() - 1 for a in (0.12, 0.24)]
    assert abs(width[0]) < 0.001 and np.abs(width).max() < 0.0025, width
    assert np.abs(flux).max() < 0.003, flux


def _ee(img, pix, radius):
    yy, xx = np.indices(img.shape) - (img.shape[0] - 1) / 2
    return img[np.hypot(yy, xx) * pix < radius].sum() / img.sum()


@pytest.mark.pipeline
def test_a_kernel_from_an_aberrated_model_removes_the_bias_of_a_perfect_telescope():
    """The 'real' telescope: stpsf with a 75 nm wavefront error (one realisation). Kernels F200W ->
    F300M from the perfect-telescope models leave its image's core off (encircled energy within
    0.1"); from models with a synthetic 75 nm error of another pattern ([kernels] ote_wfe_nm), the
    bias is several times smaller."""
    from jwstgal.kernels import make_aniano_kernel

    def psf(band, wfe, seed):
        return stpsf_psf(band, oversample=4, fov_arcsec=6, nlambda=3, ote_wfe_nm=wfe, ote_wfe_seed=seed)

    real = {b: psf(b, 75, 1) for b in ("F200W", "F300M")}
    pix, n = real["F200W"].pixscale, 601
    grid = {b: resample_psf(p.data, p.pixscale, pix, n) for b, p in real.items()}
    assert "synthetic OTE WFE 75 nm" in real["F200W"].origin
    misses = {}
    for name, (wfe, seed) in {"perfect": (0, 0), "aberrated": (75, 0)}.items():
        src, tgt = (resample_psf(psf(b, wfe, seed).data, real[b].pixscale, pix, n)
                    for b in ("F200W", "F300M"))
        res = make_aniano_kernel(src, pix, tgt, pix)
        size = min(n, int(res.kernel.shape[0] * res.pixscale / pix) | 1)
        kernel = resample_psf(res.kernel, res.pixscale, pix, size)
        out = fftconvolve(grid["F200W"], kernel, mode="same")
        misses[name] = (_ee(out, pix, 0.1) - _ee(grid["F300M"], pix, 0.1),
                        fwhm_of(out, pix) / fwhm_of(grid["F300M"], pix) - 1)
    assert abs(misses["perfect"][0]) > 0.01                       # 1.7 points of energy off
    assert abs(misses["aberrated"][0]) < abs(misses["perfect"][0]) / 3
    assert abs(misses["aberrated"][1]) < 0.003 < abs(misses["perfect"][1])


@pytest.mark.pipeline
def test_going_back_to_earlier_settings_takes_the_kernel_from_the_cache(tmp_path, caplog):
    """Kernels are kept by their key (PSFs and settings): A, then B, then A again computes nothing."""
    import logging

    cfg_a = KernelsConfig(targets=["gauss1.0"], methods=["pypher"], psf_source="gaussian", reg_fact=1e-4)
    cfg_b = cfg_a.model_copy(update={"reg_fact": 1e-3})
    (first,) = make_kernel_set(["F200W"], cfg_a, tmp_path, DEFAULT_DATA_DIR, progress=False)
    data_a = fits.getdata(first).copy()
    make_kernel_set(["F200W"], cfg_b, tmp_path, DEFAULT_DATA_DIR, progress=False)
    assert not np.array_equal(fits.getdata(first), data_a)              # B's kernel is in place
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="jwstgal.kernel_products"):
        (again,) = make_kernel_set(["F200W"], cfg_a, tmp_path, DEFAULT_DATA_DIR, progress=False)
    assert "from the kernel cache" in caplog.text and "D=" not in caplog.text   # not recomputed
    assert again == first and np.array_equal(fits.getdata(again), data_a)
    assert again.with_suffix(".png").is_file()
    from jwstgal.kernel_products import plan_kernel_set

    make_kernel_set(["F200W"], cfg_b, tmp_path, DEFAULT_DATA_DIR, progress=False)
    ((*_, why),) = plan_kernel_set(cfg_a, tmp_path, [("F200W", "gauss1.0")])
    assert why == "PSFs or settings changed: restored from the kernel cache"
