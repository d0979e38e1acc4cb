import numpy as np
import pytest

from jwstgal.level_match import apply_offsets, match_levels, measure_pairs, solve_offsets

NOISE = 0.1


def tiles(n_tiles=3, dithers=4, offsets=None, seed=0, size=(220, 520), plane=None, foot=(180, 200),
          step=150):
    """Overlapping footprints on one grid over a sky with bright extended emission and stars."""
    rng = np.random.default_rng(seed)
    ny, nx = size
    yy, xx = np.mgrid[:ny, :nx]
    sky = 2.0 + 5.0 * np.exp(-((xx - nx / 2) ** 2 + (yy - ny / 2) ** 2) / (2 * 60.0**2))
    for _ in range(30):
        sky[rng.integers(ny), rng.integers(nx)] += 200.0
    images, groups, truth = [], [], []
    k = 0
    for t in range(n_tiles):
        for d in range(dithers):
            im = np.full(size, np.nan)
            x0 = 20 + t * step + 7 * d
            y0 = 10 + 5 * d
            off = offsets[k] if offsets is not None else rng.normal(0, 0.5)
            lev = off if plane is None else off + plane[k][0] * xx + plane[k][1] * yy
            fy, fx = foot
            im[y0:y0 + fy, x0:x0 + fx] = (sky + lev + rng.normal(0, NOISE, size))[y0:y0 + fy, x0:x0 + fx]
            images.append(im)
            groups.append(t)
            truth.append(off)
            k += 1
    return images, groups, np.array(truth)


@pytest.mark.pipeline
@pytest.mark.parametrize("grouped", [False, True])
def test_offsets_recovered_to_one_percent_of_the_noise(grouped):
    """Realistic overlaps (~0.5 Mpix, as between dithered NIRCam frames) pin offsets to < 1 % rms."""
    images, groups, truth = tiles(n_tiles=2, dithers=3, size=(1000, 1400), foot=(900, 900), step=400)
    sol = match_levels(images, groups=groups if grouped else None, reference=0)
    rel = sol.offsets[:, 0] - (truth - truth[0])
    assert np.max(np.abs(rel)) < 0.01 * NOISE
    assert sol.references[0] == 0 and sol.offsets[0, 0] == 0.0
    # after matching, overlaps agree
    matched = apply_offsets(images, sol)
    p = measure_pairs(matched)
    assert max(abs(q.delta[0]) for q in p) < 0.01 * NOISE


def test_reference_choice_sets_the_zero_point():
    images, _, truth = tiles(n_tiles=2, dithers=2)
    sol = match_levels(images, reference=[3, 0])
    assert sol.offsets[3, 0] == 0.0
    assert np.allclose(sol.offsets[:, 0], truth - truth[3], atol=0.03 * NOISE)


def test_isolated_image_keeps_its_level_never_nan():
    images, _, _ = tiles(n_tiles=2, dithers=2)
    lonely = np.full_like(images[0], np.nan)
    lonely[:5, :5] = 3.0                         # overlaps nothing
    sol = match_levels([*images, lonely])
    assert sol.isolated == [4]
    assert sol.offsets[4, 0] == 0.0 and np.all(np.isfinite(sol.offsets))


def test_two_disconnected_groups_each_get_a_reference():
    images, _, truth = tiles(n_tiles=1, dithers=2, size=(220, 900))
    far, _, truth_far = tiles(n_tiles=1, dithers=2, size=(220, 900), seed=1)
    far = [np.roll(im, 600, axis=1) for im in far]          # footprints x >= 620: no overlap
    sol = match_levels(images + far, reference=[2])
    assert sorted(sol.references) == [0, 2] and np.all(np.isfinite(sol.offsets))
    assert sol.offsets[1, 0] == pytest.approx(truth[1] - truth[0], abs=0.03 * NOISE)
    assert sol.offsets[3, 0] == pytest.approx(truth_far[1] - truth_far[0], abs=0.03 * NOISE)


def test_outlier_pair_is_rejected():
    images, _, truth = tiles(n_tiles=1, dithers=5)
    pairs = measure_pairs(images)
    bad = pairs[3]
    pairs[3] = type(bad)(bad.i, bad.j, bad.delta + 5.0, bad.sigma, bad.npix, bad.rms)
    sol = solve_offsets(len(images), pairs, reference=0)
    assert len(sol.rejected) == 1 and (sol.rejected[0].i, sol.rejected[0].j) == (bad.i, bad.j)
    assert np.allclose(sol.offsets[:, 0], truth - truth[0], atol=0.03 * NOISE)


def test_planes_recovered():
    rng = np.random.default_rng(3)
    planes = [(rng.normal(0, 1e-3), rng.normal(0, 1e-3)) for _ in range(6)]
    images, _, truth = tiles(n_tiles=2, dithers=3, plane=planes, offsets=rng.normal(0, 0.5, 6), step=80)
    sol = match_levels(images, plane=True)
    yy, xx = np.indices(images[0].shape)
    for i in range(6):
        foot = np.isfinite(images[i])
        model = sol.offsets[i, 0] + sol.offsets[i, 1] * xx + sol.offsets[i, 2] * yy
        want = (truth[i] - truth[0]) + (planes[i][0] - planes[0][0]) * xx + (planes[i][1] - planes[0][1]) * yy
        assert np.abs(model - want)[foot].max() < 0.1 * NOISE, i


def test_inputs_not_modified():
    images, groups, _ = tiles(n_tiles=2, dithers=2)
    copies = [im.copy() for im in images]
    match_levels(images, groups=groups)
    assert all(np.array_equal(a, b, equal_nan=True) for a, b in zip(images, copies, strict=True))


def cutouts_of(images):
    """Each image cut to the box of its finite pixels, and the box's (row, column) on the grid."""
    origins, cutouts = [], []
    for im in images:
        rows, cols = np.nonzero(np.isfinite(im))
        y0, x0 = int(rows.min()), int(cols.min())
        cutouts.append(im[y0:rows.max() + 1, x0:cols.max() + 1].copy())
        origins.append((y0, x0))
    return cutouts, origins


@pytest.mark.pipeline
def test_cutouts_placed_on_the_grid_match_as_the_full_grid_does():
    """Images given as cutouts at their origins solve exactly as the same images on the full grid."""
    images, groups, _ = tiles()
    cutouts, origins = cutouts_of(images)
    for plane in (False, True):
        full = match_levels(images, groups=groups, reference=0, plane=plane)
        cut = match_levels(cutouts, groups=groups, reference=0, plane=plane, origins=origins)
        np.testing.assert_allclose(cut.offsets, full.offsets, rtol=1e-9, atol=1e-9)
        assert len(cut.pairs) == len(full.pairs)
    assert sum(c.size for c in cutouts) < 0.6 * sum(im.size for im in images)
