"""The chapter on fast kernels: each Triton kernel against its PyTorch reference, live.

For every accelerated op of :mod:`ssm.ops` the same random inputs (float32) go through the Triton
kernel (``backend="triton"``) and through the reference in float64 (``backend="reference"``);
the result is the largest error relative to the largest reference value, for the outputs and,
where the op is differentiable, the gradients of a random linear function of the outputs.

- ``ci`` profile: tiny sizes, on the CPU, in Triton's interpreter. ``TRITON_INTERPRET=1`` must be
  set before Triton is first imported, so :func:`run` starts a fresh Python process with it set
  (the notebook's own process may have imported Triton already) and reads its results back.
- ``full`` profile: larger sizes on a CUDA GPU, the compiled kernels, in this process.

Explained in the chapter "Making SSMs fast".
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from .. import plotting
from ..ops.interpreter import fix_numpy_loop_bounds
from ._common import check_profile, seed_everything

#: The bound the chapter states for every relative error (float32 kernels, float64 reference).
BOUND = 1e-5
#: float32's unit round-off, 2⁻²⁴: the error of one rounding.
FLOAT32_ROUNDOFF = 2.0**-24

#: The checks, in the order the chapter discusses the ops.
CHECKS = (
    "selective_scan",
    "selective_state_update",
    "ssd",
    "ssd_state_update",
    "vandermonde",
    "cauchy",
    "fftconv (direct, short kernel)",
    "s4d_step",
)


def config(profile: str = "ci") -> dict[str, Any]:
    check_profile(profile)
    ci = profile == "ci"
    return {
        "profile": profile,
        "seed": 0,
        "device": "cpu" if ci else "cuda",
        "interpret": ci,  # run the kernels in Triton's CPU interpreter (in a subprocess)
        "batch": 2 if ci else 4,
        "dim": 4 if ci else 256,  # channels of the selective scan, H of the S4-style ops
        "N": 4 if ci else 16,  # state size
        "L": 40 if ci else 2048,  # length (not a multiple of the tiles on purpose in ci)
        "heads": 2 if ci else 16,  # SSD heads
        "headdim": 16 if ci else 64,
        "chunk": 16 if ci else 128,
        "taps": 8 if ci else 64,  # length of the short kernel of the direct convolution
        "timeout_s": 300,
    }


def rel_error(ours: torch.Tensor, ref: torch.Tensor) -> float:
    """``max |ours - ref| / max |ref|``, computed in float64 (complex tensors by modulus)."""
    ref64 = ref.detach().to(torch.complex128 if ref.is_complex() else torch.float64).cpu()
    ours64 = ours.detach().to(ref64.dtype).cpu()
    scale = float(ref64.abs().max())
    return float((ours64 - ref64).abs().max()) / (scale if scale > 0 else 1.0)


#: Below this (a few float32 round-offs) an error's decade changes with the CPU and the
#: libraries, so :func:`bound` prints every such error as ``< 1e-06``.
ROUNDOFF_BOUND = 1e-6


def bound(err: float) -> str:
    """The power of ten just above ``err``, as ``"< 1e-05"``, and ``"< 1e-06"`` for anything
    at float32 round-off (:data:`ROUNDOFF_BOUND`): stable across runs and machines, readable."""
    if err == 0:
        return "0"
    return f"< 1e{max(math.floor(math.log10(err)) + 1, round(math.log10(ROUNDOFF_BOUND))):+03d}"


def _compare(
    fn: Callable[..., Any],
    inputs: dict[str, torch.Tensor],
    grads: tuple[str, ...],
    dev: torch.device,
    gen: torch.Generator,
    names: tuple[str, ...] = ("out",),
) -> dict[str, float]:
    """Errors of ``fn(backend="triton")`` in float32 on ``dev`` against
    ``fn(backend="reference")`` in float64 on the CPU, outputs and gradients of ``grads``."""

    def prepare(dtype_real, dtype_cplx, device, grad):
        out = {}
        for k, v in inputs.items():
            t = v.to(dtype_cplx if v.is_complex() else dtype_real).to(device)
            out[k] = t.requires_grad_(grad and k in grads)
        return out

    def outputs(result):
        return result if isinstance(result, tuple) else (result,)

    fast_in = prepare(torch.float32, torch.complex64, dev, True)
    ref_in = prepare(torch.float64, torch.complex128, torch.device("cpu"), True)
    fast = outputs(fn(backend="triton", **fast_in))
    ref = outputs(fn(backend="reference", **ref_in))
    errors = {name: rel_error(f, r) for name, f, r in zip(names, fast, ref, strict=True)}
    if grads:
        weights = torch.randn(ref[0].shape, generator=gen, dtype=ref[0].dtype)
        (ref[0] * weights).real.sum().backward()
        (fast[0] * weights.to(fast[0].dtype).to(dev)).real.sum().backward()
        for k in grads:
            errors[f"d{k}"] = rel_error(fast_in[k].grad, ref_in[k].grad)
    return errors


def _complex(gen: torch.Generator, *shape: int) -> torch.Tensor:
    return torch.complex(
        torch.randn(*shape, generator=gen, dtype=torch.float64),
        torch.randn(*shape, generator=gen, dtype=torch.float64),
    )


def _stable_poles(gen: torch.Generator, H: int, N: int, scale: float) -> torch.Tensor:
    """``(H, N)`` complex with negative real part: ``ΔA`` of a stable diagonal SSM."""
    return torch.complex(
        -scale * torch.rand(H, N, generator=gen, dtype=torch.float64) - 0.01,
        scale * 10 * torch.randn(H, N, generator=gen, dtype=torch.float64),
    )


def check_all(cfg: dict[str, Any]) -> dict[str, dict[str, float]]:
    """Run every check of :data:`CHECKS` on ``cfg["device"]``; errors per check and tensor."""
    from ..ops import cauchy, fftconv, s4d_step, selective_scan, ssd, vandermonde

    gen = seed_everything(cfg["seed"])
    dev = torch.device(cfg["device"])
    b, d, n, L = cfg["batch"], cfg["dim"], cfg["N"], cfg["L"]
    h, p, q = cfg["heads"], cfg["headdim"], cfg["chunk"]

    def randn(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=gen, dtype=torch.float64)

    def rand(*shape: int) -> torch.Tensor:
        return torch.rand(*shape, generator=gen, dtype=torch.float64)

    results: dict[str, dict[str, float]] = {}
    flags = {"delta_softplus": True, "return_last_state": True}
    results["selective_scan"] = _compare(
        lambda **kw: selective_scan.selective_scan(**kw, **flags),
        {
            "u": randn(b, d, L),
            "delta": randn(b, d, L) - 1,
            "A": -rand(d, n) - 0.5,
            "B": randn(b, n, L),
            "C": randn(b, n, L),
            "D": randn(d),
            "z": randn(b, d, L),
            "delta_bias": randn(d) * 0.1,
        },
        ("u", "delta", "A", "B", "C"),
        dev,
        gen,
        ("out", "state"),
    )
    step = {
        "x": randn(b, d),
        "dt": randn(b, d),
        "A": -rand(d, n) - 0.5,
        "B": randn(b, n),
        "C": randn(b, n),
        "D": randn(d),
    }
    state = randn(b, d, n)
    results["selective_state_update"] = _compare(
        lambda state, **kw: (
            selective_scan.selective_state_update(state, **kw, dt_softplus=True),
            state,
        ),
        {"state": state, **step},
        (),
        dev,
        gen,
        ("out", "state"),
    )
    results["ssd"] = _compare(
        lambda **kw: ssd.ssd(**kw, chunk_size=q, dt_softplus=True, return_final_states=True),
        {
            "x": randn(b, L, h, p),
            "dt": randn(b, L, h) - 1,
            "A": -rand(h) - 0.5,
            "B": randn(b, L, 1, n),
            "C": randn(b, L, 1, n),
            "D": randn(h),
            "z": randn(b, L, h, p),
            "dt_bias": randn(h) * 0.1,
        },
        ("x", "dt", "A", "B", "C"),
        dev,
        gen,
        ("out", "state"),
    )
    results["ssd_state_update"] = _compare(
        lambda state, **kw: (ssd.ssd_state_update(state, **kw, dt_softplus=True), state),
        {
            "state": randn(b, h, p, n),
            "x": randn(b, h, p),
            "dt": randn(b, h),
            "A": -rand(h) - 0.5,
            "B": randn(b, 1, n),
            "C": randn(b, 1, n),
            "D": randn(h),
        },
        (),
        dev,
        gen,
        ("out", "state"),
    )
    results["vandermonde"] = _compare(
        lambda **kw: vandermonde.vandermonde(**kw, L=L),
        {"v": _complex(gen, d, n), "x": _stable_poles(gen, d, n, 0.1)},
        ("v", "x"),
        dev,
        gen,
    )
    omega = torch.exp(-2j * math.pi * (torch.arange(L, dtype=torch.float64) + 0.5) / L)
    results["cauchy"] = _compare(
        lambda **kw: cauchy.cauchy(**kw),
        {
            "v": _complex(gen, d, n),
            "z": 2 * (1 - omega) / (1 + omega),
            "w": _stable_poles(gen, d, n, 1.0),
        },
        ("v", "w"),
        dev,
        gen,
    )
    results["fftconv (direct, short kernel)"] = _compare(
        lambda **kw: fftconv.fftconv(**kw),
        {"u": randn(b, d, L), "k": randn(d, cfg["taps"]), "D": randn(d)},
        ("u", "k", "D"),
        dev,
        gen,
    )
    poles = _stable_poles(gen, d, n, 0.1)
    results["s4d_step"] = _compare(
        lambda state, **kw: (s4d_step.s4d_step(state, **kw), state),
        {
            "state": _complex(gen, b, d, n),
            "u": randn(b, d),
            "Ab": torch.exp(poles),
            "Bb": _complex(gen, d, n),
            "C": _complex(gen, d, n),
            "D": randn(d),
        },
        (),
        dev,
        gen,
        ("out", "state"),
    )
    return results


def run(cfg: dict[str, Any]) -> dict[str, Any]:
    """The errors of every check, with the sizes and where the kernels ran."""
    if cfg["interpret"]:
        env = {**os.environ, "TRITON_INTERPRET": "1", "SSM_BACKEND": "auto"}
        proc = subprocess.run(
            [sys.executable, "-m", "ssm.experiments.kernel_check"],
            input=json.dumps(cfg),
            env=env,
            capture_output=True,
            text=True,
            timeout=cfg["timeout_s"],
            check=False,
        )
        if proc.returncode != 0:
            raise RuntimeError(
                "the Triton interpreter run of kernel_check failed:\n" + proc.stderr[-3000:]
            )
        errors = json.loads(proc.stdout.strip().splitlines()[-1])
        where = "Triton CPU interpreter (TRITON_INTERPRET=1)"
    else:
        if not torch.cuda.is_available():
            raise RuntimeError(
                "kernel_check with interpret=False runs the compiled kernels and needs a CUDA "
                "GPU; use the 'ci' profile (Triton's CPU interpreter) on a machine without one"
            )
        errors = check_all(cfg)
        where = f"CUDA: {torch.cuda.get_device_name(0)}"
    sizes = {k: cfg[k] for k in ("batch", "dim", "N", "L", "heads", "headdim", "chunk", "taps")}
    return {"errors": errors, "where": where, "sizes": sizes}


def table(results: dict[str, Any]) -> str:
    """A text table: per op and tensor, the bound on the relative error (``< 1e-06``)."""
    lines = [f"{'op':<32}{'tensor':<8}max |Triton - reference| / max |reference|"]
    for op, errs in results["errors"].items():
        for i, (name, err) in enumerate(errs.items()):
            lines.append(f"{op if i == 0 else '':<32}{name:<8}{bound(err)}")
    return "\n".join(lines)


def worst(results: dict[str, Any]) -> float:
    """The largest error of all checks."""
    return max(e for errs in results["errors"].values() for e in errs.values())


@plotting.styled
def plot(results: dict[str, Any]):
    """The relative error of every check, one row per op: outputs (filled) and gradients
    (open), on a log axis between float32's round-off and the chapter's bound."""
    ops = list(results["errors"])
    fig, ax = plotting.subplots(1, 1, height=0.36 * len(ops) + 1.5)
    y = np.arange(len(ops))[::-1]
    kinds = {
        "outputs": {"marker": "o", "color": plotting.PALETTE["blue"]},
        "gradients": {"marker": "D", "mfc": "white", "color": plotting.PALETTE["orange"]},
    }
    for kind, style in kinds.items():
        xs, ys = [], []
        for yi, op in zip(y, ops, strict=True):
            for name, err in results["errors"][op].items():
                if (name.startswith("d") and name != "D") == (kind == "gradients"):
                    xs.append(max(err, 1e-8))  # an exact 0 drawn at the left edge
                    ys.append(yi)
        ax.plot(xs, ys, ls="none", ms=6, alpha=0.85, label=kind, **style)
    ax.axvline(FLOAT32_ROUNDOFF, color="0.45", ls=":", lw=1.2, label="float32 round-off $2^{-24}$")
    ax.axvline(
        BOUND, color=plotting.PALETTE["vermillion"], ls="--", lw=1.2, label="bound $10^{-5}$"
    )
    ax.set_xscale("log")
    ax.set_xlim(1e-8, BOUND * 10)
    ax.set_yticks(y, ops)
    ax.grid(axis="y", visible=False)
    plotting.label(
        ax,
        "max |Triton − reference| / max |reference| (log scale)",
        None,
        "Each Triton kernel against its float64 reference",
    )
    plotting.figure_legend(fig, ax)
    return fig


def _worker() -> int:
    """Entry point of the interpreter subprocess: config JSON on stdin, errors JSON on stdout."""
    cfg = json.loads(sys.stdin.read())
    fix_numpy_loop_bounds()
    torch.set_num_threads(1)
    print(json.dumps(check_all(cfg)))
    return 0


if __name__ == "__main__":
    sys.exit(_worker())
