"""Check the Triton selective scan at real size on a GPU, then time it against the reference.

    PYTHONPATH=. python3 benchmarks/check_selective_scan.py --out "$OUT" [--commit SHA]

Correctness, for float32 and bfloat16 inputs of Mamba's shapes (batch 8, dim 2048, L 4096,
N 16 by default): the Triton kernel and the PyTorch reference (which computes in float32) are
both compared with the reference run on the same inputs in float64, on the output, the last
state and the gradients of all inputs. The kernel passes where its relative error
``‖x − x64‖ / ‖x64‖`` is at most twice the reference's own, or under the dtype's floor. Inputs
are fresh random numbers (Mamba's initialization ranges), and every ``torch.empty`` is filled
with NaN while the kernel runs, so an element it never writes shows up.

Timing (``triton.testing.do_bench``, median, milliseconds): forward and forward+backward of the
Triton path and of the reference, the decode step, the deterministic backward, a device-to-device
copy (bandwidth, bytes read + written) and a small sweep of tile sizes.

Writes ``selective_scan.json`` under ``--out`` after every phase, and prints a summary last.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import time
import warnings
from pathlib import Path

import torch
import triton
from gpu_common import copy_bandwidth, poisoned_empty, rel_err
from triton.testing import do_bench

from ssm.ops.selective_scan import selective_scan, selective_state_update
from ssm.ops.selective_scan import triton as kernels

DEVICE = "cuda"
# Relative error a kernel may always have: float32 arithmetic over L steps, and bf16's rounding
# of its results (2^-9 relative on average, 2^-8 at most).
FLOOR = {torch.float32: 1e-5, torch.bfloat16: 8e-3}


def mamba_inputs(batch, dim, dstate, length, dtype, seed):
    """Inputs as a Mamba block produces them: activations in ``dtype``, parameters in float32,
    ``A = -(1..N)`` (S4D-real) with noise, ``softplus(delta_bias)`` log-uniform in [1e-3, 1e-1]."""
    gen = torch.Generator(device=DEVICE).manual_seed(seed)

    def randn(*shape, dtype=dtype, scale=1.0):
        return (scale * torch.randn(*shape, generator=gen, device=DEVICE)).to(dtype)

    n = torch.arange(1, dstate + 1, device=DEVICE, dtype=torch.float32)
    A = -(n + 0.1 * torch.rand(dim, dstate, generator=gen, device=DEVICE))
    dt = torch.exp(
        torch.rand(dim, generator=gen, device=DEVICE) * (math.log(0.1) - math.log(1e-3))
        + math.log(1e-3)
    )
    return {
        "u": randn(batch, dim, length),
        "delta": randn(batch, dim, length, scale=0.5),
        "A": A,
        "B": randn(batch, dstate, length),
        "C": randn(batch, dstate, length),
        "D": randn(dim, dtype=torch.float32),
        "z": randn(batch, dim, length),
        "delta_bias": dt + torch.log(-torch.expm1(-dt)),  # inverse softplus
    }


def forward_backward(backend, inputs, dout):
    """Output, last state and the gradients of every input, as a dict of tensors."""
    leaves = {k: v.detach().clone().requires_grad_() for k, v in inputs.items()}
    out, last = selective_scan(
        **leaves, delta_softplus=True, return_last_state=True, backend=backend
    )
    grads = torch.autograd.grad(out, list(leaves.values()), dout)
    return {"out": out, "last_state": last} | {
        f"d{k}": g for k, g in zip(leaves, grads, strict=True)
    }


def check(dtype, sizes, seed):
    """Errors of the kernel and of the reference against float64, per output and gradient."""
    inputs = mamba_inputs(*sizes, dtype, seed)
    dout = torch.randn_like(inputs["u"])
    with poisoned_empty():
        got = forward_backward("triton", inputs, dout)
    ref = forward_backward("reference", inputs, dout)
    truth = forward_backward("reference", {k: v.double() for k, v in inputs.items()}, dout.double())
    rows = {}
    for name in truth:
        err_kernel, err_ref = rel_err(got[name], truth[name]), rel_err(ref[name], truth[name])
        bound = max(2 * err_ref, FLOOR[dtype])
        rows[name] = {
            "triton": err_kernel,
            "reference_fp32": err_ref,
            "bound": bound,
            "ok": err_kernel <= bound,  # False for NaN
        }
    del got, ref, truth
    torch.cuda.empty_cache()
    return rows


def bench(fn, slow=False):
    if slow:  # the reference takes seconds: a few runs are enough
        return do_bench(fn, warmup=1, rep=1, return_mode="median")
    return do_bench(fn, warmup=100, rep=500, return_mode="median")


def timings(dtype, sizes, seed, reference=True):
    inputs = mamba_inputs(*sizes, dtype, seed)
    leaves = {k: v.detach().clone().requires_grad_() for k, v in inputs.items()}
    dout = torch.randn_like(inputs["u"])
    result = {}
    for backend in ("triton", "reference") if reference else ("triton",):
        slow = backend == "reference"

        def fwd(backend=backend):
            with torch.no_grad():
                return selective_scan(**inputs, delta_softplus=True, backend=backend)

        def fwd_bwd(backend=backend):
            out = selective_scan(**leaves, delta_softplus=True, backend=backend)
            return torch.autograd.grad(out, list(leaves.values()), dout)

        result[backend] = {"fwd_ms": bench(fwd, slow), "fwd_bwd_ms": bench(fwd_bwd, slow)}
    torch.use_deterministic_algorithms(True)
    try:
        result["triton"]["fwd_bwd_deterministic_ms"] = bench(
            lambda: torch.autograd.grad(
                selective_scan(**leaves, delta_softplus=True, backend="triton"),
                list(leaves.values()),
                dout,
            )
        )
    finally:
        torch.use_deterministic_algorithms(False)
    return result


def decode_step(sizes, seed):
    """The decode kernel on one token of a (batch, dim, N) state: error and time."""
    batch, dim, dstate, _ = sizes
    x = mamba_inputs(batch, dim, dstate, 1, torch.bfloat16, seed)
    args = [x["u"][..., 0], x["delta"][..., 0], x["A"], x["B"][..., 0], x["C"][..., 0]]
    args += [x["D"], x["z"][..., 0], x["delta_bias"]]
    state = torch.randn(batch, dim, dstate, device=DEVICE)
    s_ref, s_got = state.double(), state.clone()
    with poisoned_empty():
        y = selective_state_update(s_got, *args, dt_softplus=True, backend="triton")
    y_ref = selective_state_update(
        s_ref, *[a.double() for a in args], dt_softplus=True, backend="reference"
    )
    return {
        "y_rel_err": rel_err(y, y_ref),
        "state_rel_err": rel_err(s_got, s_ref),
        "triton_ms": bench(
            lambda: selective_state_update(state, *args, dt_softplus=True, backend="triton")
        ),
        "reference_ms": bench(
            lambda: selective_state_update(state, *args, dt_softplus=True, backend="reference")
        ),
    }


KNOBS = ("CHUNK", "FWD_BLOCK_D", "FWD_WARPS", "BWD_BLOCK_D", "BWD_WARPS")
SWEEP = [  # values of KNOBS; the first is the default
    (64, 16, 4, 16, 2),
    (64, 16, 4, 16, 4),
    (64, 32, 4, 32, 4),
    (64, 16, 2, 16, 2),
    (128, 16, 4, 16, 4),
    (32, 32, 4, 32, 4),
    (64, 8, 2, 8, 2),
]


def sweep(sizes, seed, deadline):
    """Time forward and forward+backward (bf16) for each setting of the kernels' tile knobs,
    until ``deadline``; each setting's results are compared with the first one's."""
    inputs = mamba_inputs(*sizes, torch.bfloat16, seed)
    leaves = {k: v.detach().clone().requires_grad_() for k, v in inputs.items()}
    dout = torch.randn_like(inputs["u"])
    saved = tuple(getattr(kernels, k) for k in KNOBS)

    def fwd():
        with torch.no_grad():
            return selective_scan(**inputs, delta_softplus=True, backend="triton")

    def fwd_bwd():
        out = selective_scan(**leaves, delta_softplus=True, backend="triton")
        return torch.autograd.grad(out, list(leaves.values()), dout)

    rows, first = [], None
    try:
        for config in SWEEP:
            if time.monotonic() > deadline:
                break
            for name, value in zip(KNOBS, config, strict=True):
                setattr(kernels, name, value)
            results = [fwd(), *fwd_bwd()]
            first = first or results
            diff = max(rel_err(r, f) for r, f in zip(results, first, strict=True))
            row = {"config": dict(zip(KNOBS, config, strict=True)), "max_rel_diff": diff}
            rows.append(row | {"fwd_ms": bench(fwd), "fwd_bwd_ms": bench(fwd_bwd)})
    finally:
        for name, value in zip(KNOBS, saved, strict=True):
            setattr(kernels, name, value)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default=".")
    parser.add_argument("--commit", default="unknown")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--dim", type=int, default=2048)
    parser.add_argument("--length", type=int, default=4096)
    parser.add_argument("--dstate", type=int, default=16)
    parser.add_argument("--budget-s", type=float, default=240, help="skip the sweep past this")
    parser.add_argument(
        "--time-reference", default="fp32,bf16", help="dtypes in which to time the reference"
    )
    args = parser.parse_args()
    start = time.monotonic()
    sizes = (args.batch, args.dim, args.dstate, args.length)
    path = Path(args.out, "selective_scan.json")
    report: dict[str, object] = {
        "what": "ssm.ops.selective_scan: Triton kernel vs PyTorch reference",
        "commit": args.commit,
        "device": torch.cuda.get_device_name(),
        "torch": torch.__version__,
        "triton": triton.__version__,
        "cuda": torch.version.cuda,
        "python": platform.python_version(),
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "sizes": dict(zip(("batch", "dim", "dstate", "length"), sizes, strict=True)),
        "options": "D, z, delta_bias, delta_softplus=True; B and C (batch, N, L)",
    }

    def save(key, value):
        report[key] = value
        report["wall_s"] = round(time.monotonic() - start, 1)
        path.write_text(json.dumps(report, indent=1))
        print(f"[{report['wall_s']:.0f}s] {key}: {json.dumps(value)[:400]}", flush=True)

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        selective_scan(**mamba_inputs(1, 8, 4, 16, torch.float32, 0), backend="auto")
    save("auto_backend_warnings", [str(w.message) for w in caught])  # [] = the probe passed
    save("copy_bandwidth", copy_bandwidth())
    for dtype, name in ((torch.float32, "fp32"), (torch.bfloat16, "bf16")):
        save(f"check_{name}", check(dtype, sizes, seed=1 if name == "fp32" else 2))
    save("decode_step", decode_step(sizes, seed=3))
    for dtype, name in ((torch.bfloat16, "bf16"), (torch.float32, "fp32")):
        save(f"time_{name}", timings(dtype, sizes, seed=4, reference=name in args.time_reference))
    save("sweep_bf16", sweep(sizes, 5, deadline=start + args.budget_s))

    print("\nerrors (relative to float64; ok = within max(2x reference, floor)):")
    for name in ("fp32", "bf16"):
        for key, row in report[f"check_{name}"].items():
            print(f"  {name} {key:12s} triton {row['triton']:.2e}  ref {row['reference_fp32']:.2e}"
                  f"  {'ok' if row['ok'] else 'FAIL'}")  # fmt: skip
    for name in ("bf16", "fp32"):
        tri = report[f"time_{name}"]["triton"]
        ref = report[f"time_{name}"].get("reference", {"fwd_ms": math.nan, "fwd_bwd_ms": math.nan})
        print(
            f"  {name}: triton fwd {tri['fwd_ms']:.3f} ms, fwd+bwd {tri['fwd_bwd_ms']:.3f} ms "
            f"(deterministic {tri['fwd_bwd_deterministic_ms']:.3f}); "
            f"reference fwd {ref['fwd_ms']:.1f} ms, fwd+bwd {ref['fwd_bwd_ms']:.1f} ms"
        )
    print(f"  copy {report['copy_bandwidth']['TB_per_s']:.2f} TB/s; decode {report['decode_step']}")
    for row in report["sweep_bf16"]:
        print(
            f"  sweep {tuple(row['config'].values())}: fwd {row['fwd_ms']:.3f} fwd+bwd "
            f"{row['fwd_bwd_ms']:.3f} (differs from the first by {row['max_rel_diff']:.1e})"
        )
    all_ok = all(r["ok"] for n in ("fp32", "bf16") for r in report[f"check_{n}"].values())
    print("ALL OK" if all_ok else "SOME CHECKS FAILED")


if __name__ == "__main__":
    main()
