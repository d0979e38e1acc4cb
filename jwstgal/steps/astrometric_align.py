"""Step ``astrometric_align``: absolute astrometry of each mosaic, after stage 3.

The mosaic's compact sources (stage 3's catalogue, else own detections) are matched to the
``[alignment]`` catalogue (proper motions propagated to the observation epoch) or to Gaia, in
successive passes; the correction is applied to the mosaic's FITS WCS (``_i2d_align.fits``) and
pushed back to the per-exposure ``crf`` files (``_crf_tweakback.fits``). Bands in
``alignment_mapping`` borrow another band's solution (a sky-plane correction, valid at any pixel
scale); they run in a second wave, after the bands they borrow from.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from astropy.io import fits
from astropy.table import Table
from astropy.wcs import WCS
from astropy.wcs.utils import proj_plane_pixel_scales
from pydantic import Field, field_validator

from jwstgal import layout
from jwstgal.astrometry import (
    AlignResult,
    align_catalogs,
    footprint_cone,
    from_tangent_plane,
    own_star_offsets,
)
from jwstgal.astrometry_io import (
    PassSettings,
    align_pass,
    cross_correlation_result,
    image_sources,
    mosaic_epoch,
    query_gaia,
    reference_positions,
    result_from_dict,
    write_aligned_mosaic,
)
from jwstgal.bands import Band
from jwstgal.errors import StepFailedError
from jwstgal.provenance import atomic_path, hash_params, write_text_atomic
from jwstgal.settings import StepSettings, added_field, check_band
from jwstgal.steps.base import BandContext, BandTask, Stage, Step, StepPlan, alignment_catalogue, file_id
from jwstgal.wcs_corrections import tweakback

log = logging.getLogger(__name__)

NAME = "astrometric_align"


def _default_passes() -> list[PassSettings]:
    return [PassSettings(searchrad=2.0, tolerance=0.5),
            PassSettings(searchrad=0.3, tolerance=0.1, use2dhist=False)]


class AstrometricAlignSettings(StepSettings):
    """The ``[astrometric_align]`` table (step ``astrometric_align``, after stage 3)."""

    reference: Literal["table", "gaia"] = Field(
        "table", description="'table': the target's [alignment] catalogue; 'gaia': Gaia DR3 "
        "(network), proper motions propagated to the observation epoch.")
    fitgeom: Literal["shift", "rshift", "rscale"] = Field("shift", description="Fit geometry.")
    min_matches: int = Field(5, ge=3, description="Fewest matches for a pass to count.")
    passes: list[PassSettings] = Field(default_factory=_default_passes, description="Wide, then tight.")
    alignment_mapping: dict[str, str] = Field(
        default_factory=dict, description="band -> reference band whose solution it borrows.")
    mapping_mode: Literal["borrow", "cross_correlate"] = added_field(
        "borrow", "How a band of alignment_mapping gets its solution: 'borrow' its reference "
        "band's, or 'cross_correlate' its mosaic with the reference band's aligned mosaic (for "
        "bands without enough point sources; pjpipe's cross_corr).")

    @field_validator("alignment_mapping")
    @classmethod
    def _mapping(cls, mapping: dict[str, str]) -> dict[str, str]:
        out = {check_band(k): check_band(v) for k, v in mapping.items()}
        for k, v in out.items():
            if v in out:
                msg = f"alignment_mapping: {k} borrows from {v}, which itself borrows from {out[v]}"
                raise ValueError(msg)
        return out


@dataclass(frozen=True)
class AlignTask(BandTask):
    """Align one band's mosaic to ``ref_path`` (None: Gaia), or apply the solution ``borrow``.

    ``ref_path`` with ``borrow``: the catalogue the borrowed solution is checked against.
    """

    i2d: Path
    catalog: Path
    out_dir: Path
    settings: AstrometricAlignSettings
    ref_path: Path | None
    borrow: Path | None
    fwhm_pix: float
    config_hash: str
    qa_dir: Path

    def run(self) -> list[str]:
        """Write the aligned mosaic, its solution and its residual table and figures."""
        params = self.settings.model_dump(exclude={"override"})
        return align_band(self.i2d, self.catalog, [], self.out_dir, params, self.ref_path, self.borrow,
                          self.fwhm_pix, self.config_hash, self.qa_dir)


@dataclass(frozen=True)
class TweakbackTask(BandTask):
    """Push the band's solution (``solution.json`` in ``out_dir``) back to one crf file."""

    crf: Path
    out_dir: Path
    config_hash: str

    def run(self) -> list[str]:
        """Write the tweaked-back copy."""
        result = result_from_dict(json.loads((self.out_dir / "solution.json").read_text()))
        out = self.out_dir / self.crf.name.replace("_crf.fits", "_crf_tweakback.fits")
        return [str(tweakback(self.crf, out, result, self.config_hash))]


