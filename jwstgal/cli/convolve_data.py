"""Convolve every final mosaic to each rung of the resolution ladder ([convolve] targets).

Usage: python convolve_data.py [CONFIG [LOCAL [BAND]]] [--band B] [--target T] [--overwrite] [--dry-run]

Needs the kernels from make_kernels.py. The anchored mosaic is convolved where anchor_data.py made
one (else the aligned, else stage 3's). Writes
<reprocess_dir>/<target>/<BAND>/convolved/<product>_i2d_conv_<PSF>.fits (SCI, ERR): band rungs
reprojected onto that band's grid, Gaussians wider than [convolve] direct_max on a block-averaged
grid of >= 4 pixels per FWHM (>= 3 per FWHM of the intermediate Gaussian); the PSF (BMAJ/BMIN/BPA
for Gaussians) and grid are in the header. The rungs run in parallel on the executor of local.toml.
"""

from __future__ import annotations

from collections.abc import Sequence

from jwstgal.cli._common import run_post_command


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit code."""
    return run_post_command(__doc__, ["convolve"], argv,
                            overwrite_help="redo existing products")


if __name__ == "__main__":
    raise SystemExit(main())
