"""Synthetic JWST reference files and a local CRDS cache that serves them.

The files are real stdatamodels reference models whose contents match what the simulator injects
(bias, flat, dark, gain, read noise, bad pixels, photometric conversion, distortion), and the cache is
laid out as CRDS expects (``config/``, ``mappings/``, ``references/``), so the *unmodified* jwst
Detector1, Image2 and Image3 pipelines run offline with only ``CRDS_PATH`` set.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import shutil
from collections.abc import Iterable
from pathlib import Path

import numpy as np
from astropy.table import Table

from jwstgal.bands import Band, get_band
from jwstgal.provenance import hash_params, write_text_atomic
from jwstgal.simulate.instrument import DetectorMaps, DetectorSetup, distortion_model

log = logging.getLogger(__name__)

#: Every reference type a Detector1/Image2/Image3 pipeline may ask for; unsupplied ones are "N/A".
ALL_REFTYPES = (
    "abvegaoffset", "apcorr", "area", "bkg", "camera", "chromcorr", "collimator", "dark", "dflat",
    "disperser", "distortion", "drizpars", "emicorr", "fflat", "filteroffset", "flat", "fore", "fpa",
    "gain", "ifufore", "ifupost", "ifuslicer", "ipc", "linearity", "mask", "msa", "ote", "pastasoss",
    "persat", "photom", "pictureframe", "psfmask", "readnoise", "refpix", "regions", "reset", "rscd",
    "saturation", "sflat", "sirskernel", "specwcs", "superbias", "trapdensity", "trappars",
    "wavelengthrange",
)  # fmt: skip

USEAFTER = "2022-01-01T00:00:00"
CONTEXT = "jwst_0001.pmap"


def photmjsr(band: Band) -> float:
    """Synthetic photometric conversion (MJy/sr per DN/s) of a band."""
    if band.instrument == "miri":
        return 0.1
    return 0.4 if band.band_type == "nircam_short" else 0.25


def _common_meta(model, setup: DetectorSetup, reftype: str) -> None:
    m = model.meta
    m.reftype = reftype.upper()
    m.description = f"jwstgal synthetic {reftype} for simulated {setup.detector}"
    m.author = "jwstgal.simulate"
    m.pedigree = "DUMMY"
    m.useafter = USEAFTER
    m.telescope = "JWST"
    m.instrument.name = setup.instrument
    m.instrument.detector = setup.detector
    with contextlib.suppress(AttributeError):  # some schemas (IPC) have no exposure block
        m.exposure.type = "MIR_IMAGE" if setup.instrument == "MIRI" else "NRC_IMAGE"
    try:
        m.subarray.name = setup.subarray_name
        m.subarray.xstart = 1
        m.subarray.ystart = 1
        m.subarray.xsize = setup.size
        m.subarray.ysize = setup.size
    except AttributeError:
        pass


def _ee_table(bands: list[Band], setup: DetectorSetup) -> Table:
    """Aperture corrections for a Gaussian PSF of each band's FWHM."""
    rows = []
    for b in bands:
        sigma = b.fwhm_pix / 2.3548
        for ee in (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9):
            radius = sigma * math.sqrt(-2 * math.log(1 - ee))
            rows.append((b.filter, b.pupil or setup.subarray_name, ee, radius, 1.0 / ee,
                         6 * b.fwhm_pix, 9 * b.fwhm_pix))
    return Table(rows=rows, names=("filter", "pupil", "eefraction", "radius", "apcorr", "skyin",
                                   "skyout"))


