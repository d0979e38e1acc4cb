import numpy as np
import pytest
from scipy.signal import fftconvolve

from jwstgal.kernels import (
    classify_safety,
    fwhm_of,
    gaussian_psf,
    make_aniano_kernel,
    make_pypher_kernel,
    moffat_psf,
    resample_kernel,
    resample_psf,
)


@pytest.mark.parametrize("maker", [make_aniano_kernel, make_pypher_kernel])
def test_gaussian_to_gaussian_kernel_is_the_analytic_gaussian(maker):
    res = maker(gaussian_psf(0.3, 0.03), 0.03, gaussian_psf(0.6, 0.03), 0.03)
    assert res.kernel.sum() == pytest.approx(1.0)
    assert res.kernel.shape[0] % 2 == 1
    assert fwhm_of(res.kernel, res.pixscale) == pytest.approx(np.sqrt(0.6**2 - 0.3**2), rel=0.005)
    # D of the written kernel: trimming to 99.9 % of sum |K| costs up to ~2e-3 of it by itself
    assert res.D < 3e-3 and res.W_minus < 1e-3 and res.safety == "very safe"


def test_kernel_from_a_coarser_target_grid():
    res = make_aniano_kernel(gaussian_psf(0.3, 0.03), 0.03, gaussian_psf(1.0, 0.1), 0.1)
    assert fwhm_of(res.kernel, res.pixscale) == pytest.approx(np.sqrt(1.0 - 0.09), rel=0.01)


def test_moffat_target_and_metrics():
    src = gaussian_psf(0.3, 0.03)
    tgt = moffat_psf(0.8, 2.5, 0.03)
    res = make_aniano_kernel(src, 0.03, tgt, 0.03)
    size = 401
    conv = fftconvolve(resample_psf(src, 0.03, 0.03, size), res.kernel, mode="same")
    t = resample_psf(tgt, 0.03, 0.03, size)
    assert np.abs(conv - t).max() / t.max() < 0.01
    assert fwhm_of(conv, 0.03) == pytest.approx(0.8, rel=0.01)


@pytest.mark.parametrize("maker", [make_aniano_kernel, make_pypher_kernel])
def test_narrower_target_is_refused(maker):
    with pytest.raises(ValueError, match="not broader than the source"):
        maker(gaussian_psf(0.6, 0.03), 0.03, gaussian_psf(0.3, 0.03), 0.03)


@pytest.mark.pipeline
@pytest.mark.parametrize("maker", [make_aniano_kernel, make_pypher_kernel])
def test_metrics_describe_the_kernel_that_is_written(maker):
    """D and W- recomputed from the returned (trimmed) kernel on the working grid are the ones
    reported (they used to describe the untrimmed kernel)."""
    from jwstgal.kernels import kernel_metrics

    src, tgt = moffat_psf(0.4, 2.5, 0.02), moffat_psf(0.9, 2.0, 0.02)
    res = maker(src, 0.02, tgt, 0.02)
    size = res.params["grid"]
    s = resample_psf(src, 0.02, res.pixscale, size)
    t = resample_psf(tgt, 0.02, res.pixscale, size)
    if maker is make_aniano_kernel:           # Aniano kernels work on circularised PSFs
        from jwstgal.kernels import circularise

        s, t = circularise(s), circularise(t)
    d, w = kernel_metrics(s / s.sum(), t / t.sum(), res.kernel)
    assert pytest.approx(d, rel=1e-9) == res.D and res.W_minus == pytest.approx(w, rel=1e-9, abs=1e-15)


def test_safety_classes():
    assert [classify_safety(w) for w in (0.1, 0.4, 0.9, 1.5)] == [
        "very safe", "safe", "aggressive", "unsafe"]


def test_resample_kernel_conserves_sum_and_width():
    k = gaussian_psf(0.8, 0.01)
    r = resample_kernel(k, 0.01, 0.06)
    assert r.sum() == pytest.approx(1.0) and r.shape[0] % 2 == 1
    assert fwhm_of(r, 0.06) == pytest.approx(0.8, rel=0.05)


