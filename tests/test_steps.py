"""The step registry: planning of every step on a band folder in a known state (no jwst run),
hash keys unchanged from the code before the registry, per-target/band overrides for every step
table, one declaration per parameter set, and the layering of the package."""

from __future__ import annotations

import ast
import dataclasses
import json
import shutil
from pathlib import Path

import pytest
from conftest import REPO
from plan_fixture import EXPOSURES, FIXED_ROOT, build_tree, relative
from plan_fixture import STEPS as FIXTURE_STEPS

from jwstgal.bands import get_band
from jwstgal.config import load_config
from jwstgal.errors import ConfigError, InputNotFoundError, StepFailedError
from jwstgal.steps import (
    STEP_NAMES,
    STEP_SETTINGS,
    STEPS,
    BandContext,
    BandTask,
    Step,
    StepPlan,
    StepRecord,
    TargetContext,
    get_step,
    with_needs,
)

KEYS_V0 = json.loads((Path(__file__).parent / "data" / "plan_keys_v0.json").read_text())


def context(root: Path, band: str, extra: str = "") -> BandContext:
    cfg, loc = build_tree(root)
    if extra:
        cfg.write_text(cfg.read_text() + "\n" + extra)
    return BandContext.of(load_config(cfg, loc, check_jwst=False), "ngc0628", get_band(band))


@pytest.fixture
def fixed_root():
    shutil.rmtree(FIXED_ROOT, ignore_errors=True)
    FIXED_ROOT.mkdir(parents=True)
    yield FIXED_ROOT
    shutil.rmtree(FIXED_ROOT, ignore_errors=True)


@pytest.mark.pipeline
@pytest.mark.parametrize("case", sorted(KEYS_V0))
def test_plans_and_keys_match_the_code_before_the_registry(fixed_root, case):
    """A run finished by the pre-registry code stays complete: same keys, params and outputs."""
    band, name = case.split("/")
    want = KEYS_V0[case]
    step = get_step(name)
    plan = step.plan(context(fixed_root, band), "UPSTREAM", [])
    assert plan.key == want["key"]
    assert json.loads(json.dumps(step.key_params(plan.params), default=str)) == want["params"]
    outputs = relative(plan.outputs, fixed_root)
    # products added since (a finished run's record lists its own outputs, so it stays complete)
    added = [o for o in outputs[len(want["outputs"]):] if o.endswith(ADDED_OUTPUTS)]
    assert outputs == want["outputs"] + added
    n_tasks = len(plan.outputs) if name in PER_EXPOSURE_NOW else want["n_tasks"]
    assert len(plan.tasks) == n_tasks
    waits = plan.stages.index(plan.main) == 1 and not plan.stages[0].tasks   # borrows: a stage later
    for task in (t for stage in plan.stages for t in stage.tasks):    # typed tasks (#27 item 3)
        assert isinstance(task, BandTask) and type(task).__dataclass_params__.frozen
        values = [getattr(task, f.name) for f in dataclasses.fields(task)]
        assert not any(isinstance(v, str) and "/" in v for v in values), task    # paths are Paths
    assert waits == (want["wave"] == 1)


@pytest.mark.parametrize("name", ["lv1", "lv2", "lv3"])
def test_stage_tasks_carry_their_memory_estimates(fixed_root, name):
    """Every stage task has an estimated peak (for the executor's memory budget), from its files."""
    from jwstgal.memory import BASE_BYTES

    plan = get_step(name).plan(context(fixed_root, "F200W"), "UPSTREAM", [])
    assert plan.tasks and len(plan.memory) == len(plan.tasks)
    assert all(m > BASE_BYTES for m in plan.memory)


#: Outputs steps have gained since the snapshot: astrometric_align's matched-star table.
ADDED_OUTPUTS = ("_i2d_align_table.fits",)
#: Steps that ran one task per band at the snapshot and now run one per exposure (issue #15;
#: stack_destripe: the first pass, later passes are stages of their own).
PER_EXPOSURE_NOW = ("wcs_adjust", "stack_destripe")


