"""Make PSF-matching kernels from every configured band to every kernel target.

The targets are [kernels] targets plus what the resolution ladder ([convolve] targets, through
gauss<direct_max> for wide Gaussians) and anchoring need.

Usage: python make_kernels.py [CONFIG [LOCAL]] [--band B] [--overwrite] [--dry-run]

PSFs come from stpsf (the instrument files in PSF/stpsf_data) or are Gaussians of the band FWHM
([kernels] psf_source); kernels (Aniano et al. 2011 and/or pypher) are written with their D and W-
quality metrics to <psf_dir>/kernels/<method>/<SOURCE>_to_<TARGET>.fits with a PNG diagnostic.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from jwstgal.cli._common import base_parser, parse, run_main, selected
from jwstgal.errors import ConfigError

log = logging.getLogger(__name__)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit code."""
    parser = base_parser(__doc__)
    parser.add_argument("--overwrite", action="store_true", help="remake existing kernels")
    args = parse(parser, argv)
    from jwstgal.logs import setup_logging

    setup_logging(args.log_level, args.log_file)

    def run() -> int:
        from jwstgal.config import load_config
        from jwstgal.kernel_products import make_kernel_set

        cfg = load_config(args.config, args.local, check_jwst=False)
        bands, _ = selected(args, cfg)
        pairs = cfg.science.kernel_pairs   # [kernels] targets + what the ladder and anchoring need
        if bands:
            pairs = [(b, t) for b, t in pairs if b in bands]
        if not pairs:
            msg = (f"{cfg.config_path}: no kernel to make: [kernels] targets, [convolve] targets and "
                   "[anchor] are all empty")
            raise ConfigError(msg)
        from jwstgal.kernel_products import psf_file_problems

        if problems := psf_file_problems(cfg.science.kernels, cfg.psf_dir):
            raise ConfigError(f"{cfg.config_path}: " + "; ".join(problems))
        if args.dry_run:
            import sys

            from jwstgal.kernel_products import plan_kernel_set

            plan = plan_kernel_set(cfg.science.kernels, cfg.psf_dir, pairs, args.overwrite)
            sys.stdout.write(f"dry run: {len(plan)} kernels under {cfg.psf_dir} (nothing is written)\n")
            for band, target, method, path, why in plan:
                sys.stdout.write(f"  {band:>7} -> {target:<8} {method:<7} {'make' if why else 'skip':<5}"
                                 f"{why or 'up to date'}: {path.relative_to(cfg.psf_dir)}\n")
            return 0
        failures: list[str] = []
        paths = make_kernel_set([], cfg.science.kernels, cfg.psf_dir, cfg.psf_data_dir,
                                overwrite=args.overwrite, progress=not args.no_progress, pairs=pairs,
                                failures=failures)
        log.info("%d kernels in %s", len(paths), cfg.psf_dir / "kernels")
        if cfg.reprocess_dir.is_dir():
            from jwstgal.report import write_report

            log.info("QA page updated: %s", write_report(cfg))
        if failures:
            log.error("%d requested kernels could not be made (their rungs will fail): %s",
                      len(failures), "; ".join(failures))
            return 1
        return 0

    return run_main(run)


if __name__ == "__main__":
    raise SystemExit(main())
