"""The project's package lists agree, and the installed entry points exist."""

import re
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")  # Python >= 3.11

ROOT = Path(__file__).resolve().parents[1]


def _name(spec: str) -> str:
    return re.split(r"[<>=!\[ ]", spec.strip(), maxsplit=1)[0].lower().replace("_", "-")


def _pyproject_requirements() -> dict[str, str]:
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())
    specs = list(data["project"]["dependencies"]) + list(data["project"]["optional-dependencies"]["dev"])
    return {_name(s): s.replace(" ", "") for s in specs}


def _environment_requirements() -> dict[str, str]:
    specs = []
    for line in (ROOT / "environment.yml").read_text().splitlines():
        m = re.match(r"^\s*-\s+([A-Za-z0-9_.,\-\[\]]+\s*[<>=!].*)$", line)
        if m and not m.group(1).startswith("python"):
            specs.append(m.group(1))
    return {_name(s): s.replace(" ", "") for s in specs}


def test_environment_yml_lists_the_same_packages_as_pyproject():
    py, env = _pyproject_requirements(), _environment_requirements()
    assert set(py) == set(env), f"only in pyproject: {set(py) - set(env)}; only in environment.yml: {set(env) - set(py)}"
    assert py == env, {k: (py[k], env[k]) for k in py if py[k] != env[k]}


def test_every_dependency_has_a_lower_bound():
    for name, spec in _pyproject_requirements().items():
        assert ">=" in spec, f"{name} has no lower bound: {spec}"


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    assert "bash scripts/run test" in readme
    assert "bash scripts/run test" in ci