def test_every_configured_step_of_the_fixture_was_recorded():
    ctxs = {b: FIXTURE_STEPS if b != "F770W" else ("lv1", "lv2", "destripe", "level_match", "lv3")
            for b in EXPOSURES}
    assert sorted(KEYS_V0) == sorted(f"{b}/{s}" for b, steps in ctxs.items() for s in steps)


@pytest.mark.pipeline
@pytest.mark.parametrize("name", [s.name for s in STEPS if s.scope == "band"])
def test_plan_is_complete_after_finishing_and_reruns_when_overwritten(tmp_path, name):
    step = get_step(name)
    band = "F770W" if name == "bgr_mosaics" else "F200W"           # the fixture's background field
    ctx = context(tmp_path / "a", band)
    plan = step.plan(ctx, "UPSTREAM", [])
    assert not plan.done and plan.tasks and plan.outputs
    assert all(ctx.band_dir in p.parents for p in plan.outputs)
    for p in plan.outputs:   # what the tasks would write
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text("product")
    StepRecord(ctx.band_dir, name).finish(plan.key, plan.params, plan.outputs)
    again = step.plan(ctx, "UPSTREAM", [])
    assert again.done and again.key == plan.key and again.outputs == plan.outputs
    if name != "lv1":                                               # lv1 has no upstream step
        assert not step.plan(ctx, "OTHER UPSTREAM", []).done        # upstream changed: rerun
    for p in plan.outputs:                                          # (that plan cleared the folder)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text("product")
    StepRecord(ctx.band_dir, name).finish(plan.key, plan.params, plan.outputs)
    assert step.plan(ctx, "UPSTREAM", []).done
    plan.outputs[-1].unlink()
    assert not step.plan(ctx, "UPSTREAM", []).done                  # an output went missing
    over = context(tmp_path / "b", band, "")
    over.overwrite = {name}
    p2 = step.plan(over, "UPSTREAM", [])
    for p in p2.outputs:
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text("product")
    StepRecord(over.band_dir, name).finish(p2.key, p2.params, p2.outputs)
    assert not step.plan(over, "UPSTREAM", []).done                 # [pipeline.overwrites]


#: One override per step table: (TOML, band it applies to, band it must not touch, field, value).
OVERRIDES = {
    "destripe": ('[destripe.override.nircam_short]\nmethod = "row_median"\n', "F200W", "F300M",
                 "method", "row_median"),
    "stack_destripe": ("[stack_destripe.override.F200W]\niterations = 5\n", "F200W", "F300M",
                       "iterations", 5),
    "level_match": ("[level_match.override.nircam]\nbinning = 16\n", "F300M", "F770W", "binning", 16),
    "wcs_adjust": ('[wcs_adjust.override.ngc0628]\nbands = ["F300M"]\n', "F200W", None, "bands",
                   ["F300M"]),
    "astrometric_align": ("[astrometric_align.override.F200W]\nmin_matches = 9\n", "F200W", "F300M",
                          "min_matches", 9),
    "bg_sub": ("[bg_sub.override.miri]\nsigma = 2.5\n", "F770W", "F200W", "sigma", 2.5),
    "rate_destripe": ('[rate_destripe.override.nircam_long]\nmethod = "pca"\n', "F300M", "F200W",
                      "method", "pca"),
    "rate_bg_sub": ("[rate_bg_sub.override.F770W]\nnpixels = 9\n", "F770W", "F200W", "npixels", 9),
    "lyot_adjust": ('[lyot_adjust.override.F770W]\nmethod = "adjust"\n', "F770W", None, "method",
                    "adjust"),
    "field_mosaics": ("[field_mosaics.override.F200W]\nsame_grid = false\n", "F200W", "F300M", "same_grid",
                      False),
    "astrometric_catalog": ("[astrometric_catalog.override.F200W]\nfwhm = 2.5\n", "F200W", "F300M",
                            "fwhm", 2.5),
    "lv3": ('[lv3.override.nircam_short]\ntweakreg_groups = "visit"\n', "F200W", "F300M",
            "tweakreg_groups", "visit"),
}


