import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table
from astropy.wcs import WCS

from jwstgal.astrometry import (
    AlignPass,
    align_catalogs,
    apply_to_positions,
    correct_fits_wcs,
    from_tangent_plane,
    propagate_proper_motion,
    tangent_plane,
)
from jwstgal.errors import StepFailedError

RA0, DEC0 = 24.17, 15.78
PASSES = [AlignPass(searchrad=2.0, tolerance=0.5), AlignPass(searchrad=0.2, tolerance=0.05,
                                                               use2dhist=False)]


def field(n=300, seed=0, radius=60.0):
    rng = np.random.default_rng(seed)
    xy = rng.uniform(-radius, radius, (n, 2))
    ra, dec = from_tangent_plane(xy, RA0, DEC0)
    return ra, dec, rng


def observe(ra, dec, rng, shift_mas=(0.0, 0.0), rot_deg=0.0, noise_mas=5.0, n_missing=50, extra=30):
    """Image catalogue: reference stars moved by a shift/rotation, with noise, gaps and spurious ones."""
    xy = tangent_plane(ra, dec, RA0, DEC0)
    t = np.deg2rad(rot_deg)
    rot = np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])
    img = (rot @ xy.T).T + np.asarray(shift_mas) / 1000 + rng.normal(0, noise_mas / 1000, xy.shape)
    img = img[n_missing:]
    img = np.vstack([img, rng.uniform(-60, 60, (extra, 2))])
    return from_tangent_plane(img, RA0, DEC0)


def test_tangent_plane_round_trip():
    ra, dec, _ = field()
    ra2, dec2 = from_tangent_plane(tangent_plane(ra, dec, RA0, DEC0), RA0, DEC0)
    assert np.allclose(ra, ra2, atol=1e-10) and np.allclose(dec, dec2, atol=1e-10)


def test_two_pass_shift_recovered_within_5_mas():
    ra, dec, rng = field()
    img_ra, img_dec = observe(ra, dec, rng, shift_mas=(400.0, -250.0))
    res = align_catalogs(img_ra, img_dec, ra, dec, PASSES, center=(RA0, DEC0))
    assert res.passes_ok == 2 and res.n_matches > 200
    # the correction is minus the injected error
    assert np.allclose(res.shift * 1000, [-400.0, 250.0], atol=5.0)
    fixed_ra, fixed_dec = apply_to_positions(res, img_ra[:100], img_dec[:100])
    sep = tangent_plane(fixed_ra, fixed_dec, RA0, DEC0) - tangent_plane(ra[50:150], dec[50:150], RA0, DEC0)
    assert np.median(np.hypot(*sep.T)) * 1000 < 10


def test_rotation_fit_and_fits_wcs_correction():
    ra, dec, rng = field(seed=1)
    img_ra, img_dec = observe(ra, dec, rng, shift_mas=(100.0, 50.0), rot_deg=0.01, noise_mas=2.0)
    res = align_catalogs(img_ra, img_dec, ra, dec, PASSES, fitgeom="rshift", center=(RA0, DEC0))
    assert res.rotation_deg == pytest.approx(-0.01, abs=0.001)
    # a FITS WCS in which the image positions were measured, corrected, lands on the reference
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval = [RA0, DEC0]
    w.wcs.crpix = [1000, 1000]
    w.wcs.cd = np.array([[-0.031, 0.0], [0.0, 0.031]]) / 3600
    x, y = w.world_to_pixel_values(img_ra[:100], img_dec[:100])
    fixed = WCS(correct_fits_wcs(w.to_header(), res))
    fra, fdec = fixed.pixel_to_world_values(x, y)
    sep = tangent_plane(fra, fdec, RA0, DEC0) - tangent_plane(ra[50:150], dec[50:150], RA0, DEC0)
    assert np.median(np.hypot(*sep.T)) * 1000 < 5


def test_failed_second_pass_keeps_the_first():
    ra, dec, rng = field(seed=2)
    img_ra, img_dec = observe(ra, dec, rng, shift_mas=(300.0, 0.0), noise_mas=40.0)
    impossible = [PASSES[0], AlignPass(searchrad=0.01, tolerance=0.001, use2dhist=False)]
    res = align_catalogs(img_ra, img_dec, ra, dec, impossible, center=(RA0, DEC0), min_matches=50)
    assert res is not None and res.passes_ok == 1
    assert np.allclose(res.shift * 1000, [-300.0, 0.0], atol=15.0)


def test_no_match_gives_none():
    ra, dec, rng = field(seed=3)
    far_ra, far_dec = field(seed=4)[:2]
    assert align_catalogs(far_ra + 0.1, far_dec, ra, dec, PASSES[:1], min_matches=20) is None


