"""PSFs for kernel making: JWST PSFs from stpsf, users' empirical PSFs, or analytic Gaussian/Moffat PSFs.

stpsf needs its data files. The repository carries the real instrument files it needs in
``PSF/stpsf_data`` (filter curves, pupils, instrument WFE); the telescope OPD maps are not included,
so PSFs are computed with ``pupilopd=None`` (a perfect OTE plus the instrument's own aberrations).
With a full stpsf data download, point ``psf_data_dir`` at it and set ``use_opd = true``.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from astropy.io import fits
from scipy import ndimage

from jwstgal.bands import get_band
from jwstgal.data import data_path
from jwstgal.kernels import gaussian_psf, moffat_psf

log = logging.getLogger(__name__)

DEFAULT_DATA_DIR = data_path("stpsf_data")
#: Smallest default PSF field (arcsec).
MIN_FOV_ARCSEC = 30.0
_GAUSS = re.compile(r"^gauss(\d+(?:\.\d+)?)$", re.IGNORECASE)
_MOFFAT = re.compile(r"^moffat(\d+(?:\.\d+)?)b(\d+(?:\.\d+)?)$", re.IGNORECASE)
#: Widest analytic target (arcsec): far past the coarsest rung anyone convolves to (Herschel 500 um, 36").
MAX_ANALYTIC_FWHM = 120.0


@dataclass(frozen=True)
class PSF:
    """A PSF image with its pixel scale.

    Attributes
    ----------
    name : str
        Band name or analytic name (``gauss0.92``, ``moffat1.0b2.5``).
    data : numpy.ndarray
        Unit-sum image.
    pixscale : float
        Arcsec per pixel.
    origin : str
        How it was made.
    """

    name: str
    data: np.ndarray
    pixscale: float
    origin: str


def is_analytic(name: str) -> bool:
    """Whether a PSF name is an analytic target (``gauss<FWHM>`` or ``moffat<FWHM>b<beta>``)."""
    return bool(_GAUSS.match(name) or _MOFFAT.match(name))


def check_psf_name(name: str) -> str:
    """Validate a PSF/kernel-target name; returns it normalised (bands upper case).

    Raises
    ------
    ValueError
        If it is neither a band nor an analytic name.
    """
    if is_analytic(name):
        m = _GAUSS.match(name) or _MOFFAT.match(name)
        fwhm = float(m.group(1))
        if not 0.01 <= fwhm <= MAX_ANALYTIC_FWHM:
            msg = (f"analytic target {name!r}: FWHM {fwhm:g}\" is outside 0.01-{MAX_ANALYTIC_FWHM:g}\" "
                   "(a kernel to a PSF narrower than the band's cannot be made, and one wider than "
                   "the field is meaningless)")
            raise ValueError(msg)
        if m.re is _MOFFAT and not 1.0 < float(m.group(2)) <= 20.0:
            msg = f"analytic target {name!r}: Moffat beta {float(m.group(2)):g} is outside (1, 20]"
            raise ValueError(msg)
        return name.lower()
    try:
        return get_band(name).name
    except KeyError as err:
        msg = (f"{err.args[0]}; analytic targets are written gauss<FWHM arcsec> (e.g. gauss0.92) "
               "or moffat<FWHM>b<beta> (e.g. moffat1.0b2.5)")
        raise ValueError(msg) from None


def analytic_psf(name: str, pixscale: float) -> PSF:
    """An analytic PSF from its name, sampled at ``pixscale``."""
    if m := _GAUSS.match(name):
        fwhm = float(m.group(1))
        return PSF(name.lower(), gaussian_psf(fwhm, pixscale), pixscale, f"Gaussian FWHM {fwhm}\"")
    if m := _MOFFAT.match(name):
        fwhm, beta = float(m.group(1)), float(m.group(2))
        return PSF(name.lower(), moffat_psf(fwhm, beta, pixscale), pixscale,
                   f"Moffat FWHM {fwhm}\" beta {beta}")
    msg = f"not an analytic PSF name: {name!r}"
    raise ValueError(msg)


def band_gaussian_psf(band: str, oversample: int = 4) -> PSF:
    """A Gaussian stand-in for a band's PSF (its tabulated FWHM), oversampled."""
    b = get_band(band)
    pix = b.pixel_scale / oversample
    return PSF(b.name, gaussian_psf(b.fwhm_arcsec, pix), pix, f"Gaussian FWHM {b.fwhm_arcsec:.4f}\"")