def _pixel_integrated_gaussian(fwhm, pix, size, over=15):
    """A Gaussian PSF integrated over pixels of ``pix`` arcsec, as a mosaic records it (unit sum)."""
    return gaussian_psf(fwhm, pix / over, size * over).reshape(size, over, size, over).sum(axis=(1, 3))


def _fitted_fwhm(img, pix):
    from astropy.modeling import fitting, models

    n = img.shape[0]
    y, x = np.indices(img.shape)
    fit = fitting.LevMarLSQFitter()(models.Gaussian2D(img.max(), (n - 1) / 2, (n - 1) / 2, 1.0, 1.0),
                                    x, y, img)
    return 2.3548 * np.sqrt(fit.x_stddev.value * fit.y_stddev.value) * pix


def _on_kernel_grid(res, fwhm_s):
    """The Gaussian source PSF as the kernel was built from it (its grid, circularised)."""
    from jwstgal.kernels import circularise, resample_psf

    return circularise(resample_psf(gaussian_psf(fwhm_s, 0.005), 0.005, res.pixscale, res.kernel.shape[0]))


CASES = [(0.066, 0.120, 0.031),    # F200W -> F360M on the F200W mosaic (was +2.0 %)
         (0.27, 0.67, 0.11),       # F770W -> F2100W on the MIRI mosaic (was +0.9 %)
         (0.10, 0.92, 0.063),      # F300M -> Gaussian 0.92" on a long-wavelength mosaic
         (0.100, 0.120, 0.063)]    # F300M -> F360M at 0.063" (was +8.3 %): undersampled, the kernel
#                                    is narrower than a pixel


@pytest.mark.pipeline
@pytest.mark.parametrize(("fwhm_s", "fwhm_t", "pix"), CASES)
def test_kernel_on_the_mosaic_pixel_matches_the_pixel_integrated_target(fwhm_s, fwhm_t, pix):
    """Source PSF integrated over the mosaic pixel, convolved with the kernel on that pixel, equals
    the target PSF integrated over the same pixel: FWHM within 0.2 %, every pixel within 1 % of the
    peak. Where the source is Nyquist-sampled the band-limited kernel is the same kernel."""
    from jwstgal.kernels import pixel_centre_kernel

    res = make_aniano_kernel(gaussian_psf(fwhm_s, 0.005), 0.005, gaussian_psf(fwhm_t, 0.005), 0.005)
    kern = pixel_centre_kernel(res.kernel, _on_kernel_grid(res, fwhm_s), res.pixscale, pix)
    n = 101 if fwhm_t > 0.7 else 61
    src, tgt = _pixel_integrated_gaussian(fwhm_s, pix, n), _pixel_integrated_gaussian(fwhm_t, pix, n)
    conv = fftconvolve(src, kern, mode="same")
    assert _fitted_fwhm(conv, pix) / _fitted_fwhm(tgt, pix) == pytest.approx(1.0, abs=0.002)
    assert np.abs(conv / conv.sum() - tgt).max() < 0.01 * tgt.max()
    if fwhm_s / pix > 2:
        band_limited = resample_kernel(res.kernel, res.pixscale, pix)
        assert np.abs(band_limited - kern).max() < 1e-3 * kern.max()


def _pixel_integrated_at(fwhm, pix, size, dx, dy, over=15):
    """As :func:`_pixel_integrated_gaussian`, the star ``(dx, dy)`` pixels off the central pixel's centre."""
    c = (np.arange(size * over) + 0.5) * pix / over - size * pix / 2
    sig = fwhm / 2.3548
    g = np.outer(np.exp(-0.5 * ((c - dy * pix) / sig) ** 2), np.exp(-0.5 * ((c - dx * pix) / sig) ** 2))
    g = g.reshape(size, over, size, over).sum(axis=(1, 3))
    return g / g.sum()