def test_proper_motions_propagated():
    t = Table({"ra": [RA0], "dec": [DEC0], "pmra": [100.0], "pmdec": [-50.0], "ref_epoch": [2016.0]})
    ra, dec = propagate_proper_motion(t, 2024.0)
    assert (ra[0] - RA0) * np.cos(np.deg2rad(DEC0)) * 3.6e6 == pytest.approx(800.0, rel=1e-6)
    assert (dec[0] - DEC0) * 3.6e6 == pytest.approx(-400.0, rel=1e-6)
    plain = Table({"RA": [1.0], "DEC": [2.0]})
    assert propagate_proper_motion(plain, 2024.0) == (pytest.approx([1.0]), pytest.approx([2.0]))


def test_merge_detections_makes_one_star_per_position():
    from jwstgal.visit_shifts import merge_detections

    ra, dec, rng = field(n=50, seed=5)
    jitter = [from_tangent_plane(tangent_plane(ra, dec, RA0, DEC0) + rng.normal(0, 0.01, (50, 2)),
                                 RA0, DEC0) for _ in range(3)]
    mra, mdec = merge_detections(jitter, radius_arcsec=0.1)
    assert len(mra) == 50
    from scipy.spatial import cKDTree

    dist, _ = cKDTree(tangent_plane(ra, dec, RA0, DEC0)).query(tangent_plane(mra, mdec, RA0, DEC0))
    assert dist.max() < 0.03          # arcsec: each merged star is the mean of its three detections


def test_pass_lengths_in_pixels_of_the_band(tmp_path):
    """PHANGS configs give search radii and tolerances as '5pix': pixels of the image aligned."""
    import pytest as _pytest
    from factories import MINIMAL_SCIENCE, write_config

    from jwstgal.astrometry_io import PassSettings, align_pass
    from jwstgal.bands import get_band
    from jwstgal.config import load_config
    from jwstgal.errors import ConfigError

    p = align_pass(PassSettings(searchrad="5pix", tolerance="1.5pix").model_dump(),
                   get_band("F200W").pixel_scale)
    assert p.searchrad == _pytest.approx(5 * get_band("F200W").pixel_scale)
    assert p.tolerance == _pytest.approx(1.5 * get_band("F200W").pixel_scale) and p.separation == 0.5
    ok = ('[[astrometric_align.passes]]\nsearchrad = "10pix"\ntolerance = 0.3\n'
          '[astrometric_align.override.miri]\npasses = [{ searchrad = "4pix", tolerance = "1pix" }]\n')
    run = load_config(*write_config(tmp_path, science=MINIMAL_SCIENCE + ok), check_jwst=False)
    from jwstgal.steps import BandContext, get_step

    miri = get_step("astrometric_align").resolved(BandContext.of(run, "ngc0628", get_band("F770W")))
    assert miri["passes"][0]["searchrad"] == "4pix"
    bad = '[[astrometric_align.passes]]\nsearchrad = "10px"\n'
    with _pytest.raises(ConfigError, match=r"astrometric_align.passes\[0\].searchrad.*'5pix'"):
        load_config(*write_config(tmp_path, science=MINIMAL_SCIENCE + bad), check_jwst=False)


def test_visit_shifts_are_solved_over_the_graph_of_overlaps(caplog):
    """A chain A-B-C (C does not overlap A) and a lone visit D: C gets its shift through B, D none."""
    from jwstgal.visit_shifts import solve_visit_shifts

    rng = np.random.default_rng(3)
    stars = rng.uniform([-10, -30], [400, 30], (6000, 2))              # a strip of sky (arcsec)
    boxes = {"A": (-5, 65), "B": (45, 115), "C": (95, 165), "D": (300, 370)}
    errors = {"A": (30.0, -20.0), "B": (-80.0, 55.0), "C": (120.0, 90.0), "D": (-60.0, 10.0)}   # mas
    catalogs = {}
    for v, (lo, hi) in boxes.items():
        inside = stars[(stars[:, 0] > lo) & (stars[:, 0] < hi)]
        if v == "A":
            inside = np.vstack([inside, rng.uniform([-5, -30], [65, 30], (200, 2))])  # most stars
        seen = inside + np.asarray(errors[v]) / 1000 + rng.normal(0, 0.003, inside.shape)
        catalogs[v] = from_tangent_plane(seen, RA0, DEC0)
    passes = [AlignPass(searchrad=0.5, tolerance=0.3),
              AlignPass(searchrad=0.2, tolerance=0.05, use2dhist=False)]
    with caplog.at_level("WARNING"):
        out = solve_visit_shifts(catalogs, passes)
    for v in "BC":        # the shift that brings the visit onto A, within 2 mas
        expect = (np.asarray(errors["A"]) - np.asarray(errors[v]))
        assert np.linalg.norm(np.asarray(out[v]["shift"]) * 1000 - expect) < 2.0, (v, out[v])
    assert out["A"]["reference"] and out["A"]["shift"] == [0.0, 0.0]
    assert out["C"]["n_pairs"] == 1 and out["B"]["n_pairs"] == 2 and out["A"]["group"] == out["C"]["group"]
    assert out["D"]["shift"] == [0.0, 0.0] and out["D"]["n_pairs"] == 0
    assert out["D"]["group"] != out["A"]["group"]
    assert "visit D overlaps no other visit" in caplog.text
    assert all(out[v]["residual_mas"] < 2.0 for v in "ABC")


