"""Convolve every final mosaic to each rung of the resolution ladder ([convolve] targets).

Usage: python convolve_data.py [CONFIG [LOCAL [BAND]]] [--band B] [--target T] [--overwrite] [--dry-run]

Needs the kernels from make_kernels.py. The anchored mosaic is convolved where anchor_data.py made
one (else the aligned, else stage 3's). Writes
<reprocess_dir>/<target>/<BAND>/convolved/<product>_i2d_conv_<PSF>.fits (SCI, ERR): band rungs
reprojected onto that band's grid, Gaussians wider than [convolve] direct_max on a block-averaged
grid of >= 4 pixels per FWHM (>= 3 per FWHM of the intermediate Gaussian); the PSF (BMAJ/BMIN/BPA
for Gaussians) and grid are in the header.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Sequence

from jwstgal.cli._common import base_parser, parse, run_main, selected
from jwstgal.errors import ConfigError, InputNotFoundError

log = logging.getLogger(__name__)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit code."""
    parser = base_parser(__doc__)
    parser.add_argument("--overwrite", action="store_true", help="redo existing products")
    args = parse(parser, argv)
    from jwstgal.logs import setup_logging

    setup_logging(args.log_level, args.log_file)

    def run() -> int:
        from astropy.io import fits
        from astropy.wcs import WCS

        from jwstgal import layout
        from jwstgal.bands import get_band
        from jwstgal.config import load_config
        from jwstgal.convolve import image_pixel_scale
        from jwstgal.convolve_products import (
            kernel_is_refused,
            product_current,
            product_key,
            read_mosaic,
            to_rung,
            write_convolved,
        )
        from jwstgal.ladder import plan_rung
        from jwstgal.provenance import write_text_atomic
        from jwstgal.psfs import psf_file_problem
        from jwstgal.tiled_io import remove_stale_scratch

        cfg = load_config(args.config, args.local, check_jwst=False)
        bands, targets = selected(args, cfg)
        conv = cfg.science.convolve
        if not conv.rungs:
            msg = f"{cfg.config_path}: [convolve] targets is empty: nothing to convolve to"
            raise ConfigError(msg)
        settings = conv.model_dump(exclude={"allow_unsafe", "targets", "target"})

        def say(line: str) -> None:   # the plan of a dry run
            if args.dry_run:
                sys.stdout.write(f"  {line}\n")

        if args.dry_run:
            sys.stdout.write(f"dry run: convolution under {cfg.reprocess_dir} (nothing is written)\n")
        done = refused = 0
        failed: list[str] = []

        def fail(what: str, why: str) -> None:   # that rung only: the others go on
            if not args.dry_run:
                log.error("%s: %s", what, why)
            say(f"{what}: fails: {why}")
            failed.append(f"{what}: {why}")

        for target in targets or cfg.science.targets:
            for name in bands or cfg.science.bands:
                band = get_band(name)
                bdir = layout.band_dir(cfg.reprocess_dir, target, band)
                i2d = layout.published_mosaic(bdir, target, band)
                if not i2d.is_file():
                    log.warning("%s %s: no mosaic %s, skipping", target, band.name, i2d)
                    say(f"{target} {band.name}: no mosaic yet ({i2d.name})")
                    continue
                mosaic = None           # read once, when a rung needs computing
                if not args.dry_run:    # what a killed run left behind
                    for d in remove_stale_scratch(layout.convolved_dir(bdir), ".jwstgal-conv-"):
                        log.info("%s %s: removed %s, left by a killed run", target, band.name, d)
                pix = image_pixel_scale(WCS(fits.getheader(i2d, "SCI")))
                for psf in conv.rungs:
                    what = f"{target} {band.name} -> {psf}"
                    grid = None
                    if conv.reproject and psf in cfg.science.bands and psf != band.name:
                        tb = get_band(psf)
                        grid = layout.final_mosaic(layout.band_dir(cfg.reprocess_dir, target, tb), target, tb)
                        if not grid.is_file():
                            fail(what, f"reprojection grid {grid} does not exist (run stage 3 of {psf})")
                            continue
                    rung = plan_rung(band.name, psf, pix, direct_max=conv.direct_max,
                                     reproject=conv.reproject, bands=tuple(cfg.science.bands))
                    kfile = None
                    if rung.kernel_target:
                        kfile = layout.kernel_path(cfg.psf_dir, conv.method, band.name, rung.kernel_target)
                        if not kfile.is_file():
                            fail(what, f"kernel {kfile} not found; run make_kernels.py first")
                            continue
                        if bad := psf_file_problem(kfile, kernel=True):
                            fail(what, f"kernel {kfile} is unusable ({bad}); make it again with "
                                       "make_kernels.py")
                            continue
                        if why := kernel_is_refused(kfile, conv.allow_unsafe):
                            log.error("%s %s: %s", target, band.name, why)
                            say(f"{what}: refused: {why}")
                            refused += 1
                            continue
                    key = product_key(i2d, kfile, rung, settings, grid)
                    out = layout.convolved_mosaic(bdir, target, band, psf)
                    if not args.overwrite and product_current(out, i2d, kfile, rung, settings, grid):
                        log.info("%s: convolved product up to date", what)
                        say(f"{what}: skip: up to date ({out.name})")
                        continue
                    if args.dry_run:
                        why = "--overwrite" if args.overwrite else \
                            "inputs or settings changed" if out.is_file() else "not made yet"
                        say(f"{what}: make ({why}; {rung.grid}): "
                            f"{i2d.name} -> {out.relative_to(cfg.reprocess_dir)}")
                        continue
                    mosaic = mosaic or read_mosaic(i2d, scratch=out.parent)   # scratch beside products
                    try:
                        sci, err, wcs, params = to_rung(mosaic, rung, kfile, block_size=conv.block_size,
                                                       grid=grid, sampling=conv.kernel_sampling)
                        write_convolved(out, mosaic, sci, err, wcs, rung, params,
                                        config_hash=cfg.config_hash, key=key)
                    except (InputNotFoundError, OSError, ValueError) as err:
                        fail(what, f"{type(err).__name__}: {err}")
                        continue
                    log.info("%s (%s): %s", what, rung.grid, out)
                    done += 1
                if mosaic is not None:
                    mosaic.close()              # its scratch files go
                if not args.dry_run:            # for the QA page: this band's failed rungs, now
                    record = layout.rung_failures(bdir)
                    head = f"{target} {band.name} -> "
                    mine = [f.removeprefix(head) for f in failed if f.startswith(head)]
                    if mine or record.is_file():
                        write_text_atomic(record, json.dumps(mine))
        if args.dry_run:
            return 0
        log.info("%d products convolved", done)
        from jwstgal.report import write_report

        log.info("QA page updated: %s", write_report(cfg))
        if failed:
            log.error("%d rungs failed (the others were convolved):\n  %s", len(failed), "\n  ".join(failed))
        return 1 if refused or failed else 0

    return run_main(run)


if __name__ == "__main__":
    raise SystemExit(main())
