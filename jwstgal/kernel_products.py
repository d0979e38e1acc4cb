"""Files around the kernels: generate PSFs for the configured bands, write kernels with provenance.

Layout under ``psf_dir`` (``PSF/`` by default)::

    psfs/<BAND>.fits                     band PSFs (stpsf, Gaussian, or a user's), PIXELSCL in arcsec
    psfs/optics/<BAND>.fits              with [kernels] pixel_response: the model without it
    empirical/<file>                     users' empirical PSFs ([kernels] psf_files), read-only
    kernels/<method>/<SOURCE>_to_<TARGET>.fits (+ .png diagnostic)

A kernel file is rebuilt only when its parameters (recorded as a hash in ``JG_KERN``) change.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Protocol

import numpy as np
from astropy.io import fits
from scipy.signal import fftconvolve

from jwstgal.kernels import (
    KernelResult,
    fast_odd,
    make_aniano_kernel,
    make_pypher_kernel,
    radial_profile,
    resample_psf,
)
from jwstgal.layout import cached_kernel_path, empirical_psf_path, kernel_path, optics_psf_path, psf_path
from jwstgal.logs import bar_disabled
from jwstgal.pixel_response import PixelResponse, add_pixel_response
from jwstgal.provenance import atomic_path, hash_params, stamp_header
from jwstgal.psfs import (
    MIN_FOV_ARCSEC,
    PSF,
    analytic_psf,
    band_gaussian_psf,
    is_analytic,
    psf_file_problem,
    read_empirical_psf,
    read_psf,
    stpsf_psf,
    write_psf,
)

log = logging.getLogger(__name__)


class KernelSettings(Protocol):
    """What the kernel files read of ``[kernels]`` (:class:`jwstgal.steps.kernels.KernelsConfig`)."""

    targets: list[str]
    methods: list[str]
    psf_source: str
    oversample: int
    psf_product: str
    nlambda: int
    use_opd: bool
    ote_wfe_nm: float
    reg_fact: float
    psf_files: dict[str, str]
    pixel_response: bool

    def response(self, band: str) -> PixelResponse | None:
        """The pixel response a band's model PSF is widened by, if any."""


def _psf_file(band: str, cfg: KernelSettings, psf_dir: Path, optics: bool = False) -> tuple[Path, str]:
    """Where a band's PSF is cached and the key its header must carry to be current.

    ``optics``: the model without the mosaics' pixel response (the PSF itself when there is none).
    """
    if band in cfg.psf_files:       # a user's file: its content is the key
        src = empirical_psf_path(psf_dir, cfg.psf_files[band])
        digest = hashlib.sha256(src.read_bytes()).hexdigest() if src.is_file() else "missing"
        return psf_path(psf_dir, band), hash_params({"band": band, "empirical": digest})
    params = {"band": band, "source": cfg.psf_source, "oversample": cfg.oversample,
              "nlambda": cfg.nlambda, "use_opd": cfg.use_opd, "min_fov": MIN_FOV_ARCSEC,
              "product": cfg.psf_product}
    if cfg.ote_wfe_nm > 0 and not cfg.use_opd:      # absent at 0: PSFs made before stay current
        params["ote_wfe_nm"] = cfg.ote_wfe_nm
    response = None if optics else cfg.response(band)
    if response is not None:
        return psf_path(psf_dir, band), hash_params({**params, "pixel_response": response.widths})
    path = optics_psf_path(psf_dir, band) if optics and cfg.response(band) else psf_path(psf_dir, band)
    return path, hash_params(params)


def psf_file_problems(cfg: KernelSettings, psf_dir: Path) -> list[str]:
    """Why each configured empirical PSF file (``[kernels] psf_files``) cannot be used."""
    out = []
    for band, name in cfg.psf_files.items():
        try:
            read_empirical_psf(empirical_psf_path(psf_dir, name), band)
        except ValueError as err:
            out.append(f"[kernels] psf_files.{band}: {err}")
    return out


