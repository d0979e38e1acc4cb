"""Convolved products: a band's mosaic taken to every rung of the resolution ladder, as files.

The arithmetic lives in :mod:`jwstgal.convolve` (tiled FFT convolution, reprojection) and
:mod:`jwstgal.ladder` (which stages reach a rung); this module reads mosaics and kernels, applies
the stages and writes ``convolved/<product>_i2d_conv_<PSF>.fits`` (SCI, ERR) with the PSF and
grid recorded (``PSF``, ``BMAJ``/``BMIN``/``BPA`` for Gaussians, ``JG_GRID``) and provenance.
"""

from __future__ import annotations

import logging
import weakref
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS

from jwstgal.convolve import convolve_image, image_pixel_scale, reproject_image
from jwstgal.errors import InputNotFoundError
from jwstgal.kernels import circularise, pixel_centre_kernel, resample_kernel, resample_psf, rotate_kernel
from jwstgal.ladder import Rung, block_average, block_wcs, gaussian_fwhm, gaussian_kernel
from jwstgal.layout import kernel_source_psf
from jwstgal.provenance import hash_params, stamp_header
from jwstgal.psfs import read_psf
from jwstgal.settings import check_path_component
from jwstgal.tiled_io import FitsImage, ScratchImage, remove_scratch, scratch_dir, write_image_file

log = logging.getLogger(__name__)


@dataclass
class Mosaic:
    """A mosaic: surface brightness (NaN where nothing contributed), errors, WCS.

    ``sci`` and ``err`` are arrays or, as :func:`read_mosaic` gives them, images read from the file
    tile by tile (:class:`jwstgal.tiled_io.FitsImage`). Results at the mosaic's own pixel are kept in
    scratch files (:class:`jwstgal.tiled_io.ScratchImage`) in a folder under ``scratch`` (the system's
    temporary folder if None), removed by :meth:`close` or when the mosaic is garbage-collected.
    """

    sci: Any
    err: Any
    wcs: WCS
    bunit: str
    primary: fits.Header
    path: Path
    #: position angle (deg E of N) of the detector y axis on this north-up mosaic, if known
    roll: float | None = None
    #: results of the first (kernel) stage, by kernel file: shared by the rungs that start alike
    stage1: dict[str, tuple[Any, Any, dict[str, Any]]] = field(default_factory=dict)
    #: folder under which the scratch folder is made
    scratch: Path | None = None
    _scratch_dir: Path | None = field(default=None, init=False, repr=False)

    @property
    def pixscale(self) -> float:
        """Pixel scale (arcsec)."""
        return image_pixel_scale(self.wcs)

    def scratch_image(self, name: str) -> ScratchImage:
        """A new scratch image of the mosaic's shape."""
        if self._scratch_dir is None:
            self._scratch_dir = scratch_dir(self.scratch, ".jwstgal-conv-")
            weakref.finalize(self, remove_scratch, self._scratch_dir)
        return ScratchImage(self._scratch_dir / f"{name}.f32", tuple(self.sci.shape))

    def __enter__(self) -> Mosaic:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the files read and remove the scratch files (the mosaic is unusable after)."""
        for sci, err, _ in self.stage1.values():
            for img in (sci, err):
                if isinstance(img, ScratchImage):
                    img.close()
        self.stage1.clear()
        for img in (self.sci, self.err):
            if isinstance(img, FitsImage):
                img.close()
        if self._scratch_dir is not None:
            remove_scratch(self._scratch_dir)


def read_mosaic(path: Path, scratch: Path | None = None) -> Mosaic:
    """Open the SCI (and ERR) of a mosaic, to be read tile by tile.

    Zeros (no input, as resample writes them) read as NaN. ``scratch``: where the scratch folder
    goes (see :class:`Mosaic`).
    """
    with fits.open(path, memmap=False, lazy_load_hdus=True) as h:
        hdr = h["SCI"].header.copy()
        primary = h[0].header.copy()
        has_err = "ERR" in h
    sci = FitsImage(path, "SCI", zero_is_nan=True)
    err = FitsImage(path, "ERR") if has_err else None
    return Mosaic(sci, err, WCS(hdr).celestial, str(hdr.get("BUNIT", "")), primary, path,
                  detector_roll(primary, hdr), scratch=scratch)


def detector_roll(primary: fits.Header, sci: fits.Header) -> float | None:
    """Position angle (deg E of N) of the detector's y axis on the sky.

    ``ROLL_REF``, else ``PA_V3`` plus the aperture's V3IdlYAngle (``V3I_YANG``, else from the SIAF
    via pysiaf); None if unknown.
    """
    for h in (sci, primary):
        if h.get("ROLL_REF") is not None:
            return float(h["ROLL_REF"])
    pa_v3 = sci.get("PA_V3", primary.get("PA_V3"))
    if pa_v3 is None:
        return None
    yang = sci.get("V3I_YANG", primary.get("V3I_YANG"))
    if yang is None:
        try:
            import pysiaf

            inst = str(primary.get("INSTRUME", "")).upper()
            det = str(primary.get("DETECTOR", "")).upper()
            det = {"NRCALONG": "NRCA5", "NRCBLONG": "NRCB5"}.get(det, det)   # SIAF's names
            aperture = "MIRIM_FULL" if inst == "MIRI" else f"{det}_FULL"
            yang = pysiaf.Siaf("NIRCam" if inst == "NIRCAM" else inst)[aperture].V3IdlYAngle
        except Exception as err:  # noqa: BLE001 - no SIAF entry: the roll is unknown (to_rung says so
            log.debug("no V3IdlYAngle for %s %s (%s)", inst, det, err)  # where it matters)
            return None
    return float(pa_v3) + float(yang)


def kernel_is_refused(kernel_file: Path, allow_unsafe: bool) -> str:
    """Why a kernel must not be applied ('' if it may): Aniano's 'unsafe' class (W- > 0.5)."""
    h = fits.getheader(kernel_file)
    if h.get("SAFETY") == "unsafe" and not allow_unsafe:
        return (f"kernel {kernel_file} is unsafe (W- = {h.get('KERN_WM', float('nan')):.3g} > 0.5: "
                "it amplifies noise); not applied (set [convolve] allow_unsafe = true to apply it anyway)")
    return ""


