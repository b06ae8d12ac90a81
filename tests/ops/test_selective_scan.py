"""The selective scan: reference against the equations, Triton kernel against the reference.

The reference is checked in float64 against the dense (quadratic) form of the same SSM,
``y_t = Σ_{s≤t} C_t · exp(A (S_t − S_s)) Δ_s B_s u_s`` with ``S = cumsum(Δ)``, which shares no
code with the time loop. The Triton kernels are compared with the float64 reference on outputs
and on the gradients of every input. Tensors live on the ``device`` fixture: with
``--device cpu`` the kernels run in Triton's CPU interpreter at small sizes (the interpreter
runs each scan element through Python), with ``--device cuda`` compiled, at real sizes too
(``on_gpu``).
"""

import math
import warnings

import pytest
import torch
import torch.nn.functional as F
from layouts import LAYOUTS as VIEWS
from layouts import expanded, lazy_bit, strided, transposed
from modes import AUTO_MODES

from ssm.ops import dispatch
from ssm.ops import selective_scan as ops
from ssm.ops.selective_scan import (
    selective_scan,
    selective_scan_ref,
    selective_state_update,
    selective_state_update_ref,
)
from ssm.ops.selective_scan import triton as kernels

# float32 kernels against float64: about 100 float32 ulps, for sums over the batch and time
# (dA, dD, ddelta_bias) whose terms cancel. A wrong index or a missing term costs far more.
FP32_TOL = 1e-5
BACKENDS = ("reference", "triton")


def randn(*shape, seed, dtype=torch.float64, device="cpu"):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=gen, dtype=torch.float64).to(device, dtype)


def make_inputs(
    batch=2, dim=4, dstate=4, length=7, groups=None, *, D=True, z=True, bias=True, seed=0,
    dtype=torch.float64, device="cpu",
):  # fmt: skip
    """Random inputs in the ranges Mamba uses: A < 0, Δ around 0.1-1 after softplus. Drawn on
    the CPU (the same numbers on every device), then moved to ``device``."""
    gen = torch.Generator().manual_seed(seed)

    def rand(*shape, scale=1.0):
        return (scale * torch.randn(*shape, generator=gen, dtype=torch.float64)).to(device, dtype)

    bc = (batch, dstate, length) if groups is None else (batch, groups, dstate, length)
    A = -(0.5 + 1.5 * torch.rand(dim, dstate, generator=gen, dtype=torch.float64))
    return {
        "u": rand(batch, dim, length),
        "delta": rand(batch, dim, length, scale=0.5),
        "A": A.to(device, dtype),
        "B": rand(*bc),
        "C": rand(*bc),
        "D": rand(dim) if D else None,
        "z": rand(batch, dim, length) if z else None,
        "delta_bias": rand(dim, scale=0.5) if bias else None,
    }


def cast(inputs, dtype):
    return {k: v.to(dtype) if v is not None else None for k, v in inputs.items()}


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
    causal = torch.ones(u.shape[-1], u.shape[-1], dtype=torch.bool, device=u.device).tril()
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


def run_scan(fn, inputs, dout, softplus, **kwargs):
    """Output, last state and the gradients of every tensor input under ``fn``."""
    leaves = {k: v.clone().requires_grad_() if v is not None else None for k, v in inputs.items()}
    out, last = fn(**leaves, delta_softplus=softplus, return_last_state=True, **kwargs)
    out.backward(dout)
    grads = {f"d{k}": v.grad for k, v in leaves.items() if v is not None}
    return {"out": out, "last_state": last, **grads}


def rel_errors(got, want):
    """``‖got − want‖ / ‖want‖`` per entry (``‖got‖`` where ``want`` is 0); NaN counts as inf."""
    assert got.keys() == want.keys()
    errors = {}
    for name in want:
        g, w = got[name].double(), want[name].double()
        assert g.shape == w.shape, name
        if not g.isfinite().all():
            errors[name] = math.inf
            continue
        errors[name] = (g - w).norm().item() / (w.norm().item() or 1.0)
    return errors