def test_every_step_table_has_an_override_case():
    assert sorted(OVERRIDES) == sorted(STEP_SETTINGS)


@pytest.mark.pipeline
@pytest.mark.parametrize("name", sorted(OVERRIDES))
def test_override_changes_its_selector_and_nothing_else(tmp_path, name):
    toml, band, other, field, value = OVERRIDES[name]
    step = get_step(name)
    # one folder for both runs: astrometric_align's key holds absolute paths
    plain = context(tmp_path / "band", band)
    plain_key = step.plan(plain, "U", []).key
    ctx = context(tmp_path / "band", band, toml)
    assert step.resolved(ctx)[field] == value
    assert step.resolved(plain)[field] != value
    assert step.plan(ctx, "U", []).key != plain_key
    if other:
        baseline = context(tmp_path / "other", other)
        baseline_key = step.plan(baseline, "U", []).key
        untouched = context(tmp_path / "other", other, toml)
        assert step.resolved(untouched) == step.resolved(baseline)
        assert step.plan(untouched, "U", []).key == baseline_key


@pytest.mark.parametrize("name", sorted(OVERRIDES))
def test_unknown_override_selector_and_key_are_config_errors(tmp_path, name):
    cfg, loc = build_tree(tmp_path)
    base = cfg.read_text()
    cfg.write_text(base + f"\n[{name}.override.ngc0682]\n")
    with pytest.raises(ConfigError, match=rf"\[{name}.override\] selector 'ngc0682'.*did you mean "
                                          "'ngc0628'"):
        load_config(cfg, loc, check_jwst=False)
    field = OVERRIDES[name][3]
    cfg.write_text(base + f"\n[{name}.override.ngc0628]\n{field}x = 1\n")
    with pytest.raises(ConfigError, match=rf"unknown key '{name}.override.ngc0628.{field}x'.*"
                                          rf"did you mean '{field}'"):
        load_config(cfg, loc, check_jwst=False)


def test_a_step_solved_per_target_refuses_band_overrides(tmp_path):
    cfg, loc = build_tree(tmp_path)
    cfg.write_text(cfg.read_text() + "\n[wcs_adjust.override.F200W]\nbands = ['F300M']\n")
    with pytest.raises(ConfigError, match="not a target: this step is solved once per target"):
        load_config(cfg, loc, check_jwst=False)


def _defaults(fields):
    return {f.name: f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
            for f in fields}


def _model_defaults(model, skip=()):
    return {k: f.get_default(call_default_factory=True) for k, f in model.model_fields.items()
            if k not in skip}


def test_settings_models_and_algorithm_parameters_agree():
    """One declaration per parameter set: every field, with its default, on both sides."""
    from jwstgal.astrometry import AlignPass
    from jwstgal.astrometry_io import PassSettings
    from jwstgal.destripe import DestripeParams
    from jwstgal.destripe_stack import StackParams

    assert _defaults(dataclasses.fields(DestripeParams)) == _model_defaults(STEP_SETTINGS["destripe"])
    assert _defaults(dataclasses.fields(StackParams)) == _model_defaults(
        STEP_SETTINGS["stack_destripe"], skip=("iterations", "weight"))   # the driver's, not the frame's
    align = _defaults(dataclasses.fields(AlignPass))
    align.pop("searchrad")                                        # required on both sides
    assert align == _model_defaults(PassSettings, skip=("searchrad",))
    assert "searchrad" in PassSettings.model_fields


