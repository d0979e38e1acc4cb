"""The committed lock (requirements/lock.txt) against pyproject.toml and the installed environment.

`bash setup.sh` installs exactly the lock; these tests fail when a requirement of pyproject.toml is
added or changed without refreshing the lock (`bash setup.sh --relock`), when the lock loses its
hashes, or when the environment the tests run in is not the locked one.
"""

from __future__ import annotations

import importlib.metadata
import re
import tomllib
from pathlib import Path

import pytest
from conftest import REPO
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

LOCK = REPO / "requirements" / "lock.txt"
UV_LOCK = REPO / "requirements" / "uv.txt"
# the environments the lock is for: Linux x86_64 with the Python versions setup.sh accepts
ENVIRONMENTS = [{**default_environment(), "sys_platform": "linux", "platform_system": "Linux",
                 "os_name": "posix", "platform_machine": "x86_64", "implementation_name": "cpython",
                 "platform_python_implementation": "CPython", "python_version": v,
                 "python_full_version": f"{v}.0"} for v in ("3.12", "3.13", "3.14")]


Pin = tuple[Version, Requirement, int]


def parse_lock(text: str) -> dict[str, list[Pin]]:
    """``{name: [(version, requirement with its marker, number of hashes), ...]}`` of a uv lock.

    A package has several pins when its versions differ by environment (``sphinx==9.1.1 ;
    python_full_version < '3.13'`` and ``sphinx==9.2.0 ; python_full_version >= '3.13'``); their
    markers must then never hold together.
    """
    entries: dict[str, list[Pin]] = {}
    for block in re.split(r"\n(?=\S)", text):
        first = block.split("\\", 1)[0].strip()
        if not first or first.startswith("#"):
            continue
        req = Requirement(first)
        (spec,) = req.specifier
        assert spec.operator == "==", f"{LOCK.name}: {first!r} is not an exact pin"
        name = canonicalize_name(req.name)
        entries.setdefault(name, []).append((Version(spec.version), req, block.count("--hash=sha256:")))
    for name, pins in entries.items():
        for env in ENVIRONMENTS:
            held = [p for p in pins if p[1].marker is None or p[1].marker.evaluate(env)]
            assert len(held) <= 1, f"{LOCK.name}: {name} pinned twice for Python {env['python_version']}"
    return entries


def pin_for(lock: dict[str, list[Pin]], name: str, env: dict[str, str]) -> Pin | None:
    """The pin of ``name`` that applies in ``env`` (None: not installed there)."""
    for pin in lock.get(name, []):
        if pin[1].marker is None or pin[1].marker.evaluate(env):
            return pin
    return None


def project_requirements(pyproject: dict) -> list[tuple[str, Requirement]]:
    """Every requirement of pyproject.toml, with the list it comes from."""
    project = pyproject["project"]
    reqs = [("dependencies", Requirement(r)) for r in project["dependencies"]]
    for extra, lst in project.get("optional-dependencies", {}).items():
        reqs += [(f"optional-dependencies.{extra}", Requirement(r)) for r in lst]
    return reqs


def unmet(pyproject: dict, lock: dict[str, list[Pin]]) -> list[str]:
    """The requirements of ``pyproject`` that the lock does not satisfy, in words (empty: in step)."""
    problems = []
    for where, req in project_requirements(pyproject):
        name = canonicalize_name(req.name)
        if name == "jwstgal":
            problems.append(f"{where}: {req} refers to the package itself (list the requirements)")
            continue
        for env in ENVIRONMENTS:
            if req.marker is not None and not req.marker.evaluate(env):
                continue
            if name not in lock:
                problems.append(f"{where}: {req} is not in the lock")
                break
            found = pin_for(lock, name, env)
            if found is None:
                markers = " or ".join(str(p[1].marker) for p in lock[name])
                problems.append(f"{where}: {req} is locked only where {markers}")
                break
            version = found[0]
            if not req.specifier.contains(version, prereleases=True):
                problems.append(f"{where}: {req} is not met by the locked {name}=={version}")
                break
    return problems


@pytest.fixture(scope="module")
def lock():
    return parse_lock(LOCK.read_text())


@pytest.fixture(scope="module")
def pyproject():
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def test_the_lock_satisfies_every_requirement_of_pyproject(lock, pyproject):
    assert unmet(pyproject, lock) == [], "refresh the lock: bash setup.sh --relock"


