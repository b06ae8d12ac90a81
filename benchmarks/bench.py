"""Time the `ssm` Triton kernels and the public anchors side by side, in one process, on one GPU.

    source benchmarks/setup_device.sh
    python3 benchmarks/bench.py --wheels .whl --s4-src .s4ext --out "$OUT"

Each op writes ``bench_<op>.json``: device, versions, the measured device-to-device copy
bandwidth, and for every case the median time (``triton.testing.do_bench``) of each
implementation, our time over each anchor's, the fraction of copy bandwidth reached by the
bytes the op must move at least, the relative error against an anchor, and the peak memory
our fast path allocated beside its inputs. An anchor that fails to load or run is recorded with
its error instead of a time.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import platform
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
import triton
from anchors import (
    build_s4_structured_kernels,
    build_selective_scan_cuda,
    extract_mamba_sdist,
    import_fla_chunk_simple_gla,
    import_mamba_submodules,
    import_mambapy_pscan,
)
from provenance import git_commit
from triton.testing import do_bench

from ssm.ops.cauchy import cauchy, cauchy_ref
from ssm.ops.fftconv import fftconv, kernel_fft
from ssm.ops.s4d_step import s4d_step
from ssm.ops.selective_scan import selective_scan, selective_state_update
from ssm.ops.ssd import ssd, ssd_state_update
from ssm.ops.vandermonde import vandermonde
from ssm.ops.vandermonde.reference import vandermonde_blocked, vandermonde_ref

DEV = "cuda"
OURS = "ssm (Triton)"


def median_ms(fn: Callable[[], object]) -> float:
    return float(do_bench(fn, warmup=25, rep=100, return_mode="median"))


def graph_median_ms(fn: Callable[[], object]) -> tuple[float, str]:
    """Median time of ``fn`` replayed from a CUDA graph, or eager where it cannot be captured."""
    fn()  # compile and warm up outside the capture
    try:
        ms = float(triton.testing.do_bench_cudagraph(fn, rep=100, return_mode="median"))
        return ms, "CUDA graph replay"
    except Exception:  # capture refused (e.g. a host sync): time it eagerly instead
        torch.cuda.synchronize()
        return median_ms(fn), "eager"


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    if a.is_complex() or b.is_complex():
        a, b = (torch.view_as_real(t.detach().to(torch.complex128)) for t in (a, b))
    a, b = a.detach().double(), b.detach().double()
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


def copy_bandwidth() -> dict[str, float]:
    """Device-to-device copy of 1 GiB, counting bytes read plus bytes written."""
    x = torch.randn(2**28, device="cuda")
    y = torch.empty_like(x)
    ms = median_ms(lambda: y.copy_(x))
    moved = 2 * x.numel() * 4
    return {"bytes": moved, "ms": ms, "TB_per_s": moved / ms / 1e9}


def peak_extra_bytes(fn: Callable[[], object]) -> int:
    """Peak memory allocated while ``fn`` runs, above what was allocated before."""
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    fn()
    torch.cuda.synchronize()
    return int(torch.cuda.max_memory_allocated() - before)


def forward_backward(fn: Callable[[], torch.Tensor], inputs: list[torch.Tensor]):
    """A closure running ``fn`` and its backward pass with a fixed random output gradient."""
    out = fn()
    out = out[0] if isinstance(out, tuple) else out
    grad = torch.randn_like(out)

    def step():
        for t in inputs:
            t.grad = None
        y = fn()
        y = y[0] if isinstance(y, tuple) else y
        y.backward(grad)

    return step


class Case:
    """One size of one op: times of every implementation, ratios, bandwidth, error, memory."""

    def __init__(
        self, name: str, config: dict, min_bytes: int | None, copy_bw: float, graph: bool = False
    ):
        self.record: dict = {"case": name, "config": config, "ms": {}, "errors": {}}
        self.min_bytes, self.copy_bw, self.graph = min_bytes, copy_bw, graph

    def time(self, label: str, fn: Callable[[], object], calls: int = 1) -> None:
        """Record the median time of ``fn`` divided by ``calls``, the steps one call makes."""
        try:
            if self.graph:
                ms, how = graph_median_ms(fn)
                self.record.setdefault("timer", {})[label] = how
            else:
                ms = median_ms(fn)
            self.record["ms"][label] = round(ms / calls, 5)
        except Exception as err:  # an anchor that cannot run is reported, not fatal
            self.record["errors"][label] = f"{type(err).__name__}: {str(err)[:300]}"
        finally:
            torch.cuda.empty_cache()

    def finish(self, extra: dict | None = None) -> dict:
        ms = self.record["ms"]
        if OURS in ms:
            self.record["ratio_to"] = {
                k: round(ms[OURS] / v, 3) for k, v in ms.items() if k != OURS
            }
            if self.min_bytes:
                achieved = self.min_bytes / (ms[OURS] * 1e-3)
                self.record["bandwidth_fraction"] = round(achieved / self.copy_bw, 3)
        self.record.update(extra or {})
        print(json.dumps({k: self.record[k] for k in ("case", "ms") if k in self.record}))
        return self.record


def rand(*shape, dtype=torch.float32, scale=1.0):
    return (torch.randn(*shape, device=DEV) * scale).to(dtype)


def bench_selective_scan(anchors: dict, bw: float, quick: bool) -> list[dict]:
    out = []
    fn_cuda, pscan = anchors.get("selective_scan_fn"), anchors.get("pscan")
    dims = [2048] if quick else [4096, 2048]
    for dim in dims:
        for dtype in (torch.bfloat16, torch.float32):
            b, n, L = 8, 16, 4096
            u, z = rand(b, dim, L, dtype=dtype), rand(b, dim, L, dtype=dtype)
            delta = rand(b, dim, L, dtype=dtype, scale=0.5)
            A = -torch.rand(dim, n, device=DEV).add(0.5)
            B, C = rand(b, n, L, dtype=dtype), rand(b, n, L, dtype=dtype)
            D, bias = torch.randn(dim, device=DEV), torch.randn(dim, device=DEV) * 0.1
            leaves = [u, delta, A, B, C, D, z, bias]
            esize = u.element_size()
            min_bytes = (4 * b * dim * L + 2 * b * n * L) * esize  # u, delta, z in; y out; B, C
            cfg = {
                "batch": b,
                "dim": dim,
                "L": L,
                "N": n,
                "dtype": str(dtype),
                "z": True,
                "delta_softplus": True,
                "delta_bias": True,
            }
            kw = dict(D=D, z=z, delta_bias=bias, delta_softplus=True)

            def ours():
                return selective_scan(u, delta, A, B, C, **kw, backend="triton")

            def mamba():
                return fn_cuda(u, delta, A, B, C, **kw)

            for mode in ("fwd", "fwd+bwd"):
                case = Case(f"selective_scan {mode}", cfg | {"mode": mode}, min_bytes, bw)
                grads = mode == "fwd+bwd"
                for t in leaves:
                    t.requires_grad_(grads)
                run = (lambda f: forward_backward(f, leaves)) if grads else (lambda f: f)
                case.time(OURS, run(ours))
                if callable(fn_cuda):
                    case.time("mamba_ssm selective_scan_fn (CUDA)", run(mamba))
                if callable(pscan) and dim == 2048 and dtype == torch.float32:
                    args = (u, delta, A, B, C, D, z, bias)
                    case.time("mambapy pscan (PyTorch)", run(lambda: _pscan_scan(pscan, *args)))
                if dim == 2048 and not grads:  # the loop over time takes about a second
                    case.time(
                        "PyTorch sequential loop (reference)",
                        lambda: selective_scan(u, delta, A, B, C, **kw, backend="reference"),
                    )
                extra = {}
                if not grads:
                    with torch.no_grad():
                        if callable(fn_cuda):
                            extra["rel_error_vs_mamba_ssm"] = relative_error(ours(), mamba())
                        bdnl = b * dim * n * L * 4
                        extra["peak_extra_bytes"] = peak_extra_bytes(ours)
                        extra["bytes_of_(b,d,N,L)_fp32"] = bdnl
                out.append(case.finish(extra))
                for t in leaves:
                    t.requires_grad_(False)
    return out


def _pscan_scan(pscan, u, delta, A, B, C, D, z, bias):
    """The selective scan through mambapy's parallel scan, which takes (b, L, d, N) tensors."""
    dt = F.softplus(delta.float() + bias[:, None]).transpose(1, 2)  # (b L d)
    dA = torch.exp(dt.unsqueeze(-1) * A)  # (b L d N)
    dBu = (dt * u.float().transpose(1, 2)).unsqueeze(-1) * B.float().transpose(1, 2).unsqueeze(2)
    h = pscan(dA, dBu)  # (b L d N)
    y = (h @ C.float().transpose(1, 2).unsqueeze(-1)).squeeze(-1)  # (b L d)
    y = y + D * u.float().transpose(1, 2)
    return (y * F.silu(z.float().transpose(1, 2))).transpose(1, 2).to(u.dtype)


