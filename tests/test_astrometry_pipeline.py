"""Relative (wcs_adjust) and absolute (astrometric_align) astrometry on a simulated programme (slow)."""

import json
import tomllib

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table
from factories import run_reprocessing

pytestmark = pytest.mark.slow

SCIENCE = """
[projects.9999]
targets = ["ngc0000"]

[simulation]
seed = 31
detector_size = 512
n_dithers = 3
n_tiles = 2
n_stars = 3000
pointing_error_mas = 3.0
visit_pointing_error_mas = 120.0
miri_background = false

[pipeline]
data_version = "ast"
nircam_bands = ["F200W"]
miri_bands = ["F770W", "F2100W"]

[pipeline.steps]
nircam = ["lv1", "lv2", "wcs_adjust", "lv3", "astrometric_align", "field_mosaics"]
miri = ["lv1", "lv2", "wcs_adjust", "lv3", "astrometric_catalog", "astrometric_align"]

[alignment]
ngc0000 = "ngc0000_sim_cat.fits"

[wcs_adjust]
bands = ["F200W", "F770W"]

[astrometric_align]
alignment_mapping = { F2100W = "F770W" }

[astrometric_catalog]
snr = 5
brightest = 300

[lv2_parameters.resample]
skip = true

[lv3_parameters.tweakreg]
snr_threshold = 5
fitgeometry = "shift"
searchrad = 0.5
separation = 0.5
tolerance = { nircam = 0.2, miri = 0.4 }
bkg_boxsize = { nircam = 100, miri = 25 }

[lv3_parameters.source_catalog]
snr_threshold = 5
bkg_boxsize = { nircam = 50, miri = 25 }
"""


LIMIT_MAS = {"F200W": 5.0, "F770W": 15.0}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return run_reprocessing(tmp_path_factory.mktemp("ast"), SCIENCE)


@pytest.mark.parametrize("band", ["F200W", "F770W"])
def test_relative_visit_shifts_recovered(run, band):
    exp = Table.read(run / "raw" / "ngc0000" / "simulation_truth" / "exposures.ecsv")
    shifts = tomllib.loads((run / "work" / "jwst_lv3_reprocessed_ast" / "ngc0000" /
                            "wcs_adjust.toml").read_text())["wcs_adjust"]
    rows = exp[exp["band"] == band]
    visits = sorted({o.split("_")[0] for o in rows["obs_id"]})
    assert len(visits) == 2 and all(v in shifts for v in visits)
    def mean_err(v):
        sel = [r for r in rows if r["obs_id"].startswith(v)]
        return np.array([np.mean([r["pointing_error_ra_mas"] for r in sel]),
                         np.mean([r["pointing_error_dec_mas"] for r in sel])])

    measured = (np.array(shifts[visits[1]]["shift"]) - np.array(shifts[visits[0]]["shift"])) * 1000
    expected = mean_err(visits[1]) - mean_err(visits[0])
    assert np.linalg.norm(expected) > 15                     # the visits really were misaligned
    assert np.linalg.norm(measured - expected) < LIMIT_MAS[band], (measured, expected)
    # the stars were found file by file (executor pre-tasks) and kept per exposure
    target = run / "work" / "jwst_lv3_reprocessed_ast" / "ngc0000"
    cached = {p.name.replace("_stars.ecsv", ".fits") for p in (target / ".wcs_adjust_stars" / band).iterdir()}
    cal = {p.name for p in (target / band / "cal").glob("*_cal.fits")}
    assert len(cached) >= 4 and cached <= cal
    # solved once for the target (its own step and record), not once per band
    record = json.loads((target / ".jwstgal" / "wcs_solve.json").read_text())
    assert record["complete"] and record["outputs"] == ["wcs_adjust.toml"]


