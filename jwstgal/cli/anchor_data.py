"""Anchor the absolute background of every band to external maps (Spitzer, WISE) and to each other.

Usage: python anchor_data.py [CONFIG [LOCAL]] [--target T] [--overwrite] [--dry-run]

Run after make_kernels.py (the fits go through the resolution ladder's kernels) and before
convolve_data.py (which then convolves the anchored mosaics). Needs [anchor] in the config and
[local] anchor_ref_dir holding <target>_<map>.fits. Writes <BAND>/anchor/<product>_i2d_anchor.fits,
<target>/anchor/<target>_anchor.ecsv and one scatter plot per fit. A band that cannot be anchored
(no external map, no mosaic) is reported and left as it is; the exit code is 1 if any was. The
instruments of every target are fitted in parallel on the executor of local.toml.
"""

from __future__ import annotations

from collections.abc import Sequence

from jwstgal.cli._common import run_post_command


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit code."""
    return run_post_command(__doc__, ["anchor"], argv, overwrite_help="refit even if nothing changed")


if __name__ == "__main__":
    raise SystemExit(main())
