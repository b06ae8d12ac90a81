"""The selective scan: reference against the equations, Triton kernel against the reference.

The reference is checked in float64 against the dense (quadratic) form of the same SSM,
``y_t = Σ_{s≤t} C_t · exp(A (S_t − S_s)) Δ_s B_s u_s`` with ``S = cumsum(Δ)``, which shares no
code with the time loop. The Triton kernels run in Triton's CPU interpreter at small sizes (the
interpreter runs each scan element through Python, so sizes here are tiny) and are compared with
the float64 reference on outputs and on the gradients of every input (``conftest.py`` switches
the interpreter on).
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from ssm.ops import selective_scan as ops
from ssm.ops.selective_scan import (
    selective_scan,
    selective_scan_ref,
    selective_state_update,
    selective_state_update_ref,
)
from ssm.ops.selective_scan import triton as kernels

REPO = Path(__file__).resolve().parents[2]
# float32 kernels against float64: about 100 float32 ulps, for sums over the batch and time
# (dA, dD, ddelta_bias) whose terms cancel. A wrong index or a missing term costs far more.
FP32_TOL = 1e-5


def randn(*shape, seed, dtype=torch.float64):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


@pytest.fixture(autouse=True)
def poisoned_outputs(monkeypatch):
    """Every ``torch.empty`` comes back full of NaN, so an output element no kernel wrote shows."""
    empty = torch.empty

    def poisoned(*args, **kwargs):
        out = empty(*args, **kwargs)
        return out.fill_(float("nan")) if out.is_floating_point() else out

    monkeypatch.setattr(torch, "empty", poisoned)


def make_inputs(
    batch=2, dim=4, dstate=4, length=7, groups=None, *, D=True, z=True, bias=True, seed=0,
    dtype=torch.float64,
):  # fmt: skip
    """Random inputs in the ranges Mamba uses: A < 0, Δ around 0.1-1 after softplus."""
    gen = torch.Generator().manual_seed(seed)

    def rand(*shape, scale=1.0):
        return (scale * torch.randn(*shape, generator=gen, dtype=torch.float64)).to(dtype)

    bc = (batch, dstate, length) if groups is None else (batch, groups, dstate, length)
    A = -(0.5 + 1.5 * torch.rand(dim, dstate, generator=gen, dtype=torch.float64)).to(dtype)
    return {
        "u": rand(batch, dim, length),
        "delta": rand(batch, dim, length, scale=0.5),
        "A": A,
        "B": rand(*bc),
        "C": rand(*bc),
        "D": rand(dim) if D else None,
        "z": rand(batch, dim, length) if z else None,
        "delta_bias": rand(dim, scale=0.5) if bias else None,
    }


def dense_form(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False):
    """The selective SSM as one (L × L) lower-triangular operator per (batch, channel, state):
    ``h_t = Σ_{s≤t} exp(A (S_t − S_s)) Δ_s B_s u_s`` with ``S_t = Δ_0 + … + Δ_t``.

    Returns ``out`` (B, D, L) and the last state (B, D, N)."""
    dim = u.shape[1]
    dt = delta + (delta_bias[:, None] if delta_bias is not None else 0)
    dt = F.softplus(dt) if delta_softplus else dt  # (B D L)
    if B.ndim == 3:
        B, C = B[:, None], C[:, None]
    B = B.repeat_interleave(dim // B.shape[1], dim=1)  # (B D N L)
    C = C.repeat_interleave(dim // C.shape[1], dim=1)
    S = dt.cumsum(-1)  # (B D L)
    gap = S[..., :, None] - S[..., None, :]  # (B D t s)   S_t − S_s
    causal = torch.ones(u.shape[-1], u.shape[-1], dtype=torch.bool).tril()
    exponent = A[None, :, :, None, None] * gap[:, :, None]  # (B D N t s)
    decay = torch.exp(torch.where(causal, exponent, -torch.inf))
    inputs = (dt * u)[:, :, None, None, :] * B[:, :, :, None, :]  # (B D N 1 s)
    H = (decay * inputs).sum(-1)  # (B D N t)
    y = (C * H).sum(2)  # (B D L)
    if D is not None:
        y = y + D[:, None] * u
    if z is not None:
        y = y * F.silu(z)
    return y, H[..., -1]


# ---------------------------------------------------------------- the reference, in float64

REFERENCE_CASES = [
    pytest.param(1, None, {}, False, id="L1-plain"),
    pytest.param(2, None, {"D": True, "z": False, "bias": False}, False, id="L2-D"),
    pytest.param(7, None, {"D": False, "z": True, "bias": True}, True, id="L7-z-bias-softplus"),
    pytest.param(63, 2, {"D": True, "z": True, "bias": True}, True, id="L63-groups2-all"),
    pytest.param(64, 4, {"D": True, "z": False, "bias": True}, False, id="L64-groups4-D-bias"),
    pytest.param(129, None, {"D": True, "z": True, "bias": False}, True, id="L129-D-z-softplus"),
]


@pytest.mark.parametrize(("length", "groups", "opts", "softplus"), REFERENCE_CASES)
def test_reference_equals_dense_form(length, groups, opts, softplus):
    opts = {"D": False, "z": False, "bias": False} | opts
    x = make_inputs(length=length, groups=groups, **opts)
    out, last = selective_scan_ref(**x, delta_softplus=softplus, return_last_state=True)
    want_out, want_last = dense_form(**x, delta_softplus=softplus)
    torch.testing.assert_close(out, want_out, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(last, want_last, rtol=1e-12, atol=1e-12)
    assert selective_scan_ref(**x, delta_softplus=softplus).shape == (2, 4, length)


def test_reference_gradients_gradcheck():
    x = make_inputs(length=5, groups=2, dim=4, dstate=3)
    names = list(x)
    leaves = [x[n].clone().requires_grad_() for n in names]

    def fn(*args):
        return selective_scan_ref(**dict(zip(names, args, strict=True)), delta_softplus=True)

    assert torch.autograd.gradcheck(fn, leaves)


@pytest.mark.parametrize(
    ("groups", "softplus"),
    [pytest.param(None, False, id="B3d"), pytest.param(2, True, id="groups2-softplus")],
)
def test_prefill_then_decode_equals_full_scan(groups, softplus):
    length, prefix = 20, 13
    x = make_inputs(length=length, groups=groups)
    full = selective_scan_ref(**x, delta_softplus=softplus)
    head = {
        k: v[..., :prefix] if v is not None and v.shape[-1] == length else v for k, v in x.items()
    }
    out, state = selective_scan_ref(**head, delta_softplus=softplus, return_last_state=True)
    torch.testing.assert_close(out, full[..., :prefix], rtol=0, atol=0)
    for t in range(prefix, length):
        y = selective_state_update_ref(
            state, x["u"][..., t], x["delta"][..., t], x["A"], x["B"][..., t], x["C"][..., t],
            x["D"], x["z"][..., t], x["delta_bias"], dt_softplus=softplus,
        )  # fmt: skip
        torch.testing.assert_close(y, full[..., t], rtol=1e-13, atol=1e-13)


def test_reference_dtypes_follow_mamba():
    x = make_inputs(length=9, dtype=torch.bfloat16)
    out, last = selective_scan_ref(**x, return_last_state=True)
    assert out.dtype == torch.bfloat16 and last.dtype == torch.float32
    want, _ = dense_form(**{k: v.double() if v is not None else None for k, v in x.items()})
    torch.testing.assert_close(out.double(), want, rtol=2**-7, atol=2**-7 * want.abs().max())


# ------------------------------------------------------------------- argument checks, dispatch

BAD_SCAN_ARGS = [
    pytest.param("u", lambda x: x["u"][0], "u must have shape", id="u-2d"),
    pytest.param("u", lambda x: x["u"].long(), "u must have a real floating", id="u-int"),
    pytest.param("delta", lambda x: x["delta"][..., :-1], "delta must have shape", id="delta"),
    pytest.param("A", lambda x: x["A"][:-1], r"A must have shape \(dim, N\)", id="A-dim"),
    pytest.param("A", lambda x: x["A"].to(torch.complex128), "A must have a real", id="A-cplx"),
    pytest.param("B", lambda x: x["B"][..., :-1], "B must have shape", id="B-length"),
    pytest.param("B", lambda x: x["B"][:, None].expand(2, 3, 4, 7), "groups dividing", id="B-grp"),
    pytest.param("C", lambda x: x["C"][:, None], "C must have the shape of B", id="C-vs-B"),
    pytest.param("D", lambda x: x["D"][:-1], r"D must have shape \(4,\)", id="D"),
    pytest.param("z", lambda x: x["z"][:1], "z must have shape", id="z"),
    pytest.param("delta_bias", lambda x: x["D"][None], "delta_bias must have", id="bias"),
]


@pytest.mark.parametrize(("name", "bad", "message"), BAD_SCAN_ARGS)
def test_selective_scan_rejects_bad_arguments(name, bad, message):
    x = make_inputs()
    x[name] = bad(x)
    with pytest.raises(ValueError, match=message):
        selective_scan(**x, backend="reference")


@pytest.mark.parametrize(
    ("name", "bad", "message"),
    [
        pytest.param("state", lambda s: s[0], "state must have shape", id="state-2d"),
        pytest.param("x", lambda s: s[:, :, 0, None], "x must have shape", id="x"),
        pytest.param("A", lambda s: s[0].T, "A must have shape", id="A"),
        pytest.param("B", lambda s: s[:, 0, :2], "B must have shape", id="B"),
    ],
)
def test_selective_state_update_rejects_bad_arguments(name, bad, message):
    state = torch.zeros(2, 4, 3, dtype=torch.float64)
    args = {
        "state": state, "x": state[..., 0], "dt": state[..., 0], "A": state[0],
        "B": state[:, 0], "C": state[:, 0],
    }  # fmt: skip
    args[name] = bad(state)
    with pytest.raises(ValueError, match=message):
        selective_state_update(**args, backend="reference")


def test_triton_backend_on_cpu_without_interpreter_raises():
    code = (
        "import torch\n"
        "from ssm.ops.selective_scan import selective_scan\n"
        "u = torch.randn(1, 2, 3)\n"
        "B = torch.randn(1, 2, 3)\n"
        "try:\n"
        "    selective_scan(u, u, -torch.ones(2, 2), B, B, backend='triton')\n"
        "except RuntimeError as err:\n"
        "    print('RuntimeError:', err)\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("TRITON_INTERPRET", "SSM_BACKEND")}
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert "RuntimeError:" in done.stdout and "needs CUDA tensors" in done.stdout, done.stdout


def test_auto_on_cpu_runs_the_reference(monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("the Triton kernel ran on CPU tensors in auto mode")

    monkeypatch.setattr(kernels, "selective_scan_triton", fail)
    x = make_inputs()
    torch.testing.assert_close(selective_scan(**x, backend="auto"), selective_scan_ref(**x))


# ------------------------------------------------- the Triton kernels, in Triton's interpreter


def run_scan(fn, inputs, dout, softplus):
    """Output, last state and the gradients of every tensor input under ``fn``."""
    leaves = {k: v.clone().requires_grad_() if v is not None else None for k, v in inputs.items()}
    out, last = fn(**leaves, delta_softplus=softplus, return_last_state=True)
    out.backward(dout)
    grads = {f"d{k}": v.grad for k, v in leaves.items() if v is not None}
    return {"out": out, "last_state": last, **grads}


def assert_relative_error(got, want, tol):
    """``‖got − want‖ / ‖want‖ ≤ tol`` (``‖got‖ ≤ tol`` where ``want`` is 0) for each entry,
    and never a NaN."""
    assert got.keys() == want.keys()
    for name in want:
        g, w = got[name].double(), want[name].double()
        assert g.shape == w.shape, name
        assert not g.isnan().any(), f"{name}: NaN (an output element was never written)"
        scale = w.norm().item() or 1.0
        err = (g - w).norm().item() / scale
        assert err <= tol, f"{name}: relative error {err:.2e} > {tol:.0e}"


@pytest.fixture
def interpreter_tiles(monkeypatch):
    """Tiles of 16 steps: the interpreter pays per operation, not per element, so tiles this
    size keep these tests fast while sequences of a few tiles still cross tile boundaries."""
    monkeypatch.setattr(kernels, "CHUNK", 16)


ALL = {"D": True, "z": True, "bias": True}
TRITON_CASES = [
    # (length, dim, dstate, groups, options, softplus, CHUNK (steps per tile), channels per
    # program in the forward and the backward): several programs per group exercise the sums
    # of dB and dC across programs; lengths that are not a multiple of CHUNK, the masks.
    pytest.param(1, 4, 4, None, {}, False, 16, (16, 16), id="L1-plain"),
    pytest.param(7, 4, 16, 2, ALL, True, 16, (16, 16), id="L7-N16-all"),
    pytest.param(33, 4, 4, None, {"D": True, "bias": True}, True, 16, (4, 2), id="L33-3tiles"),
    pytest.param(33, 8, 5, 2, {"z": True}, False, 8, (2, 1), id="L33-N5-dim8-g2-tile8"),
    pytest.param(64, 4, 4, 4, ALL, True, 32, (1, 1), id="L64-groups4-tile32"),
    pytest.param(38, 6, 3, 2, {"D": True, "z": True}, True, 4, (2, 2), id="L38-dim6-tile4"),
]


@pytest.mark.triton
@pytest.mark.parametrize(
    ("length", "dim", "dstate", "groups", "opts", "softplus", "chunk", "block_d"), TRITON_CASES
)
def test_triton_matches_reference_float32(
    length, dim, dstate, groups, opts, softplus, chunk, block_d, monkeypatch
):
    monkeypatch.setattr(kernels, "CHUNK", chunk)
    monkeypatch.setattr(kernels, "FWD_BLOCK_D", block_d[0])
    monkeypatch.setattr(kernels, "BWD_BLOCK_D", block_d[1])
    opts = {"D": False, "z": False, "bias": False} | opts
    x = make_inputs(dim=dim, dstate=dstate, length=length, groups=groups, **opts, seed=length)
    dout = randn(2, dim, length, seed=length + 1)

    def triton_backend(**kw):
        return selective_scan(**kw, backend="triton")

    fp32 = {k: v.float() if v is not None else None for k, v in x.items()}
    got = run_scan(triton_backend, fp32, dout.float(), softplus)
    want = run_scan(selective_scan_ref, x, dout, softplus)
    assert got["out"].dtype == torch.float32 and got["last_state"].dtype == torch.float32
    assert_relative_error(got, want, tol=FP32_TOL)


@pytest.mark.triton
def test_triton_forward_without_grad_returns_the_last_state(interpreter_tiles):
    # No backward to follow: no saved states, only the last one.
    x = make_inputs(length=21, groups=2, seed=5)
    fp32 = {k: v.float() for k, v in x.items()}
    with torch.no_grad():
        out, last = kernels.selective_scan_triton(
            **fp32, delta_softplus=True, return_last_state=True
        )
    want_out, want_last = selective_scan_ref(**x, delta_softplus=True, return_last_state=True)
    assert_relative_error(
        {"out": out, "last": last}, {"out": want_out, "last": want_last}, FP32_TOL
    )


@pytest.mark.triton
def test_triton_bfloat16_within_bfloat16_precision(monkeypatch):
    monkeypatch.setattr(kernels, "CHUNK", 16)
    x = make_inputs(length=40, groups=2, dtype=torch.bfloat16, seed=1)
    x["A"], x["delta_bias"] = x["A"].float(), x["delta_bias"].float()  # as Mamba keeps them
    dout = randn(2, 4, 40, seed=11, dtype=torch.bfloat16)
    got = run_scan(kernels.selective_scan_triton, x, dout, True)
    as64 = {k: v.double() for k, v in x.items()}
    want = run_scan(selective_scan_ref, as64, dout.double(), True)
    assert got["out"].dtype == torch.bfloat16 and got["du"].dtype == torch.bfloat16
    assert got["dA"].dtype == torch.float32
    # Inputs are the same bf16 numbers on both sides: only the rounding of results to bf16
    # separates them (the interpreter truncates, so up to 2^-7 relative; a GPU rounds to nearest).
    assert_relative_error(got, want, tol=1e-2)


@pytest.mark.triton
def test_triton_deterministic_mode_equals_atomic_mode(monkeypatch, interpreter_tiles):
    # One channel per program: dB and dC sum two programs per group, by atomics or partials.
    monkeypatch.setattr(kernels, "BWD_BLOCK_D", 1)
    x = make_inputs(length=20, dim=4, groups=2, dtype=torch.float32, seed=2)
    dout = randn(2, 4, 20, seed=12, dtype=torch.float32)
    atomic = run_scan(kernels.selective_scan_triton, x, dout, True)
    try:
        torch.use_deterministic_algorithms(True)
        first = run_scan(kernels.selective_scan_triton, x, dout, True)
        second = run_scan(kernels.selective_scan_triton, x, dout, True)
    finally:
        torch.use_deterministic_algorithms(False)
    for name in first:
        assert torch.equal(first[name], second[name]), name
    assert_relative_error(atomic, first, tol=1e-6)


@pytest.mark.triton
def test_triton_accepts_strided_inputs(interpreter_tiles):
    # u and z as the two halves of one (B, 2D, L) tensor, B and C stored as (B, L, N).
    x = make_inputs(length=9, dtype=torch.float32, seed=3)
    uz = torch.cat([x["u"], x["z"]], dim=1)
    x["u"], x["z"] = uz[:, :4], uz[:, 4:]
    x["B"] = x["B"].transpose(1, 2).contiguous().transpose(1, 2)
    dout = randn(2, 4, 9, seed=13, dtype=torch.float32)
    got = run_scan(kernels.selective_scan_triton, x, dout, False)
    want = run_scan(selective_scan_ref, {k: v.double() for k, v in x.items()}, dout.double(), False)
    assert_relative_error(got, want, tol=FP32_TOL)


@pytest.mark.triton
@pytest.mark.parametrize(
    ("groups", "dtype"),
    [
        pytest.param(None, torch.float32, id="B2d-fp32"),
        pytest.param(2, torch.bfloat16, id="g2-bf16"),
    ],
)
def test_triton_decode_step_matches_reference(groups, dtype):
    x = make_inputs(dim=8, dstate=8, length=3, groups=groups, seed=4)
    ref_state = randn(2, 8, 8, seed=14)
    got_state = ref_state.float()
    low_precision = ("x", "dt", "B", "C", "z")  # activations in dtype, parameters in float32
    for t in range(3):
        step = {
            "x": x["u"][..., t], "dt": x["delta"][..., t], "A": x["A"],
            "B": x["B"][..., t], "C": x["C"][..., t], "D": x["D"], "z": x["z"][..., t],
            "dt_bias": x["delta_bias"],
        }  # fmt: skip
        low = {k: v.to(dtype) if k in low_precision else v.float() for k, v in step.items()}
        want = selective_state_update_ref(
            ref_state, **{k: v.double() for k, v in low.items()}, dt_softplus=True
        )
        got = selective_state_update(got_state, **low, dt_softplus=True, backend="triton")
        assert got.dtype == dtype
        assert_relative_error({"y": got}, {"y": want}, FP32_TOL if dtype == torch.float32 else 1e-2)
        assert_relative_error({"state": got_state}, {"state": ref_state}, FP32_TOL)


@pytest.mark.triton
def test_probe_accepts_the_kernel_and_rejects_a_wrong_one(monkeypatch, interpreter_tiles):
    ops._probe_scan(torch.device("cpu"))
    ops._probe_step(torch.device("cpu"))

    def off_by_one(*args, **kwargs):
        out, last = selective_scan_ref(*args, **kwargs)
        return out + 1, last

    monkeypatch.setattr(kernels, "selective_scan_triton", off_by_one)
    with pytest.raises(RuntimeError, match="out differs from the reference"):
        ops._probe_scan(torch.device("cpu"))