def make_reference_models(setup: DetectorSetup, maps: DetectorMaps, bands: list[Band]) -> dict:
    """Build every synthetic reference model for one detector.

    Parameters
    ----------
    setup : DetectorSetup
        Detector geometry and readout.
    maps : DetectorMaps
        Per-pixel maps shared with the ramp simulator.
    bands : list of Band
        Bands observed with this detector (rows of the photom and apcorr tables).

    Returns
    -------
    dict
        reftype -> (model, file extension).
    """
    from stdatamodels.jwst import datamodels as dm

    shape = setup.shape
    nir = setup.instrument == "NIRCAM"
    zeros_dq = np.zeros(shape, np.uint32)
    out: dict[str, tuple] = {}
    out["mask"] = dm.MaskModel(dq=maps.mask_dq())
    out["saturation"] = dm.SaturationModel(data=np.full(shape, 60000.0, np.float32), dq=zeros_dq)
    out["linearity"] = dm.LinearityModel(
        coeffs=np.stack([np.zeros(shape), np.ones(shape), *(np.zeros(shape),) * 3]).astype(np.float32),
        dq=zeros_dq)
    out["gain"] = dm.GainModel(data=np.full(shape, setup.gain, np.float32))
    out["readnoise"] = dm.ReadnoiseModel(data=np.full(shape, setup.read_noise, np.float32))
    times = (np.arange(setup.ngroups) + 1) * setup.frame_time
    dark = (maps.dark_rate * times[:, None, None] * np.ones(shape)).astype(np.float32)
    if nir:
        out["superbias"] = dm.SuperBiasModel(data=maps.bias, err=np.full(shape, 5.0, np.float32),
                                            dq=zeros_dq)
        out["dark"] = dm.DarkModel(data=dark, dq=zeros_dq, err=np.zeros_like(dark))
    else:
        out["dark"] = dm.DarkMIRIModel(data=dark[None], dq=zeros_dq[None, None],
                                       err=np.zeros_like(dark[None]))
    for key in ("dark",):
        out[key].meta.exposure.nframes = 1
        out[key].meta.exposure.groupgap = 0
        out[key].meta.exposure.ngroups = setup.ngroups
        out[key].meta.exposure.readpatt = setup.readpatt
    flat = dm.FlatModel(data=maps.flat, dq=zeros_dq, err=np.full(shape, 0.001, np.float32))
    flat.meta.instrument.filter = "N/A"
    out["flat"] = flat
    if nir:
        photom = dm.NrcImgPhotomModel()
        photom.phot_table = Table(
            {"filter": [b.filter for b in bands], "pupil": [b.pupil for b in bands],
             "order": [0] * len(bands), "photmjsr": [photmjsr(b) for b in bands],
             "uncertainty": [0.01 * photmjsr(b) for b in bands]}).as_array()
        apcorr = dm.NrcImgApcorrModel()
        apcorr.apcorr_table = _ee_table(bands, setup).as_array()
    else:
        photom = dm.MirImgPhotomModel()
        photom.phot_table = Table(
            {"filter": [b.filter for b in bands], "subarray": [setup.subarray_name] * len(bands),
             "photmjsr": [photmjsr(b) for b in bands],
             "uncertainty": [0.01 * photmjsr(b) for b in bands]}).as_array()
        apcorr = dm.MirImgApcorrModel()
        t = _ee_table(bands, setup)
        t.rename_column("pupil", "subarray")
        apcorr.apcorr_table = t.as_array()
    out["photom"] = photom
    out["apcorr"] = apcorr
    pixar_sr = (setup.pixel_scale / 206264.806) ** 2
    area = dm.PixelAreaModel(data=np.ones(shape, np.float32))
    area.meta.photometry.pixelarea_steradians = pixar_sr
    area.meta.photometry.pixelarea_arcsecsq = setup.pixel_scale**2
    out["area"] = area
    abv = dm.ABVegaOffsetModel()
    abv.abvega_offset = Table({"filter": [b.filter for b in bands],
                               ("pupil" if nir else "detector"): [b.pupil if nir else setup.detector
                                                                   for b in bands],
                               "abvega_offset": [1.5] * len(bands)})
    out["abvegaoffset"] = abv
    dist = dm.DistortionModel(model=distortion_model(setup), input_units="pix",
                              output_units="arcsec")
    if nir:
        dist.meta.instrument.module = setup.detector[3]
        dist.meta.instrument.channel = "LONG" if setup.detector.endswith("LONG") else "SHORT"
        dist.meta.instrument.p_pupil = "ANY|"
    out["distortion"] = dist
    for reftype, model in out.items():
        _common_meta(model, setup, reftype)
    ext = {"distortion": "asdf", "abvegaoffset": "asdf"}
    return {k: (v, ext.get(k, "fits")) for k, v in out.items()}


def _mapping_text(header: dict, selector: str) -> str:
    head = ",\n".join(f"    {k!r} : {v!r}" for k, v in sorted(header.items()))
    return f"header = {{\n{head},\n}}\n\nselector = {selector}\n"


