"""The science configuration, ``config/config.toml``: what to reduce and how.

Every table is a strict pydantic model (unknown keys are errors). The tables of the pipeline steps
are not declared here: each step owns its settings model (:mod:`jwstgal.steps`), and
:class:`ScienceConfig` gets one field per registered step with settings, as
``[<step>]`` + ``[<step>.override.<selector>]``.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, create_model, field_validator, model_validator

from jwstgal.bands import ALL_BANDS, get_band
from jwstgal.settings import GROUP_SELECTORS, Strict, check_band, check_path_component, did_you_mean
from jwstgal.stages import STAGE_PIPELINES
from jwstgal.steps import DEFAULT_STEPS, STEP_NAMES, STEP_SETTINGS


class StepLists(Strict):
    """Ordered steps (or steps to overwrite) per instrument."""

    nircam: list[str] = Field(default_factory=lambda: list(DEFAULT_STEPS),
                              description="Steps for NIRCam bands, in order.")
    miri: list[str] = Field(default_factory=lambda: list(DEFAULT_STEPS),
                            description="Steps for MIRI bands, in order.")

    @field_validator("nircam", "miri")
    @classmethod
    def _known_steps(cls, steps: list[str]) -> list[str]:
        for step in steps:
            if step not in STEP_NAMES and step != "all":
                msg = (f"unknown step {step!r} (allowed: {', '.join(STEP_NAMES)})"
                       f"{did_you_mean(step, STEP_NAMES)}")
                raise ValueError(msg)
        real = [s for s in steps if s != "all"]
        if real != sorted(real, key=STEP_NAMES.index):
            msg = f"steps run in the order {', '.join(STEP_NAMES)}; got {', '.join(real)}"
            raise ValueError(msg)
        return steps


class OverwriteLists(StepLists):
    """Steps whose existing outputs are discarded and recomputed (``"all"`` for every step)."""

    nircam: list[str] = Field(default_factory=list, description="NIRCam steps to redo.")
    miri: list[str] = Field(default_factory=list, description="MIRI steps to redo.")


#: How a dedicated background exposure is recognised.
BgrCheck = Literal["none", "parallel_off", "check_in_name", "filename"]


class PipelineConfig(Strict):
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
    bgr_check_type: BgrCheck | dict[Literal["nircam", "miri"], BgrCheck] = Field(
        default_factory=lambda: {"nircam": "none", "miri": "parallel_off"},
        description="How dedicated background exposures are recognised, per instrument: 'none', "
        "'parallel_off' (a parallel sequence), 'check_in_name' (bgr_background_name in TARGPROP) "
        "or 'filename' (bgr_filename_pattern). A plain value is MIRI's; NIRCam's default is "
        "'none' (its coordinated parallels are science).")
    bgr_background_name: str = Field("off", description="Name substring for check_in_name.")
    bgr_filename_pattern: str = Field("", description="File-name glob of background exposures "
                                      "(check type 'filename'), e.g. '*_02201_*'.")
    bgr_observation_types: list[Literal["nircam", "nircam_short", "nircam_long", "miri"]] = Field(
        default_factory=lambda: ["miri"],
        description="Band types whose dedicated background exposures enter level 3 as backgrounds.")

    def bgr_check(self, instrument: str) -> str:
        """The background check of an instrument (``nircam`` or ``miri``)."""
        if isinstance(self.bgr_check_type, str):
            return self.bgr_check_type if instrument == "miri" else "none"
        return self.bgr_check_type.get(instrument, "none")

    @model_validator(mode="after")
    def _pattern(self) -> PipelineConfig:
        wants = [self.bgr_check_type] if isinstance(self.bgr_check_type, str) else \
            list(self.bgr_check_type.values())
        if "filename" in wants and not self.bgr_filename_pattern:
            msg = "bgr_check_type 'filename' needs bgr_filename_pattern, e.g. '*_02201_*'"
            raise ValueError(msg)
        return self

    @field_validator("data_version")
    @classmethod
    def _version(cls, version: str) -> str:
        return check_path_component(version, "data_version")

    @field_validator("nircam_bands", "miri_bands")
    @classmethod
    def _bands(cls, bands: list[str], info: Any) -> list[str]:
        want = "nircam" if info.field_name == "nircam_bands" else "miri"
        out = []
        for b in bands:
            band = get_band(check_band(b))
            if band.instrument != want:
                msg = f"{b!r} is a {band.instrument.upper()} band, not a {want.upper()} one"
                raise ValueError(msg)
            out.append(band.name)
        return out


class ProjectConfig(Strict):
    """One ``[projects.<proposal id>]`` table."""

    targets: list[str] = Field(description="Target names (lower case, as in the raw tree).")

    @field_validator("targets")
    @classmethod
    def _lower(cls, targets: list[str]) -> list[str]:
        for t in targets:
            if t != t.lower() or not t:
                msg = f"target names are lower case; write {t.lower()!r} instead of {t!r}"
                raise ValueError(msg)
            check_path_component(t, "target name")
        return targets


class DownloadConfig(Strict):
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
    connect_timeout: float = Field(30.0, gt=0, le=600, description="Seconds to wait for a connection.")
    read_timeout: float = Field(120.0, gt=0, le=3600, description="Seconds to wait for each block of a "
                                "transfer before it counts as stalled (and is retried).")


class KernelsConfig(Strict):
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


class ConvolveConfig(Strict):
    """The ``[convolve]`` table: the resolution ladder every mosaic is brought to."""

    targets: list[str] = Field(default_factory=list, description="Rungs of the ladder: bands (e.g. "
                               "F2100W) and analytic PSFs (gauss0.85, gauss4, gauss7.5, gauss15, ...).")
    target: str = Field("", description="One rung (older configs); added to targets.")
    method: Literal["aniano", "pypher"] = Field("aniano", description="Which kernels to use.")
    reproject: bool = Field(True, description="If a rung is a band, also reproject onto that "
                            "band's mosaic grid.")
    direct_max: float = Field(2.0, ge=0.5, le=10.0, description="Widest Gaussian (arcsec) reached "
                              "by a kernel on the mosaic grid; wider ones go through gauss<direct_max> "
                              "and a block-averaged grid of >= 4 pixels per FWHM.")
    block_size: int = Field(2048, ge=256, description="Tile size bounding the FFT memory.")
    allow_unsafe: bool = Field(False, description="Apply kernels Aniano's criterion calls unsafe "
                               "(W- > 0.5: they amplify noise); otherwise such a band is refused.")

    @field_validator("targets")
    @classmethod
    def _names(cls, targets: list[str]) -> list[str]:
        from jwstgal.psfs import check_psf_name

        return [check_psf_name(t) for t in targets]

    @field_validator("target")
    @classmethod
    def _name(cls, target: str) -> str:
        from jwstgal.psfs import check_psf_name

        return check_psf_name(target) if target else target

    @property
    def rungs(self) -> list[str]:
        """Every rung, ``target`` included, in order, once."""
        out = list(self.targets)
        if self.target and self.target not in out:
            out.insert(0, self.target)
        return out


class ExternalMap(Strict):
    """One external map that can anchor an instrument: ``<anchor_ref_dir>/<target>_<band>.fits``."""

    band: str = Field(description="Its name in the file name, e.g. 'irac1', 'wise3'.")
    psf: str = Field(description="Its resolution as a PSF name, e.g. 'gauss4' (Gaussian FWHM 4\").")

    @field_validator("band")
    @classmethod
    def _band(cls, band: str) -> str:
        return check_path_component(band, "[anchor] external map band")

    @field_validator("psf")
    @classmethod
    def _psf(cls, psf: str) -> str:
        from jwstgal.psfs import check_psf_name

        return check_psf_name(psf)


Instrument = Literal["nircam", "miri"]


class AnchorConfig(Strict):
    """The ``[anchor]`` table: the absolute background of every band (anchor_data.py).

    Per instrument, the reference band is fitted against the first external map found (in the
    order given); every other band is fitted against the reference band at ``internal_psf``.
    """

    reference: dict[Instrument, str] = Field(
        default_factory=dict, description="Reference band per instrument, e.g. "
        "{nircam = 'F300M', miri = 'F770W'}; an instrument without one is not anchored.")
    external: dict[Instrument, list[ExternalMap]] = Field(
        default_factory=dict, description="External maps per instrument, in order of preference, "
        "e.g. {miri = [{band = 'irac4', psf = 'gauss4'}, {band = 'wise3', psf = 'gauss15'}]}.")
    internal_psf: dict[Instrument, str] = Field(
        default_factory=dict, description="Common resolution of the internal fits per instrument "
        "(a band or gauss<FWHM>), e.g. {nircam = 'F300M', miri = 'F2100W'}.")
    fit_range: tuple[float, float] = Field((1.0, 95.0), description="Percentiles of the reference "
                                           "intensity spanned by the bins.")
    n_bins: int = Field(20, ge=3, le=200, description="Bins of the reference intensity.")
    min_per_bin: int = Field(10, ge=1, description="Least pixels for a bin to be used.")
    clip_sigma: float = Field(3.0, gt=0, description="Bins further from the line (in errors) are "
                              "dropped and the line refitted.")

    @field_validator("reference")
    @classmethod
    def _reference(cls, ref: dict[str, str]) -> dict[str, str]:
        out = {}
        for inst, band in ref.items():
            b = get_band(check_band(band))
            if b.instrument != inst:
                msg = f"reference {band!r} is a {b.instrument.upper()} band, not a {inst.upper()} one"
                raise ValueError(msg)
            out[inst] = b.name
        return out

    @field_validator("internal_psf")
    @classmethod
    def _internal(cls, psfs: dict[str, str]) -> dict[str, str]:
        from jwstgal.psfs import check_psf_name

        return {k: check_psf_name(v) for k, v in psfs.items()}

    @model_validator(mode="after")
    def _complete(self) -> AnchorConfig:
        for inst in self.reference:
            if not self.external.get(inst):
                msg = f"[anchor] reference of {inst} is set but external.{inst} lists no map"
                raise ValueError(msg)
        if self.fit_range[0] >= self.fit_range[1] or not 0 <= self.fit_range[0] < self.fit_range[1] <= 100:
            msg = f"[anchor] fit_range must be two increasing percentiles in 0-100, got {self.fit_range}"
            raise ValueError(msg)
        return self

    @property
    def psfs(self) -> list[str]:
        """Every resolution anchoring convolves to."""
        out = [m.psf for maps in self.external.values() for m in maps]
        return out + list(self.internal_psf.values())


class CompareTolerances(Strict):
    """``[release.compare_tolerances]``: largest release-to-release changes that are not flagged."""

    flux_ratio: float = Field(0.02, gt=0, description="Largest |median flux ratio - 1|.")
    shift_mas: float = Field(10.0, gt=0, description="Largest sky shift (mas).")
    background: float = Field(0.01, gt=0, description="Largest background change (MJy/sr).")
    coverage: float = Field(0.05, gt=0, description="Largest change of the covered fraction.")


class ReleaseConfig(Strict):
    """The ``[release]`` table."""

    remove_bloat: bool = Field(True, description="Drop VAR_* and CON extensions from released "
                               "copies (coverage is released as its own map).")
    include_convolved: bool = Field(True, description="Release every rung of the resolution ladder.")
    include_segm: bool = Field(True, description="Release stage 3's segmentation maps.")
    include_crf: bool = Field(False, description="Release the per-exposure crf files (with the "
                              "absolute alignment pushed back into their WCS).")
    overwrite: bool = Field(False, description="Replace files already in the release.")
    compare_with: str = Field("", description="A previous release folder to compare the new one "
                              "with after prepare_release.py (exit code 1 beyond the tolerances).")
    compare_tolerances: CompareTolerances = Field(default_factory=lambda: CompareTolerances(),
                                                  description="Largest changes not flagged.")


class SimulationConfig(Strict):
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


class _ScienceTables(Strict):
    """The tables of the science configuration that are not step settings."""

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
    kernels: KernelsConfig = Field(default_factory=KernelsConfig)
    convolve: ConvolveConfig = Field(default_factory=ConvolveConfig)
    anchor: AnchorConfig = Field(default_factory=AnchorConfig)
    release: ReleaseConfig = Field(default_factory=ReleaseConfig)

    @property
    def targets(self) -> list[str]:
        """All targets of all projects, in config order."""
        return [t for p in self.projects.values() for t in p.targets]

    @property
    def bands(self) -> list[str]:
        """All configured bands, NIRCam first."""
        return self.pipeline.nircam_bands + self.pipeline.miri_bands

    @property
    def kernel_pairs(self) -> list[tuple[str, str]]:
        """(source band, target) of every kernel needed, in order, once.

        Every band to each [kernels] target and to what each rung of the ladder needs (wide
        Gaussians through the intermediate Gaussian); for anchoring, each instrument's reference
        band to its external maps' resolutions and the instrument's bands to its ``internal_psf``.
        """
        from jwstgal.ladder import kernel_targets

        pairs: list[tuple[str, str]] = []

        def add(bands: list[str], targets: list[str]) -> None:
            for b in bands:
                for t in targets:
                    if b != t and (b, t) not in pairs:
                        pairs.append((b, t))

        direct_max = self.convolve.direct_max
        add(self.bands, self.kernels.targets)
        add(self.bands, kernel_targets(self.convolve.rungs, direct_max))
        for inst, ref in self.anchor.reference.items():
            add([ref], kernel_targets([m.psf for m in self.anchor.external.get(inst, [])], direct_max))
            if inst in self.anchor.internal_psf:
                add(getattr(self.pipeline, f"{inst}_bands"), [self.anchor.internal_psf[inst]])
        return pairs

    @property
    def kernel_targets(self) -> list[str]:
        """Every kernel target needed (see :attr:`kernel_pairs`), [kernels] targets first."""
        out = list(self.kernels.targets)
        for _, t in self.kernel_pairs:
            if t not in out:
                out.append(t)
        return out

    @model_validator(mode="after")
    def _cross_checks(self) -> _ScienceTables:
        targets = self.targets
        for table in ("extra_obs_to_include", "alignment"):
            for t in getattr(self, table):
                if t not in targets:
                    msg = (f"[{table}] names target {t!r}, which no project lists "
                           f"(targets: {', '.join(targets)}){did_you_mean(t, targets)}")
                    raise ValueError(msg)
        for inst, ref in self.anchor.reference.items():
            configured = getattr(self.pipeline, f"{inst}_bands")
            if ref not in configured:
                msg = (f"[anchor] reference {ref} is not among pipeline.{inst}_bands "
                       f"({', '.join(configured) or 'none'})")
                raise ValueError(msg)
            if inst not in self.anchor.internal_psf and len(configured) > 1:
                msg = (f"[anchor] internal_psf.{inst} is needed to anchor the other {inst.upper()} "
                       f"bands against {ref} (e.g. the broadest band, or a gauss<FWHM>)")
                raise ValueError(msg)
        if self.convolve.rungs and self.convolve.method not in self.kernels.methods:
            msg = (f"[convolve] method {self.convolve.method!r} is not among [kernels] methods "
                   f"({', '.join(self.kernels.methods)})")
            raise ValueError(msg)
        selectors = [*targets, *ALL_BANDS, *GROUP_SELECTORS]
        for stage in STAGE_PIPELINES:
            _check_selectors(getattr(self, stage), stage, selectors)
        for name, settings in STEP_SETTINGS.items():
            settings.check_selectors(getattr(self, name), name, targets, selectors)
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
                   f"{', '.join(GROUP_SELECTORS)}{did_you_mean(sel, selectors)}")
            raise ValueError(msg)
        if isinstance(sub, dict):
            _check_selector_keys(sub, f"{where}.{sel}", selectors)


ScienceConfig = create_model(
    "ScienceConfig", __base__=_ScienceTables,
    __doc__="The science configuration file (``config/config.toml``), step tables included.",
    **{name: (settings.table(), Field(default_factory=settings.table(),
                                      description=(settings.__doc__ or "").splitlines()[0]))
       for name, settings in STEP_SETTINGS.items()})
