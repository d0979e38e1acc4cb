"""Fault injection: a malicious or broken MAST, and what the suite must do about it (issue: hostile
inputs and faults). Each test reproduces one failure found by the abuse campaign."""

from __future__ import annotations

import time

import numpy as np
import pytest
from astropy.io import fits
from mast_server import MastServer, MastState, serve_directory_of_uncals

from jwstgal.archive import SIZE_MARGIN, DownloadPlan, MastArchive, select_products
from jwstgal.errors import DownloadError

TOKEN = "t0ken-that-must-stay-home"


@pytest.fixture
def small_archive(tmp_path):
    """Three small NIRCam 'uncal' files of target NGC 0000 in proposal 9999."""
    files = []
    for i in range(3):
        p = tmp_path / "src" / f"jw09999001001_02101_0000{i + 1}_nrcb1_uncal.fits"
        p.parent.mkdir(exist_ok=True)
        hdr = fits.Header({"INSTRUME": "NIRCAM", "FILTER": "F200W", "PUPIL": "CLEAR"})
        fits.PrimaryHDU(np.full((32, 32), i, np.float32), hdr).writeto(p)
        files.append(p)
    state = MastState()
    serve_directory_of_uncals(state, files, target_name="NGC-0000", proposal_id="9999", ra=1.0, dec=2.0)
    state.tokens.add(TOKEN)
    return state


def _products(arch: MastArchive):
    return select_products(arch.products(arch.query(proposal_id="9999", target="ngc0000")))


def _rows(state: MastState):
    return [p for ps in state.products.values() for p in ps if p["productFilename"].endswith("uncal.fits")]


@pytest.mark.parametrize(("field", "value"), [
    ("productFilename", "../../../evil_uncal.fits"),
    ("productFilename", "/tmp/jwstgal-evil_uncal.fits"),
    ("obs_id", "../../escaped"),
    ("obs_id", "/tmp/jwstgal-escaped"),
    ("productFilename", "jw09999001001_02101_00001_nrcb1_uncal.sh"),
])
def test_server_supplied_paths_are_refused_before_anything_is_written(small_archive, tmp_path, field,
                                                                       value):
    _rows(small_archive)[1][field] = value
    dest = tmp_path / "raw"
    with MastServer(small_archive) as srv:
        arch = MastArchive(srv.url, retries=0)
        with pytest.raises(DownloadError, match="refusing to write it|not a product type"):
            arch.download(DownloadPlan(dest, _products(arch), "t"), progress=False)
    assert not dest.exists(), "nothing may be written when one name is unsafe"
    assert not list(tmp_path.parent.rglob("*evil*")) and not list(tmp_path.parent.rglob("*escaped*"))


def test_a_stalled_server_times_out_and_is_retried_then_reported(small_archive, tmp_path):
    name = _rows(small_archive)[0]["productFilename"]
    small_archive.stall[name] = 30.0
    with MastServer(small_archive) as srv:
        arch = MastArchive(srv.url, retries=1, backoff=0.01, read_timeout=0.5)
        t0 = time.monotonic()
        with pytest.raises(DownloadError, match="1 of 3 files failed"):
            arch.download(DownloadPlan(tmp_path / "raw", _products(arch), "t"), progress=False)
        elapsed = time.monotonic() - t0
    assert elapsed < 10, f"a stalled transfer hung for {elapsed:.0f} s"
    gets = [p for m, p, _ in small_archive.log if m == "GET" and name in p]
    assert len(gets) == 2                                             # first try + one retry
    assert len(list((tmp_path / "raw").rglob("*_uncal.fits"))) == 2   # the others arrived


def test_an_endless_body_stops_at_the_reported_size(small_archive, tmp_path):
    row = _rows(small_archive)[0]
    small_archive.endless.add(row["productFilename"])
    with MastServer(small_archive) as srv:
        arch = MastArchive(srv.url, retries=1, backoff=0.01)
        with pytest.raises(DownloadError, match="failed") as err:
            arch.download(DownloadPlan(tmp_path / "raw", _products(arch), "t"), progress=False)
    assert "longer than" in str(err.value)
    assert not list((tmp_path / "raw").rglob(row["productFilename"]))
    written = sum(p.stat().st_size for p in (tmp_path / "raw").rglob("*.part"))
    assert written <= int(row["size"]) + SIZE_MARGIN + 65536


def test_the_token_never_follows_a_redirect_to_another_host(small_archive, tmp_path):
    for r in _rows(small_archive):
        r["dataRights"] = "EXCLUSIVE_ACCESS"
    mirror = MastState()
    mirror.files = dict(small_archive.files)
    name = _rows(small_archive)[0]["productFilename"]
    with MastServer(small_archive) as srv, MastServer(mirror) as other:
        port = other.url.rsplit(":", 1)[1]
        small_archive.redirect[name] = (f"http://localhost:{port}/api/v0.1/Download/file?"
                                        f"uri=mast:JWST/product/{name}")
        arch = MastArchive(srv.url, TOKEN, retries=0)
        manifest = arch.download(DownloadPlan(tmp_path, _products(arch), "t"), progress=False)
    assert list(manifest["status"]) == ["downloaded"] * 3
    home = [c for p, c in small_archive.cookies if "Download/file" in p]
    assert home and all(TOKEN in c for c in home)                    # MAST itself gets the token
    away = [c for _, c in mirror.cookies]
    assert away and not any(TOKEN in c for c in away)               # the other host never does


def test_one_missing_file_does_not_stop_the_rest_and_the_manifest_is_written(small_archive, tmp_path):
    name = _rows(small_archive)[1]["productFilename"]
    del small_archive.files[name]                                      # MAST answers 404 for it
    with MastServer(small_archive) as srv:
        arch = MastArchive(srv.url, retries=0)
        with pytest.raises(DownloadError, match="1 of 3 files failed"):
            arch.download(DownloadPlan(tmp_path, _products(arch), "t"), progress=False)
    from astropy.table import Table

    manifest = Table.read(tmp_path / "download_manifest.ecsv")
    status = dict(zip([f.rsplit("/", 1)[-1] for f in manifest["file"]], manifest["status"], strict=True))
    assert status[name].startswith("failed: ") and "HTTP 404" in status[name]
    assert sorted(v for k, v in status.items() if k != name) == ["downloaded", "downloaded"]
