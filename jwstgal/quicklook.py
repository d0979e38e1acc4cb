"""PNG quicklooks of images (asinh stretch between robust percentiles)."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from astropy.io import fits

from jwstgal.provenance import atomic_path

log = logging.getLogger(__name__)


def stretch_limits(data: np.ndarray, lo: float = 0.5, hi: float = 99.7) -> tuple[float, float]:
    """Robust display limits: the ``lo`` and ``hi`` percentiles of the finite pixels."""
    finite = data[np.isfinite(data)]
    if finite.size == 0:
        return 0.0, 1.0
    vmin, vmax = np.percentile(finite, [lo, hi])
    return float(vmin), float(vmax if vmax > vmin else vmin + 1.0)


def quicklook_png(fits_path: Path, png_path: Path, *, ext: str = "SCI", title: str = "") -> Path:
    """Write a PNG quicklook of a FITS image extension.

    Parameters
    ----------
    fits_path : pathlib.Path
        Image to show.
    png_path : pathlib.Path
        Output PNG (written atomically).
    ext : str
        Extension name.
    title : str
        Plot title.

    Returns
    -------
    pathlib.Path
        ``png_path``.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from astropy.visualization import AsinhStretch, ImageNormalize

    data = fits.getdata(fits_path, ext).astype(float)
    vmin, vmax = stretch_limits(data)
    norm = ImageNormalize(vmin=vmin, vmax=vmax, stretch=AsinhStretch(0.1))
    fig, ax = plt.subplots(figsize=(6, 6 * data.shape[0] / max(data.shape[1], 1) + 0.6))
    im = ax.imshow(data, origin="lower", cmap="inferno", norm=norm, interpolation="nearest")
    fig.colorbar(im, ax=ax, label=fits.getheader(fits_path, ext).get("BUNIT", ""), shrink=0.8)
    ax.set_title(title or fits_path.name)
    ax.set_xlabel("x [pix]")
    ax.set_ylabel("y [pix]")
    with atomic_path(png_path) as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight", format="png")
    plt.close(fig)
    return png_path
