"""Every PNG the suite draws: quicklooks, contact sheets, step panels, residual and offset plots.

Matplotlib's non-interactive Agg backend is selected once, here, when the module is imported; the
helpers take arrays or files and write one PNG each, atomically. Nothing here knows about steps,
configs or runs (the steps call these helpers; :mod:`jwstgal.report` links the results).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402 - after the backend is chosen
import numpy as np  # noqa: E402
from astropy.io import fits  # noqa: E402

from jwstgal.ladder import block_wcs  # noqa: E402
from jwstgal.level_match import block_reduce  # noqa: E402
from jwstgal.provenance import atomic_path  # noqa: E402

log = logging.getLogger(__name__)


def stretch_limits(data: np.ndarray, lo: float = 0.5, hi: float = 99.7) -> tuple[float, float]:
    """Robust display limits: the ``lo`` and ``hi`` percentiles of the finite pixels."""
    finite = data[np.isfinite(data)]
    if finite.size == 0:
        return 0.0, 1.0
    vmin, vmax = np.percentile(finite, [lo, hi])
    return float(vmin), float(vmax if vmax > vmin else vmin + 1.0)


def _save(fig: Any, png: Path, dpi: int, *, tight: bool = True) -> Path:
    png.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(png) as tmp:
        fig.savefig(tmp, dpi=dpi, bbox_inches="tight" if tight else None, format="png")
    plt.close(fig)
    return png


def quicklook_png(fits_path: Path, png_path: Path, *, ext: str = "SCI", title: str = "") -> Path:
    """Write a PNG quicklook of a FITS image extension (asinh stretch between robust percentiles).

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
    from astropy.visualization import AsinhStretch, ImageNormalize

    data = np.array(fits.getdata(fits_path, ext), dtype=np.float32)
    header = fits.getheader(fits_path, ext)
    data[data == 0] = np.nan                              # resample's "no input"
    data, factor = shown_pixels(data)
    vmin, vmax = stretch_limits(data)
    norm = ImageNormalize(vmin=vmin, vmax=vmax, stretch=AsinhStretch(0.1))
    fig = plt.figure(figsize=(6.4, 6 * data.shape[0] / max(data.shape[1], 1) + 0.8))
    wcs = _celestial_wcs(header)
    if wcs is not None:                                   # the WCS of the block means' pixels
        wcs = block_wcs(wcs, factor)
    ax = fig.add_subplot(projection=wcs) if wcs is not None else fig.add_subplot()
    cmap = plt.get_cmap("inferno").copy()
    cmap.set_bad("0.25")                                  # no data: dark grey, where labels show
    im = ax.imshow(data, origin="lower", cmap=cmap, norm=norm, interpolation="nearest")
    fig.colorbar(im, ax=ax, label=f"{ext} [{header.get('BUNIT') or 'no unit'}]", shrink=0.8)
    ax.set_title(title or fits_path.name, fontsize=9)
    if wcs is not None:
        _sky_axes(ax, wcs, data.shape)
    else:
        ax.set_xlabel("x [pix]")
        ax.set_ylabel("y [pix]")
    return _save(fig, png_path, 110)


#: Longest side of the image a quicklook draws (its PNG is about 700 pixels wide).
QUICKLOOK_SIDE = 1600


def shown_pixels(data: np.ndarray, side: int = QUICKLOOK_SIDE) -> tuple[np.ndarray, int]:
    """An image brought to at most ``side`` pixels a side by NaN-aware block means, and the factor.

    A mosaic of 10^8 pixels drawn as it is costs matplotlib several GB and tens of seconds for a
    PNG of 10^5 pixels; its block means show the same picture (issue #29). Images already small
    enough are returned as they are (factor 1).
    """
    factor = max(1, int(np.ceil(max(data.shape) / side)))
    return (data, 1) if factor == 1 else (block_reduce(data, side).astype(np.float32), factor)


