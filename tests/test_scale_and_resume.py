"""Issue #7: the same chain on a local Dask cluster, after a kill -9, and its QA page in a browser.

Slow (minutes): run with ``pytest -m slow``. CI runs it.
"""

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from conftest import REPO

pytestmark = pytest.mark.slow

SCIENCE = """
[projects.9999]
targets = ["ngc0000"]

[simulation]
seed = 5
detector_size = 256
n_dithers = 3
n_tiles = 1
n_stars = 2500

[pipeline]
data_version = "s"
nircam_bands = ["F200W"]
miri_bands = ["F770W"]

[alignment]
ngc0000 = "ngc0000_sim_cat.fits"

[lv2_parameters.resample]
skip = true

[lv3_parameters.tweakreg]
fitgeometry = "shift"
abs_fitgeometry = "shift"
bkg_boxsize = { nircam = 100, miri = 25 }

[lv3_parameters.source_catalog]
bkg_boxsize = { nircam = 50, miri = 25 }
"""


def local_toml(executor: str, work: str, processes: int = 2) -> str:
    return f"""
[local]
raw_dir = "raw"
working_dir = "{work}"
crds_dir = "crds"
crds_mode = "synthetic"
alignment_dir = "alignment"
executor = "{executor}"
processes = {processes}
"""


def cli(d: Path, local: str, **kw):
    (d / f"{local}.toml").write_text(kw.pop("text"))
    return subprocess.Popen([sys.executable, str(REPO / "run_jwst_reprocessing.py"),
                             str(d / "science.toml"), str(d / f"{local}.toml"), "--no-progress"],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True, **kw)


def science_arrays(work: Path) -> dict[str, np.ndarray]:
    out = {}
    for p in sorted(work.rglob("*.fits")):
        if p.parent.name in ("rate", "cal", "lv3") and "crds" not in p.parts:
            with fits.open(p) as h:
                if "SCI" in h:
                    out[str(p.relative_to(work))] = np.array(h["SCI"].data)
    return out


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    d = tmp_path_factory.mktemp("scale")
    (d / "science.toml").write_text(SCIENCE)
    serial = cli(d, "serial", text=local_toml("serial", "work_serial", 1))
    out, _ = serial.communicate(timeout=1500)
    assert serial.returncode == 0, out[-4000:]
    return d


def assert_same_science(a: dict, b: dict) -> None:
    assert a.keys() == b.keys() and len(a) > 0
    for k in a:
        assert np.array_equal(a[k], b[k], equal_nan=True), k


def test_dask_cluster_gives_the_serial_outputs(runs):
    d = runs
    proc = cli(d, "dask", text=local_toml("dask", "work_dask", 2))
    out, _ = proc.communicate(timeout=1500)
    assert proc.returncode == 0, out[-4000:]
    assert "Dask client" in out
    assert_same_science(science_arrays(d / "work_serial"), science_arrays(d / "work_dask"))


def test_kill_9_mid_run_then_restart_gives_identical_science(runs):
    d = runs
    work = d / "work_killed"
    proc = cli(d, "killed", text=local_toml("processes", "work_killed", 2))
    rate_dir = work / "jwst_lv3_reprocessed_s" / "ngc0000" / "F770W" / "rate"
    deadline = time.time() + 600
    while time.time() < deadline and not list(rate_dir.glob("*_rate.fits")):
        time.sleep(0.2)
    assert list(rate_dir.glob("*_rate.fits")), "stage 1 never produced a file"
    os.killpg(proc.pid, signal.SIGKILL)               # the driver and its workers, mid-stage
    proc.wait()
    done = len(list(rate_dir.glob("*_rate.fits")))
    assert done < 5, "the kill came too late to test a resume"
    again = cli(d, "killed", text=local_toml("processes", "work_killed", 2))
    out, _ = again.communicate(timeout=1500)
    assert again.returncode == 0, out[-4000:]
    assert "reused" in out
    assert not list(work.rglob(".tmp-*")), "temporaries of the killed run were left behind"
    assert_same_science(science_arrays(d / "work_serial"), science_arrays(work))


