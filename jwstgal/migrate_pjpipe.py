"""pjpipe's configs, put into the original scripts' shape that :mod:`jwstgal.migrate` maps.

A pjpipe config (``config/<programme>/config.toml`` of its source distribution) has top-level
``targets``, ``version``, ``bands`` (background fields as ``<BAND>_bgr``) and ``steps`` (with
``.nircam``/``.miri`` and ``.sci``/``.bgr`` qualifiers), and one ``[parameters.<step>]`` table per
step. :func:`from_pjpipe` rewrites it as the original scripts' tables (``projects``,
``[pipeline]``, ``[lvN_parameters]``, ``[destripe_parameters]``, ...), so that one mapping
serves both, and returns beside it the tables that only pjpipe has, already in this suite's shape
(``[anchor]``, ``[convolve]``, ``[lyot_adjust]``, ``[wcs_adjust]``, ``[download]``), the secrets
that belong in the local config, and every key it cannot carry over, with why.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from jwstgal.bands import ALL_BANDS, get_band

#: pjpipe step -> the original scripts' table its parameters become.
ORIGINAL_TABLES = {
    "single_tile_destripe": "destripe_parameters",
    "multi_tile_destripe": "dither_stripe_sub_parameters",
    "level_match": "dither_match_parameters",
    "astrometric_catalog": "astrometric_catalog_parameters",
}
#: pjpipe ``[parameters.release]`` -> the original's ``[prepare_release]`` (mapped from there).
RELEASE_KEYS = {"remove_bloat": "remove_bloat", "move_tweakback": "move_tweakback",
                "overwrite": "overwrite", "move_backgrounds": "include_backgrounds",
                "move_psf_matched": "include_convolved", "move_diagnostic_plots": "include_qa",
                "move_individual_fields": "include_fields"}


@dataclass
class PjpipeConfig:
    """A pjpipe config split for :func:`jwstgal.migrate.migrate`."""

    original: dict[str, Any] = field(default_factory=dict)    # the original scripts' shape
    suite: dict[str, Any] = field(default_factory=dict)       # tables already in this suite's shape
    local: dict[str, Any] = field(default_factory=dict)       # secrets for the local config
    unmapped: list[tuple[str, str]] = field(default_factory=list)


def is_pjpipe(old: dict[str, Any]) -> bool:
    """Whether a config is pjpipe's (a step list and ``[parameters]``)."""
    return isinstance(old.get("steps"), list) and isinstance(old.get("parameters"), dict)


def _gauss(name: str) -> str:
    """A Gaussian name as pjpipe writes it (``gauss0p85``) as this suite does (``gauss0.85``)."""
    m = re.fullmatch(r"gauss(\d+)(?:p(\d+))?", name)
    if not m:
        return name
    return f"gauss{float(m.group(1) + '.' + (m.group(2) or '0')):g}"


def _external(name: str) -> dict[str, str] | None:
    """``irac4_atgauss4`` -> ``{band = "irac4", psf = "gauss4"}``."""
    band, _, psf = name.partition("_at")
    return {"band": band, "psf": _gauss(psf)} if band and psf.startswith("gauss") else None


def _flatten_targets(table: dict[str, Any]) -> list[str]:
    """``obs_to_skip``: ``{target = glob, target.sci = glob}`` -> the globs."""
    out: list[str] = []
    for v in table.values():
        if isinstance(v, dict):
            out += _flatten_targets(v)
        else:
            out += [str(g) for g in (v if isinstance(v, list) else [v])]
    return out


