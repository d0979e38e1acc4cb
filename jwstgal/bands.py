"""Static facts about JWST imaging bands: instrument, channel, pixel scale, PSF width, filter/pupil.

The numbers are those of the PHANGS-JWST scripts (FWHM in native pixels from the STScI PSF tables) so
that both suites agree band by band.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

Instrument = Literal["nircam", "miri"]
BandType = Literal["nircam_short", "nircam_long", "miri"]

#: PSF FWHM in native detector pixels.
FWHM_PIX: dict[str, float] = {
    # NIRCam short wavelength
    "F070W": 0.987, "F090W": 1.103, "F115W": 1.298, "F140M": 1.553, "F150W": 1.628,
    "F162M": 1.770, "F164N": 1.801, "F150W2": 1.494, "F182M": 1.990, "F187N": 2.060,
    "F200W": 2.141, "F210M": 2.304, "F212N": 2.341,
    # NIRCam long wavelength
    "F250M": 1.340, "F277W": 1.444, "F300M": 1.585, "F322W2": 1.547, "F323N": 1.711,
    "F335M": 1.760, "F356W": 1.830, "F360M": 1.901, "F405N": 2.165, "F410M": 2.179,
    "F430M": 2.300, "F444W": 2.302, "F460M": 2.459, "F466N": 2.507, "F470N": 2.535,
    "F480M": 2.574,
    # MIRI
    "F560W": 1.636, "F770W": 2.187, "F1000W": 2.888, "F1130W": 3.318, "F1280W": 3.713,
    "F1500W": 4.354, "F1800W": 5.224, "F2100W": 5.989, "F2550W": 7.312,
}  # fmt: skip

MIRI_BANDS: tuple[str, ...] = (
    "F560W", "F770W", "F1000W", "F1130W", "F1280W", "F1500W", "F1800W", "F2100W", "F2550W",
)  # fmt: skip
NIRCAM_BANDS: tuple[str, ...] = tuple(b for b in FWHM_PIX if b not in MIRI_BANDS)
ALL_BANDS: tuple[str, ...] = NIRCAM_BANDS + MIRI_BANDS

#: Native pixel scales in arcsec.
PIXEL_SCALES: dict[BandType, float] = {"nircam_short": 0.031, "nircam_long": 0.063, "miri": 0.11}

#: Narrow/medium bands observed through the pupil wheel: band -> (FILTER, PUPIL) header values.
_PUPIL_BANDS: dict[str, str] = {
    "F162M": "F150W2", "F164N": "F150W2", "F323N": "F322W2",
    "F405N": "F444W", "F466N": "F444W", "F470N": "F444W",
}  # fmt: skip


@dataclass(frozen=True)
class Band:
    """Everything the suite needs to know about one imaging band.

    Attributes
    ----------
    name : str
        Band name in upper case, e.g. ``"F200W"``.
    instrument : {"nircam", "miri"}
        Instrument observing the band.
    band_type : {"nircam_short", "nircam_long", "miri"}
        Channel, which sets the pixel scale and many per-band defaults.
    filter : str
        FILTER header keyword of exposures in this band.
    pupil : str or None
        PUPIL header keyword (NIRCam only).
    pixel_scale : float
        Native pixel scale in arcsec.
    fwhm_pix : float
        PSF FWHM in native pixels.
    """

    name: str
    instrument: Instrument
    band_type: BandType
    filter: str
    pupil: str | None
    pixel_scale: float
    fwhm_pix: float

    @property
    def fwhm_arcsec(self) -> float:
        """PSF FWHM in arcsec."""
        return self.fwhm_pix * self.pixel_scale

    @property
    def selectors(self) -> tuple[str, ...]:
        """Config selector keys that apply to this band, most specific first (target excluded)."""
        if self.instrument == "miri":
            return (self.name, "miri")
        return (self.name, self.band_type, "nircam")


def get_band(name: str) -> Band:
    """Look up a band by name.

    Parameters
    ----------
    name : str
        Band name, case-insensitive (``"f200w"`` and ``"F200W"`` are the same band).

    Returns
    -------
    Band
        The band's static properties.

    Raises
    ------
    KeyError
        If the band is not a NIRCam or MIRI imaging band; the message lists close matches.
    """
    key = name.upper()
    if key not in FWHM_PIX:
        import difflib

        close = difflib.get_close_matches(key, ALL_BANDS, n=3)
        hint = f"; did you mean {' or '.join(close)}?" if close else ""
        msg = (f"unknown band {name!r} (allowed: NIRCam {', '.join(NIRCAM_BANDS)}; "
               f"MIRI {', '.join(MIRI_BANDS)}){hint}")
        raise KeyError(msg)
    if key in MIRI_BANDS:
        return Band(key, "miri", "miri", key, None, PIXEL_SCALES["miri"], FWHM_PIX[key])
    band_type: BandType = "nircam_short" if int(key[1:4]) <= 212 else "nircam_long"
    filt, pupil = (_PUPIL_BANDS[key], key) if key in _PUPIL_BANDS else (key, "CLEAR")
    return Band(key, "nircam", band_type, filt, pupil, PIXEL_SCALES[band_type], FWHM_PIX[key])


def detector_channel(detector: str) -> BandType | None:
    """The channel a DETECTOR header value belongs to (None if it is not an imaging detector)."""
    import re

    d = str(detector).strip().upper()
    if d == "MIRIMAGE":
        return "miri"
    if re.fullmatch(r"NRC[AB](LONG|5)", d):
        return "nircam_long"
    if re.fullmatch(r"NRC[AB][1-4]", d):
        return "nircam_short"
    return None


def header_mismatch(band: Band, header: Mapping[str, Any]) -> str:
    """Why a JWST file's primary header contradicts ``band`` ('' if it does not).

    INSTRUME must be the band's instrument, FILTER (and, for NIRCam, PUPIL) the band's, and the
    DETECTOR must be of the band's channel: a short-wave NIRCam detector cannot observe a long-wave
    filter. A key the header lacks is not held against it.
    """
    inst = str(header.get("INSTRUME", "") or "").strip().lower()
    if inst and inst != band.instrument:
        return f"INSTRUME {inst.upper()} is not {band.name}'s {band.instrument.upper()}"
    filt = header.get("FILTER", "")
    pupil = header.get("PUPIL") if band.instrument == "nircam" else None
    want_pupil = band.pupil if band.instrument == "nircam" else None
    if (filt, pupil) != (band.filter, want_pupil):
        got = f"FILTER {filt}" + (f", PUPIL {pupil}" if band.instrument == "nircam" else "")
        want = f"FILTER {band.filter}" + (f", PUPIL {band.pupil}" if band.instrument == "nircam" else "")
        return f"{got} are not {band.name}'s {want}"
    det = header.get("DETECTOR")
    if det is not None and str(det).strip():
        channel = detector_channel(str(det))
        if channel != band.band_type:
            what = {"nircam_short": "a NIRCam short-wave", "nircam_long": "a NIRCam long-wave",
                    "miri": "the MIRI imager", None: "not an imaging"}[channel]
            return f"DETECTOR {str(det).upper()} is {what} detector; {band.name} is a {band.band_type} band"
    return ""