def assert_relative_error(got, want, tol):
    """Every entry within ``tol`` relative error, and never a NaN (an unwritten element)."""
    for name, err in rel_errors(got, want).items():
        assert err <= tol, f"{name}: relative error {err:.2e} > {tol:.0e}"


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
def test_reference_equals_dense_form(device, length, groups, opts, softplus):
    opts = {"D": False, "z": False, "bias": False} | opts
    x = make_inputs(length=length, groups=groups, **opts, device=device)
    out, last = selective_scan_ref(**x, delta_softplus=softplus, return_last_state=True)
    want_out, want_last = dense_form(**x, delta_softplus=softplus)
    torch.testing.assert_close(out, want_out, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(last, want_last, rtol=1e-12, atol=1e-12)
    assert selective_scan_ref(**x, delta_softplus=softplus).shape == (2, 4, length)


def test_reference_gradients_gradcheck(device):
    x = make_inputs(length=5, groups=2, dim=4, dstate=3, device=device)
    names = list(x)
    leaves = [x[n].clone().requires_grad_() for n in names]

    def fn(*args):
        return selective_scan_ref(**dict(zip(names, args, strict=True)), delta_softplus=True)

    assert torch.autograd.gradcheck(fn, leaves)


@pytest.mark.parametrize(
    ("groups", "softplus"),
    [pytest.param(None, False, id="B3d"), pytest.param(2, True, id="groups2-softplus")],
)
def test_prefill_then_decode_equals_full_scan(device, groups, softplus):
    length, prefix = 20, 13
    x = make_inputs(length=length, groups=groups, device=device)
    full = selective_scan_ref(**x, delta_softplus=softplus)
    head = {
        k: v[..., :prefix] if v is not None and v.shape[-1] == length else v for k, v in x.items()
    }
    out, state = selective_scan_ref(**head, delta_softplus=softplus, return_last_state=True)
    # The same operations on the same numbers; only vectorized and scalar exp may differ.
    torch.testing.assert_close(out, full[..., :prefix], rtol=1e-14, atol=1e-14)
    for t in range(prefix, length):
        y = selective_state_update_ref(
            state, x["u"][..., t], x["delta"][..., t], x["A"], x["B"][..., t], x["C"][..., t],
            x["D"], x["z"][..., t], x["delta_bias"], dt_softplus=softplus,
        )  # fmt: skip
        torch.testing.assert_close(y, full[..., t], rtol=1e-13, atol=1e-13)


def test_reference_dtypes_follow_mamba(device):
    x = make_inputs(length=9, dtype=torch.bfloat16, device=device)
    out, last = selective_scan_ref(**x, return_last_state=True)
    assert out.dtype == torch.bfloat16 and last.dtype == torch.float32
    want, _ = dense_form(**cast(x, torch.float64))
    torch.testing.assert_close(out.double(), want, rtol=2**-7, atol=2**-7 * want.abs().max())


# ------------------------------------------------------------------- argument checks, dispatch

BAD_SCAN_ARGS = [
    pytest.param("u", lambda x: x["u"][0], "u must have shape", id="u-2d"),
    pytest.param("u", lambda x: x["u"].long(), "u must have a real floating", id="u-int"),
    pytest.param("u", lambda x: x["u"].to("meta"), "u is a meta tensor", id="u-meta"),
    pytest.param("delta", lambda x: x["delta"][..., :-1], "delta must have shape", id="delta"),
    pytest.param(
        "delta", lambda x: x["delta"].to("meta"), "delta is a meta tensor", id="delta-meta"
    ),
    pytest.param("A", lambda x: x["A"][:-1], r"A must have shape \(dim, N\)", id="A-dim"),
    pytest.param("A", lambda x: x["A"].to(torch.complex128), "A must have a real", id="A-cplx"),
    pytest.param("B", lambda x: x["B"][..., :-1], "B must have shape", id="B-length"),
    pytest.param("B", lambda x: x["B"][:, None].expand(2, 3, 4, 7), "groups dividing", id="B-grp"),
    pytest.param("B", lambda x: x["B"][:, :0], "groups dividing", id="B-0-groups"),
    pytest.param("C", lambda x: x["C"][:, None], "C must have the shape of B", id="C-vs-B"),
    pytest.param("D", lambda x: x["D"][:-1], r"D must have shape \(4,\)", id="D"),
    pytest.param("D", lambda x: x["D"].to("meta"), "D is a meta tensor", id="D-meta"),
    pytest.param("z", lambda x: x["z"][:1], "z must have shape", id="z"),
    pytest.param("delta_bias", lambda x: x["D"][None], "delta_bias must have", id="bias"),
]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(("name", "bad", "message"), BAD_SCAN_ARGS)
def test_selective_scan_rejects_bad_arguments(device, name, bad, message, backend):
    x = make_inputs(dtype=torch.float32, device=device)
    x[name] = bad(x)
    with pytest.raises(ValueError, match=message):
        selective_scan(**x, backend=backend)


BACKEND_PARAMS = [
    pytest.param("reference", id="reference"),
    pytest.param("triton", id="triton", marks=pytest.mark.triton),
]

EMPTY_SCAN = [  # (batch, dim, dstate, length, groups)
    pytest.param((0, 4, 4, 7, None), id="batch0"),
    pytest.param((2, 0, 4, 7, None), id="dim0"),
    pytest.param((2, 0, 4, 7, 2), id="dim0-groups2"),
    pytest.param((2, 0, 4, 7, 0), id="dim0-groups0"),
    pytest.param((2, 4, 0, 7, None), id="N0"),
    pytest.param((2, 4, 0, 7, 2), id="N0-groups2"),
    pytest.param((2, 4, 4, 0, None), id="L0"),
    pytest.param((2, 4, 4, 0, 2), id="L0-groups2"),
]
EMPTY_OPTS = [
    pytest.param({"D": True, "z": True, "bias": True}, id="D-z-bias"),
    pytest.param({"D": True, "z": False, "bias": False}, id="D"),
    pytest.param({"D": False, "z": False, "bias": False}, id="bare"),
]


def without_state(u, D=None, z=None, **unused):
    """The scan's output when the state adds nothing: ``D u · silu(z)``, zeros without ``D``."""
    y = D[:, None] * u if D is not None else 0 * u  # finite inputs: exact zeros
    return y * F.silu(z) if z is not None else y


@pytest.mark.parametrize("backend", BACKEND_PARAMS)
@pytest.mark.parametrize("opts", EMPTY_OPTS)
@pytest.mark.parametrize("sizes", EMPTY_SCAN)
def test_selective_scan_empty_dimensions(device, sizes, opts, backend):
    """An empty batch, channel axis (with or without groups), state or sequence: ``out`` and
    the last state of the right shapes and dtypes, ``out = D u · silu(z)`` (the general
    formula without a state), the last state zeros, and the gradients of that formula (zero
    or empty) for every input."""
    batch, dim, dstate, length, _ = sizes
    x = make_inputs(*sizes, **opts, dtype=torch.float32, device=device)
    leaves = {k: v.clone().requires_grad_() for k, v in x.items() if v is not None}
    out, last = selective_scan(**leaves, delta_softplus=True, return_last_state=True,
                               backend=backend)  # fmt: skip
    assert out.shape == (batch, dim, length) and out.dtype == torch.float32
    assert last.shape == (batch, dim, dstate) and last.dtype == torch.float32
    want = without_state(**leaves)
    torch.testing.assert_close(out, want, rtol=0, atol=0)
    assert torch.equal(last, torch.zeros_like(last))
    weight = randn(*out.shape, seed=3, dtype=torch.float32, device=device)
    grads = torch.autograd.grad((out * weight).sum() + last.sum(), list(leaves.values()))
    want_grads = torch.autograd.grad(
        (want * weight).sum(), list(leaves.values()), allow_unused=True, materialize_grads=True
    )
    for name, got, expected in zip(leaves, grads, want_grads, strict=True):
        assert got.shape == leaves[name].shape, name
        torch.testing.assert_close(got, expected, rtol=0, atol=0, msg=name)


@pytest.mark.parametrize("backend", BACKEND_PARAMS)
def test_no_state_is_the_limit_of_a_state_that_adds_nothing(device, backend):
    """N = 0 gives what the general path gives with one state that is never read (B = C = 0):
    ``D u · silu(z)``."""
    x = make_inputs(dstate=1, dtype=torch.float32, device=device)
    x["B"], x["C"] = torch.zeros_like(x["B"]), torch.zeros_like(x["C"])
    silent = selective_scan(**x, delta_softplus=True, backend=backend)
    empty = {**x, "A": x["A"][:, :0], "B": x["B"][:, :0], "C": x["C"][:, :0]}
    out = selective_scan(**empty, delta_softplus=True, backend=backend)
    torch.testing.assert_close(out, silent, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("backend", BACKEND_PARAMS)
@pytest.mark.parametrize("groups", [None, 2], ids=["B3d", "groups2"])
def test_empty_prefill_then_decode_equals_full_scan(device, backend, groups):
    """The last state of an empty sequence is the scan's starting state: decoding every step
    from it gives the full scan."""
    x = make_inputs(length=5, groups=groups, dtype=torch.float32, device=device)
    full = selective_scan(**x, delta_softplus=True, backend=backend)
    head = {k: v[..., :0] if k in ("u", "delta", "B", "C", "z") else v for k, v in x.items()}
    out, state = selective_scan(**head, delta_softplus=True, return_last_state=True,
                                backend=backend)  # fmt: skip
    assert out.shape == (2, 4, 0)
    for t in range(5):
        y = selective_state_update(
            state, x["u"][..., t], x["delta"][..., t], x["A"], x["B"][..., t], x["C"][..., t],
            x["D"], x["z"][..., t], x["delta_bias"], dt_softplus=True, backend=backend,
        )  # fmt: skip
        torch.testing.assert_close(y, full[..., t], rtol=1e-5, atol=1e-6)


EMPTY_DTYPES = [
    pytest.param("reference", torch.float64, id="reference-fp64"),
    pytest.param("reference", torch.bfloat16, id="reference-bf16"),
    pytest.param("triton", torch.float32, id="triton-fp32", marks=pytest.mark.triton),
    pytest.param("triton", torch.bfloat16, id="triton-bf16", marks=pytest.mark.triton),
]


@pytest.mark.parametrize(("backend", "dtype"), EMPTY_DTYPES)
@pytest.mark.parametrize("sizes", [(2, 4, 4, 0, None), (2, 4, 0, 3, None)], ids=["L0", "N0"])
def test_empty_results_have_the_dtypes_of_the_general_path(device, sizes, backend, dtype):
    """``out`` in ``u``'s dtype and the last state in the dtype the same backend returns for
    a non-empty call (float32 for half inputs)."""
    x = make_inputs(*sizes, dtype=dtype, device=device)
    out, last = selective_scan(**x, return_last_state=True, backend=backend)
    x = make_inputs(2, 4, 4, 3, dtype=dtype, device=device)
    want_out, want_last = selective_scan(**x, return_last_state=True, backend=backend)
    assert (out.dtype, last.dtype) == (want_out.dtype, want_last.dtype)
    assert last.dtype == (torch.float64 if dtype == torch.float64 else torch.float32)


EMPTY_ARGUMENT_ERRORS = [
    pytest.param(
        {"delta": lambda x: x["delta"][..., :-1]},
        "triton",
        "delta must have shape",
        id="delta-shape",
    ),
    pytest.param(
        {"B": lambda x: x["B"][:, None][:, :0]}, "triton", "groups dividing", id="B-0-groups"
    ),
    pytest.param({}, "cuda", "backend must be one of", id="unknown-backend"),
    pytest.param(
        {"u": lambda x: x["u"].double()}, "triton", "float32 but inputs are", id="fp64-triton"
    ),
]


@pytest.mark.parametrize(("bad", "backend", "message"), EMPTY_ARGUMENT_ERRORS)
def test_empty_inputs_keep_the_argument_checks(device, bad, backend, message):
    """An empty batch is no way around the checks of shapes, backend and dtype."""
    x = make_inputs(batch=0, dtype=torch.float32, device=device)
    x |= {name: fn(x) for name, fn in bad.items()}
    with pytest.raises(ValueError, match=message):
        selective_scan(**x, backend=backend)


def step_inputs(batch=2, dim=4, dstate=3, groups=None, *, dtype=torch.float32, device="cpu"):
    x = make_inputs(batch, dim, dstate, 1, groups, dtype=dtype, device=device)
    state = randn(batch, dim, dstate, seed=9, dtype=dtype, device=device)
    return {
        "state": state, "x": x["u"][..., 0], "dt": x["delta"][..., 0], "A": x["A"],
        "B": x["B"][..., 0], "C": x["C"][..., 0], "D": x["D"], "z": x["z"][..., 0],
        "dt_bias": x["delta_bias"],
    }  # fmt: skip


BAD_STEP_ARGS = [
    pytest.param("state", lambda s: s["state"][0], "state must have shape", id="state-2d"),
    pytest.param(
        "state", lambda s: s["state"][:1].expand(2, 4, 3), "expanded view", id="state-expanded"
    ),
    pytest.param("x", lambda s: s["x"][:, :, None], "x must have shape", id="x"),
    pytest.param("x", lambda s: s["x"].to("meta"), "x is a meta tensor", id="x-meta"),
    pytest.param("A", lambda s: s["A"].T, "A must have shape", id="A"),
    pytest.param("B", lambda s: s["B"][:, :2], "B must have shape", id="B"),
    pytest.param("dt_bias", lambda s: s["dt_bias"][:1], "dt_bias must have shape", id="bias"),
]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(("name", "bad", "message"), BAD_STEP_ARGS)
def test_selective_state_update_rejects_bad_arguments(device, name, bad, message, backend):
    args = step_inputs(device=device)
    args[name] = bad(args)
    with pytest.raises(ValueError, match=message):
        selective_state_update(**args, backend=backend)


EMPTY_STEP = [  # (batch, dim, dstate, groups)
    pytest.param((0, 4, 3, None), id="batch0"),
    pytest.param((2, 0, 3, None), id="dim0"),
    pytest.param((2, 0, 3, 0), id="dim0-groups0"),
    pytest.param((2, 4, 0, None), id="N0"),
    pytest.param((2, 4, 0, 2), id="N0-groups2"),
]


@pytest.mark.parametrize("backend", BACKEND_PARAMS)
@pytest.mark.parametrize("sizes", EMPTY_STEP)
def test_selective_state_update_empty_dimensions(device, sizes, backend):
    """``y`` ``(B, D)`` = ``D x · silu(z)`` (the step without a state), the state untouched."""
    batch, dim, dstate, groups = sizes
    args = step_inputs(batch, dim, dstate, groups, device=device)
    before = args["state"].clone()
    y = selective_state_update(**args, dt_softplus=True, backend=backend)
    assert y.shape == (batch, dim) and y.dtype == torch.float32
    want = without_state(args["x"][..., None], args["D"], args["z"][..., None])[..., 0]
    torch.testing.assert_close(y, want, rtol=0, atol=0)
    assert torch.equal(args["state"], before)


def test_float64_policy(device, monkeypatch):
    """The kernels compute in float32: an explicit "triton" refuses float64 (it used to compute
    in float32 and return a float32 last state), "auto" runs the reference."""
    x = make_inputs(device=device)
    with pytest.raises(ValueError, match=r"float32 but inputs are torch\.float64"):
        selective_scan(**x, backend="triton")
    with pytest.raises(ValueError, match=r"float32 but inputs are torch\.float64"):
        selective_state_update(**step_inputs(dtype=torch.float64, device=device), backend="triton")

    def fail(*args, **kwargs):
        raise AssertionError("the Triton kernel ran on float64 inputs in auto mode")

    monkeypatch.setattr(kernels, "selective_scan_triton", fail)
    out, last = selective_scan(**x, backend="auto", return_last_state=True)
    assert out.dtype == last.dtype == torch.float64
    torch.testing.assert_close(out, selective_scan_ref(**x), rtol=0, atol=0)


def test_auto_on_cpu_runs_the_reference(monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("the Triton kernel ran on CPU tensors in auto mode")

    monkeypatch.setattr(kernels, "selective_scan_triton", fail)
    x = make_inputs(dtype=torch.float32)
    torch.testing.assert_close(selective_scan(**x, backend="auto"), selective_scan_ref(**x))


# ------------------------------------------------- the Triton kernels against the reference


ALL = {"D": True, "z": True, "bias": True}
TRITON_CASES = [
    # (length, dim, dstate, groups, options, softplus, CHUNK (steps per tile), channels per
    # program in the forward and the backward): several programs per group exercise the sums
    # of dB and dC across programs; lengths that are not a multiple of CHUNK, the masks.
    pytest.param(1, 4, 4, None, {}, False, 16, (16, 16), id="L1-plain"),
    pytest.param(7, 4, 16, 2, ALL, True, 16, (16, 16), id="L7-N16-all"),
    pytest.param(33, 4, 4, None, {"D": True, "bias": True}, True, 16, (4, 2), id="L33-3tiles"),
    pytest.param(33, 8, 5, 2, {"z": True}, False, 16, (2, 1), id="L33-N5-dim8-g2"),
    pytest.param(64, 4, 4, 4, ALL, True, 32, (1, 1), id="L64-groups4-tile32"),
    pytest.param(19, 6, 3, 2, {"D": True, "z": True}, True, 4, (2, 2), id="L19-dim6-tile4"),
    pytest.param(17, 3, 2, 3, ALL, True, 8, (1, 1), id="L17-prime-dim3-groups3-N2"),
]


@pytest.mark.triton
@pytest.mark.parametrize(
    ("length", "dim", "dstate", "groups", "opts", "softplus", "chunk", "block_d"), TRITON_CASES
)
def test_triton_matches_reference_float32(
    device, poisoned, length, dim, dstate, groups, opts, softplus, chunk, block_d, monkeypatch
):
    monkeypatch.setattr(kernels, "CHUNK", chunk)
    monkeypatch.setattr(kernels, "FWD_BLOCK_D", block_d[0])
    monkeypatch.setattr(kernels, "BWD_BLOCK_D", block_d[1])
    opts = {"D": False, "z": False, "bias": False} | opts
    x = make_inputs(
        dim=dim, dstate=dstate, length=length, groups=groups, **opts, seed=length, device=device
    )
    dout = randn(2, dim, length, seed=length + 1, device=device)
    got = run_scan(selective_scan, cast(x, torch.float32), dout.float(), softplus, backend="triton")
    want = run_scan(selective_scan_ref, x, dout, softplus)
    assert got["out"].dtype == torch.float32 and got["last_state"].dtype == torch.float32
    assert_relative_error(got, want, tol=FP32_TOL)


# Relative error a kernel may always have, against float64: float32 arithmetic over L steps,
# and bf16's rounding of its results (2^-9 relative on average, 2^-8 at most).
FLOOR = {torch.float32: 1e-5, torch.bfloat16: 8e-3}


def mamba_inputs(batch, dim, dstate, length, dtype, seed, device):
    """Inputs as a Mamba block produces them: activations in ``dtype``, parameters in float32,
    ``A = -(1..N)`` (S4D-real) with noise, ``softplus(delta_bias)`` log-uniform in [1e-3, 1e-1]."""
    gen = torch.Generator().manual_seed(seed)

    def rand(*shape, dtype=dtype, scale=1.0):
        return (scale * torch.randn(*shape, generator=gen)).to(device, dtype)

    n = torch.arange(1, dstate + 1, dtype=torch.float32)
    A = -(n + 0.1 * torch.rand(dim, dstate, generator=gen))
    dt = torch.exp(
        torch.rand(dim, generator=gen) * (math.log(0.1) - math.log(1e-3)) + math.log(1e-3)
    )
    return {
        "u": rand(batch, dim, length),
        "delta": rand(batch, dim, length, scale=0.5),
        "A": A.to(device),
        "B": rand(batch, dstate, length),
        "C": rand(batch, dstate, length),
        "D": rand(dim, dtype=torch.float32),
        "z": rand(batch, dim, length),
        "delta_bias": (dt + torch.log(-torch.expm1(-dt))).to(device),  # inverse softplus
    }


def scaled_sizes(on_gpu):
    """(batch, dim, N, L): Mamba-like on a GPU, a few tiles of 16 steps in the interpreter."""
    return (2, 256, 16, 2048) if on_gpu else (1, 4, 4, 40)


@pytest.fixture
def small_tiles_on_cpu(on_gpu, monkeypatch):
    """Tiles of 16 steps in the interpreter (it pays per operation, not per element, so short
    sequences of several tiles stay fast); the default tiles on a GPU."""
    if not on_gpu:
        monkeypatch.setattr(kernels, "CHUNK", 16)


@pytest.mark.triton
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_triton_at_scale_within_float64_reference(
    device, on_gpu, poisoned, small_tiles_on_cpu, dtype
):
    """Forward and backward of the kernel (deterministic mode, every allocation NaN-poisoned)
    and of the reference computing in float32, both against the reference in float64 on the
    same inputs: the kernel's relative error is at most twice the reference's own, or under
    the dtype's floor."""
    sizes = scaled_sizes(on_gpu)
    x = mamba_inputs(*sizes, dtype, seed=1, device=device)
    dout = randn(sizes[0], sizes[1], sizes[3], seed=2, dtype=dtype, device=device)
    got = run_scan(selective_scan, x, dout, True, backend="triton")
    ref = run_scan(selective_scan, x, dout, True, backend="reference")
    truth = run_scan(selective_scan_ref, cast(x, torch.float64), dout.double(), True)
    assert got["out"].dtype == dtype and got["dA"].dtype == torch.float32
    err_got, err_ref = rel_errors(got, truth), rel_errors(ref, truth)
    for name in truth:
        bound = max(2 * err_ref[name], FLOOR[dtype])
        assert err_got[name] <= bound, f"{name}: {err_got[name]:.2e} > {bound:.2e}"


@pytest.mark.triton
def test_triton_bfloat16_within_bfloat16_precision(device, monkeypatch):
    monkeypatch.setattr(kernels, "CHUNK", 16)
    x = make_inputs(length=40, groups=2, dtype=torch.bfloat16, seed=1, device=device)
    x["A"], x["delta_bias"] = x["A"].float(), x["delta_bias"].float()  # as Mamba keeps them
    dout = randn(2, 4, 40, seed=11, dtype=torch.bfloat16, device=device)
    got = run_scan(kernels.selective_scan_triton, x, dout, True)
    want = run_scan(selective_scan_ref, cast(x, torch.float64), dout.double(), True)
    assert got["out"].dtype == torch.bfloat16 and got["du"].dtype == torch.bfloat16
    assert got["dA"].dtype == torch.float32
    # Inputs are the same bf16 numbers on both sides: only the rounding of results to bf16
    # separates them (the interpreter truncates, so up to 2^-7 relative; a GPU rounds to nearest).
    assert_relative_error(got, want, tol=1e-2)


@pytest.mark.triton
def test_triton_forward_without_grad_returns_the_last_state(device, small_tiles_on_cpu):
    # No backward to follow: no saved states, only the last one.
    x = make_inputs(length=21, groups=2, seed=5, device=device)
    with torch.no_grad():
        out, last = kernels.selective_scan_triton(
            **cast(x, torch.float32), delta_softplus=True, return_last_state=True
        )
    want_out, want_last = selective_scan_ref(**x, delta_softplus=True, return_last_state=True)
    assert_relative_error(
        {"out": out, "last": last}, {"out": want_out, "last": want_last}, FP32_TOL
    )


@pytest.mark.triton
def test_triton_deterministic_mode_is_bitwise_reproducible(device, on_gpu, monkeypatch):
    """Deterministic mode (per-program partials of dB and dC) twice: equal bit for bit, and
    equal to the atomic-add mode to rounding. Several programs per group (the sums that the
    two modes do differently)."""
    if not on_gpu:
        monkeypatch.setattr(kernels, "CHUNK", 16)
        monkeypatch.setattr(kernels, "BWD_BLOCK_D", 1)
    batch, dim, dstate, length = scaled_sizes(on_gpu)
    x = mamba_inputs(batch, dim, dstate, length, torch.float32, seed=3, device=device)
    x["B"] = torch.stack([x["B"], x["C"]], dim=1)  # (B, 2 groups, N, L)
    x["C"] = x["B"].flip(1)
    dout = randn(batch, dim, length, seed=12, dtype=torch.float32, device=device)
    atomic = run_scan(kernels.selective_scan_triton, x, dout, True)
    previous = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        first = run_scan(kernels.selective_scan_triton, x, dout, True)
        second = run_scan(kernels.selective_scan_triton, x, dout, True)
    finally:
        torch.use_deterministic_algorithms(previous)
    for name in first:
        assert torch.equal(first[name], second[name]), name
    assert_relative_error(atomic, first, tol=1e-6)


LAYOUTS = [pytest.param(view, id=name) for name, view in VIEWS.items()]


def _dense(inputs):
    """Contiguous copies (never the same tensors: a state is updated in place)."""
    return {
        k: v.resolve_neg().contiguous().clone() if v is not None else None
        for k, v in inputs.items()
    }


@pytest.mark.triton
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("name", ["u", "delta", "A", "B", "C", "D", "z", "delta_bias"])
def test_scan_reads_any_layout(device, name, layout, backend):
    """Each argument in turn given as a non-contiguous, expanded, transposed or negated view:
    the output and the last state equal those of the reference on contiguous copies of the
    same values."""
    x = make_inputs(length=5, dstate=2, groups=2, dtype=torch.float32, seed=6, device=device)
    x[name] = layout(x[name])
    out, last = selective_scan(**x, delta_softplus=True, return_last_state=True, backend=backend)
    want_out, want_last = selective_scan_ref(**_dense(x), delta_softplus=True,
                                             return_last_state=True)  # fmt: skip
    torch.testing.assert_close(out, want_out, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(last, want_last, rtol=1e-5, atol=1e-6)


@pytest.mark.triton
@pytest.mark.parametrize("backend", BACKENDS)
def test_scan_backward_reads_any_layout(device, backend):
    """The backward pass with every input strided and an expanded ``dout`` (as ``out.sum()``
    gives): the gradients of the reference on contiguous copies."""
    x = make_inputs(length=5, dstate=2, groups=2, dtype=torch.float32, seed=8, device=device)
    layouts = {
        "u": strided, "delta": transposed, "A": lazy_bit, "B": transposed,
        "C": strided, "D": strided, "z": lazy_bit, "delta_bias": transposed,
    }  # fmt: skip
    leaves = {k: v.clone().requires_grad_() for k, v in x.items()}
    views = {k: layouts[k](v) for k, v in leaves.items()}
    out = selective_scan(**views, delta_softplus=True, backend=backend)
    grads = torch.autograd.grad(out.sum(), list(leaves.values()))
    want = selective_scan_ref(**leaves, delta_softplus=True)
    want_grads = torch.autograd.grad(want.sum(), list(leaves.values()))
    torch.testing.assert_close(out, want, rtol=1e-5, atol=1e-6)
    for k, g, w in zip(leaves, grads, want_grads, strict=True):
        torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-5, msg=k)


STEP_LAYOUTS = [  # an expanded state is refused (it is updated in place), see the checks
    pytest.param(name, *layout.values, id=f"{name}-{layout.id}")
    for name in ["state", "x", "dt", "A", "B", "C", "D", "z", "dt_bias"]
    for layout in LAYOUTS
    if not (name == "state" and layout.values[0] is expanded)
]


@pytest.mark.triton
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(("name", "layout"), STEP_LAYOUTS)
def test_decode_step_reads_any_layout(device, name, layout, backend):
    """As above for the decoding step; ``state`` (updated in place) may be any strided view."""
    args = step_inputs(groups=2, device=device)
    args[name] = layout(args[name])
    dense = _dense(args)
    y = selective_state_update(**args, dt_softplus=True, backend=backend)
    want = selective_state_update_ref(**dense, dt_softplus=True)
    torch.testing.assert_close(y, want, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(args["state"], dense["state"], rtol=1e-5, atol=1e-6)


@pytest.mark.triton
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", ["u", "delta", "B", "C"])
@pytest.mark.parametrize("value", [math.nan, math.inf], ids=["nan", "inf"])
def test_outputs_are_causal_under_non_finite_inputs(device, name, value, backend):
    """A NaN or inf at step s leaves every output before s as in the clean run."""
    x = make_inputs(length=12, groups=2, dtype=torch.float32, seed=7, device=device)
    clean = selective_scan(**x, delta_softplus=True, backend=backend)
    step = 7
    x[name] = x[name].clone()
    x[name][..., step] = value
    out = selective_scan(**x, delta_softplus=True, backend=backend)
    assert out[..., :step].isfinite().all()
    torch.testing.assert_close(out[..., :step], clean[..., :step], rtol=0, atol=0)
    assert not out[..., step:].isfinite().all()


@pytest.mark.triton
@pytest.mark.parametrize(
    ("groups", "dtype"),
    [
        pytest.param(None, torch.float32, id="B2d-fp32"),
        pytest.param(2, torch.bfloat16, id="g2-bf16"),
    ],
)
def test_triton_decode_step_matches_reference(device, on_gpu, poisoned, groups, dtype):
    batch, dim, dstate = (8, 512, 16) if on_gpu else (2, 8, 8)
    x = make_inputs(batch, dim, dstate, 3, groups, seed=4, device=device)
    ref_state = randn(batch, dim, dstate, seed=14, device=device)
    got_state = ref_state.float()
    low_precision = ("x", "dt", "B", "C", "z")  # activations in dtype, parameters in float32
    for t in range(3):
        step = {
            "x": x["u"][..., t], "dt": x["delta"][..., t], "A": x["A"],
            "B": x["B"][..., t], "C": x["C"][..., t], "D": x["D"], "z": x["z"][..., t],
            "dt_bias": x["delta_bias"],
        }  # fmt: skip
        low = {k: v.to(dtype) if k in low_precision else v.float() for k, v in step.items()}
        want = selective_state_update_ref(ref_state, **cast(low, torch.float64), dt_softplus=True)
        got = selective_state_update(got_state, **low, dt_softplus=True, backend="triton")
        assert got.dtype == dtype
        assert_relative_error({"y": got}, {"y": want}, FP32_TOL if dtype == torch.float32 else 1e-2)
        assert_relative_error({"state": got_state}, {"state": ref_state}, FP32_TOL)


# ------------------------------------------------------------------ the probe, the auto choice


@pytest.mark.triton
def test_probe_accepts_the_kernel_and_rejects_a_wrong_one(device, monkeypatch):
    ops._probe_scan(device)
    ops._probe_step(device)

    def off_by_one(*args, **kwargs):
        out, last = selective_scan_ref(*args, **kwargs)
        return out + 1, last

    monkeypatch.setattr(kernels, "selective_scan_triton", off_by_one)
    with pytest.raises(RuntimeError, match="out differs from the reference"):
        ops._probe_scan(device)


@pytest.mark.triton
@pytest.mark.parametrize("mode", AUTO_MODES)
def test_auto_chooses_triton_on_cuda(device, on_gpu, monkeypatch, mode):
    """On CUDA tensors "auto" runs the kernel, also when the first call of the process (fresh
    probe cache) is made under no_grad, inference_mode or autocast, without a warning."""
    if not on_gpu:
        pytest.skip("auto chooses Triton on CUDA tensors only (the CPU run tests the probe)")
    monkeypatch.setattr(dispatch, "_probe_results", {})
    monkeypatch.delenv(dispatch.ENV_VAR, raising=False)
    x = make_inputs(dtype=torch.float32, device=device)
    step = step_inputs(device=device)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with mode():
            out = selective_scan(**x, delta_softplus=True)
            y = selective_state_update(**{**step, "state": step["state"].clone()})
    assert dispatch._probe_results == {
        ("selective_scan", str(out.device)): None,
        ("selective_state_update", str(out.device)): None,
    }
    # What ran is the kernel: its results, bit for bit (the reference rounds differently).
    with torch.no_grad():
        assert torch.equal(out, kernels.selective_scan_triton(**x, delta_softplus=True))
        assert torch.equal(y, kernels.selective_state_update_triton(**step))
