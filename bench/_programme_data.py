"""Cal files of one band at the size of a real programme, written directly (no jwst stages).

NIRCam short wavelength: ``tiles`` x 4 dithers x 8 detectors (two modules of 2 x 2) of 2048^2;
MIRI: ``tiles`` x 4 dithers x 1 detector of 1032 x 1024 (1024 rows) plus two background exposures.
Each file is a jwst ``ImageModel`` with a gwcs (``detector -> v2v3 -> world``, as assign_wcs builds
it) and its SIP FITS approximation, SCI/ERR/DQ/VAR_RNOISE, and the headers the steps read. The sky
is one scene for all exposures: a background, an exponential disk galaxy and ~600 stars seen through
each exposure's *true* pointing (the written one plus a per-visit pointing error, which wcs_adjust
should find); on top, read-order stripes per amplifier (1/f rows and amplifier offsets), a level
offset per exposure and white noise. The band's mosaic (for alignment and convolution) is rendered
on a north-up grid at the band's mosaic pixel from the same scene.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

RA0, DEC0 = 150.10, 2.20
#: per-visit pointing errors (mas, RA*cos(Dec) and Dec) of tile 1, 2, ...
POINTING_ERRORS = [(25.0, -15.0), (-35.0, 40.0), (10.0, 20.0), (-20.0, -30.0)]
NIRCAM_DETECTORS = {  # detector -> (V2, V3) offset of its centre from the aperture, arcsec
    "NRCA1": (-122.0, -34.0), "NRCA2": (-122.0, 34.0), "NRCA3": (-54.5, -34.0), "NRCA4": (-54.5, 34.0),
    "NRCB1": (54.5, -34.0), "NRCB2": (54.5, 34.0), "NRCB3": (122.0, -34.0), "NRCB4": (122.0, 34.0)}
DITHERS = [(0.0, 0.0), (3.1, 1.7), (6.0, 3.4), (9.1, 5.0)]      # arcsec in V2, V3
NOISE = 0.02                                                      # MJy/sr per pixel


@dataclasses.dataclass(frozen=True)
class Exposure:
    """One exposure to write."""

    path: Path
    detector: str
    det_v2: float
    det_v3: float
    ap_ra: float
    ap_dec: float
    true_ra: float
    true_dec: float
    tile: int
    dither: int
    start_mjd: float
    background: bool = False


def _pointing(dv2: float, dv3: float) -> tuple[float, float]:
    """Sky position of an aperture offset (arcsec) from the field centre (roll 0: V3 north, V2 east)."""
    return RA0 + dv2 / 3600 / np.cos(np.deg2rad(DEC0)), DEC0 + dv3 / 3600


def plan_band(folder: Path, instrument: str, tiles: int) -> list[Exposure]:
    """The exposures of one band: ``tiles`` visits x 4 dithers x detectors (+ MIRI backgrounds)."""
    out = []
    dets = NIRCAM_DETECTORS if instrument == "nircam" else {"MIRIMAGE": (0.0, 0.0)}
    tile_step = 120.0 if instrument == "nircam" else 100.0
    t = 60000.0
    for tile in range(tiles):
        err = POINTING_ERRORS[tile % len(POINTING_ERRORS)]
        for d, (ddx, ddy) in enumerate(DITHERS):
            v2, v3 = ddx, tile * tile_step + ddy
            ra, dec = _pointing(v2, v3)
            tra, tdec = _pointing(v2 + err[0] / 1000, v3 + err[1] / 1000)
            for det, (ox, oy) in dets.items():
                name = f"jw02107001{tile + 1:03d}_02101_{d + 1:05d}_{det.lower()}_cal.fits"
                out.append(Exposure(folder / name, det, ox, oy, ra, dec, tra, tdec, tile, d, t))
            t += 0.01
    if instrument == "miri":
        for d in range(2):
            ra, dec = _pointing(600.0 + 5 * d, 0.0)
            name = f"jw02107002001_02101_{d + 1:05d}_mirimage_cal.fits"
            out.append(Exposure(folder / name, "MIRIMAGE", 0.0, 0.0, ra, dec, ra, dec, 99, d, t + 0.01 * d,
                                background=True))
    return out


def _setup(instrument: str, detector: str, size: int):
    from jwstgal.bands import get_band
    from jwstgal.simulate.instrument import setup_for_band

    band = get_band("F200W" if instrument == "nircam" else "F770W")
    return band, dataclasses.replace(setup_for_band(band, size), detector=detector)


def _gwcs(setup, det_v2: float, det_v3: float, ra: float, dec: float):
    """Gwcs of a detector whose centre sits at (det_v2, det_v3) from an aperture pointed at (ra, dec)."""
    import astropy.units as u
    from astropy.coordinates import ICRS
    from gwcs import coordinate_frames as cf
    from gwcs import wcs as gwcs_wcs
    from jwst.assign_wcs.pointing import v23tosky
    from stdatamodels.jwst.datamodels import ImageModel

    from jwstgal.simulate.instrument import distortion_model

    holder = ImageModel()
    w = holder.meta.wcsinfo
    w.v2_ref, w.v3_ref, w.roll_ref, w.ra_ref, w.dec_ref = 0.0, 0.0, 0.0, ra, dec
    placed = dataclasses.replace(setup, v2_ref=det_v2, v3_ref=det_v3, v3yangle=0.0)
    det = cf.Frame2D(name="detector", axes_order=(0, 1), unit=(u.pix, u.pix))
    v2v3 = cf.Frame2D(name="v2v3", axes_order=(0, 1), unit=(u.arcsec, u.arcsec))
    world = cf.CelestialFrame(reference_frame=ICRS(), name="world")
    return gwcs_wcs.WCS([(det, distortion_model(placed)), (v2v3, v23tosky(holder)), (world, None)])


def stars(seed: int = 7, n: int = 600, radius_arcsec: float = 330.0) -> tuple[np.ndarray, ...]:
    """RA, Dec (deg) and flux (MJy/sr x pixel) of the field's stars."""
    rng = np.random.default_rng(seed)
    dx, dy = rng.uniform(-radius_arcsec, radius_arcsec, (2, n))
    ra = RA0 + dx / 3600 / np.cos(np.deg2rad(DEC0))
    dec = DEC0 + (dy + 90.0) / 3600
    return ra, dec, 10 ** rng.uniform(0.5, 2.0, n)


