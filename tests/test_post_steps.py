"""The post-mosaic steps (issue #27 items 1-3): scopes, typed tasks, one plan format, the executor.

The ladder (``convolve``) is a band-scope step with a task per rung: run on a process pool its
products are those of a serial run, bit for bit, and its dry run prints every context's plan in
the band steps' format without writing anything.
"""

from __future__ import annotations

import pickle
import shutil
from dataclasses import FrozenInstanceError
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from factories import fake_mosaic, write_config

from jwstgal.steps import POST_STEPS, get_post_step
from jwstgal.steps.post import SCOPES, PostContext, Task

SCIENCE = """
[projects.1]
targets = ["ngc0000", "ngc0001"]
[pipeline]
data_version = "t1"
nircam_bands = ["F200W"]
miri_bands = ["F2100W"]
[kernels]
psf_source = "gaussian"
[convolve]
targets = ["F2100W", "gauss1.0", "gauss4"]
"""


def _tree(root, processes=1):
    root.mkdir(parents=True, exist_ok=True)
    cfg, loc = write_config(root, science=SCIENCE, local=f'[local]\nraw_dir="raw"\nworking_dir="work"\n'
                            f'psf_dir="psf"\nprocesses = {processes}\n')
    for i, target in enumerate(("ngc0000", "ngc0001")):
        rep = root / "work" / "jwst_lv3_reprocessed_t1" / target
        fake_mosaic(rep / "F200W" / "lv3" / f"{target}_nircam_lv3_f200w_i2d.fits", pixscale=0.031,
                    shape=(160, 160), point=(80, 80), seed=i)
        fake_mosaic(rep / "F2100W" / "lv3" / f"{target}_miri_lv3_f2100w_i2d.fits", pixscale=0.11,
                    shape=(60, 60), seed=10 + i)
    return cfg, loc


def _load(cfg, loc):
    from jwstgal.config import load_config

    return load_config(cfg, loc, check_jwst=False)


def test_every_post_step_declares_a_scope_and_a_summary():
    assert [(s.name, s.scope) for s in POST_STEPS] == [("kernels", "run"), ("anchor", "target"),
                                                       ("convolve", "band"), ("release", "run"),
                                                       ("compare", "run")]
    for step in POST_STEPS:
        assert step.scope in SCOPES and step.summary
        assert get_post_step(step.name) is step
    with pytest.raises(KeyError, match="allowed: kernels, anchor, convolve, release, compare"):
        get_post_step("convolv")


def test_a_task_is_frozen_plain_data_that_pickles():
    from jwstgal.ladder import plan_rung
    from jwstgal.steps.convolve import ConvolveTask

    rung = plan_rung("F200W", "gauss4", 0.031, direct_max=2.0, reproject=True, bands=("F200W",))
    task = ConvolveTask(label="x F200W -> gauss4", mosaic=Path("m.fits"), kernel=None, rung=rung,
                        grid=None, block_size=2048, sampling="auto", key="k", config_hash="c")
    assert pickle.loads(pickle.dumps(task)) == task
    with pytest.raises(FrozenInstanceError):
        task.action = "skip"
    with pytest.raises(NotImplementedError):
        Task(label="bare").run()


