"""Check the resolution ladder on the stars: each rung product's stars against the rung's PSF.

For every convolved product of a band, the catalogue stars (the target's astrometric reference,
``[alignment]``) that are isolated, bright and fully covered are fitted
(:func:`jwstgal.star_widths.star_fwhms`), and so is the rung's PSF drawn on the product's pixels
(a band's cached PSF, ``<psf_dir>/psfs/<BAND>.fits``, or the analytic target). The median ratio of
their FWHMs is recorded per rung in ``qa/ladder_widths.json`` with the products' keys, so a rung is
measured again only when its product changes. A rung whose stars are all blended (wide Gaussians
in a crowded field) is recorded as not measured, with why.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
from astropy.io import fits
from astropy.table import Table
from astropy.wcs import WCS

from jwstgal import layout
from jwstgal.convolve import image_pixel_scale
from jwstgal.kernels import resample_psf
from jwstgal.provenance import write_text_atomic
from jwstgal.psfs import analytic_psf, is_analytic, read_psf
from jwstgal.star_widths import WidthMeasure, expected_fwhm, star_fwhms

log = logging.getLogger(__name__)

#: Oversampling of the rung PSF drawn on the product's pixels.
OVERSAMPLE = 4
#: Fewest stars for a rung's ratio to be judged.
MIN_STARS = 3


def rung_psf(rung: str, pixscale: float, psf_dir: Path) -> np.ndarray | None:
    """The rung's PSF sampled at ``pixscale / OVERSAMPLE``, centred; None if its PSF is not cached."""
    fine = pixscale / OVERSAMPLE
    if is_analytic(rung):
        return np.asarray(analytic_psf(rung, fine).data, float)
    path = layout.psf_path(psf_dir, rung)
    if not path.is_file():
        return None
    psf = read_psf(path)
    size = int(np.ceil(psf.data.shape[0] * psf.pixscale / fine)) | 1
    return resample_psf(psf.data, psf.pixscale, fine, size)


def catalogue_radec(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """RA and Dec (deg) of a reference catalogue (columns ra/dec in any case)."""
    tab = Table.read(path)
    cols = {c.lower(): c for c in tab.colnames}
    if "ra" not in cols or "dec" not in cols:
        msg = f"{path}: no ra/dec columns (has {', '.join(tab.colnames)})"
        raise ValueError(msg)
    return np.asarray(tab[cols["ra"]], float), np.asarray(tab[cols["dec"]], float)


def measure_rung(product: Path, rung: str, ra: np.ndarray, dec: np.ndarray, psf_dir: Path) -> dict[str, Any]:
    """The stars of one rung product against the rung's PSF (a JSON-ready record)."""
    with fits.open(product) as h:
        sci = np.asarray(h["SCI"].data, float)
        wcs = WCS(h["SCI"].header).celestial
    pix = image_pixel_scale(wcs)
    over = rung_psf(rung, pix, psf_dir)
    if over is None:
        return {"n": 0, "note": f"no PSF {layout.psf_path(psf_dir, rung)} to compare with"}
    guess = 2 * np.sqrt(np.count_nonzero(over >= 0.5 * over.max()) / np.pi) / OVERSAMPLE
    x, y = wcs.world_to_pixel_values(ra, dec)
    m = WidthMeasure(star_fwhms(sci, x, y, guess), expected_fwhm(over, OVERSAMPLE, guess))
    out: dict[str, Any] = {"n": m.n, "expected_fwhm_arcsec": m.expected * pix}
    if m.n:
        out |= {"ratio": m.ratio, "ratio_err": m.ratio_err if np.isfinite(m.ratio_err) else None,
                "measured_fwhm_arcsec": float(np.median(m.fwhm)) * pix}
    else:
        out["note"] = "no isolated, bright, fully covered catalogue star"
    return out


def measure_ladder(record: Path, products: list[tuple[str, Path, str]], catalogue: Path | None,
                   psf_dir: Path) -> dict[str, Any]:
    """Measure a band's rung products (``(rung, path, key)``) and write ``record``.

    Rungs whose product's key is the one recorded are kept as they are.
    """
    old = json.loads(record.read_text()) if record.is_file() else {}
    keys, rungs = old.get("keys", {}), old.get("rungs", {})
    if catalogue is not None and not catalogue.is_file():
        catalogue = None
    radec = catalogue_radec(catalogue) if catalogue is not None else None
    new: dict[str, Any] = {"catalogue": str(catalogue) if catalogue else "", "keys": {}, "rungs": {}}
    for rung, path, key in products:
        if keys.get(rung) == key and rung in rungs and old.get("catalogue") == new["catalogue"]:
            new["rungs"][rung] = rungs[rung]
        elif radec is None:
            new["rungs"][rung] = {"n": 0, "note": "no star catalogue ([alignment] of the target)"}
        else:
            new["rungs"][rung] = measure_rung(path, rung, *radec, psf_dir)
            r = new["rungs"][rung]
            log.info("%s: %d stars, FWHM %s of the target's", path.name, r["n"],
                     f"{r['ratio']:.4f}" if r["n"] else "n/a")
        new["keys"][rung] = key
    write_text_atomic(record, json.dumps(new, indent=1))
    return new
