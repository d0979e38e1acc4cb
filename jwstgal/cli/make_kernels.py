"""Make PSF-matching kernels from every configured band to every kernel target.

The targets are [kernels] targets plus what the resolution ladder ([convolve] targets, through
gauss<direct_max> for wide Gaussians) and anchoring need.

Usage: python make_kernels.py [CONFIG [LOCAL]] [--band B] [--overwrite] [--dry-run]

PSFs come from stpsf (the instrument files in PSF/stpsf_data) or are Gaussians of the band FWHM
([kernels] psf_source); kernels (Aniano et al. 2011 and/or pypher) are written with their D and W-
quality metrics to <psf_dir>/kernels/<method>/<SOURCE>_to_<TARGET>.fits with a PNG diagnostic.
The PSFs, then the kernels, are made in parallel on the executor of local.toml.
"""

from __future__ import annotations

from collections.abc import Sequence

from jwstgal.cli._common import run_post_command


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit code."""
    return run_post_command(__doc__, ["kernels"], argv, overwrite_help="remake existing kernels")


if __name__ == "__main__":
    raise SystemExit(main())