def sky(ra: np.ndarray, dec: np.ndarray) -> np.ndarray:
    """Background plus an exponential disk (MJy/sr) at sky positions."""
    dx = (ra - RA0) * np.cos(np.deg2rad(DEC0)) * 3600
    dy = (dec - DEC0) * 3600 - 60.0
    return 0.2 + 3.0 * np.exp(-np.hypot(dx, dy / 0.6) / 40.0)


def _stripes(rng: np.random.Generator, shape: tuple[int, int], n_amps: int) -> np.ndarray:
    from jwstgal.simulate.detector import pink_noise

    ny, nx = shape
    out = np.zeros(shape)
    w = nx // n_amps
    rows = pink_noise(rng, ny, n_amps) * NOISE          # one 1/f row stream per amplifier
    for a in range(n_amps):
        out[:, a * w:(a + 1) * w] = rows[a][:, None] + rng.normal(0, NOISE)
    return out


def write_exposure(e: Exposure, instrument: str, size: int, seed: int) -> Path:
    """Render and write one cal file (skipped when it exists)."""
    if e.path.is_file():
        return e.path
    from jwst.assign_wcs.util import update_fits_wcsinfo
    from stdatamodels.jwst.datamodels import ImageModel

    from jwstgal import dq
    from jwstgal.simulate.sky import render_points

    band, setup = _setup(instrument, e.detector, size)
    shape = (1024 * size // 2048, 1032 * size // 2048) if instrument == "miri" else (size, size)
    setup = dataclasses.replace(setup, size=shape[0])
    rng = np.random.default_rng(seed)
    true = _gwcs(setup, e.det_v2, e.det_v3, e.true_ra, e.true_dec)
    yy, xx = np.mgrid[0:shape[0], 0:shape[1]].astype(float)
    ra, dec = true(xx, yy)
    data = sky(ra, dec) if not e.background else np.full(shape, 0.2)
    del ra, dec, xx, yy
    if not e.background:
        sra, sdec, sflux = stars()
        x, y = true.world_to_pixel_values(sra, sdec)
        inside = (x > -10) & (y > -10) & (x < shape[1] + 10) & (y < shape[0] + 10)
        data += render_points(shape, x[inside], y[inside], sflux[inside], band.fwhm_pix)
    n_amps = 4 if (instrument == "nircam" and shape[1] == 2048) else 1
    data += _stripes(rng, shape, n_amps) + rng.normal(0, NOISE, shape) + rng.normal(0, 0.05)
    dq_arr = np.zeros(shape, np.uint32)
    dq_arr[:, :4] = dq_arr[:, -4:] = dq.bits(["DO_NOT_USE", "REFERENCE_PIXEL"])
    if instrument == "nircam":
        dq_arr[:4] = dq_arr[-4:] = dq.bits(["DO_NOT_USE", "REFERENCE_PIXEL"])
    m = ImageModel(data=data.astype(np.float32), err=np.full(shape, NOISE, np.float32), dq=dq_arr,
                   var_rnoise=np.full(shape, NOISE**2, np.float32))
    m.meta.wcs = _gwcs(setup, e.det_v2, e.det_v3, e.ap_ra, e.ap_dec)
    m.meta.wcs.bounding_box = ((-0.5, shape[1] - 0.5), (-0.5, shape[0] - 0.5))
    m.meta.telescope = "JWST"
    ins = m.meta.instrument
    ins.name = "NIRCAM" if instrument == "nircam" else "MIRI"
    ins.detector, ins.filter = e.detector, band.filter
    if instrument == "nircam":
        ins.pupil, ins.channel, ins.module = "CLEAR", "SHORT", e.detector[3]
    ob = m.meta.observation
    parts = e.path.name.split("_")
    ob.program_number, ob.observation_number, ob.visit_number = "02107", parts[0][7:10], parts[0][10:13]
    ob.visit_group, ob.sequence_id, ob.activity_id, ob.exposure_number = "02", "1", "01", parts[2]
    m.meta.target.proposer_name = "BENCH-off" if e.background else "BENCH"
    ex = m.meta.exposure
    ex.type = "MIR_IMAGE" if instrument == "miri" else "NRC_IMAGE"
    ex.start_time, ex.mid_time, ex.end_time = e.start_mjd, e.start_mjd + 0.002, e.start_mjd + 0.004
    ex.exposure_time = ex.effective_exposure_time = 322.1
    ex.noutputs = n_amps
    sub = m.meta.subarray
    sub.name, sub.xstart, sub.ystart, sub.xsize, sub.ysize = "FULL", 1, 1, shape[1], shape[0]
    sub.fastaxis, sub.slowaxis = (-1, 2) if instrument == "nircam" else (1, 2)
    w = m.meta.wcsinfo
    w.v2_ref, w.v3_ref, w.v3yangle, w.vparity, w.roll_ref = e.det_v2, e.det_v3, 0.0, -1, 0.0
    w.ra_ref, w.dec_ref = (float(v) for v in m.meta.wcs((shape[1] - 1) / 2, (shape[0] - 1) / 2))
    m.meta.bunit_data, m.meta.bunit_err = "MJy/sr", "MJy/sr"
    update_fits_wcsinfo(m, max_pix_error=0.01, npoints=16)
    e.path.parent.mkdir(parents=True, exist_ok=True)
    tmp = e.path.with_name(e.path.stem + ".part.fits")
    m.save(str(tmp))
    tmp.rename(e.path)
    return e.path


def write_mosaic(path: Path, instrument: str, exposures: list[Exposure]) -> Path:
    """The band's mosaic on a north-up grid at its mosaic pixel, rendered from the scene (true sky)."""
    if path.is_file():
        return path
    from astropy.io import fits
    from astropy.wcs import WCS

    from jwstgal.bands import get_band
    from jwstgal.simulate.sky import render_points

    band = get_band("F200W" if instrument == "nircam" else "F770W")
    pix = band.pixel_scale
    sci_tiles = {e.tile for e in exposures if not e.background}
    half_w = 172.0 if instrument == "nircam" else 60.0
    step = 60.0 if instrument == "nircam" else 50.0
    half_h = (80.0 if instrument == "nircam" else 65.0) + step * (len(sci_tiles) - 1)
    cy = step * (len(sci_tiles) - 1)
    nx, ny = int(2 * half_w / pix), int(2 * half_h / pix)
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval = [RA0, DEC0 + cy / 3600]
    w.wcs.crpix = [(nx + 1) / 2, (ny + 1) / 2]
    w.wcs.cdelt = [-pix / 3600, pix / 3600]
    rng = np.random.default_rng(5)
    data = np.empty((ny, nx), np.float32)
    for y0 in range(0, ny, 1024):     # in strips: the bench's own memory stays small
        yy, xx = np.mgrid[y0:min(ny, y0 + 1024), 0:nx].astype(float)
        ra, dec = w.pixel_to_world_values(xx, yy)
        data[y0:y0 + yy.shape[0]] = sky(ra, dec) + rng.normal(0, NOISE / 2, yy.shape)
    sra, sdec, sflux = stars()
    x, y = w.world_to_pixel_values(sra, sdec)
    data += render_points(data.shape, x, y, sflux, band.fwhm_pix).astype(np.float32)
    hdr = w.to_header()
    ph = fits.PrimaryHDU()
    ph.header.update(INSTRUME=instrument.upper(), FILTER=band.filter, TELESCOP="JWST", EXPMID=60000.0)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".part")
    fits.HDUList([ph, fits.ImageHDU(data, hdr, name="SCI"),
                  fits.ImageHDU(np.full_like(data, NOISE / 2), hdr, name="ERR")]).writeto(tmp, overwrite=True)
    tmp.rename(path)
    return path


def reference_catalog(path: Path) -> Path:
    """The stars' true positions as an astrometric reference table (ra, dec)."""
    from astropy.table import Table

    if not path.is_file():
        ra, dec, _ = stars()
        Table({"ra": ra, "dec": dec}).write(path, format="fits", overwrite=True)
    return path