@pytest.mark.pipeline
def test_the_ladder_on_a_process_pool_is_the_serial_ladder_bit_for_bit(tmp_path, monkeypatch):
    """Rungs of every band of every target run together on two workers: same products as serially.

    The pool is one the caller opened (a whole-chain run's, issue #29): the rungs run in its
    workers, which were started before and are still the same processes after.
    """
    import os

    import jwstgal.post_runner
    from jwstgal.executor import ExecutorSpec, open_executor
    from jwstgal.kernel_products import make_kernel_set
    from jwstgal.post_runner import run_post_steps

    serial, pooled = tmp_path / "serial", tmp_path / "pooled"
    cfgs = {"serial": _tree(serial, 1), "pooled": _tree(pooled, 2)}
    runs = {name: _load(*paths) for name, paths in cfgs.items()}
    for run in runs.values():
        make_kernel_set([], run.science.kernels, run.psf_dir, run.psf_data_dir, progress=False,
                        pairs=run.science.kernel_pairs)
    assert run_post_steps(runs["serial"], ["convolve"], progress=False) == 0
    with open_executor(ExecutorSpec("processes", 2)) as ex:
        ex.map(os.getpid, [()] * 4, progress=False)                  # the workers start
        workers = set(ex._pool._processes)
        with monkeypatch.context() as m:
            m.setattr(jwstgal.post_runner, "open_executor", None)     # no second pool may be opened
            assert run_post_steps(runs["pooled"], ["convolve"], progress=False, executor=ex) == 0
        assert len(workers) == 2 and set(ex._pool._processes) == workers      # the same two processes
        assert set(ex.map(os.getpid, [()] * 4, progress=False)) <= workers
    made = sorted(p.relative_to(serial) for p in serial.rglob("convolved/*.fits"))
    assert len(made) == 2 * 2 * 3                          # targets x bands x rungs
    for rel in made:
        with fits.open(serial / rel) as a, fits.open(pooled / rel) as b:
            assert np.array_equal(a["SCI"].data, b["SCI"].data, equal_nan=True), rel
            assert a["SCI"].header["PSF"] == b["SCI"].header["PSF"]
    # a second run keeps every product (the keys match), and --overwrite remakes them
    before = {p: p.stat().st_mtime_ns for p in pooled.rglob("convolved/*.fits")}
    assert run_post_steps(runs["pooled"], ["convolve"], progress=False) == 0
    assert before == {p: p.stat().st_mtime_ns for p in pooled.rglob("convolved/*.fits")}


@pytest.mark.pipeline
def test_kernels_on_a_process_pool_are_the_serial_kernels(tmp_path):
    """PSFs (stage 1), then kernels (stage 2), on two workers: the kernels of the serial loop."""
    from jwstgal.kernel_products import make_kernel_set
    from jwstgal.post_runner import contexts, run_post_steps

    serial, pooled = _load(*_tree(tmp_path / "serial", 1)), _load(*_tree(tmp_path / "pooled", 2))
    paths = make_kernel_set([], serial.science.kernels, serial.psf_dir, serial.psf_data_dir,
                            progress=False, pairs=serial.science.kernel_pairs)
    step = get_post_step("kernels")
    (ctx,) = contexts(step, pooled)
    psfs, kernels = step.plan(ctx)
    assert sorted(t.band for t in psfs) == ["F200W", "F2100W"]
    assert len(kernels) == len(paths) and {t.action for t in kernels} == {"make"}
    assert run_post_steps(pooled, ["kernels"], progress=False) == 0
    for path in paths:
        twin = pooled.psf_dir / path.relative_to(serial.psf_dir)
        with fits.open(path) as a, fits.open(twin) as b:
            assert np.array_equal(a[0].data, b[0].data), path.name
            assert a[0].header["JG_KERN"] == b[0].header["JG_KERN"]
    psfs, kernels = step.plan(ctx)                          # all current now: nothing to do
    assert psfs == [] and {t.action for t in kernels} == {"skip"}


@pytest.mark.pipeline
def test_one_failing_rung_fails_alone_and_the_exit_code_says_so(tmp_path, caplog):
    from jwstgal.kernel_products import make_kernel_set
    from jwstgal.layout import kernel_path
    from jwstgal.post_runner import run_post_steps

    run = _load(*_tree(tmp_path, 2))
    make_kernel_set([], run.science.kernels, run.psf_dir, run.psf_data_dir, progress=False,
                    pairs=run.science.kernel_pairs)
    bad = kernel_path(run.psf_dir, "aniano", "F200W", "gauss1.0")
    assert bad.is_file()
    bad.write_text("not a kernel\n" * 300)
    assert run_post_steps(run, ["convolve"], progress=False) == 1
    conv = sorted(p.name for p in tmp_path.rglob("convolved/*.fits"))
    assert len(conv) == 2 * 2 * 3 - 2                      # F200W -> gauss1.0 of both targets only
    assert not any("f200w_i2d_conv_gauss1.0" in n for n in conv)
    assert "F200W_to_gauss1.0.fits is unusable" in caplog.text