def bench_ssd(anchors: dict, bw: float, quick: bool) -> list[dict]:
    out = []
    combined, gla = anchors.get("mamba_chunk_scan_combined"), anchors.get("chunk_simple_gla")
    b, L, h, p, n, chunk = 8, 4096, 64, 64, 128, 256
    dtype = torch.bfloat16
    x = rand(b, L, h, p, dtype=dtype)
    dt = torch.rand(b, L, h, device=DEV).mul(0.1).add(0.001)
    A = -torch.rand(h, device=DEV).add(0.5)
    B, C = rand(b, L, 1, n, dtype=dtype), rand(b, L, 1, n, dtype=dtype)
    leaves = [x, dt, A, B, C]
    min_bytes = (2 * b * L * h * p + 2 * b * L * n) * 2 + b * L * h * 4
    cfg = {
        "batch": b,
        "L": L,
        "heads": h,
        "headdim": p,
        "N": n,
        "groups": 1,
        "chunk": chunk,
        "dtype": "bfloat16",
    }

    def ours():
        return ssd(x, dt, A, B, C, chunk, backend="triton")

    def mamba():
        return combined(x, dt, A, B, C, chunk)

    def fla():
        q = C.expand(b, L, h, n)
        k = (dt.unsqueeze(-1) * B.expand(b, L, h, n)).to(dtype)
        return gla(q=q, k=k, v=x, g=dt * A, scale=1.0)[0]

    for mode in ("fwd", "fwd+bwd"):
        grads = mode == "fwd+bwd"
        for t in leaves:
            t.requires_grad_(grads)
        run = (lambda f: forward_backward(f, leaves)) if grads else (lambda f: f)
        case = Case(f"ssd {mode}", cfg | {"mode": mode}, min_bytes, bw)
        case.time(OURS, run(ours))
        if callable(combined):
            case.time("mamba_ssm mamba_chunk_scan_combined (Triton)", run(mamba))
        if callable(gla) and not grads:
            case.time("fla chunk_simple_gla (Triton)", fla)
        extra = {}
        if not grads:
            with torch.no_grad():
                if callable(combined):
                    extra["rel_error_vs_mamba_ssm"] = relative_error(ours(), mamba())
                if callable(gla):
                    try:
                        extra["rel_error_fla_vs_ours"] = relative_error(fla(), ours())
                    except Exception as err:  # reported, not fatal
                        extra["fla_error"] = repr(err)[:300]
                extra["peak_extra_bytes"] = peak_extra_bytes(ours)
        out.append(case.finish(extra))
        for t in leaves:
            t.requires_grad_(False)
    return out


