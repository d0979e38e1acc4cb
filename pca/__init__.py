"""Robust and gappy principal component analysis.

- :func:`pca.robust.robust_pca`: weighted robust incremental PCA (Budavari et al. 2009).
- :func:`pca.gappy.gappy_scores`, :func:`pca.gappy.fill_gaps`: gappy projection with optional
  normalisation (Connolly & Szalay 1999; Wild & Hewett 2005).

Used by the ``pca`` method of :mod:`jwstgal.destripe`. Both are pure numpy and deterministic.
"""

from .gappy import fill_gaps, gappy_scores, reconstruct
from .robust import Eigensystem, robust_pca

__all__ = ["Eigensystem", "fill_gaps", "gappy_scores", "reconstruct", "robust_pca"]
