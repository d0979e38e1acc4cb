"""Gappy PCA projection ("normgappy", Connolly & Szalay 1999; Wild & Hewett 2005).

An observation ``x`` (length p) with per-pixel weights ``w`` (inverse variances; 0 marks a gap) is
modelled as ``N (m + E a)``: mean ``m``, eigenvectors ``E`` (p x k), scores ``a`` and, optionally,
a normalisation ``N``. Minimising chi^2 = sum_p w_p (x_p - N (m_p + E_p . a))^2 gives, with
``F = E^T W x``, ``M = E^T W E``, ``Em = E^T W m``, ``F' = x^T W m`` and ``M' = m^T W m``::

    (F' M - F Em^T) a = M' F - F' Em,      N = F' / (M' + a . Em)

and without the normalisation simply ``M a = E^T W (x - m)``.

Differences from the seed port (``vwpca_normgappy``): the weights are the inverse *variances* (the
seed used 1/err), every observation gets its own ``F Em^T`` term (the seed broadcast the first
vector's term to the whole batch, correct only for one vector, and built an n^2 k^2 intermediate),
and observations without any good pixel keep their row in the output (scores NaN) instead of being
dropped, so rows stay aligned with the input.
"""

from __future__ import annotations

import numpy as np


def gappy_scores(
    data: np.ndarray,
    weights: np.ndarray,
    mean: np.ndarray,
    eigvecs: np.ndarray,
    *,
    normalise: bool = False,
    chunk: int = 256,
) -> tuple[np.ndarray, np.ndarray]:
    """Scores (and normalisations) of gappy observations on an eigenbasis.

    Parameters
    ----------
    data : numpy.ndarray
        Observations, shape (n, p). Values at gaps are ignored (may be NaN).
    weights : numpy.ndarray
        Inverse variances, shape (n, p); 0 marks a gap.
    mean : numpy.ndarray
        Mean observation, shape (p,).
    eigvecs : numpy.ndarray
        Eigenvectors as columns, shape (p, k).
    normalise : bool
        Also fit a multiplicative normalisation per observation (Wild & Hewett 2005).
    chunk : int
        Observations solved per vectorised batch (bounds memory to chunk * p * k).

    Returns
    -------
    scores : numpy.ndarray
        Shape (n, k); NaN for observations with no good pixel or a singular system.
    norm : numpy.ndarray
        Shape (n,); 1 without ``normalise``, NaN where the scores are NaN.
    """
    data = np.atleast_2d(np.asarray(data, float))
    w = np.atleast_2d(np.asarray(weights, float))
    if data.shape != w.shape or data.shape[1] != eigvecs.shape[0] or mean.shape[0] != eigvecs.shape[0]:
        msg = (f"gappy_scores: shapes do not agree: data {data.shape}, weights {w.shape}, "
               f"mean {mean.shape}, eigvecs {eigvecs.shape}")
        raise ValueError(msg)
    w = np.where(np.isfinite(w) & np.isfinite(data), w, 0.0)
    x = np.where(w > 0, data, 0.0)
    n, k = data.shape[0], eigvecs.shape[1]
    scores = np.full((n, k), np.nan)
    norm = np.full(n, np.nan)
    for lo in range(0, n, chunk):
        sl = slice(lo, lo + chunk)
        ws, xs = w[sl], x[sl]
        we = ws[:, :, None] * eigvecs[None]                      # (b, p, k)
        mat = np.einsum("bpk,pl->bkl", we, eigvecs)              # E^T W E
        f = np.einsum("bpk,bp->bk", we, xs)                      # E^T W x
        if normalise:
            em = np.einsum("bpk,p->bk", we, mean)                # E^T W m
            fp = np.einsum("bp,bp,p->b", ws, xs, mean)           # x^T W m
            mp = np.einsum("bp,p,p->b", ws, mean, mean)          # m^T W m
            lhs = fp[:, None, None] * mat - f[:, :, None] * em[:, None, :]
            rhs = mp[:, None] * f - fp[:, None] * em
        else:
            lhs = mat
            rhs = f - np.einsum("bpk,p->bk", we, mean)
        good = ws.sum(axis=1) > 0
        good &= np.abs(np.linalg.det(lhs)) > 0 if k else good
        if good.any():
            a = np.linalg.solve(lhs[good], rhs[good][..., None])[..., 0]
            idx = np.arange(lo, min(lo + chunk, n))[good]
            scores[idx] = a
            if normalise:
                norm[idx] = fp[good] / (mp[good] + np.einsum("bk,bk->b", a, em[good]))
            else:
                norm[idx] = 1.0
    return scores, norm


def reconstruct(scores: np.ndarray, norm: np.ndarray, mean: np.ndarray, eigvecs: np.ndarray
                ) -> np.ndarray:
    """Model observations ``N (m + E a)`` from gappy scores.

    Parameters
    ----------
    scores : numpy.ndarray
        Shape (n, k).
    norm : numpy.ndarray
        Shape (n,).
    mean : numpy.ndarray
        Shape (p,).
    eigvecs : numpy.ndarray
        Shape (p, k).

    Returns
    -------
    numpy.ndarray
        Shape (n, p).
    """
    return norm[:, None] * (mean[None, :] + scores @ eigvecs.T)


def fill_gaps(data: np.ndarray, weights: np.ndarray, mean: np.ndarray, eigvecs: np.ndarray,
              *, normalise: bool = False) -> np.ndarray:
    """Replace the gaps (weight 0) of each observation by its gappy PCA reconstruction.

    Parameters
    ----------
    data, weights : numpy.ndarray
        Shape (n, p); see :func:`gappy_scores`.
    mean : numpy.ndarray
        Shape (p,).
    eigvecs : numpy.ndarray
        Shape (p, k).
    normalise : bool
        Fit a normalisation per observation.

    Returns
    -------
    numpy.ndarray
        Copy of ``data`` with the gaps filled.
    """
    scores, norm = gappy_scores(data, weights, mean, eigvecs, normalise=normalise)
    model = reconstruct(np.nan_to_num(scores), np.nan_to_num(norm, nan=1.0), mean, eigvecs)
    w = np.asarray(weights)
    return np.where((w > 0) & np.isfinite(data), data, model)
