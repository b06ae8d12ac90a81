"""Check the Vandermonde, Cauchy, long-convolution and S4D-decode kernels at real size on a GPU,
then time them against the PyTorch anchors.

    PYTHONPATH=. python3 benchmarks/check_kernels.py --out "$OUT" [--commit SHA]

Correctness: fresh random inputs of S4D's initialization (S4D-Lin ``A = -1/2 + iπn``, ``Δ``
log-uniform in [1e-3, 1e-1]); each kernel's float32 output and gradients are compared with the
reference run in float64 on the same (float32-rounded) inputs, in chunks of channels where the
reference would not fit. Every ``torch.empty``/``torch.empty_like`` is filled with NaN while a
kernel runs, so an element it never writes shows up; each kernel runs twice and must give
bitwise-equal results.

Timing (``triton.testing.do_bench``, median, milliseconds): each Triton path against the PyTorch
anchors (materialized and blocked-matmul Vandermonde, materialized Cauchy, ``torch.fft``), a
device-to-device copy (bandwidth, bytes read + written) and the decode step's fraction of it,
then small sweeps of tile sizes while time remains.

Writes ``check_kernels.json`` under ``--out`` after every section.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import torch
import triton
from gpu_common import copy_bandwidth, poisoned_empty
from triton.testing import do_bench

import ssm.ops.cauchy.triton as cauchy_kernels
import ssm.ops.fftconv.triton as conv_kernels
import ssm.ops.s4d_step.triton as step_kernels
import ssm.ops.vandermonde.triton as vandermonde_kernels
from ssm import discretize, s4d_kernel
from ssm.ops.cauchy import cauchy, cauchy_ref
from ssm.ops.fftconv import fftconv, fftconv_ref, kernel_fft
from ssm.ops.s4d_step import s4d_prefill, s4d_step, s4d_step_ref
from ssm.ops.vandermonde import (
    vandermonde,
    vandermonde_blocked,
    vandermonde_ref,
    vandermonde_transpose_ref,
)

DEVICE = "cuda"
C64, C128 = torch.complex64, torch.complex128
CHUNK_H = 64  # channels per chunk of the float64 references


def bench(fn: Callable[[], object]) -> float:
    return float(do_bench(fn, warmup=10, rep=50, return_mode="median"))


def max_err(x: torch.Tensor, truth: torch.Tensor) -> dict[str, float]:
    err = (x.to(truth.dtype) - truth).abs().max().item()
    scale = truth.abs().max().item()
    return {"max_abs_err": err, "max_abs_ref": scale, "rel_err": err / scale if scale else err}


def no_nan(*ts: torch.Tensor) -> bool:
    return not any(bool(t.isnan().any()) for t in ts)


def same(a: tuple[torch.Tensor, ...], b: tuple[torch.Tensor, ...]) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


def s4d_lin(H: int, N: int, seed: int):
    """S4D-Lin ``A``, ``B = 1``, random ``C``, ``Δ`` log-uniform in [1e-3, 1e-1]; ZOH: float64."""
    gen = torch.Generator(device=DEVICE).manual_seed(seed)
    n = torch.arange(N, device=DEVICE, dtype=torch.float64)
    A = torch.complex(-0.5 * torch.ones(H, N, device=DEVICE, dtype=torch.float64), math.pi * n)
    A = A.expand(H, N).contiguous()
    C = torch.randn(H, N, device=DEVICE, dtype=C128, generator=gen)
    log_dt = torch.rand(H, device=DEVICE, dtype=torch.float64, generator=gen)
    dt = torch.exp(math.log(1e-3) + log_dt * (math.log(1e-1) - math.log(1e-3)))
    Ab, Bb = discretize(A, torch.ones_like(A), dt, "zoh", diagonal=True)
    return A, C, dt, Ab, Bb


def chunks(H: int):
    return ((h, min(h + CHUNK_H, H)) for h in range(0, H, CHUNK_H))


# ---------------------------------------------------------------- Vandermonde


def check_vandermonde(H: int, N: int, L: int, seed: int) -> dict:
    A, C, dt, _, Bb = s4d_lin(H, N, seed)
    v, x = (C * Bb).to(C64), (dt[:, None] * A).to(C64)  # v = C B̄, x = ΔA = log Ā
    v64, x64 = v.to(C128), x.to(C128)
    g = torch.randn(H, L, device=DEVICE)
    out: dict = {"H": H, "N": N, "L": L}

    def triton_fwd_bwd(v, x):
        v, x = v.clone().requires_grad_(), x.clone().requires_grad_()
        K = vandermonde_kernels.vandermonde_triton(v, x, L)
        return (K, *torch.autograd.grad(K, (v, x), g))

    with poisoned_empty():
        first = triton_fwd_bwd(v, x)
        second = triton_fwd_bwd(v, x)
    out["no_nan"], out["deterministic"] = no_nan(*first), same(first, second)
    K, dv, dx = first
    naive = vandermonde_ref(v, x, L)  # complex64 anchors, for their own error
    blocked = vandermonde_blocked(v, x, L)
    errs = {k: [] for k in ("K", "dv", "dx", "naive_c64", "blocked_c64")}
    refs = {k: [] for k in errs}
    for h0, h1 in chunks(H):
        ref = vandermonde_ref(v64[h0:h1], x64[h0:h1], L)
        S, S1 = vandermonde_transpose_ref(g[h0:h1].double(), x64[h0:h1], weighted=True)
        pairs = {
            "K": (K[h0:h1], ref),
            "dv": (dv[h0:h1], 2 * S.conj()),
            "dx": (dx[h0:h1], 2 * (v64[h0:h1] * S1).conj()),
            "naive_c64": (naive[h0:h1], ref),
            "blocked_c64": (blocked[h0:h1], ref),
        }
        for k, (got, truth) in pairs.items():
            errs[k].append((got.to(truth.dtype) - truth).abs().max().item())
            refs[k].append(truth.abs().max().item())
    out["errors"] = {
        k: {
            "max_abs_err": max(errs[k]),
            "max_abs_ref": max(refs[k]),
            "rel_err": max(errs[k]) / max(refs[k]),
        }
        for k in errs
    }
    del naive, blocked
    out["ssm_s4d_kernel_c64"] = s4d_kernel_anchor(A, C, dt, L)
    torch.cuda.empty_cache()

    def fwd_bwd(fn):
        def run():
            vv, xx = v.clone().requires_grad_(), x.clone().requires_grad_()
            return torch.autograd.grad(fn(vv, xx, L), (vv, xx), g)

        return run

    vv, xx = v.clone().requires_grad_(), x.clone().requires_grad_()
    K = vandermonde_kernels.vandermonde_triton(vv, xx, L)
    ms = {
        "triton_fwd": bench(lambda: vandermonde_kernels.vandermonde_triton(v, x, L)),
        "triton_fwd_bwd": bench(fwd_bwd(vandermonde_kernels.vandermonde_triton)),
        "triton_bwd": bench(lambda: torch.autograd.grad(K, (vv, xx), g, retain_graph=True)),
        "triton_transpose_weighted": bench(
            lambda: vandermonde_kernels.vandermonde_transpose_triton(g, x, True)
        ),
        "blocked_fwd": bench(lambda: vandermonde_blocked(v, x, L)),
        "blocked_fwd_bwd": bench(fwd_bwd(vandermonde_blocked)),
        "naive_fwd": bench(lambda: vandermonde_ref(v, x, L)),
    }
    try:
        ms["naive_fwd_bwd"] = bench(fwd_bwd(vandermonde_ref))
    except torch.OutOfMemoryError as err:
        ms["naive_fwd_bwd"] = f"out of memory: {str(err)[:80]}"
    torch.cuda.empty_cache()
    out["ms"] = ms
    out["speedup_fwd_vs_naive"] = ms["naive_fwd"] / ms["triton_fwd"]
    out["speedup_fwd_vs_blocked"] = ms["blocked_fwd"] / ms["triton_fwd"]
    out["speedup_fwd_bwd_vs_blocked"] = ms["blocked_fwd_bwd"] / ms["triton_fwd_bwd"]
    # (H, N, L) complex multiply-adds, the work a materialized product does
    out["complex_macs_per_s_triton_fwd"] = H * N * L / (ms["triton_fwd"] * 1e-3)
    return out


def s4d_kernel_anchor(A: torch.Tensor, C: torch.Tensor, dt: torch.Tensor, L: int) -> dict:
    """``ssm.s4d_kernel`` (powers ``Ā^l``, materialized) in complex64: time and error."""
    A32, C32, dt32 = A.to(C64), C.to(C64), dt.float()
    B32 = torch.ones_like(A32)
    K = s4d_kernel(A32, B32, C32, dt32, L)
    err, scale = 0.0, 0.0
    for h0, h1 in chunks(A.shape[0]):
        args = (A32[h0:h1], B32[h0:h1], C32[h0:h1])
        truth = s4d_kernel(*(t.to(C128) for t in args), dt32[h0:h1].double(), L)
        err = max(err, (K[h0:h1].double() - truth).abs().max().item())
        scale = max(scale, truth.abs().max().item())
    del K
    ms = bench(lambda: s4d_kernel(A32, B32, C32, dt32, L))
    return {"ms": ms, "max_abs_err": err, "max_abs_ref": scale, "rel_err": err / scale}


# ---------------------------------------------------------------- Cauchy


def cauchy_inputs(H: int, N: int, L: int, seed: int):
    """S4's use: poles ``w = ΔA``, points ``z = 2(1-ω)/(1+ω)`` (bilinear map of the roots of
    unity, offset by half a step so that ``ω ≠ -1``)."""
    A, C, dt, _, _ = s4d_lin(H, N, seed)
    w = (dt[:, None] * A).to(C64)
    omega = torch.exp(
        -2j * math.pi * (torch.arange(L, device=DEVICE, dtype=torch.float64) + 0.5) / L
    )
    z = (2 * (1 - omega) / (1 + omega)).to(C64)
    return C.to(C64), z, w


def cauchy_bwd_ms(v: torch.Tensor, z: torch.Tensor, w: torch.Tensor, g: torch.Tensor) -> float:
    vv, ww = v.clone().requires_grad_(), w.clone().requires_grad_()
    y = cauchy_kernels.cauchy_triton(vv, z, ww)
    return bench(lambda: torch.autograd.grad(y, (vv, ww), g, retain_graph=True))


def check_cauchy(H: int, N: int, L: int, seed: int) -> dict:
    v, z, w = cauchy_inputs(H, N, L, seed)
    v64, z64, w64 = v.to(C128), z.to(C128), w.to(C128)
    g = torch.randn(H, L, device=DEVICE, dtype=C64)
    out: dict = {"H": H, "N": N, "L": L, "max_abs_z": z.abs().max().item()}

    def triton_fwd_bwd(v, z, w):
        leaves = [t.clone().requires_grad_() for t in (v, z, w)]
        y = cauchy_kernels.cauchy_triton(*leaves)
        return (y, *torch.autograd.grad(y, leaves, g))

    with poisoned_empty():
        first = triton_fwd_bwd(v, z, w)
        second = triton_fwd_bwd(v, z, w)
    out["no_nan"], out["deterministic"] = no_nan(*first), same(first, second)
    y, dv, dz, dw = first
    errs = {k: [] for k in ("y", "dv", "dw", "y_elementwise_vs_terms")}
    refs = {k: [] for k in errs}
    dz_ref = torch.zeros(L, device=DEVICE, dtype=C128)
    for h0, h1 in chunks(H):
        leaves = [t.clone().requires_grad_() for t in (v64[h0:h1], z64, w64[h0:h1])]
        ref = cauchy_ref(*leaves)
        gv, gz, gw = torch.autograd.grad(ref, leaves, g[h0:h1].to(C128))
        dz_ref += gz
        d1 = (z64[None, :, None] - w64[h0:h1, None, :]).abs()
        d2 = (z64[None, :, None] - w64[h0:h1, None, :].conj()).abs()
        terms = (v64[h0:h1].abs()[:, None, :] * (1 / d1 + 1 / d2)).sum(-1)  # (h L)
        err_y = (y[h0:h1].to(C128) - ref.detach()).abs()
        for k, got, truth in (("y", y, ref), ("dv", dv, gv), ("dw", dw, gw)):
            errs[k].append((got[h0:h1].to(C128) - truth.detach()).abs().max().item())
            refs[k].append(truth.abs().max().item())
        errs["y_elementwise_vs_terms"].append((err_y / terms).max().item())
        refs["y_elementwise_vs_terms"].append(1.0)
        del leaves, ref, gv, gz, gw, d1, d2, terms
    out["errors"] = {
        k: {
            "max_abs_err": max(errs[k]),
            "max_abs_ref": max(refs[k]),
            "rel_err": max(errs[k]) / max(refs[k]),
        }
        for k in errs
    }
    out["errors"]["dz"] = max_err(dz, dz_ref)
    torch.cuda.empty_cache()

    def fwd_bwd(fn):
        def run():
            vv, ww = v.clone().requires_grad_(), w.clone().requires_grad_()
            return torch.autograd.grad(fn(vv, z, ww), (vv, ww), g)

        return run

    ms = {
        "triton_fwd": bench(lambda: cauchy_kernels.cauchy_triton(v, z, w)),
        "triton_fwd_bwd_vw": bench(fwd_bwd(cauchy_kernels.cauchy_triton)),
        "triton_bwd_vw": cauchy_bwd_ms(v, z, w, g),
    }
    for name, fn in (
        ("naive_fwd", lambda: cauchy_ref(v, z, w)),
        ("naive_fwd_bwd_vw", fwd_bwd(cauchy_ref)),
    ):
        try:
            ms[name] = bench(fn)
        except torch.OutOfMemoryError as err:
            ms[name] = f"out of memory: {str(err)[:80]}"
        torch.cuda.empty_cache()
    out["ms"] = ms
    if isinstance(ms["naive_fwd"], float):
        out["speedup_fwd_vs_naive"] = ms["naive_fwd"] / ms["triton_fwd"]
    out["terms_per_s_triton_fwd"] = H * N * L / (ms["triton_fwd"] * 1e-3)  # conjugate pairs
    return out


# ---------------------------------------------------------------- long convolution


def check_fftconv(B: int, H: int, L: int, short: int, seed: int) -> dict:
    gen = torch.Generator(device=DEVICE).manual_seed(seed)
    u = torch.randn(B, H, L, device=DEVICE, generator=gen)
    decay = torch.exp(-torch.arange(L, device=DEVICE) / (0.1 * L))
    k = torch.randn(H, L, device=DEVICE, generator=gen) * decay  # a long, decaying kernel
    k_short = torch.randn(H, short, device=DEVICE, generator=gen)
    D = torch.randn(H, device=DEVICE, generator=gen)
    g = torch.randn(B, H, L, device=DEVICE, generator=gen)
    out: dict = {"B": B, "H": H, "L": L, "short_kernel": short}
    errors = {}
    y64 = fftconv_ref(u.double(), k.double(), D.double())
    errors["fft_long"] = max_err(fftconv(u, k, D), y64)
    errors["fft_long_cached_transform"] = max_err(fftconv_ref(u, kernel_fft(k, L), D), y64)
    del y64

    def direct_fwd_bwd():
        leaves = [t.clone().requires_grad_() for t in (u, k_short, D)]
        y = conv_kernels.causal_conv_triton(*leaves)
        return (y, *torch.autograd.grad(y, leaves, g))

    with poisoned_empty():
        first = direct_fwd_bwd()
        second = direct_fwd_bwd()
    out["no_nan"], out["deterministic"] = no_nan(*first), same(first, second)
    leaves = [t.double().requires_grad_() for t in (u, k_short, D)]
    y64 = fftconv_ref(*leaves)
    grads = torch.autograd.grad(y64, leaves, g.double())
    for name, got, truth in zip(
        ("direct_y", "direct_du", "direct_dk", "direct_dD"), first, (y64, *grads), strict=True
    ):
        errors[name] = max_err(got, truth.detach())
    errors["fft_short_y"] = max_err(fftconv_ref(u, k_short, D), y64.detach())
    del leaves, y64, grads
    torch.cuda.empty_cache()
    out["errors"] = errors
    k_f = kernel_fft(k, L)
    k_short_f = kernel_fft(k_short, L)

    def fwd_bwd(fn, kernel):
        def run():
            leaves = [t.clone().requires_grad_() for t in (u, kernel, D)]
            return torch.autograd.grad(fn(*leaves), leaves, g)

        return run

    ms = {
        "fft_long_fwd": bench(lambda: fftconv_ref(u, k, D)),
        "fft_long_fwd_cached_transform": bench(lambda: fftconv_ref(u, k_f, D)),
        "fft_long_fwd_bwd": bench(fwd_bwd(fftconv_ref, k)),
        "fft_short_fwd": bench(lambda: fftconv_ref(u, k_short, D)),
        "fft_short_fwd_cached_transform": bench(lambda: fftconv_ref(u, k_short_f, D)),
        "fft_short_fwd_bwd": bench(fwd_bwd(fftconv_ref, k_short)),
        "direct_short_fwd": bench(lambda: conv_kernels.causal_conv_triton(u, k_short, D)),
        "direct_short_fwd_bwd": bench(fwd_bwd(conv_kernels.causal_conv_triton, k_short)),
    }
    out["ms"] = ms
    out["speedup_cached_transform"] = ms["fft_long_fwd"] / ms["fft_long_fwd_cached_transform"]
    out["speedup_direct_vs_fft_short_fwd"] = (
        ms["fft_short_fwd_cached_transform"] / ms["direct_short_fwd"]
    )
    out["speedup_direct_vs_fft_short_fwd_bwd"] = (
        ms["fft_short_fwd_bwd"] / ms["direct_short_fwd_bwd"]
    )
    out["direct_fwd_fraction_of_copy_bandwidth"] = None  # filled in by main()
    out["direct_fwd_bytes"] = 2 * u.numel() * 4
    return out


# ---------------------------------------------------------------- S4D decode


def check_decode(batches: tuple[int, ...], H: int, N: int, seed: int) -> dict:
    _, C, _, Ab, Bb = s4d_lin(H, N, seed)
    D = torch.randn(H, device=DEVICE, dtype=torch.float64)
    params64 = (Ab, Bb, C, D)
    params = (Ab.to(C64), Bb.to(C64), C.to(C64), D.float())
    rows = {str(B): decode_batch(B, params, params64, seed + B) for B in batches}
    return {"H": H, "N": N, "batches": rows}


def decode_batch(B: int, params: tuple, params64: tuple, seed: int) -> dict:
    H, N = params[0].shape
    gen = torch.Generator(device=DEVICE).manual_seed(seed)
    x = torch.randn(B, H, N, device=DEVICE, dtype=C64, generator=gen)
    u = torch.randn(B, H, device=DEVICE, generator=gen)
    with poisoned_empty():
        s1, s2 = x.clone(), x.clone()
        y1 = step_kernels.s4d_step_triton(s1, u, *params)
        y2 = step_kernels.s4d_step_triton(s2, u, *params)
    x64 = x.to(C128)
    y64 = s4d_step_ref(x64, u.double(), *params64)  # x64 becomes the next state
    state, ref_state = x.clone(), x.clone()
    with torch.no_grad():
        ms_triton = bench(lambda: step_kernels.s4d_step_triton(state, u, *params))
        ms_ref = bench(lambda: s4d_step_ref(ref_state, u, *params))
        ms_graph = graph_ms(lambda: step_kernels.s4d_step_triton(state, u, *params))
    moved = 2 * state.numel() * 8 + 3 * H * N * 8 + 2 * B * H * 4 + H * 4  # state r+w, Ā B̄ C, u y D
    return {
        "no_nan": no_nan(y1, torch.view_as_real(s1)),
        "deterministic": same((y1, s1), (y2, s2)),
        "errors": {"y": max_err(y1, y64), "state": max_err(s1, x64)},
        "ms": {
            "triton_step": ms_triton,
            "reference_step": ms_ref,
            "triton_step_cuda_graph": ms_graph,
        },
        "bytes": moved,
        "speedup_vs_reference": ms_ref / ms_triton,
        "TB_per_s": moved / ms_triton / 1e9,
        "TB_per_s_cuda_graph": moved / ms_graph / 1e9,
    }


def graph_ms(step: Callable[[], object]) -> float:
    """One step captured in a CUDA graph and replayed: the kernel without Python's launch cost."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(3):
            step()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        step()
    return bench(graph.replay)


