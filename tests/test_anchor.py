"""Background anchoring: the fit on the simulator's sky, and anchor_data.py on files."""

import re
import subprocess
import sys

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table
from conftest import REPO
from factories import write_config

from jwstgal.anchor import binned_fit, estimate_offset
from jwstgal.bands import get_band
from jwstgal.convolve import convolve_image
from jwstgal.ladder import gaussian_kernel
from jwstgal.simulate.external import external_map, external_wcs, write_external_map
from jwstgal.simulate.sky import Galaxy, galaxy_surface_brightness

GALAXY = Galaxy(24.17, 15.78)


def _sky(band: str, pix: float, n: int) -> tuple[np.ndarray, object]:
    w = external_wcs(GALAXY.ra, GALAXY.dec, pix, n)
    yy, xx = np.mgrid[0:n, 0:n]
    ra, dec = w.pixel_to_world_values(xx.astype(float), yy.astype(float))
    return galaxy_surface_brightness(ra, dec, GALAXY, get_band(band), 7), w


@pytest.mark.pipeline
@pytest.mark.parametrize("fwhm", [4.0, 15.0])
def test_fit_recovers_offset_and_slope_on_the_simulated_sky(fwhm):
    """External = a x (sky at fwhm) + c + noise, JWST = sky + z + noise: offset c/a - z within
    1 % of the sky rms (or 0.005 MJy/sr), slope 1/a within 2 %."""
    truth, _ = _sky("F300M", 0.5, 400)
    rng = np.random.default_rng(3)
    a, c, z = 1.3, 0.12, -0.07
    k = gaussian_kernel(fwhm, 0.5)
    jwst = convolve_image(truth + z + 0.02 * rng.standard_normal(truth.shape), k).data
    ext = a * convolve_image(truth, k).data + c + 0.01 * rng.standard_normal(truth.shape)
    fit = binned_fit(ext, jwst)
    assert fit.offset == pytest.approx(c / a - z, abs=max(0.01 * truth.std(), 0.005))
    assert fit.slope == pytest.approx(1 / a, rel=0.02)
    assert fit.intercept_err < 0.005 and fit.used.sum() >= 10


def test_fit_ignores_outlying_bins_and_needs_data():
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 10, 50000)
    y = 2 * x - 1 + 0.05 * rng.standard_normal(x.size)
    y[(x > 6) & (x < 6.5)] += 5                      # a bright source seen only by JWST
    fit = binned_fit(x, y)
    assert fit.slope == pytest.approx(2, rel=0.005) and fit.intercept == pytest.approx(-1, abs=0.01)
    assert not fit.used.all()
    with pytest.raises(ValueError, match="too few"):
        binned_fit(x[:5], y[:5])


def test_a_chained_band_is_read_where_the_anchored_reference_is_zero():
    rng = np.random.default_rng(1)
    ref = rng.uniform(0, 5, (200, 100))
    band = 1.7 * ref + 0.3 + 0.01 * rng.standard_normal(ref.shape)
    off_ref = 0.25
    est = estimate_offset(ref, band, offset_ref=off_ref, offset_ref_err=0.01, degree=1)
    # anchored, the band is proportional to the anchored reference (no intercept left)
    assert binned_fit(ref + off_ref, band + est.offset).intercept == pytest.approx(0, abs=2e-3)
    assert est.stat_err == pytest.approx(0.017, rel=0.2)      # the reference's error, times 1.7
    assert est.method == "line" and len(est.region_offsets) == 4
    assert est.sys_err < 0.01 and est.err >= est.stat_err


def test_a_colour_term_follows_a_curved_relation_and_is_read_at_the_zero():
    rng = np.random.default_rng(2)
    ref = rng.uniform(0, 4, (200, 200))
    band = 0.5 + 1.2 * ref + 0.15 * ref**2 + 0.005 * rng.standard_normal(ref.shape)
    curved = estimate_offset(ref, band, offset_ref=0.2, degree=2)
    assert curved.offset == pytest.approx(-(0.5 - 1.2 * 0.2 + 0.15 * 0.04), abs=2e-3)
    assert curved.fit.curvature == pytest.approx(0.15, rel=0.02) and curved.method == "colour term"
    line = estimate_offset(ref, band, offset_ref=0.2, degree=1)
    assert abs(line.offset - curved.offset) > 0.1            # a line through a curve misses it


