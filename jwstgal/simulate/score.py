"""Score pipeline products against the simulation's truth."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from astropy.coordinates import SkyCoord
from astropy.io import fits
from astropy.table import Table
from astropy.wcs import WCS

from jwstgal.psfs import PSF


@dataclass(frozen=True)
class AstrometryScore:
    """Offsets of measured sources from the true positions, in mosaic pixels.

    Attributes
    ----------
    n_matched : int
        Sources matched to a true star.
    median_dx, median_dy : float
        Median offset (measured - true) along x and y.
    median_offset : float
        Length of the median offset vector (the systematic astrometric error).
    rms : float
        Rms of the individual offsets about the median.
    pixel_scale : float
        Mosaic pixel scale (arcsec).
    """

    n_matched: int
    median_dx: float
    median_dy: float
    median_offset: float
    rms: float
    pixel_scale: float


def score_mosaic_astrometry(
    mosaic: Path, catalog: Path, stars: Path, match_radius_pix: float = 1.0
) -> AstrometryScore:
    """Compare a stage-3 source catalogue with the true star positions.

    Parameters
    ----------
    mosaic : pathlib.Path
        The ``_i2d.fits`` mosaic (its WCS converts true RA/Dec to pixels).
    catalog : pathlib.Path
        The ``_cat.ecsv`` written by source_catalog (``xcentroid``, ``ycentroid``).
    stars : pathlib.Path
        The simulator's ``stars.ecsv``.
    match_radius_pix : float
        Largest separation that counts as a match.

    Returns
    -------
    AstrometryScore
    """
    from stdatamodels.jwst.datamodels import ImageModel

    cat = Table.read(catalog)
    truth = Table.read(stars)
    with ImageModel(str(mosaic)) as m:
        wcs = m.meta.wcs
        tx, ty = wcs.world_to_pixel_values(np.asarray(truth["ra"]), np.asarray(truth["dec"]))
    scale = float(np.sqrt(abs(np.linalg.det(WCS(fits.getheader(mosaic, "SCI")).celestial
                                            .pixel_scale_matrix))) * 3600)
    mx, my = np.asarray(cat["xcentroid"]), np.asarray(cat["ycentroid"])
    ok = np.isfinite(tx) & np.isfinite(ty)
    tx, ty = tx[ok], ty[ok]
    t_sky = SkyCoord(tx, ty, 0, representation_type="cartesian")
    m_sky = SkyCoord(mx, my, 0, representation_type="cartesian")
    idx, _, dist = m_sky.match_to_catalog_3d(t_sky)
    good = dist.value < match_radius_pix
    dx = mx[good] - tx[idx[good]]
    dy = my[good] - ty[idx[good]]
    if good.sum() == 0:
        return AstrometryScore(0, np.nan, np.nan, np.nan, np.nan, scale)
    mdx, mdy = float(np.median(dx)), float(np.median(dy))
    rms = float(np.sqrt(np.mean((dx - mdx) ** 2 + (dy - mdy) ** 2)))
    return AstrometryScore(int(good.sum()), mdx, mdy, float(np.hypot(mdx, mdy)), rms, scale)


def score_truth_centroids(
    mosaic: Path, stars: Path, band: str, *, min_flux_ujy: float = 1.0, isolation_fwhm: float = 4.0,
    box_fwhm: float = 3.0, max_stars: int = 400, max_offset_pix: float = 1.0,
) -> AstrometryScore:
    """Measure the true stars directly in a mosaic: 2-D Gaussian (+ background) centroids.

    Unlike :func:`score_mosaic_astrometry` this does not depend on the pipeline's catalogue: bright
    stars with no other star within ``isolation_fwhm`` FWHM are fitted in a box of ``box_fwhm`` FWHM
    around their true position, so the result measures the mosaic's WCS, not centroiding biases of
    segmentation on extended emission.

    Parameters
    ----------
    mosaic : pathlib.Path
        The ``_i2d.fits`` mosaic.
    stars : pathlib.Path
        The simulator's ``stars.ecsv`` (with ``flux_<BAND>`` columns).
    band : str
        Band of the mosaic.
    min_flux_ujy : float
        Only stars brighter than this in the band are used.
    isolation_fwhm, box_fwhm : float
        Isolation radius and fitting box, in units of the band's FWHM.
    max_stars : int
        At most this many (the brightest) stars are fitted.
    max_offset_pix : float
        Fits further than this from the true position are discarded (a neighbour was fitted);
        raise it (with ``box_fwhm``) to score a mosaic that is far from aligned.

    Returns
    -------
    AstrometryScore
    """
    from photutils.centroids import centroid_2dg, centroid_sources
    from stdatamodels.jwst.datamodels import ImageModel

    from jwstgal.bands import get_band

    b = get_band(band)
    truth = Table.read(stars)
    with fits.open(mosaic) as h:
        has_gwcs = "ASDF" in h
    if has_gwcs:
        with ImageModel(str(mosaic)) as m:
            data = np.array(m.data, float)
            has_gwcs = m.meta.wcs is not None
            if has_gwcs:
                tx, ty = m.meta.wcs.world_to_pixel_values(np.asarray(truth["ra"]), np.asarray(truth["dec"]))
    if not has_gwcs:  # e.g. an aligned mosaic, whose FITS WCS is the authoritative one
        data = np.array(fits.getdata(mosaic, "SCI"), float)
        fw = WCS(fits.getheader(mosaic, "SCI"))
        tx, ty = fw.world_to_pixel_values(np.asarray(truth["ra"]), np.asarray(truth["dec"]))
        outside = (tx < 0) | (ty < 0) | (tx > data.shape[1] - 1) | (ty > data.shape[0] - 1)
        tx, ty = np.where(outside, np.nan, tx), np.where(outside, np.nan, ty)
    scale = float(np.sqrt(abs(np.linalg.det(WCS(fits.getheader(mosaic, "SCI")).celestial
                                            .pixel_scale_matrix))) * 3600)
    fwhm = b.fwhm_arcsec / scale
    flux = np.asarray(truth[f"flux_{b.name}"])
    finite = np.isfinite(tx) & np.isfinite(ty)  # outside the bounding box the WCS gives NaN
    tx, ty, flux = tx[finite], ty[finite], flux[finite]
    ny, nx = data.shape
    margin = box_fwhm * fwhm + 2
    inside = (tx > margin) & (ty > margin) & (tx < nx - margin) & (ty < ny - margin)
    d2 = (tx[:, None] - tx[None, :]) ** 2 + (ty[:, None] - ty[None, :]) ** 2
    np.fill_diagonal(d2, np.inf)
    isolated = d2.min(axis=1) > (isolation_fwhm * fwhm) ** 2
    sel = np.nonzero(inside & isolated & (flux > min_flux_ujy))[0]
    sel = sel[np.argsort(flux[sel])[::-1][:max_stars]]
    if sel.size == 0:
        return AstrometryScore(0, np.nan, np.nan, np.nan, np.nan, scale)
    box = int(2 * np.ceil(box_fwhm * fwhm / 2) + 1)
    covered = np.isfinite(data) & (data != 0)  # resample leaves 0 where nothing contributed
    half = box // 2
    full = [bool(covered[round(y) - half:round(y) + half + 1, round(x) - half:round(x) + half + 1].all())
            for x, y in zip(tx[sel], ty[sel], strict=True)]
    sel = sel[np.asarray(full, bool)]
    if sel.size == 0:
        return AstrometryScore(0, np.nan, np.nan, np.nan, np.nan, scale)
    filled = np.where(covered, data, 0.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mx, my = centroid_sources(filled, tx[sel], ty[sel], box_size=box, centroid_func=centroid_2dg)
    good = np.isfinite(mx) & np.isfinite(my)
    dx, dy = mx[good] - tx[sel][good], my[good] - ty[sel][good]
    ok = np.hypot(dx, dy) < max_offset_pix  # a fit that wandered to a neighbour is not a measurement
    dx, dy = dx[ok], dy[ok]
    if dx.size == 0:
        return AstrometryScore(0, np.nan, np.nan, np.nan, np.nan, scale)
    mdx, mdy = float(np.median(dx)), float(np.median(dy))
    rms = float(np.sqrt(np.mean((dx - mdx) ** 2 + (dy - mdy) ** 2)))
    return AstrometryScore(int(dx.size), mdx, mdy, float(np.hypot(mdx, mdy)), rms, scale)


@dataclass(frozen=True)
class AnchorScore:
    """How far an anchored mosaic's zero point is from the simulated sky's.

    Attributes
    ----------
    zero_point : float
        ``anchored - sky`` where the sky is zero (MJy/sr): the anchoring's error (the intercept of a
        binned line of the mosaic against the noise-free galaxy, so stars and noise do not bias it).
    zero_point_err : float
        Its 1-sigma error.
    slope : float
        Slope of that line (1 for a mosaic that keeps the galaxy's flux).
    offset, offset_err : float
        The mosaic's ``ANCHOFF`` and ``ANCHERR``.
    """

    zero_point: float
    zero_point_err: float
    slope: float
    offset: float
    offset_err: float

    @property
    def sigmas(self) -> float:
        """The error in units of the quoted error."""
        return self.zero_point / self.offset_err


def score_anchoring(anchored: Path, band: str, ra: float, dec: float, seed: int, step: int = 4,
                    psf: PSF | None = None) -> AnchorScore:
    """Compare an anchored mosaic (``anchor_data.py``'s) with the simulated galaxy's sky.

    Parameters
    ----------
    anchored : pathlib.Path
        The ``_i2d_anchor.fits`` file.
    band : str
        Its band.
    ra, dec, seed : float, float, int
        The simulation's galaxy centre and seed (``[simulation]``).
    step : int
        Every ``step``-th pixel along each axis is compared.
    psf : PSF, optional
        The PSF the simulation drew the sky with (``[simulation] psf = 'kernels'``): the galaxy is
        then seen through it (on a grid grown by half of it) before it is compared.
    """
    from jwstgal.anchor import binned_fit
    from jwstgal.bands import get_band
    from jwstgal.simulate.sky import Galaxy, galaxy_surface_brightness

    with fits.open(anchored) as h:
        sci = np.asarray(h["SCI"].data, float)
        wcs = WCS(h["SCI"].header).celestial
        offset, offset_err = float(h[0].header["ANCHOFF"]), float(h[0].header["ANCHERR"])
    pad = 0
    if psf is not None:
        from scipy.signal import fftconvolve

        from jwstgal.convolve import image_pixel_scale
        from jwstgal.kernels import resample_psf

        pix = image_pixel_scale(wcs)
        size = min(int(np.ceil(psf.data.shape[0] * psf.pixscale / pix)) | 1, 2 * max(sci.shape) + 1)
        kernel = resample_psf(psf.data, psf.pixscale, pix, size)
        pad, step_ = size // 2, 1
    else:
        step_ = step
    yy, xx = np.mgrid[-pad:sci.shape[0] + pad:step_, -pad:sci.shape[1] + pad:step_]
    ra_, dec_ = wcs.pixel_to_world_values(xx.astype(float), yy.astype(float))
    sky = galaxy_surface_brightness(ra_, dec_, Galaxy(ra, dec), get_band(band), seed)
    if psf is not None:
        sky = fftconvolve(sky, kernel, mode="same")[pad:-pad or None, pad:-pad or None][::step, ::step]
    yy, xx = np.mgrid[0:sci.shape[0]:step, 0:sci.shape[1]:step]
    seen = sci[yy, xx]
    ok = np.isfinite(seen) & (seen != 0)
    fit = binned_fit(sky[ok], seen[ok], x_range=(0.5, 99.5), n_bins=30)
    return AnchorScore(fit.intercept, fit.intercept_err, fit.slope, offset, offset_err)