def bench_vandermonde_cauchy(s4: object, bw: float, quick: bool) -> list[dict]:
    out = []
    H, N, L = 1024, 64, 16384
    x = torch.complex(-torch.rand(H, N, device=DEV) * 0.1, torch.randn(H, N, device=DEV))
    x = x * 0.01
    v = torch.randn(H, N, device=DEV, dtype=torch.complex64)
    cfg = {"H": H, "N": N, "L": L, "dtype": "complex64 in, float32 out"}
    leaves = [v, x]
    for mode in ("fwd", "fwd+bwd"):
        grads = mode == "fwd+bwd"
        for t in leaves:
            t.requires_grad_(grads)
        run = (lambda f: forward_backward(f, leaves)) if grads else (lambda f: f)
        case = Case(f"vandermonde {mode}", cfg | {"mode": mode}, H * L * 4, bw)
        case.time(OURS, run(lambda: vandermonde(v, x, L, backend="triton")))
        if s4 is not None:
            s4_fn = _s4_vandermonde(s4)
            case.time("S4 authors' CUDA (log_vandermonde)", run(lambda: s4_fn(v, x, L)))
        case.time("PyTorch blocked matmul", run(lambda: vandermonde_blocked(v, x, L)))
        case.time("PyTorch naive (H,N,L)", run(lambda: vandermonde_ref(v, x, L)))
        extra = {}
        if not grads:
            with torch.no_grad():
                ref = vandermonde_ref(v.to(torch.complex128), x.to(torch.complex128), L)
                extra["rel_error_vs_float64"] = relative_error(
                    vandermonde(v, x, L, backend="triton"), ref
                )
                extra["peak_extra_bytes"] = peak_extra_bytes(
                    lambda: vandermonde(v, x, L, backend="triton")
                )
                extra["bytes_of_(H,N,L)_complex64"] = H * N * L * 8
        out.append(case.finish(extra))
    for t in leaves:
        t.requires_grad_(False)
    w = torch.complex(-torch.rand(H, N, device=DEV), torch.randn(H, N, device=DEV) * 10)
    z = torch.exp(2j * math.pi * torch.rand(L, device=DEV)).to(torch.complex64)
    leaves = [v, w]
    for mode in ("fwd", "fwd+bwd"):
        grads = mode == "fwd+bwd"
        for t in leaves:
            t.requires_grad_(grads)
        run = (
            (lambda f: forward_backward(lambda: torch.view_as_real(f()), leaves))
            if grads
            else (lambda f: f)
        )
        case = Case(f"cauchy {mode}", cfg | {"mode": mode, "dtype": "complex64"}, H * L * 8, bw)
        case.time(OURS, run(lambda: cauchy(v, z, w, backend="triton")))
        if s4 is not None:
            fn = _s4_cauchy(s4)
            case.time("S4 authors' CUDA (cauchy_mult)", run(lambda: fn(v, z, w)))
        if not grads:
            case.time("PyTorch naive (H,N,L)", lambda: cauchy_ref(v, z, w))
        extra = {}
        if not grads:
            with torch.no_grad():
                ref = cauchy_ref(
                    v.to(torch.complex128), z.to(torch.complex128), w.to(torch.complex128)
                )
                extra["rel_error_vs_float64"] = relative_error(
                    cauchy(v, z, w, backend="triton"), ref
                )
                if s4 is not None:
                    extra["rel_error_s4_cuda_vs_float64"] = relative_error(fn(v, z, w), ref)
        out.append(case.finish(extra))
    for t in leaves:
        t.requires_grad_(False)
    return out