def test_the_systematic_error_is_the_spread_over_sub_regions_and_is_nan_when_unmeasurable():
    rng = np.random.default_rng(3)
    ref = rng.uniform(0, 4, (100, 100))
    band = 2 * ref + 0.001 * rng.standard_normal(ref.shape)
    band[:50, :50] += 0.4                              # one quarter of the field sits higher
    est = estimate_offset(ref, band, degree=1)
    assert est.sys_err == pytest.approx(np.std(est.region_offsets, ddof=1))
    assert est.sys_err == pytest.approx(0.2, rel=0.05)   # four offsets: -0.4, 0, 0, 0
    flat = estimate_offset(ref.ravel(), band.ravel(), degree=1)   # no image: no sub-regions
    assert np.isnan(flat.sys_err) and flat.err == flat.stat_err


def _mosaic(path, data, wcs):
    hdr = wcs.to_header()
    hdr["BUNIT"] = "MJy/sr"
    path.parent.mkdir(parents=True, exist_ok=True)
    fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(data.astype(np.float32), hdr, name="SCI"),
                  fits.ImageHDU(np.full(data.shape, 0.01, np.float32), hdr, name="ERR"),
                  fits.ImageHDU(np.ones(data.shape, np.float32), hdr, name="WHT")]).writeto(path)


SCIENCE = """
[projects.1]
targets = ["ngc0000", "ngc0001"]
[pipeline]
data_version = "t1"
miri_bands = ["F770W", "F2100W"]
[kernels]
psf_source = "gaussian"
[convolve]
targets = ["gauss4"]
[anchor]
reference = {miri = "F770W"}
external = {miri = [{band = "irac4", psf = "gauss4"}, {band = "wise3", psf = "gauss15"}]}
internal_psf = {miri = "F2100W"}
"""


