import pytest
from astropy.io import fits

from jwstgal.provenance import atomic_path, hash_params, stamp_header, write_text_atomic


def test_atomic_path_leaves_nothing_on_failure(tmp_path):
    final = tmp_path / "out.fits"
    with pytest.raises(RuntimeError), atomic_path(final) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("crash")
    assert list(tmp_path.iterdir()) == []


def test_atomic_path_replaces_only_on_success(tmp_path):
    final = write_text_atomic(tmp_path / "a.txt", "old")
    with pytest.raises(ValueError), atomic_path(final) as tmp:
        tmp.write_text("new")
        raise ValueError
    assert final.read_text() == "old"
    write_text_atomic(final, "new")
    assert final.read_text() == "new"
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"]


def test_stamp_header_records_versions_config_and_params():
    h = stamp_header(fits.Header(), step="lv1", params={"jump": {"x": 1}}, config_hash="abc")
    assert h["JGAL_CFG"] == "abc"
    assert h["JG_LV1"] == hash_params({"jump": {"x": 1}})
    history = "\n".join(h["HISTORY"])
    assert '"jump": {"x": 1}' in history and '"jwst":' in history
    # standard keywords only: the header survives a strict round trip
    fits.PrimaryHDU(header=h).verify("exception")


def test_hash_params_is_order_independent():
    assert hash_params({"a": 1, "b": [1, 2]}) == hash_params({"b": [1, 2], "a": 1})
    assert hash_params({"a": 1}) != hash_params({"a": 2})


def test_provenance_reads_back_whole_from_a_saved_file(tmp_path):
    """Issue #28 item 4: FITS cuts HISTORY at 72 characters; the JSON must come back whole."""
    import numpy as np
    from astropy.io import fits

    from jwstgal.provenance import read_provenance, stamp_header

    params = {"method": "row_median", "filter_scales": list(range(40)), "note": "x" * 150}
    h = fits.Header()
    h.add_history("an earlier tool's history card")
    stamp_header(h, step="destripe", params=params, config_hash="abc")
    stamp_header(h, step="level_match", params={"binning": 4})
    fits.PrimaryHDU(np.zeros((2, 2)), h).writeto(tmp_path / "f.fits")
    got = read_provenance(fits.getheader(tmp_path / "f.fits"))
    assert max(len(c) for c in fits.getheader(tmp_path / "f.fits")["HISTORY"]) <= 72
    assert got["destripe"]["parameters"] == params
    assert got["level_match"]["parameters"] == {"binning": 4}
    # every package whose code touches the products (issue #31 item 9), read back whole
    versions = set(got["destripe"]["versions"])
    assert {"jwst", "stpipe", "tweakwcs", "reproject", "scipy", "stpsf", "numpy"} <= versions


def test_every_step_and_repeat_has_its_own_provenance_keyword():
    """Issue #27 item 4: destripe_2 overwrote destripe's JG_DESTR, astrometric_align
    astrometric_catalog's JG_ASTRO."""
    from jwstgal.provenance import step_keyword
    from jwstgal.steps import REPEATABLE, STEP_NAMES

    # the band steps, their repeats, and what the post-mosaic steps and the simulator stamp
    names = [*STEP_NAMES, *(f"{s}_{n}" for s in REPEATABLE for n in range(2, 10)),
             "kernel", "psf", "anchor", "conv", "release", "simulate", "simulate_external"]
    keywords = {n: step_keyword(n) for n in names}
    assert all(len(k) <= 8 and k.startswith("JG_") for k in keywords.values())
    clashes = {k: [n for n in names if keywords[n] == k] for k in set(keywords.values())}
    assert {k: v for k, v in clashes.items() if len(v) > 1} == {}
    # the keywords of products made before stay what they were
    assert [step_keyword(s) for s in ("destripe", "level_match", "astrometric_catalog", "lv1")] == \
        ["JG_DESTR", "JG_LEVEL", "JG_ASTRO", "JG_LV1"]
    assert step_keyword("destripe_2") == "JG_DEST2" and step_keyword("astrometric_align") == "JG_ALIGN"