def test_reference_stars_in_close_pairs_still_match():
    """Reference stars in pairs closer than the tolerance overflow tweakwcs' matcher (one slot per
    image source: the alignment failed for 5 of these 6 fields); the alignment must still work."""
    for seed in range(6):
        ra, dec, rng = field(n=1200, seed=seed)
        xy = tangent_plane(ra, dec, RA0, DEC0)
        twins = xy[:80] + rng.normal(0, 0.25, (80, 2))            # 80 stars with a twin ~0.25" away
        ref_ra, ref_dec = from_tangent_plane(np.vstack([xy, twins]), RA0, DEC0)
        img_ra, img_dec = observe(ra[:200], dec[:200], rng, shift_mas=(120.0, -80.0), n_missing=0, extra=0)
        res = align_catalogs(img_ra, img_dec, ref_ra, ref_dec, PASSES)
        assert res is not None and res.n_matches > 150, seed
        assert np.hypot(*(res.shift * 1000 + np.array([120.0, -80.0]))) < 2.0, seed


def test_visit_rotations_are_solved_over_the_graph_too():
    """fitgeom = "rshift": a chain A-B-C of visits each shifted and rotated; after its correction
    every visit's stars sit where visit A sees them (C through B: it does not overlap A)."""
    from jwstgal.astrometry import AlignResult, apply_to_positions
    from jwstgal.visit_shifts import solve_visit_shifts

    rng = np.random.default_rng(5)
    stars = rng.uniform([-10, -30], [180, 30], (3000, 2))
    boxes = {"A": (-5, 70), "B": (45, 120), "C": (95, 170)}
    errors = {"A": ((30.0, -20.0), 0.0), "B": ((-80.0, 55.0), 0.01), "C": ((120.0, 90.0), -0.015)}

    def seen(v, xy):                    # visit v's view: rotated about (0, 0) by its error, shifted
        t = np.deg2rad(errors[v][1])
        rot = np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])
        return (rot @ xy.T).T + np.asarray(errors[v][0]) / 1000

    catalogs, truth = {}, {}
    for v, (lo, hi) in boxes.items():
        inside = stars[(stars[:, 0] > lo) & (stars[:, 0] < hi)]
        if v == "A":
            inside = np.vstack([inside, rng.uniform([-5, -30], [70, 30], (200, 2))])
        truth[v] = inside
        catalogs[v] = from_tangent_plane(seen(v, inside) + rng.normal(0, 0.002, inside.shape), RA0, DEC0)
    passes = [AlignPass(searchrad=0.5, tolerance=0.3),
              AlignPass(searchrad=0.2, tolerance=0.05, use2dhist=False)]
    out = solve_visit_shifts(catalogs, passes, fitgeom="rshift")
    assert abs(out["B"]["rotation_deg"] + 0.01) < 0.001 and abs(out["C"]["rotation_deg"] - 0.015) < 0.001
    for v in "BC":
        t = np.deg2rad(out[v]["rotation_deg"])
        rot = np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])
        res = AlignResult(np.asarray(out[v]["shift"]), rot, out[v]["rotation_deg"], 1.0, 0.0, 0, 0,
                          tuple(out[v]["center_deg"]))
        got = tangent_plane(*apply_to_positions(res, *catalogs[v]), RA0, DEC0)
        want = seen("A", truth[v])
        assert np.median(np.hypot(*(got - want).T)) * 1000 < 3.0, v