SAMPLINGS = ("auto", "pixel_centre", "band_limited")


def auto_sampling(psf_file: Path) -> str:
    """The kernel sampling that is exact for the kind of PSF a kernel was built from.

    stpsf PSFs are band-limited by the telescope's aperture, and the band-limited kernel matches
    them even where the mosaic undersamples them (F300M -> F360M at 0.063": 0.01 % in FWHM at the
    pixel centre, ~0.2 % anywhere in the pixel; ``bench/bench_kernel_sampling.py``). Analytic PSFs
    (Gaussians) are not band-limited: there the band-limited kernel rings and loses 2-3 % of a
    compact source's aperture flux, the pixel-centre kernel < 0.5 %. Without the PSF file:
    band-limited.
    """
    if not psf_file.is_file():
        log.warning("%s missing: kernel brought to the mosaic pixel band-limited", psf_file)
        return "band_limited"
    origin = str(fits.getheader(psf_file).get("ORIGIN", ""))
    return "band_limited" if origin.lower().startswith("stpsf") else "pixel_centre"


def kernel_on_mosaic(kernel_file: Path, mosaic: Mosaic, sampling: str = "auto"
                     ) -> tuple[np.ndarray, float, fits.Header, str]:
    """A kernel file brought to a mosaic's orientation and pixel.

    A pypher kernel (anisotropic) is rotated by the mosaic's detector roll. ``sampling``:
    ``pixel_centre`` (:func:`jwstgal.kernel_grids.pixel_centre_kernel`, from the PSF the kernel was
    built from, ``psfs/<KSOURCE>.fits`` beside the kernels), ``band_limited``
    (:func:`jwstgal.kernel_grids.resample_kernel`, from the kernel alone) or ``auto``
    (:func:`auto_sampling`).

    Returns
    -------
    kernel : numpy.ndarray
    angle : float
        Rotation applied (deg).
    header : astropy.io.fits.Header
        The kernel file's.
    sampling : str
        The sampling applied.
    """
    if sampling not in SAMPLINGS:
        msg = f"kernel sampling {sampling!r}: allowed are {', '.join(map(repr, SAMPLINGS))}"
        raise ValueError(msg)
    kh = fits.getheader(kernel_file)
    kern = fits.getdata(kernel_file).astype(float)
    kpix = float(kh["PIXELSCL"])
    angle = 0.0
    pypher = kh.get("KMETHOD") == "pypher"
    if pypher:                              # anisotropic: into the mosaic's orientation
        if mosaic.roll is None:
            log.warning("%s: detector roll unknown; pypher kernel %s applied unrotated",
                        mosaic.path, kernel_file.name)
        else:
            angle = mosaic.roll
            kern = rotate_kernel(kern, angle)
    try:                                    # a header value becomes a file name: one plain component
        source = check_path_component(str(kh.get("KSOURCE", "")), f"{kernel_file}: KSOURCE")
    except ValueError as err:
        raise InputNotFoundError(str(err)) from None
    psf_file = kernel_source_psf(kernel_file, source)
    if sampling == "auto":
        sampling = auto_sampling(psf_file)
    if sampling == "band_limited":
        return resample_kernel(kern, kpix, mosaic.pixscale), angle, kh, sampling
    if not psf_file.is_file():
        msg = (f"kernel {kernel_file}: the PSF it was built from, {psf_file}, is missing (run "
               "make_kernels.py, or set [convolve] kernel_sampling = \"band_limited\")")
        raise InputNotFoundError(msg)
    psf = read_psf(psf_file)
    src = resample_psf(psf.data, psf.pixscale, kpix, kern.shape[0])
    src = rotate_kernel(src, angle) if pypher else circularise(src)   # as the kernel was built
    return pixel_centre_kernel(kern, src, kpix, mosaic.pixscale), angle, kh, sampling


