"""environment.yml (conda, Binder) and pyproject.toml list the same requirements.

pyproject's dependencies plus its "book" and "test" extras must appear in environment.yml, each
once, with the same version specifier and environment marker, and nothing else may be there
(besides python, pip and the package itself). conda-forge names that differ from PyPI's are
mapped in CONDA_NAMES.

And the environment the scripts set up: the kernel that executes the chapters starts without
warnings; scripts/lib.sh's apt_install (the browser for the site test, as root) installs no
recommended packages, upgrades nothing already installed and says what it installs first.
"""

from __future__ import annotations

import copy
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name

if sys.version_info >= (3, 11):
    import tomllib
else:  # the test extra installs tomli on python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parent.parent
EXTRAS = ("book", "test")
CONDA_NAMES = {"pytorch": "torch"}  # conda-forge name -> PyPI name
CONDA_ONLY = {"python", "pip"}


def pyproject_requirements(pyproject: dict) -> dict[str, tuple[str, str]]:
    """name -> (specifier, marker) for the dependencies and the EXTRAS of pyproject.toml."""
    project = pyproject["project"]
    lines = list(project["dependencies"])
    for extra in EXTRAS:
        lines += project["optional-dependencies"][extra]
    reqs: dict[str, tuple[str, str]] = {}
    for line in lines:
        req = Requirement(line)
        key = canonicalize_name(req.name)
        value = (str(req.specifier), str(req.marker or ""))
        assert reqs.get(key, value) == value, f"pyproject lists {req.name} twice, differently"
        reqs[key] = value
    return reqs


def environment_requirements(env: dict) -> tuple[dict[str, tuple[str, str]], list[str], list[str]]:
    """(name -> (specifier, marker), duplicates, other pip lines) of environment.yml."""
    reqs: dict[str, tuple[str, str]] = {}
    duplicates: list[str] = []
    other: list[str] = []
    entries: list[str] = []
    for dep in env["dependencies"]:
        if isinstance(dep, dict):
            for line in dep.get("pip", []):
                (other if line.startswith("-") else entries).append(line)
        else:
            entries.append(dep)
    for line in entries:
        name = line.split("=")[0].split("<")[0].split(">")[0].split(";")[0].strip()
        if name in CONDA_ONLY:
            continue
        req = Requirement(line.replace(name, CONDA_NAMES.get(name, name), 1))
        key = canonicalize_name(req.name)
        if key in reqs:
            duplicates.append(req.name)
        reqs[key] = (str(req.specifier), str(req.marker or ""))
    return reqs, duplicates, other


def drift(expected: dict, found: dict) -> list[str]:
    problems = []
    for name in sorted(expected.keys() - found.keys()):
        problems.append(f"{name}: in pyproject.toml, missing from environment.yml")
    for name in sorted(found.keys() - expected.keys()):
        problems.append(f"{name}: in environment.yml, not in pyproject.toml")
    for name in sorted(expected.keys() & found.keys()):
        (spec_p, marker_p), (spec_e, marker_e) = expected[name], found[name]
        if SpecifierSet(spec_p) != SpecifierSet(spec_e):
            problems.append(f"{name}: {spec_p!r} in pyproject.toml, {spec_e!r} in environment.yml")
        if marker_p != marker_e:
            problems.append(f"{name}: marker {marker_p!r} vs {marker_e!r} in environment.yml")
    return problems


@pytest.fixture(scope="module")
def pyproject():
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


@pytest.fixture(scope="module")
def env():
    return yaml.safe_load((ROOT / "environment.yml").read_text())


def test_environment_matches_pyproject(pyproject, env):
    found, duplicates, _ = environment_requirements(env)
    problems = drift(pyproject_requirements(pyproject), found)
    problems += [f"{name}: listed twice in environment.yml" for name in duplicates]
    assert not problems, "environment.yml and pyproject.toml differ:\n  " + "\n  ".join(problems)


def test_environment_installs_the_package(env):
    _, _, other = environment_requirements(env)
    assert "-e ." in other, "environment.yml's pip section must install the package (-e .)"


def test_environment_python_is_supported(pyproject, env):
    pythons = [d for d in env["dependencies"] if isinstance(d, str) and d.startswith("python")]
    assert len(pythons) == 1, f"one python pin expected in environment.yml, got {pythons}"
    version = pythons[0].split("=")[-1]
    assert SpecifierSet(pyproject["project"]["requires-python"]).contains(version), (
        f"environment.yml's python {version} is outside requires-python"
    )


@pytest.mark.parametrize("change", ["repin", "drop", "add", "marker"])
def test_drift_would_be_caught(pyproject, env, change):
    """The comparison above fails on each kind of drift (so it is not a test that cannot fail)."""
    changed = copy.deepcopy(env)
    deps = changed["dependencies"]
    index = next(i for i, d in enumerate(deps) if isinstance(d, str) and d.startswith("numpy"))
    if change == "repin":
        deps[index] = "numpy>=1.20"
    elif change == "drop":
        del deps[index]
    elif change == "add":
        deps.append("pandas>=2")
    else:
        pip = next(d for d in deps if isinstance(d, dict))["pip"]
        pip[:] = [line.split(";")[0] if line.startswith("triton") else line for line in pip]
    found, _, _ = environment_requirements(changed)
    assert drift(pyproject_requirements(pyproject), found), f"a {change} went unnoticed"


