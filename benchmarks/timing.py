"""How the benchmarks time a call and measure its memory (one clock for all of them)."""

from __future__ import annotations

import statistics
import time
import traceback
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


def autocast(device: str, bf16: bool):
    """bfloat16 autocast on ``device`` when ``bf16``, else nothing."""
    return torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=bf16)


def param_counts(module: torch.nn.Module) -> dict:
    """Numbers of parameters and of buffers of ``module``."""
    return {
        "parameters": sum(p.numel() for p in module.parameters()),
        "buffers": sum(b.numel() for b in module.buffers()),
    }


def failure(err: BaseException) -> dict:
    """A failed case as recorded: the error, and its traceback unless it ran out of memory."""
    rec = {"error": describe_error(err)}
    if not isinstance(err, torch.cuda.OutOfMemoryError):
        rec["traceback"] = traceback.format_exc(limit=4)[-1500:]
    return rec


def time_training(
    layer: torch.nn.Module, x: torch.Tensor, bf16: bool, timer: Timer, device: str
) -> tuple[dict, torch.Tensor | None]:
    """Forward and forward-plus-backward times (a fixed random output gradient), throughput
    and peak memory of one layer on ``x``; also its output (no gradient), to compare layers.
    A failure (out of memory, an anchor that breaks) is recorded, not raised."""
    rec: dict = {}
    out = None
    try:
        x = x.detach().requires_grad_(True)
        with autocast(device, bf16):
            y = layer(x)  # first call: compiles, and sets up what a layer caches
        rec["output_dtype"] = str(y.dtype).removeprefix("torch.")
        out = y.detach()
        grad = torch.randn_like(y)
        del y

        def fwd():
            with autocast(device, bf16):
                return layer(x)

        def fwd_bwd():
            for p in layer.parameters():
                p.grad = None
            x.grad = None
            with autocast(device, bf16):
                y = layer(x)
            y.backward(grad)

        rec["ms_fwd"] = round(timer.ms(fwd), 4)
        free(device)
        rec["ms_fwd_bwd"] = round(timer.ms(fwd_bwd), 4)
        rec["tokens_per_s"] = round(x.shape[0] * x.shape[1] / (rec["ms_fwd_bwd"] * 1e-3))
        free(device)
        mem = timer.peak_mib(fwd_bwd)
        if mem:
            rec.update(mem)
    except Exception as err:  # out of memory, or an anchor failing: recorded, not fatal
        rec = failure(err)
    finally:
        for p in layer.parameters():
            p.grad = None
        free(device)
    return rec, out
