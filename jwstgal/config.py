"""Load and validate the two TOML files of a run: the science config and the machine-local config.

Everything is validated before any work starts. A problem is reported as one :class:`ConfigError`
whose lines each name the file, the dotted key, the value, what is allowed and, for a misspelling, a
"did you mean". Parameters may be given per target/band with *selector tables*::

    [lv3_parameters.tweakreg]
    brightest = { nircam_short = 125, nircam_long = 500, miri = 500 }
    skip = { F770W = true }

A selector table is resolved with priority target > band > nircam_short/nircam_long > nircam/miri
(:func:`resolve`); a value that resolves to nothing is simply not passed on.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import logging
import os
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from jwstgal.bands import ALL_BANDS, Band, get_band
from jwstgal.errors import ConfigError

log = logging.getLogger(__name__)

#: Steps a band can run, in the only order in which they make sense.
ALLOWED_STEPS: tuple[str, ...] = ("lv1", "lv2", "destripe", "wcs_adjust", "level_match",
                                  "stack_destripe", "lv3", "astrometric_align")
#: Steps run when a config names none: the plain STScI pipeline.
DEFAULT_STEPS: tuple[str, ...] = ("lv1", "lv2", "lv3")
#: Instrument-level selector keys.
GROUP_SELECTORS: tuple[str, ...] = ("nircam", "nircam_short", "nircam_long", "miri")
#: jwst pipeline behind each stage's parameter table.
STAGE_PIPELINES: dict[str, str] = {
    "lv1_parameters": "Detector1Pipeline",
    "lv2_parameters": "Image2Pipeline",
    "lv3_parameters": "Image3Pipeline",
}
#: Pipeline-level arguments that the suite sets itself and a config must not.
_MANAGED_PIPELINE_KEYS = frozenset({"output_dir", "output_file", "input_dir", "steps", "pre_hooks",
                                    "post_hooks", "search_output_file"})

_MISSING = object()
REPO_ROOT = Path(__file__).resolve().parents[1]


class _Strict(BaseModel):
    """Base of all config tables: unknown keys are errors, values are not coerced, nothing mutates."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


def _did_you_mean(value: str, allowed: list[str] | tuple[str, ...]) -> str:
    close = difflib.get_close_matches(value, list(allowed), n=1, cutoff=0.6)
    if not close:
        close = [a for a in allowed if a.lower() == value.lower()]
    return f"; did you mean {close[0]!r}?" if close else ""


def _check_band(name: str) -> str:
    try:
        return get_band(name).name
    except KeyError as err:
        raise ValueError(err.args[0]) from None


BandName = Annotated[str, Field(description="Band name, e.g. F200W")]


class StepLists(_Strict):
    """Ordered steps (or steps to overwrite) per instrument."""

    nircam: list[str] = Field(default_factory=lambda: list(DEFAULT_STEPS),
                              description="Steps for NIRCam bands, in order.")
    miri: list[str] = Field(default_factory=lambda: list(DEFAULT_STEPS),
                            description="Steps for MIRI bands, in order.")

    @field_validator("nircam", "miri")
    @classmethod
    def _known_steps(cls, steps: list[str]) -> list[str]:
        for step in steps:
            if step not in ALLOWED_STEPS and step != "all":
                msg = (f"unknown step {step!r} (allowed: {', '.join(ALLOWED_STEPS)})"
                       f"{_did_you_mean(step, ALLOWED_STEPS)}")
                raise ValueError(msg)
        real = [s for s in steps if s != "all"]
        if real != sorted(real, key=ALLOWED_STEPS.index):
            msg = f"steps run in the order {', '.join(ALLOWED_STEPS)}; got {', '.join(real)}"
            raise ValueError(msg)
        return steps


class OverwriteLists(StepLists):
    """Steps whose existing outputs are discarded and recomputed (``"all"`` for every step)."""

    nircam: list[str] = Field(default_factory=list, description="NIRCam steps to redo.")
    miri: list[str] = Field(default_factory=list, description="MIRI steps to redo.")


