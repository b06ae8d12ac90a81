"""Results of full-scale runs, stored as JSON with their provenance.

``data/results/NAME.json`` holds ``{"experiment", "profile", "config", "provenance", "results"}``
where ``provenance`` records the commit, the device, the torch version, the date, the config hash,
the wall time and the number of processes the run was spread over (``torchrun``). A stored
result is current while its ``config_hash`` equals ``config_hash(module.config(profile))``.

The stored results and the benchmarks (``data/bench``) are one copy in the repository's ``data/``
folder; the wheel carries that folder as the package data ``ssm/_data`` (pyproject.toml maps
one to the other), so that an installation without the repository, as on Colab, reads them too.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import platform
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import torch

REPO_ROOT = Path(__file__).resolve().parents[2]
_PACKAGE_DATA = Path(__file__).resolve().parents[1] / "_data"
#: The data folder: ``ssm/_data`` in an installed wheel, the repository's ``data/`` in a checkout
#: (and in an editable install, which runs the checkout's files).
DATA_DIR = _PACKAGE_DATA if _PACKAGE_DATA.is_dir() else REPO_ROOT / "data"
RESULTS_DIR = DATA_DIR / "results"
BENCH_DIR = DATA_DIR / "bench"
PROVENANCE_KEYS = ("commit", "device", "torch", "date", "config_hash", "wall_time_s")


def to_jsonable(obj: Any) -> Any:
    """Convert numpy/torch values (and containers of them) to plain JSON types."""
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, torch.Tensor):
        return to_jsonable(obj.detach().cpu().numpy())
    if isinstance(obj, np.ndarray):
        if np.iscomplexobj(obj):
            return {"real": obj.real.tolist(), "imag": obj.imag.tolist()}
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, float) and not np.isfinite(obj):
        return None if np.isnan(obj) else ("inf" if obj > 0 else "-inf")
    return obj


def config_hash(config: dict[str, Any]) -> str:
    """A short, stable hash of a config: sha256 of its canonical JSON (sorted keys)."""
    text = json.dumps(to_jsonable(config), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _commit() -> str:
    """The checked-out commit (``+dirty`` with uncommitted changes to tracked files).

    ``SSM_COMMIT`` overrides it, for runs on a copy of the tree that has no ``.git``.
    """
    if os.environ.get("SSM_COMMIT"):
        return os.environ["SSM_COMMIT"]
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out + ("+dirty" if dirty else "")


def _device() -> str:
    if torch.cuda.is_available():
        return f"cuda: {torch.cuda.get_device_name(0)}"
    return f"cpu: {platform.machine()}, {torch.get_num_threads()} threads"


def provenance(config: dict[str, Any], wall_time_s: float, processes: int = 1) -> dict[str, Any]:
    """Where and how a result was produced; ``processes`` is the world size under torchrun."""
    return {
        "commit": _commit(),
        "device": _device(),
        "torch": torch.__version__,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "config_hash": config_hash(config),
        "wall_time_s": round(float(wall_time_s), 3),
        "processes": int(processes),
    }


def save(
    name: str,
    config: dict[str, Any],
    results: dict[str, Any],
    wall_time_s: float,
    out_dir: Path | str | None = None,
    processes: int = 1,
) -> Path:
    """Write ``<out_dir>/<name>.json`` (``data/results`` by default) and return its path.

    ``processes`` is the number of processes of a data-parallel run (``torchrun``).
    """
    out = Path(out_dir) if out_dir is not None else RESULTS_DIR
    out.mkdir(parents=True, exist_ok=True)
    record = {
        "experiment": name,
        "profile": config.get("profile"),
        "config": to_jsonable(config),
        "provenance": provenance(config, wall_time_s, processes),
        "results": to_jsonable(results),
    }
    path = out / f"{name}.json"
    path.write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")
    return path


def data_path(path: Path | str) -> Path:
    """Where a path of the repository's data folder (``"data/bench"``) is in this installation.

    Absolute paths are returned as they are; other relative paths are taken from the repository.
    """
    path = Path(path)
    if path.is_absolute():
        return path
    if path.parts[:1] == ("data",):
        return DATA_DIR.joinpath(*path.parts[1:])
    return REPO_ROOT / path


def load(name: str, out_dir: Path | str | None = None) -> dict[str, Any]:
    """Read a stored record written by :func:`save`.

    Raises ``FileNotFoundError`` saying what to run where there is none.
    """
    path = (Path(out_dir) if out_dir is not None else RESULTS_DIR) / f"{name}.json"
    if not path.is_file():
        raise FileNotFoundError(
            f"no stored full-profile run of {name} yet ({path} does not exist); run "
            f"`python -m ssm.experiments {name} --profile full` on a GPU"
        )
    return json.loads(path.read_text())


def stored(name: str) -> dict[str, Any]:
    """The stored full-profile record of ``name``, for :func:`describe` and the plots.

    Read from ``data/results`` (shipped with the package, so no repository and no network are
    needed); raises ``FileNotFoundError`` saying what to run where there is none.
    """
    return load(name)


def stored_or_none(name: str) -> dict[str, Any] | None:
    """The stored full-profile record of ``name`` with its provenance printed, or ``None`` with
    a line saying how to make it where there is none: what a chapter's cell beside a live ``ci``
    run calls, so that the page still builds before the first full run."""
    try:
        record = stored(name)
    except FileNotFoundError:
        print(
            f"no stored full-profile run of {name} yet: "
            f"python -m ssm.experiments {name} --profile full, on a GPU"
        )
        return None
    print(describe(record))
    return record


def describe(record: dict[str, Any]) -> str:
    """One line saying where a stored result comes from, for a figure's caption."""
    p = record["provenance"]
    return (
        f"{record['experiment']}, {record['profile']} profile: {p['device']}, "
        f"torch {p['torch']}, commit {p['commit'][:10]}, {p['date'][:10]}, "
        f"config {p['config_hash']}, {p['wall_time_s']:.0f} s"
    )