def test_undersampled_photometry_holds_at_every_sub_pixel_phase():
    """Gaussian F300M -> F360M at 0.063": stars fall anywhere in their pixel. With the kernel built
    on the pixel, the flux in apertures of 1 and 2 target FWHM is within 0.5 % of the target's at
    every phase, and the FWHM within 0.2 % at the centre and 1.2 % anywhere. Gaussians are not
    band-limited: the band-limited kernel (cut at the mosaic's Nyquist frequency) rings, 2-3 % of
    the aperture flux goes into the ripple at every phase, and the residual image is 3x larger.
    (Real, optics-limited PSFs do not ring: ``test_real_undersampled_pair_matches_on_the_mosaic_pixel
    _at_every_phase``.)"""
    from jwstgal.kernels import pixel_centre_kernel

    fs, ft, pix, n = 0.100, 0.120, 0.063, 61
    res = make_aniano_kernel(gaussian_psf(fs, 0.005), 0.005, gaussian_psf(ft, 0.005), 0.005)
    kernels = {"pixel_centre": pixel_centre_kernel(res.kernel, _on_kernel_grid(res, fs), res.pixscale, pix),
               "band_limited": resample_kernel(res.kernel, res.pixscale, pix)}
    yy, xx = np.indices((n, n)) - (n - 1) / 2
    flux, fwhm, rms = ({k: [] for k in kernels} for _ in range(3))
    for dx in (0.0, 0.25, 0.5):
        for dy in (0.0, 0.25, 0.5):
            src, tgt = _pixel_integrated_at(fs, pix, n, dx, dy), _pixel_integrated_at(ft, pix, n, dx, dy)
            r = np.hypot(xx - dx, yy - dy) * pix
            for name, kern in kernels.items():
                conv = fftconvolve(src, kern, mode="same")
                conv /= conv.sum()
                flux[name] += [conv[r <= a].sum() / tgt[r <= a].sum() - 1 for a in (ft, 2 * ft)]
                fwhm[name].append(_fitted_fwhm(conv, pix) / _fitted_fwhm(tgt, pix) - 1)
                rms[name].append(np.sqrt(((conv - tgt) ** 2).sum() / (tgt**2).sum()))
    assert np.abs(flux["pixel_centre"]).max() < 0.005, flux["pixel_centre"]
    assert abs(fwhm["pixel_centre"][0]) < 0.002 and np.abs(fwhm["pixel_centre"]).max() < 0.012
    assert np.max(flux["band_limited"]) < -0.015, flux["band_limited"]
    assert np.max(rms["band_limited"]) > 2.5 * np.max(rms["pixel_centre"])


def _elliptical(sx: float, sy: float, angle_deg: float, n: int = 201) -> np.ndarray:
    """A Gaussian elongated along y, rotated counter-clockwise (x right, y up) by ``angle_deg``."""
    t = np.deg2rad(angle_deg)
    y, x = np.indices((n, n)) - (n - 1) / 2
    xr, yr = x * np.cos(t) + y * np.sin(t), -x * np.sin(t) + y * np.cos(t)
    g = np.exp(-0.5 * ((xr / sx) ** 2 + (yr / sy) ** 2))
    return g / g.sum()


def test_pypher_kernel_rotated_to_the_mosaic_matches_a_rotated_pair():
    """PSFs in the detector frame, mosaic rolled by 15 deg: the kernel rotated by the roll turns the
    rotated source into the rotated target; the unrotated one does not."""
    from jwstgal.kernels import rotate_kernel

    pix, roll = 0.02, 15.0
    res = make_pypher_kernel(_elliptical(2.0, 4.0, 0), pix, _elliptical(5.0, 6.5, 0), pix)
    src, tgt = _elliptical(2.0, 4.0, roll), _elliptical(5.0, 6.5, roll)
    n = res.kernel.shape[0]
    s = resample_psf(src, pix, res.pixscale, n)
    t = resample_psf(tgt, pix, res.pixscale, n)

    def mismatch(kern):
        return np.abs(fftconvolve(s, kern, mode="same") - t).sum()

    rotated, plain = mismatch(rotate_kernel(res.kernel, roll)), mismatch(res.kernel)
    assert rotated < 0.02 and rotated < plain / 4, (rotated, plain)
    assert mismatch(rotate_kernel(res.kernel, -roll)) > 2 * rotated        # the sense matters