def build_crds_cache(
    crds_dir: str | Path,
    detectors: Iterable[tuple[DetectorSetup, list[str]]],
    seed: int,
) -> Path:
    """Write synthetic references and CRDS rules files under ``crds_dir``.

    Parameters
    ----------
    crds_dir : path-like
        Cache root, to be used as ``CRDS_PATH``.
    detectors : iterable of (DetectorSetup, list of band names)
        Each simulated detector and the bands it observes.
    seed : int
        Seed of the per-pixel maps (the simulator's seed).

    Returns
    -------
    pathlib.Path
        The cache root. Rebuilding with the same inputs is skipped (the cache records a hash).
    """
    from crds.refactoring.checksum import update_checksum

    crds_dir = Path(crds_dir)
    detectors = list(detectors)
    key = hash_params({"seed": seed, "detectors": [(repr(s), b) for s, b in detectors]})
    stamp = crds_dir / "jwstgal_synthetic.json"
    if stamp.is_file() and json.loads(stamp.read_text()).get("hash") == key:
        log.info("Synthetic CRDS cache up to date: %s", crds_dir)
        return crds_dir
    for sub in ("mappings", "references", "config"):
        shutil.rmtree(crds_dir / sub, ignore_errors=True)
    refdir = crds_dir / "references" / "jwst"
    mapdir = crds_dir / "mappings" / "jwst"
    cfgdir = crds_dir / "config" / "jwst"
    for d in (refdir, mapdir, cfgdir):
        d.mkdir(parents=True, exist_ok=True)
    server_config = {"observatory": "jwst", "operational_context": CONTEXT, "edit_context": CONTEXT,
                     "force_remote_mode": False, "bad_files_list": [], "bad_files": "",
                     "last_synced": "never (jwstgal synthetic cache)"}
    (cfgdir / "server_config").write_text(repr(server_config))
    (cfgdir / "ref_cache_subdir_mode").write_text("flat")

    # instrument -> reftype -> {detector: filename}
    files: dict[str, dict[str, dict[str, str]]] = {}
    for setup, band_names in detectors:
        maps = DetectorMaps(setup, seed)
        bands = [get_band(b) for b in band_names]
        instr = setup.instrument.lower()
        for reftype, (model, ext) in make_reference_models(setup, maps, bands).items():
            name = f"jwst_{instr}_{reftype}_{setup.detector.lower()}_0001.{ext}"
            model.save(refdir / name)
            files.setdefault(instr, {}).setdefault(reftype, {})[setup.detector] = name

    imaps = {}
    for instr, by_type in files.items():
        selector_lines = []
        for reftype in ALL_REFTYPES:
            if reftype in by_type:
                rmap = f"jwst_{instr}_{reftype}_0001.rmap"
                matches = ",\n".join(
                    f"    ({det!r},) : UseAfter({{\n        '2022-01-01 00:00:00' : {fname!r},\n    }})"
                    for det, fname in sorted(by_type[reftype].items()))
                header = {"derived_from": "jwstgal synthetic", "filekind": reftype.upper(),
                          "instrument": instr.upper(), "mapping": "REFERENCE", "name": rmap,
                          "observatory": "JWST", "sha1sum": "0",
                          "parkey": (("META.INSTRUMENT.DETECTOR",),
                                     ("META.OBSERVATION.DATE", "META.OBSERVATION.TIME"))}
                (mapdir / rmap).write_text(_mapping_text(header, f"Match({{\n{matches},\n}})"))
                update_checksum(str(mapdir / rmap))
                selector_lines.append(f"    {reftype!r} : {rmap!r}")
            else:
                selector_lines.append(f"    {reftype!r} : 'N/A'")
        imap = f"jwst_{instr}_0001.imap"
        header = {"derived_from": "jwstgal synthetic", "instrument": instr.upper(),
                  "mapping": "INSTRUMENT", "name": imap, "observatory": "JWST",
                  "parkey": ("REFTYPE",), "sha1sum": "0"}
        (mapdir / imap).write_text(_mapping_text(header, "{\n" + ",\n".join(selector_lines) + ",\n}"))
        update_checksum(str(mapdir / imap))
        imaps[instr.upper()] = imap
    header = {"derived_from": "jwstgal synthetic", "mapping": "PIPELINE", "name": CONTEXT,
              "observatory": "JWST", "parkey": ("META.INSTRUMENT.NAME",), "sha1sum": "0"}
    body = "{\n" + ",\n".join(f"    {k!r} : {v!r}" for k, v in sorted(imaps.items())) + ",\n}"
    (mapdir / CONTEXT).write_text(_mapping_text(header, body))
    update_checksum(str(mapdir / CONTEXT))
    write_text_atomic(stamp, json.dumps({"hash": key}))
    log.info("Built synthetic CRDS cache in %s", crds_dir)
    return crds_dir
