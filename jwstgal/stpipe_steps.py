"""The custom steps as stpipe steps: ``strun jwstgal.DestripeStep file --method=row_median``.

Each class here is a ``jwst.stpipe.Step`` (so ``DestripeStep.call(model)``, ``strun``, parameter
files and ``save_results`` work as they do for jwst steps) whose ``spec`` is generated from the
step's settings model in :mod:`jwstgal.steps` by :func:`settings_spec`, and whose parameters are
validated by that same model before anything runs: a setting is declared once, in the model.
Settings that are tables in a config (``passes``) are given here as JSON strings.

The classes are registered through the ``stpipe.steps`` entry point (:func:`get_steps`) under the
step names of the registry (``strun destripe``, or ``strun jwstgal::destripe`` if another package
uses the alias too). Steps on one model (destripe, bg_sub, astrometric_catalog,
astrometric_align) work on its arrays; the multi-exposure steps (lyot_adjust, wcs_adjust,
level_match, stack_destripe) run the same file functions as the pipeline driver on a scratch copy
of their input models and return the results as a ``ModelContainer``.
"""

from __future__ import annotations

import json
import logging
import tempfile
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from astropy.io import fits
from jwst.stpipe import Step

from jwstgal import dq
from jwstgal.astrometry import align_catalogs, observation_epoch
from jwstgal.astrometry_io import align_pass, reference_positions
from jwstgal.bands import get_band
from jwstgal.destripe import DestripeParams
from jwstgal.destripe_frames import destripe_arrays, good_pixels, working_array
from jwstgal.errors import InputNotFoundError, StepFailedError
from jwstgal.masking import sky_level
from jwstgal.point_sources import detect_stars
from jwstgal.provenance import hash_params
from jwstgal.settings import StepSettings, check_path_component
from jwstgal.steps.astrometric_catalog import point_source_table
from jwstgal.steps.destripe import destripe_stats
from jwstgal.steps.level_match import level_match_files
from jwstgal.steps.lyot_adjust import lyot_adjust_files
from jwstgal.steps.stack_destripe import stack_destripe_files
from jwstgal.steps.wcs_adjust import apply_visit_correction, check_known_visits, read_wcs_adjust
from jwstgal.steps.wcs_solve import measure_visit_shifts
from jwstgal.stpipe_spec import settings_of, settings_spec

log = logging.getLogger(__name__)


def _primary_of(model: Any) -> fits.Header:
    """The primary-header keywords :func:`jwstgal.destripe_frames.frame_layout` reads, from a model."""
    h = fits.Header()
    for key, value in (("INSTRUME", model.meta.instrument.name), ("SUBARRAY", model.meta.subarray.name),
                       ("SUBSIZE1", model.meta.subarray.xsize), ("NOUTPUTS", model.meta.exposure.noutputs)):
        if value is not None:
            h[key] = value
    return h


def _history(model: Any, step: str, params: dict[str, Any]) -> None:
    """Record the step, the software version and the parameters in the model's HISTORY."""
    from jwstgal import __version__

    model.add_history_entry(f"jwstgal {__version__} {step}: {json.dumps(params, default=str)}")


#: The stpipe class of each registry step that declares one (``stpipe = True``), by step name.
_CLASSES: dict[str, type[JwstgalStep]] = {}


def stpipe_class_name(step: str) -> str:
    """The stpipe class of a registry step: ``astrometric_align`` -> ``AstrometricAlignStep``."""
    return "".join(part.capitalize() for part in step.split("_")) + "Step"


