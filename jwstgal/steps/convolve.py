"""Step ``convolve``: every final mosaic brought to each rung of the resolution ladder.

Band scope, one task per rung: the rungs of a band (and of every band) run in parallel through
the executor, each reading the mosaic tile by tile itself. The anchored mosaic is convolved where
``anchor`` made one (else the aligned one, else stage 3's). Products:
``<band>/convolved/<product>_i2d_conv_<PSF>.fits`` (SCI, ERR): band rungs reprojected onto that
band's grid, Gaussians wider than ``[convolve] direct_max`` on a block-averaged grid; the PSF and
the grid are in the header. A product whose ``JG_CKEY`` matches its inputs and settings is kept
(those of earlier versions included), so no finished product is remade by an upgrade.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator

from jwstgal import layout
from jwstgal.bands import get_band
from jwstgal.ladder import Rung
from jwstgal.settings import Strict
from jwstgal.steps.post import PostContext, PostRun, PostStep, Task

log = logging.getLogger(__name__)


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
                              "and a block-averaged grid of >= 4 pixels per FWHM (and >= 3 per direct_max).")
    block_size: int = Field(2048, ge=256, description="Tile size bounding the FFT memory.")
    kernel_sampling: Literal["auto", "band_limited", "pixel_centre"] = Field(
        "auto", description="How a kernel is brought to the mosaic's pixel: band_limited (the "
        "kernel cut at the mosaic's Nyquist frequency; exact enough for real, optics-limited PSFs: "
        "F300M -> F360M at 0.063\" within 0.01 % in FWHM at the pixel centre, ~0.2 % anywhere in "
        "the pixel), pixel_centre "
        "(built on that pixel from the kernel and its source PSF, exact for a star centred on a "
        "pixel; for Gaussian PSFs, where band_limited loses 2-3 % of a compact source's aperture "
        "flux on undersampled bands), or auto (band_limited for stpsf PSFs, else pixel_centre).")
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

    def key_settings(self) -> dict[str, Any]:
        """The settings a product's key holds (those that change its pixels)."""
        return self.model_dump(exclude={"allow_unsafe", "targets", "target"})


@dataclass(frozen=True, kw_only=True)
class ConvolveTask(Task):
    """One rung of one band's mosaic."""

    mosaic: Path
    kernel: Path | None
    rung: Rung | None
    grid: Path | None
    block_size: int
    sampling: str
    key: str
    config_hash: str

    def run(self) -> Path:
        """Convolve (and regrid) the mosaic into the rung's product."""
        from jwstgal.convolve_products import read_mosaic, to_rung, write_convolved

        (out,) = self.outputs
        mosaic = read_mosaic(self.mosaic, scratch=out.parent)      # scratch beside the products
        try:
            sci, err, wcs, params = to_rung(mosaic, self.rung, self.kernel, block_size=self.block_size,
                                            grid=self.grid, sampling=self.sampling)
            write_convolved(out, mosaic, sci, err, wcs, self.rung, params,
                            config_hash=self.config_hash, key=self.key)
        finally:
            mosaic.close()                                        # its scratch files go
        log.info("%s (%s): %s", self.label, self.rung.grid, out)
        return out


@dataclass(frozen=True, kw_only=True)
class LadderStarsTask(Task):
    """The stars of a band's rung products measured against the rungs' PSFs (the QA page's check)."""

    products: tuple[tuple[str, Path, str], ...]
    catalogue: Path | None
    psf_dir: Path

    def run(self) -> dict[str, Any]:
        """Measure the rungs whose products changed; write the band's record."""
        from jwstgal.ladder_qa import measure_ladder

        return measure_ladder(self.outputs[0], list(self.products), self.catalogue, self.psf_dir)


def _ladder_stars(ctx: PostContext, bdir: Path, rungs: list[Task]) -> list[Task]:
    """Stage 2: one task measuring the stars of every rung product the band has (or will have)."""
    made = tuple((t.label.rsplit(" -> ", 1)[1], t.outputs[0], t.key) for t in rungs
                 if isinstance(t, ConvolveTask) and t.action in ("make", "skip"))
    if not made:
        return []
    run = ctx.run
    name = run.science.alignment.get(ctx.target)
    catalogue = run.alignment_dir / name if name else None
    record = layout.ladder_widths(bdir)
    action, why = "make", "products changed"
    if record.is_file() and all(t.action == "skip" for t in rungs if isinstance(t, ConvolveTask)):
        try:
            old = json.loads(record.read_text())
        except (OSError, ValueError):
            old = {}
        if (old.get("keys") == {r: k for r, _, k in made}
                and old.get("catalogue") == (str(catalogue) if catalogue and catalogue.is_file() else "")):
            action, why = "skip", "up to date"
    return [LadderStarsTask(label=f"{ctx.target} {ctx.band.name} ladder stars",
                            inputs=tuple(p for _, p, _ in made), outputs=(record,), action=action,
                            reason=why, products=made, catalogue=catalogue, psf_dir=run.psf_dir)]


