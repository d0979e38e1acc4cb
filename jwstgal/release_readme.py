"""The README.md of a release: what is actually in it, then what each kind of product is."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from astropy.io import fits
from astropy.table import Table


def release_readme(release_dir: Path, rows: list[tuple]) -> str:
    """The release's README: what is actually in it (targets, bands, PSFs, offsets, versions)."""
    from jwstgal import __version__

    by_band: dict[tuple[str, str], dict[str, Any]] = {}
    versions: set[str] = set()
    for rel, target, band, kind, *_ in rows:
        if not band:
            continue
        entry = by_band.setdefault((target, band), {"rungs": [], "anchor": "", "sources": "",
                                                     "aligned": ""})
        path = release_dir / rel
        if kind == "mosaic":
            h = fits.getheader(path)
            versions.add(f"jwst {h.get('CAL_VER', '?')}, CRDS {h.get('CRDS_VER', '?')} "
                         f"context {h.get('CRDS_CTX', '?')}")
            entry["aligned"] = "yes" if h.get("ASTALIGN") else "no"
        elif kind == "anchored mosaic":
            h = fits.getheader(path)
            entry["anchor"] = (f"{h.get('ANCHOFF', float('nan')):+.4f} ± {h.get('ANCHERR', float('nan')):.4f}"
                               f" ({h.get('ANCHREF', '?')})")
        elif kind == "catalogue":
            entry["sources"] = str(len(Table.read(path, format="ascii.ecsv")))
        elif kind == "convolved":
            entry["rungs"].append(rel.rsplit("_conv_", 1)[-1].removesuffix(".fits"))
    lines = [f"# JWST imaging release {release_dir.name} (jwstgal)", "",
             f"Assembled {datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')} by jwstgal {__version__}; "
             f"reduced with {'; '.join(sorted(versions)) or 'unknown versions'}.", "",
             "| target | band | aligned | background offset [MJy/sr] (anchored to) | sources | "
             "convolved to |", "|---|---|---|---|---|---|"]
    for (target, band), e in sorted(by_band.items()):
        lines.append(f"| {target} | {band} | {e['aligned']} | {e['anchor'] or 'not anchored'} | "
                     f"{e['sources'] or '-'} | {', '.join(sorted(e['rungs'])) or '-'} |")
    return "\n".join(lines) + "\n\n" + RELEASE_README


RELEASE_README = """## Products

One folder per target. For each band:

- `<target>_<nircam|miri>_lv3_<band>_i2d.fits`: the final mosaic (astrometrically aligned where the
  table says so). Extensions: `SCI` (surface brightness, MJy/sr), `ERR` (1-sigma, MJy/sr), `WHT`
  (drizzle weight). Its FITS WCS is the aligned solution. The jwst gwcs (`ASDF` extension) is not
  released: after alignment it no longer describes the image; use the FITS WCS. The per-component
  variances (`VAR_*`) and the context image (`CON`) are dropped when the release is slimmed.
- `<...>_i2d_anchor.fits`: the same mosaic with its absolute background anchored (`ANCHOFF` added
  to `SCI`, error `ANCHERR`, anchored to `ANCHREF`); `anchor/<target>_anchor.ecsv` holds every
  band's fit (slope, intercept, errors, pixels) and `anchor/*.png` the fits.
- `<...>_coverage.fits`: number of exposures contributing to each pixel (from the context image).
- `<...>_cat.ecsv`: the stage-3 source catalogue, its sky positions recomputed from the pixel
  positions with the released mosaic's WCS (so they carry the alignment); `<...>_segm.fits`: its
  segmentation map; `<...>_i2d.png`: quicklook.
- `convolved/<...>_i2d_conv_<PSF>.fits`: the (anchored, where available) mosaic at each rung of the
  resolution ladder (`PSF` keyword; `BMAJ`/`BMIN`/`BPA` for Gaussians; grid in `JG_GRID`): band
  PSFs reprojected onto that band's grid, Gaussians wider than a few arcsec on a block-averaged
  grid of >= 4 pixels per FWHM (and >= 3 pixels per FWHM of the 2" intermediate PSF). `ERR` assumes
  independent pixels (a lower bound).
- `exposures/<BAND>/*_crf*.fits` (when configured): the calibrated exposures, with the absolute
  alignment pushed back into their WCS.
- `alignment/<...>_i2d_align_table.fits`: the stars the absolute alignment matched (corrected
  position, residual in mas, reference catalogue in `REFCAT`); `alignment/<...>_astro_cat.fits`:
  the point sources it was fitted on (the astrometric_catalog step).
- `fields/<...>_field<OOOVVV>_i2d.fits`: one mosaic per observation/visit (field), slimmed as the
  mosaic is; `background/<...>_bgr_i2d.fits`: the dedicated background field, reduced like science;
  `background/stage2/*_combinedbackground.fits`: the background stage 2 subtracted from each
  exposure, where dedicated background exposures were used.
- `qa/<BAND>/*.png`: the QA figures a reader needs: alignment residuals and the aligned mosaic,
  stage-3 astrometry, destriping and level-matching plots, the stage-2 contact sheet.

With `[release] naming = "hlsp"` every product of a band is named in MAST's high-level science
product scheme, `hlsp_<project>_jwst_<instrument>_<target>_<band>_<version>_<product>` (lower
case), e.g. `..._i2d.fits`, `..._coverage.fits`, `..._cat.ecsv`.

`run_config.json` is the resolved configuration of the run. Every FITS file records the software
versions (`JGAL_VER` and HISTORY), the configuration hash (`JGAL_CFG`) and step parameters.
`MANIFEST.ecsv` lists every file with its size and SHA-256; `sha256sum -c SHA256SUMS` verifies the
release, the manifest and this README included.
"""
