"""The custom steps as stpipe steps: spec from the settings model, ``.call`` and ``strun``."""

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from stdatamodels.jwst.datamodels import ImageModel

from jwstgal.destripe import DestripeParams
from jwstgal.destripe_frames import destripe_arrays, frame_layout
from jwstgal.simulate import frames as F
from jwstgal.stpipe_steps import (
    STPIPE_STEPS,
    DestripeStep,
    LevelMatchStep,
    WcsAdjustStep,
    _primary_of,
    settings_spec,
)

pytestmark = pytest.mark.filterwarnings("ignore::astropy.utils.exceptions.AstropyUserWarning")

STRUN = Path(sys.executable).with_name("strun")


@pytest.fixture(scope="module")
def frame():
    return F.striped_frame(1024, seed=2, scene="field", n_amps=4)


def _image_model(fr, **meta) -> ImageModel:
    m = ImageModel(data=fr.data.astype(np.float32), dq=fr.dq.astype(np.uint32),
                   err=fr.err.astype(np.float32))
    m.meta.instrument.name = "NIRCAM"
    m.meta.instrument.detector = "NRCA1"
    m.meta.subarray.name = "FULL"
    m.meta.exposure.noutputs = 4
    m.meta.filename = "jw09999001001_02101_00001_nrca1_cal.fits"
    for k, v in meta.items():
        setattr(m.meta.instrument, k, v)
    return m


@pytest.mark.parametrize("cls", STPIPE_STEPS, ids=lambda c: c.__name__)
def test_spec_defaults_are_the_settings_models_defaults(cls):
    step = cls()
    assert step.settings() == cls.settings_model(**{k: v for k, v in cls.settings_model().model_dump().items()
                                                     if k not in cls.excluded})
    for name in cls.settings_model.model_fields:       # every setting is a parameter, none twice
        assert (f"    {name} = " in cls.spec) != (name in cls.excluded), name
    assert cls.spec.count("\n    ") == len(cls.spec.strip().splitlines())


def test_parameters_are_validated_by_the_settings_model():
    with pytest.raises(ValueError, match="sigma"):
        DestripeStep(sigma=0.0).settings()              # gt=0 in the model (configobj only knows min)
    with pytest.raises(ValueError, match="not valid JSON"):
        WcsAdjustStep(passes="[{").settings()
    passes = WcsAdjustStep(passes='[{"searchrad": "5pix", "tolerance": 0.1}]').settings().passes
    assert passes[0].searchrad == "5pix" and passes[0].tolerance == 0.1
    with pytest.raises(Exception, match="method"):
        DestripeStep(method="bogus")                    # an option outside the Literal


def test_a_field_may_not_shadow_an_stpipe_parameter():
    from jwstgal.settings import StepSettings

    class Bad(StepSettings):
        skip: bool = False

    with pytest.raises(ValueError, match="shadows the stpipe parameter"):
        settings_spec(Bad)


@pytest.mark.pipeline
def test_call_on_a_model_is_the_pure_function_and_removes_the_stripes(frame):
    model = _image_model(frame)
    assert frame_layout(_primary_of(model), frame.data.shape)[1] == 4
    out = DestripeStep.call(model, method="row_median")
    expect, *_ = destripe_arrays(model.data, np.asarray(model.dq), model.err, _primary_of(model),
                                 DestripeParams(method="row_median"))      # float32, as the step
    np.testing.assert_array_equal(out.data, expect)
    raw, after = F.score(frame, frame.data), F.score(frame, np.asarray(out.data, float))
    assert after["coherent_rms"] < raw["coherent_rms"] / 5, after
    assert np.array_equal(model.data, frame.data.astype(np.float32))   # the input model is unchanged
    history = [v for k, v in out.to_flat_dict().items() if k.startswith("history.entries")]
    assert any("jwstgal" in str(h) and "row_median" in str(h) for h in history)


@pytest.mark.pipeline
def test_bg_sub_step_removes_the_injected_level(frame):
    from jwstgal.stpipe_steps import BgSubStep

    fr = F.striped_frame(512, seed=9, stripe_rms=0.0, amp_offset_rms=0.0, n_amps=1, background=12.5)
    out = BgSubStep.call(_image_model(fr))
    good = fr.dq == 0
    assert abs(np.median((out.data - (fr.data - 12.5))[good])) < 0.02