def _cal_with_stars(path, ra_ref=150.1, dec_ref=2.2, size=256, seed=3):
    """A small cal file with a gwcs (and its FITS approximation) and 40 stars."""
    import dataclasses

    from jwst.assign_wcs.util import update_fits_wcsinfo
    from stdatamodels.jwst.datamodels import ImageModel

    from jwstgal.bands import get_band
    from jwstgal.simulate.instrument import build_gwcs, setup_for_band
    from jwstgal.simulate.sky import render_points

    setup = dataclasses.replace(setup_for_band(get_band("F200W"), size), v3yangle=3.0)
    w = build_gwcs(setup, ra_ref, dec_ref, 20.0)
    w.bounding_box = ((-0.5, size - 0.5), (-0.5, size - 0.5))
    rng = np.random.default_rng(seed)
    x, y = rng.uniform(12, size - 12, (2, 40))
    data = render_points((size, size), x, y, rng.uniform(200, 800, 40), 2.1)
    data += rng.normal(0, 0.5, (size, size))
    m = ImageModel(data=data.astype(np.float32), dq=np.zeros((size, size), np.uint32))
    m.meta.wcs = w
    m.meta.wcsinfo.v2_ref, m.meta.wcsinfo.v3_ref = setup.v2_ref, setup.v3_ref
    m.meta.wcsinfo.ra_ref, m.meta.wcsinfo.dec_ref, m.meta.wcsinfo.roll_ref = ra_ref, dec_ref, 20.0
    update_fits_wcsinfo(m, max_pix_error=0.01, npoints=16)
    m.save(str(path))
    return path, np.asarray(w(x, y))


@pytest.mark.pipeline
def test_exposure_stars_read_the_fits_wcs_and_match_the_gwcs(tmp_path):
    """Stars come from the arrays and the SCI header alone, at the gwcs positions (< 1 mas)."""
    from astropy.io import fits

    from jwstgal.astrometry_io import exposure_stars

    cal, truth = _cal_with_stars(tmp_path / "jw02107001001_02101_00001_nrcb1_cal.fits")
    assert fits.getheader(cal, "SCI")["CTYPE1"].startswith("RA---")
    ra, dec = exposure_stars(cal, 2.1)
    assert ra.size >= 35
    xy_true = tangent_plane(*truth, 150.1, 2.2)
    xy = tangent_plane(ra, dec, 150.1, 2.2)
    d = np.min(np.hypot(*(xy[:, None, :] - xy_true[None, :, :]).transpose(2, 0, 1)), axis=1)
    assert np.max(d) * 1000 < 15          # centroiding of noisy stars; the WCS adds < 1 mas:
    with fits.open(cal, mode="update") as h:  # the same detections through the gwcs instead
        for k in ("CTYPE1", "CTYPE2"):
            del h["SCI"].header[k]
    ra_g, dec_g = exposure_stars(cal, 2.1)
    diff = tangent_plane(ra, dec, 150.1, 2.2) - tangent_plane(ra_g, dec_g, 150.1, 2.2)
    assert np.max(np.abs(diff)) * 1000 < 1.0


def test_star_cache_is_reused_and_redone_when_the_file_changes(tmp_path, monkeypatch):
    import os

    from jwstgal.steps import wcs_solve as wcs_adjust

    cal, _ = _cal_with_stars(tmp_path / "jw02107001001_02101_00001_nrcb1_cal.fits")
    calls = []
    real = wcs_adjust.exposure_stars
    monkeypatch.setattr(wcs_adjust, "exposure_stars", lambda c, f: calls.append(c) or real(c, f))
    cache = tmp_path / "stars" / "x_stars.ecsv"
    first = wcs_adjust.cached_stars(cal, 2.1, cache)
    again = wcs_adjust.cached_stars(cal, 2.1, cache)
    assert len(calls) == 1 and np.array_equal(first[0], again[0]) and first[0].size >= 35
    wcs_adjust.cached_stars(cal, 2.5, cache)                 # another FWHM: detected again
    st = cal.stat()
    os.utime(cal, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))   # the file was rewritten
    wcs_adjust.cached_stars(cal, 2.5, cache)
    assert len(calls) == 3
    assert not list(cache.parent.glob("*.part*"))


@pytest.mark.pipeline
def test_point_sources_found_tile_by_tile_as_in_one_piece():
    """A mosaic searched in tiles finds the same stars, at the same positions, as in one piece."""
    from jwstgal.point_sources import centroids, find_point_sources
    from jwstgal.simulate.sky import render_points

    rng = np.random.default_rng(4)
    ny, nx = 1500, 1700
    x, y = rng.uniform(20, nx - 20, 150), rng.uniform(20, ny - 20, 150)
    yy, xx = np.mgrid[:ny, :nx]
    img = 5.0 + 0.002 * xx + render_points((ny, nx), x, y, rng.uniform(300, 3000, 150), 2.5)
    img += rng.normal(0, 1.0, img.shape)
    img[:, :100] = np.nan                           # a mosaic's empty border
    whole = find_point_sources(img, 2.5, max_sources=0)
    tiled = find_point_sources(img.astype(np.float32), 2.5, max_sources=0, tile=512)
    xw, yw = centroids(whole)
    xt, yt = centroids(tiled)
    assert len(whole) > 100 and abs(len(tiled) - len(whole)) <= 3
    d = np.hypot(xt[:, None] - xw[None], yt[:, None] - yw[None]).min(axis=1)
    assert np.median(d) < 0.01 and np.mean(d < 0.1) > 0.97
    brightest = find_point_sources(img, 2.5, max_sources=20, tile=512)
    assert len(brightest) == 20
    assert np.min(brightest["flux"]) >= np.sort(np.asarray(tiled["flux"]))[-20] - 1e-9


