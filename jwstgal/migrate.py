"""Turn a config of the original PHANGS-JWST scripts (or a pjpipe config) into this suite's config.

:func:`migrate` maps the original's ``config.toml`` (+ ``local.toml``) tables and keys onto ours and
lists every key it could not map and why; ``migrate_config.py`` writes the result and validates it.
The mapping is :data:`STEP_MAP` for step names and the ``_science`` / ``_local`` functions for keys;
the migration table of docs/migration.md is the same mapping in words. Values the original writes as pixel
lengths (``'10pix'``) become a selector table of arcsec per band type (the original's own rule:
the number times the band type's pixel scale).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from typing import Any

from jwstgal.migrate_pjpipe import from_pjpipe, is_pjpipe
from jwstgal.stages import MANAGED_PIPELINE_KEYS, MANAGED_RUN_KEYS, STAGE_PIPELINES, pipeline_class
from jwstgal.steps import REPEATABLE, order_key, repeat_of

log = logging.getLogger(__name__)

#: Original (and pjpipe) step -> this suite's step (None: no equivalent; the reason is in NO_STEP).
STEP_MAP: dict[str, str | None] = {
    "lv1": "lv1", "lv2": "lv2", "lv3": "lv3", "destripe": "destripe", "bg_sub": "bg_sub",
    "wcs_adjust": "wcs_adjust", "get_wcs_adjust": "wcs_adjust", "apply_wcs_adjust": "wcs_adjust",
    "dither_stripe_sub": "stack_destripe", "multi_tile_destripe": "stack_destripe",
    "dither_match": "level_match", "level_match": "level_match",
    "astrometric_catalog": "astrometric_catalog", "astrometric_align": "astrometric_align",
    "lyot_adjust": "lyot_adjust", "lyot_mask": "lyot_adjust", "lyot_separate": None, "psf_model": None,
    "download": None,
    "gaia_query": None, "move_raw_obs": None, "single_tile_destripe": "destripe",
    "mosaic_individual_fields": "field_mosaics", "release": None, "regress_against_previous": None,
    "anchoring": None, "psf_matching": None,
}  # fmt: skip

NO_STEP = {
    "lyot_separate": "the Lyot is not mosaicked separately; lyot_adjust flags or levels it",
    "psf_model": "PSF fitting of saturated cores is not supported",
    "download": "downloading is download_phangs_jwst.py, not a step",
    "gaia_query": "[astrometric_align] reference = 'gaia' queries Gaia itself",
    "move_raw_obs": "the raw tree is read in place (never copied)",
    "release": "the release is prepare_release.py, not a step",
    "regress_against_previous": "compare_releases.py / [release] compare_with",
    "anchoring": "anchoring is anchor_data.py ([anchor]), not a step",
    "psf_matching": "convolution is make_kernels.py + convolve_data.py ([kernels], [convolve])",
}

#: Why the original's user flats are not carried over, and how to give them here.
FLATS = ("flats are jwst's own parameter here: [lv2_parameters.flat_field] override_flat = "
         "{ <BAND> = '<flat>.fits' } (one file per band: MIRI, or a NIRCam band of one detector)")

#: The original's pixel scales for 'Npix' lengths (arcsec), per band type.
PIXEL_SCALES = {"nircam_short": 0.031, "nircam_long": 0.063, "miri": 0.11}

_PIX = re.compile(r"^\s*([0-9.]+)\s*pix\s*$")


@dataclass
class Migration:
    """The migrated configs and what could not be carried over (``(old key, why)``)."""

    science: dict[str, Any] = field(default_factory=dict)
    local: dict[str, Any] = field(default_factory=dict)
    unmapped: list[tuple[str, str]] = field(default_factory=list)

    def skip(self, key: str, why: str) -> None:
        """Record a key that was not mapped."""
        self.unmapped.append((key, why))


def _band_type(key: str) -> str | None:
    """The band type a selector stands for (``nircam`` for both NIRCam types), else None."""
    if key in PIXEL_SCALES or key in ("nircam", "miri"):
        return key
    from jwstgal.bands import get_band

    try:
        return get_band(key).band_type
    except KeyError:
        return None


def pix_to_arcsec(value: Any, within: str | None = None) -> Any:
    """A pixel length (``'10pix'``) in arcsec, by the original's rule; other values unchanged.

    Under a band-type (or band) selector the length takes that type's pixel scale; elsewhere it
    becomes a selector table, ``{nircam_short = 0.31, nircam_long = 0.63, miri = 1.1}``.
    """
    if isinstance(value, str) and (m := _PIX.match(value)):
        n = float(m.group(1))
        if within in PIXEL_SCALES:
            return round(n * PIXEL_SCALES[within], 6)
        return {k: round(n * sc, 6) for k, sc in PIXEL_SCALES.items()
                if within is None or k.startswith(within)}
    if isinstance(value, dict):
        return {k: pix_to_arcsec(v, _band_type(k) or within) for k, v in value.items()}
    return value


def _steps(m: Migration, where: str, names: list[str]) -> list[str]:
    out = []
    for name in names:
        base = name.split(".")[0]              # pjpipe: step.instrument.sci
        if base == "all":                      # overwrites: everything
            return ["all"]
        if base not in STEP_MAP and (root := re.sub(r"_\d+$", "", base)) in STEP_MAP:
            again = f"{STEP_MAP[root]}_{base[len(root) + 1:]}"
            if STEP_MAP[root] in REPEATABLE and repeat_of(again) and again not in out:
                out.append(again)
            else:
                m.skip(f"{where}: {name}", f"only {', '.join(REPEATABLE)} may run again (<step>_2 ... _9)")
            continue
        new = STEP_MAP.get(base)
        later = [n.split(".")[0] for n in names[names.index(name) + 1:]]
        if new in ("destripe", "bg_sub") and "lv2" in later:
            new = f"rate_{new}"                # before stage 2 (pjpipe's PHANGS order): on rate files
        if new is None:
            m.skip(f"{where}: {name}", NO_STEP.get(base, "no such step here"))
        elif new == "lyot_adjust" and "nircam" in where:
            m.skip(f"{where}: {name}", "MIRI only")
        elif new not in out:
            out.append(new)
    for again in [s for s in out if (rep := repeat_of(s)) and rep[0] not in out]:
        out.remove(again)
        m.skip(f"{where}: {again}", f"runs {repeat_of(again)[0]} again, which the list does not run")
    ordered = sorted(out, key=order_key)
    if ordered != out:
        m.skip(f"{where} (order)", f"steps run in the registry's order here: {', '.join(ordered)}")
    return ordered


def _stage(m: Migration, stage: str, table: dict[str, Any]) -> dict[str, Any]:
    """A lvN_parameters table with the keys jwst knows (and that the suite does not set itself)."""
    pipe = pipeline_class(stage)
    steps = pipe.step_defs
    pipe_keys = set(pipe.load_spec_file().keys()) - MANAGED_RUN_KEYS
    out: dict[str, Any] = {}
    for key, value in table.items():
        if key in steps and isinstance(value, dict):
            allowed = set(steps[key].load_spec_file().keys()) - MANAGED_PIPELINE_KEYS
            kept = {p: pix_to_arcsec(v) for p, v in value.items() if p in allowed}
            for p in value:
                if p not in allowed:
                    m.skip(f"{stage}.{key}.{p}", f"not a parameter of jwst's {steps[key].__name__} "
                           "(jwst 3.x) or set by the suite")
            if kept:
                out[key] = kept
        elif key in pipe_keys:
            out[key] = pix_to_arcsec(value)
        else:
            m.skip(f"{stage}.{key}", f"not a step or parameter of jwst's {pipe.__name__} "
                   "(or set by the suite)")
    return out


def _copy(m: Migration, src: dict[str, Any], prefix: str, keys: dict[str, str], dst: dict[str, Any],
          reasons: dict[str, str] | None = None) -> None:
    """Copy ``src[old]`` to ``dst[new]`` for ``keys`` (old -> new); others are reported unmapped."""
    for k, v in src.items():
        if k in keys:
            dst[keys[k]] = v
        else:
            m.skip(f"{prefix}.{k}", (reasons or {}).get(k, "no equivalent setting"))


def _passes(m: Migration, table: dict[str, Any]) -> dict[str, Any]:
    """``[astrometry_parameters.iterationN]`` -> ``[astrometric_align]`` passes (+ per-selector overrides)."""
    fields = ("searchrad", "separation", "tolerance", "use2dhist", "nclip", "sigma")
    iters = [table[k] for k in sorted(table) if k.startswith("iteration") and isinstance(table[k], dict)]
    if not iters:
        iters = [table]
    out: dict[str, Any] = {}
    fitgeom = {it.get("fitgeom") for it in iters} - {None}
    if fitgeom:                  # one geometry here: the most general of the passes'
        order = ["shift", "rshift", "rscale", "general"]
        out["fitgeom"] = max(fitgeom, key=lambda g: order.index(g) if g in order else -1)
    selectors = sorted({s for it in iters for v in it.values() if isinstance(v, dict) for s in v})

    def passes(sel: str | None) -> list[dict[str, Any]]:
        res = []
        for it in iters:
            p = {}
            for f in fields:
                v = it.get(f)
                if isinstance(v, dict):
                    v = v.get(sel) if sel in v else next(iter(v.values()))
                if v is not None:
                    p[f] = v
            res.append(p)
        return res

    out["passes"] = passes(selectors[0] if selectors else None)
    if selectors:
        out["override"] = {s: {"passes": passes(s)} for s in selectors}
    for it in iters:
        for k in set(it) - set(fields) - {"fitgeom"}:
            m.skip(f"astrometry_parameters.{k}", "no equivalent pass setting")
    return out


def _science(m: Migration, old: dict[str, Any]) -> None:  # noqa: C901 - one branch per old table
    s = m.science
    for key, value in old.items():
        if key == "projects":
            s["projects"] = {str(p): {"targets": list(v.get("targets", []))} for p, v in value.items()}
        elif key == "download":
            _copy(m, value, "download", {"products": "products", "calib_level": "calib_level",
                                         "product_subgroups": "product_subgroups"},
                  s.setdefault("download", {}))
        elif key == "pipeline":
            _pipeline(m, value)
        elif key in ("extra_obs_to_include", "alignment"):
            s[key] = value
        elif key == "alignment_mapping":
            s.setdefault("astrometric_align", {})["alignment_mapping"] = value
        elif key in STAGE_PIPELINES:
            if kept := _stage(m, key, value):
                s[key] = kept
        elif key == "bg_sub_parameters":
            _copy(m, value, key, {"sigma": "sigma"}, s.setdefault("bg_sub", {}))
        elif key == "destripe_parameters":
            _copy(m, value, key, {"quadrants": "quadrants", "vertical_subtraction": "vertical",
                                  "filter_diffuse": "filter_diffuse", "dilate_size": "dilate_size",
                                  "destriping_method": "method", "median_filter_scales": "filter_scales",
                                  "pca_reconstruct_components": "pca_reconstruct_components",
                                  "sigma": "sigma", "max_iters": "max_iters"},
                  s.setdefault("destripe", {}),
                  {"do_vertical_subtraction": "ignored by the original too (its attribute is "
                                              "vertical_subtraction)"})
        elif key == "dither_stripe_sub_parameters":
            _stack(m, value)
        elif key == "dither_match_parameters":
            _copy(m, value, key, {}, {}, {
                "do_sigma_clip": "level_match always sigma-clips the pair differences",
                "weight_method": "level_match weights each pair by rms/sqrt(n)",
                "max_points": "level_match uses every overlapping (binned) pixel",
                "min_area_percent": "see [level_match] min_pixels (binned pixels)",
                "rms_sig_limit": "level_match rejects outlying pairs leave-one-out"})
        elif key == "astrometric_catalog_parameters":
            _catalog(m, value)
        elif key == "astrometry_parameters":
            s.setdefault("astrometric_align", {}).update(_passes(m, value))
        elif key == "prepare_release":
            _copy(m, value, key, {"remove_bloat": "remove_bloat", "move_tweakback": "include_crf",
                                  "overwrite": "overwrite", "include_backgrounds": "include_backgrounds",
                                  "include_convolved": "include_convolved", "include_qa": "include_qa",
                                  "include_fields": "include_fields"}, s.setdefault("release", {}))
        elif key in ("psf_model_parameters", "psf_model"):
            m.skip(key, NO_STEP["psf_model"])
        elif key in ("parameters", "steps"):
            continue                                     # pjpipe: handled by _pjpipe
        else:
            m.skip(key, "no equivalent table")


def _stack(m: Migration, value: dict[str, Any]) -> None:
    """``[dither_stripe_sub_parameters]`` -> ``[stack_destripe]`` (selector values -> overrides)."""
    table = m.science.setdefault("stack_destripe", {})
    names = {"quadrants": "quadrants", "sigma": "sigma", "dilate_size": "dilate_size",
             "maxiters": "max_iters", "weight_type": "weight", "do_large_scale": "large_scale",
             "median_filter_factor": "large_scale_factor"}
    for k, v in value.items():
        if k not in names or v is None:
            m.skip(f"dither_stripe_sub_parameters.{k}", "no equivalent setting")
        elif isinstance(v, dict):           # per band type: the override tables
            for sel, sv in v.items():
                table.setdefault("override", {}).setdefault(sel, {})[names[k]] = sv
        else:
            table[names[k]] = v


def _catalog(m: Migration, value: dict[str, Any]) -> None:
    cat = m.science.setdefault("astrometric_catalog", {})
    for k, v in value.items():
        if k in ("snr", "brightest", "fwhm"):
            cat[k] = v
        elif k in ("sharplo", "sharphi", "roundlo", "roundhi"):
            name = "sharpness" if k.startswith("sharp") else "roundness"
            lo, hi = value.get(name[:5] + "lo"), value.get(name[:5] + "hi")
            if lo is not None and hi is not None:
                cat[name] = [lo, hi]
            else:
                m.skip(f"astrometric_catalog_parameters.{k}", f"{name} needs both lo and hi here")
        elif k in ("starfind_method", "finder"):
            cat["finder"] = {"daofind": "dao", "dao": "dao", "iraf": "iraf", "irafstarfinder": "iraf"}.get(
                str(v).lower(), "dao")
        else:
            m.skip(f"astrometric_catalog_parameters.{k}", "no equivalent setting")


def _pipeline(m: Migration, p: dict[str, Any]) -> None:
    out = m.science.setdefault("pipeline", {})
    direct = ("data_version", "nircam_bands", "miri_bands", "obs_to_skip", "bgr_observation_types")
    for k, v in p.items():
        if k in direct:
            out[k] = v
        elif k == "crds_context":
            out[k] = v if "pmap" in str(v) else ""
        elif k == "bgr_check_type":          # the original applied it to NIRCam too (dropping parallels)
            out[k] = {"nircam": "none", "miri": v}
            m.skip("pipeline.bgr_check_type (NIRCam)", "applied to MIRI only: with it NIRCam coordinated "
                   "parallels were taken as backgrounds")
        elif k == "bgr_background_name":
            names = v if isinstance(v, list) else [v]
            out[k] = names[0]
            if len(names) > 1:
                m.skip("pipeline.bgr_background_name", f"one name here; kept {names[0]!r}")
        elif k in ("steps", "overwrites"):
            out[k] = {inst: _steps(m, f"pipeline.{k}.{inst}", v if isinstance(v, list) else [v])
                      for inst, v in (v.items() if isinstance(v, dict) else
                                      (("nircam", v), ("miri", v)))}
        elif k == "lyot_method":
            m.science.setdefault("lyot_adjust", {})["method"] = v
        elif k == "process_bgr_like_science":
            continue                             # after the steps are known (below)
        elif k in GROUPING_KEYS:
            _grouping(m, f"pipeline.{k}", k, v)
        elif k == "astrometric_alignment_type":
            if v == "table":
                m.science.setdefault("astrometric_align", {})["reference"] = "table"
            else:
                m.skip("pipeline.astrometric_alignment_type", "a mosaic is matched to the [alignment] "
                       "table or Gaia; bands without stars cross-correlate with a reference band: "
                       "[astrometric_align] alignment_mapping with mapping_mode = 'cross_correlate'")
        elif k == "alignment_mapping_mode" and str(v).lower() in ("cross_corr", "shift", "copy"):
            m.science.setdefault("astrometric_align", {})["mapping_mode"] = (
                "cross_correlate" if str(v).lower() == "cross_corr" else "borrow")
        else:
            m.skip(f"pipeline.{k}", {
                "flush_crds": "delete crds_dir by hand to flush the CRDS cache",
                "lev3_fields": "stage 3 of some visits only is not supported; the field_mosaics step "
                               "makes one mosaic per visit besides the combined one",
                "tweakreg_create_custom_catalogs": "use the astrometric_catalog step for the absolute "
                                                   "alignment",
                "alignment_mapping_mode": "'cross_corr' or 'shift' only",
            }.get(k, "no equivalent setting"))
    if p.get("process_bgr_like_science"):       # the background fields' own mosaics, last
        steps = out.setdefault("steps", {})
        for inst in ("nircam", "miri"):
            if any(t.startswith(inst) for t in p.get("bgr_observation_types", ["miri"])):
                steps.setdefault(inst, ["lv1", "lv2", "lv3"]).append("bgr_mosaics")


#: The original's (and pjpipe's lv3) dither-grouping lists -> (``[lv3]`` setting, grouping).
GROUPING_KEYS = {
    "group_tweakreg_dithers": ("tweakreg_groups", "visit"),
    "group_skymatch_dithers": ("skymatch_groups", "visit"),
    "degroup_skymatch_dithers": ("skymatch_groups", "file"),
    "tweakreg_group_dithers": ("tweakreg_groups", "visit"),
    "skymatch_group_dithers": ("skymatch_groups", "visit"),
    "tweakreg_degroup_dithers": ("tweakreg_groups", "file"),
    "skymatch_degroup_dithers": ("skymatch_groups", "file"),
}


def _grouping(m: Migration, where: str, key: str, value: Any) -> None:
    """A list of band types whose dithers are (de)grouped -> ``[lv3.override.<type>]`` settings.

    Grouping wins over degrouping of the same type, as in the original (which tested it first).
    """
    setting, mode = GROUPING_KEYS[key]
    for name in value if isinstance(value, list) else [value]:
        band_type = _band_type(str(name))
        if band_type is None:
            m.skip(f"{where}: {name}", "not a band type (nircam, nircam_short, nircam_long, miri)")
            continue
        over = m.science.setdefault("lv3", {}).setdefault("override", {}).setdefault(band_type, {})
        if mode == "visit" or over.get(setting) != "visit":
            over[setting] = mode


def _local(m: Migration, old: dict[str, Any]) -> None:
    loc = m.local.setdefault("local", {})
    keys = {"api_key": "api_key", "raw_dir": "raw_dir", "working_dir": "working_dir", "crds_dir": "crds_dir",
            "alignment_dir": "alignment_dir", "webb_psf_data": "psf_data_dir", "kernel_dir": "psf_dir",
            "anchor_ref_dir": "anchor_ref_dir", "reprocess_dir": "working_dir", "crds_path": "crds_dir"}
    for k, v in old.get("local", old).items():
        if k == "crds_context":              # pjpipe keeps it with the machine's paths: it is science
            m.science.setdefault("pipeline", {}).setdefault("crds_context", v if "pmap" in str(v) else "")
            continue
        if k in ("processors", "procs"):
            if isinstance(v, int) and not isinstance(v, bool) and v > 0:
                loc["processes"] = v
                loc["executor"] = "processes" if v > 1 else "serial"
            else:
                m.skip(f"local.{k}", f"{v!r} is not a number of processes (>= 1; 'all cores but N' "
                       "counts are not carried over): set [local] processes by hand")
            continue
        if k in keys and keys[k] not in loc:
            if v != "" or keys[k] in ("api_key",):
                loc[keys[k]] = v
        else:
            m.skip(f"local.{k}", FLATS if k == "updated_flats_dir" else "no equivalent setting")


def migrate(old: dict[str, Any], old_local: dict[str, Any] | None = None) -> Migration:
    """Map an original (or pjpipe) science config, and its local config, onto this suite's.

    Returns
    -------
    Migration
        ``science`` and ``local`` as TOML-ready dicts, and ``unmapped``: every old key not carried
        over, with why.
    """
    m = Migration()
    extra: dict[str, Any] = {}
    secrets: dict[str, Any] = {}
    if is_pjpipe(old):             # pjpipe: into the original's shape first
        pj = from_pjpipe(old)
        for where, why in pj.unmapped:
            m.skip(where, why)
        m.science.setdefault("pipeline", {})["steps"] = _pjpipe_steps(m, old["steps"])
        old, extra, secrets = pj.original, pj.suite, pj.local
    _science(m, old)
    for table, values in extra.items():
        m.science.setdefault(table, {}).update(values)
    steps = m.science.get("pipeline", {}).get("steps", {})
    if "destripe" in m.science and any("rate_destripe" in v and "destripe" not in v for v in steps.values()):
        m.science["rate_destripe"] = m.science.pop("destripe")    # its settings follow it before stage 2
    if old_local is not None:
        _local(m, old_local)
    if secrets:
        m.local.setdefault("local", {}).update(secrets)
    return m


def _pjpipe_steps(m: Migration, names: list[str]) -> dict[str, list[str]]:
    """The step list of each instrument from pjpipe's ``steps = ["lv1", "destripe.nircam", ...]``."""
    by_inst: dict[str, list[str]] = {"nircam": [], "miri": []}
    for name in names:
        parts = name.split(".")
        for inst in ([parts[1]] if len(parts) > 1 and parts[1] in by_inst else list(by_inst)):
            by_inst[inst].append(name)
    return {i: _steps(m, f"steps ({i})", v) for i, v in by_inst.items()}