def cached_psf(band: str, cfg: KernelSettings, psf_dir: Path, optics: bool = False) -> PSF | None:
    """The band's cached PSF if it is current, else None (nothing is computed or written)."""
    path, key = _psf_file(band, cfg, psf_dir, optics)
    if not path.is_file():
        return None
    if why := psf_file_problem(path):
        log.warning("cached PSF %s is unusable (%s): it is made again", path, why)
        return None
    if fits.getheader(path).get("JG_PKEY") == key:
        return read_psf(path)
    return None


def band_psf(band: str, cfg: KernelSettings, psf_dir: Path, data_dir: Path, *, optics: bool = False) -> PSF:
    """The PSF of a band, generated once and cached as ``psfs/<BAND>.fits``.

    With ``[kernels] pixel_response`` a model PSF is the optics' (cached in ``psfs/optics/``, and
    returned with ``optics=True``: what a detector integrates) widened by the mosaics' pixel
    response (:mod:`jwstgal.pixel_response`).
    """
    if (psf := cached_psf(band, cfg, psf_dir, optics)) is not None:
        return psf
    path, key = _psf_file(band, cfg, psf_dir, optics)
    response = None if optics else cfg.response(band)
    if band in cfg.psf_files:
        psf = read_empirical_psf(empirical_psf_path(psf_dir, cfg.psf_files[band]), band)
    elif response is not None:
        bare = band_psf(band, cfg, psf_dir, data_dir, optics=True)
        det, drop = (f"{w:.3g}" for w in (response.detector, response.drop))
        psf = PSF(bare.name, add_pixel_response(bare.data, bare.pixscale, response.widths), bare.pixscale,
                  f"{bare.origin} +pix {det}/{drop}\"")
    elif cfg.psf_source == "stpsf":
        psf = stpsf_psf(band, oversample=cfg.oversample, data_dir=data_dir, use_opd=cfg.use_opd,
                        nlambda=cfg.nlambda or None, extension=cfg.psf_product,
                        ote_wfe_nm=cfg.ote_wfe_nm)
    else:
        psf = band_gaussian_psf(band, cfg.oversample)
    write_psf(psf, path, {"JG_PKEY": key})  # not JG_PSF: stamp_header writes that
    log.info("PSF %s (%s) -> %s", band, psf.origin, path)
    # the cached copy (float32), as every later run reads it: a kernel is the same whether its
    # PSFs were made in this run or an earlier one, in this process or another worker
    return read_psf(path)


def kernel_key(method: str, src: PSF, tgt: PSF, cfg: KernelSettings) -> str:
    """The ``JG_KERN`` hash of a kernel: its method, both PSFs' origins, the pixel, the settings."""
    params = {"method": method, "src": src.origin, "tgt": tgt.origin, "pix": src.pixscale,
              "reg_fact": cfg.reg_fact if method == "pypher" else None,
              "metrics": "of the written kernel",  # older files described the untrimmed one
              "grid": "both FWHMs, whole field",  # older kernels: source FWHM / 10, cut at 2049
              "resample": "sampled PSFs unsmoothed"}  # older: smoothed when 1.5x coarser
    responses = [None if is_analytic(p.name) or (r := cfg.response(p.name)) is None else r.widths
                 for p in (src, tgt)]
    if any(responses):                 # absent without: kernels made before stay current
        params["pixel_response"] = responses
    return hash_params(params)