def test_level_match_file_layer_takes_its_defaults_from_the_settings_model():
    import inspect

    from jwstgal.steps import level_match

    src = inspect.getsource(level_match.level_match_files)
    assert "params.get(" not in src and "LevelMatchSettings(**params)" in src


def test_docs_step_table_is_the_registry():
    from jwstgal.steps import markdown_table

    assert markdown_table() in (REPO / "docs" / "steps.md").read_text()


def test_config_order_and_defaults_come_from_the_registry(tmp_path):
    from jwstgal.steps import DEFAULT_STEPS

    cfg, loc = build_tree(tmp_path)
    cfg.write_text(cfg.read_text().replace('"level_match", "stack_destripe"', '"stack_destripe", '
                                           '"level_match"'))
    with pytest.raises(ConfigError, match="steps run in the order " + ", ".join(STEP_NAMES)):
        load_config(cfg, loc, check_jwst=False)
    assert DEFAULT_STEPS == ("lv1", "lv2", "lv3")


# ---------------------------------------------------------------- layering of the package

#: Layers, low to high: a module may import its own layer and those below, never above.
LAYERS = [
    ("jwstgal", "jwstgal.data", "jwstgal.errors", "jwstgal.bands", "jwstgal.provenance", "jwstgal.dq",
     "jwstgal.layout", "jwstgal.fits_checks", "jwstgal.verdicts", "jwstgal.stpipe_spec", "jwstgal.tiled_io",
     "jwstgal.settings", "jwstgal.logs", "jwstgal.executor", "jwstgal.crds_setup", "jwstgal.memory",
     "jwstgal.backgrounds"),
    ("jwstgal.destripe", "jwstgal.destripe_miri", "jwstgal.destripe_frames", "jwstgal.destripe_stack",
     "jwstgal.masking",
     "jwstgal.level_match", "jwstgal.graph_solve", "jwstgal.frame_maps", "jwstgal.astrometry",
     "jwstgal.kernels", "jwstgal.kernel_grids", "jwstgal.psfs", "jwstgal.pixel_response",
     "jwstgal.convolve", "jwstgal.ladder", "jwstgal.anchor", "jwstgal.anchor_maps", "jwstgal.pca",
     "jwstgal.simulate.sky", "jwstgal.simulate.detector",
     "jwstgal.simulate.instrument", "jwstgal.simulate.frames", "jwstgal.simulate.score",
     "jwstgal.simulate.psf_render", "jwstgal.star_widths", "jwstgal.point_sources",
     "jwstgal.visit_shifts"),
    ("jwstgal.plots", "jwstgal.stages", "jwstgal.astrometry_io", "jwstgal.wcs_corrections",
     "jwstgal.archive", "jwstgal.mast_products",
     "jwstgal.mast_transfer", "jwstgal.release_readme",
     "jwstgal.release", "jwstgal.simulate.refs", "jwstgal.simulate", "jwstgal.convolve_products",
     "jwstgal.simulate.external", "jwstgal.simulate.colours", "jwstgal.compare", "jwstgal.kernel_products",
     "jwstgal.anchor_products", "jwstgal.ladder_qa", "jwstgal.stack_frames"),
    ("jwstgal.steps", "jwstgal.stpipe_steps"),
    ("jwstgal.config",),
    ("jwstgal.simulate.programme",
     "jwstgal.reprocess", "jwstgal.report", "jwstgal.migrate", "jwstgal.migrate_pjpipe",
     "jwstgal.post_runner"),
    ("jwstgal.cli", "jwstgal.__main__"),
]


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports() -> dict[str, set[str]]:
    """Every jwstgal module -> the jwstgal modules it imports (at any depth of its code)."""
    graph: dict[str, set[str]] = {}
    for path in sorted((REPO / "jwstgal").rglob("*.py")):
        name = _module_name(path)
        deps = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("jwstgal"):
                base = node.module
                for alias in node.names:   # `from jwstgal import dq` imports the module jwstgal.dq
                    full = f"{base}.{alias.name}"
                    deps.add(full if (REPO / (full.replace(".", "/") + ".py")).is_file() else base)
            elif isinstance(node, ast.Import):
                deps |= {a.name for a in node.names if a.name.startswith("jwstgal")}
        graph[name] = deps - {name}
    return graph


