"""Kernels on grids: the working grid of a kernel, and a kernel on a mosaic's pixel and orientation.

Pure functions on arrays: :func:`working_grid` chooses the pixel and FFT-friendly size on which a
kernel is built, and Aniano's filters act on its Fourier grid (:func:`low_pass_filter`,
:func:`high_frequency_filter`); :func:`pixel_centre_kernel` (exact for a star centred on a pixel) and
:func:`resample_kernel` (band-limited sampling) bring a kernel to a mosaic's pixel; :func:`rotate_kernel`
into a mosaic's orientation.
"""

from __future__ import annotations

import numpy as np
import scipy.fft

#: Floor (relative to its peak) below which the sampled source's transform is not inverted
#: (:func:`pixel_centre_kernel`); the kernel itself already carries Aniano's filters.
WIENER_FLOOR = 1e-4


def _odd(n: float) -> int:
    n = int(np.ceil(n))
    return n + 1 - n % 2


def fast_odd(n: float) -> int:
    """Smallest odd FFT-friendly size (``scipy.fft.next_fast_len``) >= ``n`` (kernels need a centre)."""
    size = scipy.fft.next_fast_len(max(int(np.ceil(n)), 1))
    while size % 2 == 0:
        size = scipy.fft.next_fast_len(size + 1)
    return size


def working_grid(fwhm_s: float, fwhm_t: float, source_pixscale: float, extent: float,
                 max_grid: int = 2049) -> tuple[float, int]:
    """Working pixel (arcsec) and grid size of a kernel, from both FWHMs and the PSF field.

    The pixel samples the source PSF (a tenth of its FWHM, or its own pixel) unless the field
    (``extent`` arcsec: both PSFs, and 12 target FWHMs) would then need more than ``max_grid``
    pixels; it then grows, up to an eighth of the target FWHM (what the kernel and the target
    need: a coarser source is integrated over the pixel, which changes it only at frequencies the
    target does not have). The grid covers the whole field, at an odd FFT-friendly size.
    """
    pix = min(source_pixscale, fwhm_s / 10)
    pix = min(max(pix, extent / max_grid), fwhm_t / 8)
    return pix, fast_odd(extent / pix)


def resample_kernel(kernel: np.ndarray, pixscale_in: float, pixscale_out: float) -> np.ndarray:
    """A centred kernel on an image's pixel grid (odd size, unit sum).

    The kernel is band-limited to the image's Nyquist frequency and sampled at the image's pixel
    centres (a Fourier-series evaluation of its transform, not an interpolation). An image is
    already integrated over its pixels: averaging the kernel over the pixel, or smoothing it first,
    would apply that integration twice and broaden the result (+8 % in FWHM for F300M -> F360M at
    0.063"); point samples of the band-limited kernel keep its moments even where it is narrower
    than a pixel.
    """
    n = kernel.shape[0]
    size = max(_odd(n * pixscale_in / pixscale_out), 3)
    freq = scipy.fft.fftfreq(n, d=pixscale_in)                # cycles per arcsec
    keep = np.abs(freq) < 0.5 / pixscale_out
    k_ft = scipy.fft.fft2(scipy.fft.ifftshift(kernel))[np.ix_(keep, keep)]
    pos = (np.arange(size) - (size - 1) / 2) * pixscale_out
    basis = np.exp(2j * np.pi * np.outer(pos, freq[keep]))
    out = (basis @ k_ft @ basis.T).real
    return out / out.sum()


def _centred(img: np.ndarray, size: int) -> np.ndarray:
    """An odd, centred image zero-padded to ``size`` (odd) with its centre moved to index 0 (for FFTs)."""
    pad = (size - img.shape[0]) // 2
    return scipy.fft.ifftshift(np.pad(img, pad))


def _point_samples(img: np.ndarray, ratio: float, size: int) -> np.ndarray:
    """A centred image (odd) sampled every ``ratio`` of its pixels on a centred odd grid (cubic spline)."""
    from scipy.ndimage import affine_transform

    c = (img.shape[0] - 1) / 2 - (size - 1) / 2 * ratio
    return affine_transform(img, [ratio, ratio], offset=[c, c], output_shape=(size, size), order=3,
                            mode="constant", cval=0.0)