class PipelineConfig(_Strict):
    """The ``[pipeline]`` table: bands, steps and how exposures are selected."""

    data_version: str = Field("v0p1", description="Suffix of the reprocessing and release directories.")
    crds_context: str = Field("", description="CRDS context, e.g. 'jwst_1293.pmap'; '' = latest.")
    nircam_bands: list[str] = Field(default_factory=list, description="NIRCam bands to process.")
    miri_bands: list[str] = Field(default_factory=list, description="MIRI bands to process.")
    steps: StepLists = Field(default_factory=StepLists, description="Steps per instrument.")
    overwrites: OverwriteLists = Field(default_factory=OverwriteLists,
                                       description="Steps to recompute per instrument.")
    obs_to_skip: list[str] = Field(default_factory=list,
                                   description="File-name substrings of exposures never used.")
    bgr_check_type: Literal["parallel_off", "check_in_name"] = Field(
        "parallel_off", description="How MIRI background exposures are recognised.")
    bgr_background_name: str = Field("off", description="Name substring for check_in_name.")
    bgr_observation_types: list[Literal["nircam", "nircam_short", "nircam_long", "miri"]] = Field(
        default_factory=lambda: ["miri"],
        description="Band types whose dedicated background exposures enter level 3 as backgrounds.")

    @field_validator("nircam_bands", "miri_bands")
    @classmethod
    def _bands(cls, bands: list[str], info: Any) -> list[str]:
        want = "nircam" if info.field_name == "nircam_bands" else "miri"
        out = []
        for b in bands:
            band = get_band(_check_band(b))
            if band.instrument != want:
                msg = f"{b!r} is a {band.instrument.upper()} band, not a {want.upper()} one"
                raise ValueError(msg)
            out.append(band.name)
        return out


class ProjectConfig(_Strict):
    """One ``[projects.<proposal id>]`` table."""

    targets: list[str] = Field(description="Target names (lower case, as in the raw tree).")

    @field_validator("targets")
    @classmethod
    def _lower(cls, targets: list[str]) -> list[str]:
        for t in targets:
            if t != t.lower() or not t:
                msg = f"target names are lower case; write {t.lower()!r} instead of {t!r}"
                raise ValueError(msg)
        return targets


class DownloadConfig(_Strict):
    """The ``[download]`` table (MAST product selection)."""

    products: list[Literal["SCIENCE", "PREVIEW", "INFO", "AUXILIARY"]] = Field(
        default_factory=lambda: ["SCIENCE"], description="MAST productType values to fetch.")
    calib_level: list[Literal[1, 2, 3]] = Field(default_factory=lambda: [1],
                                                description="MAST calib_level values to fetch.")
    product_subgroups: list[str] = Field(
        default_factory=lambda: ["UNCAL"],
        description="MAST productSubGroupDescription values (UNCAL, RATE, CAL, I2D, ASN, ...); "
                    "[] = any.")
    retries: int = Field(5, ge=0, le=50, description="Retries of a file on transient errors.")


class LevelMatchConfig(_Strict):
    """The ``[level_match]`` table (step ``level_match``, between stages 2 and 3)."""

    binning: int = Field(4, ge=1, le=32, description="Block size averaged before matching.")
    plane: bool = Field(False, description="Match planes (offset + gradient) instead of offsets.")
    mask_emission: bool = Field(True, description="Ignore bright emission and sources.")
    min_pixels: int = Field(200, ge=10, description="Smallest overlap (binned pixels) used.")
    by_group: bool = Field(True, description="Match exposures within dither groups, then tiles.")


class PassConfig(_Strict):
    """One matching pass (arcsec)."""

    searchrad: float = Field(gt=0, description="Search radius for the initial offset.")
    separation: float = Field(0.5, gt=0, description="Minimum separation of sources.")
    tolerance: float = Field(0.5, gt=0, description="Matching tolerance.")
    use2dhist: bool = Field(True, description="Find the initial offset with a 2-D histogram.")
    nclip: int = Field(3, ge=0, description="Clipping iterations of the fit.")
    sigma: float = Field(3.0, gt=0, description="Clipping threshold (in fit rms).")


def _default_passes() -> list[PassConfig]:
    return [PassConfig(searchrad=2.0, tolerance=0.5),
            PassConfig(searchrad=0.3, tolerance=0.1, use2dhist=False)]


def _visit_passes() -> list[PassConfig]:
    # JWST visits are misaligned by <~0.3": a wider first search aliases in crowded fields
    return [PassConfig(searchrad=0.5, tolerance=0.3),
            PassConfig(searchrad=0.2, tolerance=0.12, use2dhist=False)]


