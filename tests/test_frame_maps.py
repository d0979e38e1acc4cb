"""Pixel maps between frames and NaN-aware bilinear resampling (jwstgal.frame_maps)."""

import numpy as np
import pytest
from astropy.wcs import WCS

from jwstgal.frame_maps import coarse_map, coverage, nan_bilinear, resample_onto


def _reference_bilinear(img: np.ndarray, y: float, x: float) -> float:
    """One sample by the definition: bilinear on the finite corners, renormalised; NaN if <= half."""
    ny, nx = img.shape
    if not (-0.5 < x < nx - 0.5 and -0.5 < y < ny - 0.5):
        return np.nan
    yc, xc = min(max(y, 0.0), ny - 1.0), min(max(x, 0.0), nx - 1.0)      # mode "nearest"
    y0, x0 = int(np.floor(yc)), int(np.floor(xc))
    fy, fx = yc - y0, xc - x0
    num = wt = 0.0
    for dy, wy in ((0, 1 - fy), (1, fy)):
        for dx, wx in ((0, 1 - fx), (1, fx)):
            v = img[min(y0 + dy, ny - 1), min(x0 + dx, nx - 1)]
            if np.isfinite(v):
                num += wy * wx * v
                wt += wy * wx
    return num / wt if wt > 0.5 else np.nan


def test_nan_bilinear_matches_the_definition_sample_by_sample():
    rng = np.random.default_rng(1)
    img = rng.normal(size=(40, 50))
    img[rng.random(img.shape) < 0.05] = np.nan
    img[10:13, 20:24] = np.nan                       # a block: samples inside it are NaN
    img[5, 5] = np.inf                               # not finite either
    oy = rng.uniform(-2, 42, size=(30, 30))
    ox = rng.uniform(-2, 52, size=(30, 30))
    oy[0, :5] = [11.5, 0.0, 39.0, 5.0, 5.2]          # inside the block, on the edges, on the inf
    ox[0, :5] = [21.5, 0.0, 49.0, 5.0, 5.1]
    got = nan_bilinear(img, oy, ox)
    want = np.vectorize(lambda y, x: _reference_bilinear(img, y, x))(oy, ox)
    assert np.array_equal(np.isnan(got), np.isnan(want))
    assert np.nanmax(np.abs(got - want)) < 1e-12
    assert np.isnan(got[0, 0]) and np.isfinite(got[0, 1]) and np.isfinite(got[0, 2])
    assert 0.05 < np.isnan(got).mean() < 0.4                     # outside + near NaNs, not everything


def _wcs(shift_x: float, shift_y: float, rot_deg: float = 0.0) -> WCS:
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval = [10.0, 20.0]
    w.wcs.crpix = [100.5 - shift_x, 80.5 - shift_y]
    c, s = np.cos(np.radians(rot_deg)), np.sin(np.radians(rot_deg))
    w.wcs.cd = 1e-5 * np.array([[-c, s], [s, c]])
    return w


@pytest.mark.parametrize(("dx", "dy", "rot"), [(30.3, -12.7, 0.0), (-150.0, 40.2, 3.0), (500.0, 0.0, 0.0)])
def test_resample_onto_samples_only_the_covered_box_and_equals_the_full_map(dx, dy, rot):
    """The cropped map gives the full-frame result to the bit; coverage is the covered fraction."""
    shape_i, shape_j = (160, 200), (150, 180)
    wi, wj = _wcs(0, 0), _wcs(dx, dy, rot)
    rng = np.random.default_rng(2)
    img = rng.normal(size=shape_j)
    img[rng.random(shape_j) < 0.02] = np.nan
    c = coarse_map(wi, shape_i, wj, step=16)
    got = resample_onto(img, c, shape_i)
    # the full map pixel by pixel through the WCS (no coarse grid, no box)
    yy, xx = np.mgrid[:shape_i[0], :shape_i[1]].astype(float)
    x2, y2 = wj.world_to_pixel_values(*wi.pixel_to_world_values(xx, yy))
    full = nan_bilinear(img, y2, x2)
    assert np.array_equal(np.isnan(got), np.isnan(full))
    assert np.nanmax(np.abs(got - full), initial=0.0) < 1e-6       # the coarse grid's error only
    covered = ((x2 > -0.5) & (y2 > -0.5) & (x2 < shape_j[1] - 0.5) & (y2 < shape_j[0] - 0.5)).mean()
    assert coverage(wi, shape_i, wj, shape_j) == pytest.approx(covered, abs=0.05)


@pytest.mark.parametrize(("ra", "dec"), [(10.0, 20.0), (359.999, -5.0), (120.0, 89.99)])
def test_sky_boxes_tell_frames_that_can_overlap_from_those_that_cannot(ra, dec):
    """Across RA = 0 and near the pole: overlapping and touching frames meet, distant ones do not."""
    from jwstgal.frame_maps import boxes_meet, sky_boxes

    def frame(dx_pix: float, dy_pix: float) -> WCS:
        w = WCS(naxis=2)
        w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
        w.wcs.crval = [ra, dec]
        w.wcs.crpix = [50.5 - dx_pix, 50.5 - dy_pix]
        w.wcs.cdelt = [-1e-5, 1e-5]
        return w

    shifts = [(0, 0), (60, 10), (99, 0), (300, 0), (0, -250)]
    boxes = sky_boxes([frame(*s) for s in shifts], [(100, 100)] * len(shifts))
    meets = [boxes_meet(boxes[0], b) for b in boxes]
    assert meets == [True, True, True, False, False]
    # a frame that meets: its coverage is what the overlap is; one that does not covers nothing
    assert coverage(frame(0, 0), (100, 100), frame(60, 10), (100, 100)) == pytest.approx(0.4 * 0.9, abs=0.05)
    assert coverage(frame(0, 0), (100, 100), frame(300, 0), (100, 100)) == 0.0