@pytest.mark.parametrize("edit", [
    ("numpy>=2.0", "numpy>=99"),                                   # a bound raised past the pin
    ('"tqdm>=4.66",', '"tqdm>=4.66", "brand-new-package>=1.0",'),   # a requirement added
    ('"pytest>=8"', '"pytest<8"'),                                 # an extra's requirement changed
    ('"selenium>=4.20"', '"jwstgal[cluster]"'),                     # the self-reference of issue #25
])
def test_a_requirement_changed_without_relocking_is_caught(lock, edit):
    text = (REPO / "pyproject.toml").read_text()
    old, new = edit
    assert old in text
    problems = unmet(tomllib.loads(text.replace(old, new, 1)), lock)
    assert len(problems) == 1, problems


def test_every_pin_has_hashes_and_the_lock_is_the_one_setup_writes(lock):
    assert len(lock) > 100                                         # the whole environment, not a stub
    assert {n for n, pins in lock.items() for _, _, hashes in pins if hashes == 0} == set()
    header = LOCK.read_text().splitlines()[:2]
    assert header[1].strip("# ") == "bash setup.sh --relock"       # refreshed by the documented command
    setup = (REPO / "setup.sh").read_text()
    assert "--generate-hashes" in setup and "--universal" in setup and "--require-hashes" in setup
    ((uv,),) = parse_lock(UV_LOCK.read_text()).values()
    assert uv[2] >= 10                                             # uv's wheels for every platform


def test_the_cluster_requirements_resolve_on_their_own(pyproject):
    extras = pyproject["project"]["optional-dependencies"]
    cluster = {canonicalize_name(Requirement(r).name): r for r in extras["cluster"]}
    # `dask[distributed]` let pip pick a dask release with no distributed and backtrack (issue #25)
    assert "dask" not in cluster and "distributed" in cluster and "dask-jobqueue" in cluster
    test = {canonicalize_name(Requirement(r).name): r for r in extras["test"]}
    assert {n: test.get(n) for n in cluster} == cluster            # the test extra repeats them exactly


def test_the_running_environment_is_the_locked_one(lock):
    env = default_environment()
    wrong = {}
    for name in lock:
        found = pin_for(lock, name, env)
        if found is None:
            continue
        version = found[0]
        try:
            have = Version(importlib.metadata.version(name))
        except importlib.metadata.PackageNotFoundError:
            have = None
        if have != version:
            wrong[name] = (str(version), str(have))
    assert wrong == {}, "not the locked environment (locked, installed): run bash setup.sh"


def test_astroquery_private_attributes_used_by_the_mast_code_exist():
    """archive.MastArchive rebinds these: the version bound in pyproject.toml rests on them."""
    from astroquery.mast import ObservationsClass

    obs = ObservationsClass()
    portal = obs._portal_api_connection
    for attr in ("MAST_REQUEST_URL", "COLUMNS_CONFIG_URL", "MAST_DOWNLOAD_URL", "MAST_BUNDLE_URL"):
        assert isinstance(getattr(portal, attr), str), attr
    assert hasattr(obs._session, "cookies") and hasattr(obs._session, "get")
    spec = next(Requirement(r) for r in tomllib.loads((REPO / "pyproject.toml").read_text())
                ["project"]["dependencies"] if r.startswith("astroquery"))
    assert not spec.specifier.contains("0.5.0")                     # bounded below the next minor



def test_citation_changelog_and_type_marker_are_in_step_with_the_version():
    import yaml

    import jwstgal

    cff = yaml.safe_load((REPO / "CITATION.cff").read_text())
    assert cff["cff-version"] == "1.2.0" and cff["authors"] and cff["title"].startswith("jwstgal")
    assert cff["version"] == jwstgal.__version__
    changelog = (REPO / "CHANGELOG.md").read_text()
    versions = re.findall(r"^## (\S+)", changelog, flags=re.M)
    assert versions[0] == "Unreleased" and jwstgal.__version__ in versions
    assert (Path(jwstgal.__file__).parent / "py.typed").is_file()
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert "py.typed" in pyproject["tool"]["setuptools"]["package-data"]["jwstgal"]


def test_a_package_pinned_twice_for_one_python_is_caught():
    """Pins split by environment are fine; two that hold for the same Python are a broken lock."""
    split = ("sphinx==9.1.1 ; python_full_version < '3.13' \\\n    --hash=sha256:aa\n"
             "sphinx==9.2.0 ; python_full_version >= '3.13' \\\n    --hash=sha256:bb\n")
    pins = parse_lock(split)["sphinx"]
    versions = [str(pin_for({"sphinx": pins}, "sphinx", env)[0]) for env in ENVIRONMENTS]
    assert versions == ["9.1.1", "9.2.0", "9.2.0"]
    with pytest.raises(AssertionError, match="pinned twice for Python 3.12"):
        parse_lock(split.replace(">= '3.13'", ">= '3.12'"))