@pytest.mark.parametrize(("band", "instr"), [("F200W", "nircam"), ("F770W", "miri")])
def test_absolute_alignment_puts_the_mosaic_on_the_truth(run, band, instr):
    from jwstgal.simulate.score import score_truth_centroids

    out = run / "work" / "jwst_lv3_reprocessed_ast" / "ngc0000" / band / "astrometric_align"
    stem = f"ngc0000_{instr}_lv3_{band.lower()}"
    stars = run / "raw" / "ngc0000" / "simulation_truth" / "stars.ecsv"
    before = score_truth_centroids(out.parent / "lv3" / f"{stem}_i2d.fits", stars, band,
                                   box_fwhm=8.0, max_offset_pix=8.0)
    after = score_truth_centroids(out / f"{stem}_i2d_align.fits", stars, band)
    assert after.n_matched >= 20, after
    assert after.median_offset * after.pixel_scale * 1000 < LIMIT_MAS[band], (before, after)
    assert before.median_offset * before.pixel_scale * 1000 > LIMIT_MAS[band]   # it did fix something
    assert "ASTALIGN" in fits.getheader(out / f"{stem}_i2d_align.fits")
    assert len(list(out.glob("*_crf_tweakback.fits"))) == 6
    assert (out.parent / "qa" / "astrometric_align.png").is_file()
    assert (out.parent / "qa" / "astrometric_align_mosaic.png").is_file()     # the aligned quicklook


def test_weak_band_borrows_the_reference_band_solution(run):
    import json

    base = run / "work" / "jwst_lv3_reprocessed_ast" / "ngc0000"
    own = json.loads((base / "F770W" / "astrometric_align" / "solution.json").read_text())
    borrowed = json.loads((base / "F2100W" / "astrometric_align" / "solution.json").read_text())
    assert borrowed["borrowed_from"].endswith("F770W/astrometric_align/solution.json")
    assert borrowed["shift_arcsec"] == own["shift_arcsec"]
    assert borrowed["own_stars"]["n"] >= 5 and borrowed["own_stars"]["offset_mas"] < 30   # checked
    h = fits.getheader(base / "F2100W" / "astrometric_align" / "ngc0000_miri_lv3_f2100w_i2d_align.fits")
    assert json.loads(h["ASTALIGN"]) == pytest.approx(own["shift_arcsec"], abs=1e-6)


def test_released_catalogue_carries_the_alignment(run):
    """The released catalogue agrees with the released mosaic's WCS (< 5 mas) and with the truth
    (the stage-3 catalogue did not)."""
    from astropy.coordinates import SkyCoord
    from astropy.wcs import WCS

    from jwstgal.release import build_release

    rep, rel = run / "work" / "jwst_lv3_reprocessed_ast", run / "work" / "release"
    build_release(rep, rel, ["ngc0000"], ["F200W"])
    stem = "ngc0000_nircam_lv3_f200w"
    cat = Table.read(rel / "ngc0000" / f"{stem}_cat.ecsv")
    wcs = WCS(fits.getheader(rel / "ngc0000" / f"{stem}_i2d.fits", "SCI"))
    sky = SkyCoord(cat["sky_centroid"])
    assert sky.separation(wcs.pixel_to_world(cat["xcentroid"], cat["ycentroid"])).to_value("mas").max() < 5
    stars = Table.read(run / "raw" / "ngc0000" / "simulation_truth" / "stars.ecsv")
    truth = SkyCoord(stars["ra"], stars["dec"], unit="deg")

    def median_offset(coords):
        idx, sep, _ = coords.match_to_catalog_sky(truth)
        return float(np.median(sep.to_value("mas")[sep.to_value("mas") < 300]))

    before = SkyCoord(Table.read(rep / "ngc0000" / "F200W" / "lv3" / f"{stem}_cat.ecsv")["sky_centroid"])
    assert median_offset(sky) < 10 < median_offset(before), (median_offset(sky), median_offset(before))


def test_dry_run_after_the_run_plans_only_what_changed(run):
    """(Before the test that edits the shifts file by hand.)"""
    from factories import reprocess_cli

    def tree():
        return sorted((str(p), p.stat().st_mtime_ns) for p in run.rglob("*"))

    changed = run / "s_changed.toml"
    changed.write_text(SCIENCE.replace('alignment_mapping = { F2100W = "F770W" }',
                                       'alignment_mapping = { F2100W = "F770W" }\nmin_matches = 4'))
    before = tree()
    same = reprocess_cli(run / "s.toml", run / "l.toml", "--dry-run", timeout=600)
    edited = reprocess_cli(changed, run / "l.toml", "--dry-run", timeout=600)
    assert tree() == before                         # a dry run writes nothing
    assert same.returncode == 0 and edited.returncode == 0, edited.stderr[-3000:]

    def actions(text):
        return {(band, line.split()[0]): line.split()[1] for block in text.split("ngc0000 ")[1:]
                for band, _, rest in [block.partition(":")] for line in rest.splitlines()
                if line.startswith("  ") and not line.startswith("      ")}

    a, b = actions(same.stdout), actions(edited.stdout)
    assert len(a) == 3 * 7 and set(a.values()) == {"skip"}, same.stdout   # 6 steps and wcs_solve
    # the aligned bands and what follows them (F200W's field mosaics take its solution)
    assert {k for k, v in b.items() if v == "run"} == {*((band, "astrometric_align") for band in
                                                         ("F200W", "F770W", "F2100W")),
                                                       ("F200W", "field_mosaics")}, edited.stdout
    assert "settings or inputs changed" in edited.stdout


