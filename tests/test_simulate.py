from dataclasses import replace

import numpy as np
import pytest
from astropy.io import fits

from jwstgal.bands import get_band
from jwstgal.simulate import detector as det
from jwstgal.simulate.instrument import DetectorMaps, setup_for_band
from jwstgal.simulate.sky import Galaxy, make_star_catalog, render_points


def test_pink_noise_has_one_over_f_spectrum():
    rng = np.random.default_rng(1)
    x = det.pink_noise(rng, 2**16, 8)
    assert np.allclose(x.std(axis=1), 1.0)
    f = np.fft.rfftfreq(x.shape[1])[1:]
    p = (np.abs(np.fft.rfft(x, axis=1)) ** 2).mean(axis=0)[1:]
    slope = np.polyfit(np.log(f), np.log(p), 1)[0]
    assert slope == pytest.approx(-1.0, abs=0.1)


def test_onef_noise_makes_per_amplifier_horizontal_stripes():
    setup = replace(setup_for_band(get_band("F200W"), 512), n_amps=4)   # as in a full frame
    rng = np.random.default_rng(2)
    reads = det.onef_noise_reads(rng, setup, 2, rms_uncorrelated=5.0, rms_correlated=0.0)
    frame = reads[0]
    w = setup.size // setup.n_amps
    amp_rows = frame.reshape(setup.size, setup.n_amps, w).mean(axis=2)  # (rows, amps)
    # rows within an amplifier are strongly structured: row means far above white-noise expectation
    white_row_rms = frame.std() / np.sqrt(w)
    assert amp_rows.std(axis=0).min() > 3 * white_row_rms
    # uncorrelated component: amplifiers differ
    corr = np.corrcoef(amp_rows.T)
    assert np.abs(corr[np.triu_indices(4, 1)]).max() < 0.5


def test_correlated_noise_is_shared_by_amplifiers():
    setup = replace(setup_for_band(get_band("F200W"), 512), n_amps=4)
    reads = det.onef_noise_reads(np.random.default_rng(3), setup, 1, 0.0, 5.0)
    w = setup.size // setup.n_amps
    amp_rows = reads[0].reshape(setup.size, setup.n_amps, w).mean(axis=2)
    corr = np.corrcoef(amp_rows.T)
    assert corr[np.triu_indices(4, 1)].min() > 0.8


def test_render_points_conserves_flux_and_centroid():
    img = render_points((41, 41), np.array([20.3]), np.array([19.6]), np.array([100.0]), 2.5)
    assert img.sum() == pytest.approx(100.0, rel=1e-4)
    yy, xx = np.mgrid[:41, :41]
    assert (img * xx).sum() / img.sum() == pytest.approx(20.3, abs=1e-3)
    assert (img * yy).sum() / img.sum() == pytest.approx(19.6, abs=1e-3)


def test_ramp_slope_recovers_injected_rate():
    setup = setup_for_band(get_band("F200W"), 128)
    maps = DetectorMaps(setup, 1)
    rate = np.full(setup.shape, 5.0)
    ramp = det.make_ramp(np.random.default_rng(0), setup, maps, rate, np.zeros(setup.shape), None)
    slope = det.ramp_slope(ramp[0].astype(float), setup.frame_time)
    sci = ~setup.refpix_mask()
    expected = 5.0 * np.median(maps.flat[sci]) + maps.dark_rate
    assert np.median(slope[sci]) == pytest.approx(expected, rel=0.01)
    assert np.median(slope[setup.refpix_mask()]) == pytest.approx(maps.dark_rate, abs=0.02)


def test_star_catalog_is_deterministic_and_seed_dependent():
    g = Galaxy(10.0, -20.0)
    a, b = make_star_catalog(g, 50, 60, 1), make_star_catalog(g, 50, 60, 1)
    c = make_star_catalog(g, 50, 60, 2)
    assert np.array_equal(a["ra"], b["ra"]) and not np.array_equal(a["ra"], c["ra"])


