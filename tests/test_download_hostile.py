"""A hostile or broken MAST, round two (issue #30): the token's origin, the size cap, drips, redirects
the downloader must not follow, undecodable bodies, a linked ``.part``, and the token kept out of Dask
workers. Each test failed before its fix."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from conftest import TOKEN
from mast_server import MastServer, MastState
from test_faults import _products, _rows

from jwstgal.archive import MAX_REDIRECTS, DownloadPlan, MastArchive
from jwstgal.errors import DownloadError


def _download(state: MastState, dest, **kw):
    with MastServer(state) as srv:
        arch = MastArchive(srv.url, kw.pop("token", None), **{"retries": 0, "backoff": 0.01, **kw})
        return arch.download(DownloadPlan(dest, _products(arch), "t"), progress=False)


def _file_url(port: str, name: str) -> str:
    return f"http://127.0.0.1:{port}/api/v0.1/Download/file?uri=mast:JWST/product/{name}"


@pytest.mark.pipeline
def test_the_token_never_reaches_another_port_of_the_mast_host(small_archive, tmp_path):
    for r in _rows(small_archive):
        r["dataRights"] = "EXCLUSIVE_ACCESS"
    mirror = MastState()
    mirror.files = dict(small_archive.files)
    name = _rows(small_archive)[0]["productFilename"]
    with MastServer(mirror) as other:
        small_archive.redirect[name] = _file_url(other.url.rsplit(":", 1)[1], name)
        manifest = _download(small_archive, tmp_path, token=TOKEN)
    assert list(manifest["status"]) == ["downloaded"] * 3
    home = [c for p, c in small_archive.cookies if "Download/file" in p]
    assert home and all(TOKEN in c for c in home)
    away = [c for _, c in mirror.cookies]
    assert away and not any(TOKEN in c for c in away)        # same host, other port: no token


@pytest.mark.pipeline
def test_a_redirected_login_check_is_refused_and_never_carries_the_token(small_archive):
    other_state = MastState()
    other_state.tokens.add(TOKEN)
    with MastServer(other_state) as other, MastServer(small_archive) as srv:
        small_archive.redirect["whoami"] = other.url + "/whoami"
        with pytest.raises(DownloadError, match="redirected to http://127.0.0.1"):
            MastArchive(srv.url, TOKEN, retries=0)
    assert not any(TOKEN in c for _, c in other_state.cookies)
    assert not other_state.log                                # the redirect was not followed at all


@pytest.mark.pipeline
def test_a_login_check_redirected_within_the_mast_origin_is_followed(small_archive):
    with MastServer(small_archive) as srv:
        small_archive.redirect["whoami"] = srv.url + "/whoami/"       # same scheme, host and port
        MastArchive(srv.url, TOKEN, retries=0)                         # accepted: no error
    assert any(p == "/whoami/" and TOKEN in c for p, c in small_archive.cookies)


@pytest.mark.pipeline
def test_a_product_listed_with_size_zero_is_cut_off_at_the_cap(small_archive, tmp_path):
    row = _rows(small_archive)[0]
    row["size"] = 0                                           # MAST lists no size
    small_archive.endless.add(row["productFilename"])        # ... and sends a body without end
    cap = 1 << 20
    with pytest.raises(DownloadError, match="1 of 3 files failed") as err:
        _download(small_archive, tmp_path / "raw", max_bytes=cap, retries=1)
    assert "GiB cap" in str(err.value) or "cap" in (tmp_path / "raw" / "download_manifest.ecsv").read_text()
    parts = list((tmp_path / "raw").rglob("*.part"))
    assert parts == []                                        # deleted past the cap
    assert not list((tmp_path / "raw").rglob(row["productFilename"]))
    assert len(list((tmp_path / "raw").rglob("*_uncal.fits"))) == 2


@pytest.mark.pipeline
def test_an_absurd_listed_size_is_refused_without_a_transfer(small_archive, tmp_path):
    row = _rows(small_archive)[0]
    row["size"] = 10**15
    with pytest.raises(DownloadError, match="1 of 3 files failed"):
        _download(small_archive, tmp_path / "raw")
    manifest = (tmp_path / "raw" / "download_manifest.ecsv").read_text()
    assert "over the 16 GiB cap" in manifest
    assert not [p for m, p, _ in small_archive.log if m == "GET" and row["productFilename"] in p]


@pytest.mark.pipeline
def test_a_drip_feed_is_dropped_for_its_rate_not_kept_alive(small_archive, tmp_path):
    name = _rows(small_archive)[0]["productFilename"]
    small_archive.drip[name] = (16, 0.05)                     # 320 B/s, each block well within the timeout
    t0 = time.monotonic()
    with pytest.raises(DownloadError, match="1 of 3 files failed") as err:
        _download(small_archive, tmp_path / "raw", min_rate=5000, rate_window=0.5)
    assert "too slow" in str(err.value)
    assert time.monotonic() - t0 < 15                         # the whole file would take ~30 s
    assert len(list((tmp_path / "raw").rglob("*_uncal.fits"))) == 2


@pytest.mark.parametrize(("target", "why"), [
    ("self", f"more than {MAX_REDIRECTS} redirects"),
    ("file:///etc/passwd", "file: URL"),
])
@pytest.mark.pipeline
def test_redirect_loops_and_non_http_redirects_fail_that_file_only(small_archive, tmp_path, target, why):
    name = _rows(small_archive)[0]["productFilename"]
    with MastServer(small_archive) as srv:
        small_archive.redirect[name] = (_file_url(srv.url.rsplit(":", 1)[1], name)
                                        if target == "self" else target)
        arch = MastArchive(srv.url, retries=0)
        with pytest.raises(DownloadError, match="1 of 3 files failed") as err:
            arch.download(DownloadPlan(tmp_path / "raw", _products(arch), "t"), progress=False)
    assert why in str(err.value)
    gets = [p for m, p, _ in small_archive.log if m == "GET" and name in p]
    assert len(gets) <= MAX_REDIRECTS + 1
    assert len(list((tmp_path / "raw").rglob("*_uncal.fits"))) == 2


@pytest.mark.pipeline
def test_an_undecodable_body_fails_that_file_with_a_message(small_archive, tmp_path):
    name = _rows(small_archive)[0]["productFilename"]
    small_archive.encoding[name] = "gzip"                     # labelled gzip, sent plain
    with pytest.raises(DownloadError, match="1 of 3 files failed") as err:
        _download(small_archive, tmp_path / "raw", retries=1)
    assert name in str(err.value)
    assert not list((tmp_path / "raw").rglob("*.part"))
    assert len(list((tmp_path / "raw").rglob("*_uncal.fits"))) == 2


@pytest.mark.pipeline
def test_a_part_file_that_is_a_link_is_never_followed(small_archive, tmp_path):
    from jwstgal.archive import product_path

    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    with MastServer(small_archive) as srv:
        arch = MastArchive(srv.url, retries=0)
        products = _products(arch)
        dest = product_path(tmp_path / "raw", products[0])
        dest.parent.mkdir(parents=True)
        part = dest.with_name(dest.name + ".part")
        part.symlink_to(victim)
        manifest = arch.download(DownloadPlan(tmp_path / "raw", products, "t"), progress=False)
    assert victim.read_text() == "precious"
    assert list(manifest["status"]) == ["downloaded"] * 3
    assert dest.is_file() and not dest.is_symlink()


def _token_seen() -> dict[str, bool]:
    with open(f"/proc/{os.getpid()}/environ", "rb") as fh:
        start = fh.read()
    return {"at_start": TOKEN.encode() in start, "now": os.environ.get("MAST_API_TOKEN") == TOKEN}


@pytest.mark.pipeline
@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="needs /proc")
def test_dask_workers_never_hold_the_token(monkeypatch):
    from jwstgal.executor import ExecutorSpec, open_executor

    monkeypatch.setenv("MAST_API_TOKEN", TOKEN)
    with open_executor(ExecutorSpec(kind="dask", workers=1)) as ex:
        seen = ex.map(_token_seen, [(), ()], progress=False)
        assert os.environ.get("MAST_API_TOKEN") is None       # withheld while the cluster runs
    assert os.environ["MAST_API_TOKEN"] == TOKEN              # and restored after
    assert seen == [{"at_start": False, "now": False}] * 2
