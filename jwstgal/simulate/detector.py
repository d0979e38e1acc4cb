"""Detector effects: HxRG 1/f noise in pixel read order, amplifier offsets, MIRI stripes, ramps.

The 1/f model follows Rauscher (2015, PASP 127, 1144): each amplifier clocks its pixels out one at a
time (10 us per pixel, 12 extra pixel times at the end of every row), with the fast-scan direction
alternating between neighbouring amplifiers. Noise that is correlated in *time* therefore becomes
horizontal stripes in the image, differing per amplifier (uncorrelated part) and shared by all
(correlated part), plus alternating-column noise (ACN).
"""

from __future__ import annotations

import numpy as np
import scipy.fft

from jwstgal.simulate.instrument import DetectorMaps, DetectorSetup

#: Pixel clock overhead per row, in pixel times (Rauscher 2015).
ROW_OVERHEAD = 12


def pink_noise(rng: np.random.Generator, n: int, n_series: int = 1) -> np.ndarray:
    """Unit-variance 1/f ("pink") noise series.

    Parameters
    ----------
    rng : numpy.random.Generator
        Random generator.
    n : int
        Samples per series.
    n_series : int
        Independent series.

    Returns
    -------
    numpy.ndarray
        Shape (n_series, n), each with unit standard deviation.
    """
    f = scipy.fft.rfftfreq(n)
    amp = np.zeros_like(f)
    amp[1:] = 1.0 / np.sqrt(f[1:])
    spec = (rng.standard_normal((n_series, f.size)) + 1j * rng.standard_normal((n_series, f.size)))
    series = scipy.fft.irfft(spec * amp, n=n, axis=-1)
    return series / series.std(axis=-1, keepdims=True)


def _time_to_image(stream: np.ndarray, setup: DetectorSetup) -> np.ndarray:
    """Map per-amplifier time streams (n_amps, n_reads, ny, w + overhead) to image reads."""
    n_amps, n_reads, ny, _ = stream.shape
    w = setup.size // setup.n_amps
    out = np.empty((n_reads, ny, setup.size), np.float32)
    for a in range(n_amps):
        block = stream[a, :, :, :w]
        if a % 2 == 1:  # alternate fast-scan direction
            block = block[:, :, ::-1]
        out[:, :, a * w:(a + 1) * w] = block
    return out


