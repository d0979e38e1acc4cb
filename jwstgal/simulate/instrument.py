"""The simulated instruments: detector geometry, readout, per-pixel maps and the WCS.

One :class:`DetectorSetup` describes a detector as both the ramp simulator and the synthetic reference
files see it, and :func:`detector_maps` draws its per-pixel maps (bias, flat, bad pixels) from a seed,
so the reference files calibrate exactly what the simulator injected.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from jwstgal.bands import Band
from jwstgal.dq import bits as dq_bits

#: DQ bits used here (from jwst's pixel flags).


@dataclass(frozen=True)
class DetectorSetup:
    """Geometry, readout and aperture of one simulated detector.

    Attributes
    ----------
    instrument : {"NIRCAM", "MIRI"}
        Instrument name as in the headers.
    detector : str
        Detector name, e.g. ``"NRCB1"``, ``"NRCBLONG"``, ``"MIRIMAGE"``.
    size : int
        Pixels per side; 2048 (NIRCam) is a full frame read through four amplifiers.
    pixel_scale : float
        Arcsec per pixel.
    v2_ref, v3_ref : float
        Telescope (V2, V3) position of the detector centre, arcsec.
    v3yangle : float
        Angle of the detector y axis from V3, degrees.
    gain : float
        Electrons per DN.
    read_noise : float
        White read noise per read, DN.
    ngroups : int
        Groups per integration (one frame per group).
    frame_time : float
        Seconds per frame.
    readpatt : str
        Readout pattern name.
    n_amps : int
        Amplifiers that read the detector, each a band of ``size // n_amps`` columns.
    refpix_border : int
        Width of the reference-pixel border: 4 on all sides (NIR) or left/right only (MIRI).
    """

    instrument: str
    detector: str
    size: int
    pixel_scale: float
    v2_ref: float
    v3_ref: float
    v3yangle: float
    gain: float
    read_noise: float
    ngroups: int
    frame_time: float
    readpatt: str
    n_amps: int
    refpix_border: int = 4

    @property
    def shape(self) -> tuple[int, int]:
        """Detector shape (ny, nx)."""
        return (self.size, self.size)

    @property
    def is_full_frame(self) -> bool:
        """Whether the pipeline sees a full-frame readout (else a subarray)."""
        return self.size == (1024 if self.instrument == "MIRI" else 2048)

    @property
    def subarray_name(self) -> str:
        """SUBARRAY keyword value."""
        if self.is_full_frame:
            return "FULL"
        return "BRIGHTSKY" if self.instrument == "MIRI" else "SUB640"

    @property
    def noutputs(self) -> int:
        """NOUTPUTS keyword: jwst's refpix handles four outputs only in full frames."""
        return self.n_amps if self.is_full_frame else 1

    @property
    def exposure_time(self) -> float:
        """Effective integration time of a ramp (seconds between first and last group)."""
        return self.frame_time * self.ngroups

    @property
    def crpix(self) -> tuple[float, float]:
        """Zero-based pixel (x, y) at the reference point (the detector centre)."""
        c = (self.size - 1) / 2.0
        return (c, c)

    def refpix_mask(self) -> np.ndarray:
        """Boolean map of reference pixels."""
        m = np.zeros(self.shape, bool)
        b = self.refpix_border
        m[:, :b] = m[:, -b:] = True
        if self.instrument == "NIRCAM":
            m[:b, :] = m[-b:, :] = True
        return m


def setup_for_band(band: Band, size: int) -> DetectorSetup:
    """The simulated detector that observes a band.

    Parameters
    ----------
    band : Band
        Band to observe.
    size : int
        Pixels per side.

    Returns
    -------
    DetectorSetup
    """
    # subarrays are read through one output (NOUTPUTS=1): one 1/f stream, one amplifier offset
    if band.instrument == "miri":
        return DetectorSetup("MIRI", "MIRIMAGE", size, band.pixel_scale, -453.559, -373.814, 4.449,
                             gain=3.1, read_noise=6.0, ngroups=8, frame_time=2.775,
                             readpatt="FASTR1", n_amps=1)
    if band.band_type == "nircam_short":
        return DetectorSetup("NIRCAM", "NRCB1", size, band.pixel_scale, 120.6714, -527.3877, -0.5,
                             gain=2.0, read_noise=10.0, ngroups=6, frame_time=10.737,
                             readpatt="RAPID", n_amps=4 if size == 2048 else 1)
    return DetectorSetup("NIRCAM", "NRCBLONG", size, band.pixel_scale, 86.1035, -493.2276, -0.55,
                         gain=1.8, read_noise=9.0, ngroups=6, frame_time=10.737,
                         readpatt="RAPID", n_amps=4 if size == 2048 else 1)


