"""Helpers shared by the experiments: profiles, seeds, devices, progress bars and timing."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

import torch
from tqdm.auto import tqdm

from ..train import seed_all
from . import PROFILES

T = TypeVar("T")


def check_profile(profile: str) -> str:
    if profile not in PROFILES:
        raise ValueError(f"profile must be one of {PROFILES}, got {profile!r}")
    return profile


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, NumPy and torch; return a torch generator seeded with ``seed``."""
    seed_all(seed)
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
    n = torch.get_num_threads()
    return f"CPU ({n} thread{'s' if n > 1 else ''})"


@contextlib.contextmanager
def threads(config: dict[str, Any]) -> Iterator[None]:
    """Run with ``config["threads"]`` torch threads, where the config sets it (restored after).

    The ``ci`` profile times on one thread: on a small machine shared with other work, an op
    split over two threads waits for whichever is descheduled, and its timings stop meaning
    anything.
    """
    before = torch.get_num_threads()
    if config.get("threads"):
        torch.set_num_threads(config["threads"])
    try:
        yield
    finally:
        torch.set_num_threads(before)


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


def clock(dev: torch.device) -> str:
    """What :func:`time_cases` measures on ``dev`` with the current number of torch threads.

    On a CPU with one torch thread, the ops run in the calling thread and its CPU time
    (``time.thread_time``) is the cost of the call whatever else the machine runs: time the
    thread waits while descheduled is not counted. Otherwise (a GPU, or several threads), wall
    time.
    """
    return "thread CPU time" if dev.type == "cpu" and torch.get_num_threads() == 1 else "wall time"


def time_cases(
    cases: dict[Any, tuple[Callable[..., Any], tuple[Any, ...], dict[str, Any]]],
    config: dict[str, Any],
    dev: torch.device,
    desc: str = "timing",
    back_to_back: int = 3,
) -> dict[Any, float]:
    """Best time in seconds of each call ``fn(*args, **kwargs)`` of ``cases`` (by key).

    Every call runs once to warm up (allocations, FFT plans, lazy initialization), then
    ``config["repeats"]`` rounds call each case ``back_to_back`` times in a row, the cases
    interleaved, and the best time per case is kept. Interleaving spreads a burst of load from
    elsewhere on the machine over all the cases instead of one series; the calls in a row let a
    cheap case run with its own data in the caches, not the data of the case before it; the
    best, not the mean, is the least disturbed run. What is timed is given by :func:`clock`.
    """
    now = time.thread_time if clock(dev) == "thread CPU time" else time.perf_counter

    def sync() -> None:
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)

    for fn, args, kwargs in cases.values():
        fn(*args, **kwargs)
    sync()
    best = dict.fromkeys(cases, float("inf"))
    for _ in progress(range(config["repeats"]), config, desc):
        for key, (fn, args, kwargs) in cases.items():
            for _ in range(back_to_back):
                start = now()
                fn(*args, **kwargs)
                sync()
                best[key] = min(best[key], now() - start)
    return best


def bound(err: float, tol: float = 1e-12) -> str:
    """An error as printed: ``< tol`` for round-off, else two significant digits."""
    return f"< {tol:.0e}" if err < tol else f"{err:.1e}"
