"""MAST download through the real astroquery client against a local MAST-protocol server."""

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from astropy.table import Table
from conftest import REPO
from mast_server import MastServer, MastState, serve_directory_of_uncals

from jwstgal.archive import DownloadPlan, MastArchive, name_key, select_observations, select_products
from jwstgal.errors import DownloadError, NetworkError

TOKEN = "s3cr3t-token-0123456789"


def _sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


@pytest.fixture
def archive_state(tiny_raw):
    """NGC 0000 (all tiny-simulation exposures) and NGC 2222 (one NIRCam exposure, renamed)."""
    state = MastState()
    files = sorted(tiny_raw.glob("ngc0000/mastDownload/JWST/*/*_uncal.fits"))
    serve_directory_of_uncals(state, files, target_name="NGC-0000", proposal_id="9999", ra=10.0, dec=-20.0)
    other = tiny_raw.parent / "other_uncal"
    other.mkdir(exist_ok=True)
    nrc = [f for f in files if "nrcb1" in f.name][0]
    copy = other / nrc.name.replace("jw09999001", "jw09999005")
    copy.write_bytes(nrc.read_bytes())
    serve_directory_of_uncals(state, [copy], target_name="NGC 2222", proposal_id="9999", ra=30.0,
                              dec=5.0)
    state.tokens.add(TOKEN)
    return state, files


def _config(tmp_path, server, targets=('"ngc0000"',), extra="", api_key=""):
    (tmp_path / "c.toml").write_text(
        f"[projects.9999]\ntargets = [{', '.join(targets)}]\n[pipeline]\nnircam_bands = [\"F200W\"]\n"
        f"miri_bands = [\"F770W\"]\n{extra}")
    (tmp_path / "l.toml").write_text(
        f'[local]\nraw_dir = "raw"\nworking_dir = "work"\nmast_server = "{server}"\n'
        f'api_key = "{api_key}"\n')
    return tmp_path / "c.toml", tmp_path / "l.toml"


def _run(script, *args, env=None):
    return subprocess.run([sys.executable, str(REPO / script), *map(str, args), "--no-progress"],
                          capture_output=True, text=True, cwd=REPO, timeout=300,
                          env={**os.environ, **(env or {})})


def test_name_matching_and_product_selection_are_pure_table_operations():
    assert name_key("NGC-628") == name_key("ngc0628") == name_key("NGC 0628") == "ngc628"
    obs = Table({"target_name": ["NGC-0628", "NGC-0628", "NGC1365"],
                 "instrument_name": ["NIRCAM/IMAGE", "MIRI/IMAGE", "NIRCAM/IMAGE"],
                 "filters": ["F200W;CLEAR", "F770W", "F200W"]})
    sel = select_observations(obs, target="ngc0628", instruments=["MIRI/IMAGE"], filters=["F770W"])
    assert list(sel["instrument_name"]) == ["MIRI/IMAGE"]
    assert len(select_observations(obs, target="ngc0628", filters=["F200W"])) == 1
    prods = Table({"productFilename": ["a_uncal.fits", "a_rate.jpg", "b_uncal.fits", "a_uncal.fits"],
                   "productType": ["SCIENCE", "PREVIEW", "SCIENCE", "SCIENCE"],
                   "productSubGroupDescription": ["UNCAL", "RATE", "UNCAL", "UNCAL"],
                   "calib_level": [1, 2, 1, 1], "dataURI": ["u1", "u2", "u3", "u1"]})
    assert list(select_products(prods)["productFilename"]) == ["a_uncal.fits", "b_uncal.fits"]
    assert list(select_products(prods, skip=["b_"])["productFilename"]) == ["a_uncal.fits"]
    assert list(select_products(prods, patterns=["b"])["productFilename"]) == ["b_uncal.fits"]
    assert len(select_products(prods, product_types=["PREVIEW"], subgroups=[], calib_levels=[2])) == 1


@pytest.mark.pipeline
def test_download_phangs_fetches_the_target_into_the_raw_tree_and_resumes(archive_state, tmp_path):
    state, files = archive_state
    with MastServer(state) as srv:
        cfg, local = _config(tmp_path, srv.url)
        res = _run("download_phangs_jwst.py", cfg, local)
        assert res.returncode == 0, res.stderr[-3000:]
        for f in files:                                        # byte-identical, astroquery layout
            got = tmp_path / "raw" / "ngc0000" / "mastDownload" / "JWST" / f.name.removesuffix(
                "_uncal.fits") / f.name
            assert got.is_file()
        assert not list((tmp_path / "raw").rglob("*.part")) and not list((tmp_path / "raw").rglob("*.jpg"))
        manifest = Table.read(tmp_path / "raw" / "ngc0000" / "download_manifest.ecsv")
        assert len(manifest) == len(files) and set(manifest["status"]) == {"downloaded"}
        n_get = sum(1 for m, p, _ in state.log if m == "GET" and "Download/file" in p)
        res = _run("download_phangs_jwst.py", cfg, local)           # everything already there
        assert res.returncode == 0
        assert sum(1 for m, p, _ in state.log if m == "GET" and "Download/file" in p) == n_get
        manifest = Table.read(tmp_path / "raw" / "ngc0000" / "download_manifest.ecsv")
        assert set(manifest["status"]) == {"already complete"}