def _celestial_wcs(header: Any) -> Any:
    """The celestial WCS of a header, or None when it has none."""
    from astropy.wcs import WCS

    try:
        wcs = WCS(header).celestial
    except Exception:  # noqa: BLE001 - an unreadable WCS: the quicklook falls back to pixels
        return None
    return wcs if wcs.has_celestial and wcs.naxis == 2 else None


def _sky_axes(ax: Any, wcs: Any, shape: tuple[int, ...]) -> None:
    """RA/Dec labels and grid, a scale bar and north/east arrows on a WCSAxes."""
    import astropy.units as u
    from astropy.visualization.wcsaxes import add_scalebar

    ax.coords[0].set_axislabel("RA (ICRS)")
    ax.coords[1].set_axislabel("Dec (ICRS)")
    ax.coords.grid(color="white", alpha=0.25, linestyle="dotted")
    pix = float(np.sqrt(abs(np.linalg.det(wcs.pixel_scale_matrix)))) * 3600      # arcsec
    width = shape[1] * pix
    bar = next((b for b in (1, 2, 5, 10, 20, 30, 60, 120, 300) if b >= width / 6), 600)
    add_scalebar(ax, bar * u.arcsec, label=f'{bar}"', color="white", corner="bottom right")
    # north and east from the WCS, at a corner
    ny, nx = shape
    x0, y0 = 0.12 * nx, 0.12 * ny
    ra, dec = wcs.pixel_to_world_values(x0, y0)
    length = 0.08 * min(nx, ny) * pix / 3600
    for dra, ddec, name in ((0.0, length, "N"), (length / np.cos(np.deg2rad(dec)), 0.0, "E")):
        x1, y1 = wcs.world_to_pixel_values(ra + dra, dec + ddec)
        ax.annotate("", xy=(x1, y1), xytext=(x0, y0),
                    arrowprops={"arrowstyle": "->", "color": "white", "lw": 1.2})
        ax.text(x0 + 1.3 * (x1 - x0), y0 + 1.3 * (y1 - y0), name, color="white", ha="center",
                va="center", fontsize=8)