def _layer(module: str) -> int:
    best, rank = "", -1
    for i, layer in enumerate(LAYERS):
        for prefix in layer:
            inside = module == prefix or (prefix != "jwstgal" and module.startswith(prefix + "."))
            if inside and len(prefix) > len(best):
                best, rank = prefix, i
    assert rank >= 0, f"{module} is in no layer of the test: add it"
    return rank


def test_only_layout_names_the_qa_folders():
    """QA paths come from :mod:`jwstgal.layout` only (issue #27 item 3): no other module joins a
    ``"qa"`` folder onto a path (``x / "qa"``)."""
    found = []
    for path in sorted((REPO / "jwstgal").rglob("*.py")):
        if path.name == "layout.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if (isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div)
                    and isinstance(node.right, ast.Constant) and node.right.value == "qa"):
                found.append(f"{path.relative_to(REPO)}:{node.lineno}")
    assert not found, found


def test_no_import_runs_up_the_layers():
    ups = [f"{m} -> {d}" for m, deps in _imports().items() for d in deps if _layer(d) > _layer(m)]
    assert not ups, "imports that run back up the layers:\n" + "\n".join(ups)


def test_no_import_circle():
    graph = _imports()
    state: dict[str, int] = {}

    def visit(m: str, stack: list[str]) -> None:
        state[m] = 1
        for d in graph.get(m, ()):
            if state.get(d) == 1:
                pytest.fail("import circle: " + " -> ".join([*stack[stack.index(d):], d]))
            if d not in state:
                visit(d, [*stack, d])
        state[m] = 2

    for m in graph:
        if m not in state:
            visit(m, [m])


def test_no_type_checking_imports_and_no_long_modules():
    for path in (REPO / "jwstgal").rglob("*.py"):
        text = path.read_text()
        assert "TYPE_CHECKING" not in text, path
        assert len(text.splitlines()) <= 450, f"{path}: {len(text.splitlines())} lines"


def test_registry_steps_live_in_their_own_modules():
    for step in STEPS:
        assert type(step).__module__ == f"jwstgal.steps.{step.name}"


# ------------------------------------------------------------ driver status and the docs' example


def _finish(ctx: BandContext, name: str, upstream: str, inputs: list[Path]):
    plan = get_step(name).plan(ctx, upstream, inputs)
    for p in plan.outputs:
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text("product")
    StepRecord(ctx.band_dir, name).finish(plan.key, plan.params, plan.outputs)
    return plan


def test_run_summary_and_qa_page_show_skipped_steps(tmp_path):
    from jwstgal.executor import Executor, ExecutorSpec
    from jwstgal.report import write_report
    from jwstgal.reprocess import NOT_CONFIGURED, SKIPPED, run_all

    cfg, loc = build_tree(tmp_path)
    cfg.write_text(cfg.read_text().replace('nircam = ["lv1", "lv2", "destripe", "wcs_adjust", '
                                           '"level_match", "stack_destripe", "lv3",\n'
                                           '          "astrometric_align"]', 'nircam = ["lv1", "lv2"]'))
    run = load_config(cfg, loc, check_jwst=False)
    ctx = BandContext.of(run, "ngc0628", get_band("F200W"))
    assert ctx.steps == ["lv1", "lv2"]
    lv1 = _finish(ctx, "lv1", "", [])
    _finish(ctx, "lv2", lv1.key, lv1.outputs)
    (result,) = run_all(run, bands=["F200W"], progress=False, executor=Executor(ExecutorSpec("serial")))
    assert result.steps_run == () and result.steps_skipped == ("lv1", "lv2") and not result.error
    assert result.status == {s: SKIPPED if s in ("lv1", "lv2") else NOT_CONFIGURED for s in STEP_NAMES}
    page = write_report(run, [result]).read_text()
    assert page.count("skipped (complete)") == 2 and page.count("not configured") == 0
    summary = page[page.index("<table id='summary'>"):]
    assert "<td>ngc0628</td><td><a href='#ngc0628-F200W'>F200W</a></td><td>2 skipped</td>" in summary


