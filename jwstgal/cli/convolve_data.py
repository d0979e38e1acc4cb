"""Convolve every stage-3 mosaic to the [convolve] target resolution (and grid).

Usage: python convolve_data.py [CONFIG [LOCAL [BAND]]] [--band B] [--target T] [--overwrite]

Needs the kernels from make_kernels.py. Writes
<reprocess_dir>/<target>/<BAND>/convolved/<product>_i2d_conv_<target psf>.fits (SCI, ERR).
"""

from __future__ import annotations

import logging
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

        from jwstgal.bands import get_band
        from jwstgal.config import load_config
        from jwstgal.convolve import convolve_mosaic
        from jwstgal.layout import convolved_mosaic, final_mosaic, kernel_path
        from jwstgal.provenance import hash_params

        cfg = load_config(args.config, args.local, check_jwst=False)
        bands, targets = selected(args, cfg)
        conv = cfg.science.convolve
        if not conv.target:
            msg = f"{cfg.config_path}: [convolve] target is not set: nothing to convolve to"
            raise ConfigError(msg)
        done = refused = 0
        for target in targets or cfg.science.targets:
            ref = None
            if conv.reproject and conv.target in cfg.science.bands:
                tb = get_band(conv.target)
                ref = final_mosaic(cfg.reprocess_dir / target / tb.name, target, tb)
                if not ref.is_file():
                    msg = f"{target}: reprojection grid {ref} does not exist (run stage 3 of {tb.name})"
                    raise InputNotFoundError(msg)
            for name in bands or cfg.science.bands:
                band = get_band(name)
                i2d = final_mosaic(cfg.reprocess_dir / target / band.name, target, band)
                if not i2d.is_file():
                    log.warning("%s %s: no mosaic %s, skipping", target, band.name, i2d)
                    continue
                kfile = None
                if band.name != conv.target:
                    kfile = kernel_path(cfg.psf_dir, conv.method, band.name, conv.target)
                    if not kfile.is_file():
                        msg = f"{target} {band.name}: kernel {kfile} not found; run make_kernels.py first"
                        raise InputNotFoundError(msg)
                    khdr = fits.getheader(kfile)
                    if khdr.get("SAFETY") == "unsafe" and not conv.allow_unsafe:
                        log.error("%s %s: kernel %s is unsafe (W- = %.3g > 0.5: it amplifies noise); "
                                  "not applied (set [convolve] allow_unsafe = true to apply it anyway)",
                                  target, band.name, kfile, khdr.get("KERN_WM", float("nan")))
                        refused += 1
                        continue
                st = i2d.stat()
                key = hash_params([i2d.name, st.st_size, int(st.st_mtime),
                                   fits.getheader(kfile).get("JG_KERN") if kfile else None,
                                   conv.model_dump(exclude={"allow_unsafe"}), str(ref) if ref else None])
                out = convolved_mosaic(cfg.reprocess_dir / target / band.name, target, band, conv.target)
                if not args.overwrite and out.is_file() and fits.getheader(out).get("JG_CKEY") == key:
                    log.info("%s %s: convolved product up to date", target, band.name)
                    continue
                convolve_mosaic(i2d, kfile, out, target=conv.target, block=conv.block_size,
                                reproject_onto=ref, config_hash=cfg.config_hash, key=key)
                log.info("%s %s -> %s: %s", target, band.name, conv.target, out)
                done += 1
        log.info("%d products convolved", done)
        return 1 if refused else 0

    return run_main(run)