class DestripeSettings(_Strict):
    """Destriping settings (see :class:`jwstgal.destripe.DestripeParams` for their meaning)."""

    method: Literal["median_filter", "row_median", "remstripe", "smooth", "pca"] = Field(
        "median_filter", description="Row-pass method.")
    quadrants: bool = Field(True, description="Fit amplifier bands separately (NOUTPUTS > 1).")
    level_amplifiers: bool = Field(True, description="Remove amplifier offsets first.")
    vertical: bool = Field(True, description="Column pass before the row pass.")
    filter_scales: list[Annotated[int, Field(ge=1)]] = Field(
        default_factory=lambda: [3, 7, 15, 31, 63, 127],
        description="Median-filter scales (pixels), small to large.")
    min_mask_frac: float = Field(0.2, ge=0, le=1, description="Minimum unmasked fraction of an "
                                 "amplifier row before the full row is used.")
    sigma: float = Field(3.0, gt=0, description="Detection and clipping threshold.")
    npixels: int = Field(3, ge=1, description="Minimum connected pixels of a source.")
    dilate_size: int = Field(11, ge=1, description="Dilation of the source mask (pixels).")
    max_iters: int = Field(10, ge=0, description="Clipping iterations.")
    filter_diffuse: bool = Field(False, description="High-pass diffuse emission before fitting.")
    diffuse_scale: float = Field(200.0, gt=0, description="Cut-off scale of that filter (pixels).")
    pca_components: int = Field(10, ge=1, description="Eigenvectors fitted (method pca).")
    pca_reconstruct_components: int = Field(5, ge=1, description="Eigenvectors used to reconstruct.")
    pca_seed: int = Field(0, description="Seed of the robust PCA.")
    dq_flags: list[Literal["DO_NOT_USE", "SATURATED", "JUMP_DET", "DROPOUT", "OUTLIER",
                           "REFERENCE_PIXEL", "NON_SCIENCE", "DEAD", "HOT", "NO_FLAT_FIELD"]] = Field(
        default_factory=lambda: ["DO_NOT_USE", "NON_SCIENCE"], description="DQ flags excluded.")
    lyot: Literal["mask", "adjust", "include"] = Field(
        "mask", description="MIRI full frames: mask the Lyot coronagraph, level it, or fit it.")


def _optional(model: type[BaseModel], name: str) -> type[BaseModel]:
    """The same fields, all optional (for per-selector overrides)."""
    from pydantic import create_model

    fields = {k: (f.annotation | None, Field(None, description=f.description))
              for k, f in model.model_fields.items()}
    return create_model(name, __base__=_Strict, **fields)


DestripeOverride = _optional(DestripeSettings, "DestripeOverride")


class DestripeConfig(DestripeSettings):
    """The ``[destripe]`` table (step ``destripe``, single frames, after stage 2).

    Settings apply to every band; ``[destripe.override.<selector>]`` tables (a target, a band,
    nircam_short/nircam_long, nircam or miri) change some of them, most specific selector last.
    """

    override: dict[str, DestripeOverride] = Field(  # type: ignore[valid-type]
        default_factory=dict, description="Selector -> settings that differ there.")

    def for_band(self, target: str, band: Band) -> dict[str, Any]:
        """The settings of one target/band, overrides applied."""
        out = {k: v for k, v in self.model_dump().items() if k != "override"}
        for sel in (*reversed(band.selectors), target):
            if sel in self.override:
                out.update({k: v for k, v in self.override[sel].model_dump().items() if v is not None})
        return out


class StackDestripeConfig(_Strict):
    """The ``[stack_destripe]`` table (step ``stack_destripe``, after level matching)."""

    quadrants: bool = Field(True, description="Fit amplifier bands separately.")
    vertical: bool = Field(False, description="Also fit column structure.")
    min_mask_frac: float = Field(0.2, ge=0, le=1, description="Minimum unmasked fraction of a row.")
    sigma: float = Field(3.0, gt=0, description="Detection and clipping threshold.")
    dilate_size: int = Field(7, ge=1, description="Dilation of the residual-source mask.")
    max_iters: int = Field(10, ge=0, description="Clipping iterations.")
    min_overlap_frac: float = Field(0.5, gt=0, le=1, description="Coverage another frame needs to "
                                    "enter a frame's reference.")
    iterations: int = Field(3, ge=1, le=20, description="Passes (references rebuilt each time).")
    smooth_scale: int = Field(31, ge=0, description="Median-filter the row profiles over this many "
                              "rows (0 = off): small scales are the single-frame step's job.")


class WcsAdjustConfig(_Strict):
    """The ``[wcs_adjust]`` table (step ``wcs_adjust``: relative per-visit shifts)."""

    bands: list[str] = Field(default_factory=list, description="Star-rich bands the visit shifts "
                             "are measured on (default: the target's first configured band).")
    passes: list[PassConfig] = Field(default_factory=_visit_passes, description="Matching passes.")

    @field_validator("bands")
    @classmethod
    def _bands(cls, bands: list[str]) -> list[str]:
        return [_check_band(b) for b in bands]