def test_docs_example_step_plans_and_runs(tmp_path, monkeypatch):
    """The example step of the docs is real code: it plans on a band and its task works."""
    import re
    import sys
    from types import ModuleType, SimpleNamespace

    import numpy as np
    from astropy.io import fits
    from astropy.stats import sigma_clipped_stats
    from pydantic import Field

    from jwstgal.provenance import atomic_path, hash_params, stamp_header
    from jwstgal.settings import StepSettings
    from jwstgal.steps import Step, StepPlan

    page = (REPO / "docs" / "architecture.md").read_text()
    code = re.search(r"```python\n(class MedianSubSettings.*?)```", page, re.S)
    assert code, "docs/architecture.md lost its example step"
    module = ModuleType("median_sub_example")        # a task class is defined at module level
    monkeypatch.setitem(sys.modules, module.__name__, module)
    ns = module.__dict__
    ns.update({"StepSettings": StepSettings, "Field": Field, "fits": fits, "atomic_path": atomic_path,
               "sigma_clipped_stats": sigma_clipped_stats, "stamp_header": stamp_header, "Step": Step,
               "StepPlan": StepPlan, "hash_params": hash_params, "BandTask": BandTask,
               "dataclass": dataclasses.dataclass, "Path": Path})
    exec(code.group(1), ns)
    assert len(code.group(1).splitlines()) <= 38
    cfg, loc = build_tree(tmp_path)
    run = load_config(cfg, loc, check_jwst=False)
    table = ns["MedianSubSettings"].table()(sigma=2.5, override={"F200W": {"sigma": 4.0}})
    science = SimpleNamespace(**dict(run.science), median_sub=table)
    science.step_table = lambda name: getattr(science, name)      # as ScienceConfig.step_table
    view = SimpleNamespace(**{k: getattr(run, k) for k in ("raw_dir", "reprocess_dir", "alignment_dir",
                                                            "config_path", "config_hash")}, science=science)
    ctx = BandContext(view, "ngc0628", get_band("F200W"), ["lv1", "lv2", "median_sub"], set())
    step = ns["MedianSub"]()
    plan = step.plan(ctx, "U", [])
    assert plan.params == {"sigma": 4.0} and len(plan.tasks) == 3 and not plan.done
    src, dst = tmp_path / "in_cal.fits", tmp_path / "out" / "in_cal.fits"
    rng = np.random.default_rng(1)
    fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(rng.normal(5.0, 1.0, (64, 64)), name="SCI")]).writeto(src)
    task = ns["MedianSubTask"](src, dst, plan.params, "cfg")
    assert task.run() == [str(dst)] and [t.dst for t in plan.tasks] == plan.outputs
    out = fits.getdata(dst, "SCI")
    assert abs(np.median(out)) < 0.05 and fits.getheader(dst)["JG_MEDIA"]


