"""A synthetic nearby galaxy: exponential disc, logarithmic spiral arms, diffuse clumps and stars.

Everything is a pure function of sky coordinates, so any exposure can be rendered through its own WCS
and the noise-free truth can be rendered on any grid.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from astropy.table import Table
from scipy.special import erf

from jwstgal.bands import Band

#: Sky background (MJy/sr) per band type, roughly JWST's zodiacal + thermal levels.
_SKY_LEVEL = {"nircam_short": 0.12, "nircam_long": 0.20, "miri": None}


def sky_level(band: Band) -> float:
    """Typical background surface brightness of a band (MJy/sr)."""
    if band.instrument == "miri":
        wave = int(band.name[1:-1]) / 100.0  # micron
        return float(1.5 + 0.5 * np.exp((wave - 7.7) / 2.6))  # ~2 at 7.7um, ~90 at 21um
    return _SKY_LEVEL[band.band_type]


@dataclass(frozen=True)
class Galaxy:
    """Parameters of the synthetic galaxy.

    Attributes
    ----------
    ra, dec : float
        Centre (deg).
    pa : float
        Position angle of the major axis (deg east of north).
    incl : float
        Inclination (deg).
    r_disc : float
        Exponential scale length (arcsec).
    n_arms : int
        Number of spiral arms.
    pitch : float
        Arm pitch angle (deg).
    """

    ra: float
    dec: float
    pa: float = 20.0
    incl: float = 30.0
    r_disc: float = 25.0
    n_arms: int = 2
    pitch: float = 18.0

    def deproject(self, ra: np.ndarray, dec: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Galactocentric radius (arcsec) and azimuth (rad) in the disc plane."""
        dx = (ra - self.ra) * np.cos(np.deg2rad(self.dec)) * 3600.0
        dy = (dec - self.dec) * 3600.0
        pa = np.deg2rad(self.pa)
        xmaj = dx * np.sin(pa) + dy * np.cos(pa)
        xmin = (-dx * np.cos(pa) + dy * np.sin(pa)) / np.cos(np.deg2rad(self.incl))
        return np.hypot(xmaj, xmin), np.arctan2(xmin, xmaj)


def _band_weights(band: Band) -> tuple[float, float, float]:
    """Relative brightness (MJy/sr at the centre) of disc, arms and clumps in a band."""
    if band.instrument == "miri":  # dust and PAH emission trace the arms
        wave = int(band.name[1:-1]) / 100.0
        return 1.0 + 0.1 * wave, 3.0 + 0.4 * wave, 2.0 + 0.3 * wave
    if band.band_type == "nircam_short":  # old stars: smooth disc
        return 2.0, 0.4, 0.2
    return 1.2, 0.5, 0.5