def align_band(i2d: Path, catalog: Path, crfs: list[Path], out_dir: Path, params: dict[str, Any],
               ref_path: Path | None, borrow: Path | None, fwhm_pix: float, config_hash: str,
               qa_dir: Path) -> list[str]:
    """Align one band's mosaic (or apply a borrowed solution) and tweak back ``crfs``."""
    i2d_p, out = Path(i2d), Path(out_dir)
    own: dict = {}
    method: dict = {}
    if borrow and params.get("mapping_mode") == "cross_correlate":
        lender = Path(borrow).parent.parent.name
        ref_mosaic = next(iter(sorted(Path(borrow).parent.glob("*_i2d_align.fits"))), None)
        if ref_mosaic is None:
            msg = (f"{i2d_p.name}: no aligned mosaic of {lender} to cross-correlate with in "
                   f"{Path(borrow).parent}")
            raise StepFailedError(msg)
        result, err = cross_correlation_result(i2d_p, ref_mosaic)
        method = {"method": "cross_correlation", "cross_correlated_with": lender, "shift_err_mas": err}
        log.info("%s: cross-correlated with %s: shift (%+.1f, %+.1f) mas +- (%.1f, %.1f) mas", i2d_p.name,
                 ref_mosaic.name, *(result.shift * 1000), *err)
        borrow = None
    elif borrow:
        result = result_from_dict(json.loads(Path(borrow).read_text()))
        log.info("%s: borrowing the astrometric solution of %s", i2d_p.name, borrow)
        own = check_borrowed(result, i2d_p, Path(catalog), fwhm_pix, ref_path, Path(borrow))
    else:
        ra, dec = image_sources(i2d_p, Path(catalog), fwhm_pix)
        if ref_path is None:
            h = fits.getheader(i2d_p, "SCI")            # the cone covers the mosaic, not a fixed 5'
            ra0, dec0, radius = footprint_cone(WCS(h).celestial, (int(h["NAXIS2"]), int(h["NAXIS1"])))
            ref_path = query_gaia(ra0, dec0, radius, out / "gaia.ecsv")
        ref_ra, ref_dec = reference_positions(Path(ref_path), mosaic_epoch(i2d_p))
        sci_wcs = WCS(fits.getheader(i2d_p, "SCI")).celestial
        pixscale = float(np.mean(proj_plane_pixel_scales(sci_wcs))) * 3600  # for "5pix" lengths
        passes = [align_pass(p, pixscale) for p in params["passes"]]
        result = align_catalogs(ra, dec, ref_ra, ref_dec, passes,
                                fitgeom=params["fitgeom"], min_matches=params["min_matches"])
        if result is None:
            msg = f"{i2d_p.name}: no match with the astrometric reference {ref_path}"
            raise StepFailedError(msg)
        res = {"n": result.n_matches, "rms_mas": result.rms_mas,
               "median_dra_mas": float(np.median(result.residuals[:, 0]) * 1000),
               "median_ddec_mas": float(np.median(result.residuals[:, 1]) * 1000),
               "ra": [], "dec": [], "dra": (result.residuals[:, 0] * 1000).tolist(),
               "ddec": (result.residuals[:, 1] * 1000).tolist()}
        res["ra"], res["dec"] = (x.tolist() for x in from_tangent_plane(result.positions, *result.center))
        from jwstgal.plots import quiver_png

        quiver_png(res, Path(qa_dir) / f"{NAME}.png", f"{i2d_p.name}: residuals after alignment")
        matched = Table({"ra": res["ra"], "dec": res["dec"], "dra_mas": res["dra"], "ddec_mas": res["ddec"]},
                        meta={"REFCAT": Path(ref_path).name, "FITGEOM": params["fitgeom"]})
        table_path = out / i2d_p.name.replace("_i2d.fits", "_i2d_align_table.fits")
        with atomic_path(table_path) as tmp:    # the matched stars: corrected position, residual
            matched.write(tmp, format="fits")
    solution = out / "solution.json"
    write_text_atomic(solution, json.dumps({**result.to_dict(), "borrowed_from": borrow and str(borrow),
                                            **method,
                                            **({"own_stars": own} if borrow else {})}, indent=1))
    outputs = [write_aligned_mosaic(i2d_p, out / i2d_p.name.replace("_i2d.fits", "_i2d_align.fits"),
                                    result, config_hash), solution]
    from jwstgal.plots import quicklook_png

    shift = np.hypot(*result.shift) * 1000
    quicklook_png(outputs[0], Path(qa_dir) / f"{NAME}_mosaic.png",
                  title=f"{outputs[0].name}: shifted {shift:.0f} mas"
                        + (f" (borrowed from {Path(borrow).parent.parent.name})" if borrow else ""))
    for c in map(Path, crfs):
        outputs.append(tweakback(c, out / c.name.replace("_crf.fits", "_crf_tweakback.fits"), result,
                                 config_hash))
    return [str(o) for o in outputs]