def from_pjpipe(old: dict[str, Any]) -> PjpipeConfig:  # noqa: C901 - one branch per pjpipe table
    """Split a pjpipe config (see the module docstring)."""
    out = PjpipeConfig()
    o, s = out.original, out.suite
    # tables already in the original's shape (configs that mix both) are kept as they are
    o.update({k: v for k, v in old.items() if k not in ("targets", "version", "bands", "steps",
                                                       "parameters")})
    params: dict[str, Any] = old.get("parameters", {})
    pipe = o.setdefault("pipeline", {})
    if "bands" in old:
        bands = [str(b) for b in old["bands"]]
        science = [b for b in bands if not b.endswith("_bgr")]
        for b in science:
            if b not in ALL_BANDS:
                out.unmapped.append((f"bands: {b}", "not a JWST imaging band"))
        known = [b for b in science if b in ALL_BANDS]
        pipe["nircam_bands"] = [b for b in known if get_band(b).instrument == "nircam"]
        pipe["miri_bands"] = [b for b in known if get_band(b).instrument == "miri"]
        if any(b.endswith("_bgr") for b in bands):     # the background fields, reduced like science
            pipe["process_bgr_like_science"] = True
    if "version" in old:
        pipe["data_version"] = old["version"]
    if "targets" in old:
        download = params.get("download", {})
        prop = str(download.get("prop_id", "")) or "0"
        if "prop_id" not in download:
            out.unmapped.append(("parameters.download.prop_id", "absent: the programme is called '0'"))
        o["projects"] = {prop: {"targets": [str(t) for t in old["targets"]]}}
    for step, table in params.items():
        if not isinstance(table, dict):
            out.unmapped.append((f"parameters.{step}", "not a table"))
            continue
        where = f"parameters.{step}"
        if step == "download":
            dl = s.setdefault("download", {})
            for k, v in table.items():
                if k == "product_type":
                    dl["products"] = [str(x).upper() for x in (v if isinstance(v, list) else [v])]
                elif k == "calib_level":
                    dl["calib_level"] = v if isinstance(v, list) else [v]
                elif k == "api_key":
                    out.local["api_key"] = v       # a secret: the local config, never the science one
                elif k != "prop_id":
                    out.unmapped.append((f"{where}.{k}", {
                        "login": "the MAST token (api_key) logs in", "radius": "downloads select by "
                        "programme and target name, not by a cone"}.get(k, "no equivalent setting")))
        elif step == "move_raw_obs":
            for k, v in table.items():
                if k == "obs_to_skip" and isinstance(v, dict):
                    pipe["obs_to_skip"] = _flatten_targets(v)
                elif k == "extra_obs_to_include" and isinstance(v, dict):
                    extra: dict[str, dict[str, list[str]]] = {}
                    for target, sub in v.items():
                        for _kind, others in (sub.items() if isinstance(sub, dict) else []):
                            for other, globs in (others.items() if isinstance(others, dict) else
                                                 [(_kind, others)]):
                                extra.setdefault(target, {}).setdefault(other, []).extend(
                                    globs if isinstance(globs, list) else [globs])
                    o["extra_obs_to_include"] = extra
                else:
                    out.unmapped.append((f"{where}.{k}", "no equivalent setting"))
        elif step in ("lv1", "lv2", "lv3"):
            for k, v in table.items():
                if k == "jwst_parameters":
                    o[f"{step}_parameters"] = v
                elif k in ("bgr_check_type", "bgr_background_name", "bgr_observation_types"):
                    pipe.setdefault(k, v)          # one setting here (lv2's, then lv3's if it differs)
                    if pipe[k] != v:
                        out.unmapped.append((f"{where}.{k}", f"one value for stages 2 and 3 here: "
                                             f"kept {pipe[k]!r}"))
                elif step == "lv3" and k.endswith(("group_dithers", "degroup_dithers")):
                    pipe[k] = v                    # the original's grouping lists
                else:
                    out.unmapped.append((f"{where}.{k}", {
                        "tweakreg_degroup_nircam_modules": "tweakreg groups by [lv3] tweakreg_groups "
                                                           "(visit, exposure or file)"}.get(
                        k, "no equivalent setting")))
        elif step in ORIGINAL_TABLES:
            flat = {}
            for k, v in table.items():
                if k in ("dao_parameters", "starfind_parameters") and isinstance(v, dict):
                    flat.update(v)                 # sharplo/hi, roundlo/hi
                else:
                    flat[{"filter_scales": "median_filter_scales"}.get(k, k)] = v
            o[ORIGINAL_TABLES[step]] = flat
        elif step == "astrometric_align":
            for k, v in table.items():
                if k == "align_mapping":
                    o["alignment_mapping"] = {b: r for b, r in v.items() if not b.endswith("_bgr")}
                    if any(b.endswith("_bgr") for b in v):
                        out.unmapped.append((f"{where}.align_mapping (_bgr bands)", "background "
                                             "fields are not aligned to an absolute reference"))
                elif k == "catalogs":
                    o["alignment"] = v
                elif k == "tweakreg_parameters":
                    o["astrometry_parameters"] = v
                else:
                    out.unmapped.append((f"{where}.{k}", "no equivalent setting"))
        elif step == "get_wcs_adjust":
            for k, v in table.items():
                if k == "bands":
                    s.setdefault("wcs_adjust", {})["bands"] = [b for b in v if b in ALL_BANDS]
                else:
                    out.unmapped.append((f"{where}.{k}", "visit shifts are measured with [wcs_adjust] "
                                         "passes (star finding and matching of their own)"))
        elif step in ("lyot_mask", "lyot_adjust"):
            for k, v in table.items():
                if k == "method" and v in ("mask", "mask_overlap", "adjust"):
                    s.setdefault("lyot_adjust", {})["method"] = v
                else:
                    out.unmapped.append((f"{where}.{k}", "no equivalent setting"))
        elif step == "anchoring":
            _anchoring(out, table, pipe)
        elif step == "psf_matching":
            for k, v in table.items():
                if k == "target_bands":
                    s.setdefault("convolve", {})["targets"] = [_gauss(str(t)) for t in v]
                else:
                    out.unmapped.append((f"{where}.{k}", "no equivalent setting"))
        elif step == "release":
            rel = o.setdefault("prepare_release", {})
            for k, v in table.items():
                if k in RELEASE_KEYS:
                    rel[RELEASE_KEYS[k]] = v
                else:
                    out.unmapped.append((f"{where}.{k}", "no equivalent setting"))
        else:
            out.unmapped += [(f"{where}.{k}", {
                "gaia_query": "the Gaia cone follows each mosaic's footprint",
                "regress_against_previous": "set [release] compare_with to the previous release's "
                                            "folder on this machine",
            }.get(step, "no such step here")) for k in table]
    if "targets" in old:                       # pjpipe keeps every target's entries, most commented out
        _only_listed(out, {str(t) for t in old["targets"]})
    return out