class JwstgalStep(Step):
    """Common part of the jwstgal stpipe steps: parameters validated by the settings model.

    A subclass named ``<Name>Step`` is the stpipe face of the registry step ``<name>``
    (:func:`stpipe_class_name`), which must declare ``stpipe = True``: its ``class_alias`` (the
    ``strun`` name), ``settings_model`` and ``spec`` (that model's fields, less ``excluded``, plus
    ``extra_spec``) are filled in from the registry entry, not written twice.
    """

    settings_model: ClassVar[type[StepSettings]]
    excluded: ClassVar[tuple[str, ...]] = ()
    #: Parameters of the stpipe step only (input options), appended to the generated spec.
    extra_spec: ClassVar[str] = ""
    #: Whether the step works on one exposure (and refuses a resampled mosaic).
    single_exposure: ClassVar[bool] = True

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.__name__.startswith("_"):              # a shared base, not a step
            return
        from jwstgal.steps import STEPS

        entry = next((s for s in STEPS if stpipe_class_name(s.name) == cls.__name__), None)
        if entry is None or not entry.stpipe or entry.settings is None:
            msg = (f"{cls.__name__}: no registry step declares it (a step named "
                   f"{cls.__name__.removesuffix('Step')!r} in snake case, with stpipe = True and settings)")
            raise TypeError(msg)
        cls.class_alias = entry.name
        cls.settings_model = entry.settings
        cls.spec = settings_spec(entry.settings, cls.excluded) + cls.extra_spec
        _CLASSES[entry.name] = cls

    @staticmethod
    def get_stpipe_loggers() -> tuple[str, ...]:
        """The loggers stpipe configures: jwst's and the suite's.

        Under ``strun`` (and ``Step.call``) the custom steps then log what they do like a jwst step,
        in its format and at its ``--log-level``.
        """
        return (*Step.get_stpipe_loggers(), "jwstgal")

    def settings(self) -> StepSettings:
        """The parameters of this run, validated by the settings model."""
        return settings_of(self, self.settings_model, self.excluded)

    def _open_images(self, input_data: Any) -> Any:
        """A copy of the input model; a resampled mosaic is refused by single-exposure steps."""
        from jwst.datamodels import ImageModel  # type: ignore[attr-defined]

        model = input_data.copy() if isinstance(input_data, ImageModel) else ImageModel(input_data)
        name = str(model.meta.filename or input_data)
        resampled = (getattr(model.meta.cal_step, "resample", None) == "COMPLETE" or "_i2d" in name
                     or model.meta.hasattr("resample"))
        if self.single_exposure and resampled:
            msg = (f"{name}: a resampled mosaic (i2d), not a single exposure; {self.class_alias} works "
                   "on one exposure's rate or cal file")
            raise ValueError(msg)
        return model


class DestripeStep(JwstgalStep):
    """Single-frame 1/f stripe subtraction (the ``[destripe]`` step) of one rate or cal model."""

    def process(self, input_data: Any) -> Any:
        """Destripe one exposure; returns a destriped copy."""
        params = DestripeParams(**self.settings().model_dump())
        model = self._open_images(input_data)
        sci = working_array(model.data)
        dq_arr = np.asarray(model.dq) if model.dq is not None else None
        out, lyot, res, n_amps = destripe_arrays(sci, dq_arr, working_array(model.err),
                                                 _primary_of(model), params)
        if lyot.any():
            model.err[lyot] = np.nan
            model.dq[lyot] |= dq.bits(["DO_NOT_USE", "NON_SCIENCE"])
        model.data = out.astype(model.data.dtype)
        stats = destripe_stats(res, good_pixels(sci, dq_arr), lyot)
        log.info("%s: %s, %d amplifier bands, stripe model rms %.3g", model.meta.filename,
                 params.method, n_amps if params.quadrants else 1, stats["model_rms"])
        _history(model, "destripe", {**params.as_dict(), "model_rms": stats["model_rms"]})
        return model


class BgSubStep(JwstgalStep):
    """Subtract an exposure's clipped, source- and DQ-masked sky level (the ``[bg_sub]`` step)."""

    def process(self, input_data: Any) -> Any:
        """Subtract the sky level of one exposure; returns a copy."""
        s = self.settings()
        model = self._open_images(input_data)
        sci = np.asarray(model.data, float)
        bad = dq.bad_pixel_mask(sci, np.asarray(model.dq), None, s.dq_flags)
        level = sky_level(sci, bad, s.sigma, s.npixels, s.dilate_size, s.max_iters)
        model.data = np.where(good_pixels(sci, np.asarray(model.dq)), sci - level, sci).astype(
            model.data.dtype)
        log.info("%s: sky level %.4g subtracted", model.meta.filename, level)
        _history(model, "bg_sub", {**s.model_dump(), "level": float(level)})
        return model