#: The telescope pupil (in the stpsf data) the synthetic wavefront error is drawn on.
PUPIL_FILE = "jwst_pupil_RevW_npix1024.fits.gz"
#: Slope of the synthetic wavefront error's power spectrum (PSD ~ f^-slope): most of the error at
#: low and mid spatial frequencies, as polished and phased mirror segments have it.
OTE_PSD_SLOPE = 2.5


def synthetic_ote_opd(data_dir: Path, rms_nm: float, seed: int = 0) -> fits.HDUList:
    """A random telescope wavefront error of ``rms_nm`` over the JWST pupil, as an stpsf OPD.

    An approximation for when no measured OTE OPD map is at hand (offline, or before a wavefront
    sensing of the epoch was published): a Gaussian random field with a power-law spectrum
    (:data:`OTE_PSD_SLOPE`), scaled to ``rms_nm`` over the illuminated pupil. It has the measured
    on-orbit error's size (70-80 nm rms is typical), not its pattern: it widens the PSF's core and
    moves energy into its wings as the real error does on average.
    """
    with fits.open(Path(data_dir) / PUPIL_FILE) as h:
        pupil = np.asarray(h[0].data) > 0
        scale = float(h[0].header["PUPLSCAL"])
    n = pupil.shape[0]
    f2 = np.fft.fftfreq(n)[:, None] ** 2 + np.fft.fftfreq(n)[None, :] ** 2
    amp = np.zeros_like(f2)
    amp[f2 > 0] = f2[f2 > 0] ** (-OTE_PSD_SLOPE / 4)        # sqrt of PSD ~ f^-slope
    noise = np.random.default_rng([7, seed]).standard_normal((n, n))
    opd = np.fft.ifft2(np.fft.fft2(noise) * amp).real
    opd -= opd[pupil].mean()
    opd *= rms_nm * 1e-9 / opd[pupil].std()
    opd[~pupil] = 0.0
    hdu = fits.PrimaryHDU(opd.astype(np.float32))
    hdu.header["PUPLSCAL"] = (scale, "meters / pixel")
    hdu.header["BUNIT"] = "meter"
    hdu.header["WFE_RMS"] = (rms_nm, "[nm] synthetic OTE wavefront error rms")
    return fits.HDUList([hdu])


def stpsf_psf(band: str, *, oversample: int = 4, fov_arcsec: float | None = None,
              data_dir: Path | None = None, use_opd: bool = False, nlambda: int | None = None,
              extension: str = "OVERDIST", ote_wfe_nm: float = 0.0, ote_wfe_seed: int = 0) -> PSF:
    """A JWST PSF computed by stpsf.

    Parameters
    ----------
    band : str
        NIRCam or MIRI band.
    oversample : int
        Oversampling relative to the detector pixels.
    fov_arcsec : float, optional
        Field of view; default 30 FWHM and at least :data:`MIN_FOV_ARCSEC` (a 5" field left 1-2 %
        of NIRCam's and 2-6 % of MIRI's flux outside, so kernels matched truncated PSFs).
    data_dir : pathlib.Path, optional
        stpsf data directory (``STPSF_PATH``); default the repository's ``PSF/stpsf_data``.
    use_opd : bool
        Use stpsf's default telescope OPD map (needs the full stpsf data).
    nlambda : int, optional
        Wavelengths across the band (stpsf's default if None).
    extension : str
        Which stpsf product: OVERSAMP/OVERDIST (oversampled, without/with distortion).
    ote_wfe_nm, ote_wfe_seed : float, int
        Without ``use_opd``: a synthetic telescope wavefront error of this rms
        (:func:`synthetic_ote_opd`; 0 = a perfect telescope).

    Returns
    -------
    PSF
    """
    b = get_band(band)
    data_dir = Path(data_dir or DEFAULT_DATA_DIR)
    if not (data_dir / "version.txt").is_file():
        msg = (f"stpsf data not found in {data_dir} (no version.txt); set psf_data_dir in local.toml "
               "or use psf_source = 'gaussian'")
        raise FileNotFoundError(msg)
    os.environ["STPSF_PATH"] = str(data_dir)
    import stpsf

    inst = stpsf.MIRI() if b.instrument == "miri" else stpsf.NIRCam()
    inst.filter = b.filter
    if b.instrument == "nircam" and b.pupil not in (None, "CLEAR"):
        inst.pupil_mask = b.pupil
    if not use_opd:
        inst.pupilopd = synthetic_ote_opd(data_dir, ote_wfe_nm, ote_wfe_seed) if ote_wfe_nm > 0 else None
    fov = fov_arcsec or max(MIN_FOV_ARCSEC, 30 * b.fwhm_arcsec)
    kwargs = {"oversample": oversample, "fov_arcsec": fov}
    if nlambda:
        kwargs["nlambda"] = nlambda
    hdul = inst.calc_psf(**kwargs)
    data = np.asarray(hdul[extension].data, float)
    pix = float(hdul[extension].header["PIXELSCL"])
    ote = "" if use_opd else (f" (synthetic OTE WFE {ote_wfe_nm:g} nm)" if ote_wfe_nm > 0
                              else " (no OTE OPD)")
    return PSF(b.name, data / data.sum(), pix, f"stpsf {stpsf.__version__} {extension}{ote}")


