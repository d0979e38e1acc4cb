"""Step ``kernels``: PSF-matching kernels from every configured band to each target it needs.

Run scope, in two stages: first the band PSFs not cached yet (a task per band: stpsf, a Gaussian
or a user's empirical PSF), then the kernels (a task per source, target and method: Aniano et al.
2011 and/or pypher), each stage's tasks in parallel on the executor. The targets are ``[kernels]
targets`` plus what the resolution ladder (``[convolve] targets``, through ``gauss<direct_max>``
for wide Gaussians) and the anchoring need. Kernels are written with their D and W- metrics to
``<psf_dir>/kernels/<method>/<SOURCE>_to_<TARGET>.fits`` with a PNG diagnostic; one whose
``JG_KERN`` matches its PSFs and settings is kept.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import Field, PrivateAttr, field_validator

from jwstgal.bands import get_band
from jwstgal.pixel_response import PixelResponse
from jwstgal.settings import Strict, check_band, check_path_component
from jwstgal.steps.post import PostContext, PostRun, PostStep, Task

log = logging.getLogger(__name__)


class KernelsConfig(Strict):
    """The ``[kernels]`` table: PSF-matching kernels from every configured band to each target."""

    targets: list[str] = Field(default_factory=list, description="Kernel targets: bands (e.g. "
                               "F2100W) or analytic PSFs gauss<FWHM\"> / moffat<FWHM>b<beta>.")
    methods: list[Literal["aniano", "pypher"]] = Field(default_factory=lambda: ["aniano"],
                                                       description="Kernel constructions.")
    psf_source: Literal["stpsf", "gaussian"] = Field(
        "stpsf", description="Band PSFs from stpsf (real optics) or Gaussians of the band FWHM.")
    oversample: int = Field(4, ge=1, le=10, description="PSF oversampling w.r.t. detector pixels.")
    psf_product: Literal["OVERDIST", "OVERSAMP"] = Field(
        "OVERDIST", description="stpsf product: OVERDIST (distortion and detector charge diffusion "
        "/ IPC included, as in the pixels a mosaic is drizzled from) or OVERSAMP (optics only).")
    nlambda: int = Field(0, ge=0, le=100, description="stpsf wavelengths per band (0 = stpsf default).")
    use_opd: bool = Field(False, description="Use stpsf's telescope OPD (needs full stpsf data).")
    ote_wfe_nm: float = Field(
        0.0, ge=0, le=500, description="Without use_opd: a synthetic telescope wavefront error of "
        "this rms (nm; 70-80 is typical on orbit), an approximation of the real one's size, not its "
        "pattern. 0: a perfect telescope (the instrument's own aberrations only).")
    reg_fact: float = Field(1e-4, gt=0, le=1, description="pypher regularisation factor.")
    psf_files: dict[str, str] = Field(
        default_factory=dict, description="Empirical PSFs per band, files in <psf_dir>/empirical/ "
        "(e.g. {F200W = 'F200W_epsf.fits'}), used for those bands instead of psf_source: any pixel "
        "scale (PIXELSCL/PIXSCALE in arcsec, or a WCS), centred or not, normalised or not.")
    pixel_response: bool = Field(
        False, description="Widen each model PSF (stpsf or Gaussian, not psf_files) by its mosaics' "
        "pixel response: the detector pixel and drizzle's drop ([lv3_parameters.resample] pixfrac "
        "x the detector pixel; kernel square, turbo or point), as in the stars of a mosaic.")
    _responses: dict[str, PixelResponse] = PrivateAttr(default_factory=dict)

    def set_mosaic_pixels(self, lv3_parameters: dict, targets: list[str], bands: list[str]) -> None:
        """Resolve each band's pixel response from the stage-3 resample parameters (ValueError)."""
        from jwstgal.pixel_response import mosaic_response

        self._responses = {b: mosaic_response(lv3_parameters, targets, get_band(b)) for b in bands}

    def response(self, band: str) -> PixelResponse | None:
        """The pixel response a band's model PSF is widened by (None without ``pixel_response``).

        A band :meth:`set_mosaic_pixels` did not see has jwst's default mosaic: ``pixfrac = 1``.
        """
        from jwstgal.psfs import is_analytic

        if not self.pixel_response or band in self.psf_files or is_analytic(band):
            return None
        if band not in self._responses:
            b = get_band(band)
            return PixelResponse(b.pixel_scale, b.pixel_scale)
        return self._responses[band]

    @field_validator("targets")
    @classmethod
    def _names(cls, targets: list[str]) -> list[str]:
        from jwstgal.psfs import check_psf_name

        return [check_psf_name(t) for t in targets]

    @field_validator("psf_files")
    @classmethod
    def _files(cls, files: dict[str, str]) -> dict[str, str]:
        return {get_band(check_band(b)).name: check_path_component(f, f"[kernels] psf_files.{b}")
                for b, f in files.items()}


