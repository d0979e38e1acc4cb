import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table
from astropy.wcs import WCS

from jwstgal.steps.level_match import dither_group, level_match_files

NOISE = 0.1


def write_cal(path, sky_fn, crval, offset, rng, shape=(600, 600), pix=0.11):
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval = crval
    w.wcs.crpix = [shape[1] / 2, shape[0] / 2]
    w.wcs.cdelt = [-pix / 3600, pix / 3600]
    yy, xx = np.indices(shape)
    ra, dec = w.pixel_to_world_values(xx, yy)
    sci = sky_fn(ra, dec) + offset + rng.normal(0, NOISE, shape)
    dq = np.zeros(shape, np.uint32)
    dq[:, :4] = dq[:, -4:] = 1 | 2**31           # reference pixels: DO_NOT_USE
    sci[dq != 0] = 1e6                           # garbage there: must be ignored
    h = w.to_header()
    fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(sci.astype(np.float32), h, name="SCI"),
                  fits.ImageHDU(dq, h, name="DQ")]).writeto(path)
    return path


@pytest.mark.pipeline
def test_files_offsets_recovered_and_copies_written(tmp_path):
    rng = np.random.default_rng(0)
    ra0, dec0 = 24.17, 15.78

    def sky(ra, dec):
        r2 = ((ra - ra0) * np.cos(np.deg2rad(dec0)) * 3600) ** 2 + ((dec - dec0) * 3600) ** 2
        return 1.0 + 4.0 * np.exp(-r2 / (2 * 20.0**2))

    tile_offsets = {"001": 0.0, "002": 0.37}
    files, truth = [], []
    for visit, dra in (("001", -15.0), ("002", 15.0)):
        for e in range(3):
            name = f"jw09999002{visit}_02101_0000{e + 1}_mirimage_cal.fits"
            crval = (ra0 + (dra + 2.0 * e) / 3600 / np.cos(np.deg2rad(dec0)), dec0 + 1.5 * e / 3600)
            off = tile_offsets[visit] + 0.05 * e        # exposures differ a little too
            files.append(write_cal(tmp_path / name, sky, crval, off, rng))
            truth.append(off)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    before = [f.read_bytes() for f in files]
    outputs, sol = level_match_files(files, out_dir, {"binning": 2}, qa_png=tmp_path / "lm.png")
    assert [f.read_bytes() for f in files] == before          # inputs untouched
    assert dither_group(files[0]) == "jw09999002001_02101"
    rel = sol.offsets[:, 0] - (np.asarray(truth) - truth[0])
    assert np.max(np.abs(rel)) < 0.01 * NOISE, rel
    for f, o, t in zip(files, outputs, truth, strict=True):
        a, b = fits.getdata(f, "SCI"), fits.getdata(o, "SCI")
        good = fits.getdata(f, "DQ") == 0
        assert np.allclose((a - b)[good], t - truth[0], atol=0.01 * NOISE)
        assert fits.getheader(o)["LVLREF"] == files[0].name
    table = Table.read(out_dir / "offsets.ecsv")
    assert list(table["group"]) == ["jw09999002001_02101"] * 3 + ["jw09999002002_02101"] * 3
    assert (tmp_path / "lm.png").is_file()


@pytest.mark.pipeline
def test_cutouts_on_disk_solve_as_in_memory_with_memory_flat_in_the_exposures(tmp_path):
    """A CutoutStore gives the same offsets as a list; the solve's traced peak does not grow with
    the number of exposures (4x more: < 1.3x; the list's inputs alone grow 4x)."""
    import tracemalloc

    from test_level_match import cutouts_of, tiles

    from jwstgal.level_match import match_levels
    from jwstgal.steps.level_match import CutoutStore

    peaks = {}
    for n_tiles in (2, 8):
        images, groups, truth = tiles(n_tiles=n_tiles, dithers=4, size=(260, 180 * n_tiles + 100),
                                      step=180, seed=n_tiles)
        cutouts, origins = cutouts_of(images)
        del images
        folder = tmp_path / f"n{n_tiles}"
        folder.mkdir()
        store = CutoutStore(folder)
        for c in cutouts:
            store.append(c)
        ref = match_levels(cutouts, groups=groups, reference=0, origins=origins)
        del cutouts
        tracemalloc.start()
        try:
            sol = match_levels(store, groups=groups, reference=0, origins=origins)
            peaks[n_tiles] = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        np.testing.assert_array_equal(sol.offsets, ref.offsets)
        assert np.max(np.abs(ref.offsets[:, 0] - (truth - truth[0]))) < 0.02
    assert peaks[8] < 1.3 * peaks[2], peaks