@pytest.mark.pipeline
def test_shifted_copies_leave_no_cyclic_garbage(tmp_path):
    """A worker going through exposures holds one exposure at a time: what a datamodel leaves in
    reference cycles is freed before the function returns, even with the automatic collector off
    (else two or three exposures' arrays pile up in a worker between collections)."""
    import gc
    import tracemalloc

    from astropy.io import fits

    from jwstgal.astrometry import AlignResult
    from jwstgal.wcs_corrections import apply_wcs_adjust, tweakback

    cal, _ = _cal_with_stars(tmp_path / "jw02107001001_02101_00001_nrcb1_cal.fits")
    t = np.deg2rad(0.02)
    rot = AlignResult(np.array([0.05, 0.02]), np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]]),
                      0.02, 1.0, 1.0, 20, 2, (150.1, 2.2))
    frame = 256 * 256 * 4
    apply_wcs_adjust(cal, tmp_path / "warm_cal.fits", [0.0, 0.0])      # imports and caches first
    gc.collect()
    gc.disable()
    tracemalloc.start()
    try:
        for k, run in enumerate((lambda: apply_wcs_adjust(cal, tmp_path / "shifted_cal.fits", [0.1, -0.05]),
                                 lambda: tweakback(cal, tmp_path / "rotated_crf.fits", rot))):
            run()
            held = tracemalloc.get_traced_memory()[0]
            gc.collect()
            freed = held - tracemalloc.get_traced_memory()[0]
            assert freed < frame / 4, (k, freed / frame)
    finally:
        tracemalloc.stop()
        gc.enable()
    assert fits.getheader(tmp_path / "shifted_cal.fits")["WCSADJ"] == "[0.1, -0.05]"


def test_one_epoch_rule_for_the_pipeline_step_and_the_stpipe_step(tmp_path, caplog):
    """Issue #31 item 6: without a time keyword both used to fall back, to different epochs."""
    from astropy.io import fits
    from astropy.time import Time

    from jwstgal.astrometry import FALLBACK_EPOCH, observation_epoch
    from jwstgal.astrometry_io import mosaic_epoch

    mjd = Time("2023-07-02T12:00:00").mjd
    assert observation_epoch([None, mjd]) == pytest.approx(Time(mjd, format="mjd").decimalyear)
    assert observation_epoch([], "2023-07-02") == pytest.approx(Time("2023-07-02").decimalyear)
    bare = tmp_path / "bare_i2d.fits"
    fits.PrimaryHDU().writeto(bare)
    with caplog.at_level("WARNING"):
        assert mosaic_epoch(bare) == FALLBACK_EPOCH == observation_epoch([None], None)
    assert "no observation time" in caplog.text and "bare_i2d.fits" in caplog.text
    dated = tmp_path / "dated_i2d.fits"
    fits.PrimaryHDU(header=fits.Header({"DATE-OBS": "2023-07-02"})).writeto(dated)
    assert mosaic_epoch(dated) == pytest.approx(Time("2023-07-02").decimalyear)


def test_the_gaia_cone_covers_the_mosaic_and_keeps_only_good_stars():
    """Issue #31 item 6: the cone followed a fixed 5' radius; no quality cuts."""
    from astropy.table import MaskedColumn

    from jwstgal.astrometry import footprint_cone, select_gaia_stars

    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval = [24.17, 15.78]
    w.wcs.crpix = [1, 1]
    w.wcs.cdelt = [-0.11 / 3600, 0.11 / 3600]
    ra, dec, radius = footprint_cone(w, (6000, 9000))          # a 16.5' x 11' mosaic
    half_diagonal = 0.11 * np.hypot(9000, 6000) / 2 / 60
    assert radius == pytest.approx(1.1 * half_diagonal, rel=0.01) and radius > 5
    assert w.world_to_pixel_values(ra, dec) == pytest.approx((4499.5, 2999.5), abs=0.5)
    small = footprint_cone(w, (600, 600))[2]
    assert small == pytest.approx(1.1 * 0.11 * 600 * np.sqrt(2) / 2 / 60, rel=0.01) and small < 1
    t = Table({"ra": [1.0] * 5, "dec": [2.0] * 5, "ruwe": [1.0, 2.5, 1.1, 1.0, 1.2],
               "pmra": MaskedColumn([1.0, 1.0, 1.0, 0.0, 1.0], mask=[0, 0, 0, 1, 0]),
               "astrometric_excess_noise_sig": [0.5, 0.5, 8.0, 0.5, 0.1],
               "duplicated_source": [False, False, False, False, True]})
    assert len(select_gaia_stars(t)) == 1                        # RUWE, excess noise, no pm, duplicate