@pytest.mark.pipeline
def test_programme_truth_and_determinism(tiny_sim, tiny_raw, tmp_path):
    from jwstgal.simulate.programme import simulate_programme

    truth = tiny_raw / "ngc0000" / "simulation_truth"
    uncals = sorted((tiny_raw / "ngc0000" / "mastDownload" / "JWST").glob("*/*_uncal.fits"))
    # F200W: 2 dithers; F770W: 2 dithers + 2 background exposures
    assert len(uncals) == 6
    assert sum("_02201_" in p.name or "_02202_" in p.name for p in uncals) == 2
    again = simulate_programme(tiny_sim, "ngc0000", ["F200W", "F770W"], tmp_path, progress=False)
    for p in uncals:
        other = tmp_path / p.relative_to(tiny_raw)
        assert np.array_equal(fits.getdata(p, "SCI"), fits.getdata(other, "SCI")), p.name
    assert (again / "stars.ecsv").read_text() == (truth / "stars.ecsv").read_text()
    h = fits.getheader(truth / f"{uncals[1].name.replace('_uncal.fits', '')}_truth.fits")
    assert "POINTING_ERROR_RA_MAS" in h and "JGAL_VER" in h


def test_simulation_is_resumable(tiny_sim, tiny_raw):
    from jwstgal.simulate.programme import simulate_programme

    files = sorted((tiny_raw / "ngc0000" / "mastDownload").rglob("*_uncal.fits"))
    mtimes = [p.stat().st_mtime_ns for p in files]
    simulate_programme(tiny_sim, "ngc0000", ["F200W", "F770W"], tiny_raw, progress=False)
    assert [p.stat().st_mtime_ns for p in files] == mtimes


def test_a_finished_simulation_in_a_read_only_raw_tree_is_only_read(tiny_sim, tiny_raw):
    import stat

    from jwstgal.simulate.programme import simulate_programme

    folders = [d for d in (tiny_raw / "ngc0000").rglob("*") if d.is_dir()] + [tiny_raw / "ngc0000"]
    before = {p: p.stat().st_mtime_ns for p in (tiny_raw / "ngc0000").rglob("*")}
    try:
        for d in folders:
            d.chmod(stat.S_IRUSR | stat.S_IXUSR)
        simulate_programme(tiny_sim, "ngc0000", ["F200W", "F770W"], tiny_raw, progress=False)
    finally:
        for d in folders:
            d.chmod(stat.S_IRWXU)
    # (root ignores the permissions, so the contents are what is checked)
    assert {p: p.stat().st_mtime_ns for p in (tiny_raw / "ngc0000").rglob("*")} == before


def test_changed_simulation_settings_refuse_to_mix_with_old_raw_data(tiny_sim, tiny_raw):
    from jwstgal.errors import InputNotFoundError
    from jwstgal.simulate.programme import simulate_programme

    changed = tiny_sim.model_copy(update={"n_stars": 10})
    with pytest.raises(InputNotFoundError, match="simulation made with other"):
        simulate_programme(changed, "ngc0000", ["F200W", "F770W"], tiny_raw, progress=False)


def test_subarrays_are_read_through_one_output_and_full_frames_through_four():
    assert setup_for_band(get_band("F200W"), 512).noutputs == 1
    assert setup_for_band(get_band("F200W"), 512).n_amps == 1
    assert setup_for_band(get_band("F444W"), 2048).n_amps == 4


def test_the_default_psf_keeps_the_raw_trees_simulated_before_it(tiny_sim, tiny_raw):
    """``[simulation] psf`` left at 'gaussian' is out of the simulation's key: raw trees made before
    it existed stay current (the key is the one they recorded, computed the old way)."""
    import json

    from jwstgal.provenance import hash_params

    dump = tiny_sim.model_dump()
    assert dump.pop("psf") == "gaussian"
    record = json.loads((tiny_raw / "ngc0000" / "simulation_truth" / "simulation.json").read_text())
    assert record["hash"] == hash_params([dump, ["F200W", "F770W"]])