@pytest.mark.pipeline
def test_detector_roll_from_headers():
    from astropy.io import fits

    from jwstgal.convolve_products import detector_roll

    sci = fits.Header({"PA_V3": 290.0})
    assert detector_roll(fits.Header({"ROLL_REF": 12.5}), sci) == 12.5
    assert detector_roll(fits.Header(), fits.Header({"PA_V3": 290.0, "V3I_YANG": -0.5})) == 289.5
    miri = detector_roll(fits.Header({"INSTRUME": "MIRI", "DETECTOR": "MIRIMAGE"}), sci)
    assert miri == pytest.approx(290.0 + 4.835, abs=0.01)                 # V3IdlYAngle from the SIAF
    long_b = detector_roll(fits.Header({"INSTRUME": "NIRCAM", "DETECTOR": "NRCBLONG"}), sci)
    assert long_b is not None and abs(long_b - 290.0) < 1.0               # NRCB5_FULL in the SIAF
    assert detector_roll(fits.Header(), fits.Header()) is None


def test_kernel_file_on_a_rolled_mosaic_pixel(tmp_path):
    """A pypher kernel file brought to a 15-deg rolled mosaic at 0.05" (a coarser pixel than it was
    built on): rotated, and built on the pixel from the PSF file beside it, it turns the rolled source
    integrated over the mosaic pixel into the rolled target within 0.2 % (summed |difference|), 4x better
    than unrotated. Without that PSF file the error names it and the way out; ``auto`` then samples
    band-limited."""
    from astropy.io import fits
    from astropy.wcs import WCS

    from jwstgal.convolve_products import Mosaic, kernel_on_mosaic
    from jwstgal.errors import InputNotFoundError
    from jwstgal.kernel_products import write_kernel
    from jwstgal.layout import kernel_path, psf_path
    from jwstgal.psfs import PSF, write_psf

    fine, pix, over, roll = 0.01, 0.05, 5, 15.0
    src_psf, tgt_psf = _elliptical(3.0, 6.0, 0, 401), _elliptical(7.5, 9.0, 0, 401)
    write_psf(PSF("F300M", src_psf, fine, "test"), psf_path(tmp_path, "F300M"))
    kfile = kernel_path(tmp_path, "pypher", "F300M", "F360M")
    kfile.parent.mkdir(parents=True)
    write_kernel(make_pypher_kernel(src_psf, fine, tgt_psf, fine), "F300M", "F360M", kfile, "key")

    def on_mosaic(sx, sy):                    # rolled, integrated over the mosaic pixel, centred
        g = _elliptical(sx, sy, roll, 61 * over)
        return g.reshape(61, over, 61, over).sum(axis=(1, 3))

    src, tgt = on_mosaic(3.0, 6.0), on_mosaic(7.5, 9.0)
    wcs = WCS(naxis=2)
    wcs.wcs.ctype, wcs.wcs.cdelt = ["RA---TAN", "DEC--TAN"], [-pix / 3600, pix / 3600]

    def mismatch(m):
        kern, angle, _, _ = kernel_on_mosaic(kfile, m, "pixel_centre")
        conv = fftconvolve(src, kern, mode="same")
        return np.abs(conv / conv.sum() - tgt).sum(), angle

    rolled = Mosaic(src, None, wcs, "MJy/sr", None, tmp_path / "m.fits", roll=roll)
    (rotated, angle), (plain, _) = mismatch(rolled), mismatch(Mosaic(src, None, wcs, "", None, tmp_path))
    assert angle == roll and rotated < 0.002 and rotated < plain / 4, (rotated, plain)
    assert kernel_on_mosaic(kfile, rolled)[3] == "pixel_centre"     # auto: not an stpsf PSF
    psf_path(tmp_path, "F300M").unlink()
    with pytest.raises(InputNotFoundError, match=r"F300M\.fits.*kernel_sampling = \"band_limited\""):
        kernel_on_mosaic(kfile, rolled, "pixel_centre")
    assert kernel_on_mosaic(kfile, rolled, "band_limited")[0].sum() == pytest.approx(1.0)
    assert kernel_on_mosaic(kfile, rolled)[3] == "band_limited"     # auto, without the PSF
    with fits.open(kfile, mode="update") as h:                      # a header naming a path
        h[0].header["KSOURCE"] = "../../F300M"
    with pytest.raises(InputNotFoundError, match=r"KSOURCE '\.\./\.\./F300M' becomes a folder name"):
        kernel_on_mosaic(kfile, rolled)


