"""Band pairs that are not scaled copies of each other, with known zero points, to score anchoring.

Each case draws a galaxy (scale length, inclination, orientation) and a field that may or may not
reach its faint outskirts, and three maps of it at one resolution on one grid:

- a JWST reference band, ``reference = sky_ref + z_ref + noise``;
- a JWST band of other colours (its own weights of disc, arms and clumps, so the colour changes
  across the galaxy), ``band = sky_band + z_band + noise``;
- an external map near the reference's wavelength (weights within 25 % of the reference's), scaled
  by a calibration slope, with white noise and a zero point of its own taken as the truth.

The JWST noise is correlated over the resolution element, as in a convolved mosaic. The offsets
that anchoring should find are ``-z_ref`` and ``-z_band``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.ndimage import gaussian_filter

from jwstgal.simulate.external import external_wcs
from jwstgal.simulate.sky import Galaxy, galaxy_components


@dataclass(frozen=True)
class AnchorCase:
    """One simulated anchoring problem and its answers.

    Attributes
    ----------
    reference, band, external : numpy.ndarray
        The observed maps (MJy/sr).
    truth_reference, truth_band : float
        The offsets that put ``reference`` and ``band`` on the sky's zero point.
    sky_reference : numpy.ndarray
        The reference's noise-free sky (to say how faint the field gets).
    """

    reference: np.ndarray
    band: np.ndarray
    external: np.ndarray
    truth_reference: float
    truth_band: float
    sky_reference: np.ndarray


def anchor_case(seed: int, *, n: int = 160, pixel: float = 1.0, fwhm: float = 4.0) -> AnchorCase:
    """Draw an anchoring case (see the module's docstring).

    Parameters
    ----------
    seed : int
        Draws everything: geometry, colours, zero points, slope, noise.
    n : int
        Pixels per side.
    pixel, fwhm : float
        Pixel size and the common resolution (Gaussian FWHM), arcsec.

    Returns
    -------
    AnchorCase
    """
    rng = np.random.default_rng([2026, seed])
    galaxy = Galaxy(10.0, 5.0, pa=rng.uniform(0, 180), incl=rng.uniform(0, 60),
                    r_disc=rng.uniform(15, 40))
    # the field's centre lies up to 60 px from the galaxy's: some fields reach the outskirts
    dx, dy = rng.uniform(-1, 1, 2) * 60 * pixel / 3600
    wcs = external_wcs(galaxy.ra + dx / np.cos(np.deg2rad(galaxy.dec)), galaxy.dec + dy, pixel, n)
    yy, xx = np.mgrid[0:n, 0:n]
    ra, dec = wcs.pixel_to_world_values(xx.astype(float), yy.astype(float))
    parts = np.stack(galaxy_components(ra, dec, galaxy, seed))
    parts[2] *= 0.3
    w_ref = rng.uniform([0.5, 0.2, 0.2], [2.0, 2.0, 2.0])
    w_band = w_ref * rng.uniform(0.4, 2.5, 3)
    w_ext = w_ref * rng.uniform(0.8, 1.25, 3)
    sigma = fwhm / pixel / 2.3548

    def sky(weights: np.ndarray) -> np.ndarray:
        return gaussian_filter(np.tensordot(weights, parts, 1), sigma)

    z_ref, z_band = rng.normal(0, 0.2, 2)
    slope = rng.uniform(0.5, 1.5)
    n_ref, n_band, n_ext = rng.uniform(0.002, 0.03, 3)
    # white noise smoothed to the resolution keeps about 1 / (2 sqrt(pi) sigma) of its rms
    boost = 2 * np.sqrt(np.pi) * sigma

    def noise(rms: float) -> np.ndarray:
        return gaussian_filter(rng.standard_normal((n, n)), sigma) * rms * boost

    sky_ref = sky(w_ref)
    return AnchorCase(reference=sky_ref + z_ref + noise(n_ref),
                      band=sky(w_band) + z_band + noise(n_band),
                      external=slope * sky(w_ext) + n_ext * rng.standard_normal((n, n)),
                      truth_reference=-float(z_ref), truth_band=-float(z_band), sky_reference=sky_ref)
