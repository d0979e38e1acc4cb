"""Reprocess JWST imaging: stage 1 -> 2 -> 3 for every target and band of a config.

Usage: python run_jwst_reprocessing.py [CONFIG [LOCAL [BAND]]] [--band B] [--target T] [--dry-run]
       [--through kernels|anchor|convolve|release]

With no argument (e.g. IPython ``%run run_jwst_reprocessing.py``) it loads config/config.toml and the
local.toml beside it. A config with a [simulation] table first simulates its raw data (the offline
demo); local.toml's crds_mode = 'synthetic' serves matching synthetic reference files.
``--through STEP`` goes on after the mosaics with the post-mosaic steps up to STEP (kernels, anchor,
convolve, release and compare), as make_kernels.py, anchor_data.py, convolve_data.py and
prepare_release.py run them.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from typing import Any

from jwstgal.cli._common import base_parser, parse, run_main, selected
from jwstgal.errors import ConfigError

log = logging.getLogger(__name__)


def _prepare_simulation(cfg, targets: list[str], progress: bool) -> None:
    from jwstgal.provenance import write_bytes_atomic
    from jwstgal.simulate.programme import simulate_programme, simulated_detectors
    from jwstgal.simulate.refs import build_crds_cache

    sim = cfg.science.simulation
    bands = cfg.science.bands
    if cfg.local.crds_mode == "synthetic":
        build_crds_cache(cfg.crds_dir, simulated_detectors(sim, bands), sim.seed)
    psfs = None
    if sim.psf == "kernels":   # the optics the kernels are built from (made once, cached for them):
        # the detector integrates them, the pipeline drizzles them (their pixel response)
        from jwstgal.kernel_products import band_psf

        psfs = {b: band_psf(b, cfg.science.kernels, cfg.psf_dir, cfg.psf_data_dir, optics=True)
                for b in bands}
    for target in targets:
        truth = simulate_programme(sim, target, bands, cfg.raw_dir, progress=progress, psfs=psfs)
        if target in cfg.science.alignment:  # the simulated astrometric reference catalogue
            cat = truth / cfg.science.alignment[target]
            if cat.is_file():
                cfg.alignment_dir.mkdir(parents=True, exist_ok=True)
                dest = cfg.alignment_dir / cat.name
                if not dest.is_file() or dest.read_bytes() != cat.read_bytes():
                    write_bytes_atomic(dest, cat.read_bytes())
        _simulate_external_maps(cfg, target, truth)


def _simulate_external_maps(cfg, target: str, truth) -> None:
    """The [anchor] external maps of a simulated target, where anchor_ref_dir lacks them."""
    from astropy.table import Table

    from jwstgal.bands import get_band
    from jwstgal.ladder import gaussian_fwhm
    from jwstgal.simulate.external import external_map, write_external_map
    from jwstgal.simulate.sky import Galaxy

    sim, anchor = cfg.science.simulation, cfg.science.anchor
    if cfg.anchor_ref_dir is None:
        return
    stars = Table.read(truth / "stars.ecsv", format="ascii.ecsv")
    size = 1.6 * sim.n_tiles * sim.detector_size * max(get_band(b).pixel_scale for b in cfg.science.bands)
    for inst, ref in anchor.reference.items():
        for i, m in enumerate(anchor.external.get(inst, [])):
            path = cfg.anchor_ref_dir / f"{target}_{m.band}.fits"
            fwhm = gaussian_fwhm(m.psf)
            if path.is_file() or fwhm is None:
                continue
            # a calibration slope of its own, and the sky's zero point: anchoring adopts a map's
            # zero point, so the anchored bands can be scored against the sky's truth
            slope, offset = 0.8 + 0.1 * i, 0.0
            seen = m.bands[0] if m.bands else ref       # the band whose wavelength it covers
            data, wcs = external_map(Galaxy(sim.ra, sim.dec), get_band(seen), stars, fwhm=fwhm,
                                     size_arcsec=size, seed=sim.seed, noise_seed=i, slope=slope,
                                     offset=offset)
            write_external_map(path, data, wcs, name=m.band, fwhm=fwhm, slope=slope, offset=offset,
                               noise=0.003)
            log.info("simulated external map %s (%s at %s)", path, seen, m.psf)


def _load_checked(args: Any) -> Any:
    """The run's configuration, checked in one pass before anything is created.

    Its three kinds of problems (science keys, machine keys, jwst step parameters) are reported
    together. jwst is imported for its step specs only after CRDS is configured from the machine config (the
    environment only, nothing on disk).
    """
    import tomllib
    from pathlib import Path
    from types import SimpleNamespace

    from jwstgal.config import check_jwst_parameters, load_config
    from jwstgal.crds_setup import configure_crds
    from jwstgal.stages import STAGE_PIPELINES

    problems: list[str] = []
    cfg = None
    try:
        cfg = load_config(args.config, args.local, check_jwst=False)
    except ConfigError as err:
        problems.append(str(err))
    if cfg is not None:
        configure_crds(cfg.crds_dir, mode=cfg.local.crds_mode, server_url=cfg.local.crds_server_url,
                       context=cfg.science.pipeline.crds_context, create=False)
        tables, path = cfg.science, cfg.config_path
    else:                                   # the science file may still be readable TOML
        path = Path(args.config).resolve()
        try:
            raw = tomllib.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
            raw = {}
        tables = SimpleNamespace(**{s: raw.get(s) if isinstance(raw.get(s), dict) else {}
                                    for s in STAGE_PIPELINES})
    try:
        check_jwst_parameters(tables, path)
    except ConfigError as err:
        problems.append(str(err))
    if problems:
        raise ConfigError("\n".join(problems))
    return cfg


def _dry_run(cfg: Any, bands: list[str] | None, targets: list[str] | None, through: str | None = None
             ) -> int:
    """Print what a run would do (every step of every target/band, files in and out); write nothing."""
    import sys

    from jwstgal.reprocess import format_plan, plan_all

    if cfg.science.simulation is not None and not cfg.raw_dir.is_dir():
        sys.stdout.write(f"raw data would first be simulated into {cfg.raw_dir}; steps are planned "
                         "once it exists\n")
    sys.stdout.write(f"dry run: {cfg.config_path} (nothing is written)\n")
    sys.stdout.write(format_plan(plan_all(cfg, bands, targets), cfg.working_dir))
    if through:
        from jwstgal.post_runner import run_post_steps

        sys.stdout.write("then, planned on what is on disk now (the mosaics above not yet made):\n")
        run_post_steps(cfg, post_steps_through(cfg, through), bands, targets, dry_run=True)
    return 0


def post_steps_through(cfg: Any, through: str) -> list[str]:
    """The post-mosaic steps up to ``through`` that this config asks for, in order."""
    from jwstgal.steps import POST_STEPS

    names = [s.name for s in POST_STEPS]
    steps = names[:names.index(through) + 1] + (["compare"] if through == "release" else [])
    wanted = {"kernels": bool(cfg.science.kernel_pairs), "anchor": bool(cfg.science.anchor.reference),
              "convolve": bool(cfg.science.convolve.rungs)}     # those not configured are left out
    return [s for s in steps if wanted.get(s, True)]


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit code."""
    parser = base_parser(__doc__)
    parser.add_argument("--through", choices=["kernels", "anchor", "convolve", "release"], default=None,
                        help="after the mosaics, run the post-mosaic steps up to this one")
    args = parse(parser, argv)

    from jwstgal.logs import setup_logging

    setup_logging(args.log_level, args.log_file)

    def run() -> int:
        cfg = _load_checked(args)
        bands, targets = selected(args, cfg)
        if cfg.local.crds_mode == "synthetic" and cfg.science.simulation is None \
                and not (cfg.crds_dir / "jwstgal_synthetic.json").is_file():
            msg = (f"{cfg.local_path}: crds_mode = 'synthetic' needs a [simulation] table in "
                   f"{cfg.config_path} (or an existing synthetic cache in {cfg.crds_dir})")
            raise ConfigError(msg)
        if cfg.science.simulation is None and not cfg.raw_dir.is_dir():
            msg = (f"{cfg.local_path}: key 'local.raw_dir': {cfg.raw_dir} is not a folder; download "
                   "the data first (download_phangs_jwst.py) or fix the path")
            raise ConfigError(msg)
        if args.dry_run:
            return _dry_run(cfg, bands, targets, args.through)
        from jwstgal.executor import open_executor
        from jwstgal.reprocess import band_locks, executor_spec

        # the locks before anything is written: a refused run writes nothing; then one executor
        # for the whole chain, so that the post-mosaic steps reuse the band steps' workers
        with band_locks(cfg, bands, targets), open_executor(executor_spec(cfg)) as ex:
            code = _run_locked(cfg, bands, targets, args.no_progress, ex)
            if code or not args.through:
                return code
            from jwstgal.post_runner import run_post_steps

            code = run_post_steps(cfg, post_steps_through(cfg, args.through), bands, targets,
                                  progress=not args.no_progress, executor=ex)
        from jwstgal.report import write_report

        log.info("QA page updated: %s", write_report(cfg))
        return code

    def _run_locked(cfg: Any, bands: list[str] | None, targets: list[str] | None, no_progress: bool,
                    executor: Any) -> int:
        from jwstgal.reprocess import run_all

        cfg.crds_dir.mkdir(parents=True, exist_ok=True)
        if cfg.science.simulation is not None:
            _prepare_simulation(cfg, targets or cfg.science.targets, not no_progress)

        from jwstgal.provenance import software_versions, write_text_atomic

        cfg.reprocess_dir.mkdir(parents=True, exist_ok=True)
        write_text_atomic(cfg.reprocess_dir / "run_config.json", json.dumps(
            {"config_file": str(cfg.config_path), "local_file": str(cfg.local_path),
             "config_hash": cfg.config_hash, "versions": software_versions(),
             "science": cfg.science.model_dump(mode="json")}, indent=1))
        results = run_all(cfg, bands, targets, progress=not no_progress, executor=executor, lock=False)
        from jwstgal.report import write_report

        report = write_report(cfg, results)
        log.info("QA report: %s", report)
        if not results:
            log.error("nothing was processed: no raw data for any target/band under %s",
                      cfg.raw_dir)
            return 1
        for r in results:
            if r.error:
                log.error("%s %s: FAILED (%s)", r.target, r.band, r.error.splitlines()[0])
                continue
            log.info("%s %s: ran %s, skipped %s", r.target, r.band, ",".join(r.steps_run) or "-",
                     ",".join(r.steps_skipped) or "-")
            not_run = [f"{s} ({st})" for s, st in r.status.items()
                       if st and st not in ("ran", "skipped (complete)", "not configured")]
            if not_run:
                log.info("  not run: %s", ", ".join(not_run))
            for note in r.notes:
                log.info("  %s", note)
            if r.mosaic:
                log.info("  mosaic:    %s", r.mosaic)
                log.info("  quicklook: %s", r.quicklook)
        return 1 if any(r.error for r in results) else 0

    return run_main(run)


if __name__ == "__main__":
    raise SystemExit(main())
