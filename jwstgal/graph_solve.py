"""Weighted least squares over a graph of pairwise differences, one reference per connected group.

Shared by level matching (background offsets of overlapping images) and the visit astrometry
(shifts of overlapping visits): each measured pair says ``x_i - x_j ~ delta`` with an uncertainty;
all unknowns are solved at once by sparse least squares, outlying pairs are rejected
leave-one-out, and an unknown with no pair keeps 0.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp
from scipy.sparse.csgraph import connected_components
from scipy.sparse.linalg import lsqr


@dataclass(frozen=True)
class PairDifference:
    """The measured level difference between two images on their overlap.

    Attributes
    ----------
    i, j : int
        Image indices.
    delta : numpy.ndarray
        Difference parameters of a_i - a_j: (offset,) or (c0, c1, c2) of a plane in grid pixels.
    sigma : float
        Uncertainty of ``delta[0]`` (clipped rms / sqrt(n)).
    npix : int
        Pixels used.
    rms : float
        Clipped rms of the pixel differences.
    """

    i: int
    j: int
    delta: np.ndarray
    sigma: float
    npix: int
    rms: float


@dataclass(frozen=True)
class LevelSolution:
    """Solved offsets and what they were solved from.

    Attributes
    ----------
    offsets : numpy.ndarray
        (n_images, n_params): subtract ``offsets[i] @ (1, x, y)`` (or ``offsets[i, 0]``) from image i.
    references : list of int
        The reference image of each connected group of overlapping images.
    pairs : list of PairDifference
        Pairs used in the final solution.
    rejected : list of PairDifference
        Pairs rejected as outliers.
    isolated : list of int
        Images that overlap no other (offset 0).
    group_pairs : list of PairDifference
        Differences between group stacks (indices are group numbers), when matched by groups.
    """

    offsets: np.ndarray
    references: list[int]
    pairs: list[PairDifference]
    rejected: list[PairDifference] = field(default_factory=list)
    isolated: list[int] = field(default_factory=list)
    group_pairs: list[PairDifference] = field(default_factory=list)


def solve_offsets(
    n_images: int,
    pairs: Sequence[PairDifference],
    *,
    reference: Sequence[int] | int = 0,
    reject_sigma: float = 5.0,
) -> LevelSolution:
    """Solve all image offsets at once from pairwise differences (weighted sparse least squares).

    Parameters
    ----------
    n_images : int
        Number of images.
    pairs : sequence of PairDifference
        Measured differences (constant or plane, all alike).
    reference : int or sequence of int
        Preferred reference image(s), most preferred first; in each connected group of
        overlapping images the first listed member (else its lowest index) is held fixed.
    reject_sigma : float
        Pairs whose normalised residual exceeds this are rejected (iteratively) unless that would
        disconnect their group.

    Returns
    -------
    LevelSolution
    """
    pairs = list(pairs)
    k = len(pairs[0].delta) if pairs else 1
    prefs = [reference] if isinstance(reference, int) else list(reference)
    rejected: list[PairDifference] = []
    offsets, refs, isolated = _solve(n_images, pairs, k, prefs)
    while len(pairs) > 3:
        resid = _residuals(offsets, pairs)
        worst = int(np.argmax(np.abs(resid)))
        trial = pairs[:worst] + pairs[worst + 1:]
        if _n_components(n_images, trial) != _n_components(n_images, pairs):
            break  # the worst pair is the only link: keep it rather than cut the group
        t_offsets, t_refs, t_isolated = _solve(n_images, trial, k, prefs)
        # judge the pair against the solution made without it (leave-one-out)
        left_out = _residuals(t_offsets, [pairs[worst]])[0]
        scale = max(1.0, 1.4826 * float(np.median(np.abs(_residuals(t_offsets, trial)))))
        if abs(left_out) <= reject_sigma * scale:
            break
        rejected.append(pairs[worst])
        pairs, offsets, refs, isolated = trial, t_offsets, t_refs, t_isolated
    return LevelSolution(offsets, refs, pairs, rejected, isolated)


def _residuals(offsets: np.ndarray, pairs: Sequence[PairDifference]) -> np.ndarray:
    """Normalised residuals of the constant term of each pair."""
    return np.array([(offsets[p.i, 0] - offsets[p.j, 0] - p.delta[0]) / max(p.sigma, 1e-30)
                     for p in pairs])


def _graph(n: int, pairs: Sequence[PairDifference]) -> sp.csr_matrix:
    rows = [p.i for p in pairs] + [p.j for p in pairs]
    cols = [p.j for p in pairs] + [p.i for p in pairs]
    return sp.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(n, n))


def _n_components(n: int, pairs: Sequence[PairDifference]) -> int:
    return connected_components(_graph(n, pairs), directed=False)[0]


def _solve(n: int, pairs: Sequence[PairDifference], k: int, prefs: list[int]
           ) -> tuple[np.ndarray, list[int], list[int]]:
    offsets = np.zeros((n, k))
    _, labels = connected_components(_graph(n, pairs), directed=False)
    linked = {p.i for p in pairs} | {p.j for p in pairs}
    isolated = [i for i in range(n) if i not in linked]
    refs = []
    for comp in np.unique(labels):
        members = np.nonzero(labels == comp)[0]
        if members.size == 1:
            continue
        ref = next((r for r in prefs if r in members), int(members[0]))
        refs.append(int(ref))
        free = [m for m in members if m != ref]
        col = {m: c for c, m in enumerate(free)}
        comp_pairs = [p for p in pairs if labels[p.i] == comp]
        for q in range(k):  # each parameter (offset, x slope, y slope) separately
            data, ri, ci, rhs = [], [], [], []
            for r, p in enumerate(comp_pairs):
                w = 1.0 / max(p.sigma, 1e-30)
                if p.i in col:
                    data.append(w)
                    ri.append(r)
                    ci.append(col[p.i])
                if p.j in col:
                    data.append(-w)
                    ri.append(r)
                    ci.append(col[p.j])
                rhs.append(w * p.delta[q])
            a = sp.csr_matrix((data, (ri, ci)), shape=(len(comp_pairs), len(free)))
            sol = lsqr(a, np.asarray(rhs), atol=1e-14, btol=1e-14, iter_lim=10 * len(free) + 100)[0]
            for m, c in col.items():
                offsets[m, q] = sol[c]
    return offsets, refs, isolated
