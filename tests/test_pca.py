"""Robust incremental PCA and gappy projection (pca/)."""

import numpy as np
import pytest
from jwstgal.pca import fill_gaps, gappy_scores, reconstruct, robust_pca
from jwstgal.pca.robust import rho, rho_prime
from scipy.linalg import subspace_angles


def _low_rank(seed=1, n=600, p=120, k=3, noise=0.05):
    rng = np.random.default_rng(seed)
    basis = np.linalg.qr(rng.standard_normal((p, k)))[0]
    coef = rng.standard_normal((n, k)) * np.array([10.0, 6.0, 3.0])[:k]
    mean = 5 * np.sin(np.linspace(0, 6, p))
    clean = mean + coef @ basis.T
    return rng, basis, mean, coef, clean, clean + noise * rng.standard_normal((n, p))


def test_robust_pca_ignores_outlying_observations_that_break_classical_pca():
    rng, basis, mean, _, _, x = _low_rank()
    bad = rng.choice(len(x), 60, replace=False)           # 10 % wild observations
    x[bad] += 30 * rng.standard_normal((60, x.shape[1]))
    es = robust_pca(x, n_components=3, seed=0)
    robust_angle = np.degrees(subspace_angles(es.eigvecs, basis)).max()
    _, _, vt = np.linalg.svd(x - x.mean(0), full_matrices=False)
    classic_angle = np.degrees(subspace_angles(vt[:3].T, basis)).max()
    assert classic_angle > 45
    assert robust_angle < 10
    assert np.abs(es.mean - mean).max() < 0.5


@pytest.mark.pipeline
def test_robust_pca_trains_through_gaps_and_is_deterministic():
    rng, basis, _, _, _, x = _low_rank(seed=2)
    w = (rng.random(x.shape) > 0.3).astype(float)          # 30 % of pixels missing
    a = robust_pca(x, w, n_components=3, seed=4)
    b = robust_pca(x, w, n_components=3, seed=4)
    np.testing.assert_array_equal(a.eigvecs, b.eigvecs)
    assert np.degrees(subspace_angles(a.eigvecs, basis)).max() < 10


def test_gappy_scores_are_exact_for_noise_free_data_with_gaps_and_normalisation():
    rng, basis, mean, coef, clean, _ = _low_rank(seed=3, n=50)
    w = (rng.random(clean.shape) > 0.4).astype(float)
    data = np.where(w > 0, clean, np.nan)
    scores, norm = gappy_scores(data, w, mean, basis)
    np.testing.assert_allclose(scores, coef, atol=1e-8)
    np.testing.assert_allclose(norm, 1.0)
    s2, n2 = gappy_scores(2.5 * data, w, mean, basis, normalise=True)   # Wild & Hewett N
    np.testing.assert_allclose(n2, 2.5, rtol=1e-8)
    np.testing.assert_allclose(reconstruct(s2, n2, mean, basis), 2.5 * clean, atol=1e-6)
    filled = fill_gaps(data, w, mean, basis)
    np.testing.assert_allclose(filled, clean, atol=1e-8)


def test_batched_scores_equal_one_at_a_time_and_empty_rows_stay_aligned():
    # the seed broadcast the first observation's F Em^T term to the whole batch
    rng, basis, mean, _, _, x = _low_rank(seed=4, n=40)
    w = rng.uniform(0.5, 2.0, x.shape) * (rng.random(x.shape) > 0.2)
    w[7] = 0.0                                              # no good pixel at all
    batch, nb = gappy_scores(x, w, mean, basis, normalise=True, chunk=16)
    assert np.isnan(batch[7]).all() and np.isnan(nb[7])
    for i in (0, 5, 39):
        one, n1 = gappy_scores(x[i:i + 1], w[i:i + 1], mean, basis, normalise=True)
        np.testing.assert_allclose(batch[i], one[0], rtol=1e-10)
        np.testing.assert_allclose(nb[i], n1[0], rtol=1e-10)


def test_rho_prime_is_the_derivative_of_rho():
    t = np.linspace(0.01, 10, 50)
    h = 1e-6
    np.testing.assert_allclose(rho_prime(t, 0.62), (rho(t + h, 0.62) - rho(t - h, 0.62)) / (2 * h),
                               rtol=1e-6)


def test_bad_shapes_are_reported():
    with pytest.raises(ValueError, match="shapes do not agree"):
        gappy_scores(np.ones((3, 5)), np.ones((3, 4)), np.zeros(5), np.eye(5)[:, :2])