class AstrometricAlignConfig(_Strict):
    """The ``[astrometric_align]`` table (step ``astrometric_align``, after stage 3)."""

    reference: Literal["table", "gaia"] = Field(
        "table", description="'table': the target's [alignment] catalogue; 'gaia': Gaia DR3 "
        "(network), proper motions propagated to the observation epoch.")
    fitgeom: Literal["shift", "rshift", "rscale"] = Field("shift", description="Fit geometry.")
    min_matches: int = Field(5, ge=3, description="Fewest matches for a pass to count.")
    passes: list[PassConfig] = Field(default_factory=_default_passes, description="Wide, then tight.")
    alignment_mapping: dict[str, str] = Field(
        default_factory=dict, description="band -> reference band whose solution it borrows.")

    @field_validator("alignment_mapping")
    @classmethod
    def _mapping(cls, mapping: dict[str, str]) -> dict[str, str]:
        out = {_check_band(k): _check_band(v) for k, v in mapping.items()}
        for k, v in out.items():
            if v in out:
                msg = f"alignment_mapping: {k} borrows from {v}, which itself borrows from {out[v]}"
                raise ValueError(msg)
        return out


class KernelsConfig(_Strict):
    """The ``[kernels]`` table: PSF-matching kernels from every configured band to each target."""

    targets: list[str] = Field(default_factory=list, description="Kernel targets: bands (e.g. "
                               "F2100W) or analytic PSFs gauss<FWHM\"> / moffat<FWHM>b<beta>.")
    methods: list[Literal["aniano", "pypher"]] = Field(default_factory=lambda: ["aniano"],
                                                       description="Kernel constructions.")
    psf_source: Literal["stpsf", "gaussian"] = Field(
        "stpsf", description="Band PSFs from stpsf (real optics) or Gaussians of the band FWHM.")
    oversample: int = Field(4, ge=1, le=10, description="PSF oversampling w.r.t. detector pixels.")
    nlambda: int = Field(0, ge=0, description="stpsf wavelengths per band (0 = stpsf default).")
    use_opd: bool = Field(False, description="Use stpsf's telescope OPD (needs full stpsf data).")
    reg_fact: float = Field(1e-4, gt=0, description="pypher regularisation factor.")

    @field_validator("targets")
    @classmethod
    def _names(cls, targets: list[str]) -> list[str]:
        from jwstgal.psfs import check_psf_name

        return [check_psf_name(t) for t in targets]


class ConvolveConfig(_Strict):
    """The ``[convolve]`` table: bring every mosaic to a common resolution (and grid)."""

    target: str = Field("", description="Kernel target to convolve to ('' = no convolution).")
    method: Literal["aniano", "pypher"] = Field("aniano", description="Which kernels to use.")
    reproject: bool = Field(True, description="If the target is a band, also reproject onto that "
                            "band's mosaic grid.")
    block_size: int = Field(2048, ge=256, description="Tile size bounding the FFT memory.")

    @field_validator("target")
    @classmethod
    def _name(cls, target: str) -> str:
        from jwstgal.psfs import check_psf_name

        return check_psf_name(target) if target else target


class ReleaseConfig(_Strict):
    """The ``[release]`` table."""

    remove_bloat: bool = Field(True, description="Drop VAR_* and CON extensions from released "
                               "copies (coverage is released as its own map).")
    include_convolved: bool = Field(True, description="Release the convolved mosaics too.")
    overwrite: bool = Field(False, description="Replace files already in the release.")


class SimulationConfig(_Strict):
    """The ``[simulation]`` table: a synthetic programme observed instead of downloaded data."""

    seed: int = Field(2107, description="Seed of every random draw; same seed, same data.")
    ra: float = Field(24.1739, ge=0, lt=360, description="Galaxy centre RA (deg).")
    dec: float = Field(15.7836, ge=-90, le=90, description="Galaxy centre Dec (deg).")
    detector_size: int = Field(512, ge=128, le=2048,
                               description="Pixels per side of each simulated detector (2048 = full).")
    n_dithers: int = Field(4, ge=1, le=9, description="Dither positions per tile.")
    n_tiles: int = Field(2, ge=1, le=4, description="Mosaic tiles (each with its own background).")
    n_stars: int = Field(120, ge=0, description="Point sources in the field.")
    pointing_error_mas: float = Field(20.0, ge=0, description="Rms of per-exposure pointing errors.")
    visit_pointing_error_mas: float = Field(0.0, ge=0, description="Rms of an extra pointing error "
                                            "shared by all exposures of a visit (tile).")
    background_offset: float = Field(0.05, ge=0, description="Rms of per-tile background offsets "
                                     "as a fraction of the band's sky level.")
    onef_amplitude: float = Field(1.0, ge=0, description="Scale of the HxRG 1/f noise (1 = typical).")
    amp_offset_rms: float = Field(0.05, ge=0, description="Rms of NIRCam per-amplifier rate offsets "
                                  "(DN/s) left after reference-pixel correction.")
    miri_stripe_amplitude: float = Field(1.0, ge=0, description="Scale of MIRI row/column stripes.")
    miri_background: bool = Field(True, description="Also observe a dedicated MIRI background field.")