@pytest.mark.pipeline
def test_a_sky_drawn_through_the_kernels_psf(tmp_path):
    """``psf = 'kernels'``: each star of the noise-free sky is the given (non-Gaussian) PSF integrated
    over the pixels at the star's position, the galaxy keeps its light, the header names the PSF,
    and a simulation made with another PSF is refused."""
    import numpy as np

    from jwstgal.config import SimulationConfig
    from jwstgal.errors import InputNotFoundError
    from jwstgal.psfs import PSF, pixel_integrated
    from jwstgal.simulate.programme import simulate_programme
    from jwstgal.simulate.psf_render import detector_psf

    band = get_band("F770W")
    n, os_ = 361, 4
    yy, xx = np.mgrid[0:n, 0:n] - (n - 1) / 2
    alpha = band.fwhm_pix * os_ / (2 * np.sqrt(2 ** (1 / 2.5) - 1))
    moffat = (1 + (xx**2 + yy**2) / alpha**2) ** -2.5
    psf = PSF("F770W", moffat / moffat.sum(), band.pixel_scale / os_, "a Moffat")
    sim = SimulationConfig(seed=5, detector_size=128, n_dithers=1, n_tiles=1, n_stars=300,
                           miri_background=False, psf="kernels")
    with pytest.raises(ValueError, match="needs the PSFs of F770W"):
        simulate_programme(sim, "ngc0000", ["F770W"], tmp_path, progress=False)
    truth = simulate_programme(sim, "ngc0000", ["F770W"], tmp_path, progress=False, psfs={"F770W": psf})
    (one,) = sorted(truth.glob("*_truth.fits"))
    with fits.open(one) as h:
        sky = np.asarray(h["SKY"].data, float)
        assert h[0].header["SIMPSF"] == "a Moffat"
    flat = simulate_programme(sim.model_copy(update={"n_stars": 0}), "ngc0000", ["F770W"], tmp_path / "b",
                              progress=False, psfs={"F770W": psf})
    with fits.open(next(flat.glob("*_truth.fits"))) as h:
        galaxy = np.asarray(h["SKY"].data, float)
    stars = sky - galaxy
    # the brightest star inside: the drawn pixels are its flux times the PSF at its phase
    from astropy.table import Table

    from jwstgal.simulate.instrument import build_gwcs, setup_for_band
    from jwstgal.simulate.programme import PA_V3
    from jwstgal.simulate.sky import star_flux_ujy

    cat = Table.read(truth / "stars.ecsv")
    plan = Table.read(truth / "exposures.ecsv")[0]
    setup = setup_for_band(band, 128)
    cosd = np.cos(np.deg2rad(plan["dec_ref"]))
    w = build_gwcs(setup, plan["ra_ref"] + plan["pointing_error_ra_mas"] / 3.6e6 / cosd,
                   plan["dec_ref"] + plan["pointing_error_dec_mas"] / 3.6e6, PA_V3 + setup.v3yangle)
    x, y = w.world_to_pixel_values(np.asarray(cat["ra"]), np.asarray(cat["dec"]))
    flux = star_flux_ujy(cat, band) * 1e-12 / (band.pixel_scale / 206264.806) ** 2
    inside = (x > 20) & (x < 107) & (y > 20) & (y < 107)
    # the brightest star inside with no other above 1 % of it within 10 pixels
    near = np.hypot(x[:, None] - x[None, :], y[:, None] - y[None, :]) < 10
    crowded = (near & (flux[None, :] > 0.01 * flux[:, None])).sum(axis=1) > 1
    pick = np.nonzero(inside & ~crowded)[0]
    i = pick[np.argmax(flux[pick])]
    cx, cy = round(x[i]), round(y[i])
    d = detector_psf(psf, band.pixel_scale, os_)
    want = flux[i] * pixel_integrated(d.over, os_, 6, (x[i] - cx, y[i] - cy), d.spline)
    got = stars[cy - 6:cy + 7, cx - 6:cx + 7]
    assert np.abs(got - want).max() < 0.02 * want.max()
    sharp = simulate_programme(sim.model_copy(update={"n_stars": 0, "psf": "gaussian"}), "ngc0000",
                               ["F770W"], tmp_path / "c", progress=False)
    with fits.open(next(sharp.glob("*_truth.fits"))) as h:
        unblurred = np.asarray(h["SKY"].data, float)
    assert galaxy.mean() == pytest.approx(unblurred.mean(), rel=0.005)    # light kept
    assert galaxy.max() < unblurred.max()                                  # and blurred
    with pytest.raises(InputNotFoundError, match="PSFs"):
        other = PSF("F770W", np.roll(psf.data, 1, axis=0), psf.pixscale, "moved")
        simulate_programme(sim, "ngc0000", ["F770W"], tmp_path, progress=False, psfs={"F770W": other})
