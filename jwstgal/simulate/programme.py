"""Observe the synthetic galaxy as a JWST programme: dithered, tiled NIRCam and MIRI uncal exposures.

:func:`simulate_programme` writes, for one target, a raw tree shaped like a MAST download
(``raw_dir/<target>/mastDownload/JWST/<obs id>/<obs id>_uncal.fits``) and a ``simulation_truth/``
folder that records everything injected: the star catalogue, and per exposure the pointing error,
the background offset, the noise-free sky and the stripe pattern, so that every step can be scored.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.table import Table
from astropy.time import Time

from jwstgal.bands import Band, get_band
from jwstgal.config import SimulationConfig
from jwstgal.errors import InputNotFoundError
from jwstgal.logs import bar_disabled
from jwstgal.provenance import atomic_path, hash_params, stamp_header, write_text_atomic
from jwstgal.psfs import PSF
from jwstgal.simulate import detector as det
from jwstgal.simulate.instrument import DetectorMaps, DetectorSetup, build_gwcs, setup_for_band
from jwstgal.simulate.psf_render import DetectorPSF, detector_psf, render_scene
from jwstgal.simulate.refs import photmjsr
from jwstgal.simulate.sky import (
    Galaxy,
    galaxy_surface_brightness,
    make_star_catalog,
    render_points,
    sky_level,
    star_flux_ujy,
)

log = logging.getLogger(__name__)

PROGRAM = "09999"
PA_V3 = 290.0
#: Dither offsets in pixels (non-integer, as real patterns).
DITHERS = ((0.0, 0.0), (10.3, 5.7), (-7.6, 12.2), (4.4, -9.1), (-12.1, -6.3), (15.2, -3.8),
           (-3.3, 16.4), (8.8, 11.1), (-14.0, 8.5))  # fmt: skip
#: Where the dedicated MIRI background field is (arcsec from the galaxy).
BACKGROUND_OFFSET_ARCSEC = (240.0, 180.0)
T0 = Time("2024-01-15T03:00:00", scale="utc")


@dataclass(frozen=True)
class ExposurePlan:
    """One simulated exposure."""

    band: str
    obs_id: str
    observation: int
    visit: int
    sequence: int
    activity: int
    exposure: int
    tile: int
    dither: int
    ra_ref: float
    dec_ref: float
    pointing_error_ra_mas: float
    pointing_error_dec_mas: float
    background_offset: float
    is_background: bool
    start_mjd: float

    @property
    def filename(self) -> str:
        """Uncal file name."""
        return f"{self.obs_id}_uncal.fits"


def _plan(sim: SimulationConfig, bands: list[Band], target: str) -> list[ExposurePlan]:
    rng = np.random.default_rng([sim.seed, 3])
    plans = []
    t = T0.mjd
    cosd = np.cos(np.deg2rad(sim.dec))
    tile_offsets = rng.normal(0, 1, sim.n_tiles)  # per-tile background offset draws
    visit_errors = np.random.default_rng([sim.seed, 5]).normal(0, sim.visit_pointing_error_mas,
                                                               (sim.n_tiles, 2))
    for bi, band in enumerate(bands):
        setup = setup_for_band(band, sim.detector_size)
        fov = setup.size * setup.pixel_scale
        miri = band.instrument == "miri"
        observation = 2 if miri else 1
        activity = (bi + 1) if miri else 1
        detector = setup.detector.lower()
        fields = [(False, tile) for tile in range(sim.n_tiles)]
        if miri and sim.miri_background:
            fields.append((True, 0))
        for is_bkg, tile in fields:
            if is_bkg:
                cx = sim.ra + BACKGROUND_OFFSET_ARCSEC[0] / 3600.0 / cosd
                cy = sim.dec + BACKGROUND_OFFSET_ARCSEC[1] / 3600.0
                visit, seq, obs = 1, 2, 3
                bkg_off = 0.0
            else:
                shift = (tile - (sim.n_tiles - 1) / 2.0) * 0.75 * fov
                cx, cy = sim.ra + shift / 3600.0 / cosd, sim.dec
                visit, seq, obs = tile + 1, 1, observation
                bkg_off = float(tile_offsets[tile]) * sim.background_offset * sky_level(band)
            for d in range(sim.n_dithers):
                dx, dy = DITHERS[d]
                err = rng.normal(0.0, sim.pointing_error_mas, 2) if d or tile else np.zeros(2)
                if not is_bkg:
                    err = err + visit_errors[tile]
                obs_id = (f"jw{PROGRAM}{obs:03d}{visit:03d}_02{seq}{activity:02d}_{d + 1:05d}_"
                          f"{detector}")
                plans.append(ExposurePlan(
                    band=band.name, obs_id=obs_id, observation=obs, visit=visit, sequence=seq,
                    activity=activity, exposure=d + 1, tile=tile, dither=d,
                    ra_ref=cx + dx * setup.pixel_scale / 3600.0 / cosd,
                    dec_ref=cy + dy * setup.pixel_scale / 3600.0,
                    pointing_error_ra_mas=float(err[0]), pointing_error_dec_mas=float(err[1]),
                    background_offset=bkg_off, is_background=is_bkg, start_mjd=t))
                t += 20.0 / 1440.0
    return plans


def _true_sky(plan: ExposurePlan, setup: DetectorSetup, band: Band, galaxy: Galaxy,
              stars: Table, seed: int, psf: DetectorPSF | None = None) -> np.ndarray:
    """Noise-free sky (MJy/sr) seen by an exposure through its *true* pointing.

    Without ``psf``, stars are Gaussians of the band's FWHM and the galaxy is sampled unblurred;
    with it, both are seen through that PSF, integrated over the pixels (the galaxy is drawn on a
    grid grown by half the PSF, so light from outside the detector is scattered in).
    """
    cosd = np.cos(np.deg2rad(plan.dec_ref))
    true = build_gwcs(setup,
                      plan.ra_ref + plan.pointing_error_ra_mas / 3.6e6 / cosd,
                      plan.dec_ref + plan.pointing_error_dec_mas / 3.6e6,
                      PA_V3 + setup.v3yangle)
    pad = psf.full.shape[0] // 2 if psf is not None else 0
    yy, xx = np.mgrid[-pad:setup.size + pad, -pad:setup.size + pad]
    galaxy_img = np.zeros(yy.shape)
    if not plan.is_background:
        ra, dec = true(xx.astype(float), yy.astype(float))
        galaxy_img = galaxy_surface_brightness(ra, dec, galaxy, band, seed)
    x, y = true.world_to_pixel_values(np.asarray(stars["ra"]), np.asarray(stars["dec"]))
    pix_sr = (setup.pixel_scale / 206264.806) ** 2
    flux_mjysr = star_flux_ujy(stars, band) * 1e-12 / pix_sr  # uJy spread over one pixel
    if psf is None:
        seen = galaxy_img + render_points(setup.shape, x, y, flux_mjysr, band.fwhm_pix)
    else:
        seen = render_scene(galaxy_img, np.asarray(x), np.asarray(y), np.asarray(flux_mjysr), psf, pad)
    return seen + (sky_level(band) + plan.background_offset)


def _uncal_model(plan: ExposurePlan, setup: DetectorSetup, band: Band, ramp: np.ndarray,
                 target: str):
    from stdatamodels.jwst.datamodels import Level1bModel

    m = Level1bModel(data=ramp)
    start = Time(plan.start_mjd, format="mjd")
    dur = setup.exposure_time
    m.meta.telescope = "JWST"
    m.meta.filename = plan.filename
    ins = m.meta.instrument
    ins.name, ins.detector, ins.filter = setup.instrument, setup.detector, band.filter
    if setup.instrument == "NIRCAM":
        ins.pupil = band.pupil
        ins.module = setup.detector[3]
        ins.channel = "SHORT" if band.band_type == "nircam_short" else "LONG"
    ob = m.meta.observation
    ob.date, ob.time = start.isot.split("T")
    ob.program_number = PROGRAM
    ob.observation_number = f"{plan.observation:03d}"
    ob.visit_number = f"{plan.visit:03d}"
    ob.visit_group = "02"
    ob.sequence_id = str(plan.sequence)
    ob.activity_id = f"{plan.activity:02d}"
    ob.exposure_number = f"{plan.exposure:05d}"
    ob.obs_id = plan.obs_id
    m.meta.target.proposer_name = f"{target}-off" if plan.is_background else target
    m.meta.target.catalog_name = target
    ex = m.meta.exposure
    ex.type = "MIR_IMAGE" if setup.instrument == "MIRI" else "NRC_IMAGE"
    ex.readpatt = setup.readpatt
    ex.nframes, ex.groupgap, ex.ngroups, ex.nints = 1, 0, setup.ngroups, 1
    ex.frame_time = ex.group_time = setup.frame_time
    ex.integration_time = ex.exposure_time = ex.effective_exposure_time = dur
    ex.measurement_time = ex.duration = dur
    ex.nresets_at_start, ex.nresets_between_ints, ex.drop_frames1 = 1, 1, 0
    ex.frame_divisor = 1
    ex.sample_time = 10
    ex.start_time, ex.mid_time, ex.end_time = (plan.start_mjd, plan.start_mjd + dur / 172800.0,
                                               plan.start_mjd + dur / 86400.0)
    ex.noutputs = setup.noutputs
    sub = m.meta.subarray
    sub.name, sub.xstart, sub.ystart = setup.subarray_name, 1, 1
    sub.xsize = sub.ysize = setup.size
    sub.fastaxis, sub.slowaxis = (-1, 2) if setup.instrument == "NIRCAM" else (1, 2)
    w = m.meta.wcsinfo
    w.v2_ref, w.v3_ref, w.v3yangle, w.vparity = setup.v2_ref, setup.v3_ref, setup.v3yangle, -1
    w.ra_ref, w.dec_ref, w.roll_ref = plan.ra_ref, plan.dec_ref, PA_V3 + setup.v3yangle
    w.siaf_xref_sci, w.siaf_yref_sci = setup.crpix[0] + 1, setup.crpix[1] + 1
    m.meta.pointing.ra_v1, m.meta.pointing.dec_v1 = plan.ra_ref, plan.dec_ref
    m.meta.pointing.pa_v3 = PA_V3
    m.meta.velocity_aberration.scale_factor = 1.0
    m.meta.aperture.name = f"{setup.detector}_FULL" if setup.is_full_frame else setup.detector
    m.meta.dither.primary_type = "NONE"
    return m


def simulate_exposure(plan: ExposurePlan, sim: SimulationConfig, target: str, raw_file: Path,
                      truth_file: Path, stars: Table, psf: DetectorPSF | None = None) -> None:
    """Simulate one exposure and write its uncal file and truth record (atomically).

    ``psf``: the band's PSF on this detector (``[simulation] psf = 'kernels'``); None draws
    Gaussian stars on an unblurred galaxy.
    """
    band = get_band(plan.band)
    setup = setup_for_band(band, sim.detector_size)
    maps = DetectorMaps(setup, sim.seed)
    galaxy = Galaxy(sim.ra, sim.dec)
    rng = np.random.default_rng([sim.seed, int(plan.start_mjd * 1e5) % 2**31])
    sky = _true_sky(plan, setup, band, galaxy, stars, sim.seed, psf)
    conv = photmjsr(band)
    photon_rate = sky / conv
    if band.instrument == "miri":
        artefact = det.miri_stripes(rng, setup.shape, 0.5 * sim.miri_stripe_amplitude)
        onef = None
    else:
        w = setup.size // setup.n_amps
        amp_off = rng.normal(0.0, 1.0, setup.n_amps) * sim.amp_offset_rms
        artefact = np.repeat(amp_off, w)[None, :] * np.ones((setup.size, 1))
        a = sim.onef_amplitude
        onef = det.onef_noise_reads(rng, setup, setup.ngroups, 8.0 * a, 5.0 * a, 1.0 * a)
    ramp = det.make_ramp(rng, setup, maps, photon_rate, artefact, onef, n_cosmic=20)
    stripes = artefact + (det.ramp_slope(onef, setup.frame_time) if onef is not None else 0.0)
    model = _uncal_model(plan, setup, band, ramp, target)
    with atomic_path(raw_file) as tmp:
        model.save(tmp)
    model.close()
    hdr = fits.Header()
    for k, v in asdict(plan).items():
        hdr[f"HIERARCH {k.upper()}"] = v
    hdr["BUNIT"] = "MJy/sr"
    hdr["SIMPSF"] = ((psf.name if psf is not None else f"Gaussian FWHM {band.fwhm_arcsec:.4f}\"")[:68],
                     "PSF the sky is drawn with")
    stamp_header(hdr, step="simulate", params=sim_key_dump(sim))
    hdul = fits.HDUList([
        fits.PrimaryHDU(header=hdr),
        fits.ImageHDU(sky.astype(np.float32), name="SKY"),
        fits.ImageHDU((stripes * conv).astype(np.float32), name="STRIPES"),
    ])
    with atomic_path(truth_file) as tmp:
        hdul.writeto(tmp)


def simulated_detectors(sim: SimulationConfig, bands: list[str]) -> list[tuple[DetectorSetup, list[str]]]:
    """The detectors a simulation uses and the bands each observes (for the CRDS cache)."""
    out: dict[DetectorSetup, list[str]] = {}
    for b in bands:
        out.setdefault(setup_for_band(get_band(b), sim.detector_size), []).append(b)
    return list(out.items())


def sim_key_dump(sim: SimulationConfig) -> dict:
    """``[simulation]`` as its key sees it: keys added later are left out at their defaults."""
    dump = sim.model_dump()
    if dump.get("psf") == "gaussian":       # raw trees simulated before it existed stay current
        del dump["psf"]
    return dump


def simulate_programme(
    sim: SimulationConfig, target: str, bands: list[str], raw_dir: Path, progress: bool = True,
    psfs: dict[str, PSF] | None = None,
) -> Path:
    """Simulate all exposures of one target; resumable (finished exposures are kept).

    Parameters
    ----------
    sim : SimulationConfig
        Simulation parameters.
    target : str
        Target name (the raw tree's folder).
    bands : list of str
        Bands to observe.
    raw_dir : pathlib.Path
        Root of the raw tree.
    progress : bool
        Show a progress bar.
    psfs : dict of str to PSF, optional
        Each band's PSF, for ``[simulation] psf = 'kernels'`` (required then).

    Returns
    -------
    pathlib.Path
        The target's truth folder.
    """
    from tqdm import tqdm

    band_objs = [get_band(b) for b in bands]
    target_dir = raw_dir / target
    truth_dir = target_dir / "simulation_truth"
    psfs = psfs or {}
    if sim.psf == "kernels" and (lost := [b for b in bands if b not in psfs]):
        msg = f"[simulation] psf = 'kernels' needs the PSFs of {', '.join(lost)}"
        raise ValueError(msg)
    drawn = {b: hashlib.sha256(np.ascontiguousarray(psfs[b].data, np.float32).tobytes()
                               + repr(psfs[b].pixscale).encode()).hexdigest()
             for b in bands} if sim.psf == "kernels" else {}
    key = hash_params([sim_key_dump(sim), bands, drawn] if drawn else [sim_key_dump(sim), bands])
    record = truth_dir / "simulation.json"
    if record.is_file() and json.loads(record.read_text()).get("hash") != key:
        msg = (f"{target_dir} holds a simulation made with other [simulation] settings, bands or PSFs; "
               "remove that folder (or use another raw_dir) to simulate anew")
        raise InputNotFoundError(msg)
    plans = _plan(sim, band_objs, target)
    todo = []
    for p in plans:
        raw_file = target_dir / "mastDownload" / "JWST" / p.obs_id / p.filename
        truth_file = truth_dir / f"{p.obs_id}_truth.fits"
        if not (raw_file.is_file() and truth_file.is_file()):
            todo.append((p, raw_file, truth_file))
    catalogues = [truth_dir / n for n in ("stars.ecsv", f"{target}_sim_cat.fits", "exposures.ecsv")]
    if record.is_file() and not todo and all(c.is_file() for c in catalogues):
        log.info("Simulation of %s complete in %s (only read)", target, target_dir)
        return truth_dir  # nothing is written: a finished (even read-only) raw tree works
    truth_dir.mkdir(parents=True, exist_ok=True)
    radius = 0.75 * sim.n_tiles * max(setup_for_band(b, sim.detector_size).size
                                      * b.pixel_scale for b in band_objs)
    stars = make_star_catalog(Galaxy(sim.ra, sim.dec), sim.n_stars, radius, sim.seed)
    for b in band_objs:
        stars[f"flux_{b.name}"] = star_flux_ujy(stars, b)
    with atomic_path(truth_dir / "stars.ecsv") as tmp:
        stars.write(tmp, format="ascii.ecsv")
    # an astrometric reference catalogue as the suite expects in alignment/ (RA/DEC in degrees):
    # like Gaia or the PHANGS AGB lists it holds only stars bright in the bands observed
    bright = np.max([np.asarray(stars[f"flux_{b.name}"]) for b in band_objs], axis=0) > 2.0
    with atomic_path(truth_dir / f"{target}_sim_cat.fits") as tmp:
        Table({"ra": stars["ra"][bright], "dec": stars["dec"][bright]}).write(tmp, format="fits")
    plan_table = Table(rows=[asdict(p) for p in plans])
    with atomic_path(truth_dir / "exposures.ecsv") as tmp:
        plan_table.write(tmp, format="ascii.ecsv")
    drawn_with: dict[tuple[str, str], DetectorPSF] = {}
    for p, raw_file, truth_file in tqdm(todo, desc=f"simulate {target}", disable=bar_disabled(progress),
                                        unit="exp"):
        psf = None
        if sim.psf == "kernels":
            setup = setup_for_band(get_band(p.band), sim.detector_size)
            if (p.band, setup.detector) not in drawn_with:
                drawn_with[p.band, setup.detector] = detector_psf(psfs[p.band], setup.pixel_scale)
            psf = drawn_with[p.band, setup.detector]
        simulate_exposure(p, sim, target, raw_file, truth_file, stars, psf)
    write_text_atomic(record, json.dumps({"config": sim_key_dump(sim), "bands": bands, "hash": key},
                                         indent=2))
    log.info("Simulated %d exposures of %s (%d already present)", len(todo), target,
             len(plans) - len(todo))
    return truth_dir
