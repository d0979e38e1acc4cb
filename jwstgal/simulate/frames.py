"""Single striped frames with known truth, for destriping tests and benchmarks.

Unlike :mod:`jwstgal.simulate.programme` (whole programmes through the jwst pipeline), these are
rate-like images built directly: a true sky (faint field or a bright extended galaxy), white noise
of known rms, and stripes drawn with the same HxRG read-order 1/f model as the programme simulator
(:func:`jwstgal.simulate.detector.onef_noise_reads`) plus amplifier offsets, or MIRI row/column
stripes. Each component is returned separately so that a destriped frame can be scored exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from jwstgal import dq as dqflags
from jwstgal.simulate import detector as det
from jwstgal.simulate.instrument import DetectorSetup


@dataclass
class StripedFrame:
    """A simulated frame and its components (``data = sky + white + stripes``).

    Attributes
    ----------
    data, sky, white, stripes : numpy.ndarray
        Observed frame, true sky, white noise, stripe pattern.
    dq : numpy.ndarray
        DQ (uint32): reference pixels DO_NOT_USE|REFERENCE_PIXEL, a few bad pixels, and for MIRI
        the non-science coronagraph band NON_SCIENCE only (bit 512, lost by an 8-bit cast).
    err : numpy.ndarray
        Error array (the white-noise rms).
    galaxy : numpy.ndarray
        The extended-emission component of ``sky`` (zeros for a field).
    floor : numpy.ndarray
        The irreducible noise: white noise plus the part of the stripes that is not constant along
        amplifier rows or columns (1/f noise faster than one row read, ~5 ms), which no row/column
        model can remove. ``std(floor)`` is the best residual rms any destriper can reach.
    n_amps : int
        Amplifier bands.
    sigma : float
        White-noise rms.
    """

    data: np.ndarray
    sky: np.ndarray
    white: np.ndarray
    stripes: np.ndarray
    dq: np.ndarray
    err: np.ndarray
    galaxy: np.ndarray
    n_amps: int
    sigma: float
    floor: np.ndarray


def _galaxy(shape: tuple[int, int], rng: np.random.Generator, peak: float) -> np.ndarray:
    ny, nx = shape
    yy, xx = np.mgrid[0:ny, 0:nx].astype(float)
    x0, y0 = nx * 0.55, ny * 0.45
    dx, dy = xx - x0, yy - y0
    q, pa = 0.7, 0.5
    u = dx * np.cos(pa) + dy * np.sin(pa)
    v = (-dx * np.sin(pa) + dy * np.cos(pa)) / q
    r = np.hypot(u, v)
    h = 0.12 * max(nx, ny)
    disk = np.exp(-r / h)
    theta = np.arctan2(v, u)
    arms = 1.0 + 0.6 * np.cos(2 * theta - 2.5 * np.log(r / h + 0.05)) * np.exp(-r / (3 * h))
    bulge = 2.0 * np.exp(-((r / (0.15 * h)) ** 0.5) * 4)
    img = disk * arms + bulge
    for _ in range(40):  # HII-region-like knots along the disk
        rr, tt = rng.exponential(h), rng.uniform(0, 2 * np.pi)
        kx, ky = x0 + rr * np.cos(tt), y0 + rr * np.sin(tt) * q
        img += rng.uniform(0.1, 0.5) * np.exp(-((xx - kx) ** 2 + (yy - ky) ** 2) / (2 * 3.0**2))
    return peak * img / img.max()


def _stars(shape: tuple[int, int], rng: np.random.Generator, n: int, sigma: float) -> np.ndarray:
    ny, nx = shape
    img = np.zeros(shape)
    ys, xs = rng.uniform(5, ny - 5, n), rng.uniform(5, nx - 5, n)
    flux = sigma * 10 ** rng.uniform(0.5, 3.0, n) * 2 * np.pi * 1.5**2
    for y, x, f in zip(ys, xs, flux, strict=True):
        y0, x0 = int(y), int(x)
        sl = (slice(max(y0 - 8, 0), min(y0 + 9, ny)), slice(max(x0 - 8, 0), min(x0 + 9, nx)))
        yy, xx = np.mgrid[sl]
        img[sl] += f / (2 * np.pi * 1.5**2) * np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * 1.5**2))
    return img


def striped_frame(
    size: int = 2048,
    *,
    seed: int = 0,
    scene: str = "field",
    instrument: str = "nircam",
    sigma: float = 1.0,
    stripe_rms: float = 1.0,
    amp_offset_rms: float = 0.5,
    galaxy_peak: float = 200.0,
    n_stars: int = 300,
    background: float = 10.0,
    n_amps: int | None = None,
) -> StripedFrame:
    """Simulate one striped frame.

    Parameters
    ----------
    size : int
        Pixels per side (NIRCam: 2048 is a four-amplifier full frame, smaller sizes one output).
    seed : int
        Random seed.
    scene : {"field", "galaxy"}
        A faint field (stars on a flat background) or the same plus a bright extended galaxy.
    instrument : {"nircam", "miri"}
        NIRCam 1/f stripes and amplifier offsets, or MIRI row/column stripes and gradient.
    sigma : float
        White-noise rms.
    stripe_rms : float
        Rms of the stripe pattern (excluding amplifier offsets).
    amp_offset_rms : float
        Rms of the per-amplifier offsets (NIRCam).
    galaxy_peak : float
        Peak surface brightness of the galaxy (units of the frame).
    n_stars : int
        Compact sources.
    background : float
        Flat sky level.
    n_amps : int, optional
        NIRCam amplifier bands (default 4 for 2048-pixel frames, else 1).

    Returns
    -------
    StripedFrame
    """
    if scene not in ("field", "galaxy") or instrument not in ("nircam", "miri"):
        msg = (f"striped_frame: scene must be field|galaxy and instrument nircam|miri, "
               f"got {scene}, {instrument}")
        raise ValueError(msg)
    rng = np.random.default_rng(seed)
    shape = (size, size)
    galaxy = _galaxy(shape, rng, galaxy_peak) if scene == "galaxy" else np.zeros(shape)
    sky = background + galaxy + _stars(shape, rng, n_stars * size**2 // 2048**2 + 10, sigma)
    white = rng.normal(0.0, sigma, shape)
    dq = np.zeros(shape, np.uint32)
    if instrument == "nircam":
        n_amps = n_amps or (4 if size == 2048 else 1)
        setup = DetectorSetup("NIRCAM", "NRCB1", size, 0.031, 0, 0, 0, gain=2.0, read_noise=10.0,
                              ngroups=6, frame_time=10.737, readpatt="RAPID", n_amps=n_amps)
        reads = det.onef_noise_reads(rng, setup, setup.ngroups, 8.0, 5.0, 1.0)
        stripes = det.ramp_slope(reads, setup.frame_time).astype(float)
        stripes *= stripe_rms / stripes.std()
        w = size // n_amps
        stripes += np.repeat(rng.normal(0.0, amp_offset_rms, n_amps), w)[None, :]
        if size == 2048:
            dq[:4] = dq[-4:] = dq[:, :4] = dq[:, -4:] = dqflags.bits(["DO_NOT_USE", "REFERENCE_PIXEL"])
    else:
        n_amps = 1
        # the row/column part of the programme simulator's MIRI pattern (its large-scale gradient
        # is a background, left to level matching)
        rows = 0.7 * rng.standard_normal(size) + 0.7 * np.cumsum(rng.standard_normal(size)) / np.sqrt(size)
        stripes = rows[:, None] + 0.6 * rng.standard_normal(size)[None, :]
        stripes *= stripe_rms / stripes.std()
        dq[:, : size // 4] |= dqflags.bit("NON_SCIENCE")  # coronagraph band: NON_SCIENCE only
    bad = rng.random(shape) < 0.002
    dq[bad] |= dqflags.bit("DO_NOT_USE")
    data = sky + white + stripes
    data[dqflags.flagged(dq, ["DO_NOT_USE"])] = 0.0
    coherent = np.zeros(shape)
    for a in range(n_amps):
        sl = slice(a * size // n_amps, (a + 1) * size // n_amps)
        coherent[:, sl] = stripes[:, sl].mean(axis=1, keepdims=True)
    coherent += (stripes - coherent).mean(axis=0, keepdims=True)
    return StripedFrame(data=data, sky=sky, white=white, stripes=stripes, dq=dq,
                        err=np.full(shape, sigma), galaxy=galaxy, n_amps=n_amps, sigma=sigma,
                        floor=white + stripes - coherent)


def score(frame: StripedFrame, cleaned: np.ndarray, mask: np.ndarray | None = None) -> dict[str, float]:
    """Score a destriped frame against the truth.

    Parameters
    ----------
    frame : StripedFrame
        The simulation.
    cleaned : numpy.ndarray
        Destriped frame.
    mask : numpy.ndarray, optional
        More pixels to leave out of the statistics (DO_NOT_USE and NON_SCIENCE pixels always are).

    Returns
    -------
    dict
        ``noise_ratio``: rms of ``cleaned - sky`` over the rms of the irreducible floor (white
        noise plus sub-row 1/f noise; 1 = every removable stripe gone); ``white_ratio``: the same
        over the white-noise rms alone;
        ``stripe_rms``: rms of ``cleaned - sky - white`` (the residual stripe pattern), also
        ``stripe_ratio`` relative to the white-noise rms; ``coherent_rms``: rms of what is left of
        the removable (row/column-coherent) stripes, ``cleaned - sky - floor``; and ``row_ratio``,
        the rms of per-row means of the residual pattern relative to the white-noise floor of a
        row mean;
        ``flux_kept``: galaxy flux (pixels >= 5 % of its peak) in ``cleaned`` over the true galaxy
        flux, after removing the white noise and the background level (the median of the residual
        pattern, which level matching sets); NaN for a field.
    """
    good = ~dqflags.flagged(frame.dq)  # DO_NOT_USE or NON_SCIENCE: no science to score
    if mask is not None:
        good &= ~mask
    resid = cleaned - frame.sky - frame.white
    pattern = resid[good]
    noise = (cleaned - frame.sky)[good]
    rows = np.array([np.mean(resid[y][good[y]]) if good[y].any() else np.nan for y in range(resid.shape[0])])
    row_floor = frame.sigma / np.sqrt(good.sum(axis=1).mean())
    out = {
        "noise_ratio": float(np.std(noise) / np.std(frame.floor[good])),
        "white_ratio": float(np.std(noise) / frame.sigma),
        "stripe_rms": float(np.std(pattern)),
        "stripe_ratio": float(np.std(pattern) / frame.sigma),
        "coherent_rms": float(np.std((cleaned - frame.sky - frame.floor)[good])),
        "row_ratio": float(np.nanstd(rows) / row_floor),
        "flux_kept": float("nan"),
    }
    if frame.galaxy.any():
        gal = (frame.galaxy > 0.05 * frame.galaxy.max()) & ~dqflags.flagged(frame.dq, ["DO_NOT_USE"])
        truth = frame.galaxy[gal].sum()
        level = np.median(resid[good])
        kept = (cleaned - frame.white - (frame.sky - frame.galaxy) - level)[gal].sum()
        out["flux_kept"] = float(kept / truth)
    return out