#: Spec line of the multi-exposure steps: each output is saved under its exposure's name, as
#: tweakreg's are (``jw..._<step>.fits``, not one name numbered per model).
USE_MODEL_NAMES = "    output_use_model = boolean(default=True)  # save each exposure under its own name\n"


class _FileStep(JwstgalStep):
    """A multi-exposure step: input models go to a scratch folder, outputs come back as models."""

    min_inputs: ClassVar[int] = 2

    def _files(self, input_data: Any, where: Path) -> list[Path]:
        from jwst.datamodels import ModelContainer  # type: ignore[attr-defined]

        models = input_data if isinstance(input_data, ModelContainer) else ModelContainer(input_data)
        files = []
        for i, m in enumerate(models):
            name = check_path_component(Path(m.meta.filename or f"exposure{i:03d}_cal.fits").name,
                                        "input model file name")
            if not name.endswith(".fits"):
                name += ".fits"
            path = where / name
            if path.exists():
                msg = f"{type(self).__name__}: two input models are called {name}"
                raise ValueError(msg)
            m.save(str(path))
            files.append(path)
        if len(files) < self.min_inputs:
            msg = f"{type(self).__name__} needs at least {self.min_inputs} exposures (got {len(files)})"
            raise InputNotFoundError(msg)
        return files

    def _container(self, outputs: list[Path]) -> Any:
        from jwst.datamodels import ImageModel, ModelContainer  # type: ignore[attr-defined]

        models = []
        for p in outputs:
            with ImageModel(str(p)) as m:
                models.append(m.copy())
        return ModelContainer(models)

    def process(self, input_data: Any) -> Any:
        """Run :meth:`run_files` on a scratch copy of the input models."""
        s = self.settings()
        with tempfile.TemporaryDirectory(prefix="jwstgal-") as scratch:
            src, dst = Path(scratch, "in"), Path(scratch, "out")
            src.mkdir()
            dst.mkdir()
            outputs = self.run_files(self._files(input_data, src), dst, s)
            return self._container(outputs)

    def run_files(self, files: list[Path], out_dir: Path, settings: Any) -> list[Path]:
        """The step on files (written into ``out_dir``); returns the output files in input order."""
        raise NotImplementedError


class LevelMatchStep(_FileStep):
    """Match the background levels of a band's exposures (the ``[level_match]`` step)."""

    extra_spec = USE_MODEL_NAMES

    def run_files(self, files: list[Path], out_dir: Path, settings: Any) -> list[Path]:
        """Level-match ``files`` into ``out_dir``."""
        outputs, _ = level_match_files(files, out_dir, settings,
                                       config_hash=hash_params(settings.model_dump()))
        return outputs


class StackDestripeStep(_FileStep):
    """Multi-exposure stripe subtraction of a band's exposures (the ``[stack_destripe]`` step)."""

    extra_spec = USE_MODEL_NAMES

    def run_files(self, files: list[Path], out_dir: Path, settings: Any) -> list[Path]:
        """Stack-destripe ``files`` into ``out_dir``."""
        from jwstgal.destripe_stack import StackParams

        p = settings.model_dump()
        iterations, weight = p.pop("iterations"), p.pop("weight")
        return stack_destripe_files(files, out_dir, StackParams(**p), iterations=iterations,
                                    config_hash=hash_params(settings.model_dump()), weight=weight)


def _fwhm_pix(path: Path) -> float:
    h = fits.getheader(path)
    try:
        return get_band(str(h.get("FILTER", ""))).fwhm_pix
    except KeyError:
        return 2.0


