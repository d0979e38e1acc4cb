"""Relative astrometry between visits (pure functions on star lists).

:func:`merge_detections` makes one star list of a visit's exposures; :func:`solve_visit_shifts`
matches every overlapping pair of visits and solves all their shifts together over the graph of
pairs. The ``wcs_adjust`` step (:mod:`jwstgal.steps.wcs_adjust`) runs them on the stars of the
calibrated exposures.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import scipy.sparse as sp
from scipy.sparse.csgraph import connected_components

from jwstgal.astrometry import AlignPass, align_catalogs

log = logging.getLogger(__name__)


def merge_detections(catalogs: list[tuple[np.ndarray, np.ndarray]], radius_arcsec: float = 0.1
                     ) -> tuple[np.ndarray, np.ndarray]:
    """One star list from several exposures of a visit: detections closer than ``radius`` are one star."""
    from scipy.spatial import cKDTree

    from jwstgal.astrometry import from_tangent_plane, tangent_plane

    ra = np.concatenate([c[0] for c in catalogs])
    dec = np.concatenate([c[1] for c in catalogs])
    if ra.size == 0:
        return ra, dec
    center = (float(np.median(ra)), float(np.median(dec)))
    xy = tangent_plane(ra, dec, *center)
    tree = cKDTree(xy)
    label = -np.ones(len(xy), int)
    for i in range(len(xy)):
        if label[i] < 0:
            label[tree.query_ball_point(xy[i], radius_arcsec)] = i
    _, star = np.unique(label, return_inverse=True)       # each detection's star, in label order
    n = np.bincount(star)
    merged = np.stack([np.bincount(star, xy[:, 0]) / n, np.bincount(star, xy[:, 1]) / n], axis=1)
    return from_tangent_plane(merged, *center)


def _footprints_meet(a: np.ndarray, b: np.ndarray, margin: float) -> bool:
    """Whether the bounding boxes of two tangent-plane star lists (arcsec) overlap within ``margin``."""
    return bool(np.all(a.min(axis=0) - margin <= b.max(axis=0))
                and np.all(b.min(axis=0) - margin <= a.max(axis=0)))


def _within(a: np.ndarray, b: np.ndarray, margin: float) -> np.ndarray:
    """Which of the tangent-plane points ``a`` fall in the bounding box of ``b`` widened by ``margin``."""
    lo, hi = b.min(axis=0) - margin, b.max(axis=0) + margin
    return np.all((a >= lo) & (a <= hi), axis=1)


def solve_visit_shifts(catalogs: dict[str, tuple[np.ndarray, np.ndarray]], passes: list[AlignPass], *,
                       min_matches: int = 5, fitgeom: str = "shift") -> dict[str, dict[str, Any]]:
    """Per-visit sky shifts (arcsec E, N) from every overlapping pair of visits, solved together.

    Each pair of visits whose stars overlap is matched (a shift fit of one visit's stars to the
    other's); the shifts of all visits then come from one weighted least-squares solution over the
    graph of pairs (:func:`jwstgal.level_match.solve_offsets`, outlying pairs rejected), holding the
    visit with most stars of each connected group fixed. So a visit that does not overlap the
    reference visit still gets its shift through the visits between them.

    Parameters
    ----------
    catalogs : dict
        Visit id -> (RA, Dec) of its stars (degrees).
    passes : list of AlignPass
        Matching passes.
    min_matches : int
        Fewest matched stars for a pair to count.
    fitgeom : {"shift", "rshift"}
        ``rshift`` also solves a rotation per visit (about the common tangent point, ``center_deg``;
        rotations and shifts add along the graph to first order in the small angles).

    Returns
    -------
    dict
        Visit id -> ``shift`` [E, N] arcsec, ``group`` (connected group number), ``reference``
        (held fixed), ``n_pairs`` (pairs it is in) and ``residual_mas`` (rms of its pairs'
        residuals after the solution; 0 with no pair); with ``rshift`` also ``rotation_deg`` and
        ``center_deg``.
    """
    from jwstgal.astrometry import tangent_plane
    from jwstgal.graph_solve import PairDifference, solve_offsets

    visits = sorted(catalogs, key=lambda v: (-catalogs[v][0].size, v))   # most stars first
    if not visits:
        return {}
    all_ra = np.concatenate([catalogs[v][0] for v in visits])
    all_dec = np.concatenate([catalogs[v][1] for v in visits])
    center = (float(np.median(all_ra)), float(np.median(all_dec))) if all_ra.size else (0.0, 0.0)
    xy = {v: tangent_plane(*catalogs[v], *center) for v in visits}
    margin = max((p.searchrad for p in passes), default=1.0)
    pairs = []
    for a in range(len(visits)):
        for b in range(a + 1, len(visits)):
            va, vb = visits[a], visits[b]
            if min(len(xy[va]), len(xy[vb])) < min_matches or not _footprints_meet(xy[va], xy[vb], margin):
                continue
            # only the stars where the two visits overlap can match: the rest is left out of the
            # matching (visits of neighbouring tiles share a strip; the cost stays with the strip)
            in_a, in_b = _within(xy[va], xy[vb], margin), _within(xy[vb], xy[va], margin)
            if min(in_a.sum(), in_b.sum()) < min_matches:
                continue
            res = align_catalogs(catalogs[vb][0][in_b], catalogs[vb][1][in_b], catalogs[va][0][in_a],
                                 catalogs[va][1][in_a], passes, fitgeom=fitgeom, min_matches=min_matches,
                                 center=center)
            if res is None:
                continue
            sigma = max(res.rms_mas, 1.0) / 1000 / np.sqrt(res.n_matches)
            # offsets[b] - offsets[a] = the correction that brings visit b onto visit a
            delta = [*res.shift, res.rotation_deg] if fitgeom == "rshift" else list(res.shift)
            pairs.append(PairDifference(b, a, np.asarray(delta, float), sigma, res.n_matches, res.rms_mas))
            log.info("wcs_adjust: %s -> %s: %d stars, shift (%+.1f, %+.1f) mas, rms %.1f mas", vb, va,
                     res.n_matches, res.shift[0] * 1000, res.shift[1] * 1000, res.rms_mas)
    sol = solve_offsets(len(visits), pairs, reference=list(range(len(visits))))
    n = len(visits)
    links = sp.csr_matrix((np.ones(len(sol.pairs)), ([p.i for p in sol.pairs], [p.j for p in sol.pairs])),
                          shape=(n, n))
    _, groups = connected_components(links, directed=False)
    out: dict[str, dict[str, Any]] = {}
    for k, v in enumerate(visits):
        mine = [p for p in sol.pairs if k in (p.i, p.j)]
        resid = [np.linalg.norm((sol.offsets[p.i] - sol.offsets[p.j] - p.delta)[:2]) * 1000 for p in mine]
        off = np.zeros(3)                     # E, N, rotation (none solved without pairs)
        off[:sol.offsets.shape[1]] = sol.offsets[k][:3]
        out[v] = {"shift": [float(off[0]), float(off[1])], "group": int(groups[k]),
                  "reference": k in sol.references or not mine, "n_pairs": len(mine),
                  "residual_mas": float(np.sqrt(np.mean(np.square(resid)))) if resid else 0.0}
        if fitgeom == "rshift":
            out[v]["rotation_deg"] = float(off[2])
            out[v]["center_deg"] = list(center)
        if not mine and len(visits) > 1:
            log.warning("wcs_adjust: visit %s overlaps no other visit with enough stars; left unchanged", v)
    for p in sol.rejected:
        log.warning("wcs_adjust: pair %s / %s rejected as an outlier of the solution", visits[p.i],
                    visits[p.j])
    return out