def galaxy_components(
    ra: np.ndarray, dec: np.ndarray, galaxy: Galaxy, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The galaxy's three emission components at sky positions, each 1 at its brightest.

    Returns
    -------
    disc, arms, clumps : numpy.ndarray
        The exponential disc, the spiral arms (twice the disc's scale length, so they outlast it
        outwards) and the sum of the diffuse clumps (placed by ``seed``). A band is a weighted sum
        (:func:`galaxy_surface_brightness`); bands with other weights have other colours.
    """
    r, phi = galaxy.deproject(ra, dec)
    disc = np.exp(-r / galaxy.r_disc)
    k = 1.0 / np.tan(np.deg2rad(galaxy.pitch))
    arm_phase = galaxy.n_arms * (phi - k * np.log(np.maximum(r, 1.0) / 5.0))
    arms = (0.5 + 0.5 * np.cos(arm_phase)) ** 6 * np.exp(-r / (2.0 * galaxy.r_disc))
    rng = np.random.default_rng([seed, 7])
    n_clumps = 40
    cr = galaxy.r_disc * 2.5 * np.sqrt(rng.random(n_clumps))
    cphi = rng.uniform(0, 2 * np.pi, n_clumps)
    csize = rng.uniform(1.5, 4.0, n_clumps)
    clumps = np.zeros_like(r)
    for i in range(n_clumps):
        d2 = r**2 + cr[i] ** 2 - 2 * r * cr[i] * np.cos(phi - cphi[i])
        clumps += np.exp(-0.5 * d2 / csize[i] ** 2)
    return disc, arms, clumps


def galaxy_surface_brightness(
    ra: np.ndarray, dec: np.ndarray, galaxy: Galaxy, band: Band, seed: int
) -> np.ndarray:
    """Noise-free extended emission (MJy/sr) at sky positions, excluding background and stars.

    Parameters
    ----------
    ra, dec : numpy.ndarray
        Sky coordinates (deg), any matching shapes.
    galaxy : Galaxy
        Galaxy parameters.
    band : Band
        Band, which sets the mix of disc, arm and clump emission.
    seed : int
        Seed of the clump positions.

    Returns
    -------
    numpy.ndarray
        Surface brightness, same shape as ``ra``.
    """
    w_disc, w_arm, w_clump = _band_weights(band)
    disc, arms, clumps = galaxy_components(ra, dec, galaxy, seed)
    return (w_disc * disc + w_arm * arms + w_clump * 0.3 * clumps).astype(np.float64)


def make_star_catalog(galaxy: Galaxy, n: int, radius_arcsec: float, seed: int) -> Table:
    """Point sources with known positions and per-band fluxes.

    Two thirds of the stars belong to the galaxy (an exponential disc of the galaxy's scale length,
    like the luminous AGB and red-supergiant stars used for astrometry), one third is a uniform
    foreground/background field. A quarter are dusty (AGB-like) with SEDs rising into the mid-IR.

    Parameters
    ----------
    galaxy : Galaxy
        Field centre and disc.
    n : int
        Number of stars.
    radius_arcsec : float
        Field stars are spread uniformly within this radius (disc stars are cut at it too).
    seed : int
        Random seed.

    Returns
    -------
    astropy.table.Table
        Columns ``id``, ``ra``, ``dec`` (deg), ``flux_ujy`` (at 2 micron) and ``sed_slope`` (the flux
        at wavelength w micron is ``flux_ujy * (w / 2) ** sed_slope``).
    """
    rng = np.random.default_rng([seed, 11])
    n_disc = (2 * n) // 3
    # radius of an exponential surface density: Gamma(2, r_disc), truncated at radius_arcsec
    r_disc = rng.gamma(2.0, galaxy.r_disc, 4 * n_disc)
    r_disc = r_disc[r_disc < radius_arcsec][:n_disc]
    rad = np.concatenate([r_disc, radius_arcsec * np.sqrt(rng.random(n - r_disc.size))])
    ang = rng.uniform(0, 2 * np.pi, n)
    # disc stars lie in the inclined plane: compress the minor axis
    in_disc = np.arange(n) < r_disc.size
    xmaj, xmin = rad * np.cos(ang), rad * np.sin(ang)
    xmin = np.where(in_disc, xmin * np.cos(np.deg2rad(galaxy.incl)), xmin)
    pa = np.deg2rad(galaxy.pa)
    dx = xmaj * np.sin(pa) - xmin * np.cos(pa)
    dy = xmaj * np.cos(pa) + xmin * np.sin(pa)
    dec = galaxy.dec + dy / 3600.0
    ra = galaxy.ra + dx / 3600.0 / np.cos(np.deg2rad(galaxy.dec))
    flux = 10 ** rng.uniform(-1.0, 1.0, n)  # 0.1 .. 10 uJy at 2 micron
    dusty = rng.random(n) < 0.25
    slope = np.where(dusty, rng.uniform(0.0, 1.0, n), rng.uniform(-2.0, -1.0, n))
    return Table({"id": np.arange(n), "ra": ra, "dec": dec, "flux_ujy": flux, "sed_slope": slope})


def star_flux_ujy(stars: Table, band: Band) -> np.ndarray:
    """Flux of each star in a band (micro-Jy)."""
    wave = int(band.name[1:-1]) / 100.0 if band.instrument == "miri" else int(band.name[1:4]) / 100.0
    return np.asarray(stars["flux_ujy"]) * (wave / 2.0) ** np.asarray(stars["sed_slope"])


def render_points(
    shape: tuple[int, int],
    x: np.ndarray,
    y: np.ndarray,
    flux: np.ndarray,
    fwhm_pix: float,
    stamp: int = 0,
) -> np.ndarray:
    """Render Gaussian point sources integrated over pixels.

    Parameters
    ----------
    shape : tuple of int
        Output shape (ny, nx).
    x, y : numpy.ndarray
        Zero-based pixel positions.
    flux : numpy.ndarray
        Total flux of each source (any unit; the image sums to it for sources well inside).
    fwhm_pix : float
        Gaussian FWHM in pixels.
    stamp : int
        Half-size of the stamp around each source; default 4 FWHM.

    Returns
    -------
    numpy.ndarray
        Image in flux per pixel.
    """
    img = np.zeros(shape)
    sig = fwhm_pix / 2.3548
    h = stamp or int(np.ceil(4 * fwhm_pix)) + 1
    norm = 1.0 / (np.sqrt(2) * sig)
    ny, nx = shape
    for xi, yi, fi in zip(x, y, flux, strict=True):
        ix, iy = round(xi), round(yi)
        if ix < -h or iy < -h or ix >= nx + h or iy >= ny + h:
            continue
        x0, x1 = max(ix - h, 0), min(ix + h + 1, nx)
        y0, y1 = max(iy - h, 0), min(iy + h + 1, ny)
        if x0 >= x1 or y0 >= y1:
            continue
        ex = np.arange(x0, x1 + 1) - 0.5 - xi
        ey = np.arange(y0, y1 + 1) - 0.5 - yi
        px = np.diff(0.5 * erf(ex * norm))
        py = np.diff(0.5 * erf(ey * norm))
        img[y0:y1, x0:x1] += fi * np.outer(py, px)
    return img