class WcsAdjustStep(_FileStep):
    """Measure per-visit sky shifts among the exposures and apply them (the ``[wcs_adjust]`` step).

    ``shifts_file`` names a ``wcs_adjust.toml`` to apply instead of measuring.
    """

    excluded = ("bands",)
    extra_spec = USE_MODEL_NAMES + \
        "    shifts_file = string(default=None)  # wcs_adjust.toml to apply instead of measuring\n"

    def run_files(self, files: list[Path], out_dir: Path, settings: Any) -> list[Path]:
        """Measure (or read) the visit shifts and write shifted copies of ``files``."""
        from jwstgal.astrometry_io import visit_id

        if self.shifts_file:        # this suite's format or the original scripts'
            shifts = read_wcs_adjust(Path(self.shifts_file), visits={visit_id(f) for f in files})
            check_known_visits(Path(self.shifts_file), shifts, files)
        else:
            pixscale = float(np.sqrt(abs(np.linalg.det(
                _wcs_of(files[0]).celestial.pixel_scale_matrix))) * 3600)
            passes = [align_pass(p.model_dump(), pixscale) for p in settings.passes]
            shifts = measure_visit_shifts(files, _fwhm_pix(files[0]), passes, fitgeom=settings.fitgeom)
        for v, sh in shifts.items():
            log.info("visit %s: shift %+.4f\" E, %+.4f\" N, rotation %.5f deg", v, *sh["shift"],
                     sh.get("rotation_deg", 0.0))
        key = hash_params(settings.model_dump())
        return [apply_visit_correction(f, out_dir / f.name, shifts.get(visit_id(f), {}), key) for f in files]


def _wcs_of(path: Path) -> Any:
    from astropy.wcs import WCS

    return WCS(fits.getheader(path, "SCI"))


class AstrometricAlignStep(JwstgalStep):
    """Align a mosaic's absolute astrometry with a reference catalogue (``[astrometric_align]``).

    ``catalog`` is the reference table (an ``[alignment]`` file: ``ra``/``dec`` columns); the
    mosaic's own point sources are detected. Returns the mosaic with its FITS WCS (``meta.wcsinfo``)
    corrected by the fit (shift, rotation and scale); jwst cannot adjust the gwcs of a resampled
    image, so the stale gwcs is dropped, as the pipeline's step drops it from ``_i2d_align.fits``.
    """

    single_exposure = False     # works on the mosaic
    excluded = ("alignment_mapping", "reference")
    extra_spec = \
        "    catalog = string(default=None)  # reference catalogue (ra, dec[, pm, epoch])\n"

    def process(self, input_data: Any) -> Any:
        """Fit the mosaic's sources to ``catalog`` and correct its WCS."""
        from jwstgal.astrometry import correct_fits_wcs

        s = self.settings()
        if not self.catalog or not Path(self.catalog).is_file():
            msg = f"AstrometricAlignStep: --catalog must name a reference table (got {self.catalog!r})"
            raise InputNotFoundError(msg)
        model = self._open_images(input_data)
        wcs = _fits_wcs(model)
        data = np.where(np.asarray(model.data) == 0, np.nan, np.asarray(model.data, float))
        pixscale = _pixel_scale(wcs.pixel_to_world_values, data.shape)
        x, y = detect_stars(data, _band_fwhm(model, pixscale))
        ra, dec = wcs.pixel_to_world_values(x, y)
        epoch = observation_epoch([model.meta.exposure.mid_time, model.meta.exposure.start_time],
                                  model.meta.observation.date, what=str(model.meta.filename))
        ref_ra, ref_dec = reference_positions(Path(self.catalog), epoch)
        result = align_catalogs(np.asarray(ra), np.asarray(dec), ref_ra, ref_dec,
                                [align_pass(p.model_dump(), pixscale) for p in s.passes],
                                fitgeom=s.fitgeom, min_matches=s.min_matches)
        if result is None:
            msg = f"{model.meta.filename}: no match with the astrometric reference {self.catalog}"
            raise StepFailedError(msg)
        new = correct_fits_wcs(wcs.to_header(), result)
        for key in ("crval1", "crval2", "pc1_1", "pc1_2", "pc2_1", "pc2_2", "cdelt1", "cdelt2"):
            if key.upper() in new:
                setattr(model.meta.wcsinfo, key, float(new[key.upper()]))
        model.meta.wcs = None
        log.info("%s: %d matches, rms %.1f mas, shift %+.4f\" E %+.4f\" N", model.meta.filename,
                 result.n_matches, result.rms_mas, *result.shift)
        _history(model, "astrometric_align", result.to_dict())
        return model


def _pixel_scale(wcs: Any, shape: tuple[int, ...]) -> float:
    """Pixel scale (arcsec) of a gwcs at the middle of an image."""
    from astropy.coordinates import SkyCoord

    cy, cx = (shape[0] - 1) / 2, (shape[1] - 1) / 2
    a = SkyCoord(*wcs(cx, cy), unit="deg")
    return float(a.separation(SkyCoord(*wcs(cx + 1, cy), unit="deg")).arcsec)