@dataclass(frozen=True)
class DetectorMaps:
    """Per-pixel properties of one detector, identical for ramps and reference files.

    Attributes
    ----------
    setup : DetectorSetup
    seed : int
        Seed the maps were drawn from.
    """

    setup: DetectorSetup
    seed: int

    @cached_property
    def _rng(self) -> np.random.Generator:
        return np.random.default_rng([self.seed, zlib.crc32(self.setup.detector.encode())])

    @cached_property
    def bias(self) -> np.ndarray:
        """Superbias level (DN)."""
        return (12000.0 + 50.0 * self._rng.standard_normal(self.setup.shape)).astype(np.float32)

    @cached_property
    def flat(self) -> np.ndarray:
        """Pixel-to-pixel response (mean 1, 1 % rms); 1 at reference pixels."""
        f = 1.0 + 0.01 * self._rng.standard_normal(self.setup.shape)
        f[self.setup.refpix_mask()] = 1.0
        return f.astype(np.float32)

    @cached_property
    def dead(self) -> np.ndarray:
        """Dead pixels (0.05 %, never reference pixels)."""
        d = self._rng.random(self.setup.shape) < 5e-4
        d &= ~self.setup.refpix_mask()
        return d

    @property
    def dark_rate(self) -> float:
        """Dark current (DN/s), uniform."""
        return 0.002 if self.setup.instrument == "NIRCAM" else 0.05

    def mask_dq(self) -> np.ndarray:
        """DQ array of the bad-pixel mask reference file."""
        dq = np.zeros(self.setup.shape, np.uint32)
        dq[self.setup.refpix_mask()] |= dq_bits(["REFERENCE_PIXEL", "DO_NOT_USE"])
        dq[self.dead] |= dq_bits(["DO_NOT_USE", "DEAD"])
        return dq


def distortion_model(setup: DetectorSetup):
    """Detector pixels -> (V2, V3) arcsec as an affine model with an analytic inverse.

    This is the transform written into the synthetic ``distortion`` reference file and used by the
    simulator to render the sky, so assign_wcs reproduces the simulator's geometry exactly.
    """
    from astropy.modeling.models import AffineTransformation2D, Shift

    t = np.deg2rad(setup.v3yangle)
    par = -1.0
    s = setup.pixel_scale
    matrix = s * np.array([[par * np.cos(t), np.sin(t)], [-par * np.sin(t), np.cos(t)]])
    cx, cy = setup.crpix
    model = (Shift(-cx) & Shift(-cy)) | AffineTransformation2D(
        matrix=matrix, translation=[setup.v2_ref, setup.v3_ref])
    model.inverse = AffineTransformation2D(matrix=matrix, translation=[setup.v2_ref, setup.v3_ref]
                                           ).inverse | (Shift(cx) & Shift(cy))
    return model


def build_gwcs(setup: DetectorSetup, ra_ref: float, dec_ref: float, roll_ref: float):
    """A gwcs ``detector -> v2v3 -> world`` for a pointing, as jwst's assign_wcs builds it.

    Parameters
    ----------
    setup : DetectorSetup
        Detector.
    ra_ref, dec_ref : float
        Sky position of the reference point (V2_REF, V3_REF), degrees.
    roll_ref : float
        Position angle of V3 at the reference point, degrees.

    Returns
    -------
    gwcs.wcs.WCS
    """
    import astropy.units as u
    from astropy.coordinates import ICRS
    from gwcs import coordinate_frames as cf
    from gwcs import wcs as gwcs_wcs
    from jwst.assign_wcs.pointing import v23tosky
    from stdatamodels.jwst.datamodels import ImageModel

    holder = ImageModel()
    w = holder.meta.wcsinfo
    w.v2_ref, w.v3_ref, w.roll_ref = setup.v2_ref, setup.v3_ref, roll_ref
    w.ra_ref, w.dec_ref = ra_ref, dec_ref
    tel2sky = v23tosky(holder)
    det = cf.Frame2D(name="detector", axes_order=(0, 1), unit=(u.pix, u.pix))
    v2v3 = cf.Frame2D(name="v2v3", axes_order=(0, 1), unit=(u.arcsec, u.arcsec))
    world = cf.CelestialFrame(reference_frame=ICRS(), name="world")
    return gwcs_wcs.WCS([(det, distortion_model(setup)), (v2v3, tel2sky), (world, None)])