@pytest.mark.pipeline
def test_strun_runs_the_step_by_class_and_by_alias(frame, tmp_path):
    src = tmp_path / "jw09999001001_02101_00001_nrca1_cal.fits"
    _image_model(frame).save(str(src))
    env_out = {}
    for name, sub in (("jwstgal.DestripeStep", "a"), ("destripe", "b")):
        (tmp_path / sub).mkdir()
        r = subprocess.run([str(STRUN), name, str(src), "--method=row_median",
                            f"--output_dir={tmp_path / sub}"],
                           capture_output=True, text=True, timeout=600, cwd=tmp_path)
        assert r.returncode == 0, r.stderr[-3000:]
        # the step's own log line, in stpipe's format (issue #28: jwstgal's loggers were not configured)
        assert re.search(r" - jwstgal\.stpipe_steps - INFO - .*row_median, .*stripe model rms",
                         r.stdout + r.stderr), (r.stdout + r.stderr)[-3000:]
        outs = list((tmp_path / sub).glob("*.fits"))
        assert len(outs) == 1, outs
        with ImageModel(str(outs[0])) as m:
            env_out[sub] = np.array(m.data)
    np.testing.assert_array_equal(env_out["a"], env_out["b"])
    raw, after = F.score(frame, frame.data), F.score(frame, env_out["a"].astype(float))
    assert after["coherent_rms"] < raw["coherent_rms"] / 5
    quiet = subprocess.run([str(STRUN), "destripe", str(src), "--method=row_median", "--log-level=WARNING",
                            f"--output_dir={tmp_path / 'a'}"], capture_output=True, text=True, timeout=600,
                           cwd=tmp_path)
    assert quiet.returncode == 0 and "stripe model rms" not in quiet.stdout + quiet.stderr
    bad = subprocess.run([str(STRUN), "destripe", str(src), "--method=nonsense"], capture_output=True,
                         text=True, timeout=600, cwd=tmp_path)
    assert bad.returncode != 0 and "method" in bad.stderr


def test_entry_point_registers_every_step():
    from stpipe.utilities import resolve_step_class_alias

    for cls in STPIPE_STEPS:
        assert resolve_step_class_alias(cls.class_alias) == f"jwstgal.{cls.__name__}"
        import jwstgal

        assert getattr(jwstgal, cls.__name__) is cls


def test_the_stpipe_steps_are_the_registry_entries_that_declare_one():
    """No second list (issue #27): the registry's ``stpipe = True`` entries are the stpipe steps,
    each class named after its step and given the step's alias, settings model and spec."""
    from jwstgal.steps import STEPS
    from jwstgal.stpipe_spec import settings_spec
    from jwstgal.stpipe_steps import JwstgalStep, stpipe_class_name

    declared = [s for s in STEPS if s.stpipe]
    assert [c.class_alias for c in STPIPE_STEPS] == [s.name for s in declared]
    assert len(declared) == 8 and stpipe_class_name("astrometric_align") == "AstrometricAlignStep"
    for step, cls in zip(declared, STPIPE_STEPS, strict=True):
        assert cls.__name__ == stpipe_class_name(step.name) and cls.settings_model is step.settings
        assert cls.spec.startswith(settings_spec(step.settings, cls.excluded))
        for field in set(step.settings.model_fields) - set(cls.excluded):
            assert f"    {field} = " in cls.spec
    with pytest.raises(TypeError, match="no registry step declares it"):
        type("NotARegistryStep", (JwstgalStep,), {})
    with pytest.raises(TypeError, match="no registry step declares it"):   # declares stpipe = False
        type("RateDestripeStep", (JwstgalStep,), {})
    import jwstgal

    with pytest.raises(AttributeError):
        jwstgal.NotARegistryStep  # noqa: B018


@pytest.mark.pipeline
def test_level_match_step_on_models_recovers_the_offsets(tmp_path):
    from test_level_match_step import NOISE, write_cal

    rng = np.random.default_rng(0)
    ra0, dec0 = 24.17, 15.78

    def sky(ra, dec):
        r2 = ((ra - ra0) * np.cos(np.deg2rad(dec0)) * 3600) ** 2 + ((dec - dec0) * 3600) ** 2
        return 1.0 + 4.0 * np.exp(-r2 / (2 * 20.0**2))

    models, truth = [], []
    for visit, dra, off in (("001", -15.0, 0.0), ("002", 15.0, 0.37)):
        for e in range(2):
            name = f"jw09999002{visit}_02101_0000{e + 1}_mirimage_cal.fits"
            crval = (ra0 + (dra + 2.0 * e) / 3600 / np.cos(np.deg2rad(dec0)), dec0 + 1.5 * e / 3600)
            path = write_cal(tmp_path / name, sky, crval, off, rng, shape=(300, 300))
            m = ImageModel(str(path))
            m.meta.filename = name
            models.append(m)
            truth.append(off)
    out = LevelMatchStep.call(models, binning=2)
    assert [m.meta.filename for m in out] == [m.meta.filename for m in models]
    for m_in, m_out, t in zip(models, out, truth, strict=True):
        good = np.asarray(m_in.dq) == 0
        assert abs(np.median((m_in.data - m_out.data)[good]) - t) < 0.05 * NOISE   # 300^2 frames
    saved = tmp_path / "saved"                     # saved, each exposure keeps its name (as tweakreg's)
    saved.mkdir()
    LevelMatchStep.call(models, binning=2, save_results=True, output_dir=str(saved))
    names = sorted(p.name for p in saved.glob("*.fits"))
    assert names == sorted(m.meta.filename.replace("_cal.fits", "_levelmatchstep.fits") for m in models)