def test_qa_report_renders_in_a_headless_browser(runs):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver_bin = shutil.which("chromedriver")
    if not (chromium and driver_bin):
        pytest.skip("chromium and chromedriver are not installed (.ci/run installs them)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    page = runs / "work_serial" / "jwst_lv3_reprocessed_s" / "qa" / "index.html"
    assert page.is_file()
    # the page again, as make_kernels rewrites it, with an unsafe kernel for F770W (issue #28)
    from jwstgal import layout
    from jwstgal.config import load_config
    from jwstgal.report import write_report

    (runs / "science_qa.toml").write_text(SCIENCE + '[kernels]\ntargets = ["gauss0.92"]\n'
                                          'methods = ["pypher"]\n')
    (runs / "serial_qa.toml").write_text(local_toml("serial", "work_serial", 1) + 'psf_dir = "psf"\n')
    cfg = load_config(runs / "science_qa.toml", runs / "serial_qa.toml", check_jwst=False)
    kern = layout.kernel_path(cfg.psf_dir, "pypher", "F770W", "gauss0.92")
    kern.parent.mkdir(parents=True, exist_ok=True)
    fits.PrimaryHDU(np.zeros((3, 3)), fits.Header({"KERN_WM": 3.07, "KERN_D": 0.02,
                                                   "SAFETY": "very unsafe"})).writeto(kern, overwrite=True)
    assert write_report(cfg) == page
    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update", "--no-first-run"):
        opts.add_argument(flag)
    driver = webdriver.Chrome(service=Service(driver_bin), options=opts)
    try:
        driver.get(page.as_uri())
        sections = driver.find_elements("css selector", "section")
        assert [s.get_attribute("id") for s in sections] == ["ngc0000-F200W", "ngc0000-F770W"]
        # it opens short: every band's section folded under its verdict
        height = driver.execute_script("return document.documentElement.scrollHeight;")
        assert height < 2500, height
        assert not any(d.get_attribute("open") for d in driver.find_elements("css selector", "details"))
        # the unsafe kernel is flagged: a 'check' verdict in colour, with the reason in words
        (f770,) = [v for v in driver.find_elements("css selector", "table#verdicts tr.band-verdict")
                   if "F770W" in v.text]
        assert f770.get_attribute("data-verdict") == "check" and "very unsafe: W- = 3.07 > 0.5" in f770.text
        assert f770.find_element("css selector", "td.verdict-check").value_of_css_property(
            "color") == "rgba(187, 102, 0, 1)"
        f770.find_element("tag name", "a").click()                  # the link opens its section
        assert driver.find_element("css selector", "#ngc0000-F770W details").get_attribute("open")
        row = driver.find_element("css selector", "#ngc0000-F770W tr.fail")
        assert "gauss0.92" in row.text and row.value_of_css_property("color") == "rgba(187, 0, 0, 1)"
        driver.execute_script("document.querySelectorAll('details').forEach(d => d.open = true);"
                              "document.querySelectorAll('img').forEach(i => i.loading = 'eager');")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not driver.execute_script(
                "return Array.from(document.images).every(i => i.complete);"):
            time.sleep(0.2)
        widths = driver.execute_script(
            "return Array.from(document.images).map(i => [i.alt, i.complete && i.naturalWidth]);")
        alts = [a for a, _ in widths]
        assert alts.count("stage 3 mosaic") == 2 and "astrometric residuals" in alts
        assert "stage 1 rates" in alts and "stage 2 exposures" in alts
        assert all(w and w > 0 for _, w in widths), widths   # every image actually loads
        text = driver.find_element("tag name", "body").text
        assert text.count("complete") >= 6 and "Astrometry vs reference" in text
        # the page opens with the per-band summary: one row per band, what ran, exposures
        # above it, one verdict per band, coloured, linked to the band's section (issue #28)
        verdicts = driver.find_elements("css selector", "table#verdicts tr.band-verdict")
        assert len(verdicts) == 2, [v.text for v in verdicts]
        for v in verdicts:
            word = v.get_attribute("data-verdict")
            assert word in ("ok", "check", "failed") and word in v.text
            cell = v.find_element("css selector", f"td.verdict-{word}")
            assert cell.value_of_css_property("color") != "rgba(0, 0, 0, 1)"      # in colour, not plain
            href = v.find_element("tag name", "a").get_attribute("href")
            assert driver.find_element("id", href.rsplit("#", 1)[1]).tag_name == "section"
        rows = driver.find_elements("css selector", "table#summary tr")
        assert len(rows) == 3, [r.text for r in rows]
        header = rows[0].text
        assert "steps" in header and "exposures" in header
        assert "ran" in rows[1].text and "F200W" in rows[1].text
        driver.save_screenshot(str(page.with_name("screenshot.png")))
    finally:
        driver.quit()