#: Header keys that may hold an empirical PSF's pixel scale (arcsec), in order of preference.
PIXEL_SCALE_KEYS = ("PIXELSCL", "PIXSCALE", "PIXSCL", "PIXAR_A2")
#: Largest fraction of non-finite pixels an empirical PSF may have (they read as 0).
MAX_BLANK_FRACTION = 0.1


def _pixel_scale(header: fits.Header) -> float | None:
    """Arcsec per pixel from a PSF file's header (a scale keyword, else its celestial WCS)."""
    import warnings

    from astropy.wcs import WCS, FITSFixedWarning
    from astropy.wcs.utils import proj_plane_pixel_scales

    for key in PIXEL_SCALE_KEYS:
        value = header.get(key)
        if isinstance(value, int | float) and value > 0:
            return float(np.sqrt(value)) if key == "PIXAR_A2" else float(value)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FITSFixedWarning)
        try:
            wcs = WCS(header).celestial
        except (ValueError, KeyError, MemoryError):
            return None
    if wcs.naxis != 2 or not wcs.has_celestial:
        return None
    scales = proj_plane_pixel_scales(wcs) * 3600.0
    return float(np.sqrt(scales[0] * scales[1])) if np.all(scales > 0) else None


def centre_psf(data: np.ndarray, radius: float) -> tuple[np.ndarray, tuple[float, float]]:
    """A PSF on an odd square grid with its centroid on the central pixel, and the shift applied.

    The centroid is the flux-weighted mean position within ``radius`` pixels of itself (found by
    iterating from the brightest pixel: the core, not the wings' noise); the image is padded to an
    odd square and shifted by a Fourier phase ramp (flux and shape kept, no interpolation smoothing).
    """
    from scipy.ndimage import center_of_mass

    n = max(data.shape) | 1
    sq = np.zeros((n, n))
    y0, x0 = (n - data.shape[0]) // 2, (n - data.shape[1]) // 2
    sq[y0:y0 + data.shape[0], x0:x0 + data.shape[1]] = data
    cy, cx = (float(v) for v in np.unravel_index(np.argmax(sq), sq.shape))
    yy, xx = np.indices(sq.shape)
    for _ in range(10):         # the circle follows the centroid: no pull towards the peak pixel
        core = np.where((yy - cy) ** 2 + (xx - cx) ** 2 <= radius**2, np.clip(sq, 0, None), 0.0)
        ny, nx = center_of_mass(core)
        done = abs(ny - cy) < 1e-4 and abs(nx - cx) < 1e-4
        cy, cx = float(ny), float(nx)
        if done:
            break
    dy, dx = (n - 1) / 2 - cy, (n - 1) / 2 - cx
    fy, fx = np.fft.fftfreq(n)[:, None], np.fft.fftfreq(n)[None, :]
    shifted = np.fft.ifft2(np.fft.fft2(sq) * np.exp(-2j * np.pi * (fy * dy + fx * dx))).real
    return shifted, (float(dy), float(dx))


