"""Robust incremental PCA (Budavari, Wild, Szalay, Dobos & Yip 2009, MNRAS 394, 1496).

Observations stream through one at a time; the mean, the leading eigenvectors and eigenvalues of the
covariance, and a robust scale ``sigma^2`` are updated with a forgetting factor ``alpha`` and a
Cauchy-like robust weight, so that outlying observations (cosmic rays, bright sources left in a
column) barely move the eigensystem. Gaps (weight 0) are filled from the current eigensystem by a
gappy projection before each update (the paper's section 3.3).

With ``rho(t) = (2/pi) arctan(pi t / (2 c^2))``, residual ``r^2 = |y - E E^T y|^2`` and
``t = r^2 / sigma^2``, one update is::

    w = rho'(t);  v = alpha v + w;  q = alpha q + w r^2;  u = alpha u + 1
    gamma_1,2,3 = alpha * (v, q, u)_prev / (v, q, u)
    m       <- gamma_1 m + (1 - gamma_1) x
    sigma^2 <- gamma_3 sigma^2 + (1 - gamma_3) (rho(t) / t) r^2 / delta
    C       <- gamma_2 C + (1 - gamma_2) sigma^2 y y^T / r^2

and C is never formed: with ``A = [sqrt(gamma_2 lambda_j) e_j | sqrt((1 - gamma_2) sigma^2 / r^2) y]``,
``C = A A^T`` and the eigenvectors follow from the small matrix ``A^T A``.

Fixes relative to the seed port (``vwpca``/``vwpca_inc``): ``rho'`` is the true derivative (the seed's
was c^4 times too large; harmless in the ratios but wrong in the initial scale), ``c`` is honoured
during initialisation, the scale iteration stops on convergence, the order of observations is
shuffled with a seeded generator (the seed's was unseeded and its "roll each column" augmentation
rolled the whole array), and observations with zero residual no longer divide by zero.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from .gappy import gappy_scores

log = logging.getLogger(__name__)


def rho(t: np.ndarray | float, c_sq: float) -> np.ndarray:
    """Cauchy-like robust function ``(2/pi) arctan(pi t / (2 c^2))``."""
    return (2.0 / np.pi) * np.arctan(np.pi * np.asarray(t) / (2.0 * c_sq))


def rho_prime(t: np.ndarray | float, c_sq: float) -> np.ndarray:
    """Derivative of :func:`rho` with respect to ``t``."""
    return 1.0 / (c_sq * (1.0 + (np.pi * np.asarray(t) / (2.0 * c_sq)) ** 2))


@dataclass
class Eigensystem:
    """State of a robust PCA.

    Attributes
    ----------
    mean : numpy.ndarray
        Shape (p,).
    eigvecs : numpy.ndarray
        Shape (p, k), orthonormal columns, by decreasing eigenvalue.
    eigvals : numpy.ndarray
        Shape (k,).
    scale_sq : float
        Robust residual scale ``sigma^2``.
    vqu : numpy.ndarray
        Running sums (v, q, u) of the weights.
    """

    mean: np.ndarray
    eigvecs: np.ndarray
    eigvals: np.ndarray
    scale_sq: float
    vqu: np.ndarray

    def truncated(self, k: int) -> Eigensystem:
        """The same system keeping only its first ``k`` eigenvectors."""
        return Eigensystem(self.mean, self.eigvecs[:, :k], self.eigvals[:k], self.scale_sq, self.vqu)

    def save(self, path: str) -> None:
        """Write to an ``.npz`` file (``path`` should end in ``.npz``)."""
        np.savez(path, mean=self.mean, eigvecs=self.eigvecs, eigvals=self.eigvals,
                 scale_sq=self.scale_sq, vqu=self.vqu)

    @classmethod
    def load(cls, path: str) -> Eigensystem:
        """Read what :meth:`save` wrote."""
        with np.load(path) as f:
            return cls(f["mean"], f["eigvecs"], f["eigvals"], float(f["scale_sq"]), f["vqu"])


def _initialise(x: np.ndarray, w: np.ndarray, k: int, c_sq: float, delta: float) -> Eigensystem:
    good = w > 0
    cnt = good.sum(axis=0)
    mean = np.where(cnt > 0, np.where(good, x, 0).sum(axis=0) / np.maximum(cnt, 1), 0.0)
    y = np.where(good, x - mean, 0.0)
    _, s, vt = np.linalg.svd(y / np.sqrt(len(x)), full_matrices=False)
    e = vt[:k].T
    lam = s[:k] ** 2
    r = np.where(good, y - (y @ e) @ e.T, 0.0)
    r2 = (r**2).sum(axis=1)
    scale = float(np.mean(r2)) or 1.0
    for _ in range(50):
        new = scale * float(np.mean(rho(r2 / scale, c_sq))) / delta
        converged = abs(new - scale) <= 1e-8 * scale
        scale = new if new > 0 else scale
        if converged:
            break
    wt = rho_prime(r2 / scale, c_sq)
    vqu = np.array([wt.mean(), (wt * r2).mean(), 1.0])
    return Eigensystem(mean, e, lam, scale, vqu)


def update(es: Eigensystem, x: np.ndarray, w: np.ndarray, alpha: float, c_sq: float, delta: float
           ) -> Eigensystem:
    """One robust incremental update with observation ``x`` (weights ``w``; 0 marks a gap).

    Parameters
    ----------
    es : Eigensystem
        Current state (not modified).
    x : numpy.ndarray
        Observation, shape (p,).
    w : numpy.ndarray
        Weights, shape (p,); only ``w > 0`` (good) versus 0 (gap) matters.
    alpha : float
        Forgetting factor (0 < alpha <= 1).
    c_sq : float
        Squared scale of the robust function.
    delta : float
        Breakdown point.

    Returns
    -------
    Eigensystem
        The updated state (``es`` itself when the observation carries no information).
    """
    good = w > 0
    if not good.any():
        return es
    if not good.all():  # fill the gaps from the current eigensystem
        a, _ = gappy_scores(x[None], good[None].astype(float), es.mean, es.eigvecs)
        if not np.isfinite(a).all():
            return es
        x = np.where(good, x, es.mean + es.eigvecs @ a[0])
    y = x - es.mean
    r = y - es.eigvecs @ (es.eigvecs.T @ y)
    r2 = float(np.sum(r[good] ** 2))
    if r2 <= 0:
        return es
    t = r2 / es.scale_sq
    vqu = alpha * es.vqu + np.array([float(rho_prime(t, c_sq)), float(rho_prime(t, c_sq)) * r2, 1.0])
    g1, g2, g3 = alpha * es.vqu / vqu
    mean = g1 * es.mean + (1 - g1) * x
    scale_sq = g3 * es.scale_sq + (1 - g3) * float(rho(t, c_sq)) / t * r2 / delta
    amat = np.column_stack([es.eigvecs * np.sqrt(g2 * es.eigvals), np.sqrt((1 - g2) * scale_sq / r2) * y])
    s, v = np.linalg.eigh(amat.T @ amat)
    order = np.argsort(s)[::-1][: es.eigvecs.shape[1]]
    s, v = np.clip(s[order], 1e-300, None), v[:, order]
    eigvecs = amat @ v / np.sqrt(s)
    return Eigensystem(mean, eigvecs, s, scale_sq, vqu)


def robust_pca(
    data: np.ndarray,
    weights: np.ndarray | None = None,
    *,
    n_components: int = 10,
    n_init: int = 200,
    n_passes: int = 3,
    c: float = 0.787,
    breakdown: float = 0.5,
    memory: float = 1.0,
    seed: int = 0,
) -> Eigensystem:
    """Fit a robust eigensystem to observations by streaming robust incremental PCA.

    Parameters
    ----------
    data : numpy.ndarray
        Observations, shape (n, p).
    weights : numpy.ndarray, optional
        Shape (n, p); 0 marks a gap (other values count as good). Non-finite data are gaps.
    n_components : int
        Eigenvectors kept (k).
    n_init : int
        Observations used for the classical (SVD) initialisation.
    n_passes : int
        Passes of incremental updates over all observations (the first starts after the
        initialisation set).
    c : float
        Scale of the robust function (0.787 as in the seed; smaller is more robust).
    breakdown : float
        Breakdown point delta of the M-scale.
    memory : float
        Forgetting factor ``alpha = 1 - 1 / (n * memory)``.
    seed : int
        Seed of the order in which observations are streamed (results are deterministic).

    Returns
    -------
    Eigensystem
        Mean, eigenvectors (p, k), eigenvalues and robust scale.
    """
    x = np.asarray(data, float)
    w = np.ones_like(x) if weights is None else np.asarray(weights, float)
    if x.ndim != 2 or w.shape != x.shape:
        msg = f"robust_pca: data must be 2-D and weights the same shape, got {x.shape} and {w.shape}"
        raise ValueError(msg)
    w = np.where(np.isfinite(x), w, 0.0)
    x = np.where(w > 0, x, 0.0)
    n, p = x.shape
    k = min(n_components, p, n)
    c_sq = c * c
    rng = np.random.default_rng(seed)
    order = rng.permutation(n)
    n0 = min(max(n_init, k + 1), n)
    es = _initialise(x[order[:n0]], w[order[:n0]], k, c_sq, breakdown)
    alpha = 1.0 - 1.0 / (n * memory)
    for it in range(n_passes):
        idx = order[n0:] if it == 0 else rng.permutation(n)
        for i in idx:
            es = update(es, x[i], w[i], alpha, c_sq, breakdown)
    log.debug("robust PCA: n=%d p=%d k=%d scale^2=%.3g", n, p, k, es.scale_sq)
    return es