@pytest.mark.pipeline
def test_anchor_data_script(tmp_path):
    cfg, loc = write_config(tmp_path, science=SCIENCE, local='[local]\nraw_dir="raw"\nworking_dir="work"\n'
                            'psf_dir="psf"\nanchor_ref_dir="ext"\n')
    rep = tmp_path / "work" / "jwst_lv3_reprocessed_t1"
    truth, wcs = _sky("F770W", 0.11, 401)
    seen = {b: convolve_image(truth, gaussian_kernel(get_band(b).fwhm_arcsec, 0.11)).data
            for b in ("F770W", "F2100W")}          # each band at its (Gaussian) PSF
    rng = np.random.default_rng(5)
    z770, z2100 = -0.21, 0.37                        # zero points the mosaics lost
    for target in ("ngc0000", "ngc0001"):
        _mosaic(rep / target / "F770W" / "lv3" / f"{target}_miri_lv3_f770w_i2d.fits",
                seen["F770W"] + z770 + 0.01 * rng.standard_normal(truth.shape), wcs)
        _mosaic(rep / target / "F2100W" / "lv3" / f"{target}_miri_lv3_f2100w_i2d.fits",
                1.7 * seen["F2100W"] + z2100 + 0.01 * rng.standard_normal(truth.shape), wcs)
    a, c = 0.8, 0.1
    data, ewcs = external_map(GALAXY, get_band("F770W"), None, fwhm=4.0, size_arcsec=90, seed=7,
                              slope=a, offset=c)
    write_external_map(tmp_path / "ext" / "ngc0000_irac4.fits", data, ewcs, name="irac4", fwhm=4.0,
                       slope=a, offset=c, noise=0.003)        # ngc0001 has no external map
    run = [sys.executable, "-c", "import sys; from jwstgal.cli.{} import main; sys.exit(main())",
           str(cfg), str(loc), "--no-progress"]

    def script(name, *extra):
        return subprocess.run([run[0], run[1], run[2].format(name), *run[3:], *extra], capture_output=True,
                              text=True, cwd=REPO, timeout=600)

    assert script("make_kernels").returncode == 0
    res = script("anchor_data")
    assert res.returncode == 1, res.stderr[-3000:]               # ngc0001 could not be anchored
    assert "ngc0001_irac4.fits" in res.stderr and "ngc0001_wise3.fits" in res.stderr
    table = Table.read(rep / "ngc0000" / "anchor" / "ngc0000_anchor.ecsv")
    row = {r["band"]: r for r in table}
    tol = max(0.01 * truth.std(), 0.005)
    assert row["F770W"]["offset"] == pytest.approx(c / a - z770, abs=tol)
    assert row["F770W"]["slope"] == pytest.approx(1 / a, rel=0.02)
    assert row["F770W"]["reference"] == "irac4"
    assert row["F2100W"]["offset"] == pytest.approx(1.7 * c / a - z2100, abs=tol)
    assert row["F2100W"]["slope"] == pytest.approx(1.7, rel=0.02)
    # the faint sky after anchoring (the relative QA limit's scale): the anchored truth's 10th percentile
    faint = np.nanpercentile(1.7 * (seen["F2100W"] + c / a), 10)
    assert row["F2100W"]["sky"] == pytest.approx(faint, rel=0.1)
    assert np.isfinite(row["F770W"]["sky"]) and row["F770W"]["sky"] > 0
    anchored = rep / "ngc0000" / "F2100W" / "anchor" / "ngc0000_miri_lv3_f2100w_i2d_anchor.fits"
    assert fits.getheader(anchored)["ANCHOFF"] == pytest.approx(row["F2100W"]["offset"])
    sci = fits.getdata(anchored, "SCI")
    assert np.nanmedian(sci - 1.7 * (seen["F2100W"] + c / a)) == pytest.approx(0, abs=tol)
    assert (rep / "ngc0000" / "anchor" / "ngc0000_F2100W_vs_F770W.png").is_file()
    other = Table.read(rep / "ngc0001" / "anchor" / "ngc0001_anchor.ecsv")
    assert all(s.startswith("not anchored: no external map") for s in other["status"])
    assert not (rep / "ngc0001" / "F770W" / "anchor").exists()
    again = script("anchor_data")
    assert "anchoring up to date" in again.stderr
    assert re.search(r"ngc0000 MIRI +skip +up to date", script("anchor_data", "--dry-run").stdout)
    kernel = tmp_path / "psf" / "kernels" / "aniano" / "F770W_to_F2100W.fits"
    with fits.open(kernel, mode="update") as h:                      # a remade kernel: refit
        h[0].header["JG_KERN"] = "remade"
    table_time = (rep / "ngc0000" / "anchor" / "ngc0000_anchor.ecsv").stat().st_mtime_ns
    assert re.search(r"ngc0000 MIRI +make +fit against ngc0000_irac4.fits",
                     script("anchor_data", "--dry-run").stdout)
    assert (rep / "ngc0000" / "anchor" / "ngc0000_anchor.ecsv").stat().st_mtime_ns == table_time
    assert "anchoring up to date" not in script("anchor_data").stderr
    # the ladder convolves the anchored mosaic
    assert script("convolve_data").returncode == 0
    conv = rep / "ngc0000" / "F770W" / "convolved" / "ngc0000_miri_lv3_f770w_i2d_conv_gauss4.fits"
    h = fits.open(conv)
    assert "i2d_anchor" in "".join(str(c) for c in h[0].header["HISTORY"])
    assert h["SCI"].header["BMAJ"] == pytest.approx(4 / 3600)
    (tmp_path / "ext" / "ngc0000_irac4.fits").unlink()                 # the map is withdrawn:
    assert script("anchor_data").returncode == 1                       # no stale anchored mosaic
    assert not anchored.exists()