def read_empirical_psf(path: Path, band: str) -> PSF:
    """A user's PSF file (e.g. stacked from stars in a mosaic), made ready for kernels.

    Accepted as careful users make them: the first 2-D image of the file, at any pixel scale
    (``PIXELSCL``, ``PIXSCALE``, ``PIXSCL`` in arcsec, ``PIXAR_A2``, or the celestial WCS), centred or
    not (its core's centroid is moved to the central pixel of an odd square), normalised or not (it
    is scaled to unit sum); non-finite pixels (at most 10 %) read as 0.

    Raises
    ------
    ValueError
        Naming the file and what is wrong with it.
    """
    import hashlib

    from jwstgal.layout import not_a_regular_file

    if why := not_a_regular_file(path):
        raise ValueError(f"empirical PSF {path}: {why}")
    try:
        with fits.open(path, memmap=False) as h:
            found = next(((np.asarray(np.squeeze(u.data), float), u.header.copy()) for u in h
                          if u.data is not None and np.squeeze(u.data).ndim == 2), None)
    except (OSError, ValueError, TypeError) as err:
        raise ValueError(f"empirical PSF {path}: not a readable FITS file ({err})") from None
    if found is None:
        raise ValueError(f"empirical PSF {path}: no 2-D image in any HDU")
    data, header = found
    if min(data.shape) < 5:
        raise ValueError(f"empirical PSF {path}: a {data.shape[1]}x{data.shape[0]} image is too small")
    blank = ~np.isfinite(data)
    if blank.mean() > MAX_BLANK_FRACTION:
        raise ValueError(f"empirical PSF {path}: {blank.mean():.0%} of its pixels are not finite "
                         f"(at most {MAX_BLANK_FRACTION:.0%})")
    data = np.where(blank, 0.0, data)
    pix = _pixel_scale(header)
    if pix is None:
        raise ValueError(f"empirical PSF {path}: no pixel scale (set one of "
                         f"{', '.join(PIXEL_SCALE_KEYS[:3])} in arcsec, or a celestial WCS)")
    if not data.sum() > 0:
        raise ValueError(f"empirical PSF {path}: its values sum to {data.sum():.3g}, not a PSF")
    fwhm_pix = get_band(band).fwhm_arcsec / pix
    centred, _ = centre_psf(data, radius=max(2.0, 1.5 * fwhm_pix))
    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:12]
    return PSF(get_band(band).name, centred / centred.sum(), pix, f"empirical {path.name} {digest}")


def write_psf(psf: PSF, path: Path, header_extra: dict | None = None) -> Path:
    """Write a PSF as FITS (``PIXELSCL`` in arcsec, TAN WCS centred on the PSF)."""
    from jwstgal.provenance import atomic_path, stamp_header

    n = psf.data.shape[0]
    h = fits.Header()
    h["PSFNAME"] = psf.name
    h["PIXELSCL"] = (psf.pixscale, "arcsec / pixel")
    h["ORIGIN"] = psf.origin[:68]
    h["CTYPE1"], h["CTYPE2"] = "RA---TAN", "DEC--TAN"
    h["CRPIX1"] = h["CRPIX2"] = (n + 1) / 2
    h["CRVAL1"] = h["CRVAL2"] = 0.0
    h["CDELT1"], h["CDELT2"] = -psf.pixscale / 3600, psf.pixscale / 3600
    for k, v in (header_extra or {}).items():
        h[k] = v
    stamp_header(h, step="psf", params={"name": psf.name, "origin": psf.origin})
    with atomic_path(path) as tmp:
        fits.PrimaryHDU(psf.data.astype(np.float32), header=h).writeto(tmp)
    return path


def read_psf(path: Path) -> PSF:
    """Read a PSF (or kernel) FITS file written by :func:`write_psf`."""
    with fits.open(path) as h:
        hdr = h[0].header
        return PSF(hdr.get("PSFNAME", path.stem), np.asarray(h[0].data, float),
                   float(hdr["PIXELSCL"]), hdr.get("ORIGIN", ""))


