"""migrate_config.py on pjpipe's own configs (issue #31 item 5), from its source distribution.

pjpipe 1.3.0's sdist ships ``config/<programme>/config.toml`` with the machines' local files. It
is GPL-licensed, so it is not copied into this (BSD) repository: it is fetched from PyPI, its
SHA-256 checked, into a cache outside the checkout. Without network (and no cached copy) these
tests are skipped, saying why; CI fetches it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
import tomllib
from pathlib import Path

import pytest
from conftest import REPO

SDIST = "pjpipe-1.3.0.tar.gz"
SHA256 = "eccf7645740d743d1a8e43e09a5add7cb8b40feff5a1a914c98b66365fcedfef"


def _cache() -> Path:
    return Path(os.environ.get("JWSTGAL_TEST_CACHE", Path.home() / ".cache" / "jwstgal-tests"))


@pytest.fixture(scope="module")
def configs() -> Path:
    """pjpipe's ``config/`` folder, extracted (TOML files only) from its hash-checked sdist."""
    import hashlib

    cache = _cache()
    cache.mkdir(parents=True, exist_ok=True)
    sdist = cache / SDIST
    if not sdist.is_file():
        req = cache / "pjpipe-sdist.txt"
        req.write_text(f"pjpipe==1.3.0 --hash=sha256:{SHA256}\n")
        got = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary",
                              ":all:", "--require-hashes", "-r", str(req), "-d", str(cache),
                              "--quiet", "--timeout", "30"], capture_output=True, text=True, timeout=300)
        if got.returncode != 0 or not sdist.is_file():
            pytest.skip(f"pjpipe's sdist could not be fetched from PyPI (offline?): {got.stderr[-300:]}")
    assert hashlib.sha256(sdist.read_bytes()).hexdigest() == SHA256
    out = cache / "pjpipe-1.3.0-config"
    if not out.is_dir():
        with tarfile.open(sdist) as tar:
            members = [m for m in tar.getmembers() if m.isfile() and m.name.endswith(".toml")
                       and m.name.startswith("pjpipe-1.3.0/config/")]
            tar.extractall(out, members=members, filter="data")
    return out / "pjpipe-1.3.0" / "config"


def _migrate(config: Path, local: Path, out: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "migrate_config.py"), str(config), str(local),
                           "--out-dir", str(out)], capture_output=True, text=True, timeout=600, cwd=REPO)


@pytest.mark.slow
def test_every_pjpipe_programme_config_migrates_and_validates(configs, tmp_path):
    """Each config of pjpipe's sdist (with its first local file) gives a config that validates,
    and every old key left behind is named with why."""
    cases = sorted(p for p in configs.glob("*/config*.toml"))
    assert len(cases) >= 8
    for config in cases:
        local = sorted(p for p in config.parent.glob("*.toml") if not p.name.startswith("config"))[0]
        out = tmp_path / f"{config.parent.name}_{config.stem}"
        res = _migrate(config, local, out)
        assert res.returncode == 0, (config, res.stderr[-3000:])
        migrated = tomllib.loads((out / "config.toml").read_text())
        old = tomllib.loads(config.read_text())
        assert [t for p in migrated["projects"].values() for t in p["targets"]] == old["targets"]
        assert migrated["pipeline"]["data_version"] == old["version"]
        bands = [b for b in old["bands"] if not b.endswith("_bgr")]
        assert sorted(migrated["pipeline"]["nircam_bands"] + migrated["pipeline"]["miri_bands"]) \
            == sorted(bands), config
        head = (out / "config.toml").read_text().split("\n\n")[0]
        assert all(": " in line for line in head.splitlines()[2:]), head          # each with why


@pytest.mark.pipeline
def test_the_phangs_programme_keeps_its_science(configs, tmp_path):
    """2107 (PHANGS): its steps in pjpipe's order (destriping the rate files), parameters with
    their band selectors, alignment, anchoring and the ladder."""
    from jwstgal.config import load_config

    out = tmp_path / "2107"
    res = _migrate(configs / "2107" / "config.toml", configs / "2107" / "astronode.toml", out)
    assert res.returncode == 0, res.stderr[-3000:]
    cfg = load_config(out / "config.toml", out / "local.toml", check_jwst=False).science
    assert cfg.pipeline.steps.nircam == ["lv1", "rate_destripe", "lv2", "wcs_adjust", "level_match",
                                         "stack_destripe", "lv3", "astrometric_align"]
    assert cfg.pipeline.steps.miri == ["lv1", "lv2", "wcs_adjust", "level_match", "lv3",
                                       "astrometric_catalog", "astrometric_align", "bgr_mosaics"]
    assert cfg.rate_destripe.method == "median_filter" and cfg.rate_destripe.dilate_size == 7
    assert cfg.lv3_parameters["tweakreg"]["skip"]["F770W"] is True
    assert cfg.lv2_parameters["bkg_subtract"] == {"save_combined_background": True, "sigma": 1.5}
    assert cfg.astrometric_align.alignment_mapping == {"F770W": "F1000W", "F1130W": "F1000W",
                                                        "F2100W": "F1000W"}
    assert cfg.astrometric_align.fitgeom == "rshift"                   # its second pass's
    assert cfg.alignment == {"ngc3627": "ngc3627_agb_cat.fits"}
    assert cfg.anchor.reference == {"miri": "F770W", "nircam": "F300M"}
    assert [(e.band, e.psf) for e in cfg.anchor.external["miri"]] == [("irac4", "gauss4"),
                                                                      ("w3", "gauss15")]
    assert cfg.convolve.targets == ["gauss0.85", "gauss0.9", "gauss1"]
    assert cfg.wcs_adjust.bands == ["F300M", "F1000W"] and cfg.pipeline.crds_context == "jwst_1201.pmap"
    assert "jw02107043001_0?2*" in cfg.pipeline.obs_to_skip
    assert cfg.release.include_crf and cfg.release.include_qa
    text = (out / "config.toml").read_text()
    assert "lv3_parameters.save_results: " in text            # set by the suite: named, not kept
