"""The documentation cannot drift: generated pages match the code, links resolve, the site builds.

``docs/configuration.md`` is generated from the settings models (``python -m jwstgal.config.reference
--write``) and ``docs/steps.md`` holds the registry's step table (tests/test_steps.py); the README is
short and every figure it quotes is in ``docs/``.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib

import pytest
from conftest import REPO

DOCS = REPO / "docs"


def _pages() -> list:
    return sorted(DOCS.glob("*.md"))


def test_the_configuration_reference_is_generated_from_the_models():
    from jwstgal.config.reference import REFERENCE_PAGE, reference_markdown

    assert REFERENCE_PAGE == DOCS / "configuration.md"
    assert REFERENCE_PAGE.read_text() == reference_markdown(), (
        "docs/configuration.md is stale: python -m jwstgal.config.reference --write")


def test_every_key_of_both_config_files_has_a_description():
    from jwstgal.config.reference import missing_descriptions

    assert missing_descriptions() == []


def _sections(page: str) -> dict[str, set[str]]:
    """``{table heading: keys of its table}`` of the reference page."""
    out: dict[str, set[str]] = {}
    current = None
    for line in page.splitlines():
        if m := re.match(r"### `\[\[?(.+?)\]\]?`", line):
            current = out.setdefault(m.group(1), set())
        elif current is not None and (m := re.match(r"\| `(\w+)` \|", line)):
            current.add(m.group(1))
    return out


def _keys(table: dict, path: str, sections: dict[str, set[str]], found: list[tuple[str, str]]) -> None:
    """(table, key) of every key of a parsed config, following the reference's sections down."""
    for key, value in table.items():
        if key == "override":                              # any key of the step: described once
            continue
        found.append((path, key))
        sub = f"{path}.{key}".lstrip(".")
        items = value if isinstance(value, list) else [value]
        if f"{sub}.<key>" in sections and isinstance(value, dict):   # a table of tables: free keys
            items = [v for free in value.values() for v in (free if isinstance(free, list) else [free])]
            sub = f"{sub}.<key>"
        for item in items:
            if isinstance(item, dict) and sections.get(sub):     # a table with keys of its own
                _keys(item, sub, sections, found)


@pytest.mark.parametrize("name", ["config.toml", "local.toml", "demo.toml"])
def test_every_key_the_shipped_configs_use_is_in_the_reference(name):
    """The reference covers the real files: each key they set has a row in its table's section."""
    sections = _sections((DOCS / "configuration.md").read_text())
    sections = {re.sub(r"<[^>]+>", "<key>", k): v for k, v in sections.items()}
    found: list[tuple[str, str]] = []
    _keys(tomllib.loads((REPO / "config" / name).read_text()), "", sections, found)
    assert len(found) > 5
    missing = [f"[{t}] {k}" for t, k in found if t and k not in sections.get(t, set())]
    assert missing == [], f"{name}: keys missing from docs/configuration.md"
    tables = {k for t, k in found if not t}             # keys at the top level: tables of the file
    assert tables <= set(sections) | {"projects"}, tables - set(sections)


def test_a_new_settings_key_shows_in_the_reference_at_once(monkeypatch):
    """Adding a field to a step's settings changes the generated page (so the stale test bites)."""
    from pydantic import Field, create_model

    from jwstgal.config import reference
    from jwstgal.steps.bg_sub import BgSubSettings

    before = reference.reference_markdown()
    extra = create_model("BgSubSettings", __base__=BgSubSettings, __doc__=BgSubSettings.__doc__,
                         box_size=(int, Field(64, ge=8, description="A new key.")))
    fields = dict(reference.ScienceConfig.model_fields)
    patched = create_model("ScienceConfig", __base__=reference.ScienceConfig,
                           bg_sub=(extra, Field(default_factory=extra, description="x")))
    monkeypatch.setattr(reference, "ScienceConfig", patched)
    after = reference.reference_markdown()
    assert before != after
    assert "| `box_size` | integer (≥ 8) | `64` | A new key. |" in after
    assert set(fields) <= set(patched.model_fields)


def test_the_readme_is_short_and_its_links_resolve():
    readme = (REPO / "README.md").read_text()
    assert len(readme.splitlines()) <= 150
    for page in [REPO / "README.md", *_pages()]:
        for target in re.findall(r"\]\(([^)#\s]+\.md)(?:#[^)]*)?\)", page.read_text()):
            assert (page.parent / target).is_file(), f"{page.name} links to missing {target}"


def test_every_figure_the_readme_quotes_is_in_the_docs():
    """A measured number in the README (``1.9 mas``, ``7.8 min``) is one the docs state too."""
    readme = re.sub(r"```.*?```", "", (REPO / "README.md").read_text(), flags=re.S)
    docs = " ".join(p.read_text() for p in _pages())
    docs = " ".join(docs.split())
    figures = re.findall(r"(\d+(?:\.\d+)?(?: / \d+(?:\.\d+)?)* (?:mas|min|s|%|GB|MiB|minutes))\b", readme)
    assert len(figures) >= 3
    quoted = [" ".join(f.split()) for f in figures]
    assert [f for f in quoted if f not in docs] == []


@pytest.mark.pipeline
def test_the_docs_build_without_a_warning(tmp_path):
    """The Sphinx site builds with warnings as errors (the API pages import the package)."""
    run = subprocess.run([sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html",
                          "-d", str(tmp_path / "doctrees"), str(DOCS), str(tmp_path / "html")],
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    assert (tmp_path / "html" / "configuration.html").is_file()
    assert "memory_budget_gb" in (tmp_path / "html" / "configuration.html").read_text()


def test_every_failure_entry_names_a_test_that_exists():
    """Each promise of docs/failures.md names the test that keeps it, and that test is real."""
    page = (DOCS / "failures.md").read_text()
    entries = re.split(r"\n(?=- \*\*)", page)[1:]
    assert len(entries) >= 10
    sources = {p.name: p.read_text() for p in (REPO / "tests").glob("test_*.py")}
    for entry in entries:
        files = re.findall(r"tests/(test_\w+\.py)", entry)
        tests = [t for t in re.findall(r"\b(test_\w+)\b", entry) if f"{t}.py" not in files]
        title = entry.split("**")[1]
        assert files or tests, f"{title!r} names no test"
        assert all(f in sources for f in files), f"{title!r}: {files}"
        for test in tests:
            assert any(f"def {test}(" in src for src in sources.values()), f"{title!r}: no {test}"


def test_the_post_step_table_of_the_docs_is_the_registry():
    from jwstgal.steps import post_markdown_table

    assert post_markdown_table() in (DOCS / "steps.md").read_text()