class Convolve(PostStep):
    """Step ``convolve`` (``convolve_data.py``)."""

    name = "convolve"
    scope = "band"
    summary = ("every final mosaic convolved to each rung of `[convolve] targets` (a task per rung, "
               "in parallel), `[convolve]`")

    def check(self, run: PostRun, bands: list[str]) -> list[str]:
        """An empty ladder is a configuration error."""
        if not run.science.convolve.rungs:
            return [f"{run.config_path}: [convolve] targets is empty: nothing to convolve to"]
        return []

    def plan(self, ctx: PostContext) -> list[list[Task]]:
        """One task per rung of the band's published mosaic (none before it has one)."""
        from astropy.io import fits
        from astropy.wcs import WCS

        from jwstgal.convolve import image_pixel_scale
        from jwstgal.convolve_products import kernel_is_refused, product_current, product_key
        from jwstgal.ladder import plan_rung
        from jwstgal.psfs import psf_file_problem
        from jwstgal.tiled_io import remove_stale_scratch

        run, band, target = ctx.run, ctx.band, ctx.target
        conv: ConvolveConfig = run.science.convolve
        bdir = layout.band_dir(run.reprocess_dir, target, band)
        i2d = layout.published_mosaic(bdir, target, band)
        if not i2d.is_file():
            log.warning("%s: no mosaic %s, skipping", ctx.label, i2d)
            return []
        if not ctx.dry_run:                                       # what a killed run left behind
            for d in remove_stale_scratch(layout.convolved_dir(bdir), ".jwstgal-conv-"):
                log.info("%s: removed %s, left by a killed run", ctx.label, d)
        pix = image_pixel_scale(WCS(fits.getheader(i2d, "SCI")))
        settings = conv.key_settings()
        tasks: list[Task] = []
        for psf in conv.rungs:
            what = f"{target} {band.name} -> {psf}"
            out = layout.convolved_mosaic(bdir, target, band, psf)

            def task(action: str, reason: str, *, what: str = what, out: Path = out,
                     kernel: Path | None = None, grid: Path | None = None, rung: Rung | None = None,
                     key: str = "") -> Task:
                return ConvolveTask(label=what, inputs=(i2d, *(p for p in (kernel, grid) if p)),
                                    outputs=(out,), action=action, reason=reason, mosaic=i2d,
                                    kernel=kernel, rung=rung, grid=grid, block_size=conv.block_size,
                                    sampling=conv.kernel_sampling, key=key, config_hash=run.config_hash)

            grid = None
            if conv.reproject and psf in run.science.bands and psf != band.name:
                tb = get_band(psf)
                grid = layout.final_mosaic(layout.band_dir(run.reprocess_dir, target, tb), target, tb)
                if not grid.is_file():
                    tasks.append(task("fails", f"reprojection grid {grid} does not exist (run stage 3 "
                                               f"of {psf})"))
                    continue
            rung = plan_rung(band.name, psf, pix, direct_max=conv.direct_max, reproject=conv.reproject,
                             bands=tuple(run.science.bands))
            kfile = None
            if rung.kernel_target:
                kfile = layout.kernel_path(run.psf_dir, conv.method, band.name, rung.kernel_target)
                if not kfile.is_file():
                    tasks.append(task("fails", f"kernel {kfile} not found; run make_kernels.py first"))
                    continue
                if bad := psf_file_problem(kfile, kernel=True):
                    tasks.append(task("fails", f"kernel {kfile} is unusable ({bad}); make it again "
                                               "with make_kernels.py"))
                    continue
                if why := kernel_is_refused(kfile, conv.allow_unsafe):
                    tasks.append(task("refused", why))
                    continue
            key = product_key(i2d, kfile, rung, settings, grid)
            if not ctx.overwrite and product_current(out, i2d, kfile, rung, settings, grid):
                log.info("%s: convolved product up to date", what)
                tasks.append(task("skip", "up to date", kernel=kfile, grid=grid, rung=rung, key=key))
                continue
            why = "--overwrite" if ctx.overwrite else \
                "inputs or settings changed" if out.is_file() else "not made yet"
            tasks.append(task("make", f"{why}; {rung.grid}", kernel=kfile, grid=grid, rung=rung, key=key))
        return [tasks, stars] if (stars := _ladder_stars(ctx, bdir, tasks)) else [tasks]

    def finish(self, ctx: PostContext, results: list[tuple[Task, Any]]) -> None:
        """Record the band's failed rungs for the QA page (and clear a record they no longer have)."""
        from jwstgal.provenance import write_text_atomic

        record = layout.rung_failures(layout.band_dir(ctx.run.reprocess_dir, ctx.target, ctx.band))
        head = f"{ctx.target} {ctx.band.name} -> "
        mine = [f"{t.label.removeprefix(head)}: {why}" for t, res in results
                if (why := self.failed(t, res)) and t.action != "refused"]
        if mine or record.is_file():
            write_text_atomic(record, json.dumps(mine))