def test_the_dry_run_prints_every_context_in_one_format_and_writes_nothing(tmp_path, capsys):
    from jwstgal.post_runner import contexts, run_post_steps

    cfg, loc = _tree(tmp_path)
    run = _load(cfg, loc)
    step = get_post_step("convolve")
    ctxs = contexts(step, run, ["F200W"], ["ngc0001"])
    assert [c.label for c in ctxs] == ["ngc0001 F200W"]
    assert [c.label for c in contexts(step, run)] == ["ngc0000 F200W", "ngc0000 F2100W",
                                                      "ngc0001 F200W", "ngc0001 F2100W"]
    assert PostContext(run).label == "run" and PostContext(run, target="t").label == "t"
    before = sorted((str(p), p.stat().st_mtime_ns) for p in tmp_path.rglob("*"))
    assert run_post_steps(run, ["convolve"], dry_run=True) == 0
    out = capsys.readouterr().out
    assert before == sorted((str(p), p.stat().st_mtime_ns) for p in tmp_path.rglob("*"))
    lines = out.splitlines()
    assert lines[0].startswith("dry run: convolve (band scope) under ")
    assert lines.count("ngc0000 F200W: convolve") == 1 and lines.count("ngc0001 F2100W: convolve") == 1
    fails = [ln for ln in lines if " fails " in ln]
    # F2100W -> F2100W needs no kernel
    assert len(fails) == 2 * (3 + 2) and all("run make_kernels.py first" in ln for ln in fails)
    # once the kernels exist, every rung is planned as made, with its files in and out
    from jwstgal.kernel_products import make_kernel_set

    make_kernel_set([], run.science.kernels, run.psf_dir, run.psf_data_dir, progress=False,
                    pairs=run.science.kernel_pairs)
    assert run_post_steps(run, ["convolve"], ["F200W"], ["ngc0000"], dry_run=True) == 0
    lines = capsys.readouterr().out.splitlines()
    made = [i for i, ln in enumerate(lines) if " make " in ln]
    # three rungs, then (stage 2) their stars measured against the rungs' PSFs
    assert len(made) == 4 and "not made yet" in lines[made[0]]
    assert "ladder stars" in lines[made[3]] and "ladder_widths.json" in "\n".join(lines[made[3]:])
    assert lines[made[0] + 1].startswith("      in : jwst_lv3_reprocessed_t1/ngc0000/F200W/lv3/")
    assert "F200W_to_" in lines[made[0] + 1]
    assert lines[made[0] + 2].startswith("      out: jwst_lv3_reprocessed_t1/ngc0000/F200W/convolved/")
    shutil.rmtree(tmp_path / "psf")


def test_an_empty_ladder_is_a_configuration_error_before_any_work(tmp_path):
    from jwstgal.errors import ConfigError
    from jwstgal.post_runner import run_post_steps

    cfg, loc = _tree(tmp_path)
    cfg.write_text(cfg.read_text().replace('targets = ["F2100W", "gauss1.0", "gauss4"]', "targets = []"))
    with pytest.raises(ConfigError, match=r"\[convolve\] targets is empty"):
        run_post_steps(_load(cfg, loc), ["convolve"])


def test_through_names_the_configured_post_steps_up_to_it(tmp_path):
    """``run_jwst_reprocessing.py --through``: the chain after the mosaics, without unconfigured steps."""
    from jwstgal.cli.run_jwst_reprocessing import post_steps_through

    run = _load(*_tree(tmp_path))
    assert post_steps_through(run, "kernels") == ["kernels"]
    assert post_steps_through(run, "convolve") == ["kernels", "convolve"]      # no [anchor] here
    assert post_steps_through(run, "release") == ["kernels", "convolve", "release", "compare"]


def test_every_post_steps_tasks_pickle_for_the_workers(tmp_path):
    """Tasks go to worker processes: each step's tasks must pickle (an anchoring task once carried
    the whole run, whose registry-built models do not)."""
    from jwstgal.kernel_products import make_kernel_set
    from jwstgal.post_runner import contexts

    cfg, loc = _tree(tmp_path)
    cfg.write_text(cfg.read_text() + '[anchor]\nreference = { miri = "F2100W" }\n'
                   'external = { miri = [{ band = "irac4", psf = "gauss4" }] }\n'
                   '[release]\ncompare_with = "old"\n')
    run = _load(cfg, loc)
    make_kernel_set([], run.science.kernels, run.psf_dir, run.psf_data_dir, progress=False,
                    pairs=[(b, t) for b, t in run.science.kernel_pairs if b == "F200W"])
    seen = {}
    for step in POST_STEPS:
        tasks = [t for ctx in contexts(step, run) for stage in step.plan(ctx) for t in stage]
        seen[step.name] = len(tasks)
        for task in tasks:
            assert pickle.loads(pickle.dumps(task)).label == task.label, (step.name, task.label)
    assert all(seen.values()), seen