def test_a_borrowed_solution_is_measured_on_the_borrowers_own_stars():
    """Issue #28: the QA page checks a borrowed alignment against the band's own stars."""
    from jwstgal.astrometry import AlignResult, from_tangent_plane, own_star_offsets, tangent_plane

    rng = np.random.default_rng(3)
    c = (150.0, 2.0)
    ref_ra, ref_dec = c[0] + rng.uniform(-0.02, 0.02, 60), c[1] + rng.uniform(-0.02, 0.02, 60)
    true_shift = np.array([0.060, -0.050])                  # the band's own error: 78 mas
    xy = tangent_plane(ref_ra, ref_dec, *c) - true_shift + rng.normal(0, 0.004, (60, 2))
    img_ra, img_dec = from_tangent_plane(xy, *c)

    def result(shift):
        return AlignResult(np.asarray(shift, float), np.eye(2), 0.0, 1.0, 5.0, 20, 2, c)

    n, off = own_star_offsets(result(true_shift), img_ra, img_dec, ref_ra, ref_dec)
    assert n == 60 and off < 3.0                                # the right correction
    n, off = own_star_offsets(result([0.0, 0.0]), img_ra, img_dec, ref_ra, ref_dec)
    assert n >= 55 and abs(off - 78.1) < 3.0                   # a wrong one: off by what it missed
    assert own_star_offsets(result(true_shift), img_ra[:0], img_dec[:0], ref_ra, ref_dec)[0] == 0


def test_the_quiver_key_covers_neither_the_numbers_nor_the_arrows():
    """Issue #28: the key sat on the title's median/rms numbers."""
    import matplotlib.pyplot as plt

    from jwstgal.plots import quiver_figure

    rng = np.random.default_rng(0)
    res = {"n": 40, "ra": (150 + rng.uniform(-0.01, 0.01, 40)).tolist(),
           "dec": (2 + rng.uniform(-0.01, 0.01, 40)).tolist(), "dra": rng.normal(0, 8, 40).tolist(),
           "ddec": rng.normal(0, 8, 40).tolist(), "median_dra_mas": 0.4, "median_ddec_mas": -0.2,
           "rms_mas": 8.1}
    fig = quiver_figure(res, "ngc0000_miri_lv3_f770w_i2d.fits: residuals after alignment")
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    (ax,) = fig.axes
    key = next(a for a in ax.get_children() + fig.get_children() if type(a).__name__ == "QuiverKey")
    from matplotlib.transforms import Bbox

    x, y = fig.transFigure.transform((key.X, key.Y))               # where the arrow is drawn
    key_box = Bbox.union([key.text.get_window_extent(renderer),
                          Bbox.from_extents(x - 2, y - 2, x + 2, y + 2)])
    assert not key_box.overlaps(ax.title.get_window_extent(renderer))
    assert not key_box.overlaps(ax.get_window_extent(renderer))
    assert not key_box.overlaps(ax.xaxis.label.get_window_extent(renderer))
    assert key.text.get_text() == "10 mas"                  # a length like the residuals'
    plt.close(fig)


ORIGINAL_WCS_ADJUST = """
[wcs_adjust.ngc0628.jw02107001001]
shift = [0.1, -0.05]
matrix = [[0.9999999996192378, -8.726646259971648e-4], [8.726646259971648e-4, 0.9999999996192378]]

[wcs_adjust.ngc0628.jw02107002001]
shift = [0.02, 0.0]

[wcs_adjust.ngc1365.jw02107005001]
shift = [0.3, 0.3]
"""