def pixel_centre_kernel(kernel: np.ndarray, source: np.ndarray, pixscale_in: float,
                        pixscale_out: float) -> np.ndarray:
    """A centred kernel on an image's pixel grid, exact for a point source centred on a pixel (unit sum).

    An image holds its PSF integrated over the pixel and sampled at the pixel centres. Here the
    source PSF and ``source (x) kernel`` are both integrated over the image's pixel (a sinc in
    Fourier space) and point-sampled there; the image-pixel kernel is their ratio in Fourier space
    (inverted where the sampled source holds power: a Wiener floor of ``WIENER_FLOOR`` of its peak;
    Aniano's radial low-pass would cut the aliased power near the grid's corners). Where the source is
    Nyquist-sampled on the image this equals :func:`resample_kernel`. On undersampled data with
    PSFs that are not band-limited (Gaussian F300M -> F360M at 0.063") it has no Gibbs ripple:
    aperture photometry stays within 0.5 % at every sub-pixel phase, where the band-limited kernel
    loses 2-3 % into the ripple. (Real PSFs are band-limited by the aperture and do not ring.)

    Parameters
    ----------
    kernel : numpy.ndarray
        The kernel on its own (fine) grid, odd and centred.
    source : numpy.ndarray
        The source PSF on the kernel's grid (same pixel and orientation), odd and centred.
    pixscale_in, pixscale_out : float
        The kernel's and the image's pixel scales (arcsec).

    Returns
    -------
    numpy.ndarray
        Of :func:`resample_kernel`'s size.
    """
    n = kernel.shape[0]
    big = fast_odd(n + source.shape[0] - 1)                  # source (x) kernel without wrap-around
    box = np.sinc(scipy.fft.fftfreq(big, d=pixscale_in) * pixscale_out)     # the pixel's transfer
    half = np.sinc(scipy.fft.rfftfreq(big, d=pixscale_in) * pixscale_out)
    s_ft = scipy.fft.rfft2(_centred(source / source.sum(), big)) * box[:, None] * half[None, :]
    m = fast_odd(big * pixscale_in / pixscale_out)
    ratio = pixscale_out / pixscale_in
    s_pix = _point_samples(scipy.fft.fftshift(scipy.fft.irfft2(s_ft, s=(big, big))), ratio, m)
    s_ft *= scipy.fft.rfft2(_centred(kernel / kernel.sum(), big))
    t_pix = _point_samples(scipy.fft.fftshift(scipy.fft.irfft2(s_ft, s=(big, big))), ratio, m)
    del s_ft
    s_dft = scipy.fft.fft2(scipy.fft.ifftshift(s_pix))
    eps2 = (WIENER_FLOOR * np.abs(s_dft).max()) ** 2     # only where the sampled source has ~no power
    k_dft = scipy.fft.fft2(scipy.fft.ifftshift(t_pix)) * np.conj(s_dft) / (np.abs(s_dft) ** 2 + eps2)
    out = scipy.fft.fftshift(scipy.fft.ifft2(k_dft).real)
    size = min(max(_odd(n * pixscale_in / pixscale_out), 3), m)
    lo = (m - size) // 2
    out = out[lo:lo + size, lo:lo + size]
    return out / out.sum()


def rotate_kernel(kernel: np.ndarray, angle_deg: float) -> np.ndarray:
    """A kernel rotated counter-clockwise (north-up, east-left display) by ``angle_deg``, unit sum.

    PSFs (and pypher's anisotropic kernels) are in the detector frame; a north-up mosaic sees that
    frame rotated by the roll of the detector's y axis (``PA_V3 + V3IdlYAngle``, east of north).
    Rotating the kernel equals rebuilding it from rotated PSFs (the construction commutes with
    rotation) at a fraction of the cost. Cubic-spline interpolation on the kernel's own grid.
    """
    from scipy.ndimage import rotate

    if abs(angle_deg) < 1e-6:
        return kernel
    out = rotate(kernel, -angle_deg, reshape=False, order=3, mode="constant", cval=0.0)
    return out / out.sum()


def kgrid(size: int, pixscale: float, half: bool = False) -> np.ndarray:
    """|k| in rad/arcsec on the unshifted FFT grid (``half``: the rfft2 half-plane, kx >= 0)."""
    k = 2 * np.pi * scipy.fft.fftfreq(size, d=pixscale)
    kx = 2 * np.pi * scipy.fft.rfftfreq(size, d=pixscale) if half else k
    return np.hypot(kx[None, :], k[:, None])


def high_frequency_filter(k: np.ndarray, fwhm: float) -> np.ndarray:
    """Aniano's f_A: 1 below k_a = 0.9 k_b, a steep exponential roll-off to 0 at k_b = 8 pi / FWHM."""
    k_b = 8 * np.pi / fwhm
    k_a = 0.9 * k_b
    f = np.exp(-((1.8249 * (k - k_a) / (k_b - k_a)) ** 4))
    return np.where(k <= k_a, 1.0, np.where(k <= k_b, f, 0.0))


def low_pass_filter(k: np.ndarray, source_ft: np.ndarray, half: bool = False) -> tuple[np.ndarray, float]:
    """Aniano's phi: cosine taper from k_L = 0.7 k_H to k_H, where |S(k)| first drops below 0.5 %.

    With ``half``, ``k`` and ``source_ft`` are the rfft2 half-plane of an odd-sized grid: every
    column but kx = 0 stands for two of the full plane, and is counted twice in the annuli (the
    profile, hence k_H, is the full plane's).

    Returns
    -------
    phi : numpy.ndarray
        The filter on the same grid as ``k``.
    k_h : float
        The cut-off (rad/arcsec).
    """
    kr = k.ravel()
    vals = np.abs(source_ft.ravel())
    step = np.min(kr[kr > 0])  # the fundamental frequency: annuli one grid step wide
    idx = np.rint(kr / step).astype(int)
    if half:
        w = np.full(k.shape, 2.0)
        w[:, 0] = 1.0
        w = w.ravel()
        counts = np.bincount(idx, w)
        prof = np.bincount(idx, vals * w) / np.maximum(counts, 1)
    else:
        counts = np.bincount(idx)
        prof = np.bincount(idx, vals) / np.maximum(counts, 1)
    centres = np.arange(prof.size) * step
    filled = counts > 0
    prof, centres = prof[filled], centres[filled]
    below = np.nonzero(prof < 0.005 * prof.max())[0]
    k_h = float(centres[below[0]]) if below.size else float(kr.max())
    k_l = 0.7 * k_h
    phi = np.where(k <= k_l, 1.0,
                   np.where(k <= k_h, 0.5 * (1 + np.cos(np.pi * (k - k_l) / (k_h - k_l))), 0.0))
    return phi, k_h