def onef_noise_reads(
    rng: np.random.Generator,
    setup: DetectorSetup,
    n_reads: int,
    rms_uncorrelated: float,
    rms_correlated: float,
    rms_acn: float = 0.0,
) -> np.ndarray:
    """1/f noise of every read of an integration, in DN, laid out as images.

    Parameters
    ----------
    rng : numpy.random.Generator
        Random generator.
    setup : DetectorSetup
        Detector (size and number of amplifiers).
    n_reads : int
        Reads (frames) in the integration; the noise is continuous across reads.
    rms_uncorrelated : float
        Per-pixel rms of the 1/f noise that differs between amplifiers (DN).
    rms_correlated : float
        Per-pixel rms of the 1/f noise common to all amplifiers (DN).
    rms_acn : float
        Rms of alternating-column noise (DN).

    Returns
    -------
    numpy.ndarray
        Shape (n_reads, ny, nx), float32.
    """
    ny = setup.size
    w = setup.size // setup.n_amps
    row = w + ROW_OVERHEAD
    n = n_reads * ny * row
    unc = pink_noise(rng, n, setup.n_amps) * rms_uncorrelated
    cor = pink_noise(rng, n, 1) * rms_correlated
    stream = (unc + cor).reshape(setup.n_amps, n_reads, ny, row)
    if rms_acn > 0:  # odd/even pixel-time offsets that wander as 1/f
        acn = pink_noise(rng, n // 2 + 1, setup.n_amps)[:, : n // 2] * rms_acn
        alt = np.zeros((setup.n_amps, n))
        alt[:, 0 : 2 * acn.shape[1] : 2] = acn
        alt[:, 1 : 2 * acn.shape[1] : 2] = -acn
        stream += alt.reshape(stream.shape)
    return _time_to_image(stream, setup)


def miri_stripes(rng: np.random.Generator, shape: tuple[int, int], amplitude: float) -> np.ndarray:
    """MIRI row + column striping and a large-scale background gradient, as a rate offset.

    Parameters
    ----------
    rng : numpy.random.Generator
        Random generator.
    shape : tuple of int
        Image shape.
    amplitude : float
        Rms of the row and column patterns (same unit as the output, DN/s).

    Returns
    -------
    numpy.ndarray
        Additive pattern, zero mean.
    """
    ny, nx = shape
    rows = amplitude * (0.7 * rng.standard_normal(ny) + 0.7 * np.cumsum(rng.standard_normal(ny))
                        / np.sqrt(ny))
    cols = amplitude * 0.6 * rng.standard_normal(nx)
    yy, xx = np.mgrid[0:ny, 0:nx] / max(ny, nx)
    grad = amplitude * 2.0 * (rng.standard_normal() * (xx - 0.5) + rng.standard_normal() * (yy - 0.5))
    pattern = rows[:, None] + cols[None, :] + grad
    return pattern - pattern.mean()


def ramp_slope(reads: np.ndarray, frame_time: float) -> np.ndarray:
    """Ordinary least-squares slope of reads against time (what an unweighted ramp fit measures).

    Parameters
    ----------
    reads : numpy.ndarray
        Shape (n_reads, ny, nx).
    frame_time : float
        Seconds between reads.

    Returns
    -------
    numpy.ndarray
        Slope per pixel, per second.
    """
    n = reads.shape[0]
    t = (np.arange(n) - (n - 1) / 2.0) * frame_time
    return np.tensordot(t, reads, axes=(0, 0)) / np.sum(t**2)


def make_ramp(
    rng: np.random.Generator,
    setup: DetectorSetup,
    maps: DetectorMaps,
    photon_rate: np.ndarray,
    artefact_rate: np.ndarray,
    onef_reads: np.ndarray | None,
    n_cosmic: int = 0,
) -> np.ndarray:
    """Simulate the uncal ramp of one integration.

    Parameters
    ----------
    rng : numpy.random.Generator
        Random generator.
    setup : DetectorSetup
        Detector.
    maps : DetectorMaps
        Bias, flat, dark and bad pixels (shared with the reference files).
    photon_rate : numpy.ndarray
        Sky signal before the flat (DN/s); Poisson noise is drawn on it.
    artefact_rate : numpy.ndarray
        Noise-free additive detector signal (DN/s): amplifier offsets, stripes.
    onef_reads : numpy.ndarray or None
        1/f noise per read from :func:`onef_noise_reads` (DN).
    n_cosmic : int
        Cosmic-ray hits (a jump of 500-3000 DN at a random group).

    Returns
    -------
    numpy.ndarray
        uint16 ramp of shape (1, ngroups, ny, nx).
    """
    ng, shape = setup.ngroups, setup.shape
    ref = setup.refpix_mask()
    electrons = np.clip(photon_rate * maps.flat, 0, None) * setup.gain * setup.frame_time
    electrons[ref] = 0.0
    ramp = np.empty((ng, *shape), np.float64)
    acc = np.zeros(shape)
    for g in range(ng):
        acc += rng.poisson(electrons)
        t = (g + 1) * setup.frame_time
        signal = acc / setup.gain + (maps.dark_rate + np.where(ref, 0.0, artefact_rate)) * t
        ramp[g] = maps.bias + signal + setup.read_noise * rng.standard_normal(shape)
    if onef_reads is not None:
        ramp += onef_reads
    for _ in range(n_cosmic):
        y, x = rng.integers(8, shape[0] - 8), rng.integers(8, shape[1] - 8)
        ramp[rng.integers(1, ng):, y, x] += rng.uniform(500, 3000)
    return np.clip(np.rint(ramp), 0, 65535).astype(np.uint16)[None]
