"""The project's package lists agree, and the installed entry points exist."""

import json
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
    assert set(py) == set(env), (
        f"only in pyproject: {set(py) - set(env)}; only in environment.yml: {set(env) - set(py)}"
    )
    assert py == env, {k: (py[k], env[k]) for k in py if py[k] != env[k]}


def test_every_dependency_has_a_lower_bound():
    for name, spec in _pyproject_requirements().items():
        assert ">=" in spec, f"{name} has no lower bound: {spec}"


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    assert "bash scripts/run test" in readme
    assert "bash scripts/run test" in ci


def test_project_metadata_is_complete():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["license"] == "MIT" and (ROOT / "LICENSE").read_text().startswith("MIT License")
    assert project["keywords"] and any(
        c.startswith("Programming Language :: Python :: 3.1") for c in project["classifiers"]
    )
    for name in ("CITATION.cff", "CHANGELOG.md", "coremtl_lite/py.typed"):
        assert (ROOT / name).is_file(), name
    cff = (ROOT / "CITATION.cff").read_text()
    assert "cff-version: 1.2.0" in cff and f"version: {project['version']}" in cff
    assert f"## [{project['version']}]" in (ROOT / "CHANGELOG.md").read_text()


def _collected(*args: str) -> set[str]:
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-m", "pytest", "--co", "-q", "-p", "no:cacheprovider", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return {line for line in done.stdout.splitlines() if "::" in line}


def test_the_kernel_process_of_the_test_command_runs_every_notebook_cell():
    """``bash scripts/run test`` runs ``-m kernels`` over tests/ and tutorials/ (nbval) beside ``-m "not
    kernels"`` over tests/ alone: every notebook cell must be marked ``kernels`` (conftest.py), or it
    would run in neither; the marked tests of tests/ must be selected with them."""
    script = (ROOT / "scripts" / "run").read_text()
    assert "-m kernels" in script and '-m "not kernels"' in script
    nbval = ["tests", "tutorials", "--nbval", "--nbval-current-env", "--ignore=tutorials/assignments/student"]
    kernels = _collected(*nbval, "-m", "kernels")
    notebooks = sorted(ROOT.glob("tutorials/*.ipynb")) + sorted(ROOT.glob("tutorials/assignments/*.ipynb"))
    for nb in notebooks:
        cells = [t for t in kernels if t.startswith(f"{nb.relative_to(ROOT)}::Cell ")]
        assert len(cells) == sum(c["cell_type"] == "code" for c in json.loads(nb.read_text())["cells"]), nb
    assert any(t.startswith("tests/test_nbgrader.py::") for t in kernels)
    assert not any(t.startswith("tests/test_models.py::") for t in kernels)


@pytest.mark.slow
def test_wheel_installs_and_runs_in_a_fresh_venv(tmp_path):
    """Build the wheel, install it with --no-deps into a fresh venv that sees this environment's
    packages through a .pth file (torch and the rest are not downloaded or reinstalled: the wheel's
    own contents are what is tested), then run the CLI from outside the repository."""
    import os
    import subprocess
    import sys
    import sysconfig

    pytest.importorskip("build")
    dist, venv, work = tmp_path / "dist", tmp_path / "venv", tmp_path / "work"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}

    def run(*cmd, cwd=work):
        proc = subprocess.run(
            [str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=600
        )
        assert proc.returncode == 0, f"{cmd} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        return proc.stdout

    run(sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", dist, ROOT, cwd=ROOT)
    wheel = next(dist.glob("coremtl_lite-*.whl"))
    run(sys.executable, "-m", "venv", venv)
    py = venv / "bin" / "python"
    site = run(py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])").strip()
    Path(site, "project-env.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    run(py, "-m", "pip", "install", "--no-deps", "--no-index", "-q", wheel)
    where = run(
        py, "-c", "import coremtl_lite, pathlib; print(pathlib.Path(coremtl_lite.__file__).resolve())"
    )
    assert where.strip().startswith(str(venv.resolve())), where  # the installed wheel, not the checkout
    cli = venv / "bin" / "coremtl-lite"
    assert "coremtl-lite" in run(cli, "--version")
    assert "student notebooks are up to date" in run(cli, "assignments", "--check")
    out = run(cli, "tutorials", work / "course")
    assert "copied" in out and (work / "course" / "01_scm_theory.ipynb").is_file()
    assert len(list((work / "course" / "assignments" / "student").glob("*.ipynb"))) == 4
    assert Path(site, "coremtl_lite", "py.typed").is_file()