@dataclass(frozen=True, kw_only=True)
class PsfTask(Task):
    """One band's PSF, made and cached in ``<psf_dir>/psfs/``."""

    band: str
    settings: KernelsConfig
    psf_dir: Path
    data_dir: Path

    def run(self) -> Path:
        """Make and cache the PSF (kept when the cached one is current)."""
        from jwstgal.kernel_products import band_psf

        band_psf(self.band, self.settings, self.psf_dir, self.data_dir)
        return self.outputs[0]


@dataclass(frozen=True, kw_only=True)
class KernelTask(Task):
    """One kernel: ``source`` to ``target`` by ``method``."""

    source: str
    target: str
    method: str
    settings: KernelsConfig
    psf_dir: Path
    data_dir: Path
    overwrite: bool = False

    def run(self) -> Path:
        """Make the kernel (kept when current); ValueError when none exists."""
        from jwstgal.kernel_products import make_kernel

        try:
            return make_kernel(self.source, self.target, self.method, self.settings, self.psf_dir,
                               self.data_dir, overwrite=self.overwrite)
        except ValueError as err:
            msg = f"kernel {self.source} -> {self.target} ({self.method}) cannot be made: {err}"
            raise ValueError(msg) from None


class Kernels(PostStep):
    """Step ``kernels`` (``make_kernels.py``)."""

    name = "kernels"
    scope = "run"
    summary = ("band PSFs, then every kernel the ladder and the anchoring need (a task per PSF, then "
               "per kernel, in parallel), `[kernels]`")

    def root(self, run: PostRun) -> Path:
        """PSFs and kernels are shown relative to ``psf_dir``."""
        return run.psf_dir

    @staticmethod
    def pairs(run: PostRun, bands: list[str]) -> list[tuple[str, str]]:
        """(source band, target) of every kernel of the selected bands."""
        return [(b, t) for b, t in run.science.kernel_pairs if b in bands]

    def check(self, run: PostRun, bands: list[str]) -> list[str]:
        """Nothing to make, or an empirical PSF that cannot be read, stops the step."""
        from jwstgal.kernel_products import psf_file_problems

        if not self.pairs(run, bands):
            return [f"{run.config_path}: no kernel to make: [kernels] targets, [convolve] targets and "
                    "[anchor] are all empty"]
        return [f"{run.config_path}: {p}" for p in psf_file_problems(run.science.kernels, run.psf_dir)]

    def plan(self, ctx: PostContext) -> list[list[Task]]:
        """Stage 1: the PSFs to make; stage 2: every kernel, with why it is (re)made or kept."""
        from jwstgal.kernel_products import cached_psf, plan_kernel_set
        from jwstgal.layout import psf_path
        from jwstgal.psfs import is_analytic

        run, cfg = ctx.run, ctx.run.science.kernels
        pairs = self.pairs(run, ctx.bands)
        common = {"settings": cfg, "psf_dir": run.psf_dir, "data_dir": run.psf_data_dir}
        needed = list(dict.fromkeys(b for pair in pairs for b in pair if not is_analytic(b)))
        psfs: list[Task] = [
            PsfTask(label=f"PSF {b}", outputs=(psf_path(run.psf_dir, b),), band=b, **common,
                    reason=f"not cached yet ({'empirical' if b in cfg.psf_files else cfg.psf_source})")
            for b in needed if cached_psf(b, cfg, run.psf_dir) is None]
        kernels: list[Task] = [
            KernelTask(label=f"kernel {band} -> {target} ({method})", outputs=(path,),
                       action="make" if why else "skip", reason=why or "up to date", source=band,
                       target=target, method=method, overwrite=ctx.overwrite, **common)
            for band, target, method, path, why in plan_kernel_set(cfg, run.psf_dir, pairs, ctx.overwrite)]
        return [psfs, kernels]
