"""The science configuration, ``config/config.toml``: what to reduce and how.

Every table is a strict pydantic model (unknown keys are errors). The tables of the pipeline steps
are not declared here: each step owns its settings model (:mod:`jwstgal.steps`), and
:class:`ScienceConfig` gets one field per registered step with settings, as
``[<step>]`` + ``[<step>.override.<selector>]``.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, ValidationError, create_model, field_validator, model_validator

from jwstgal.bands import ALL_BANDS, get_band
from jwstgal.config.products import AnchorConfig, ConvolveConfig, KernelsConfig, ReleaseConfig
from jwstgal.settings import GROUP_SELECTORS, Strict, check_band, check_path_component, did_you_mean
from jwstgal.stages import STAGE_PIPELINES
from jwstgal.steps import DEFAULT_STEPS, REPEATABLE, STEP_NAMES, STEP_SETTINGS, get_step, order_key, repeat_of
from jwstgal.verdicts import QaLimits


class StepLists(Strict):
    """Ordered steps (or steps to overwrite) per instrument."""

    nircam: list[str] = Field(default_factory=lambda: list(DEFAULT_STEPS),
                              description="Steps for NIRCam bands, in order.")
    miri: list[str] = Field(default_factory=lambda: list(DEFAULT_STEPS),
                            description="Steps for MIRI bands, in order.")

    @field_validator("nircam", "miri")
    @classmethod
    def _known_steps(cls, steps: list[str], info: Any) -> list[str]:
        for step in steps:
            if step == "all":
                continue
            rep = repeat_of(step)
            if step not in STEP_NAMES and rep is None:
                msg = (f"unknown step {step!r} (allowed: {', '.join(STEP_NAMES)}; a repeat is "
                       f"<step>_2 ... <step>_9 of {', '.join(REPEATABLE)}){did_you_mean(step, STEP_NAMES)}")
                raise ValueError(msg)
            try:
                found = get_step(step)
            except KeyError as err:
                raise ValueError(err.args[0]) from None
            if info.field_name not in found.instruments:
                msg = f"step {step!r} is for {' and '.join(found.instruments).upper()} only"
                raise ValueError(msg)
            if rep is not None and cls is StepLists and rep[0] not in steps:
                msg = f"step {step!r} runs {rep[0]!r} again, which the list does not run"
                raise ValueError(msg)
        real = [s for s in steps if s != "all"]
        if real != sorted(real, key=order_key):
            msg = (f"steps run in the order {', '.join(STEP_NAMES)} (a repeat <step>_<n> right after "
                   f"its step); got {', '.join(real)}")
            early = [s for s in ("destripe", "bg_sub") if "lv2" in real and s in real[:real.index("lv2")]]
            if early:          # pjpipe's order: on the rate files
                msg += "; on the rate files before stage 2 they are " + ", ".join(f"rate_{s}" for s in early)
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
                                   description="Exposures never used: file-name substrings, or globs "
                                   "matched anywhere in the name (jw02107001001_0210?_00001).")
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
    max_file_gb: float = Field(16.0, gt=0, le=1024, description="Largest file fetched (GiB), whatever "
                               "MAST lists: a body past it is cut off, a listed size above it refused.")
    min_rate_kbs: float = Field(1.0, ge=0, le=1e6, description="Slowest transfer kept (kB/s over "
                                "rate_window); a slower one is dropped and resumed. 0: no minimum.")
    rate_window: float = Field(120.0, gt=0, le=3600, description="Seconds over which min_rate_kbs is "
                               "measured.")


class SimulationConfig(Strict):
    """The ``[simulation]`` table: a synthetic programme observed instead of downloaded data."""

    seed: int = Field(2107, description="Seed of every random draw; same seed, same data.")
    ra: float = Field(24.1739, ge=0, lt=360, description="Galaxy centre RA (deg).")
    dec: float = Field(15.7836, ge=-90, le=90, description="Galaxy centre Dec (deg).")
    detector_size: int = Field(512, ge=128, le=2048,
                               description="Pixels per side of each simulated detector (2048 = full).")
    n_dithers: int = Field(4, ge=1, le=9, description="Dither positions per tile.")
    n_tiles: int = Field(2, ge=1, le=4, description="Mosaic tiles (each with its own background).")
    n_stars: int = Field(120, ge=0, le=100_000, description="Point sources in the field.")
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
    psf: Literal["gaussian", "kernels"] = Field(
        "gaussian", description="How the sky is drawn: gaussian (stars as Gaussians of the band's "
        "FWHM, the galaxy unblurred) or kernels (stars and galaxy through the band PSF that the "
        "kernels are built from, [kernels] psf_source, integrated over the detector's pixels), so "
        "that the convolved products can be checked against their target resolutions.")


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
    qa: QaLimits = Field(default_factory=QaLimits, description="When the QA page asks for a look.")
    repeat_tables: dict[str, Any] = Field(
        default_factory=dict, description="Not a table of the file: the validated [<step>_<n>] tables "
        "of repeated steps (see :meth:`step_table`).")

    @model_validator(mode="before")
    @classmethod
    def _repeats(cls, data: Any) -> Any:
        """Validate each ``[<step>_<n>]`` table: ``[<step>]``'s keys, replaced by its own."""
        if not isinstance(data, dict):
            return data
        if "repeat_tables" in data:
            msg = "unknown table [repeat_tables]"
            raise ValueError(msg)
        out = {k: v for k, v in data.items() if repeat_of(k) is None}
        tables: dict[str, Any] = {}
        for name, table in data.items():
            if (rep := repeat_of(name)) is None:
                continue
            if rep[0] not in REPEATABLE or rep[0] not in STEP_SETTINGS:
                msg = (f"[{name}]: step {rep[0]!r} cannot run again (repeatable: {', '.join(REPEATABLE)})")
                raise ValueError(msg)
            if not isinstance(table, dict):
                msg = f"[{name}] must be a table"
                raise ValueError(msg)
            base = data.get(rep[0], {})
            try:
                tables[name] = STEP_SETTINGS[rep[0]].table().model_validate(
                    {**(base if isinstance(base, dict) else {}), **table})
            except ValidationError as err:
                fields = list(STEP_SETTINGS[rep[0]].model_fields)
                problems = "; ".join(
                    f"{'.'.join(map(str, e['loc'])) or '-'}: {e['msg']}"
                    + (f" (allowed: {', '.join(fields)}){did_you_mean(str(e['loc'][-1]), fields)}"
                       if e["type"] == "extra_forbidden" and len(e["loc"]) == 1 else "")
                    for e in err.errors())
                msg = f"[{name}] ({rep[0]!r} again): {problems}"
                raise ValueError(msg) from None
        out["repeat_tables"] = tables
        return out

    def step_table(self, step: str) -> Any:
        """The settings table of a step, or of a repeat (its own, else its step's)."""
        if step in self.repeat_tables:
            return self.repeat_tables[step]
        rep = repeat_of(step)
        return getattr(self, rep[0] if rep else step)

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
            maps = self.anchor.external.get(inst, [])
            add([ref], kernel_targets([m.psf for m in maps if not m.bands or ref in m.bands], direct_max))
            for m in maps:                      # bands a map anchors directly
                add(m.bands, kernel_targets([m.psf], direct_max))
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
        if self.kernels.pixel_response:
            self.kernels.set_mosaic_pixels(self.lv3_parameters, targets, self.bands)
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
        miri = self.pipeline.steps.miri
        for ds in ("rate_destripe", "destripe"):
            if "lyot_adjust" not in miri or ds not in miri:     # as each MIRI band resolves it
                continue
            clash = sorted({f"{b} of {t}: lyot = {lyot!r}" for t in targets for b in self.pipeline.miri_bands
                            if (lyot := getattr(self, ds).for_band(t, get_band(b))["lyot"]) != "include"})
            if clash:
                msg = (f"[pipeline.steps] miri runs lyot_adjust and {ds}: {ds} would handle the "
                       f"Lyot again ([{ds}] and its overrides give {'; '.join(clash[:3])}"
                       f"{' ...' if len(clash) > 3 else ''}); set [{ds}] lyot = \"include\" (or in "
                       f"[{ds}.override.miri])")
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
        for name, table in self.repeat_tables.items():
            STEP_SETTINGS[repeat_of(name)[0]].check_selectors(table, name, targets, selectors)
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