@pytest.mark.pipeline
def test_the_original_wcs_adjust_file_is_read_and_applied_as_the_original_did(tmp_path):
    """Issue #31 item 4: the seed's [wcs_adjust.<target>.<visit>] shift/matrix used to be read as
    no visit at all (every exposure kept its WCS, silently)."""
    from stdatamodels.jwst.datamodels import ImageModel

    from jwstgal.steps.wcs_adjust import TANGENT_PLANE, apply_visit_correction, read_wcs_adjust

    toml_path = tmp_path / "ngc0628" / "wcs_adjust.toml"
    toml_path.parent.mkdir()
    toml_path.write_text(ORIGINAL_WCS_ADJUST)
    shifts = read_wcs_adjust(toml_path)
    assert sorted(shifts) == ["jw02107001001", "jw02107002001"]
    assert shifts["jw02107002001"] == {"frame": TANGENT_PLANE, "shift": [0.02, 0.0],
                                       "matrix": [[1.0, 0.0], [0.0, 1.0]]}
    cal, _ = _cal_with_stars(tmp_path / "jw02107001001_02101_00001_nrcb1_cal.fits")
    out = apply_visit_correction(cal, tmp_path / "out_cal.fits", shifts["jw02107001001"])
    x, y = np.meshgrid([10.0, 245.0], [10.0, 245.0])
    with ImageModel(str(cal)) as a, ImageModel(str(out)) as b:
        before = tangent_plane(*map(np.asarray, a.meta.wcs(x.ravel(), y.ravel())), 150.1, 2.2)
        after = tangent_plane(*map(np.asarray, b.meta.wcs(x.ravel(), y.ravel())), 150.1, 2.2)
    moved = (after - before) * 1000                                         # mas
    assert np.allclose(np.median(moved, axis=0), [100, -50], atol=8), moved   # the shift...
    sep, dd = before[3] - before[0], (after[3] - before[3]) - (after[0] - before[0])
    turn = np.degrees((sep[0] * dd[1] - sep[1] * dd[0]) / (sep @ sep))
    assert abs(abs(turn) - 0.05) < 0.005, turn                                  # ...and the matrix
    assert fits.getheader(out)["WCSTPSHF"] == "[0.1, -0.05]"
    (tmp_path / "ngc2997").mkdir()
    (tmp_path / "ngc2997" / "wcs_adjust.toml").write_text(ORIGINAL_WCS_ADJUST)
    with pytest.raises(StepFailedError, match="without 'ngc2997' .it has ngc0628, ngc1365"):
        read_wcs_adjust(tmp_path / "ngc2997" / "wcs_adjust.toml")
    # strun knows exposures, not targets: their visits pick the entries
    picked = read_wcs_adjust(tmp_path / "ngc2997" / "wcs_adjust.toml", visits={"jw02107005001"})
    assert list(picked) == ["jw02107005001"] and picked["jw02107005001"]["shift"] == [0.3, 0.3]


def test_a_shifts_file_naming_no_visit_of_the_target_is_refused(tmp_path):
    from jwstgal.steps.wcs_adjust import check_known_visits

    f = tmp_path / "wcs_adjust.toml"
    exposures = [tmp_path / "jw02107001001_02101_00001_nrcb1_cal.fits"]
    check_known_visits(f, {"jw02107001001": {"shift": [0.0, 0.0]}}, exposures)
    check_known_visits(f, {}, exposures)                          # an empty file: no shifts, kept
    with pytest.raises(StepFailedError, match="names no visit of this target's exposures"):
        check_known_visits(f, {"jw09999001001": {"shift": [0.1, 0.0]}}, exposures)


def test_the_shifts_file_the_step_solved_keys_as_its_solve_and_an_edit_as_its_content(tmp_path):
    """No rekey (issue #27): a run that has yet to solve keys on the solve's inputs; the file it
    writes, unedited, keys the same, so the next run computes the key this one recorded; an edit,
    another solve's file or a file of an older version key on their content."""
    from jwstgal.steps.base import content_hash
    from jwstgal.steps.wcs_adjust import read_wcs_adjust, shifts_key, write_shifts

    f = tmp_path / "ngc0000" / "wcs_adjust.toml"
    inputs, other = "0123456789abcdef", "fedcba9876543210"
    before = shifts_key(f, inputs)
    doc = {"wcs_adjust": {"jw02107001001": {"shift": [0.012, -0.02], "group": "F200W 1",
                                            "residual_mas": 1.5}}}
    write_shifts(f, doc, inputs)
    assert shifts_key(f, inputs) == before == f"solved {inputs}"
    assert read_wcs_adjust(f)["jw02107001001"]["shift"] == [0.012, -0.02]       # still plain TOML
    assert shifts_key(f, other) == content_hash(f)                 # solved from other inputs
    f.write_text(f.read_text().replace("0.012", "0.015"))           # a hand edit
    assert shifts_key(f, inputs) == content_hash(f) != before
    write_shifts(f, doc)                                            # an older version's file
    assert shifts_key(f, inputs) == content_hash(f)


def _galaxy_sky(ra, dec, seed=4):
    """A galaxy-like scene at sky positions (deg): disc, two arms, 80 compact clumps."""
    rng = np.random.default_rng(seed)
    x = (ra - 150.0) * np.cos(np.deg2rad(2.0)) * 3600        # arcsec east
    y = (dec - 2.0) * 3600
    r, th = np.hypot(x, y), np.arctan2(y, x)
    sky = 5 * np.exp(-r / 6) * (1 + 0.5 * np.cos(2 * th - r / 2.5))
    for cx, cy, amp in zip(*rng.uniform(-14, 14, (2, 80)), rng.uniform(1, 5, 80), strict=True):
        sky += amp * np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * 0.25 ** 2))
    return sky