def test_stpipe_steps_reproduce_the_pipeline(run):
    """``WcsAdjustStep.call`` on a band's cal models measures the pipeline's visit shifts, and
    ``AstrometricAlignStep.call`` on its mosaic puts it on the truth like the pipeline's step."""
    from astropy.coordinates import SkyCoord
    from stdatamodels.jwst.datamodels import ImageModel

    from jwstgal.simulate.score import score_truth_centroids
    from jwstgal.stpipe_steps import AstrometricAlignStep, WcsAdjustStep

    base = run / "work" / "jwst_lv3_reprocessed_ast" / "ngc0000" / "F200W"
    cal = sorted((base / "cal").glob("*_cal.fits"))
    assert len(cal) == 6
    out = WcsAdjustStep.call([str(c) for c in cal])
    for c, m in zip(cal, out, strict=True):
        with ImageModel(str(base / "wcs_adjust" / c.name)) as ref:
            assert m.meta.filename == c.name
            here, there = (SkyCoord(*w(200.0, 300.0), unit="deg") for w in (m.meta.wcs, ref.meta.wcs))
            assert here.separation(there).to_value("mas") < 1.0

    stem = "ngc0000_nircam_lv3_f200w"
    truth = run / "raw" / "ngc0000" / "simulation_truth"
    aligned = AstrometricAlignStep.call(str(base / "lv3" / f"{stem}_i2d.fits"),
                                        catalog=str(truth / "ngc0000_sim_cat.fits"))
    path = run / f"{stem}_i2d_stpipe.fits"
    aligned.save(str(path))
    after = score_truth_centroids(path, truth / "stars.ecsv", "F200W")
    assert after.n_matched >= 20, after
    assert after.median_offset * after.pixel_scale * 1000 < LIMIT_MAS["F200W"], after


def test_own_point_source_catalogue_is_what_miri_aligns_with(run):
    """MIRI bands run astrometric_catalog; F770W aligns on it (the test above checks the result)."""
    from astropy.coordinates import SkyCoord

    base = run / "work" / "jwst_lv3_reprocessed_ast" / "ngc0000" / "F770W"
    cat = Table.read(base / "astrometric_catalog" / "ngc0000_miri_lv3_f770w_astro_cat.fits")
    assert 20 <= len(cat) <= 300
    stars = Table.read(run / "raw" / "ngc0000" / "simulation_truth" / "stars.ecsv")
    _, sep, _ = SkyCoord(cat["ra"], cat["dec"], unit="deg").match_to_catalog_sky(
        SkyCoord(stars["ra"], stars["dec"], unit="deg"))
    assert np.mean(sep.to_value("arcsec") < 0.3) > 0.8          # point sources, mostly true stars
    table = Table.read(base / "astrometric_align" / "ngc0000_miri_lv3_f770w_i2d_align_table.fits")
    import json

    sol = json.loads((base / "astrometric_align" / "solution.json").read_text())
    assert len(table) == sol["n_matches"] and table.meta["REFCAT"] == "ngc0000_sim_cat.fits"
    assert np.sqrt(np.mean(table["dra_mas"] ** 2 + table["ddec_mas"] ** 2)) == pytest.approx(
        sol["rms_mas"], rel=0.05)


