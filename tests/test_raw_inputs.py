"""Raw and band-folder files that must not enter a band (issue #30): a file whose FILTER names the band
but whose detector cannot observe it, and special files (a FIFO, a link to a device) that would hang
or flood the planner. Each test failed before its fix."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest
from factories import fake_uncal
from plan_fixture import build_tree

from jwstgal.bands import detector_channel, get_band, header_mismatch

RAW = Path("raw") / "ngc0628" / "mastDownload" / "JWST"


def _run(tmp_path):
    from jwstgal.config import load_config

    return load_config(*build_tree(tmp_path), check_jwst=False)


def _within(seconds: float, fn, *args):
    """``fn(*args)`` in a thread; fails (instead of hanging the suite) if it does not return in time."""
    out: dict = {}
    t = threading.Thread(target=lambda: out.setdefault("value", fn(*args)), daemon=True)
    t.start()
    t.join(seconds)
    assert not t.is_alive(), f"{fn.__name__} still running after {seconds} s (blocked on a special file?)"
    return out["value"]


@pytest.mark.parametrize(("band", "header", "why"), [
    ("F300M", {"INSTRUME": "NIRCAM", "DETECTOR": "NRCB1"}, "NRCB1 is a NIRCam short-wave detector"),
    ("F200W", {"INSTRUME": "NIRCAM", "DETECTOR": "NRCALONG"}, "NRCALONG is a NIRCam long-wave detector"),
    ("F770W", {"INSTRUME": "MIRI", "DETECTOR": "NRCA1"}, "NRCA1 is a NIRCam short-wave"),
    ("F770W", {"INSTRUME": "NIRCAM", "DETECTOR": "MIRIMAGE"}, "INSTRUME NIRCAM is not F770W's MIRI"),
    ("F200W", {"INSTRUME": "NIRCAM", "DETECTOR": "NRCB1", "PUPIL": "F162M"}, "PUPIL F162M"),
    ("F300M", {"INSTRUME": "NIRCAM", "DETECTOR": "NRCBLONG"}, ""),
    ("F300M", {"INSTRUME": "NIRCAM", "DETECTOR": "NRCB5"}, ""),
    ("F770W", {"INSTRUME": "MIRI", "DETECTOR": "MIRIMAGE"}, ""),
    ("F200W", {}, ""),                                          # keys a header lacks are not held against it
])
def test_header_mismatch_names_the_contradiction(band, header, why):
    b = get_band(band)
    full = {"FILTER": b.filter, **({"PUPIL": b.pupil} if b.pupil else {}), **header}
    got = header_mismatch(b, full)
    assert (why in got and got) if why else got == ""


def test_detector_channels():
    assert [detector_channel(d) for d in ("NRCA1", "nrcb4", "NRCALONG", "NRCB5", "MIRIMAGE", "NRS1")] == [
        "nircam_short", "nircam_short", "nircam_long", "nircam_long", "miri", None]


def test_a_raw_file_whose_detector_cannot_observe_the_band_is_left_out_with_a_message(tmp_path, caplog):
    from jwstgal.steps.lv1 import raw_exposures

    run = _run(tmp_path)
    stem = "jw02107001003_02101_00001_nrcb1"
    intruder = fake_uncal(tmp_path / RAW / stem / f"{stem}_uncal.fits", INSTRUME="NIRCAM",
                          DETECTOR="NRCB1", FILTER="F300M", PUPIL="CLEAR")
    stem = "jw02107001003_02101_00001_nrcblong"
    good = fake_uncal(tmp_path / RAW / stem / f"{stem}_uncal.fits", INSTRUME="NIRCAM",
                      DETECTOR="NRCBLONG", FILTER="F300M", PUPIL="CLEAR")
    with caplog.at_level("ERROR"):
        got = raw_exposures(run, "ngc0628", get_band("F300M"))
    assert good in got and intruder not in got and len(got) == 3
    msgs = [r.getMessage() for r in caplog.records]
    assert any(intruder.name in m and "NRCB1" in m and "short-wave" in m for m in msgs), msgs
    with caplog.at_level("ERROR"):                              # not an error for another band
        caplog.clear()
        assert intruder not in raw_exposures(run, "ngc0628", get_band("F200W"))
    assert not [r for r in caplog.records if intruder.name in r.getMessage()]


@pytest.mark.skipif(not hasattr(os, "mkfifo") or not Path("/dev/zero").exists(), reason="POSIX only")
def test_special_files_named_like_raw_data_neither_hang_nor_flood_the_planner(tmp_path, caplog):
    from jwstgal.steps.lv1 import raw_exposures

    run = _run(tmp_path)
    fifo = tmp_path / RAW / "jw02107001009_02101_00001_nrcb1" / "jw02107001009_02101_00001_nrcb1_uncal.fits"
    fifo.parent.mkdir(parents=True)
    os.mkfifo(fifo)
    zero = tmp_path / RAW / "jw02107001009_02101_00002_nrcb1" / "jw02107001009_02101_00002_nrcb1_uncal.fits"
    zero.parent.mkdir(parents=True)
    zero.symlink_to("/dev/zero")
    with caplog.at_level("ERROR"):
        got = _within(20, raw_exposures, run, "ngc0628", get_band("F200W"))
    assert len(got) == 3 and fifo not in got and zero not in got
    msgs = " ".join(r.getMessage() for r in caplog.records)
    assert "a FIFO, not a regular file" in msgs and "a device, not a regular file" in msgs


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="POSIX only")
def test_a_fifo_in_a_band_folder_is_named_not_opened(tmp_path):
    from jwstgal.steps import BandContext

    run = _run(tmp_path)
    ctx = BandContext.of(run, "ngc0628", get_band("F200W"))
    fifo = ctx.band_dir / "cal" / "jw02107001009_02101_00001_nrcb1_cal.fits"
    os.mkfifo(fifo)
    assert _within(20, ctx.foreign, fifo) == "a FIFO, not a regular file"
    intruder = fake_uncal(ctx.band_dir / "cal" / "jw02107001009_02101_00002_nrcb1_cal.fits",
                          INSTRUME="NIRCAM", FILTER="F200W", PUPIL="CLEAR", DETECTOR="NRCBLONG")
    assert "NRCBLONG is a NIRCam long-wave detector" in ctx.foreign(intruder)


def test_a_truncated_raw_file_whose_header_reads_is_left_out_at_planning(tmp_path, caplog):
    import numpy as np
    from astropy.io import fits

    from jwstgal.steps.lv1 import raw_exposures

    run = _run(tmp_path)
    stem = "jw02107001003_02101_00001_nrcb1"
    path = tmp_path / RAW / stem / f"{stem}_uncal.fits"
    path.parent.mkdir(parents=True)
    hdr = fits.Header({"INSTRUME": "NIRCAM", "DETECTOR": "NRCB1", "FILTER": "F200W", "PUPIL": "CLEAR"})
    fits.HDUList([fits.PrimaryHDU(header=hdr),
                  fits.ImageHDU(np.zeros((2, 3, 64, 64), np.uint16), name="SCI")]).writeto(path)
    path.write_bytes(path.read_bytes()[:-20000])             # a download or copy cut short
    assert fits.getheader(path)["FILTER"] == "F200W"          # its header still reads
    with caplog.at_level("ERROR"):
        got = raw_exposures(run, "ngc0628", get_band("F200W"))
    assert path not in got and len(got) == 3
    assert any(path.name in r.getMessage() and "truncated" in r.getMessage() for r in caplog.records)


def test_obs_to_skip_takes_globs_as_pjpipe_did_and_substrings_as_the_original():
    """Issue #31 item 6: pjpipe's obs_to_skip entries are fnmatch patterns."""
    from astropy.table import Table

    from jwstgal.mast_products import select_products
    from jwstgal.settings import name_skipped

    name = "jw02107001001_02101_00001_nrcb1_uncal.fits"
    assert name_skipped(name, ["02101_00001"])                          # a substring (the original)
    assert name_skipped(name, ["jw02107001001_0210?_00001"])            # a glob (pjpipe)
    assert name_skipped(name, ["jw021070010[0-9]1_*_nrcb1"])
    assert not name_skipped(name, ["jw02107001001_0210?_00002", "nrcb2"])
    products = Table({"productFilename": [name, name.replace("00001", "00002")],
                      "productType": ["SCIENCE"] * 2, "productSubGroupDescription": ["UNCAL"] * 2,
                      "calib_level": [1, 1], "dataURI": ["mast:a", "mast:b"]})
    kept = select_products(products, skip=["*_0210?_00001_*"])
    assert list(kept["productFilename"]) == [name.replace("00001", "00002")]
