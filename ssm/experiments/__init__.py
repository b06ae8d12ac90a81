"""One module per figure or ablation of the book.

Each experiment module ``ssm.experiments.NAME`` has

- ``config(profile) -> dict``: the settings for the ``"ci"`` profile (CPU, seconds, what the
  committed notebooks show) or the ``"full"`` profile (one GPU, minutes);
- ``run(config) -> dict``: plain results (numbers, lists, numpy arrays), seeded and deterministic;
- ``plot(results) -> matplotlib.figure.Figure`` (some modules have more than one plot function).

``python -m ssm.experiments NAME --profile full`` runs one and writes ``data/results/NAME.json``
with provenance (see :mod:`ssm.experiments._results`); :func:`stored` reads such a record back
and :func:`describe` says in one line where it comes from.
"""

from __future__ import annotations

import importlib
import pkgutil
from types import ModuleType

from ._results import describe, stored, stored_or_none

__all__ = ["PROFILES", "available", "describe", "get", "stored", "stored_or_none"]

PROFILES = ("ci", "full")


def available() -> list[str]:
    """Names of the experiment modules (every public module of this package)."""
    return sorted(m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_"))


def get(name: str) -> ModuleType:
    """The experiment module ``ssm.experiments.<name>``."""
    names = available()
    if name not in names:
        raise ValueError(f"unknown experiment {name!r}; available: {', '.join(names)}")
    return importlib.import_module(f"{__name__}.{name}")