def test_a_fit_read_far_below_its_pixels_carries_the_colour_terms_difference():
    """A field that never gets faint (reference 2-4, read at 0): the line cannot know the colour
    below, so the line-vs-colour-term difference joins the systematic error and covers the truth."""
    rng = np.random.default_rng(4)
    ref = rng.uniform(2, 4, (200, 200))
    band = 0.8 * ref + 0.06 * ref**2 + 0.003 * rng.standard_normal(ref.shape)   # truth: offset 0
    est = estimate_offset(ref, band, degree=1)
    assert 1.0 < est.extrapolation < 1.3          # bins span about 2.05-3.85
    assert abs(est.offset) > 0.2 and est.model_spread > 0.2            # the line misses ...
    assert abs(est.offset) < 2 * est.err and est.sys_err >= est.model_spread   # ... and says so
    near = estimate_offset(rng.uniform(0.05, 4, (200, 200)), rng.uniform(size=(200, 200)), degree=1)
    assert near.extrapolation < 0.1 and near.model_spread == 0


@pytest.mark.pipeline
def test_a_band_whose_wavelength_a_map_covers_is_anchored_to_it_not_chained(tmp_path):
    """[anchor.external] bands: F2100W is fitted against its own map (offset -z2100 there); with
    that map withdrawn it is chained to F770W again, and the table says why."""
    science = SCIENCE.replace('targets = ["ngc0000", "ngc0001"]', 'targets = ["ngc0000"]').replace(
        '{band = "wise3", psf = "gauss15"}', '{band = "mips24", psf = "gauss4", bands = ["F2100W"]}'
    ).replace('targets = ["gauss4"]', 'targets = ["F2100W"]')    # no rung asks F2100W for 4"
    cfg, loc = write_config(tmp_path, science=science, local='[local]\nraw_dir="raw"\nworking_dir="work"\n'
                            'psf_dir="psf"\nanchor_ref_dir="ext"\n')
    rep = tmp_path / "work" / "jwst_lv3_reprocessed_t1"
    truth, wcs = _sky("F770W", 0.11, 401)
    rng = np.random.default_rng(6)
    z770, z2100 = -0.21, 0.37
    for band, scale, z in (("F770W", 1.0, z770), ("F2100W", 1.7, z2100)):
        seen = convolve_image(truth, gaussian_kernel(get_band(band).fwhm_arcsec, 0.11)).data
        _mosaic(rep / "ngc0000" / band / "lv3" / f"ngc0000_miri_lv3_{band.lower()}_i2d.fits",
                scale * seen + z + 0.01 * rng.standard_normal(truth.shape), wcs)
    for name, a, c in (("irac4", 0.8, 0.1), ("mips24", 0.5, 0.0)):
        data, ewcs = external_map(GALAXY, get_band("F770W"), None, fwhm=4.0, size_arcsec=90, seed=7,
                                  slope=a, offset=c, noise_seed=len(name))
        write_external_map(tmp_path / "ext" / f"ngc0000_{name}.fits", data, ewcs, name=name, fwhm=4.0,
                           slope=a, offset=c, noise=0.003)
    run = [sys.executable, "-c"]

    def script(name):
        code = f"import sys; from jwstgal.cli.{name} import main; sys.exit(main())"
        return subprocess.run([*run, code, str(cfg), str(loc), "--no-progress"], capture_output=True,
                              text=True, cwd=REPO, timeout=600)

    assert script("make_kernels").returncode == 0
    assert (tmp_path / "psf" / "kernels" / "aniano" / "F2100W_to_gauss2.fits").is_file()  # 4" via 2"
    res = script("anchor_data")
    assert res.returncode == 0, res.stderr[-3000:]
    row = {r["band"]: r for r in Table.read(rep / "ngc0000" / "anchor" / "ngc0000_anchor.ecsv")}
    tol = max(0.01 * truth.std(), 0.005)
    assert row["F2100W"]["reference"] == "mips24" and row["F2100W"]["psf"] == "gauss4"
    assert row["F2100W"]["offset"] == pytest.approx(-z2100, abs=tol)
    assert row["F770W"]["reference"] == "irac4"                     # mips24 does not anchor F770W
    assert (rep / "ngc0000" / "anchor" / "ngc0000_F2100W_vs_mips24.png").is_file()
    (tmp_path / "ext" / "ngc0000_mips24.fits").unlink()
    assert script("anchor_data").returncode == 0
    row = {r["band"]: r for r in Table.read(rep / "ngc0000" / "anchor" / "ngc0000_anchor.ecsv")}
    assert row["F2100W"]["reference"] == "F770W"
    assert row["F2100W"]["offset"] == pytest.approx(1.7 * 0.1 / 0.8 - z2100, abs=tol)
    assert "mips24: no file" in row["F2100W"]["note"] and "chained" in row["F2100W"]["note"]