def test_chapter_kernel_starts_quietly(tmp_path, capfd):
    """The kernel that runs chapters (scripts/execute_notebooks.py) writes nothing on stderr.

    Over unencrypted TCP, ipykernel warns once per kernel, so once per chapter of `make book`
    and `make refresh`, that its traffic is plain text.
    """
    spec = importlib.util.spec_from_file_location(
        "execute_notebooks", ROOT / "scripts" / "execute_notebooks.py"
    )
    execute_notebooks = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(execute_notebooks)
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("print(6 * 7)")])
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    src, dst = tmp_path / "chapter.ipynb", tmp_path / "executed.ipynb"
    nbformat.write(nb, src)
    capfd.readouterr()
    execute_notebooks.execute(src, dst, parameters=None, timeout=60)
    err = capfd.readouterr().err
    assert nbformat.read(dst, as_version=4).cells[0].outputs[0]["text"] == "42\n"
    assert "WARNING" not in err and "Kernel" not in err, f"the kernel wrote on stderr:\n{err}"


APT_STUB = """#!/bin/sh
# records each call; a dry run (--simulate) prints the plan the test gives in APT_PLAN
echo "$*" >> "$APT_LOG"
case "$*" in *--simulate*) cat "$APT_PLAN" ;; *" install "*) echo "APT INSTALLS" >&2 ;; esac
"""
PLAN_NEW = "Inst libfoo (1.0 Debian:12 [amd64])\nInst chromium (1.0 Debian:12 [amd64])\n"
PLAN_UPGRADE = PLAN_NEW + "Inst libc6 [2.36-9] (2.36-10 Debian:12 [amd64])\n"


def lib_sh(tmp_path: Path, plan: str, command: str, **env: str):
    """``command`` run after sourcing scripts/lib.sh, as root, against a stub apt-get that
    records its calls: (the finished process, the apt-get calls)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, body in [("apt-get", APT_STUB), ("id", "#!/bin/sh\necho 0\n")]:
        (bin_dir / name).write_text(body)
        (bin_dir / name).chmod(0o755)
    (tmp_path / "plan").write_text(plan)
    env = {
        **{k: v for k, v in os.environ.items() if k != "CHROMIUM"},
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "APT_LOG": str(tmp_path / "log"),
        "APT_PLAN": str(tmp_path / "plan"),
        **env,
    }
    script = f'source "{ROOT}/scripts/lib.sh"; {command}'
    run = subprocess.run(["bash", "-c", script], env=env, capture_output=True, text=True)
    log = tmp_path / "log"
    calls = log.read_text().splitlines() if log.exists() else []
    return run, calls


def apt_install(tmp_path: Path, plan: str, *packages: str):
    return lib_sh(tmp_path, plan, "apt_install " + " ".join(packages))


def test_apt_install_adds_only_what_is_missing(tmp_path):
    run, calls = apt_install(tmp_path, PLAN_NEW, "chromium")
    assert run.returncode == 0, run.stderr
    installs = [c for c in calls if "install" in c.split() and "--simulate" not in c]
    assert len(installs) == 1, calls
    assert {"--no-install-recommends", "--no-upgrade"} <= set(installs[0].split()), installs
    assert not [c for c in calls if {"upgrade", "dist-upgrade", "full-upgrade"} & set(c.split())]
    said = run.stderr.index("new packages: libfoo chromium")
    assert said < run.stderr.index("APT INSTALLS"), "it must say what it installs first"


def test_apt_install_upgrades_nothing(tmp_path):
    run, calls = apt_install(tmp_path, PLAN_UPGRADE, "chromium")
    assert run.returncode != 0
    assert "libc6" in run.stderr and "CHROMIUM" in run.stderr, run.stderr
    assert all("--simulate" in c or c.split()[-1] == "update" for c in calls), calls


def test_apt_install_skips_what_is_there(tmp_path):
    run, calls = apt_install(tmp_path, "", "chromium")
    assert run.returncode == 0, run.stderr
    assert "nothing to install" in run.stderr
    assert all("--simulate" in c or c.split()[-1] == "update" for c in calls), calls


def test_browser_from_chromium_installs_nothing(tmp_path):
    browser = tmp_path / "my-chromium"
    browser.write_text("#!/bin/sh\necho Chromium 1.0\n")
    browser.chmod(0o755)
    missing = str(tmp_path / "no-chromium")
    run, calls = lib_sh(
        tmp_path, PLAN_NEW, "ensure_browser", CHROMIUM=str(browser), DEBIAN_CHROMIUM=missing
    )
    assert run.returncode == 0, run.stderr
    assert calls == [], "with CHROMIUM set, nothing is installed"
    assert str(browser) in run.stderr and "Chromium 1.0" in run.stderr


def test_browser_chromium_must_exist(tmp_path):
    missing = str(tmp_path / "no-chromium")
    run, calls = lib_sh(tmp_path, PLAN_NEW, "ensure_browser", CHROMIUM=missing)
    assert run.returncode != 0 and "CHROMIUM" in run.stderr
    assert calls == []


def test_browser_installed_from_debian_when_missing(tmp_path):
    missing = str(tmp_path / "no-chromium")
    run, calls = lib_sh(tmp_path, PLAN_NEW, "ensure_browser", DEBIAN_CHROMIUM=missing)
    assert run.returncode == 0, run.stderr
    assert calls[-1].split()[-1] == "chromium" and "--no-install-recommends" in calls[-1]