def plan_kernel_set(cfg: KernelSettings, psf_dir: Path, pairs: list[tuple[str, str]], overwrite: bool = False
                    ) -> list[tuple[str, str, str, Path, str]]:
    """What :func:`make_kernel_set` would do, without computing or writing anything (``--dry-run``).

    Returns
    -------
    list of (source, target, method, kernel path, reason)
        ``reason`` is ``""`` for an up-to-date kernel, else why it would be made.
    """
    out = []
    for band, target, method in [(b, t, m) for b, t in pairs for m in cfg.methods if b != t]:
        path = kernel_path(psf_dir, method, band, target)
        src = cached_psf(band, cfg, psf_dir)
        if is_analytic(target):
            tgt = analytic_psf(target, src.pixscale) if src else None
        else:
            tgt = cached_psf(target, cfg, psf_dir)
        if overwrite:
            why = "--overwrite"
        elif src is None or tgt is None:
            why = f"PSF of {band if src is None else target} to be made ({cfg.psf_source})"
        elif not path.is_file():
            why = "no kernel yet"
        elif bad := psf_file_problem(path, kernel=True):
            why = f"unusable ({bad})"
        elif fits.getheader(path).get("JG_KERN") != kernel_key(method, src, tgt, cfg):
            why = "PSFs or settings changed"
        else:
            why = ""
        if why and src is not None and tgt is not None and not overwrite:
            kept = cached_kernel_path(psf_dir, method, band, target, kernel_key(method, src, tgt, cfg))
            if kept.is_file():
                why = f"{why}: restored from the kernel cache"
        out.append((band, target, method, path, why))
    return out


def write_kernel(result: KernelResult, source: str, target: str, path: Path, key: str,
                 psfs: tuple[PSF, PSF] | None = None) -> Path:
    """Write a kernel FITS file with its metrics and provenance, plus a PNG diagnostic.

    With ``psfs`` (source, target), the PNG also compares source (x) kernel with the target.
    """
    n = result.kernel.shape[0]
    h = fits.Header()
    h["KSOURCE"], h["KTARGET"] = source, target
    h["KMETHOD"] = result.method
    h["PIXELSCL"] = (result.pixscale, "arcsec / pixel")
    h["FWHM_S"] = (round(result.fwhm_source, 5), "source PSF FWHM [arcsec]")
    h["FWHM_T"] = (round(result.fwhm_target, 5), "target PSF FWHM [arcsec]")
    h["KERN_D"] = (result.D, "Aniano D = sum|S*K - T|")
    h["KERN_WM"] = (result.W_minus, "Aniano W- = total negative weight")
    h["SAFETY"] = (result.safety, "Aniano 2011 class from W-")
    h["CTYPE1"], h["CTYPE2"] = "RA---TAN", "DEC--TAN"
    h["CRPIX1"] = h["CRPIX2"] = (n + 1) / 2
    h["CRVAL1"] = h["CRVAL2"] = 0.0
    h["CDELT1"], h["CDELT2"] = -result.pixscale / 3600, result.pixscale / 3600
    if psfs is not None:            # which PSF models the kernel matches (stpsf, empirical, analytic)
        h["PSFMODS"] = (psfs[0].origin[:68], "source PSF model")
        h["PSFMODT"] = (psfs[1].origin[:68], "target PSF model")
    h["JG_KERN"] = key
    stamp_header(h, step="kernel", params={"source": source, "target": target, **result.params})
    with atomic_path(path) as tmp:
        fits.PrimaryHDU(result.kernel.astype(np.float32), header=h).writeto(tmp)
    from jwstgal.plots import kernel_profile_png

    r, prof = radial_profile(result.kernel)
    profiles = None
    if psfs is not None:
        pix = result.pixscale
        n = fast_odd(min(max(result.kernel.shape[0], 12 * result.fwhm_target / pix), 1025))
        s = resample_psf(psfs[0].data, psfs[0].pixscale, pix, n)
        t = resample_psf(psfs[1].data, psfs[1].pixscale, pix, n)
        conv = fftconvolve(s, result.kernel, mode="same")
        profiles = {f"source {source}": radial_profile(s), f"target {target}": radial_profile(t),
                    "source (x) kernel": radial_profile(conv)}
        profiles = {k: (rr * pix, pp) for k, (rr, pp) in profiles.items()}
    kernel_profile_png(r * result.pixscale, prof, 3 * result.fwhm_target, path.with_suffix(".png"),
                       f"{source} -> {target} ({result.method}): D={result.D:.2e}, "
                       f"W-={result.W_minus:.3f} ({result.safety})", profiles)
    return path