def _s4_vandermonde(s4):
    class _Vand(torch.autograd.Function):
        @staticmethod
        def forward(ctx, v, x, L):
            ctx.save_for_backward(v, x)
            return s4.vand_log_mult_sym_fwd(v, x, L)

        @staticmethod
        def backward(ctx, dout):
            v, x = ctx.saved_tensors
            dv, dx = s4.vand_log_mult_sym_bwd(v, x, dout.contiguous())
            return dv, dx, None

    return _Vand.apply


def _s4_cauchy(s4):
    class _Cauchy(torch.autograd.Function):
        @staticmethod
        def forward(ctx, v, z, w):
            ctx.save_for_backward(v, z, w)
            return s4.cauchy_mult_sym_fwd(v, z, w)

        @staticmethod
        def backward(ctx, dout):
            v, z, w = ctx.saved_tensors
            dv, dw = s4.cauchy_mult_sym_bwd(v, z, w, dout.contiguous())
            return dv, None, dw

    return _Cauchy.apply


def bench_fftconv(bw: float, quick: bool) -> list[dict]:
    b, H, L = 8, 1024, 16384
    u, k = rand(b, H, L), rand(H, L, scale=0.01)
    D = torch.randn(H, device=DEV)
    kf = kernel_fft(k, L)
    cfg = {"batch": b, "H": H, "L": L, "dtype": "float32"}
    case = Case("fftconv fwd", cfg, 2 * b * H * L * 4 + H * L * 4, bw)
    case.time(OURS, lambda: fftconv(u, kf, D))
    case.time("torch.fft (kernel transformed each call)", lambda: _plain_fftconv(u, k, D))
    return [
        case.finish(
            {"rel_error_vs_plain": relative_error(fftconv(u, kf, D), _plain_fftconv(u, k, D))}
        )
    ]