def check_borrowed(result: AlignResult, i2d: Path, catalog: Path, fwhm_pix: float, ref_path: str | None,
                   lender: Path) -> dict:
    """A borrowed solution measured on the borrower's own stars: ``{"n", "offset_mas"}``.

    The reference is the target's catalogue, else the Gaia stars the lender was aligned to; with
    neither, or when the band's sources cannot be had, the reason is kept instead (``"error"``).
    """
    ref = Path(ref_path) if ref_path else lender.parent / "gaia.ecsv"
    if not ref.is_file():
        return {"error": "no reference catalogue to check it against"}
    try:
        ra, dec = image_sources(i2d, catalog, fwhm_pix)
        ref_ra, ref_dec = reference_positions(ref, mosaic_epoch(i2d))
    except (OSError, ValueError, KeyError) as err:
        return {"error": f"not checked: {err}"}
    n, offset = own_star_offsets(result, ra, dec, ref_ra, ref_dec)
    log.info("%s: borrowed solution checked on %d own stars: median offset %.1f mas", i2d.name, n,
             offset)
    return {"n": n, "offset_mas": offset if np.isfinite(offset) else None}


class AstrometricAlign(Step):
    """Absolute astrometry."""

    name = NAME
    summary = ("mosaic matched to the `[alignment]` catalogue or Gaia, WCS corrected, `crf` files "
               "tweaked back; weak bands borrow a solution, `[astrometric_align]`")
    settings = AstrometricAlignSettings
    stpipe = True

    def plan(self, ctx: BandContext, upstream: str, inputs: list[Path]) -> StepPlan:
        """The alignment, then one tweakback task per crf file.

        The alignment runs a stage later when it borrows another band's solution.
        """
        i2d = ctx.stage3_mosaic("astrometric alignment")
        run = ctx.run
        params = self.resolved(ctx)
        borrow_band = params["alignment_mapping"].get(ctx.band.name)
        borrow = (ctx.band_dir.parent / borrow_band / layout.step_folder(NAME) / "solution.json"
                  if borrow_band else None)
        ref_path = check_ref = None
        if params["reference"] == "table" and borrow and ctx.target in run.science.alignment:
            check_ref = alignment_catalogue(run, ctx.target)  # a check only: not in the key
        elif params["reference"] == "table" and not borrow:
            if ctx.target not in run.science.alignment:
                msg = (f"{run.config_path}: [astrometric_align] reference = 'table' needs an "
                       f"[alignment] catalogue for {ctx.target}")
                raise StepFailedError(msg)
            ref_path = alignment_catalogue(run, ctx.target)
        crfs = sorted(i2d.parent.glob("*_crf.fits"))
        parts = [NAME, self.key_params(params), upstream, ref_path and str(ref_path), borrow and str(borrow),
                 file_id(ref_path) if ref_path else None]
        catalog = layout.stage3_catalog(ctx.band_dir, ctx.target, ctx.band)
        if "astrometric_catalog" in ctx.steps:      # its own point sources (upstream is its key)
            catalog = layout.astro_catalog(ctx.band_dir, ctx.target, ctx.band)
            parts.append(catalog.name)
        key = hash_params(parts)
        if (begun := ctx.begin(NAME, key, params)).done:
            return begun.done
        out_dir = begun.out_dir
        outputs = [layout.aligned_mosaic(ctx.band_dir, ctx.target, ctx.band), out_dir / "solution.json"]
        outputs += [out_dir / c.name.replace("_crf.fits", "_crf_tweakback.fits") for c in crfs]
        if not borrow:
            outputs.append(layout.align_table(ctx.band_dir, ctx.target, ctx.band))
        plan = StepPlan(NAME, key, params, outputs, [AlignTask(
            i2d, catalog, out_dir, AstrometricAlignSettings(**params), ref_path or check_ref, borrow,
            ctx.band.fwhm_pix, run.config_hash, ctx.qa_dir)])
        tweakback = Stage([TweakbackTask(c, out_dir, run.config_hash) for c in crfs])
        # a band that borrows a solution waits a stage for the band it borrows from
        plan.stages = [*([Stage()] if borrow else []), plan.main, tweakback]
        return plan

    def qa_summary(self, band_dir: Path, target: str, band: Band) -> dict[str, str]:
        """Shift applied, residual rms and matches of the absolute alignment."""
        path = band_dir / NAME / "solution.json"
        if not path.is_file():
            return {}
        sol = json.loads(path.read_text())
        shift = np.hypot(*sol["shift_arcsec"]) * 1000
        how = " (borrowed)" if sol.get("borrowed_from") else ""
        if sol.get("cross_correlated_with"):
            how = f" (cross-correlated with {sol['cross_correlated_with']}; rms = its 1-sigma error)"
        if (own := sol.get("own_stars") or {}).get("offset_mas") is not None:
            how = f" (borrowed; own {own['n']} stars off by {own['offset_mas']:.1f} mas)"
        return {"alignment: shift [mas] / rms [mas] / matches": f"{shift:.1f} / {sol['rms_mas']:.1f} / "
                                                                 f"{sol['n_matches']}{how}"}

    def figures(self, band_dir: Path, target: str, band: Band) -> list[tuple[Path, str]]:
        """The aligned mosaic, and the residuals against the reference (drawn by the task)."""
        return [(layout.qa_dir(band_dir) / f"{NAME}_mosaic.png", "aligned mosaic"),
                (layout.qa_dir(band_dir) / f"{NAME}.png", "residuals after absolute alignment")]
