"""The wheel carries the stored results and benchmarks, as a reader on Colab installs it.

The wheel is built from a copy of the working tree (what git tracks or would track), unpacked in
a temporary directory and imported from there alone, in a Python whose working directory is
outside the repository and whose network is closed: every result of ``data/results`` and every
benchmark of ``data/bench`` must be found, and a missing result must say what to run.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
RESULTS = sorted((ROOT / "data" / "results").glob("*.json"))
BENCH = sorted((ROOT / "data" / "bench").glob("bench_*.json"))
MISSING = "no_such_experiment"

# Run inside the unpacked wheel with the names of a missing result, then of every stored one;
# prints one JSON object of what it found.
CHECK = """
import json, sys
import ssm
from ssm.experiments import describe, kernel_benchmarks, stored

missing, *names = sys.argv[1:]
found = {"ssm": ssm.__file__, "described": {}}
for name in names:
    try:
        found["described"][name] = describe(stored(name))
    except Exception as exc:
        found["described"][name] = f"{type(exc).__name__}: {exc}"
try:
    stored(missing)
    found["missing"] = "no error"
except Exception as exc:
    found["missing"] = f"{type(exc).__name__}: {exc}"
try:
    bench = kernel_benchmarks.run(kernel_benchmarks.config("ci"))
    found["bench"] = {"files": [f["file"] for f in bench["files"]],
                      "provenance": kernel_benchmarks.provenance(bench)}
except Exception as exc:
    found["bench"] = f"{type(exc).__name__}: {exc}"
print(json.dumps(found))
"""


def _working_tree(dest: Path) -> None:
    """Copy the files git tracks, and those it would track, from the repository to ``dest``."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=ROOT,
        capture_output=True,
        check=True,
        text=True,
    ).stdout.split("\0")
    for name in filter(None, listed):
        source = ROOT / name
        if source.is_file():  # a tracked file deleted in the working tree is not copied
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / name)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("package_data")
    assert not tmp.is_relative_to(ROOT)
    _working_tree(tmp / "src")
    build = subprocess.run(
        [
            *(sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation"),
            *("--no-index", "-w", str(tmp / "dist"), str(tmp / "src")),
        ],
        cwd=tmp,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert build.returncode == 0, build.stdout + build.stderr
    (path,) = (tmp / "dist").glob("ssm_companion-*.whl")
    return path


@pytest.fixture(scope="module")
def installed(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """What the unpacked wheel finds, imported from outside the repository, offline."""
    site = tmp_path_factory.mktemp("site")
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(site)
    elsewhere = tmp_path_factory.mktemp("elsewhere")
    closed = "http://127.0.0.1:9"  # the discard port: any request fails at once
    env = os.environ | {"PYTHONPATH": str(site), "HTTP_PROXY": closed, "HTTPS_PROXY": closed}
    env |= {"http_proxy": closed, "https_proxy": closed, "NO_PROXY": "", "no_proxy": ""}
    proc = subprocess.run(
        [sys.executable, "-c", CHECK, MISSING, *(p.stem for p in RESULTS)],
        cwd=elsewhere,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.splitlines()[-1]) | {"site": str(site)}


def test_the_repository_has_results_and_benchmarks():
    assert RESULTS and BENCH


def test_the_wheel_holds_every_module(wheel: Path):
    with zipfile.ZipFile(wheel) as archive:
        shipped = set(archive.namelist())
    modules = {p.relative_to(ROOT).as_posix() for p in (ROOT / "ssm").rglob("*.py")}
    missing = sorted(modules - shipped)
    assert not missing, (
        f"not in the wheel: {missing}; list their packages under [tool.setuptools] packages "
        "in pyproject.toml"
    )


def test_the_unpacked_wheel_is_what_runs(installed: dict):
    assert Path(installed["ssm"]).is_relative_to(installed["site"])


def test_every_stored_result_is_found_with_its_provenance(installed: dict):
    problems = []
    for path in RESULTS:
        record = json.loads(path.read_text())
        p = record["provenance"]
        expected = (p["device"], f"torch {p['torch']}", p["commit"][:10], p["config_hash"])
        line = installed["described"][path.stem]
        if not line.startswith(f"{path.stem}, {record['profile']} profile") or not all(
            part in line for part in expected
        ):
            problems.append(f"{path.stem}: {line}")
    assert not problems, "\n".join(problems)


def test_a_missing_result_says_what_to_run(installed: dict):
    message = installed["missing"]
    assert message.startswith("FileNotFoundError: "), message
    assert f"no stored full-profile run of {MISSING} yet" in message
    assert f"`python -m ssm.experiments {MISSING} --profile full` on a GPU" in message


def test_the_benchmarks_chapter_reads_the_shipped_files(installed: dict):
    bench = installed["bench"]
    assert isinstance(bench, dict), bench
    assert bench["files"] == [p.name for p in BENCH]
    for path in BENCH:
        assert json.loads(path.read_text())["device"] in bench["provenance"]
