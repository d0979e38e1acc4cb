"""Anchor the absolute background of every band to external maps (Spitzer, WISE) and to each other.

Usage: python anchor_data.py [CONFIG [LOCAL]] [--target T] [--overwrite] [--dry-run]

Run after make_kernels.py (the fits go through the resolution ladder's kernels) and before
convolve_data.py (which then convolves the anchored mosaics). Needs [anchor] in the config and
[local] anchor_ref_dir holding <target>_<map>.fits. Writes <BAND>/anchor/<product>_i2d_anchor.fits,
<target>/anchor/<target>_anchor.ecsv and one scatter plot per fit. A band that cannot be anchored
(no external map, no mosaic) is reported and left as it is; the exit code is 1 if any was.
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
    parser.add_argument("--overwrite", action="store_true", help="refit even if nothing changed")
    args = parse(parser, argv)
    from jwstgal.logs import setup_logging

    setup_logging(args.log_level, args.log_file)

    def run() -> int:
        from jwstgal.anchor_products import anchor_target
        from jwstgal.config import load_config

        cfg = load_config(args.config, args.local, check_jwst=False)
        _, targets = selected(args, cfg)
        if not cfg.science.anchor.reference:
            msg = (f"{cfg.config_path}: [anchor] reference is empty: no instrument to anchor "
                   "(e.g. reference = {miri = 'F770W'} with external.miri = [{band = 'irac4', "
                   "psf = 'gauss4'}])")
            raise ConfigError(msg)
        if args.dry_run:
            import sys

            from jwstgal.anchor_products import plan_anchor

            sys.stdout.write(f"dry run: anchoring under {cfg.reprocess_dir} (nothing is written)\n")
            for target in targets or cfg.science.targets:
                for inst, what, inputs in plan_anchor(cfg, target, overwrite=args.overwrite):
                    sys.stdout.write(f"  {target} {inst.upper()}: {what}\n")
                    sys.stdout.writelines(f"      in : {p.relative_to(cfg.reprocess_dir)}\n" for p in inputs)
            return 0
        from jwstgal.errors import InputNotFoundError, ReductionError

        left = 0
        for target in targets or cfg.science.targets:
            try:
                rows = anchor_target(cfg, target, overwrite=args.overwrite)
            except (ReductionError, InputNotFoundError, OSError, ValueError) as err:   # next target goes on
                log.error("%s: anchoring failed: %s", target, err)
                left += 1
                continue
            for row in rows:
                if row.status != "anchored":
                    log.warning("%s %s: %s", target, row.band, row.status)
                    left += 1
        log.info("anchoring done; %d band(s) not anchored", left)
        from jwstgal.report import write_report

        log.info("QA page updated: %s", write_report(cfg))
        return 1 if left else 0

    return run_main(run)


if __name__ == "__main__":
    raise SystemExit(main())
