"""How a kernel is brought to the mosaic's pixel, measured on real PSFs (issue #16, item 1).

Real stpsf PSFs (OVERDIST), Aniano kernels, and both ways of putting the kernel on the mosaic's pixel
(``[convolve] kernel_sampling``): ``pixel_centre`` (built on the pixel from the kernel and its source
PSF) and ``band_limited`` (the kernel cut at the mosaic's Nyquist frequency). For a star at sub-pixel
phases (0, 1/4, 1/2)^2 of its mosaic pixel, the source PSF integrated over the pixels is convolved and
compared with the target PSF integrated over the same pixels: FWHM (2-D Gaussian fit), flux in
apertures of 1 and 2 target FWHM, and the rms of the difference (relative to the target's).

Usage: .venv/bin/python bench/bench_kernel_sampling.py [--nlambda 0] [--fov 20]
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

PAIRS = [("F300M", "F360M", 0.063), ("F200W", "F360M", 0.031), ("F770W", "F2100W", 0.11)]
OVER = 8                                    # sub-pixels per mosaic pixel (phases in 1/8 steps)


def integrated(psf, pix: float, size: int, phase: tuple[int, int]) -> np.ndarray:
    """A PSF integrated over mosaic pixels of ``pix`` arcsec, the star ``phase`` sub-pixels off centre."""
    from jwstgal.kernels import resample_psf

    fine = np.roll(resample_psf(psf.data, psf.pixscale, pix / OVER, size * OVER + 1)[:-1, :-1],
                   phase, axis=(0, 1))                    # centre at sub-pixel OVER/2 of the middle
    g = fine.reshape(size, OVER, size, OVER).sum(axis=(1, 3))
    return g / g.sum()


def circular(psf):
    """The PSF circularised (odd-sized), as the Aniano kernels see it."""
    from dataclasses import replace

    from jwstgal.kernels import circularise, resample_psf

    n = psf.data.shape[0] - 1 + psf.data.shape[0] % 2
    return replace(psf, data=circularise(resample_psf(psf.data, psf.pixscale, psf.pixscale, n)))


def fitted_fwhm(img: np.ndarray, pix: float) -> float:
    """FWHM (arcsec) of a 2-D Gaussian fitted to ``img``."""
    from astropy.modeling import fitting, models

    n = img.shape[0]
    y, x = np.indices(img.shape)
    g = models.Gaussian2D(img.max(), (n - 1) / 2, (n - 1) / 2, 1.0, 1.0)
    fit = fitting.LevMarLSQFitter()(g, x, y, img)
    return 2.3548 * np.sqrt(abs(fit.x_stddev.value * fit.y_stddev.value)) * pix


def main() -> None:
    """Compute the PSFs and kernels, then print one table row per pair, sampling and phase set."""
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--nlambda", type=int, default=0, help="wavelengths (0: stpsf's default)")
    p.add_argument("--fov", type=float, default=20.0, help="PSF field (arcsec)")
    args = p.parse_args()
    from dataclasses import replace

    from scipy.signal import fftconvolve

    from jwstgal.kernels import (
        circularise,
        make_aniano_kernel,
        pixel_centre_kernel,
        resample_kernel,
        resample_psf,
    )
    from jwstgal.psfs import stpsf_psf

    psfs = {b: stpsf_psf(b, fov_arcsec=args.fov, nlambda=args.nlambda or None)
            for b in sorted({b for pair in PAIRS for b in pair[:2]})}
    print(f"stpsf OVERDIST, {args.nlambda or 'default'} wavelengths, {args.fov:g}\" field; "
          f"phases in 1/{OVER} pixel")
    print("| pair, mosaic pixel | sampling | FWHM error at the centre | over the phases | "
          "aperture flux error (1, 2 FWHM) over the phases | rms residual | kernel on the pixel [s] |")
    print("|---|---|---|---|---|---|---|")
    mine: list[str] = []
    phases = [(dy, dx) for dy in (0, OVER // 4, OVER // 2) for dx in (0, OVER // 4, OVER // 2)]
    for src_band, tgt_band, pix in PAIRS:
        s, t = psfs[src_band], psfs[tgt_band]
        res = make_aniano_kernel(s.data, s.pixscale, t.data, t.pixscale)
        fwhm_t = res.fwhm_target
        n_k = res.kernel.shape[0]
        on_grid = circularise(resample_psf(s.data, s.pixscale, res.pixscale, n_k))
        t0 = time.perf_counter()
        pc = pixel_centre_kernel(res.kernel, on_grid, res.pixscale, pix)
        t_pc = time.perf_counter() - t0
        t0 = time.perf_counter()
        bl = resample_kernel(res.kernel, res.pixscale, pix)
        t_bl = time.perf_counter() - t0
        n = 2 * int(4 * fwhm_t / pix) + 21
        yy, xx = np.indices((n, n)) - (n - 1) / 2
        sp, tp = circular(s), circular(t)           # Aniano kernels match the circularised pair
        for name, kern, secs in (("pixel_centre", pc, t_pc), ("band_limited", bl, t_bl)):
            fw, flux, rms = [], [], []
            for ph in phases:
                src, tgt = integrated(sp, pix, n, ph), integrated(tp, pix, n, ph)
                conv = fftconvolve(src, kern, mode="same")
                conv /= conv.sum()
                r = np.hypot(xx - ph[1] / OVER, yy - ph[0] / OVER) * pix
                fw.append(fitted_fwhm(conv, pix) / fitted_fwhm(tgt, pix) - 1)
                flux += [conv[r <= a].sum() / tgt[r <= a].sum() - 1 for a in (fwhm_t, 2 * fwhm_t)]
                rms.append(np.sqrt(((conv - tgt) ** 2).sum() / (tgt**2).sum()))
            fw, flux = 100 * np.array(fw), 100 * np.array(flux)
            if name == "pixel_centre":              # against what it builds on: source (x) kernel
                own = fftconvolve(resample_psf(sp.data, sp.pixscale, res.pixscale, 2 * n_k + 1),
                                  res.kernel, mode="same")
                own = integrated(replace(s, data=own / own.sum(), pixscale=res.pixscale), pix, n, (0, 0))
                conv = fftconvolve(integrated(sp, pix, n, (0, 0)), kern, mode="same")
                err = fitted_fwhm(conv / conv.sum(), pix) / fitted_fwhm(own, pix) - 1
                mine.append(f"{src_band} -> {tgt_band}: {100 * err:+.3f} %")
            print(f"| {src_band} -> {tgt_band}, {pix}\" | {name} | {fw[0]:+.2f} % | {fw.min():+.2f} .. "
                  f"{fw.max():+.2f} % | {flux.min():+.2f} .. {flux.max():+.2f} % | "
                  f"{100 * min(rms):.1f} .. {100 * max(rms):.1f} % | {secs:.2f} |", flush=True)
    print("pixel_centre at the pixel centre, FWHM against source (x) kernel integrated over the pixel: "
          + "; ".join(mine))
    print(f"load average at the end: {os.getloadavg()[0]:.2f} ({os.cpu_count()} CPUs)")


if __name__ == "__main__":
    main()