def to_rung(mosaic: Mosaic, rung: Rung, kernel_file: Path | None, *, block_size: int = 2048,
            grid: Path | None = None, min_weight: float = 0.5, sampling: str = "auto"
            ) -> tuple[np.ndarray, np.ndarray | None, WCS, dict[str, Any]]:
    """Take a mosaic to a rung of the ladder (in memory).

    Parameters
    ----------
    mosaic : Mosaic
        The band's mosaic (its first-stage results are cached on it).
    rung : Rung
        The stages (from :func:`jwstgal.ladder.plan_rung`).
    kernel_file : pathlib.Path or None
        Kernel from the band to ``rung.kernel_target``; None when there is none to apply.
    block_size : int
        Tile size of the FFT convolution.
    grid : pathlib.Path, optional
        Mosaic whose grid the result is reprojected onto (``rung.reproject_band``).
    min_weight : float
        Pixels whose valid kernel weight is below this are NaN (near edges and holes); anchoring
        asks for ~1, so that every pixel it fits has the full resolution.
    sampling : str
        How the kernel is brought to the mosaic's pixel (:func:`kernel_on_mosaic`).

    Returns
    -------
    sci, err : numpy.ndarray or jwstgal.tiled_io.ScratchImage
        At the mosaic's own pixel (no block-averaging, no reprojection) the kernel stage's scratch
        images (owned by ``mosaic``); otherwise arrays. ``numpy.asarray`` turns either into an array.
    wcs : astropy.wcs.WCS
    params : dict
        What was applied (for the header).
    """
    params: dict[str, Any] = {"target": rung.target, "grid": rung.grid}
    if kernel_file is None:
        sci, err = mosaic.sci, mosaic.err
    else:
        cache = f"{kernel_file}:{min_weight}:{sampling}"
        if cache not in mosaic.stage1:
            kern, angle, kh, used = kernel_on_mosaic(kernel_file, mosaic, sampling)
            n = len(mosaic.stage1)
            res = convolve_image(mosaic.sci, kern, err=mosaic.err, block=block_size,
                                 min_weight=min_weight, out=mosaic.scratch_image(f"stage{n}_sci"),
                                 out_err=mosaic.scratch_image(f"stage{n}_err") if mosaic.err is not None
                                 else None)
            mosaic.stage1[cache] = (res.data, res.err, {
                "kernel": kernel_file.name, "kernel_method": kh.get("KMETHOD"),
                "kernel_D": kh.get("KERN_D"), "kernel_W_minus": kh.get("KERN_WM"),
                "kernel_size": kern.shape[0], "kernel_rotation_deg": round(angle, 4),
                "kernel_sampling": used})
        sci, err, kparams = mosaic.stage1[cache]
        params.update(kparams)
    wcs = mosaic.wcs
    if rung.block > 1:
        sci, err = block_average(sci, rung.block, err)
        wcs = block_wcs(wcs, rung.block)
        pix = image_pixel_scale(wcs)
        g = gaussian_kernel(rung.gauss_fwhm, pix)
        res = convolve_image(sci, g, err=err, block=block_size, min_weight=min_weight)
        sci, err = res.data, res.err
        params.update({"block": rung.block, "gauss_fwhm": round(rung.gauss_fwhm, 5),
                       "pixscale": round(pix, 5)})
    if rung.reproject_band and grid is not None:
        gh = fits.getheader(grid, "SCI")
        gw = WCS(gh).celestial
        shape = (gh["NAXIS2"], gh["NAXIS1"])
        sci = reproject_image(np.asarray(sci), wcs, gw, shape)   # (reproject needs the whole input)
        err = reproject_image(np.asarray(err), wcs, gw, shape) if err is not None else None
        wcs = gw
        params["reproject_onto"] = grid.name
    return sci, err, wcs, params