def test_wcs_solve_is_a_target_step_and_wcs_adjust_applies_its_file(tmp_path):
    """Issue #27 item 1: the solve is planned on the target (stars found per reference exposure,
    then one solve), its record is the target's; wcs_adjust applies the file, and waits for it."""
    from jwstgal.steps.wcs_adjust import ApplyTask
    from jwstgal.steps.wcs_solve import DetectTask, SolveTask

    ctx = context(tmp_path, "F200W")
    assert "wcs_solve" not in ctx.steps                                       # not listed, but needed:
    steps = with_needs(ctx.steps)
    assert steps.index("wcs_solve") == steps.index("wcs_adjust") - 1          # the driver runs it
    tctx = TargetContext(ctx.run, "ngc0628", [ctx])
    toml = tctx.folder / "wcs_adjust.toml"
    solve, adjust = get_step("wcs_solve"), get_step("wcs_adjust")
    assert (solve.scope, adjust.scope) == ("target", "band")
    assert solve.plan(tctx).done and toml.is_file()                   # a file there is used as it is
    applied = adjust.plan(ctx, "UPSTREAM", [])
    assert len(applied.stages) == 1 and len(applied.tasks) == len(applied.outputs) > 0
    assert all(isinstance(t, ApplyTask) and t.toml_path == toml for t in applied.tasks)
    toml.unlink()
    with pytest.raises(InputNotFoundError, match="wcs_solve"):
        adjust.plan(ctx, "UPSTREAM", [])
    plan = solve.plan(tctx)
    detect, main = plan.stages
    assert [t.cal for t in detect.tasks] == sorted((ctx.band_dir / "cal").glob("*_cal.fits"))
    assert all(isinstance(t, DetectTask) and ".wcs_adjust_stars/F200W/" in str(t.cache) for t in detect.tasks)
    assert [(type(t), t.toml_path) for t in main.tasks] == [(SolveTask, toml)]        # one solve
    record = StepRecord(tctx.folder, "wcs_solve")
    assert record.path == tctx.folder / ".jwstgal" / "wcs_solve.json" and record.read()["key"] == plan.key
    other = TargetContext(ctx.run, "ngc0628", [BandContext.of(ctx.run, "ngc0628", get_band("F300M"))])
    assert repr(solve.plan(other).stages) == repr(plan.stages)       # the target's, from any band


@dataclasses.dataclass(frozen=True)
class _CountTask(BandTask):
    out: Path
    fail: bool = False

    def run(self) -> list[str]:
        if self.fail:
            msg = f"{self.out}: cannot"
            raise StepFailedError(msg)
        with self.out.open("a") as fh:
            fh.write("ran\n")
        return [str(self.out)]


class _TargetToy(Step):
    name, scope, summary = "toy_target", "target", "a target step of the test"
    fail = False

    def plan(self, ctx, upstream="", inputs=None):
        out = ctx.folder / "toy.txt"
        if (begun := ctx.begin(self.name, "K", {})).done:
            return begun.done
        return StepPlan(self.name, "K", {}, [out], [_CountTask(out, self.fail)])


@pytest.mark.parametrize("fail", [False, True])
def test_the_driver_runs_a_target_step_once_for_its_bands(tmp_path, fail):
    """Issue #27 item 1: a target step is planned and run once for all its bands, recorded in the
    target folder, and leaves the bands' chain of inputs as it was; a failure fails every band."""
    from jwstgal.executor import ExecutorSpec, open_executor
    from jwstgal.reprocess import FAILED, RAN, SKIPPED, _BandState, _run_step

    ctx = context(tmp_path, "F200W")
    states = [_BandState(ctx, "UP", [tmp_path / "a"]),
              _BandState(BandContext.of(ctx.run, "ngc0628", get_band("F300M")), "UP2", [])]
    for st in states:
        st.ctx.steps.append("toy_target")
    toy = _TargetToy()
    toy.fail = fail
    with open_executor(ExecutorSpec("serial")) as ex:
        _run_step(toy, states, ex, False)
    out = ctx.band_dir.parent / "toy.txt"
    assert [(st.upstream, st.outputs) for st in states] == [("UP", [tmp_path / "a"]), ("UP2", [])]
    record = StepRecord(ctx.band_dir.parent, "toy_target")
    if fail:
        assert not out.exists() and not record.is_complete("K")
        assert all(st.status["toy_target"] == FAILED and "cannot" in st.error for st in states)
        return
    assert out.read_text() == "ran\n" and record.is_complete("K")            # once, for both bands
    assert all(st.status["toy_target"] == RAN for st in states)
    with open_executor(ExecutorSpec("serial")) as ex:
        _run_step(toy, states, ex, False)
    assert out.read_text() == "ran\n" and all(st.status["toy_target"] == SKIPPED for st in states)