class ScienceConfig(_Strict):
    """The science configuration file (``config/config.toml``)."""

    pipeline: PipelineConfig = Field(default_factory=PipelineConfig)
    projects: dict[str, ProjectConfig] = Field(description="Proposal id -> targets.")
    extra_obs_to_include: dict[str, dict[str, list[str]]] = Field(
        default_factory=dict,
        description="target -> other target -> glob prefixes of exposures borrowed from it.")
    download: DownloadConfig = Field(default_factory=DownloadConfig)
    alignment: dict[str, str] = Field(default_factory=dict,
                                      description="target -> astrometric catalogue in alignment_dir.")
    lv1_parameters: dict[str, Any] = Field(default_factory=dict,
                                           description="Detector1Pipeline parameters.")
    lv2_parameters: dict[str, Any] = Field(default_factory=dict,
                                           description="Image2Pipeline parameters.")
    lv3_parameters: dict[str, Any] = Field(default_factory=dict,
                                           description="Image3Pipeline parameters.")
    simulation: SimulationConfig | None = Field(None, description="Simulate the raw data.")
    destripe: DestripeConfig = Field(default_factory=DestripeConfig)
    stack_destripe: StackDestripeConfig = Field(default_factory=StackDestripeConfig)
    wcs_adjust: WcsAdjustConfig = Field(default_factory=WcsAdjustConfig)
    level_match: LevelMatchConfig = Field(default_factory=LevelMatchConfig)
    astrometric_align: AstrometricAlignConfig = Field(default_factory=AstrometricAlignConfig)
    kernels: KernelsConfig = Field(default_factory=KernelsConfig)
    convolve: ConvolveConfig = Field(default_factory=ConvolveConfig)
    release: ReleaseConfig = Field(default_factory=ReleaseConfig)

    @property
    def targets(self) -> list[str]:
        """All targets of all projects, in config order."""
        return [t for p in self.projects.values() for t in p.targets]

    @property
    def bands(self) -> list[str]:
        """All configured bands, NIRCam first."""
        return self.pipeline.nircam_bands + self.pipeline.miri_bands

    @model_validator(mode="after")
    def _cross_checks(self) -> ScienceConfig:
        targets = self.targets
        for table in ("extra_obs_to_include", "alignment"):
            for t in getattr(self, table):
                if t not in targets:
                    msg = (f"[{table}] names target {t!r}, which no project lists "
                           f"(targets: {', '.join(targets)}){_did_you_mean(t, targets)}")
                    raise ValueError(msg)
        if self.convolve.target and self.convolve.target not in self.kernels.targets:
            msg = (f"[convolve] target {self.convolve.target!r} is not among [kernels] targets "
                   f"({', '.join(self.kernels.targets) or 'none'}); add it there")
            raise ValueError(msg)
        if self.convolve.target and self.convolve.method not in self.kernels.methods:
            msg = (f"[convolve] method {self.convolve.method!r} is not among [kernels] methods "
                   f"({', '.join(self.kernels.methods)})")
            raise ValueError(msg)
        selectors = [*targets, *ALL_BANDS, *GROUP_SELECTORS]
        for stage in STAGE_PIPELINES:
            _check_selectors(getattr(self, stage), stage, selectors)
        for sel in self.destripe.override:
            if sel not in selectors:
                msg = (f"[destripe.override] selector {sel!r} is not a target, band or one of "
                       f"{', '.join(GROUP_SELECTORS)}{_did_you_mean(sel, selectors)}")
                raise ValueError(msg)
        return self


def _check_selectors(table: dict[str, Any], where: str, selectors: list[str]) -> None:
    """Check the keys of every selector table (a dict value inside a step table)."""
    for key, value in table.items():
        if not isinstance(value, dict):
            continue
        for param, pvalue in value.items():
            if isinstance(pvalue, dict):
                _check_selector_keys(pvalue, f"{where}.{key}.{param}", selectors)