def _plain_fftconv(u, k, D):
    L = u.shape[-1]
    y = torch.fft.irfft(torch.fft.rfft(u, n=2 * L) * torch.fft.rfft(k, n=2 * L), n=2 * L)
    return y[..., :L] + D[:, None] * u


L2_FLUSH_BYTES = 256 * 2**20  # five times the H100's 50 MB L2 cache


def state_copies(state: torch.Tensor) -> list[torch.Tensor]:
    """Enough copies of a decode state that stepping through them all cannot stay in L2: one
    state alone may fit there, and repeated steps on it would time the cache, not memory."""
    count = max(1, math.ceil(L2_FLUSH_BYTES / (state.numel() * state.element_size())))
    return [state.clone() for _ in range(count)]


def bench_decode(anchors: dict, bw: float, quick: bool) -> list[dict]:
    """One generation step, timed by replaying a CUDA graph of it (as generation loops do), so
    that launch latency does not hide the memory traffic; eager timing where capture fails.
    Each timed call steps through several copies of the state (``state_copies``)."""
    out = []
    ssu = anchors.get("selective_state_update")
    for b in (8, 64):
        dim, n = 4096, 16
        state = torch.randn(b, dim, n, device=DEV)
        x, dt = torch.randn(b, dim, device=DEV), torch.rand(b, dim, device=DEV)
        A = -torch.rand(dim, n, device=DEV)
        B, C = torch.randn(b, n, device=DEV), torch.randn(b, n, device=DEV)
        D, bias = torch.randn(dim, device=DEV), torch.randn(dim, device=DEV) * 0.1
        min_bytes = 2 * state.numel() * 4 + 3 * b * dim * 4 + dim * n * 4
        cfg = {"batch": b, "dim": dim, "N": n, "dtype": "float32"}
        case = Case("mamba decode step", cfg, min_bytes, bw, graph=True)
        kw = dict(D=D, dt_bias=bias, dt_softplus=True)
        states = state_copies(state)
        case.time(
            OURS,
            lambda: [
                selective_state_update(s, x, dt, A, B, C, **kw, backend="triton") for s in states
            ],
            len(states),
        )
        if callable(ssu):
            case.time(
                "mamba_ssm selective_state_update (Triton)",
                lambda: [ssu(s, x, dt, A, B, C, **kw) for s in states],
                len(states),
            )
        out.append(case.finish())

        h, p, n2 = 64, 64, 128
        st = torch.randn(b, h, p, n2, device=DEV)
        x2, dt2 = torch.randn(b, h, p, device=DEV), torch.rand(b, h, device=DEV)
        A2, D2, bias2 = (
            -torch.rand(h, device=DEV),
            torch.randn(h, device=DEV),
            torch.rand(h, device=DEV),
        )
        B2, C2 = torch.randn(b, 1, n2, device=DEV), torch.randn(b, 1, n2, device=DEV)
        min_bytes = 2 * st.numel() * 4 + 2 * x2.numel() * 4
        cfg = {"batch": b, "heads": h, "headdim": p, "N": n2, "groups": 1, "dtype": "float32"}
        case = Case("mamba-2 decode step", cfg, min_bytes, bw, graph=True)
        states = state_copies(st)
        case.time(
            OURS,
            lambda: [
                ssd_state_update(
                    s, x2, dt2, A2, B2, C2, D=D2, dt_bias=bias2, dt_softplus=True, backend="triton"
                )
                for s in states
            ],
            len(states),
        )
        if callable(ssu):
            dt_e = dt2[..., None].expand(b, h, p)
            A_e = A2[:, None, None].expand(h, p, n2)
            D_e, bias_e = D2[:, None].expand(h, p), bias2[:, None].expand(h, p)
            case.time(
                "mamba_ssm selective_state_update (Triton)",
                lambda: [
                    ssu(s, x2, dt_e, A_e, B2, C2, D=D_e, dt_bias=bias_e, dt_softplus=True)
                    for s in states
                ],
                len(states),
            )
        out.append(case.finish())

        H, N = 1024, 64
        s = torch.randn(b, H, N, device=DEV, dtype=torch.complex64)
        Ab = torch.exp(
            torch.complex(
                -torch.rand(H, N, device=DEV) * 0.01, torch.randn(H, N, device=DEV) * 0.01
            )
        )
        Bb, Cc = (torch.randn(H, N, device=DEV, dtype=torch.complex64) for _ in range(2))
        u = torch.randn(b, H, device=DEV)
        min_bytes = 2 * s.numel() * 8 + 3 * H * N * 8
        cfg = {"batch": b, "H": H, "N": N, "dtype": "complex64"}
        case = Case("s4d decode step", cfg, min_bytes, bw, graph=True)
        states = state_copies(s)
        case.time(
            OURS,
            lambda: [s4d_step(t, u, Ab, Bb, Cc, 1.0, backend="triton") for t in states],
            len(states),
        )
        case.time(
            "PyTorch (3 kernels)",
            lambda: [_s4d_step_torch(t, u, Ab, Bb, Cc) for t in states],
            len(states),
        )
        out.append(case.finish())
    return out