def _band_fwhm(model: Any, pixscale: float) -> float:
    """The band's PSF FWHM in pixels of the image (2 when the filter is not a known band)."""
    try:
        band = get_band(str(model.meta.instrument.filter))
    except KeyError:
        return 2.0
    return band.fwhm_arcsec / pixscale


class LyotAdjustStep(_FileStep):
    """The MIRI Lyot of full frames flagged, flagged where others cover it, or levelled (``[lyot_adjust]``).

    Takes the exposures of a band together (``mask_overlap`` needs them all).
    """

    extra_spec = USE_MODEL_NAMES
    min_inputs = 1

    def run_files(self, files: list[Path], out_dir: Path, settings: Any) -> list[Path]:
        """Handle the Lyot of ``files`` into ``out_dir``."""
        return lyot_adjust_files(files, out_dir, settings, hash_params(settings.model_dump()))


class AstrometricCatalogStep(JwstgalStep):
    """Point sources of a mosaic for the absolute alignment (``[astrometric_catalog]``).

    Returns the table (``ra``, ``dec`` through the mosaic's FITS WCS, centroids, flux, shape);
    with ``save_results`` it is written as ``<name>_astro_cat.fits``.
    """

    single_exposure = False     # works on the mosaic

    def process(self, input_data: Any) -> Any:
        """Detect the point sources of one mosaic."""
        s = self.settings()
        model = self._open_images(input_data)
        wcs = _fits_wcs(model)
        data = np.where(np.asarray(model.data) == 0, np.nan, np.asarray(model.data, float))
        fwhm = s.fwhm or _band_fwhm(model, _pixel_scale(lambda x, y: wcs.pixel_to_world_values(x, y),
                                                        data.shape))
        table = point_source_table(data, wcs, fwhm, s)
        log.info("%s: %d point sources (%s finder, snr %g)", model.meta.filename, len(table), s.finder, s.snr)
        if self.save_results:
            path = self.make_output_path(basepath=model.meta.filename, suffix="astro_cat", ext=".fits")
            table.write(path, format="fits", overwrite=True)
            log.info("wrote %s", path)
        return table


def _fits_wcs(model: Any) -> Any:
    """The FITS WCS a mosaic model carries (``meta.wcsinfo``: what its SCI header says)."""
    from astropy.wcs import WCS

    h = fits.Header()
    for key in ("ctype1", "ctype2", "cunit1", "cunit2", "crval1", "crval2", "crpix1", "crpix2", "cdelt1",
                "cdelt2", "pc1_1", "pc1_2", "pc2_1", "pc2_2"):
        value = getattr(model.meta.wcsinfo, key, None)
        if value is not None:
            h[key.upper()] = value
    return WCS(h)


def _from_registry() -> tuple[type[JwstgalStep], ...]:
    """The stpipe class of every registry step that declares one, in registry order."""
    from jwstgal.steps import STEPS

    missing = [stpipe_class_name(s.name) for s in STEPS if s.stpipe and s.name not in _CLASSES]
    if missing:
        msg = f"registry steps declare stpipe classes that {__name__} does not define: {', '.join(missing)}"
        raise ImportError(msg)
    return tuple(_CLASSES[s.name] for s in STEPS if s.stpipe)


#: The stpipe steps, in registry order (the registry's ``stpipe = True`` entries).
STPIPE_STEPS: tuple[type[JwstgalStep], ...] = _from_registry()


def get_steps() -> list[tuple[str, str, bool]]:
    """The ``stpipe.steps`` entry point: (class, alias, is a pipeline) of every jwstgal step."""
    return [(f"jwstgal.{c.__name__}", c.class_alias, False) for c in STPIPE_STEPS]


__all__ = ["STPIPE_STEPS", "AstrometricAlignStep", "AstrometricCatalogStep", "BgSubStep", "DestripeStep",
           "JwstgalStep", "LevelMatchStep", "LyotAdjustStep", "StackDestripeStep", "WcsAdjustStep",
           "get_steps", "settings_of", "settings_spec", "stpipe_class_name"]