@pytest.mark.pipeline
@pytest.mark.filterwarnings("ignore::photutils.utils.exceptions.NoDetectionsWarning")  # starless frames
def test_stack_destripe_step_on_models_is_the_file_function(tmp_path):
    from test_destripe import _dithered_files

    from jwstgal.destripe_stack import StackParams
    from jwstgal.steps.stack_destripe import stack_destripe_files
    from jwstgal.stpipe_steps import StackDestripeStep

    frames, _, files = _dithered_files(tmp_path)
    for f in files:              # the datamodel schema allows 1, 4 or 5 outputs (the frames have 2)
        fits.setval(f, "NOUTPUTS", value=1)
    (tmp_path / "ref").mkdir()
    expected = stack_destripe_files(files, tmp_path / "ref", StackParams(smooth_scale=0), iterations=2)
    models = [ImageModel(str(f)) for f in files]
    out = StackDestripeStep.call(models, smooth_scale=0, iterations=2)
    assert len(out) == len(files)
    for f, m, e in zip(frames, out, expected, strict=True):
        with ImageModel(str(e)) as ref:
            np.testing.assert_allclose(m.data, ref.data, atol=1e-5)
        assert F.score(f, np.asarray(m.data, float))["coherent_rms"] < F.score(f, f.data)["coherent_rms"]


@pytest.mark.pipeline
@pytest.mark.filterwarnings("ignore::photutils.utils.exceptions.NoDetectionsWarning")
def test_lyot_adjust_step_on_one_model_is_the_file_function(tmp_path):
    from test_lyot import write_miri

    from jwstgal.steps.lyot_adjust import LyotAdjustSettings, lyot_adjust_files, lyot_mask
    from jwstgal.stpipe_steps import LyotAdjustStep

    src = write_miri(tmp_path / "jw01_mirimage_cal.fits")
    (tmp_path / "ref").mkdir()
    ref, = lyot_adjust_files([src], tmp_path / "ref", LyotAdjustSettings(method="adjust"))
    out, = LyotAdjustStep.call([ImageModel(str(src))], method="adjust")
    np.testing.assert_allclose(out.data, fits.getdata(ref, "SCI"))
    lyot = lyot_mask(out.data.shape)
    assert abs(np.median(out.data[lyot]) - np.median(out.data[:, 400:])) < 0.02


@pytest.mark.pipeline
def test_astrometric_catalog_step_finds_the_injected_stars(tmp_path):
    from astropy.wcs import WCS

    from jwstgal.stpipe_steps import AstrometricCatalogStep

    rng = np.random.default_rng(4)
    size, sigma = 300, 1.2
    gx, gy = np.meshgrid(np.arange(6) * 45 + 35.0, np.arange(6) * 45 + 35.0)   # isolated stars
    xs, ys = gx.ravel() + rng.uniform(-5, 5, 36), gy.ravel() + rng.uniform(-5, 5, 36)
    n = xs.size
    yy, xx = np.mgrid[:size, :size]
    img = 5 + rng.normal(0, 0.05, (size, size))
    for x, y in zip(xs, ys, strict=True):
        img += 20 * np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * sigma**2))
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval, w.wcs.crpix, w.wcs.cdelt = [24.17, 15.78], [150, 150], [-0.11 / 3600, 0.11 / 3600]
    path = tmp_path / "mosaic_i2d.fits"
    sci = fits.ImageHDU(img.astype(np.float32), w.to_header(), name="SCI")
    fits.HDUList([fits.PrimaryHDU(), sci]).writeto(path)
    table = AstrometricCatalogStep.call(ImageModel(str(path)), fwhm=2.355 * sigma, snr=10, save_results=True,
                                        output_dir=str(tmp_path))
    assert len(table) == n
    ra, dec = w.pixel_to_world_values(xs, ys)
    from astropy.coordinates import SkyCoord

    found = SkyCoord(table["ra"], table["dec"], unit="deg")
    _, sep, _ = found.match_to_catalog_sky(SkyCoord(ra, dec, unit="deg"))
    assert sep.to_value("arcsec").max() < 0.1 * 0.11                 # within 0.1 pixel
    assert len(list(tmp_path.glob("*astro_cat.fits"))) == 1


# ---------------------------------------------------------------- hostile inputs (issue #30)

@pytest.mark.pipeline
@pytest.mark.parametrize("how", ["resampled", "i2d_name"])
def test_a_mosaic_is_refused_by_the_single_exposure_steps(frame, how):
    from jwstgal.stpipe_steps import BgSubStep

    model = _image_model(frame)
    if how == "resampled":
        model.meta.cal_step.resample = "COMPLETE"
    else:
        model.meta.filename = "ngc0000_nircam_lv3_f200w_i2d.fits"
    for cls in (DestripeStep, BgSubStep):
        with pytest.raises(ValueError, match="a resampled mosaic"):
            cls.call(model)


def test_a_memory_bomb_parameter_is_refused_before_any_work():
    with pytest.raises(Exception, match="dilate_size"):       # stpipe's spec carries the bound
        DestripeStep(dilate_size=10**9)
    with pytest.raises(Exception, match="dilate_size"):
        DestripeStep.call(ImageModel((8, 8)), dilate_size=10**9)
    from jwstgal.steps.destripe import DestripeSettings

    with pytest.raises(ValueError, match="dilate_size"):           # and so does the config table
        DestripeSettings(dilate_size=10**9)