@pytest.mark.pipeline
def test_dropped_connection_resumes_with_a_range_request(archive_state, tmp_path):
    state, files = archive_state
    name = files[0].name
    state.drop_after[name] = 300_000                 # astroquery writes 64 kB blocks
    with MastServer(state) as srv:
        arch = MastArchive(srv.url, retries=3, backoff=0.01)
        prods = select_products(arch.products(arch.query(proposal_id="9999", target="ngc0000")))
        manifest = arch.download(DownloadPlan(tmp_path, prods, "t"), progress=False)
    ranges = [r for m, p, r in state.log if m == "GET" and name in p and r]
    assert len(ranges) == 1 and ranges[0].endswith(f"-{len(state.files[name]) - 1}")
    assert 0 < int(ranges[0].removeprefix("bytes=").split("-")[0]) <= 300_000
    row = manifest[list(manifest["file"]).index(next(f for f in manifest["file"] if f.endswith(name)))]
    assert row["status"] == "resumed"
    got = next(tmp_path.rglob(name))
    assert got.read_bytes() == state.files[name]


@pytest.mark.pipeline
def test_corrupt_partial_file_is_detected_and_fetched_again(archive_state, tmp_path):
    state, files = archive_state
    name = files[0].name
    with MastServer(state) as srv:
        arch = MastArchive(srv.url, retries=3, backoff=0.01)
        obs = arch.query(proposal_id="9999", target="ngc0000")
        prods = select_products(arch.products(obs))
        row = prods[list(prods["productFilename"]).index(name)]
        part = tmp_path / "mastDownload" / "JWST" / row["obs_id"] / (name + ".part")
        part.parent.mkdir(parents=True)
        good = state.files[name]
        part.write_bytes(good[:2880] + bytes(len(good) // 2 - 2880))      # a corrupted half file
        arch.download(DownloadPlan(tmp_path, prods[[list(prods["productFilename"]).index(name)]], "t"),
                      progress=False)
    final = tmp_path / "mastDownload" / "JWST" / row["obs_id"] / name
    assert final.read_bytes() == good and not part.exists()
    gets = [r for m, p, r in state.log if m == "GET" and name in p]
    assert gets[0].startswith("bytes=") and gets[-1] == ""          # resumed, failed checksum, refetched


@pytest.mark.pipeline
def test_target_without_data_is_a_clear_error_with_nonzero_exit(archive_state, tmp_path):
    state, _ = archive_state
    with MastServer(state) as srv:
        cfg, local = _config(tmp_path, srv.url, targets=('"ngc0000"', '"ngc9999"'))
        res = _run("download_phangs_jwst.py", cfg, local, "--target", "ngc9999")
    assert res.returncode == 1
    assert "ngc9999: MAST has no SCIENCE UNCAL products at calib_level [1] for target 'ngc9999' in " \
           "proposal 9999" in res.stderr
    assert not (tmp_path / "raw").exists()


@pytest.mark.pipeline
def test_bad_token_is_a_clear_error_that_never_shows_the_token(archive_state, tmp_path):
    state, _ = archive_state
    with MastServer(state) as srv:
        cfg, local = _config(tmp_path, srv.url, api_key="wrong-token-abcdef")
        res = _run("download_phangs_jwst.py", cfg, local)
        assert res.returncode == 1
        assert "rejected the API token" in res.stderr and "wrong-token-abcdef" not in res.stderr
        cfg, local = _config(tmp_path, srv.url, api_key=TOKEN)   # the right one is accepted
        with pytest.raises(DownloadError, match="rejected"):
            MastArchive(srv.url, "nope")
        MastArchive(srv.url, TOKEN)
    assert not (tmp_path / "raw").exists()


@pytest.mark.pipeline
def test_exclusive_access_data_need_the_token(tiny_raw, tmp_path):
    state = MastState()
    files = sorted(tiny_raw.glob("ngc0000/mastDownload/JWST/*/*_uncal.fits"))[:1]
    serve_directory_of_uncals(state, files, target_name="NGC0000", proposal_id="9999", ra=1, dec=1,
                              exclusive=True)
    state.tokens.add(TOKEN)
    with MastServer(state) as srv:
        anon = MastArchive(srv.url, backoff=0.01)
        prods = select_products(anon.products(anon.query(proposal_id="9999", target="ngc0000")))
        with pytest.raises(DownloadError, match="exclusive-access data need an API token"):
            anon.download(DownloadPlan(tmp_path / "a", prods, "t"), progress=False)
        MastArchive(srv.url, TOKEN, backoff=0.01).download(DownloadPlan(tmp_path / "b", prods, "t"),
                                                            progress=False)
    assert next((tmp_path / "b").rglob("*_uncal.fits")).read_bytes() == next(iter(state.files.values()))


@pytest.mark.pipeline
def test_no_network_is_a_clear_error_and_writes_nothing(tmp_path):
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()                                                   # nothing listens there
    cfg, local = _config(tmp_path, f"http://127.0.0.1:{port}")
    res = _run("download_phangs_jwst.py", cfg, local)
    assert res.returncode == 1
    assert f"cannot reach MAST at http://127.0.0.1:{port}" in res.stderr
    assert "Traceback" not in res.stderr
    assert not (tmp_path / "raw").exists()
    with pytest.raises(NetworkError):
        MastArchive(f"http://127.0.0.1:{port}").query(proposal_id="1")


@pytest.mark.pipeline
def test_extra_obs_borrowed_from_another_target_go_into_its_tree(archive_state, tmp_path):
    state, files = archive_state
    miri = sorted(f.name for f in files if "mirimage" in f.name)
    prefix = miri[0][:20]
    with MastServer(state) as srv:
        extra = f'[extra_obs_to_include.ngc2222]\nngc0000 = ["{prefix}"]\n'
        cfg, local = _config(tmp_path, srv.url, targets=('"ngc0000"', '"ngc2222"'), extra=extra)
        res = _run("download_phangs_jwst.py", cfg, local, "--target", "ngc2222")
    assert res.returncode == 0, res.stderr[-3000:]
    own = sorted(p.name for p in (tmp_path / "raw" / "ngc2222").rglob("*_uncal.fits"))
    borrowed = sorted(p.name for p in (tmp_path / "raw" / "ngc0000").rglob("*_uncal.fits"))
    assert own == [n.replace("jw09999001", "jw09999005") for n in (f.name for f in files)
                   if "nrcb1" in n][:1]
    assert borrowed == [n for n in miri if n.startswith(prefix)] and borrowed


@pytest.mark.pipeline
def test_dry_run_lists_files_and_sizes_and_writes_nothing(archive_state, tmp_path):
    state, files = archive_state
    with MastServer(state) as srv:
        cfg, local = _config(tmp_path, srv.url)
        res = _run("download_phangs_jwst.py", cfg, local, "--dry-run")
    assert res.returncode == 0, res.stderr[-2000:]
    total = sum(len(state.files[f.name]) for f in files)
    assert f"would fetch {len(files)} files, {total / 1e6:.1f} MB" in res.stderr
    assert files[0].name in res.stderr
    assert not (tmp_path / "raw").exists()
    assert not any(m == "GET" and "Download/file" in p for m, p, _ in state.log)


@pytest.mark.pipeline
def test_archive_download_by_coordinates_and_by_resolved_name(archive_state, tmp_path):
    state, files = archive_state
    state.names["ngc 0000"] = (10.0, -20.0)
    with MastServer(state) as srv:
        _, local = _config(tmp_path, srv.url, api_key=TOKEN)    # server and token from local.toml
        res = _run("archive_download.py", "--ra", "10.0", "--dec", "-20.0", "--radius", "0.1",
                   "--instrument", "MIRI", "--out-dir", tmp_path / "cone", "--local", local)
        assert TOKEN not in res.stderr
        assert res.returncode == 0, res.stderr[-2000:]
        got = sorted(p.name for p in (tmp_path / "cone").rglob("*_uncal.fits"))
        assert got == sorted(f.name for f in files if "mirimage" in f.name)
        # a bare name goes through MAST's resolver (reached here through an HTTP proxy)
        wrong = _run("archive_download.py", "--target", "ngc 0000", "--out", tmp_path / "x")
        assert wrong.returncode == 2 and "--object 'ngc 0000'" in wrong.stderr
        res = _run("archive_download.py", "--object", "ngc 0000", "--filter", "F200W", "--out",
                   tmp_path / "name", "--server", srv.url,
                   env={"HTTP_PROXY": srv.url, "http_proxy": srv.url, "NO_PROXY": "127.0.0.1",
                        "no_proxy": "127.0.0.1"})
        assert res.returncode == 0, res.stderr[-2000:]
        got = sorted(p.name for p in (tmp_path / "name").rglob("*_uncal.fits"))
        assert got == sorted(f.name for f in files if "nrcb1" in f.name)
        res = _run("archive_download.py", "--ra", "200.0", "--dec", "5.0", "--out", tmp_path / "none",
                   "--server", srv.url)
    assert res.returncode == 1 and "MAST has no matching JWST products" in res.stderr
    assert np.all([m != "GET" or "none" not in p for m, p, _ in state.log])
