"""How the benchmarks time a call and measure its memory (one clock for all of them)."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch


class Timer:
    """Median milliseconds: ``do_bench`` on a GPU, wall clock of a few calls on the CPU."""

    def __init__(self, device: str, smoke: bool) -> None:
        self.cuda = device == "cuda"
        self.reps = 3 if smoke else 10
        if self.cuda:
            from triton.testing import do_bench

            self.do_bench = do_bench
            self.how = "triton.testing.do_bench median, warmup 25 ms, rep 100 ms"
        else:
            self.how = f"CPU wall clock, median of {self.reps} calls after one warm-up call"

    def ms(self, fn: Callable[[], object]) -> float:
        if self.cuda:
            return float(self.do_bench(fn, warmup=25, rep=100, return_mode="median"))
        fn()
        times = []
        for _ in range(self.reps):
            start = time.perf_counter()
            fn()
            times.append((time.perf_counter() - start) * 1e3)
        return statistics.median(times)

    def peak_mib(self, fn: Callable[[], object]) -> dict | None:
        """Peak memory allocated while ``fn`` runs: in all and above what was allocated before
        (the layer's parameters, its input and the output gradient)."""
        if not self.cuda:
            return None
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        fn()
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated()
        return {
            "peak_MiB": round(peak / 2**20, 1),
            "peak_extra_MiB": round((peak - before) / 2**20, 1),
        }


def describe_error(err: BaseException) -> str:
    """A failed case as recorded: out of memory as skipped, else the error in one line."""
    if isinstance(err, torch.cuda.OutOfMemoryError):
        return "skipped: out of memory"
    return f"{type(err).__name__}: {str(err)[:500]}"


def free(device: str) -> None:
    """Wait for the GPU and return its cached memory, so that cases do not share it."""
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