def check_prefill(B: int, H: int, N: int, L: int, seed: int) -> dict:
    _, C, _, Ab, Bb = s4d_lin(H, N, seed)
    u = torch.randn(B, H, L, device=DEVICE)
    params = (Ab.to(C64), Bb.to(C64), C.to(C64), 0.5)
    with torch.no_grad():
        ms = bench(lambda: s4d_prefill(u, *params, backend="triton"))
        state = s4d_prefill(u, *params, backend="triton")[1]
    # the final state by the recurrence in float64 on 8 channels
    x = torch.zeros(B, 8, N, device=DEVICE, dtype=C128)
    Ab8, Bb8 = (p[:8].to(C64).to(C128) for p in (Ab, Bb))  # the kernels' (rounded) parameters
    for t in range(L):
        x = Ab8 * x + Bb8 * u[:, :8, t, None].double()
    return {
        "B": B,
        "H": H,
        "N": N,
        "L": L,
        "ms": ms,
        "state_error_8_channels": max_err(state[:, :8], x),
    }


def public_dispatch(seed: int) -> dict:
    """``backend=None`` ("auto") on CUDA tensors: each op's probe passes and the kernel runs."""
    import warnings

    A, C, dt, Ab, Bb = s4d_lin(4, 16, seed)
    v, x = (C * Bb).to(C64), (dt[:, None] * A).to(C64)
    u = torch.randn(2, 4, 100, device=DEVICE)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a failed probe warns
        calls = {
            "vandermonde": lambda: vandermonde(v, x, 100),
            "cauchy": lambda: cauchy(v, torch.exp(1j * torch.arange(9, device=DEVICE)).to(C64), x),
            "fftconv": lambda: fftconv(u, torch.randn(4, 10, device=DEVICE), 0.5),
            "s4d_step": lambda: s4d_step(
                torch.zeros(2, 4, 16, device=DEVICE, dtype=C64),
                u[..., 0],
                Ab.to(C64),
                Bb.to(C64),
                C.to(C64),
            ),
        }
        result = {}
        for name, call in calls.items():
            try:
                call()
                result[name] = "ok"
            except Exception as err:  # recorded, not raised: the other ops still run
                result[name] = f"{type(err).__name__}: {err}"
    from ssm.ops.dispatch import _probe_results

    result["probes"] = {
        f"{op}@{dev}": failure or "passed" for (op, dev), failure in _probe_results.items()
    }
    return result