def test_a_repeated_step_runs_again_on_the_first_runs_output_with_its_own_table(tmp_path):
    """``destripe_2``: its own folder, record, figures and ``[destripe_2]`` (else ``[destripe]``'s)."""
    import numpy as np
    from astropy.io import fits

    from jwstgal.executor import Executor, ExecutorSpec
    from jwstgal.report import write_report
    from jwstgal.reprocess import RAN, SKIPPED, run_all
    from jwstgal.simulate.frames import striped_frame

    cfg, loc = build_tree(tmp_path)
    text = cfg.read_text().replace('nircam = ["lv1", "lv2", "destripe", "wcs_adjust", "level_match", '
                                   '"stack_destripe", "lv3",\n          "astrometric_align"]',
                                   'nircam = ["lv1", "lv2", "destripe", "destripe_2"]')
    cfg.write_text(text + '\n[destripe_2]\nmethod = "row_median"\n')
    run = load_config(cfg, loc, check_jwst=False)
    ctx = BandContext.of(run, "ngc0628", get_band("F200W"))
    lv1 = _finish(ctx, "lv1", "", [])
    lv2 = _finish(ctx, "lv2", lv1.key, lv1.outputs)
    for i, cal in enumerate(lv2.outputs):                      # real frames with stripes
        fr = striped_frame(128, seed=i, n_amps=1, n_stars=20)
        stem = cal.name.removesuffix("_cal.fits")
        raw = tmp_path / "raw" / "ngc0628" / "mastDownload" / "JWST" / stem
        hdr = fits.getheader(raw / f"{stem}_uncal.fits")
        fits.HDUList([fits.PrimaryHDU(header=hdr), fits.ImageHDU(fr.data, name="SCI"),
                      fits.ImageHDU(fr.err, name="ERR"), fits.ImageHDU(fr.dq, name="DQ")]
                     ).writeto(cal, overwrite=True)
    serial = Executor(ExecutorSpec("serial"))

    def go():
        (res,) = run_all(load_config(cfg, loc, check_jwst=False), bands=["F200W"], progress=False,
                         executor=serial)
        assert not res.error, res.error
        return res

    res = go()
    assert res.status["destripe"] == res.status["destripe_2"] == RAN
    again = sorted((ctx.band_dir / "destripe_2").glob("*_cal.fits"))
    assert [p.name for p in again] == [p.name for p in lv2.outputs]
    for p in again:                                            # destripe's output, destriped again
        h = fits.getheader(p)
        history = [str(c) for c in h["HISTORY"] if str(c).startswith("jwstgal destripe parameters")]
        assert h["DSTRMETH"] == "row_median" and len(history) == 2
        assert '"median_filter"' in history[0] and '"row_median"' in history[1]
    first = fits.getdata(ctx.band_dir / "destripe" / again[0].name, "SCI")
    assert not np.array_equal(first, fits.getdata(again[0], "SCI"))
    assert (ctx.band_dir / "qa" / "destripe_2.png").is_file()
    assert "<h3>destripe_2</h3>" in write_report(run, [res]).read_text()
    assert go().status["destripe_2"] == SKIPPED                 # complete: nothing to redo
    cfg.write_text(text + '\n[destripe_2]\nmethod = "row_median"\nsigma = 2.5\n')
    res = go()                                                 # its own table changed: it alone reruns
    assert (res.status["destripe"], res.status["destripe_2"]) == (SKIPPED, RAN)
    cfg.write_text(text)                                       # no table: [destripe]'s settings
    run = load_config(cfg, loc, check_jwst=False)
    assert run.science.step_table("destripe_2") is run.science.destripe