def _mosaic(path, pixscale, n, fwhm_arcsec, noise, offset_mas=(0.0, 0.0), seed=0):
    """A north-up mosaic of the scene, observed at ``fwhm_arcsec``; its header WCS is off by
    ``offset_mas`` (east, north): it puts each pixel that far from where the sky really is."""
    from scipy.ndimage import gaussian_filter

    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval = [150.0, 2.0]
    w.wcs.crpix = [(n + 1) / 2, (n + 1) / 2]
    w.wcs.cdelt = [-pixscale / 3600, pixscale / 3600]
    yy, xx = np.indices((n, n))
    ra, dec = w.pixel_to_world_values(xx, yy)
    img = gaussian_filter(_galaxy_sky(ra, dec), fwhm_arcsec / pixscale / 2.355)
    img += np.random.default_rng(seed).normal(0, noise, img.shape)
    w.wcs.crval = [150.0 + offset_mas[0] / 3.6e6 / np.cos(np.deg2rad(2.0)), 2.0 + offset_mas[1] / 3.6e6]
    hdr = w.to_header()
    hdr["EXTNAME"] = "SCI"
    fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(img.astype(np.float32), hdr)]).writeto(path)
    return path


def test_image_offset_registers_bands_of_different_resolution():
    from scipy.ndimage import gaussian_filter
    from scipy.ndimage import shift as move

    from jwstgal.astrometry import image_offset

    yy, xx = np.indices((256, 256))
    sky = _galaxy_sky(150.0 + (xx - 128) * 0.11 / 3600, 2.0 + (yy - 128) * 0.11 / 3600)
    rng = np.random.default_rng(2)
    ref = gaussian_filter(sky, 1.0) + rng.normal(0, 0.05, sky.shape)
    for true in ((0.3, -0.7), (1.25, 0.4)):
        img = move(gaussian_filter(sky, 2.5), (-true[0], -true[1]), order=3) + rng.normal(0, 0.1, sky.shape)
        got, err = image_offset(img, ref)
        assert np.allclose(got, true, atol=0.03), (got, true)
        assert np.all(err < 0.05)


@pytest.mark.pipeline
def test_a_starless_band_is_aligned_by_cross_correlation_with_its_reference_band(tmp_path):
    """Issue #31 item 7 (pjpipe's cross_corr): the band's mosaic, 40 mas off, against the aligned
    mosaic of a sharper band on a finer grid; recovered within 5 mas, inside its quoted error."""
    import json

    from jwstgal.astrometry_io import cross_correlation_result
    from jwstgal.steps.astrometric_align import AlignTask, AstrometricAlignSettings

    lender = tmp_path / "F770W" / "astrometric_align"
    lender.mkdir(parents=True)
    ref = _mosaic(lender / "ngc0000_miri_lv3_f770w_i2d_align.fits", 0.06, 500, 0.27, 0.02)
    (lender / "solution.json").write_text("{}")
    band = tmp_path / "F2100W"
    (band / "lv3").mkdir(parents=True)
    i2d = _mosaic(band / "lv3" / "ngc0000_miri_lv3_f2100w_i2d.fits", 0.11, 270, 0.67, 0.05,
                  offset_mas=(32.0, -24.0), seed=1)
    result, err = cross_correlation_result(i2d, ref)
    assert np.allclose(result.shift * 1000, [-32.0, 24.0], atol=5), result.shift * 1000
    assert max(err) < 10
    params = {"mapping_mode": "cross_correlate", "passes": [], "fitgeom": "shift", "min_matches": 5}
    out = band / "astrometric_align"
    out.mkdir()
    settings = AstrometricAlignSettings(**params)
    AlignTask(i2d, band / "none.ecsv", out, settings, None, lender / "solution.json", 6.0, "abc",
              band / "qa").run()
    sol = json.loads((out / "solution.json").read_text())
    assert sol["method"] == "cross_correlation" and sol["cross_correlated_with"] == "F770W"
    assert sol["borrowed_from"] is None and len(sol["shift_err_mas"]) == 2
    aligned = WCS(fits.getheader(out / "ngc0000_miri_lv3_f2100w_i2d_align.fits", "SCI"))
    ra, dec = aligned.pixel_to_world_values(134.5, 134.5)     # the centre pixel sees (150, 2)
    off = tangent_plane(np.array([ra]), np.array([dec]), 150.0, 2.0)[0] * 1000
    assert np.hypot(*off) < 5, off                            # (40 mas before)
