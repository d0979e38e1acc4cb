"""Generate the JWST PSFs and PSF-matching kernels of the configured bands (into this folder).

Usage: python PSF/generate_JWST_PSF_and_kernels.py [config/config.toml [config/local.toml]]
Same as make_kernels.py; kept under its PHANGS name.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from jwstgal.cli.make_kernels import main  # noqa: E402

if __name__ == "__main__":
    raise SystemExit(main())