def _check_selector_keys(value: dict[str, Any], where: str, selectors: list[str]) -> None:
    for sel, sub in value.items():
        if sel not in selectors:
            msg = (f"{where}: selector {sel!r} is not a target, band or one of "
                   f"{', '.join(GROUP_SELECTORS)}{_did_you_mean(sel, selectors)}")
            raise ValueError(msg)
        if isinstance(sub, dict):
            _check_selector_keys(sub, f"{where}.{sel}", selectors)


class SlurmConfig(_Strict):
    """``[local.slurm]``: keyword arguments of dask_jobqueue.SLURMCluster (one worker per job)."""

    queue: str | None = Field(None, description="Slurm partition.")
    account: str | None = Field(None, description="Slurm account.")
    cores: int = Field(1, ge=1, description="Cores per job (one single-threaded worker each).")
    memory: str = Field("8GB", description="Memory per job, e.g. '16GB'.")
    walltime: str = Field("04:00:00", description="Wall time per job.")
    job_extra_directives: list[str] = Field(default_factory=list,
                                            description="Extra #SBATCH lines.")
    job_script_prologue: list[str] = Field(default_factory=list,
                                           description="Shell lines run before each worker, e.g. "
                                           "activating the environment.")


class LocalConfig(_Strict):
    """The ``[local]`` table of ``config/local.toml``: machine paths and resources."""

    raw_dir: str = Field(description="Root of the MAST download tree (never written by processing).")
    working_dir: str = Field(description="Root of all processing outputs.")
    crds_dir: str = Field("", description="CRDS cache; '' = <working_dir>/crds.")
    crds_mode: Literal["remote", "synthetic"] = Field(
        "remote", description="'remote': the STScI CRDS server; 'synthetic': a local cache of "
        "synthetic reference files matching simulated data (offline demo and tests).")
    crds_server_url: str = Field("https://jwst-crds.stsci.edu", description="CRDS server.")
    processes: int = Field(1, ge=1, description="Workers (local processes, Dask workers or Slurm "
                           "jobs) for per-exposure work.")
    executor: Literal["serial", "processes", "dask", "slurm"] = Field(
        "processes", description="Where tasks run: here, a local process pool, a Dask cluster "
        "(dask_scheduler, or a local one), or Slurm jobs via dask-jobqueue ([local.slurm]).")
    dask_scheduler: str = Field("", description="Address of an existing Dask scheduler.")
    slurm: SlurmConfig | None = Field(None, description="Slurm job settings (executor = 'slurm').")
    api_key: str = Field("", description="MAST token ('' = anonymous or $MAST_API_TOKEN).")
    mast_server: str = Field("https://mast.stsci.edu", description="MAST portal (a mirror or test "
                             "server may stand in).")
    alignment_dir: str = Field("", description="Astrometric catalogues; '' = <repo>/alignment.")
    psf_dir: str = Field("", description="Where PSFs and kernels are written; '' = <repo>/PSF.")
    psf_data_dir: str = Field("", description="stpsf data; '' = <repo>/PSF/stpsf_data.")


    @model_validator(mode="after")
    def _slurm(self) -> LocalConfig:
        if self.executor == "slurm" and self.slurm is None:
            msg = "executor = 'slurm' needs a [local.slurm] table (queue, cores, memory, walltime)"
            raise ValueError(msg)
        return self


class LocalFile(_Strict):
    """Top level of ``local.toml``."""

    local: LocalConfig


class RunConfig(BaseModel):
    """A validated run: both configs plus resolved absolute paths.

    Attributes
    ----------
    science : ScienceConfig
        The science configuration.
    local : LocalConfig
        The machine configuration.
    config_path, local_path : pathlib.Path
        Files the configuration came from.
    raw_dir, working_dir, crds_dir, alignment_dir, reprocess_dir : pathlib.Path
        Absolute directories; relative paths in ``local.toml`` are relative to that file.
    config_hash : str
        Short hash of the validated science configuration (recorded in every product).
    """

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    science: ScienceConfig
    local: LocalConfig
    config_path: Path
    local_path: Path
    raw_dir: Path
    working_dir: Path
    crds_dir: Path
    alignment_dir: Path
    psf_dir: Path
    psf_data_dir: Path
    config_hash: str

    @property
    def reprocess_dir(self) -> Path:
        """``<working_dir>/jwst_lv3_reprocessed_<data_version>``."""
        return self.working_dir / f"jwst_lv3_reprocessed_{self.science.pipeline.data_version}"


def _read_toml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        msg = f"{path}: config file not found"
        raise ConfigError(msg)
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except tomllib.TOMLDecodeError as err:
        msg = f"{path}: not valid TOML: {err}"
        raise ConfigError(msg) from None