def test_external_map_bands_are_checked():
    from jwstgal.config.products import AnchorConfig

    with pytest.raises(ValueError, match="not MIRI bands"):
        AnchorConfig(reference={"miri": "F770W"}, internal_psf={"miri": "F2100W"},
                     external={"miri": [{"band": "irac4", "psf": "gauss4"},
                                        {"band": "w1", "psf": "gauss7.5", "bands": ["F200W"]}]})
    with pytest.raises(ValueError, match="anchors the reference F770W"):
        AnchorConfig(reference={"miri": "F770W"},
                     external={"miri": [{"band": "mips24", "psf": "gauss7.5", "bands": ["F2100W"]}]})


def test_noise_at_4_arcsec_is_the_scatter_of_the_block_medians():
    """White noise reads its 4"-block median scatter; structure on 4" scales reads its own rms."""
    from jwstgal.simulate.score import noise_at

    rng = np.random.default_rng(3)
    white = rng.normal(0, 0.5, (360, 360))                        # 0.11" pixels: 36-px blocks
    assert noise_at(white, 0.11) == pytest.approx(1.2533 * 0.5 / 36, rel=0.25)
    levels = rng.normal(0, 0.05, 10)                             # 4" row bands, 100 blocks of 10 levels
    bands = np.repeat(levels, 36)[:, None] * np.ones((1, 360))
    robust = 1.4826 * np.median(np.abs(np.repeat(levels, 10) - np.median(levels)))
    assert noise_at(white + bands, 0.11) == pytest.approx(robust, rel=0.1)
    assert np.isnan(noise_at(np.full((360, 360), np.nan), 0.11))


@pytest.mark.parametrize("chained", [False, True])
def test_anchoring_truth_measures_the_zero_point_error_and_judges_the_targets(tmp_path, chained):
    """An anchored mosaic of the simulated sky off by a known zero point (issue #26 item 3): the
    error is recovered, and the verdict compares it with 10 % of the sky (chained) or half the
    pixel noise at 4" (external), and with 2 quoted sigma."""
    from jwstgal.simulate.score import TRUTH_MAX_SIGMAS, anchoring_truth
    from jwstgal.simulate.sky import sky_level

    sky, w = _sky("F770W", 0.11, 400)
    rng = np.random.default_rng(4)
    noise = rng.normal(0, 0.05, sky.shape)
    sky_f770w = sky_level(get_band("F770W"))
    for error, quoted in ((0.03, 0.02), (0.4, 0.5), (0.4, 0.1)):
        path = tmp_path / f"m{error}_{quoted}.fits"
        ph = fits.PrimaryHDU()
        ph.header.update(ANCHOFF=-1.0, ANCHERR=quoted)
        fits.HDUList([ph, fits.ImageHDU((sky + error + noise).astype(np.float32), w.to_header(),
                                        name="SCI")]).writeto(path)
        t = anchoring_truth(path, "F770W", "F300M" if chained else "irac4", chained, GALAXY.ra, GALAXY.dec, 7)
        assert t.error == pytest.approx(error, abs=max(3 * t.error_err, 0.003)), t
        assert t.sky == sky_f770w and t.noise < 0.01 and t.quoted == quoted
        limit = 0.1 * sky_f770w if chained else 0.5 * t.noise
        assert t.limit == pytest.approx(limit)
        assert t.met == (abs(t.error) <= limit and abs(t.error / quoted) <= TRUTH_MAX_SIGMAS)
    assert t.as_dict()["sigmas"] == pytest.approx(t.error / 0.1)
