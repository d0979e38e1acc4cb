"""Which stpsf product describes a mosaic's PSF: OVERDIST or OVERSAMP (issue #16, item 8).

For each band, both products of one stpsf calculation are measured (FWHM of the circularised
profile, encircled energy within 0.5" and 1"), next to the band FWHM of the STScI PSF tables that
the suite (and the PHANGS scripts) use. OVERDIST includes the geometric distortion and, in stpsf
>= 1.1, the detector's charge diffusion and inter-pixel capacitance: effects that are in every
detector pixel a mosaic is drizzled from. OVERSAMP is the optics alone.

Usage: .venv/bin/python bench/bench_psf_product.py [--nlambda 5] [--bands F200W F300M F770W F2100W]
"""

from __future__ import annotations

import argparse
import os

import numpy as np


def measure(data: np.ndarray, pix: float) -> tuple[float, float, float]:
    """FWHM (arcsec) and encircled energy within 0.5" and 1" of a centred PSF."""
    from jwstgal.kernels import fwhm_of, resample_psf

    n = data.shape[0] - 3 + data.shape[0] % 2
    psf = resample_psf(data, pix, pix, n)
    y, x = np.indices(psf.shape) - (n - 1) / 2
    r = np.hypot(x, y) * pix
    return fwhm_of(psf, pix), psf[r <= 0.5].sum() / psf.sum(), psf[r <= 1.0].sum() / psf.sum()


def main() -> None:
    """Compute both products per band and print the comparison."""
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--nlambda", type=int, default=5)
    p.add_argument("--bands", nargs="+", default=["F200W", "F300M", "F770W", "F2100W"])
    args = p.parse_args()
    from jwstgal.bands import get_band
    from jwstgal.psfs import DEFAULT_DATA_DIR

    os.environ["STPSF_PATH"] = str(DEFAULT_DATA_DIR)
    import stpsf

    print(f"stpsf {stpsf.__version__}, nlambda {args.nlambda}, no OTE OPD, 10\" field")
    print(f"{'band':>7} {'table':>7} {'OVERSAMP':>9} {'OVERDIST':>9} {'diff':>6}  "
          f"{'EE0.5 S/D':>13} {'EE1.0 S/D':>13}")
    for name in args.bands:
        b = get_band(name)
        inst = stpsf.MIRI() if b.instrument == "miri" else stpsf.NIRCam()
        inst.filter = b.filter
        inst.pupilopd = None
        h = inst.calc_psf(oversample=4, fov_arcsec=10, nlambda=args.nlambda)
        s = measure(np.asarray(h["OVERSAMP"].data, float), h["OVERSAMP"].header["PIXELSCL"])
        d = measure(np.asarray(h["OVERDIST"].data, float), h["OVERDIST"].header["PIXELSCL"])
        print(f"{name:>7} {b.fwhm_arcsec:7.4f} {s[0]:9.4f} {d[0]:9.4f} {100 * (d[0] / s[0] - 1):5.1f}%  "
              f"{s[1]:6.3f}/{d[1]:6.3f} {s[2]:6.3f}/{d[2]:6.3f}")


if __name__ == "__main__":
    main()
