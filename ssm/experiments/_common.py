"""Helpers shared by the experiments: profiles, seeds, devices, progress bars and timing."""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

import numpy as np
import torch
from tqdm.auto import tqdm

from . import PROFILES

T = TypeVar("T")


def check_profile(profile: str) -> str:
    if profile not in PROFILES:
        raise ValueError(f"profile must be one of {PROFILES}, got {profile!r}")
    return profile


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, NumPy and torch; return a torch generator seeded with ``seed``."""
    random.seed(seed)
    np.random.seed(seed)  # noqa: NPY002 (the global state, for code that uses it)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def device(config: dict[str, Any]) -> torch.device:
    """``config["device"]``, where ``"auto"`` means CUDA when available, else CPU."""
    name = config.get("device", "cpu")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(
            f"config asks for device {name!r} but CUDA is not available; use device='cpu' or "
            "the 'ci' profile"
        )
    return torch.device(name)


def describe(dev: torch.device) -> str:
    """A readable name of the device timings were taken on, for figure titles."""
    if dev.type == "cuda":
        return torch.cuda.get_device_name(dev)
    return f"CPU ({torch.get_num_threads()} threads)"


def progress(
    items: Iterable[T], config: dict[str, Any], desc: str, *, enabled: bool | None = None
) -> Iterator[T]:
    """A tqdm progress bar over ``items``, shown in the ``full`` profile only by default.

    The ``ci`` profile keeps the bar off, so committed notebook outputs hold no bar; pass
    ``enabled`` to override.
    """
    show = config.get("profile") != "ci" if enabled is None else enabled
    items = list(items)
    return iter(tqdm(items, desc=desc, disable=not show, leave=False))


def time_call(
    fn: Callable[..., Any], *args: Any, repeats: int, dev: torch.device, **kwargs: Any
) -> float:
    """Best wall time in seconds of ``repeats`` calls ``fn(*args, **kwargs)`` (after a warm-up).

    The best, not the mean: on a shared machine the minimum is the least disturbed run.
    """

    def sync() -> None:
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)

    fn(*args, **kwargs)
    sync()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn(*args, **kwargs)
        sync()
        best = min(best, time.perf_counter() - start)
    return best