def _model_at(model: type[BaseModel] | None, loc: tuple[Any, ...]) -> type[BaseModel] | None:
    """Walk a pydantic model class along an error location to the model that owns the last key."""
    skip_key = False
    for part in loc[:-1]:
        if skip_key:  # a key of a dict of models (e.g. a selector under destripe.override)
            skip_key = False
            continue
        if model is None or not isinstance(part, str) or part not in model.model_fields:
            return None
        ann = model.model_fields[part].annotation
        skip_key = getattr(ann, "__origin__", None) is dict
        candidates = [ann, *getattr(ann, "__args__", ())]
        model = next((c for c in candidates
                      if isinstance(c, type) and issubclass(c, BaseModel)), None)
    return model


def _format_errors(err: ValidationError, path: Path, root: type[BaseModel]) -> str:
    lines = []
    for e in err.errors(include_url=False):
        loc = tuple(e["loc"])
        key = ".".join(str(p) if not isinstance(p, int) else f"[{p}]" for p in loc).replace(".[", "[")
        if e["type"] == "extra_forbidden":
            owner = _model_at(root, loc)
            allowed = list(owner.model_fields) if owner else []
            bad = str(loc[-1])
            lines.append(f"{path}: unknown key {key!r} (allowed: {', '.join(allowed)})"
                         f"{_did_you_mean(bad, allowed)}")
        elif e["type"] == "missing":
            lines.append(f"{path}: missing required key {key!r}")
        else:
            msg = e["msg"].removeprefix("Value error, ")
            whole_table = e["type"] == "value_error" and (not loc or isinstance(e["input"], dict))
            shown = "" if whole_table else f": value {e['input']!r}"
            lines.append(f"{path}: key {key!r}{shown}: {msg}" if key else f"{path}: {msg}")
    return "\n".join(lines)


def validate_science(data: dict[str, Any], path: Path) -> ScienceConfig:
    """Validate a parsed science config.

    Parameters
    ----------
    data : dict
        Parsed TOML.
    path : pathlib.Path
        File it came from (named in every error).

    Returns
    -------
    ScienceConfig

    Raises
    ------
    ConfigError
        Listing every problem found.
    """
    try:
        cfg = ScienceConfig.model_validate(data)
    except ValidationError as err:
        raise ConfigError(_format_errors(err, path, ScienceConfig)) from None
    if not cfg.bands:
        msg = f"{path}: key 'pipeline.nircam_bands' / 'pipeline.miri_bands': no band to process"
        raise ConfigError(msg)
    return cfg


def load_science(path: str | os.PathLike[str]) -> ScienceConfig:
    """Read and validate a science config alone (for tools that need no machine paths).

    Raises
    ------
    ConfigError
        If the file is missing, not TOML, or invalid.
    """
    return validate_science(_read_toml(Path(path)), Path(path))


def load_local(path: str | os.PathLike[str]) -> LocalConfig:
    """Read and validate a machine config (``local.toml``) alone.

    Raises
    ------
    ConfigError
        If the file is missing, not TOML, or invalid.
    """
    try:
        return LocalFile.model_validate(_read_toml(Path(path))).local
    except ValidationError as err:
        raise ConfigError(_format_errors(err, Path(path), LocalFile)) from None


def load_config(
    config_path: str | os.PathLike[str],
    local_path: str | os.PathLike[str] | None = None,
    *,
    check_jwst: bool = True,
) -> RunConfig:
    """Load and validate a run's configuration.

    Parameters
    ----------
    config_path : path-like
        The science config (``config/config.toml``).
    local_path : path-like, optional
        The machine config; defaults to ``local.toml`` beside ``config_path``.
    check_jwst : bool
        Also check every ``lvN_parameters`` key against the jwst step specs (imports jwst).

    Returns
    -------
    RunConfig

    Raises
    ------
    ConfigError
        If either file is missing, is not TOML or does not validate.
    """
    config_path = Path(config_path).resolve()
    local_path = Path(local_path).resolve() if local_path else config_path.parent / "local.toml"
    science = validate_science(_read_toml(config_path), config_path)
    local = load_local(local_path)
    if check_jwst:
        check_jwst_parameters(science, config_path)

    base = local_path.parent

    def absolute(p: str, default: Path) -> Path:
        return (base / p).resolve() if p else default.resolve()

    working = absolute(local.working_dir, base)
    return RunConfig(
        science=science,
        local=local,
        config_path=config_path,
        local_path=local_path,
        raw_dir=absolute(local.raw_dir, base),
        working_dir=working,
        crds_dir=absolute(local.crds_dir, working / "crds"),
        alignment_dir=absolute(local.alignment_dir, REPO_ROOT / "alignment"),
        psf_dir=absolute(local.psf_dir, REPO_ROOT / "PSF"),
        psf_data_dir=absolute(local.psf_data_dir, REPO_ROOT / "PSF" / "stpsf_data"),
        config_hash=config_hash(science),
    )


