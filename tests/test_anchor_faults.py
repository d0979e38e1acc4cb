"""Anchoring against external maps that are missing, broken or wrong (issues #30 item 4, #31 item 1).

The configured maps are tried in order: a bad one is passed over with its reason in the table, the
next one anchors; when none can, the bands are recorded as not anchored, anchored mosaics of an
earlier run are removed, and the other targets go on. Each test failed before its fix.
"""

from __future__ import annotations

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table
from factories import write_config
from test_anchor import GALAXY, _mosaic, _sky

from jwstgal.bands import get_band
from jwstgal.convolve import convolve_image
from jwstgal.ladder import gaussian_kernel
from jwstgal.simulate.external import external_map, write_external_map

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
external = {miri = [{band = "first", psf = "gauss4"}, {band = "irac4", psf = "gauss4"}]}
internal_psf = {miri = "F2100W"}
"""


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Two targets with MIRI mosaics, kernels, and a good irac4 map each; no 'first' map yet."""
    from jwstgal.config import load_config
    from jwstgal.kernel_products import make_kernel_set

    root = tmp_path_factory.mktemp("anchor")
    cfg, loc = write_config(root, science=SCIENCE, local='[local]\nraw_dir="raw"\nworking_dir="work"\n'
                            'psf_dir="psf"\nanchor_ref_dir="ext"\n')
    rep = root / "work" / "jwst_lv3_reprocessed_t1"
    truth, wcs = _sky("F770W", 0.11, 301)
    rng = np.random.default_rng(5)
    for target in ("ngc0000", "ngc0001"):
        for b, z in (("F770W", -0.21), ("F2100W", 0.37)):
            seen = convolve_image(truth, gaussian_kernel(get_band(b).fwhm_arcsec, 0.11)).data
            _mosaic(rep / target / b / "lv3" / f"{target}_miri_lv3_{b.lower()}_i2d.fits",
                    seen + z + 0.01 * rng.standard_normal(truth.shape), wcs)
        data, ewcs = external_map(GALAXY, get_band("F770W"), None, fwhm=4.0, size_arcsec=60, seed=7,
                                  slope=0.8, offset=0.1)
        write_external_map(root / "ext" / f"{target}_irac4.fits", data, ewcs, name="irac4", fwhm=4.0,
                           slope=0.8, offset=0.1, noise=0.003)
    run = load_config(cfg, loc, check_jwst=False)
    make_kernel_set([], run.science.kernels, run.psf_dir, run.psf_data_dir, progress=False,
                    pairs=run.science.kernel_pairs)
    return run, root / "ext", data, ewcs


def _bad_map(kind: str, path, good: np.ndarray, wcs) -> None:
    hdr = wcs.to_header()
    hdr["BUNIT"] = "MJy/sr"
    data = good.copy()
    if kind == "not_fits":
        path.write_text("SIMPLE = nonsense\n" * 200)
        return
    if kind == "empty":
        path.write_bytes(b"")
        return
    if kind == "no_wcs":
        hdr = fits.Header({"BUNIT": "MJy/sr"})
    elif kind == "no_overlap":
        hdr["CRVAL2"] = hdr["CRVAL2"] + 1.0                       # a degree away
    elif kind == "all_nan":
        data[:] = np.nan
    elif kind == "blank_1e30":
        data[:] = 1e30
    elif kind == "tiny":
        data = data[:3, :3]
    elif kind == "other_units":
        hdr["BUNIT"] = "Jy/pixel"
    elif kind == "scaled_no_bunit":                               # in Jy/sr, unlabelled: slope 1e-6
        del hdr["BUNIT"]
        data = data * 1e6
    fits.PrimaryHDU(data, hdr).writeto(path, overwrite=True)


@pytest.mark.parametrize(("kind", "why"), [
    ("not_fits", "not a readable FITS image"),
    ("empty", "not a readable FITS image"),
    ("no_wcs", "no celestial WCS"),
    ("no_overlap", "does not overlap"),
    ("all_nan", "no finite surface brightness"),
    ("blank_1e30", "no finite surface brightness"),
    ("tiny", "too small to fit"),
    ("other_units", "BUNIT 'Jy/pixel' is not MJy/sr"),
    ("scaled_no_bunit", "outside [anchor] slope_range"),
])
@pytest.mark.pipeline
def test_a_bad_preferred_map_is_passed_over_for_the_next_with_its_reason(world, kind, why):
    from jwstgal.anchor_products import anchor_target

    run, ext, good, wcs = world
    first = ext / "ngc0000_first.fits"
    _bad_map(kind, first, good, wcs)
    try:
        rows = {r.band: r for r in anchor_target(run, "ngc0000", overwrite=True)}
    finally:
        first.unlink()
    assert rows["F770W"].status == "anchored" and rows["F770W"].reference == "irac4"
    assert rows["F2100W"].status == "anchored"
    assert why in rows["F770W"].note and "first" in rows["F770W"].note
    assert rows["F770W"].offset == pytest.approx(0.1 / 0.8 + 0.21, abs=0.02)
    table = Table.read(run.reprocess_dir / "ngc0000" / "anchor" / "ngc0000_anchor.ecsv")
    assert why in str(table[table["band"] == "F770W"]["note"][0])


@pytest.mark.pipeline
def test_no_usable_map_leaves_the_bands_unanchored_removes_stale_products_and_goes_on(world, caplog):
    from jwstgal import layout
    from jwstgal.anchor_products import anchor_target

    run, ext, good, wcs = world
    anchor_target(run, "ngc0001", overwrite=True)                   # a good run first
    anchored = layout.anchored_mosaic(layout.band_dir(run.reprocess_dir, "ngc0001", "F770W"), "ngc0001",
                                      get_band("F770W"))
    assert anchored.is_file()
    irac4 = ext / "ngc0001_irac4.fits"
    kept = irac4.read_bytes()
    _bad_map("all_nan", ext / "ngc0001_first.fits", good, wcs)
    _bad_map("no_overlap", irac4, good, wcs)
    try:
        rows = anchor_target(run, "ngc0001", overwrite=True)
    finally:
        irac4.write_bytes(kept)
        (ext / "ngc0001_first.fits").unlink()
    assert all(r.status.startswith("not anchored: no usable external map") for r in rows)
    assert "first:" in rows[0].status and "irac4:" in rows[0].status
    assert not anchored.exists()                                  # not convolved or released stale


@pytest.mark.pipeline
def test_one_target_failing_does_not_stop_the_next(world, monkeypatch):
    import jwstgal.anchor_products as ap
    from jwstgal.cli import anchor_data

    run, *_ = world
    real = ap.refit_instrument

    def flaky(cfg, target, inst):
        if target == "ngc0000":
            raise OSError("disk gone")
        return real(cfg, target, inst)

    monkeypatch.setattr(ap, "refit_instrument", flaky)
    code = anchor_data.main([str(run.config_path), str(run.local_path), "--no-progress", "--overwrite"])
    assert code == 1
    table = Table.read(run.reprocess_dir / "ngc0001" / "anchor" / "ngc0001_anchor.ecsv")
    assert list(table["status"]) == ["anchored", "anchored"]
    # the failed instrument's key is not recorded: the next run fits it again
    failed = Table.read(run.reprocess_dir / "ngc0000" / "anchor" / "ngc0000_anchor.ecsv")
    assert "miri" not in failed.meta["keys"]