def _only_listed(out: PjpipeConfig, targets: set[str]) -> None:
    """Drop the per-target entries of targets the config does not process (each one named)."""
    o = out.original
    for key in ("alignment", "extra_obs_to_include"):
        for t in sorted(set(o.get(key, {})) - targets):
            out.unmapped.append((f"{key}.{t}", "a target the config does not list"))
            del o[key][t]
    for t, others in o.get("extra_obs_to_include", {}).items():
        for other in sorted(set(others) - targets):
            out.unmapped.append((f"extra_obs_to_include.{t}.{other}", "borrows from a target the "
                                 "config does not list"))
            del others[other]


def _anchoring(out: PjpipeConfig, table: dict[str, Any], pipe: dict[str, Any]) -> None:
    """``[parameters.anchoring]`` -> ``[anchor]``."""
    anchor = out.suite.setdefault("anchor", {})
    instruments = [i for i in ("nircam", "miri") if pipe.get(f"{i}_bands")]
    for k, v in table.items():
        if k == "ref_band" and isinstance(v, dict):
            anchor["reference"] = {i: b for i, b in v.items() if i in instruments}
        elif k == "external_bands" and isinstance(v, dict):
            ext = {}
            for inst, names in v.items():
                maps = [_external(str(n)) for n in names]
                ext[inst] = [x for x in maps if x]
                for n, x in zip(names, maps, strict=True):
                    if x is None:
                        out.unmapped.append((f"parameters.anchoring.external_bands.{inst}: {n}",
                                             "not <map>_at<gauss PSF>"))
            anchor["external"] = {i: e for i, e in ext.items() if i in instruments}
        elif k == "internal_conv_band":
            anchor["internal_psf"] = {i: _gauss(str(v)) for i in instruments}
        else:
            out.unmapped.append((f"parameters.anchoring.{k}", "no equivalent setting"))
