"""Check the Triton SSD (Mamba-2) kernels at real size on a GPU, then time them.

    PYTHONPATH=. python3 benchmarks/check_ssd.py --out "$OUT" [--commit SHA]

Correctness, for float32 and bfloat16 inputs of Mamba-2's shapes (batch 8, L 4096, 64 heads of
64, N 128, one group, chunk 256, with D, z, dt_bias, softplus, initial and final states): the
Triton path and the PyTorch chunked reference (which computes in float32) are both compared with
the reference run in float64 on the same inputs, on the output, the final state and the
gradients of every input. The kernels pass where their relative error ``‖x − x64‖ / ‖x64‖`` is
at most twice the reference's own, or under the dtype's floor: float32 1e-5 (sums of a few
thousand terms), bfloat16 3·2^-8 (the kernels round both operands of their matrix products to
bf16, 2^-8 relative each at most, and write bf16 results, 2^-8 more). Inputs are fresh random
numbers in Mamba-2's initialization ranges, and every ``torch.empty`` is filled with NaN while
the kernels run, so an element they never write shows up. The backward pass is also run twice
in deterministic mode and compared bit for bit, and the decode step is checked.

Timing (``triton.testing.do_bench``, median, milliseconds): forward and forward+backward of the
Triton path and of the reference, and the decode step; the GPU time of each kernel in one bf16
forward+backward (``torch.profiler``); and a small sweep of the kernels' tuning knobs.

With ``--vs-mamba`` (run from the repository root after ``source benchmarks/setup_device.sh``,
``.whl`` carried): ``mamba_ssm``'s ``mamba_chunk_scan_combined`` timed next to the kernels in
the same process, in bench.py's setting (x, dt, A, B, C only) and with every option, for a few
settings of the knobs (``VARIANTS``); ``--quick`` skips the reference's and fp32 timings, the
decode step and the sweep.

Writes ``ssd.json`` under ``--out`` after every phase (a phase that raises records its error and
the rest still run), and prints a summary last.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import time
import traceback
import warnings
from pathlib import Path

import torch
import triton
from gpu_common import poisoned_empty, rel_err
from triton.testing import do_bench

from ssm.ops.ssd import ssd, ssd_state_update
from ssm.ops.ssd import triton as kernels

DEVICE = "cuda"
FLOOR = {torch.float32: 1e-5, torch.bfloat16: 3 * 2**-8}


def mamba2_inputs(batch, length, heads, headdim, groups, nstate, dtype, seed):
    """Activations (x, dt, B, C, z) in ``dtype``; parameters in float32 as Mamba-2 initializes
    them: ``A = -U(1, 16)``, ``softplus(dt_bias)`` log-uniform in [1e-3, 1e-1], ``D`` near 1."""
    gen = torch.Generator(device=DEVICE).manual_seed(seed)

    def randn(*shape, dtype=dtype, scale=1.0):
        return (scale * torch.randn(*shape, generator=gen, device=DEVICE)).to(dtype)

    def rand(*shape):
        return torch.rand(*shape, generator=gen, device=DEVICE)

    dt = torch.exp(rand(heads) * (math.log(0.1) - math.log(1e-3)) + math.log(1e-3))
    return {
        "x": randn(batch, length, heads, headdim),
        "dt": randn(batch, length, heads, scale=0.5),
        "A": -(1 + 15 * rand(heads)),
        "B": randn(batch, length, groups, nstate),
        "C": randn(batch, length, groups, nstate),
        "D": 1 + randn(heads, dtype=torch.float32, scale=0.1),
        "z": randn(batch, length, heads, headdim),
        "dt_bias": dt + torch.log(-torch.expm1(-dt)),  # inverse softplus
        "initial_states": randn(batch, heads, headdim, nstate, dtype=torch.float32),
    }


def forward_backward(backend, inputs, chunk_size, cotangents):
    """Output, final state and the gradients of every input, as a dict of tensors."""
    leaves = {k: v.detach().clone().requires_grad_() for k, v in inputs.items()}
    out, final = ssd(
        **leaves, chunk_size=chunk_size, dt_softplus=True, return_final_states=True,
        backend=backend,
    )  # fmt: skip
    grads = torch.autograd.grad((out, final), list(leaves.values()), cotangents)
    return {"out": out, "final_states": final} | {
        f"d{k}": g for k, g in zip(leaves, grads, strict=True)
    }


def check(dtype, sizes, chunk_size, seed):
    """Errors of the kernels and of the reference against float64, per output and gradient."""
    inputs = mamba2_inputs(*sizes, dtype, seed)
    gen = torch.Generator(device=DEVICE).manual_seed(seed + 100)
    batch, length, heads, headdim, _, nstate = sizes
    cotangents = (
        torch.randn(batch, length, heads, headdim, generator=gen, device=DEVICE).to(dtype),
        torch.randn(batch, heads, headdim, nstate, generator=gen, device=DEVICE),
    )
    with poisoned_empty():
        got = forward_backward("triton", inputs, chunk_size, cotangents)
    ref = forward_backward("reference", inputs, chunk_size, cotangents)
    torch.cuda.empty_cache()
    inputs64 = {k: v.double() for k, v in inputs.items()}
    truth = forward_backward("reference", inputs64, chunk_size, [c.double() for c in cotangents])
    rows = {}
    for name, exact in truth.items():
        err_kernel, err_ref = rel_err(got[name], exact), rel_err(ref[name], exact)
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


def deterministic(sizes, chunk_size, seed):
    """The bf16 forward and backward twice in deterministic mode: bitwise equal?"""
    inputs = mamba2_inputs(*sizes, torch.bfloat16, seed)
    batch, length, heads, headdim, _, nstate = sizes
    cotangents = (
        torch.randn(batch, length, heads, headdim, device=DEVICE).bfloat16(),
        torch.randn(batch, heads, headdim, nstate, device=DEVICE),
    )
    torch.use_deterministic_algorithms(True)
    try:
        first = forward_backward("triton", inputs, chunk_size, cotangents)
        second = forward_backward("triton", inputs, chunk_size, cotangents)
    finally:
        torch.use_deterministic_algorithms(False)
    return {name: torch.equal(first[name], second[name]) for name in first}


def bench(fn, slow=False):
    if slow:  # the reference: a few runs are enough
        return do_bench(fn, warmup=10, rep=200, return_mode="median")
    return do_bench(fn, warmup=50, rep=300, return_mode="median")


def timings(dtype, sizes, chunk_size, seed):
    inputs = mamba2_inputs(*sizes, dtype, seed)
    leaves = {k: v.detach().clone().requires_grad_() for k, v in inputs.items()}
    dout = torch.randn_like(inputs["x"])
    result = {}
    for backend in ("triton", "reference"):
        kwargs = {"chunk_size": chunk_size, "dt_softplus": True, "backend": backend}

        def fwd(kwargs=kwargs):
            with torch.no_grad():
                return ssd(**inputs, **kwargs)

        def fwd_bwd(kwargs=kwargs):
            return torch.autograd.grad(ssd(**leaves, **kwargs), list(leaves.values()), dout)

        slow = backend == "reference"
        torch.cuda.reset_peak_memory_stats()
        fwd_bwd()
        peak = torch.cuda.max_memory_allocated() / 2**30
        result[backend] = {
            "fwd_ms": bench(fwd, slow),
            "fwd_bwd_ms": bench(fwd_bwd, slow),
            "fwd_bwd_peak_GiB": round(peak, 2),
        }
    return result


def profile(sizes, chunk_size, seed):
    """GPU milliseconds per kernel (summed over calls) in one bf16 forward+backward."""
    inputs = mamba2_inputs(*sizes, torch.bfloat16, seed)
    leaves = {k: v.detach().clone().requires_grad_() for k, v in inputs.items()}
    dout = torch.randn_like(inputs["x"])

    def fwd_bwd():
        out = ssd(**leaves, chunk_size=chunk_size, dt_softplus=True, backend="triton")
        return torch.autograd.grad(out, list(leaves.values()), dout)

    fwd_bwd()
    torch.cuda.synchronize()
    activities = [torch.profiler.ProfilerActivity.CUDA]
    with torch.profiler.profile(activities=activities) as prof:
        fwd_bwd()
        torch.cuda.synchronize()
    rows = []
    for event in prof.key_averages():
        us = getattr(event, "device_time_total", None) or getattr(event, "cuda_time_total", 0)
        if us > 0:
            rows.append({"kernel": event.key[:80], "ms": round(us / 1e3, 3), "calls": event.count})
    return sorted(rows, key=lambda r: -r["ms"])[:25]


KNOBS = ("BLOCK_M_MAX", "NUM_WARPS", "HEADS_PER_PROGRAM")
SWEEP = [(64, 4, 8), (64, 8, 8), (128, 8, 8), (32, 4, 8), (64, 4, 16)]


def sweep(sizes, chunk_size, seed, deadline):
    """bf16 forward and forward+backward for a few settings of the knobs, until ``deadline``."""
    inputs = mamba2_inputs(*sizes, torch.bfloat16, seed)
    leaves = {k: v.detach().clone().requires_grad_() for k, v in inputs.items()}
    dout = torch.randn_like(inputs["x"])
    kwargs = {"chunk_size": chunk_size, "dt_softplus": True, "backend": "triton"}
    saved = tuple(getattr(kernels, k) for k in KNOBS)
    rows = []
    try:
        for config in SWEEP:
            if time.monotonic() > deadline:
                break
            for knob, value in zip(KNOBS, config, strict=True):
                setattr(kernels, knob, value)

            def fwd():
                with torch.no_grad():
                    return ssd(**inputs, **kwargs)

            def fwd_bwd():
                return torch.autograd.grad(ssd(**leaves, **kwargs), list(leaves.values()), dout)

            row = {"config": dict(zip(KNOBS, config, strict=True))}
            try:
                row |= {"fwd_ms": bench(fwd), "fwd_bwd_ms": bench(fwd_bwd)}
            except Exception as err:  # a setting that does not compile: record it
                row["error"] = f"{type(err).__name__}: {err}"[:300]
            rows.append(row)
    finally:
        for knob, value in zip(KNOBS, saved, strict=True):
            setattr(kernels, knob, value)
    return rows


VARIANT_KNOBS = ("HEADS_INNER", "USE_CB", "BLOCK_M_MAX", "NUM_WARPS")
VARIANTS = [(False, False, 64, 4), (True, True, 64, 4), (True, False, 64, 4), (True, True, 32, 4)]


def vs_mamba(sizes, chunk_size, seed, deadline):
    """bf16 forward and forward+backward (median ms): mamba_ssm's ``mamba_chunk_scan_combined``
    and the kernels under each of ``VARIANTS``, with the bare inputs and with every option."""
    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    from anchors import extract_mamba_sdist, import_mamba_submodules

    root = extract_mamba_sdist(Path(".whl"), Path("/tmp"))
    combined = import_mamba_submodules(root)["mamba_chunk_scan_combined"]
    if not callable(combined):
        raise RuntimeError(f"mamba_chunk_scan_combined did not load: {combined!r}")
    inputs = mamba2_inputs(*sizes, torch.bfloat16, seed)
    dt_raw = inputs["dt"]
    inputs["dt"] = torch.nn.functional.softplus(dt_raw + inputs["dt_bias"])  # for the bare case
    settings = {
        "bare": ({k: inputs[k] for k in ("x", "dt", "A", "B", "C")}, {}),
        "all": (inputs | {"dt": dt_raw}, {"dt_softplus": True, "return_final_states": True}),
    }
    dout = torch.randn_like(inputs["x"])
    result = {}
    saved = tuple(getattr(kernels, k) for k in VARIANT_KNOBS)
    for name, (args, flags) in settings.items():
        leaves = {k: v.detach().clone().requires_grad_() for k, v in args.items()}

        def timed(fn):
            def fwd():
                with torch.no_grad():
                    return fn(args)

            def fwd_bwd():
                out = fn(leaves)
                out = out[0] if isinstance(out, tuple) else out
                return torch.autograd.grad(out, list(leaves.values()), dout)

            return {"fwd_ms": bench(fwd), "fwd_bwd_ms": bench(fwd_bwd)}

        rows = {
            "mamba_ssm": timed(lambda a: combined(**a, chunk_size=chunk_size, **flags)),
        }
        with torch.no_grad():
            want = combined(**args, chunk_size=chunk_size, **flags)
        want = want[0] if isinstance(want, tuple) else want
        try:
            for config in VARIANTS:
                if time.monotonic() > deadline:
                    break
                for knob, value in zip(VARIANT_KNOBS, config, strict=True):
                    setattr(kernels, knob, value)
                label = "ours " + ",".join(
                    f"{k}={v}" for k, v in zip(VARIANT_KNOBS, config, strict=True)
                )
                try:
                    row = timed(
                        lambda a: ssd(**a, chunk_size=chunk_size, backend="triton", **flags)
                    )
                    with torch.no_grad():
                        got = ssd(**args, chunk_size=chunk_size, backend="triton", **flags)
                    got = got[0] if isinstance(got, tuple) else got
                    row["rel_diff_vs_mamba"] = rel_err(got, want)
                    for key in ("fwd_ms", "fwd_bwd_ms"):
                        row[key.replace("ms", "ratio")] = row[key] / rows["mamba_ssm"][key]
                except Exception as err:  # a setting that does not compile: record it
                    row = {"error": f"{type(err).__name__}: {err}"[:300]}
                rows[label] = row
        finally:
            for knob, value in zip(VARIANT_KNOBS, saved, strict=True):
                setattr(kernels, knob, value)
        result[name] = rows
    return result


def profile_mamba(sizes, chunk_size, seed):
    """GPU milliseconds per kernel in one bf16 forward+backward of mamba_ssm (bare inputs)."""
    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    from anchors import extract_mamba_sdist, import_mamba_submodules

    combined = import_mamba_submodules(extract_mamba_sdist(Path(".whl"), Path("/tmp")))[
        "mamba_chunk_scan_combined"
    ]
    x = mamba2_inputs(*sizes, torch.bfloat16, seed)
    x["dt"] = torch.nn.functional.softplus(x["dt"] + x["dt_bias"])
    leaves = {k: x[k].detach().clone().requires_grad_() for k in ("x", "dt", "A", "B", "C")}
    dout = torch.randn_like(x["x"])

    def fwd_bwd():
        out = combined(**leaves, chunk_size=chunk_size)
        return torch.autograd.grad(out, list(leaves.values()), dout)

    fwd_bwd()
    torch.cuda.synchronize()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        fwd_bwd()
        torch.cuda.synchronize()
    rows = []
    for event in prof.key_averages():
        us = getattr(event, "device_time_total", None) or getattr(event, "cuda_time_total", 0)
        if us > 0:
            rows.append({"kernel": event.key[:80], "ms": round(us / 1e3, 3), "calls": event.count})
    return sorted(rows, key=lambda r: -r["ms"])[:25]


def decode_step(sizes, seed):
    """The decode kernel on one token of a (batch, H, P, N) state: error and time."""
    batch, _, heads, headdim, groups, nstate = sizes
    x = mamba2_inputs(batch, 1, heads, headdim, groups, nstate, torch.bfloat16, seed)
    args = [x["x"][:, 0], x["dt"][:, 0], x["A"], x["B"][:, 0], x["C"][:, 0]]
    args += [x["D"], x["z"][:, 0], x["dt_bias"]]
    state = x["initial_states"]
    s_ref, s_got = state.double(), state.clone()
    with poisoned_empty():
        y = ssd_state_update(s_got, *args, dt_softplus=True, backend="triton")
    y_ref = ssd_state_update(
        s_ref, *[a.double() for a in args], dt_softplus=True, backend="reference"
    )
    result = {"y_rel_err": rel_err(y, y_ref), "state_rel_err": rel_err(s_got, s_ref)}
    for backend in ("triton", "reference"):
        result[f"{backend}_ms"] = bench(
            lambda backend=backend: ssd_state_update(
                state, *args, dt_softplus=True, backend=backend
            )
        )
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default=".")
    parser.add_argument("--commit", default="unknown")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--length", type=int, default=4096)
    parser.add_argument("--heads", type=int, default=64)
    parser.add_argument("--headdim", type=int, default=64)
    parser.add_argument("--groups", type=int, default=1)
    parser.add_argument("--dstate", type=int, default=128)
    parser.add_argument("--chunk-size", type=int, default=256)
    parser.add_argument("--budget-s", type=float, default=230, help="skip sweep steps past this")
    parser.add_argument("--vs-mamba", action="store_true", help="time mamba_ssm's SSD too")
    parser.add_argument("--quick", action="store_true", help="skip the slow timings")
    args = parser.parse_args()
    start = time.monotonic()
    sizes = (args.batch, args.length, args.heads, args.headdim, args.groups, args.dstate)
    path = Path(args.out, "ssd.json")
    report: dict[str, object] = {
        "what": "ssm.ops.ssd: Triton kernels vs PyTorch chunked reference",
        "commit": args.commit,
        "device": torch.cuda.get_device_name(),
        "torch": torch.__version__,
        "triton": triton.__version__,
        "cuda": torch.version.cuda,
        "python": platform.python_version(),
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "sizes": dict(
            zip(("batch", "length", "heads", "headdim", "groups", "dstate"), sizes, strict=True)
        ),
        "chunk_size": args.chunk_size,
        "options": "D (H,), z, dt_bias, dt_softplus=True, initial_states, return_final_states",
    }

    def phase(key, fn, *fn_args):
        try:
            report[key] = fn(*fn_args)
        except Exception:  # record it and go on with the next phase
            report[key] = {"error": traceback.format_exc()[-3000:]}
        report["wall_s"] = round(time.monotonic() - start, 1)
        path.write_text(json.dumps(report, indent=1))
        print(f"[{report['wall_s']:.0f}s] {key}: {json.dumps(report[key])[:600]}", flush=True)

    def auto_backend():
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            small = mamba2_inputs(1, 16, 2, 16, 1, 16, torch.float32, 0)
            ssd(**small, chunk_size=16, backend="auto")
            state = small.pop("initial_states")
            step = {k: v[:, 0] if v.ndim > 2 else v for k, v in small.items()}
            ssd_state_update(state, **step, backend="auto")
        return [str(w.message) for w in caught]  # [] = the probes passed

    phase("auto_backend_warnings", auto_backend)
    q = args.chunk_size
    phase("check_bf16", check, torch.bfloat16, sizes, q, 1)
    phase("check_fp32", check, torch.float32, sizes, q, 2)
    phase("deterministic_bf16", deterministic, sizes, q, 3)
    if args.vs_mamba:
        phase("vs_mamba", vs_mamba, sizes, q, 9, start + args.budget_s)
    if not args.quick:
        phase("decode_step", decode_step, sizes, 4)
        phase("time_bf16", timings, torch.bfloat16, sizes, q, 5)
        phase("time_fp32", timings, torch.float32, sizes, q, 6)
    phase("profile_bf16", profile, sizes, q, 7)
    if args.vs_mamba:
        phase("profile_mamba", profile_mamba, sizes, q, 10)
    if not args.quick:
        phase("sweep_bf16", sweep, sizes, q, 8, start + args.budget_s)

    print("\nerrors (relative to float64; ok = within max(2x reference, floor)):")
    all_ok = True
    for name in ("bf16", "fp32"):
        rows = report[f"check_{name}"]
        if "error" in rows:
            print(f"  {name}: ERROR\n{rows['error']}")
            all_ok = False
            continue
        for key, row in rows.items():
            all_ok &= row["ok"]
            verdict = "ok" if row["ok"] else "FAIL"
            print(
                f"  {name} {key:16s} triton {row['triton']:.2e}  "
                f"ref {row['reference_fp32']:.2e}  {verdict}"
            )
    same = report["deterministic_bf16"]
    all_ok &= "error" not in same and all(same.values())
    print(f"  deterministic: {same}")
    print(f"  decode: {report.get('decode_step')}")
    for name in ("bf16", "fp32"):
        t = report.get(f"time_{name}", {"error": "skipped"})
        if "error" in t:
            print(f"  time {name}: ERROR\n{t['error']}")
            continue
        tri, ref = t["triton"], t["reference"]
        print(
            f"  {name}: triton fwd {tri['fwd_ms']:.3f} ms, fwd+bwd {tri['fwd_bwd_ms']:.3f} ms "
            f"({tri['fwd_bwd_peak_GiB']} GiB); reference fwd {ref['fwd_ms']:.2f} ms, "
            f"fwd+bwd {ref['fwd_bwd_ms']:.2f} ms ({ref['fwd_bwd_peak_GiB']} GiB)"
        )
    for key in ("profile_bf16", "profile_mamba"):
        if key in report and "error" not in report[key]:
            print(f"  {key}:")
            for row in report[key][:12]:
                print(f"  {row['ms']:8.3f} ms  x{row['calls']:<3d} {row['kernel']}")
    for row in report.get("sweep_bf16", []):
        print(f"  sweep {row}")
    for setting, rows in report.get("vs_mamba", {}).items():
        if setting == "error":
            print(f"  vs_mamba: ERROR\n{rows}")
            continue
        for label, row in rows.items():
            print(
                f"  {setting:4s} {label:40s} "
                + " ".join(
                    f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}" for k, v in row.items()
                )
            )
    print("ALL OK" if all_ok else "SOME CHECKS FAILED")


if __name__ == "__main__":
    main()