def config_hash(science: ScienceConfig) -> str:
    """Short SHA-256 of the validated science config (stable across key order)."""
    blob = json.dumps(science.model_dump(mode="json"), sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def resolve(value: Any, target: str, band: Band) -> Any:
    """Resolve a possibly selector-keyed value for one target and band.

    Parameters
    ----------
    value : Any
        A plain value, or a dict keyed by selectors (target, band, band type, instrument), possibly
        nested.
    target : str
        Target name.
    band : Band
        Band being processed.

    Returns
    -------
    Any
        The most specific matching value, or the module sentinel ``_MISSING`` if none matches.
    """
    if not isinstance(value, dict):
        return value
    for key in (target, *band.selectors):
        if key in value:
            return resolve(value[key], target, band)
    return _MISSING


def stage_parameters(science: ScienceConfig, stage: str, target: str, band: Band) -> dict[str, Any]:
    """Resolve a ``lvN_parameters`` table into jwst ``call()`` keyword arguments for one band.

    Parameters
    ----------
    science : ScienceConfig
        Validated science config.
    stage : {"lv1_parameters", "lv2_parameters", "lv3_parameters"}
        Which table.
    target : str
        Target name.
    band : Band
        Band being processed.

    Returns
    -------
    dict
        ``{"steps": {step: {param: value}}, <pipeline param>: value}`` with every selector resolved
        and unmatched selector values left out.
    """
    table = getattr(science, stage)
    pipeline_kw: dict[str, Any] = {}
    steps: dict[str, dict[str, Any]] = {}
    step_names = _jwst_step_names(stage)
    for key, value in table.items():
        if key in step_names:
            resolved = {p: resolve(v, target, band) for p, v in value.items()}
            steps[key] = {p: v for p, v in resolved.items() if v is not _MISSING}
        else:
            v = resolve(value, target, band)
            if v is not _MISSING:
                pipeline_kw[key] = v
    return {**pipeline_kw, "steps": steps}


def _pipeline_class(stage: str) -> Any:
    from jwstgal.crds_setup import import_jwst_pipelines

    return import_jwst_pipelines()[STAGE_PIPELINES[stage]]


def _jwst_step_names(stage: str) -> tuple[str, ...]:
    return tuple(_pipeline_class(stage).step_defs)


def check_jwst_parameters(science: ScienceConfig, path: Path) -> None:
    """Check every ``lvN_parameters`` key against the jwst pipeline and step specs.

    Raises
    ------
    ConfigError
        Naming the unknown step or parameter, the allowed names and the closest match.
    """
    problems = []
    for stage in STAGE_PIPELINES:
        table = getattr(science, stage)
        if not table:
            continue
        pipe = _pipeline_class(stage)
        pipe_keys = sorted(set(pipe.load_spec_file().keys()) - _MANAGED_PIPELINE_KEYS)
        step_names = list(pipe.step_defs)
        for key, value in table.items():
            if key in step_names:
                if not isinstance(value, dict):
                    problems.append(f"{path}: key '{stage}.{key}': value {value!r}: a step's "
                                    f"parameters must be a table, e.g. [{stage}.{key}]")
                    continue
                allowed = sorted(pipe.step_defs[key].load_spec_file().keys())
                allowed = [a for a in allowed if a not in _MANAGED_PIPELINE_KEYS]
                problems += [
                    f"{path}: unknown key '{stage}.{key}.{p}': {pipe.step_defs[key].__name__} has "
                    f"no parameter {p!r} (allowed: {', '.join(allowed)}){_did_you_mean(p, allowed)}"
                    for p in value if p not in allowed
                ]
            elif key in _MANAGED_PIPELINE_KEYS:
                problems.append(f"{path}: key '{stage}.{key}' is set by jwstgal itself and may not "
                                "be configured")
            elif key not in pipe_keys:
                allowed = step_names + pipe_keys
                problems.append(f"{path}: unknown key '{stage}.{key}': not a step of "
                                f"{pipe.__name__} nor one of its parameters (steps: "
                                f"{', '.join(step_names)}){_did_you_mean(key, allowed)}")
    if problems:
        raise ConfigError("\n".join(problems))