@pytest.mark.parametrize("maker", [make_aniano_kernel, make_pypher_kernel])
def test_a_finely_sampled_source_is_not_widened_on_a_coarser_working_grid(maker):
    """Issue #26 item 5: a source PSF sampled 3x finer than the working pixel (as stpsf's F200W is
    against an F200W -> F360M grid) was smoothed before it was taken coarser, and the target, at
    the working pixel already, was not: the kernel came out too narrow. Now the kernel turns the
    source into the target's FWHM within 0.2 %, and a well-sampled PSF keeps its width."""
    src_pix, tgt_pix = 0.005, 0.0157
    src, tgt = gaussian_psf(0.066, src_pix, 301), gaussian_psf(0.12, tgt_pix, 151)
    res = maker(src, src_pix, tgt, tgt_pix, common_pixscale=tgt_pix)
    on_grid = resample_psf(src, src_pix, res.pixscale, 101)
    assert fwhm_of(on_grid, res.pixscale) == pytest.approx(0.066, rel=0.003)
    out = fftconvolve(on_grid, res.kernel, mode="same")
    want = resample_psf(tgt, tgt_pix, res.pixscale, 101)        # measured alike (the same profile)
    assert fwhm_of(out, res.pixscale) == pytest.approx(fwhm_of(want, res.pixscale), rel=0.002)


def test_kernel_metrics_on_the_psf_grid_equal_the_linear_convolution():
    """D from the circular convolution on the PSFs' grid (issue #29: the metric's share of a kernel)
    equals D from the padded linear convolution within 1 % for a Moffat pair (broad wings, the
    kernel nearly as large as the grid: the worst case of what wraps); a kernel larger than the
    grid takes the linear path."""
    from jwstgal.kernels import kernel_metrics

    src, tgt = moffat_psf(0.3, 2.5, 0.03, 301), moffat_psf(0.8, 2.5, 0.03, 301)
    res = make_aniano_kernel(src, 0.03, tgt, 0.03, common_pixscale=0.03)
    k = res.kernel
    n = k.shape[0] + 40                      # the grid holds the kernel: the circular path
    s, t = resample_psf(src, 0.03, 0.03, n), resample_psf(tgt, 0.03, 0.03, n)
    linear = np.abs(fftconvolve(s, k / k.sum(), mode="same") - t).sum()
    d, w = kernel_metrics(s, t, k)
    assert k.shape[0] > 0.85 * s.shape[0]
    assert d == pytest.approx(linear, rel=0.01)
    assert d != linear                       # (it is the circular one)
    assert w == pytest.approx(0.5 * (np.abs(k).sum() - k.sum()) / k.sum(), rel=1e-9)
    wide = np.pad(k, 200)
    assert kernel_metrics(s, t, wide)[0] == pytest.approx(linear, rel=1e-6)