def psf_cards(target: str) -> dict[str, tuple[Any, str]]:
    """Header cards describing a rung's PSF (``BMAJ``/``BMIN``/``BPA`` in degrees for Gaussians)."""
    cards: dict[str, tuple[Any, str]] = {"PSF": (target, "PSF of this image after convolution")}
    fwhm = gaussian_fwhm(target)
    if fwhm is not None:
        cards["BMAJ"] = (fwhm / 3600, "[deg] beam major axis (FWHM)")
        cards["BMIN"] = (fwhm / 3600, "[deg] beam minor axis (FWHM)")
        cards["BPA"] = (0.0, "[deg] beam position angle")
    return cards


def write_convolved(out: Path, mosaic: Mosaic, sci: Any, err: Any, wcs: WCS,
                    rung: Rung, params: dict[str, Any], *, config_hash: str = "", key: str = "") -> Path:
    """Write one rung's product atomically (SCI, ERR; PSF, grid and provenance in the headers).

    ``sci`` and ``err`` may be arrays or scratch images (written a band of rows at a time).
    """
    hdr = wcs.to_header()
    hdr["BUNIT"] = mosaic.bunit
    for k, v in psf_cards(rung.target).items():
        hdr[k] = v
    hdr["JG_GRID"] = (rung.grid, "grid of this image")
    if params.get("kernel_rotation_deg"):
        hdr["JG_KROT"] = (params["kernel_rotation_deg"], "[deg] pypher kernel rotated CCW by this")
    if params.get("kernel_sampling"):
        hdr["JG_KSAMP"] = (params["kernel_sampling"], "how the kernel was put on this pixel")
    primary = mosaic.primary.copy()
    stamp_header(primary, step="conv", params={"source": mosaic.path.name, **params},
                 config_hash=config_hash)
    primary["JG_CKEY"] = key
    images = [("SCI", hdr, sci)] + ([("ERR", hdr, err)] if err is not None else [])
    return write_image_file(out, primary, images)


def product_key(i2d: Path, kernel_file: Path | None, rung: Rung, settings: dict[str, Any],
                grid: Path | None, *, legacy: bool = False) -> str:
    """Hash of what a convolved product depends on (input file, kernel, stages, settings).

    The reprojection grid enters by its file name, so a working tree moved elsewhere keeps its
    products; ``legacy`` gives the key of earlier versions (the grid's absolute path), which a
    product made by them in place still matches.
    """
    st = i2d.stat()
    where = (str(grid) if legacy else grid.name) if grid else None
    return hash_params([i2d.name, st.st_size, int(st.st_mtime),
                        fits.getheader(kernel_file).get("JG_KERN") if kernel_file else None,
                        asdict(rung), settings, where])


def product_current(out: Path, i2d: Path, kernel_file: Path | None, rung: Rung, settings: dict[str, Any],
                    grid: Path | None) -> bool:
    """Whether the convolved product ``out`` exists and was made from these inputs."""
    if not out.is_file():
        return False
    have = fits.getheader(out).get("JG_CKEY")
    return have == product_key(i2d, kernel_file, rung, settings, grid) or (
        grid is not None and have == product_key(i2d, kernel_file, rung, settings, grid, legacy=True))


def need_kernel(kernel_file: Path) -> Path:
    """``kernel_file`` if it exists, else an error saying how to make it."""
    if not kernel_file.is_file():
        msg = f"kernel {kernel_file} not found; run make_kernels.py first"
        raise InputNotFoundError(msg)
    return kernel_file