def _s4d_step_torch(s, u, Ab, Bb, C):
    s.mul_(Ab).add_(Bb * u[..., None])
    return 2 * (s * C).sum(-1).real + u


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--wheels", default=".whl")
    parser.add_argument("--s4-src", default=".s4ext")
    parser.add_argument("--out", default="data/bench")
    parser.add_argument("--only", default="selective_scan,ssd,vandermonde_cauchy,fftconv,decode")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.manual_seed(0)
    root = extract_mamba_sdist(Path(args.wheels), Path("/tmp/anchors"))
    meta = {
        "device": torch.cuda.get_device_name(),
        "torch": torch.__version__,
        "triton": triton.__version__,
        "cuda": torch.version.cuda,
        "python": platform.python_version(),
        "commit": git_commit(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "timer": "triton.testing.do_bench median, warmup 25 ms, rep 100 ms",
    }
    only = args.only.split(",")
    anchors: dict = {}
    if {"selective_scan", "ssd", "decode"} & set(only):
        if "selective_scan" in only:
            try:
                _, meta["selective_scan_cuda_build_s"] = build_selective_scan_cuda(
                    root, Path("/tmp/anchors/build")
                )
            except Exception as err:  # the CUDA anchor is reported missing, the rest still runs
                meta["selective_scan_cuda_error"] = repr(err)[:500]
        anchors = import_mamba_submodules(root)
        anchors["chunk_simple_gla"] = import_fla_chunk_simple_gla()
        anchors["pscan"] = import_mambapy_pscan()
    meta["anchors"] = {k: "ok" if callable(v) else repr(v)[:300] for k, v in anchors.items()}
    s4 = None
    if "vandermonde_cauchy" in only:
        try:
            s4, meta["s4_structured_kernels_build_s"] = build_s4_structured_kernels(
                Path(args.s4_src), Path("/tmp/anchors/s4build")
            )
        except Exception as err:  # reported in the JSON
            meta["s4_structured_kernels_error"] = repr(err)[:500]
    bw = copy_bandwidth()["TB_per_s"] * 1e12  # bytes/s
    meta["copy_bandwidth_GBps"] = round(bw / 1e9, 1)
    print(json.dumps(meta))
    runs = {
        "selective_scan": lambda: bench_selective_scan(anchors, bw, args.quick),
        "ssd": lambda: bench_ssd(anchors, bw, args.quick),
        "vandermonde_cauchy": lambda: bench_vandermonde_cauchy(s4, bw, args.quick),
        "fftconv": lambda: bench_fftconv(bw, args.quick),
        "decode": lambda: bench_decode(anchors, bw, args.quick),
    }
    Path(args.out).mkdir(parents=True, exist_ok=True)
    for name in only:
        try:
            cases = runs[name]()
        except Exception as err:  # one op failing must not lose the others' numbers
            cases = [{"case": name, "error": f"{type(err).__name__}: {str(err)[:500]}"}]
            print(json.dumps(cases[0]))
        Path(args.out, f"bench_{name}.json").write_text(
            json.dumps(meta | {"op": name, "cases": cases}, indent=1)
        )


if __name__ == "__main__":
    main()
