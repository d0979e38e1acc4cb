import pytest

from jwstgal.bands import get_band


def test_channel_classification_and_pupil_mapping():
    assert get_band("f200w").band_type == "nircam_short"
    assert get_band("F300M").band_type == "nircam_long"
    assert get_band("F770W").instrument == "miri"
    b = get_band("F164N")
    assert (b.filter, b.pupil) == ("F150W2", "F164N")
    assert get_band("F200W").pupil == "CLEAR"
    assert get_band("F2100W").pupil is None


def test_pixel_scales_and_fwhm():
    assert get_band("F200W").pixel_scale == 0.031
    assert get_band("F444W").pixel_scale == 0.063
    assert get_band("F2100W").fwhm_arcsec == pytest.approx(5.989 * 0.11)


def test_selectors_most_specific_first():
    assert get_band("F200W").selectors == ("F200W", "nircam_short", "nircam")
    assert get_band("F770W").selectors == ("F770W", "miri")


def test_unknown_band_suggests():
    with pytest.raises(KeyError, match="did you mean F200W"):
        get_band("F20W")