# ---------------------------------------------------------------- sweeps


def sweep(deadline: float, seed: int, B: int = 8, H: int = 1024, N: int = 64, L: int = 16384):
    """A few other tile sizes for each kernel (forward, real sizes), while time remains."""
    rows: dict[str, list] = {"vandermonde": [], "cauchy": [], "direct_conv": []}
    A, C, dt, _, Bb = s4d_lin(H, N, seed)
    v, x = (C * Bb).to(C64), (dt[:, None] * A).to(C64)
    g = torch.randn(H, L, device=DEVICE)
    saved = (
        vandermonde_kernels.FORWARD_TILES,
        vandermonde_kernels.TRANSPOSE_TILES,
        vandermonde_kernels.DOT_PRECISION,
    )
    configs = [  # (forward tiles, transpose tiles, precision); the default is measured above
        ((64, 32, 32, 4), (64, 32, 16, 4), "ieee"),
        ((64, 64, 16, 4), (64, 16, 32, 4), "ieee"),
        ((128, 32, 32, 8), (64, 32, 32, 8), "ieee"),
    ]
    try:
        for fwd_tiles, bwd_tiles, precision in configs:
            if time.monotonic() > deadline:
                break
            vandermonde_kernels.FORWARD_TILES = fwd_tiles
            vandermonde_kernels.TRANSPOSE_TILES = bwd_tiles
            vandermonde_kernels.DOT_PRECISION = precision
            K = vandermonde_kernels.vandermonde_triton(v, x, L)
            ref = vandermonde_ref(v[:CHUNK_H].to(C128), x[:CHUNK_H].to(C128), L)
            rows["vandermonde"].append(
                {
                    "forward_tiles": fwd_tiles,
                    "transpose_tiles": bwd_tiles,
                    "precision": precision,
                    "fwd_ms": bench(lambda: vandermonde_kernels.vandermonde_triton(v, x, L)),
                    "transpose_ms": bench(
                        lambda: vandermonde_kernels.vandermonde_transpose_triton(g, x, True)
                    ),
                    "rel_err_first_channels": max_err(K[:CHUNK_H], ref)["rel_err"],
                }
            )
    finally:
        (
            vandermonde_kernels.FORWARD_TILES,
            vandermonde_kernels.TRANSPOSE_TILES,
            vandermonde_kernels.DOT_PRECISION,
        ) = saved
    v, z, w = cauchy_inputs(H, N, L, seed)
    gc = torch.randn(H, L, device=DEVICE, dtype=C64)
    y0 = cauchy_kernels.cauchy_triton(v, z, w)
    names = ("BLOCK_N", "BLOCK_L", "BWD_BLOCK_N", "BWD_BLOCK_L", "BWD_NUM_WARPS")
    saved = tuple(getattr(cauchy_kernels, n) for n in names)
    try:
        for config in ((32, 128, 16, 64, 4), (16, 512, 8, 128, 4), (8, 256, 32, 32, 4)):
            if time.monotonic() > deadline:
                break
            for n, value in zip(names, config, strict=True):
                setattr(cauchy_kernels, n, value)
            rows["cauchy"].append(
                {
                    "config": dict(zip(names, config, strict=True)),
                    "fwd_ms": bench(lambda: cauchy_kernels.cauchy_triton(v, z, w)),
                    "bwd_vw_ms": cauchy_bwd_ms(v, z, w, gc),
                    "rel_diff_vs_default": max_err(cauchy_kernels.cauchy_triton(v, z, w), y0)[
                        "rel_err"
                    ],
                }
            )
    finally:
        for n, value in zip(names, saved, strict=True):
            setattr(cauchy_kernels, n, value)
    u = torch.randn(B, H, L, device=DEVICE)
    k = torch.randn(H, 64, device=DEVICE)
    y0 = conv_kernels.causal_conv_triton(u, k, 0.5)
    saved = (conv_kernels.BLOCK_L, conv_kernels.NUM_WARPS)
    try:
        for block_l, num_warps in ((64, 2), (128, 2), (256, 4), (256, 8), (512, 8)):
            if time.monotonic() > deadline:
                break
            conv_kernels.BLOCK_L, conv_kernels.NUM_WARPS = block_l, num_warps
            rows["direct_conv"].append(
                {
                    "BLOCK_L": block_l,
                    "num_warps": num_warps,
                    "fwd_ms": bench(lambda: conv_kernels.causal_conv_triton(u, k, 0.5)),
                    "same_output": bool(
                        torch.equal(conv_kernels.causal_conv_triton(u, k, 0.5), y0)
                    ),
                }
            )
    finally:
        conv_kernels.BLOCK_L, conv_kernels.NUM_WARPS = saved
    return rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default=".")
    parser.add_argument("--commit", default="unknown")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--budget-s", type=float, default=200, help="skip optional parts past this")
    args = parser.parse_args()
    start = time.monotonic()
    path = Path(args.out, "check_kernels.json")
    report: dict = {
        "what": "ssm.ops vandermonde, cauchy, fftconv, s4d_step: Triton kernels vs PyTorch anchors",
        "commit": args.commit,
        "device": torch.cuda.get_device_name(),
        "torch": torch.__version__,
        "triton": triton.__version__,
        "python": platform.python_version(),
        "timing": "triton.testing.do_bench, median ms, L2 flushed before each run",
    }

    def section(name: str, fn: Callable[[], object], optional: bool = False) -> None:
        if optional and time.monotonic() - start > args.budget_s:
            report[name] = "skipped: out of time"
        else:
            t0 = time.monotonic()
            try:
                report[name] = fn()
            except Exception:  # recorded, not raised: the other sections still run
                report[name] = {"error": traceback.format_exc()[-3000:]}
            torch.cuda.synchronize()
            torch.cuda.empty_cache()
            report.setdefault("section_s", {})[name] = round(time.monotonic() - t0, 1)
        path.write_text(json.dumps(report, indent=1, default=str))
        print(name, json.dumps(report[name], default=str)[:1500], flush=True)

    section("copy_bandwidth", copy_bandwidth)
    section("vandermonde", lambda: check_vandermonde(1024, 64, 16384, args.seed))
    section("cauchy", lambda: check_cauchy(1024, 64, 16384, args.seed))
    section("fftconv", lambda: check_fftconv(8, 1024, 16384, 64, args.seed))
    section("decode", lambda: check_decode((8, 64), 1024, 64, args.seed))
    copy = report.get("copy_bandwidth", {})
    if isinstance(copy, dict) and "TB_per_s" in copy:
        for row in report.get("decode", {}).get("batches", {}).values():
            row["fraction_of_copy_bandwidth"] = row["TB_per_s"] / copy["TB_per_s"]
        conv = report.get("fftconv", {})
        if "ms" in conv:
            conv["direct_fwd_fraction_of_copy_bandwidth"] = (
                conv["direct_fwd_bytes"] / conv["ms"]["direct_short_fwd"] / 1e9 / copy["TB_per_s"]
            )
    section("prefill", lambda: check_prefill(8, 1024, 64, 16384, args.seed), optional=True)
    section("public_dispatch", lambda: public_dispatch(args.seed), optional=True)
    section("sweep", lambda: sweep(start + args.budget_s + 50, args.seed), optional=True)
    report["total_s"] = round(time.monotonic() - start, 1)
    path.write_text(json.dumps(report, indent=1, default=str))
    print("total_s", report["total_s"])


if __name__ == "__main__":
    main()
