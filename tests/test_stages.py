"""The real jwst stage 1 and 2 pipelines on simulated exposures (offline, synthetic CRDS cache)."""

import hashlib

import numpy as np
import pytest
from astropy.io import fits

from jwstgal.stages import run_stage1, run_stage2


def sha(p):
    return hashlib.sha256(p.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def f200w_cal(crds_cache, tiny_raw, tmp_path_factory):
    uncal = sorted(tiny_raw.glob("ngc0000/mastDownload/JWST/*nrcb1/*_uncal.fits"))[1]
    before = sha(uncal)
    out = tmp_path_factory.mktemp("stages")
    rate = [p for p in run_stage1(uncal, out / "rate", {"steps": {}}, "cfg123")
            if p.name.endswith("_rate.fits")]
    assert len(rate) == 1
    cal = run_stage2(rate[0], [], out / "cal", {"steps": {"resample": {"skip": True}}}, "cfg123")
    assert sha(uncal) == before, "raw data must never be modified"
    return uncal, rate[0], cal[0]


@pytest.mark.pipeline
def test_stage1_2_calibrate_to_the_injected_sky(f200w_cal, tiny_raw):
    uncal, _, cal = f200w_cal
    truth = tiny_raw / "ngc0000" / "simulation_truth" / uncal.name.replace("_uncal", "_truth")
    sky = fits.getdata(truth, "SKY")
    stripes = fits.getdata(truth, "STRIPES")     # 1/f and the (one-output) amplifier offset
    with fits.open(cal) as h:
        data, dq = h["SCI"].data, h["DQ"].data
        assert h[0].header["S_JUMP"] == "COMPLETE" and h[0].header["S_PHOTOM"] == "COMPLETE"
    good = ((dq & 1) == 0) & np.isfinite(data)
    ratio = np.median((data - stripes)[good]) / np.median(sky[good])
    assert ratio == pytest.approx(1.0, abs=0.01)


def test_outputs_carry_provenance_and_no_temporaries(f200w_cal):
    _, rate, cal = f200w_cal
    for p, step in ((rate, "JG_LV1"), (cal, "JG_LV2")):
        h = fits.getheader(p)
        assert h["JGAL_CFG"] == "cfg123" and step in h
    assert not [q for q in cal.parent.iterdir() if q.name.startswith(".tmp")]


def test_injected_onef_stripes_survive_to_the_rate_image(f200w_cal, tiny_raw):
    """The simulator's truth stripe pattern is what stage 1 leaves in the data (in MJy/sr)."""
    uncal, _, cal = f200w_cal
    truth = tiny_raw / "ngc0000" / "simulation_truth" / uncal.name.replace("_uncal", "_truth")
    stripes = fits.getdata(truth, "STRIPES")
    sky = fits.getdata(truth, "SKY")
    data = fits.getdata(cal, "SCI")
    resid = data - sky
    rows = np.nanmedian(resid[8:-8, 8:-8], axis=1)
    truth_rows = np.median(stripes[8:-8, 8:-8], axis=1)
    assert np.corrcoef(rows - rows.mean(), truth_rows - truth_rows.mean())[0, 1] > 0.7


def test_crds_failure_is_a_clear_error():
    from jwstgal.crds_setup import crds_guard
    from jwstgal.errors import CRDSError

    with pytest.raises(CRDSError, match="CRDS failed during stage 1 of x.fits"), \
            crds_guard("stage 1 of x.fits"):
        raise SystemExit(-1)


@pytest.mark.pipeline
def test_stage2_subtracts_dedicated_miri_background(crds_cache, tiny_raw, tmp_path):
    """A MIRI science exposure with its off-field exposures as background members in stage 2."""
    files = sorted(tiny_raw.glob("ngc0000/mastDownload/JWST/*mirimage/*_uncal.fits"))
    sci = [p for p in files if "_02101_" in p.name or "_02102_" in p.name][0]
    bkg = [p for p in files if "_02201_" in p.name or "_02202_" in p.name]
    rates = {}
    for p in [sci, *bkg]:
        rates[p] = next(q for q in run_stage1(p, tmp_path / "rate", {"steps": {}})
                        if q.name.endswith("_rate.fits"))
    cal = run_stage2(rates[sci], [rates[b] for b in bkg], tmp_path / "cal",
                     {"steps": {"resample": {"skip": True}}})[0]
    assert fits.getheader(cal)["S_BKDSUB"] == "COMPLETE"
    truth = tiny_raw / "ngc0000" / "simulation_truth" / sci.name.replace("_uncal", "_truth")
    sky = fits.getdata(truth, "SKY")
    bkg_sky = float(np.median(fits.getdata(tiny_raw / "ngc0000" / "simulation_truth"
                                     / bkg[0].name.replace("_uncal", "_truth"), "SKY")))
    data, dq = fits.getdata(cal, "SCI"), fits.getdata(cal, "DQ")
    good = ((dq & 1) == 0) & np.isfinite(data)
    # background-subtracted: the cal image is the sky minus the off-field level (to 2 % of the sky)
    assert np.median(data[good] - (sky[good] - bkg_sky)) == pytest.approx(0.0, abs=0.02 * bkg_sky)


def test_associations_are_standard(tmp_path):
    """asn_type image2/image3, program and target from the headers, stage-3 members relative to
    the asn."""
    import json

    from astropy.io import fits
    from jwst.associations import load_asn

    from jwstgal.stages import write_image2_asn, write_image3_asn

    cal_dir, asn_dir = tmp_path / "stack_destripe", tmp_path / "lv3" / ".tmp"
    cal_dir.mkdir()
    asn_dir.mkdir(parents=True)
    cals = []
    for i in (1, 2):
        p = cal_dir / f"jw01234001001_02101_0000{i}_nrcb1_cal.fits"
        fits.PrimaryHDU(header=fits.Header({"PROGRAM": "1234", "TARGPROP": "NGC0628"})).writeto(p)
        cals.append(p)
    path = write_image3_asn(cals, "ngc0628_nircam_lv3_f200w", asn_dir / "a_asn.json")
    with path.open() as fh:
        asn = load_asn(fh)
    assert (asn["asn_type"], asn["program"], asn["target"]) == ("image3", "01234", "NGC0628")
    members = [m["expname"] for m in asn["products"][0]["members"]]
    assert all(not m.startswith("/") and (asn_dir / m).resolve() == c.resolve()
               for m, c in zip(members, cals, strict=True))
    rate = cal_dir / "jw01234001001_02101_00001_nrcb1_rate.fits"
    fits.PrimaryHDU(header=fits.Header({"PROGRAM": "1234", "TARGPROP": "NGC0628"})).writeto(rate)
    a2 = json.loads(write_image2_asn(rate, [cals[1]], asn_dir / "b_asn.json").read_text())
    assert (a2["asn_type"], a2["program"], a2["target"]) == ("image2", "01234", "NGC0628")
    assert [m["expname"] for m in a2["products"][0]["members"]] == \
        [str(rate.resolve()), str(cals[1].resolve())]      # Image2Pipeline needs them absolute