def current_kernel(path: Path, key: str) -> bool:
    """Whether ``path`` is a usable kernel made with ``key`` (a corrupt one is reported, remade)."""
    if not path.is_file():
        return False
    if why := psf_file_problem(path, kernel=True):
        log.warning("kernel %s is unusable (%s): it is made again", path, why)
        return False
    return fits.getheader(path).get("JG_KERN") == key


def make_kernel_set(
    bands: Iterable[str], cfg: KernelSettings, psf_dir: Path, data_dir: Path, overwrite: bool = False,
    progress: bool = True, targets: list[str] | None = None, pairs: list[tuple[str, str]] | None = None,
    failures: list[str] | None = None,
) -> list[Path]:
    """Make every kernel from each band to each target, by each configured method.

    ``targets`` defaults to the configured ones; ``pairs`` (source band, target), when given,
    replaces the bands x targets product.

    Targets that are not broader than a source are skipped with an error (no kernel exists), each
    appended to ``failures`` when given. A kernel or cached PSF that is unusable (truncated, NaN,
    not normalised) is made again.

    Returns
    -------
    list of pathlib.Path
        Kernel files (made now or already up to date).
    """
    from tqdm import tqdm

    out = []
    if pairs is None:
        pairs = [(b, t) for b in bands for t in (targets or cfg.targets)]
    jobs = [(b, t, m) for b, t in pairs for m in cfg.methods if b != t]
    for band, target, method in tqdm(jobs, desc="kernels", unit="kernel", disable=bar_disabled(progress)):
        try:
            out.append(make_kernel(band, target, method, cfg, psf_dir, data_dir, overwrite=overwrite))
        except ValueError as err:
            log.error("kernel %s -> %s (%s) cannot be made: %s", band, target, method, err)
            if failures is not None:
                failures.append(f"{band} -> {target} ({method}): {err}")
    return out


def make_kernel(band: str, target: str, method: str, cfg: KernelSettings, psf_dir: Path, data_dir: Path,
                *, overwrite: bool = False) -> Path:
    """Make (or keep, when current) the kernel from ``band`` to ``target`` by ``method``.

    The band PSFs are read from their cache, or made and cached.

    Raises
    ------
    ValueError
        When no kernel exists (the target is not broader than the source).
    """
    src = band_psf(band, cfg, psf_dir, data_dir)
    tgt = (analytic_psf(target, src.pixscale) if is_analytic(target)
           else band_psf(target, cfg, psf_dir, data_dir))
    key = kernel_key(method, src, tgt, cfg)
    path = kernel_path(psf_dir, method, band, target)
    if not overwrite and current_kernel(path, key):
        return path
    kept = cached_kernel_path(psf_dir, method, band, target, key)
    if not overwrite and current_kernel(kept, key):     # made before with these PSFs and settings
        for src_file, dst in ((kept, path), (kept.with_suffix(".png"), path.with_suffix(".png"))):
            if src_file.is_file():
                with atomic_path(dst) as tmp:
                    shutil.copyfile(src_file, tmp)
        log.info("kernel %s -> %s (%s): from the kernel cache (%s)", band, target, method, kept.name)
        return path
    if method == "aniano":
        res = make_aniano_kernel(src.data, src.pixscale, tgt.data, tgt.pixscale)
    else:
        res = make_pypher_kernel(src.data, src.pixscale, tgt.data, tgt.pixscale, reg_fact=cfg.reg_fact)
    write_kernel(res, band, target, path, key, psfs=(src, tgt))
    for src_file, dst in ((path, kept), (path.with_suffix(".png"), kept.with_suffix(".png"))):
        if src_file.is_file():                          # kept by key: a later return to it is free
            with atomic_path(dst) as tmp:
                shutil.copyfile(src_file, tmp)
    level = logging.WARNING if res.safety == "unsafe" else logging.INFO
    log.log(level, "kernel %s -> %s (%s): D=%.2e W-=%.3f %s", band, target, method, res.D,
            res.W_minus, res.safety.upper() if res.safety == "unsafe" else res.safety)
    return path