def psf_file_problem(path: Path, *, kernel: bool = False) -> str:
    """Why a PSF or kernel FITS file cannot be used ('' if it can).

    It must be a regular file that reads whole, hold one square 2-D image of size >= 3 with finite
    values and a positive ``PIXELSCL``; a kernel must also be of odd size, sum to 1 (within 1 %)
    and name its source and target (``KSOURCE``/``KTARGET``), a PSF must hold positive flux. A 1x1 kernel
    would hand back the unconvolved mosaic labelled as the rung, a NaN one an all-NaN product.
    """
    import stat
    import warnings

    try:
        if not stat.S_ISREG(path.stat().st_mode):
            return "not a regular file"
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            with fits.open(path, memmap=False) as h:
                hdr, data = h[0].header, h[0].data
                data = None if data is None else np.asarray(data, float)
    except (OSError, ValueError, TypeError) as err:        # truncated, not FITS, garbage header
        return f"not a readable FITS file ({err})"
    if cut := [w for w in caught if "truncated" in str(w.message)]:
        return f"not a readable FITS file (truncated: {cut[0].message})"
    if data is None or data.ndim != 2 or data.shape[0] != data.shape[1]:
        return f"no square 2-D image (shape {None if data is None else data.shape})"
    if data.shape[0] < 3 or (kernel and data.shape[0] % 2 == 0):
        return (f"a {data.shape[0]}x{data.shape[1]} image: a {'kernel is an odd' if kernel else 'PSF is a'} "
                "size >= 3")
    if not np.isfinite(data).all():
        return f"{int((~np.isfinite(data)).sum())} non-finite values"
    try:
        pix = float(hdr["PIXELSCL"])
    except (KeyError, ValueError, TypeError):
        return "no numeric PIXELSCL (arcsec / pixel) in its header"
    if not (np.isfinite(pix) and pix > 0):
        return f"PIXELSCL = {pix} is not a pixel scale"
    total = float(data.sum())
    if kernel:
        if not (hdr.get("KSOURCE") and hdr.get("KTARGET")):
            return "no KSOURCE/KTARGET in its header (not a kernel of make_kernels.py)"
        if not abs(total - 1.0) <= 0.01:
            return f"its values sum to {total:.6g}, not 1: a kernel must conserve flux"
    elif not total > 0:
        return f"its values sum to {total:.6g}: a PSF holds positive flux"
    return ""


def pixel_integrated(over: np.ndarray, oversample: int, half: int, phase: tuple[float, float] = (0.0, 0.0),
                     spline: np.ndarray | None = None) -> np.ndarray:
    """An oversampled PSF integrated over detector pixels.

    Parameters
    ----------
    over : numpy.ndarray
        Unit-sum PSF sampled ``oversample`` times finer than the detector, centred on the centre of
        the array (``(n - 1) / 2``).
    oversample : int
        Oversampling factor.
    half : int
        The result is ``2 half + 1`` pixels square.
    phase : tuple of float
        ``(dx, dy)``: where the star is, in pixels from the middle pixel's centre.
    spline : numpy.ndarray, optional
        ``over``'s cubic-spline coefficients (:func:`scipy.ndimage.spline_filter`), when many phases
        are drawn from one PSF.

    Returns
    -------
    numpy.ndarray
        Each pixel's share of the star's flux.
    """
    n = 2 * half + 1
    cy, cx = (np.asarray(over.shape) - 1) / 2
    # over-pixel q of the result's grid is centred (q + 0.5) / os - half - 0.5 - phase pixels from
    # the star: in the PSF's array, at c + q + 0.5 - os (half + 0.5 + phase)
    oy = cy + 0.5 - oversample * (half + 0.5 + phase[1])
    ox = cx + 0.5 - oversample * (half + 0.5 + phase[0])
    m = n * oversample
    if np.isclose(oy, round(oy)) and np.isclose(ox, round(ox)):
        iy, ix = round(oy), round(ox)
        pad = max(0, -iy, -ix, iy + m - over.shape[0], ix + m - over.shape[1])
        src = np.pad(over, pad) if pad else over
        fine = src[iy + pad:iy + pad + m, ix + pad:ix + pad + m]
    else:
        # a cubic spline moves a well-sampled image by a fraction of a sample to well under 1e-3 of
        # its peak
        fine = ndimage.affine_transform(over if spline is None else spline, [1.0, 1.0], offset=[oy, ox],
                                        output_shape=(m, m), order=3, mode="constant", cval=0.0,
                                        prefilter=spline is None)
    return fine.reshape(n, oversample, n, oversample).sum(axis=(1, 3))