def test_rotation_and_scale_are_pushed_back_to_the_crf_files(run, tmp_path):
    from astropy.coordinates import SkyCoord
    from stdatamodels.jwst.datamodels import ImageModel

    from jwstgal.astrometry import apply_to_positions
    from jwstgal.astrometry_io import result_from_dict
    from jwstgal.wcs_corrections import tweakback

    lv3 = run / "work" / "jwst_lv3_reprocessed_ast" / "ngc0000" / "F200W" / "lv3"
    crf = sorted(lv3.glob("*_crf.fits"))[0]
    with ImageModel(str(crf)) as m:
        ny, nx = m.data.shape
        x, y = np.meshgrid(np.linspace(10, nx - 10, 7), np.linspace(10, ny - 10, 7))
        ra, dec = m.meta.wcs(x.ravel(), y.ravel())
        center = (float(np.mean(ra)) + 0.01, float(np.mean(dec)) - 0.005)   # a mosaic centre elsewhere
    t, k = np.deg2rad(0.03), 1.0004
    matrix = k * np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])
    result = result_from_dict({"shift_arcsec": [0.08, -0.05], "rotation_deg": 0.03, "scale": k,
                               "matrix": matrix.tolist(),
                               "rms_mas": 1.0, "n_matches": 50, "passes_ok": 2, "center_deg": center})
    out = tweakback(crf, tmp_path / "tweaked_crf.fits", result)
    want = SkyCoord(*apply_to_positions(result, np.asarray(ra), np.asarray(dec)), unit="deg")
    with ImageModel(str(out)) as m:
        got = SkyCoord(*m.meta.wcs(x.ravel(), y.ravel()), unit="deg")
    before = SkyCoord(ra, dec, unit="deg")
    assert want.separation(before).to_value("mas").max() > 50                 # it is a real change
    assert got.separation(want).to_value("mas").max() < 1.0
    assert fits.getheader(out)["WCSROT"] == pytest.approx(0.03)


def test_field_mosaics_on_the_combined_grid_with_its_alignment(run):
    """One mosaic per visit, pixel for pixel with the combined mosaic, carrying its alignment."""
    from astropy.wcs import WCS

    from jwstgal.simulate.score import score_truth_centroids

    base = run / "work" / "jwst_lv3_reprocessed_ast" / "ngc0000" / "F200W"
    stem = "ngc0000_nircam_lv3_f200w"
    fields = sorted((base / "field_mosaics").glob(f"{stem}_field*_i2d.fits"))
    assert [f.name for f in fields] == [f"{stem}_field001001_i2d.fits", f"{stem}_field001002_i2d.fits"]
    combined = base / "astrometric_align" / f"{stem}_i2d_align.fits"
    whole = fits.getdata(combined, "SCI")
    w_all = WCS(fits.getheader(combined, "SCI"))
    covered = []
    for f in fields:
        data = fits.getdata(f, "SCI")
        assert data.shape == whole.shape
        w = WCS(fits.getheader(f, "SCI"))
        assert np.allclose(w.wcs.crval, w_all.wcs.crval, rtol=0, atol=1e-10)   # the same aligned WCS
        covered.append(np.isfinite(data) & (data != 0))
    only = [c & ~covered[1 - k] for k, c in enumerate(covered)]
    assert all(o.mean() > 0.1 for o in only)                  # each field sees sky the other does not
    for f, o in zip(fields, only, strict=True):               # where one field alone covers: the same
        diff = (fits.getdata(f, "SCI") - whole)[o & np.isfinite(whole)]
        assert np.median(np.abs(diff)) < 1e-3 * np.nanstd(whole)
    score = score_truth_centroids(fields[0], run / "raw" / "ngc0000" / "simulation_truth" / "stars.ecsv",
                                  "F200W")
    assert score.n_matched >= 10 and score.median_offset * score.pixel_scale * 1000 < LIMIT_MAS["F200W"]
    assert len(list((base / "qa" / "field_mosaics").glob("*.png"))) == 2


def test_rerun_skips_every_step_and_an_edited_shift_file_reruns_wcs_adjust(run):
    """Runs last in this module: it edits the shift file."""
    from factories import reprocess_cli

    def rerun():
        res = reprocess_cli(run / "s.toml", run / "l.toml", "--band", "F200W", timeout=1200)
        assert res.returncode == 0, res.stderr[-3000:]
        return res.stderr

    assert "F200W: ran -, skipped lv1,lv2,wcs_solve,wcs_adjust,lv3,astrometric_align,field_mosaics" in rerun()
    toml = run / "work" / "jwst_lv3_reprocessed_ast" / "ngc0000" / "wcs_adjust.toml"
    toml.write_text(toml.read_text() + "\n# checked by hand\n")
    assert "F200W: ran wcs_adjust,lv3,astrometric_align,field_mosaics, skipped lv1,lv2,wcs_solve" in rerun()