def contact_sheet(files: list[Path], png: Path, title: str, ext: str = "SCI") -> Path | None:
    """Thumbnails of every exposure's ``ext`` image on one PNG (None when no file exists)."""
    files = [f for f in files if f.is_file()]
    if not files:
        return None
    n = len(files)
    cols = min(n, 4)
    rows = int(np.ceil(n / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(3 * cols, 3 * rows + 0.4), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    thumbs = [block_reduce(np.asarray(fits.getdata(f, ext), float)) for f in files]
    # one stretch for the whole sheet, so exposures compare at a glance
    vmin, vmax = stretch_limits(np.concatenate([t[np.isfinite(t)].ravel() for t in thumbs] or
                                               [np.zeros(1)]), 1, 99)
    im = None
    for ax, f, thumb in zip(axes.ravel(), files, thumbs, strict=False):
        im = ax.imshow(thumb, origin="lower", cmap="gray", vmin=vmin, vmax=vmax)
        ax.set_title(f.name.split("_")[0][-6:] + "_" + "_".join(f.name.split("_")[1:3]), fontsize=7)
    unit = fits.getheader(files[0], ext).get("BUNIT") or "no unit"
    fig.colorbar(im, ax=axes.ravel().tolist(), shrink=0.8, label=f"{ext} [{unit}]")
    fig.suptitle(title)
    return _save(fig, png, 80)


def quiver_png(res: dict[str, Any], png: Path, title: str) -> Path:
    """Quiver plot of astrometric residuals (``ra``, ``dec`` in deg, ``dra``, ``ddec`` in mas)."""
    return _save(quiver_figure(res, title), png, 90)


def quiver_figure(res: dict[str, Any], title: str) -> Any:
    """The figure of :func:`quiver_png`: arrows, their key below the axes, the numbers on top."""
    fig, ax = plt.subplots(figsize=(5.5, 5))
    if res["n"]:
        ra, dec = np.asarray(res["ra"]), np.asarray(res["dec"])
        x = (ra - ra.mean()) * np.cos(np.deg2rad(dec.mean())) * 3600
        y = (dec - dec.mean()) * 3600
        q = ax.quiver(x, y, res["dra"], res["ddec"], angles="xy")
        typical = float(np.median(np.hypot(res["dra"], res["ddec"]))) or 1.0
        key = next((k for k in (1, 2, 5, 10, 20, 50, 100, 200, 500) if k >= typical), 1000)
        # below the axes, right of the x label: clear of the title's numbers and of the arrows
        ax.quiverkey(q, 0.92, 0.025, key, f"{key} mas", labelpos="W", coordinates="figure")
        ax.invert_xaxis()
    ax.set_xlabel("RA offset [arcsec]")
    ax.set_ylabel("Dec offset [arcsec]")
    med = (f"median ({res['median_dra_mas']:.1f}, {res['median_ddec_mas']:.1f}) mas, "
           f"rms {res['rms_mas']:.1f} mas" if res["n"] else "no match")
    ax.set_title(f"{title}: {res['n']} matches\n{med}", fontsize=9)
    return fig


_LABELS: dict[tuple[int, int, tuple[str, ...]], np.ndarray] = {}


def _label_strip(width: int, gap: int, names: tuple[str, ...]) -> np.ndarray:
    """RGBA strip with a name over each panel, drawn once per process and layout (no per-call text)."""
    key = (width, gap, names)
    if key not in _LABELS:
        n = len(names)
        total = n * width + (n - 1) * gap
        fig = plt.figure(figsize=(total / 100, 0.22), dpi=100)
        for k, name in enumerate(names):
            fig.text((k * (width + gap) + width / 2) / total, 0.5, name, ha="center", va="center", fontsize=8)
        fig.canvas.draw()
        strip = np.asarray(fig.canvas.buffer_rgba())[:, :total].copy()
        plt.close(fig)
        _LABELS[key] = strip
    return _LABELS[key]


def _rgba(img: np.ndarray, lo: float, hi: float, cmap: str) -> np.ndarray:
    """An image coloured between ``lo`` and ``hi`` (NaN in grey), bottom row last (origin lower)."""
    norm = np.clip((img - lo) / (hi - lo if hi > lo else 1.0), 0.0, 1.0)
    rgba = plt.get_cmap(cmap)(np.nan_to_num(norm[::-1]), bytes=True)
    rgba[np.isnan(img[::-1])] = (128, 128, 128, 255)
    return rgba


def block_means(images: list[np.ndarray], good: np.ndarray, size: int = 256
                ) -> tuple[list[np.ndarray], np.ndarray]:
    """Means over the ``good`` pixels of blocks of each image, at most ``size`` blocks a side.

    The sums skip the other pixels (``where=``, no masked copy of the frame) and run along rows,
    then columns. Returns the block means (NaN where a block has no good pixel) and the fraction
    of good pixels per block. Edge pixels that do not fill a block are left out.
    """
    f = max(1, int(np.ceil(max(good.shape) / size)))
    ny, nx = (good.shape[0] // f) * f, (good.shape[1] // f) * f
    g = good[:ny, :nx].reshape(ny, nx // f, f)
    cnt = np.count_nonzero(g, axis=-1).reshape(ny // f, f, nx // f).sum(axis=1)
    out = []
    for img in images:
        s = np.add.reduce(np.asarray(img)[:ny, :nx].reshape(ny, nx // f, f), axis=-1, where=g, dtype=float)
        s = s.reshape(ny // f, f, nx // f).sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            out.append((s / cnt).astype(np.float32))
    return out, (cnt / f**2).astype(np.float32)


def stripe_panels(sci: np.ndarray, model: np.ndarray, mask: np.ndarray, good: np.ndarray, png: Path,
                  title: str) -> Path:
    """Four panels: input, mask, stripe model and destriped frame (same stretch for data panels).

    The panels show block means over the ``good`` pixels (the ones the model is subtracted from),
    at most 256 blocks a side (a 2048^2 frame in 8 x 8 blocks: row stripes show as bands); the mask
    panel shows the masked fraction per block. The image is made from the arrays directly (the
    panel names drawn once per process), with ``title`` in the PNG's ``Title`` field: cheap enough
    to draw for every exposure.
    """
    from PIL import Image, PngImagePlugin

    (before, model), _ = block_means([sci, model], good)
    mask = 1.0 - block_means([], ~np.asarray(mask, bool))[1]
    after = before - model
    lo, hi = stretch_limits(after[np.isfinite(after)])
    mlim = max(float(np.nanpercentile(np.abs(model), 99)), 1e-12) if np.isfinite(model).any() else 1.0
    panels = [_rgba(before, lo, hi, "gray"), _rgba(mask, 0.0, 1.0, "gray_r"),
              _rgba(model, -mlim, mlim, "RdBu_r"), _rgba(after, lo, hi, "gray")]
    h, w = panels[0].shape[:2]
    gap = 6
    row = np.full((h, 4 * w + 3 * gap, 4), 255, np.uint8)
    for k, im in enumerate(panels):
        row[:, k * (w + gap):k * (w + gap) + w] = im
    names = ("input", "mask (fit ignores)", "stripe model", "destriped")
    image = np.concatenate([_label_strip(w, gap, names), row])
    info = PngImagePlugin.PngInfo()
    info.add_text("Title", title)
    png.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(png) as tmp:
        Image.fromarray(image, "RGBA").save(tmp, format="png", pnginfo=info, compress_level=1)
    return png


def offsets_png(files: list[str], groups: list[str], offsets: np.ndarray, png: Path, title: str,
                unit: str = "") -> Path:
    """Bar chart of per-exposure level offsets (in ``unit``), coloured by dither group."""
    fig, ax = plt.subplots(figsize=(max(5, 0.35 * len(files)), 3.5))
    names = list(dict.fromkeys(groups))
    colours = [names.index(g) for g in groups]
    ax.bar(range(len(files)), offsets, color=plt.cm.tab10(np.asarray(colours) % 10))
    ax.axhline(0, color="k", lw=0.5)
    ax.set_xticks(range(len(files)), [f[:25] for f in files], rotation=90, fontsize=6)
    ax.set_ylabel(f"offset subtracted [{unit or 'no unit'}]")
    ax.set_title(title, fontsize=9)
    return _save(fig, png, 90)


def kernel_profile_png(radius: np.ndarray, profile: np.ndarray, rmax: float, png: Path, title: str,
                       psf_profiles: dict[str, tuple[np.ndarray, np.ndarray]] | None = None) -> Path:
    """A PSF-matching kernel's diagnostics (radius in arcsec).

    Left: the kernel's normalised radial profile. Right (with ``psf_profiles``: name -> (radius,
    profile) of the source PSF, the target PSF and source (x) kernel), the profiles on a log scale
    with |source (x) kernel - target|, so a mismatch in the wings shows.
    """
    ncols = 2 if psf_profiles else 1
    fig, axes = plt.subplots(1, ncols, figsize=(6 * ncols, 4), squeeze=False)
    ax = axes[0, 0]
    ax.plot(radius, profile / profile.max(), label="kernel")
    ax.axhline(0, color="0.6", lw=0.5)
    ax.set_xlim(0, rmax)
    ax.set_xlabel("radius [arcsec]")
    ax.set_ylabel("kernel / peak")
    ax.legend()
    if psf_profiles:
        ax = axes[0, 1]
        peak = max(p.max() for _, p in psf_profiles.values())
        for (name, (r, p)), style in zip(psf_profiles.items(), ("C0:", "C1-", "k--"), strict=False):
            ax.semilogy(r, np.clip(p / peak, 1e-7, None), style, label=name)
        names = list(psf_profiles)
        if len(names) >= 3:
            (r, conv), (_, tgt) = psf_profiles[names[2]], psf_profiles[names[1]]
            n = min(conv.size, tgt.size)
            ax.semilogy(r[:n], np.clip(np.abs(conv[:n] - tgt[:n]) / peak, 1e-7, None), "C3-", lw=0.8,
                        label="|source (x) kernel - target|")
        ax.set_xlim(0, 2 * rmax)
        ax.set_ylim(1e-6, 1.5)
        ax.set_xlabel("radius [arcsec]")
        ax.set_ylabel("profile / highest peak")
        ax.legend(fontsize=7)
    fig.suptitle(title, fontsize=9)
    return _save(fig, png, 100)


def anchor_fit_png(x: np.ndarray, y: np.ndarray, fit: Any, png: Path, title: str, xlabel: str,
                   ylabel: str, max_points: int = 20000, x0: float = 0.0) -> Path:
    """Scatter of an anchoring fit: pixels, bin medians with 16-84 % bars, the fitted curve.

    ``fit`` is a :class:`jwstgal.anchor.BinnedFit`; bins dropped by the clipping are open symbols.
    The curve is drawn (dashed) down to ``x0``, where it is read (the reference's zero), which is
    marked: how far it is extrapolated shows at a glance.
    """
    ok = np.isfinite(x) & np.isfinite(y)
    xs, ys = np.ravel(x[ok]), np.ravel(y[ok])
    if xs.size > max_points:
        pick = np.random.default_rng(0).choice(xs.size, max_points, replace=False)
        xs, ys = xs[pick], ys[pick]
    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    ax.plot(xs, ys, ",", color="0.6", alpha=0.5, rasterized=True)
    for used, face in ((fit.used, "C0"), (~fit.used, "none")):
        ax.errorbar(fit.x_bin[used], fit.y_median[used],
                    yerr=[fit.y_median[used] - fit.y_p16[used], fit.y_p84[used] - fit.y_median[used]],
                    fmt="o", ms=4, color="C0", mfc=face, capsize=2)
    lim = np.array([fit.x_bin.min(), fit.x_bin.max()])
    inside = np.linspace(*lim, 50)
    label = f"slope {fit.slope:.3f}±{fit.slope_err:.3f}" + (
        f", colour term {fit.curvature:.3g}" if fit.degree == 2 else "")
    ax.plot(inside, np.polyval(fit.coef, inside), "C3-", label=label)
    out = np.linspace(min(x0, lim[0]), lim[0], 20)
    f0 = float(np.polyval(fit.coef, x0))
    ax.plot(out, np.polyval(fit.coef, out), "C3--")
    ax.plot([x0], [f0], "C3x", ms=8, label=f"read at {x0:.4f}: {f0:.4f}")
    pad = 0.1 * (lim[1] - min(lim[0], x0))
    ax.set_xlim(min(lim[0], x0) - pad, lim[1] + pad)
    ylo, yhi = min(np.nanmin(fit.y_p16), f0), max(np.nanmax(fit.y_p84), f0)
    ax.set_ylim(ylo - 0.2 * (yhi - ylo), yhi + 0.2 * (yhi - ylo))
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, loc="upper left")
    return _save(fig, png, 90)


def comparison_png(old: np.ndarray, new: np.ndarray, png: Path, title: str) -> Path:
    """Old image, new - old, and new / old over the bright pixels, side by side.

    Whole mosaics are drawn as their block means (:func:`shown_pixels`).
    """
    old, new = shown_pixels(old)[0], shown_pixels(new)[0]
    fig, axes = plt.subplots(1, 3, figsize=(12, 4))
    vmin, vmax = stretch_limits(old)
    axes[0].imshow(old, origin="lower", cmap="gray", vmin=vmin, vmax=vmax)
    axes[0].set_title("old [MJy/sr]")
    diff = new - old
    lim = np.nanpercentile(np.abs(diff), 99) if np.isfinite(diff).any() else 1.0
    im = axes[1].imshow(diff, origin="lower", cmap="RdBu_r", vmin=-lim, vmax=lim)
    fig.colorbar(im, ax=axes[1], label="new - old [MJy/sr]")
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(old > np.nanpercentile(old, 90), new / old, np.nan)
    im = axes[2].imshow(ratio, origin="lower", cmap="RdBu_r", vmin=0.9, vmax=1.1)
    fig.colorbar(im, ax=axes[2], label="new / old (bright pixels)")
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(title, fontsize=9)
    return _save(fig, png, 80)
