"""Low-resolution maps of the synthetic galaxy that keep their zero point, as Spitzer or WISE maps do.

An external map is the noise-free sky of a JWST band (galaxy and stars, no background) at a
Gaussian resolution, scaled by a known ``slope`` (bandpass and calibration differ), plus a known
``offset`` (the map's own zero point) and white noise. The injected values are in the header
(``SIMSLOPE``, ``SIMOFFS``, ``SIMNOISE``), so anchoring can be scored: a JWST mosaic whose zero point
is off by ``z`` should get the offset ``offset / slope - z``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.table import Table
from astropy.wcs import WCS

from jwstgal.bands import Band
from jwstgal.convolve import convolve_image
from jwstgal.ladder import block_average, gaussian_kernel
from jwstgal.provenance import atomic_path, stamp_header
from jwstgal.simulate.sky import Galaxy, galaxy_surface_brightness, render_points, star_flux_ujy


def external_wcs(ra: float, dec: float, pixscale: float, n: int) -> WCS:
    """A north-up TAN grid of ``n`` x ``n`` pixels of ``pixscale`` arcsec centred on (ra, dec)."""
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval = [ra, dec]
    w.wcs.crpix = [(n + 1) / 2, (n + 1) / 2]
    w.wcs.cdelt = [-pixscale / 3600, pixscale / 3600]
    return w


def external_map(galaxy: Galaxy, band: Band, stars: Table | None, *, fwhm: float,
                 size_arcsec: float, seed: int, slope: float = 0.8, offset: float = 0.1, noise: float = 0.003,
                 noise_seed: int = 0, oversample: int = 4) -> tuple[np.ndarray, WCS]:
    """The galaxy seen in ``band`` at a Gaussian resolution ``fwhm`` (arcsec), as an external map.

    ``seed`` is the simulation's (it places the galaxy's clumps, as in the JWST exposures);
    ``noise_seed`` tells maps apart. Pixels are ``fwhm / 4``; the sky is rendered ``oversample``
    times finer, convolved and block-averaged (so each pixel integrates the smoothed sky), then
    scaled, offset and noised.

    Returns
    -------
    data : numpy.ndarray
        MJy/sr.
    wcs : astropy.wcs.WCS
    """
    pix = fwhm / 4
    n = int(np.ceil(size_arcsec / pix)) | 1
    fine = external_wcs(galaxy.ra, galaxy.dec, pix / oversample, n * oversample)
    yy, xx = np.mgrid[0:n * oversample, 0:n * oversample]
    ra, dec = fine.pixel_to_world_values(xx.astype(float), yy.astype(float))
    sky = galaxy_surface_brightness(ra, dec, galaxy, band, seed)
    sky = convolve_image(sky, gaussian_kernel(fwhm, pix / oversample), preserve_nan=False).data
    sky, _ = block_average(sky, oversample)
    wcs = external_wcs(galaxy.ra, galaxy.dec, pix, n)
    if stars is not None and len(stars):
        x, y = wcs.world_to_pixel_values(np.asarray(stars["ra"]), np.asarray(stars["dec"]))
        pix_sr = (pix / 206264.806) ** 2
        sky = sky + render_points(sky.shape, x, y, star_flux_ujy(stars, band) * 1e-12 / pix_sr, 4.0)
    rng = np.random.default_rng([seed, 11, noise_seed])
    return slope * sky + offset + noise * rng.standard_normal(sky.shape), wcs


def write_external_map(path: Path, data: np.ndarray, wcs: WCS, *, name: str, fwhm: float,
                       slope: float, offset: float, noise: float) -> Path:
    """Write an external map as a FITS image with its injected truth in the header."""
    hdr = wcs.to_header()
    hdr["BUNIT"] = "MJy/sr"
    hdr["TELESCOP"] = ("SIMULATED", f"stand-in for {name}")
    hdr["BMAJ"] = hdr["BMIN"] = (fwhm / 3600, "[deg] Gaussian FWHM")
    hdr["SIMSLOPE"] = (slope, "map = SIMSLOPE x sky + SIMOFFS")
    hdr["SIMOFFS"] = (offset, "[MJy/sr] injected zero-point offset")
    hdr["SIMNOISE"] = (noise, "[MJy/sr] injected white noise rms")
    stamp_header(hdr, step="simulate_external", params={"name": name, "fwhm": fwhm})
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        fits.PrimaryHDU(data.astype(np.float32), hdr).writeto(tmp)
    return path
