"""SSD (Mamba-2): the three references against each other and a hand computation in float64,
prefill then decode, argument checks, backend choice, and the Triton kernels against the
float64 reference (fp32 tightly, bf16/fp16 within their precision), forward and backward, with
every buffer they allocate poisoned with NaN. Tensors live on the ``device`` fixture: with
``--device cpu`` the kernels run in Triton's CPU interpreter at small sizes, with
``--device cuda`` compiled, at real sizes too (``on_gpu``)."""

import math
import warnings

import pytest
import torch
from layouts import LAYOUTS as VIEWS
from layouts import expanded, lazy_bit, strided, transposed
from modes import AUTO_MODES

from ssm.ops import dispatch
from ssm.ops import ssd as ssd_module
from ssm.ops.ssd import (
    ssd,
    ssd_chunked,
    ssd_quadratic,
    ssd_recurrent,
    ssd_state_update,
    ssd_state_update_ref,
)
from ssm.ops.ssd import triton as ssd_triton_module
from ssm.ops.ssd.triton import ssd_state_update_triton, ssd_triton

pytestmark = pytest.mark.triton


OPTIONAL = ("D", "z", "dt_bias", "initial_states")
NAMES = ("x", "dt", "A", "B", "C", *OPTIONAL)
BACKENDS = ("reference", "triton")


def make_inputs(
    batch=2, length=33, heads=4, headdim=8, groups=2, nstate=16, *,
    D=None, z=False, dt_bias=False, init=False, softplus=False, seed=0, device="cpu",
):  # fmt: skip
    """Random float64 inputs on ``device`` (drawn on the CPU: the same numbers everywhere);
    ``D`` is None, ``"H"`` or ``"HP"``. With ``softplus`` the raw ``dt`` is centred below 0,
    else it is a positive step."""
    g = torch.Generator().manual_seed(seed)

    def randn(*shape):
        return torch.randn(*shape, generator=g, dtype=torch.float64).to(device)

    def rand(*shape):
        return torch.rand(*shape, generator=g, dtype=torch.float64).to(device)

    inputs = {
        "x": randn(batch, length, heads, headdim),
        "dt": randn(batch, length, heads) - 1.0
        if softplus
        else 0.05 + 0.5 * rand(batch, length, heads),
        "A": -0.5 - rand(heads),
        "B": randn(batch, length, groups, nstate),
        "C": randn(batch, length, groups, nstate),
    }
    if D is not None:
        inputs["D"] = randn(heads) if D == "H" else randn(heads, headdim)
    if z:
        inputs["z"] = randn(batch, length, heads, headdim)
    if dt_bias:
        inputs["dt_bias"] = 0.3 * randn(heads)
    if init:
        inputs["initial_states"] = randn(batch, heads, headdim, nstate)
    return inputs


def run(fn, inputs, chunk_size, softplus, dtypes=None):
    """``fn`` forward and backward (loss: fixed random weights on out and final states).

    Returns float64 copies of out, final states and every input's gradient. ``dtypes`` maps
    input names to the dtype they are cast to (default: unchanged)."""
    dtypes = dtypes or {}
    leaves = {
        k: v.detach().to(dtypes.get(k, v.dtype)).clone().requires_grad_() for k, v in inputs.items()
    }
    out, final = fn(chunk_size=chunk_size, dt_softplus=softplus, return_final_states=True, **leaves)
    g = torch.Generator().manual_seed(123)
    w_out = torch.randn(out.shape, generator=g, dtype=torch.float64).to(out.device, out.dtype)
    w_final = torch.randn(final.shape, generator=g, dtype=torch.float64)
    w_final = w_final.to(final.device, final.dtype)
    ((out * w_out).sum() + (final * w_final).sum()).backward()
    results = {"out": out, "final": final}
    results.update({f"d{k}": v.grad for k, v in leaves.items()})
    return {k: v.detach().double() for k, v in results.items()}


def assert_close(got, want, rel, what=""):
    """``|got - want| <= rel · max(max|want|, 1)`` for every tensor of the dicts (the inputs are
    of order 1, so a gradient that is exactly 0, such as dA without any state, allows ``rel``)."""
    assert got.keys() == want.keys()
    for name in want:
        scale = float(want[name].abs().max())
        err = float((got[name] - want[name]).abs().max())
        allowed = rel * max(scale, 1.0)
        assert err <= allowed, f"{what}{name}: max error {err:.3g}, allowed {allowed:.3g}"


# ---------------------------------------------------------------- float64 references

VIEW_CASES = [
    pytest.param({"groups": 1}, id="plain"),
    pytest.param({"groups": 2, "D": "H"}, id="groups2-D_H"),
    pytest.param({"groups": 1, "D": "HP", "z": True}, id="D_HP-z"),
    pytest.param({"groups": 2, "dt_bias": True, "softplus": True}, id="groups2-bias-softplus"),
    pytest.param({"groups": 1, "init": True}, id="initial_states"),
    pytest.param(
        {"groups": 2, "D": "HP", "z": True, "dt_bias": True, "softplus": True, "init": True},
        id="everything",
    ),
]


@pytest.mark.parametrize("length", [1, 7, 63, 64, 100], ids=lambda n: f"L{n}")
@pytest.mark.parametrize("case", VIEW_CASES)
def test_recurrent_quadratic_chunked_agree(device, case, length):
    inputs = make_inputs(batch=2, length=length, heads=4, headdim=3, nstate=5, **case,
                         device=device)  # fmt: skip
    softplus = case.get("softplus", False)
    want = run(ssd_recurrent, inputs, 16, softplus)
    assert_close(run(ssd_quadratic, inputs, 16, softplus), want, 1e-10, "quadratic ")
    assert_close(run(ssd_chunked, inputs, 16, softplus), want, 1e-10, "chunked ")


@pytest.mark.parametrize("chunk_size", [1, 3, 16, 37, 64])
def test_chunked_for_any_chunk_size(device, chunk_size):
    inputs = make_inputs(length=37, heads=2, headdim=3, nstate=4, D="H", init=True, device=device)
    want = run(ssd_recurrent, inputs, chunk_size, False)
    assert_close(run(ssd_chunked, inputs, chunk_size, False), want, 1e-10)


@pytest.mark.parametrize("backend", BACKENDS)
def test_chunk_longer_than_the_sequence_is_clamped(device, backend, poisoned):
    """A chunk of 2^20 steps for 5 steps: the chunks are clamped to the sequence (the reference
    used to pad each chunk to chunk_size, building (Q × Q) blocks of 2^40 elements)."""
    inputs = make_inputs(length=5, heads=2, headdim=4, nstate=4, D="H", init=True, device=device)
    if backend == "triton":
        inputs = cast(inputs, torch.float32)

    def fn(**kw):
        return ssd(**kw, backend=backend)

    got, want = run(fn, inputs, 2**20, False), run(fn, inputs, 5, False)
    for name in want:
        assert torch.equal(got[name], want[name]), name


@pytest.mark.parametrize("fn", [ssd_recurrent, ssd_quadratic, ssd_chunked])
def test_two_steps_by_hand(device, fn):
    """One head, P = N = 1: the recurrence written out with every option on."""
    x, dt_raw, B, C, z = (1.0, 2.0), (0.5, -0.2), (0.7, -1.1), (0.3, 0.9), (0.4, -0.6)
    A, D, bias, h = -1.5, 0.5, 0.1, 0.2
    expected = []
    for t in range(2):
        dt = math.log1p(math.exp(dt_raw[t] + bias))
        h = math.exp(dt * A) * h + dt * x[t] * B[t]
        y = C[t] * h + D * x[t]
        expected.append(y * z[t] / (1 + math.exp(-z[t])))

    def tensor(v):
        return torch.tensor(v, dtype=torch.float64, device=device)

    def col(v):
        return tensor(v).view(1, 2, 1, 1)

    out, final = fn(
        col(x), col(dt_raw)[..., 0], tensor([A]), col(B), col(C), 2,
        D=tensor([D]), z=col(z), dt_bias=tensor([bias]),
        initial_states=torch.full((1, 1, 1, 1), 0.2, dtype=torch.float64, device=device),
        dt_softplus=True, return_final_states=True,
    )  # fmt: skip
    torch.testing.assert_close(out.flatten(), tensor(expected))
    torch.testing.assert_close(final.flatten(), tensor([h]))


def _prefill_then_decode(prefill, update, dtypes, device, prefill_len=30, steps=3):
    """Outputs of the last ``steps`` steps and the final state, computed by ``prefill`` over
    the first ``prefill_len`` steps and then ``update`` one step at a time (state kept in a
    strided slice of a larger cache)."""
    length = prefill_len + steps
    inputs = make_inputs(
        batch=2, length=length, heads=4, headdim=4, groups=2, nstate=8,
        D="HP", z=True, dt_bias=True, init=True, softplus=True, device=device,
    )  # fmt: skip
    low = {k: v.to(dtypes.get(k, v.dtype)) for k, v in inputs.items()}
    head = {
        k: v[:, :prefill_len] if v.ndim >= 3 and k != "initial_states" else v
        for k, v in low.items()
    }
    _, state = prefill(chunk_size=8, dt_softplus=True, return_final_states=True, **head)
    cache = torch.zeros(*state.shape[:3], state.shape[3] + 3, dtype=state.dtype, device=device)
    cache[..., :-3] = state
    state = cache[..., :-3]  # non-contiguous
    ys = []
    for t in range(prefill_len, length):
        step = {k: low[k][:, t] for k in ("x", "dt", "B", "C", "z")}
        ys.append(
            update(state, A=low["A"], D=low["D"], dt_bias=low["dt_bias"], dt_softplus=True, **step)
        )
    out_full, final_full = ssd_recurrent(
        chunk_size=8, dt_softplus=True, return_final_states=True, **inputs
    )
    got = {"out": torch.stack(ys, dim=1).double(), "final": state.double()}
    want = {"out": out_full[:, prefill_len:], "final": final_full}
    return got, want


def test_prefill_then_decode_equals_full_pass(device):
    got, want = _prefill_then_decode(ssd_chunked, ssd_state_update_ref, {}, device)
    assert_close(got, want, 1e-12)


# ---------------------------------------------------------------- arguments and backends


def cast(inputs, dtype):
    return {k: v.to(dtype) for k, v in inputs.items()}


def _update_inputs(inputs):
    step = {k: inputs[k][:, 0] for k in ("x", "dt", "B", "C")}
    x = inputs["x"]
    state = x.new_zeros(x.shape[0], x.shape[2], x.shape[3], inputs["B"].shape[-1])
    return {"state": state, "A": inputs["A"], **step}


BAD_SSD = [
    pytest.param("x", lambda i: i["x"][0], r"^x must have shape", id="x-3d"),
    pytest.param("x", lambda i: i["x"].long(), r"^x must have a real floating", id="x-int"),
    pytest.param(
        "x", lambda i: i["x"].to(torch.complex128), r"^x must have a real", id="x-complex"
    ),
    pytest.param("x", lambda i: i["x"].to("meta"), r"^x is a meta tensor", id="x-meta"),
    pytest.param(
        "dt", lambda i: i["dt"][:, :-1], r"^dt must have shape .* \(\(B, L, H\)\)", id="dt-length"
    ),
    pytest.param("dt", lambda i: i["dt"].to("meta"), r"^dt is a meta tensor", id="dt-meta"),
    pytest.param(
        "A", lambda i: torch.cat([i["A"], i["A"]]), r"^A must have shape \(4,\)", id="A-size"
    ),
    pytest.param(
        "B", lambda i: i["B"][:, :-1], r"^B must have shape \(B, L, G, N\)", id="B-length"
    ),
    pytest.param(
        "B",
        lambda i: i["B"][:, :, :1].expand(2, 33, 3, 16),
        "divisible by the number of groups",
        id="B-groups",
    ),
    pytest.param("B", lambda i: i["B"][:, :, :0], "G = 0", id="B-0-groups"),
    pytest.param("C", lambda i: i["C"][..., :-1], r"^C must have shape", id="C-state"),
    pytest.param("chunk_size", lambda i: 0, r"^chunk_size must be an integer >= 1", id="chunk0"),
    pytest.param("chunk_size", lambda i: 2.0, r"^chunk_size must be an integer", id="chunk-float"),
    pytest.param("D", lambda i: i["x"].new_zeros(4, 3), r"^D must have shape \(H,\)", id="D-shape"),
    pytest.param("z", lambda i: i["x"][:, :, :, :-1], r"^z must have shape", id="z-shape"),
    pytest.param(
        "dt_bias", lambda i: i["x"].new_zeros(3), r"^dt_bias must have shape", id="bias-shape"
    ),
    pytest.param(
        "initial_states",
        lambda i: i["x"].new_zeros(2, 4, 8, 15),
        r"^initial_states must have",
        id="init-shape",
    ),
]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(("name", "bad", "message"), BAD_SSD)
def test_ssd_rejects_bad_arguments(device, name, bad, message, backend):
    inputs = cast(make_inputs(device=device), torch.float32)
    args = {**inputs, "chunk_size": 16}
    args[name] = bad(inputs)
    with pytest.raises(ValueError, match=message):
        ssd(**args, backend=backend)


EMPTY_SSD = [  # (batch, length, heads, headdim, groups, nstate)
    pytest.param((0, 9, 2, 4, 1, 4), id="batch0"),
    pytest.param((2, 0, 2, 4, 1, 4), id="L0"),
    pytest.param((2, 0, 4, 4, 2, 4), id="L0-groups2"),
    pytest.param((2, 9, 0, 4, 1, 4), id="H0"),
    pytest.param((2, 9, 0, 4, 0, 4), id="H0-groups0"),
    pytest.param((2, 9, 2, 0, 1, 4), id="P0"),
    pytest.param((2, 9, 2, 4, 1, 0), id="N0"),
    pytest.param((2, 9, 4, 4, 2, 0), id="N0-groups2"),
]
EMPTY_OPTS = [
    pytest.param({"D": "HP", "z": True, "dt_bias": True, "init": True}, id="D_HP-z-bias-init"),
    pytest.param({"D": "H"}, id="D_H"),
    pytest.param({}, id="bare"),
]


def without_state(x, D=None, z=None, **unused):
    """SSD's output when the state adds nothing: ``D x · silu(z)``, zeros without ``D``."""
    if D is None:
        y = 0 * x  # finite inputs: exact zeros
    else:
        y = x * (D[:, None] if D.ndim == 1 else D)
    return y * torch.nn.functional.silu(z) if z is not None else y


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("opts", EMPTY_OPTS)
@pytest.mark.parametrize("sizes", EMPTY_SSD)
def test_ssd_empty_dimensions(device, sizes, opts, backend):
    """Empty batch, sequence, heads (with or without groups), head dim or state: ``out`` and
    the final state of the right shapes and dtypes, ``out = D x · silu(z)`` (the general
    formula without a state), the final state ``initial_states`` (zeros without), and the
    gradients of these formulas (zero or empty) for every input."""
    batch, length, heads, headdim, _, nstate = sizes
    inputs = cast(make_inputs(*sizes, **opts, softplus=True, device=device), torch.float32)
    leaves = {k: v.clone().requires_grad_() for k, v in inputs.items()}
    out, final = ssd(**leaves, chunk_size=4, dt_softplus=True, return_final_states=True,
                     backend=backend)  # fmt: skip
    assert out.shape == (batch, length, heads, headdim) and out.dtype == torch.float32
    assert final.shape == (batch, heads, headdim, nstate) and final.dtype == torch.float32
    want_out = without_state(**leaves)
    want_final = leaves.get("initial_states", torch.zeros_like(final))
    torch.testing.assert_close(out, want_out, rtol=0, atol=0)
    torch.testing.assert_close(final, want_final, rtol=0, atol=0)
    g = torch.Generator().manual_seed(5)
    w_out = torch.randn(out.shape, generator=g).to(device)
    w_final = torch.randn(final.shape, generator=g).to(device)
    grads = torch.autograd.grad(
        (out * w_out).sum() + (final * w_final).sum(), list(leaves.values())
    )
    want_grads = torch.autograd.grad(
        (want_out * w_out).sum() + (want_final * w_final).sum(),
        list(leaves.values()),
        allow_unused=True,
        materialize_grads=True,
    )
    for name, got, expected in zip(leaves, grads, want_grads, strict=True):
        assert got.shape == leaves[name].shape, name
        torch.testing.assert_close(got, expected, rtol=0, atol=0, msg=name)


@pytest.mark.parametrize("backend", BACKENDS)
def test_ssd_no_state_is_the_limit_of_a_state_that_adds_nothing(device, backend):
    """N = 0 gives what the general path gives with one state that is never read (C = 0,
    from a non-zero initial state): ``D x · silu(z)``."""
    inputs = make_inputs(length=9, heads=2, headdim=4, groups=1, nstate=1, D="HP", z=True,
                         dt_bias=True, init=True, softplus=True, device=device)  # fmt: skip
    inputs = cast(inputs, torch.float32)
    inputs["C"] = torch.zeros_like(inputs["C"])
    silent = ssd(**inputs, chunk_size=4, dt_softplus=True, backend=backend)
    empty = {**inputs, "B": inputs["B"][..., :0], "C": inputs["C"][..., :0],
             "initial_states": inputs["initial_states"][..., :0]}  # fmt: skip
    out = ssd(**empty, chunk_size=4, dt_softplus=True, backend=backend)
    torch.testing.assert_close(out, silent, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("backend", BACKENDS)
def test_ssd_empty_sequence_is_the_limit_of_steps_that_do_nothing(device, backend):
    """L = 0 leaves the initial state as one step with dt = 0 (decay 1, no input) does."""
    inputs = cast(make_inputs(length=1, D="H", init=True, device=device), torch.float32)
    inputs["dt"] = torch.zeros_like(inputs["dt"])
    _, want = ssd(**inputs, chunk_size=4, return_final_states=True, backend=backend)
    empty = {k: v[:, :0] if k in ("x", "dt", "B", "C") else v for k, v in inputs.items()}
    out, final = ssd(**empty, chunk_size=4, return_final_states=True, backend=backend)
    assert out.shape == (2, 0, 4, 8)
    torch.testing.assert_close(final, want, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize(
    ("backend", "dtype"),
    [
        pytest.param("reference", torch.float64, id="reference-fp64"),
        pytest.param("reference", torch.bfloat16, id="reference-bf16"),
        pytest.param("triton", torch.float32, id="triton-fp32"),
        pytest.param("triton", torch.float16, id="triton-fp16"),
    ],
)
@pytest.mark.parametrize("init", [False, True], ids=["no-init", "init"])
@pytest.mark.parametrize("sizes", [(2, 0, 2, 4, 1, 4), (2, 3, 2, 4, 1, 0)], ids=["L0", "N0"])
def test_ssd_empty_results_have_the_dtypes_of_the_general_path(device, sizes, init, backend,
                                                               dtype):  # fmt: skip
    """``out`` in x's dtype and the final state in the dtype the same backend returns for a
    non-empty call (float32 for half inputs), also with initial states in x's dtype."""

    def call(inputs):
        return ssd(**cast(inputs, dtype), chunk_size=4, return_final_states=True,
                   backend=backend)  # fmt: skip

    out, final = call(make_inputs(*sizes, init=init, device=device))
    want_out, want_final = call(make_inputs(2, 3, 2, 4, 1, 4, init=init, device=device))
    assert (out.dtype, final.dtype) == (want_out.dtype, want_final.dtype)
    assert final.dtype == (torch.float64 if dtype == torch.float64 else torch.float32)


EMPTY_UPDATE = [  # (batch, heads, headdim, groups, nstate)
    pytest.param((0, 2, 4, 1, 4), id="batch0"),
    pytest.param((2, 0, 4, 1, 4), id="H0"),
    pytest.param((2, 0, 4, 0, 4), id="H0-groups0"),
    pytest.param((2, 2, 0, 1, 4), id="P0"),
    pytest.param((2, 4, 4, 2, 0), id="N0-groups2"),
]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("sizes", EMPTY_UPDATE)
def test_state_update_empty_dimensions(device, sizes, backend):
    """``y`` ``(B, H, P)`` = ``D x · silu(z)`` (the step without a state), the state untouched."""
    batch, heads, headdim, groups, nstate = sizes
    inputs = make_inputs(batch, 1, heads, headdim, groups, nstate, D="HP", z=True,
                         dt_bias=True, softplus=True, device=device)  # fmt: skip
    inputs = cast(inputs, torch.float32)
    args = _update_inputs(inputs)
    args |= {"D": inputs["D"], "z": inputs["z"][:, 0], "dt_bias": inputs["dt_bias"]}
    before = args["state"].clone()
    y = ssd_state_update(**args, dt_softplus=True, backend=backend)
    assert y.shape == (batch, heads, headdim) and y.dtype == torch.float32
    torch.testing.assert_close(y, without_state(**args), rtol=0, atol=0)
    assert torch.equal(args["state"], before)


EMPTY_ARGUMENT_ERRORS = [
    pytest.param(
        {"dt": lambda i: i["dt"][..., :-1]}, "triton", r"^dt must have shape", id="dt-shape"
    ),
    pytest.param({"B": lambda i: i["B"][:, :, :0]}, "triton", "G = 0", id="B-0-groups"),
    pytest.param({}, "cuda", "backend must be one of", id="unknown-backend"),
    pytest.param(
        {"x": lambda i: i["x"].double()}, "triton", "float32 but inputs are", id="fp64-triton"
    ),
]


@pytest.mark.parametrize(("bad", "backend", "message"), EMPTY_ARGUMENT_ERRORS)
def test_ssd_empty_inputs_keep_the_argument_checks(device, bad, backend, message):
    """An empty batch is no way around the checks of shapes, groups, backend and dtype."""
    inputs = cast(make_inputs(batch=0, device=device), torch.float32)
    inputs |= {name: fn(inputs) for name, fn in bad.items()}
    with pytest.raises(ValueError, match=message):
        ssd(**inputs, chunk_size=4, backend=backend)


BAD_UPDATE = [
    pytest.param("state", lambda i: i["state"][0], r"^state must have shape", id="state-3d"),
    pytest.param(
        "state", lambda i: i["state"][:1].expand(2, 4, 8, 16), "expanded view", id="state-expand"
    ),
    pytest.param("x", lambda i: i["x"][..., :-1], r"^x must have shape .*\(B, H, P\)", id="x"),
    pytest.param("x", lambda i: i["x"].to("meta"), r"^x is a meta tensor", id="x-meta"),
    pytest.param("dt", lambda i: i["dt"][:, None], r"^dt must have shape .*\(B, H\)", id="dt"),
    pytest.param("B", lambda i: i["B"][..., :-1], r"^B must have shape \(B, G, N\)", id="B-state"),
    pytest.param("C", lambda i: i["C"][:, :1], r"^C must have shape", id="C-groups"),
]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(("name", "bad", "message"), BAD_UPDATE)
def test_state_update_rejects_bad_arguments(device, name, bad, message, backend):
    args = _update_inputs(cast(make_inputs(device=device), torch.float32))
    args[name] = bad(args)
    with pytest.raises(ValueError, match=message):
        ssd_state_update(**args, backend=backend)


def test_unknown_backend_is_rejected():
    with pytest.raises(ValueError, match="backend must be one of"):
        ssd(**make_inputs(), chunk_size=16, backend="cuda")


def test_float64_policy(device, kernel_calls):
    """The kernels compute in float32: "triton" refuses float64 (any input), "auto" runs the
    reference."""
    inputs = make_inputs(device=device)
    with pytest.raises(ValueError, match=r"float32 but inputs are torch\.float64"):
        ssd(**inputs, chunk_size=16, backend="triton")
    with pytest.raises(ValueError, match=r"float32 but inputs are torch\.float64"):
        ssd_state_update(**_update_inputs(inputs), backend="triton")
    mixed = {**cast(inputs, torch.float32), "A": inputs["A"]}
    with pytest.raises(ValueError, match="float64"):
        ssd(**mixed, chunk_size=16, backend="triton")
    out = ssd(**inputs, chunk_size=16, backend="auto")
    assert out.dtype == torch.float64 and kernel_calls == []
    assert torch.equal(out, ssd_chunked(**inputs, chunk_size=16))


@pytest.fixture
def kernel_calls(monkeypatch):
    """Replace the Triton entry points by recorders that run the reference."""
    calls = []

    def fake_ssd(*args, **kwargs):
        calls.append("ssd")
        return ssd_chunked(*args, **kwargs)

    def fake_update(*args, **kwargs):
        calls.append("update")
        return ssd_state_update_ref(*args, **kwargs)

    monkeypatch.setattr(ssd_triton_module, "ssd_triton", fake_ssd)
    monkeypatch.setattr(ssd_triton_module, "ssd_state_update_triton", fake_update)
    return calls


def test_backend_choice(device, kernel_calls, monkeypatch):
    monkeypatch.delenv("SSM_BACKEND", raising=False)
    cpu_inputs = cast(make_inputs(), torch.float32)
    ssd(**cpu_inputs, chunk_size=16)  # auto, CPU tensors: the reference
    inputs = {k: v.to(device) for k, v in cpu_inputs.items()}
    ssd(**inputs, chunk_size=16, backend="reference")
    assert kernel_calls == []
    ssd(**inputs, chunk_size=16, backend="triton")  # CPU is allowed under the interpreter
    ssd_state_update(**_update_inputs(inputs), backend="triton")
    assert kernel_calls == ["ssd", "update"]
    monkeypatch.setenv("SSM_BACKEND", "triton")
    ssd(**inputs, chunk_size=16)
    assert kernel_calls == ["ssd", "update", "ssd"]


# ---------------------------------------------------------------- Triton kernels


KERNEL_CASES = [
    pytest.param(dict(batch=1, length=1, heads=2, headdim=4, groups=1, nstate=4), 8, id="L1"),
    pytest.param(
        dict(batch=2, length=7, heads=2, headdim=8, groups=2, nstate=16, D="H", softplus=True),
        16,
        id="L7-groups2-D_H-softplus",
    ),
    pytest.param(
        dict(
            batch=1,
            length=33,
            heads=4,
            headdim=4,
            groups=2,
            nstate=8,
            D="HP",
            z=True,
            dt_bias=True,
            init=True,
        ),
        8,
        id="L33-chunk8-everything",
    ),
    pytest.param(
        dict(
            batch=2,
            length=33,
            heads=4,
            headdim=8,
            groups=1,
            nstate=16,
            z=True,
            init=True,
            softplus=True,
        ),
        16,
        id="L33-chunk16-z-init",
    ),
    pytest.param(
        dict(batch=1, length=13, heads=3, headdim=5, groups=3, nstate=3, D="H", init=True),
        5,
        id="L13-prime-H3-groups3-P5-N3-chunk5",
    ),
]

FP32 = {k: torch.float32 for k in NAMES}


@pytest.mark.parametrize(("shape", "chunk_size"), KERNEL_CASES)
def test_triton_fp32_matches_reference(device, poisoned, shape, chunk_size):
    inputs = make_inputs(**shape, device=device)
    softplus = shape.get("softplus", False)
    want = run(ssd_recurrent, inputs, chunk_size, softplus)
    got = run(ssd_triton, inputs, chunk_size, softplus, FP32)
    assert_close(got, want, 100 * torch.finfo(torch.float32).eps)


def test_triton_several_blocks_per_chunk(device, poisoned, monkeypatch):
    """Blocks of 16 steps in chunks of 32 (rows and columns in different blocks) and dB/dC
    summed over heads by several programs (one head each)."""
    monkeypatch.setattr(ssd_triton_module, "BLOCK_M_MAX", 16)
    monkeypatch.setattr(ssd_triton_module, "HEADS_PER_PROGRAM", 1)
    shape = dict(batch=1, length=45, heads=4, headdim=4, groups=1, nstate=8, D="H", z=True,
                 init=True, softplus=True)  # fmt: skip
    inputs = make_inputs(**shape, device=device)
    want = run(ssd_chunked, inputs, 32, True)
    got = run(ssd_triton, inputs, 32, True, FP32)
    assert_close(got, want, 100 * torch.finfo(torch.float32).eps)


HALF_SHAPE = dict(batch=2, length=33, heads=4, headdim=8, groups=2, nstate=16, D="H", z=True,
                  dt_bias=True, init=True, softplus=True)  # fmt: skip


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
def test_triton_half_precision_matches_reference(device, poisoned, dtype):
    """x, B, C, z in half precision (dt, A, D, dt_bias, initial states in fp32); the reference
    runs in float64 on the same rounded values. Allowed error: 4 eps of the dtype, relative to
    the largest entry (measured: at most 1.6 eps on such inputs)."""
    dtypes = {**FP32, "x": dtype, "B": dtype, "C": dtype, "z": dtype}
    inputs = {
        k: v.to(dtypes[k]).double() for k, v in make_inputs(**HALF_SHAPE, device=device).items()
    }
    want = run(ssd_chunked, inputs, 16, True)
    got = run(ssd_triton, inputs, 16, True, dtypes)
    assert_close(got, want, 4 * torch.finfo(dtype).eps)


# Relative error ‖x − x64‖ / ‖x64‖ the kernels may always have: float32 1e-5 (sums of a few
# thousand terms), bfloat16 3·2^-8 (both operands of the matrix products rounded to bf16, 2^-8
# relative each at most, and bf16 results, 2^-8 more).
FLOOR = {torch.float32: 1e-5, torch.bfloat16: 3 * 2**-8}


def mamba2_inputs(batch, length, heads, headdim, groups, nstate, dtype, seed, device):
    """Activations (x, dt, B, C, z) in ``dtype``; parameters in float32 as Mamba-2 initializes
    them: ``A = -U(1, 16)``, ``softplus(dt_bias)`` log-uniform in [1e-3, 1e-1], ``D`` near 1."""
    gen = torch.Generator().manual_seed(seed)

    def randn(*shape, dtype=dtype, scale=1.0):
        return (scale * torch.randn(*shape, generator=gen)).to(device, dtype)

    low, high = math.log(1e-3), math.log(0.1)
    dt = torch.exp(low + (high - low) * torch.rand(heads, generator=gen))
    return {
        "x": randn(batch, length, heads, headdim),
        "dt": randn(batch, length, heads, scale=0.5),
        "A": -(1 + 15 * torch.rand(heads, generator=gen)).to(device),
        "B": randn(batch, length, groups, nstate),
        "C": randn(batch, length, groups, nstate),
        "D": 1 + randn(heads, dtype=torch.float32, scale=0.1),
        "z": randn(batch, length, heads, headdim),
        "dt_bias": (dt + torch.log(-torch.expm1(-dt))).to(device),  # inverse softplus
        "initial_states": randn(batch, heads, headdim, nstate, dtype=torch.float32),
    }


def scaled_sizes(on_gpu):
    """(batch, L, H, P, G, N) and the chunk size: Mamba-2-like on a GPU (H·P = 512), a few
    chunks in the interpreter."""
    return ((2, 4096, 8, 64, 1, 64), 256) if on_gpu else ((1, 40, 2, 4, 1, 8), 16)


def rel_error(got, want):
    """``‖got − want‖ / ‖want‖``; inf when ``got`` has a non-finite element (never written)."""
    if not got.isfinite().all():
        return math.inf
    return ((got - want).norm() / (want.norm() or 1.0)).item()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_triton_at_scale_within_float64_reference(device, on_gpu, poisoned, dtype):
    """Forward and backward of the kernels (every allocation NaN-poisoned) and of the chunked
    reference computing in float32, both against the reference in float64 on the same inputs,
    with every option: the kernels' relative error is at most twice the reference's own, or
    under the dtype's floor."""
    sizes, chunk = scaled_sizes(on_gpu)
    inputs = mamba2_inputs(*sizes, dtype, seed=1, device=device)

    def fn(backend):
        return lambda **kw: ssd(**kw, backend=backend)

    got = run(fn("triton"), inputs, chunk, True)
    ref = run(fn("reference"), inputs, chunk, True)
    truth = run(fn("reference"), cast(inputs, torch.float64), chunk, True)
    for name in truth:
        err, err_ref = rel_error(got[name], truth[name]), rel_error(ref[name], truth[name])
        bound = max(2 * err_ref, FLOOR[dtype])
        assert err <= bound, f"{name}: {err:.2e} > {bound:.2e} (reference {err_ref:.2e})"


def test_triton_deterministic(device, on_gpu, poisoned):
    """The backward pass has no atomic adds: two runs (bf16 on a GPU) equal bit for bit."""
    sizes, chunk = scaled_sizes(on_gpu)
    dtype = torch.bfloat16 if on_gpu else torch.float32
    inputs = mamba2_inputs(*sizes, dtype, seed=3, device=device)

    def fn(**kw):
        return ssd(**kw, backend="triton")

    first, second = run(fn, inputs, chunk, True), run(fn, inputs, chunk, True)
    for name in first:
        assert torch.equal(first[name], second[name]), name


def test_triton_prefill_then_decode(device, poisoned):
    got, want = _prefill_then_decode(ssd_triton, ssd_state_update_triton, FP32, device)
    assert_close(got, want, 100 * torch.finfo(torch.float32).eps)


def test_triton_decode_step_at_scale(device, on_gpu, poisoned):
    """The decoding step on one token of a (batch, H, P, N) state, bf16 activations."""
    sizes, _ = scaled_sizes(on_gpu)
    batch, _, heads, headdim, groups, nstate = sizes
    x = mamba2_inputs(batch, 1, heads, headdim, groups, nstate, torch.bfloat16, 4, device)
    args = {k: x[k][:, 0] for k in ("x", "dt", "B", "C", "z")}
    args |= {k: x[k] for k in ("A", "D", "dt_bias")}
    state = x["initial_states"]
    want_state = state.double()
    y = ssd_state_update(state, **args, dt_softplus=True, backend="triton")
    want = ssd_state_update_ref(want_state, **cast(args, torch.float64), dt_softplus=True)
    assert rel_error(y.double(), want) <= FLOOR[torch.bfloat16]
    assert rel_error(state.double(), want_state) <= FLOOR[torch.float32]


LAYOUTS = [pytest.param(view, id=name) for name, view in VIEWS.items()]


def _dense(inputs):
    """Contiguous copies (never the same tensors: a state is updated in place)."""
    return {k: v.resolve_neg().contiguous().clone() for k, v in inputs.items()}


LAYOUT_SHAPE = dict(batch=2, length=6, heads=2, headdim=4, groups=2, nstate=4, D="HP", z=True,
                    dt_bias=True, init=True)  # fmt: skip


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("name", NAMES)
def test_ssd_reads_any_layout(device, name, layout, backend):
    """Each argument in turn as a non-contiguous, expanded, transposed or negated view: the
    output and final state equal the reference's on contiguous copies."""
    inputs = cast(make_inputs(**LAYOUT_SHAPE, seed=5, device=device), torch.float32)
    inputs[name] = layout(inputs[name])
    flags = {"chunk_size": 4, "dt_softplus": True, "return_final_states": True}
    out, final = ssd(**inputs, **flags, backend=backend)
    want_out, want_final = ssd_chunked(**_dense(inputs), **flags)
    torch.testing.assert_close(out, want_out, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(final, want_final, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("backend", BACKENDS)
def test_ssd_backward_reads_any_layout(device, backend):
    """Every input strided, and the expanded output gradient that ``out.sum()`` gives: the
    gradients of the reference on contiguous copies."""
    inputs = cast(make_inputs(**LAYOUT_SHAPE, seed=6, device=device), torch.float32)
    layouts = [strided, transposed, lazy_bit, transposed, strided,
               lazy_bit, transposed, strided, lazy_bit]  # fmt: skip
    layouts = dict(zip(NAMES, layouts, strict=True))
    leaves = {k: v.clone().requires_grad_() for k, v in inputs.items()}
    out = ssd(**{k: layouts[k](v) for k, v in leaves.items()}, chunk_size=4, backend=backend)
    grads = torch.autograd.grad(out.sum(), list(leaves.values()))
    want = ssd_chunked(**leaves, chunk_size=4)
    want_grads = torch.autograd.grad(want.sum(), list(leaves.values()))
    torch.testing.assert_close(out, want, rtol=1e-5, atol=1e-5)
    for k, g, w in zip(leaves, grads, want_grads, strict=True):
        torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-4, msg=k)


UPDATE_NAMES = ("state", "x", "dt", "A", "B", "C", "D", "z", "dt_bias")
UPDATE_LAYOUTS = [  # an expanded state is refused (it is updated in place), see the checks
    pytest.param(name, *layout.values, id=f"{name}-{layout.id}")
    for name in UPDATE_NAMES
    for layout in LAYOUTS
    if not (name == "state" and layout.values[0] is expanded)
]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(("name", "layout"), UPDATE_LAYOUTS)
def test_state_update_reads_any_layout(device, name, layout, backend):
    """The decoding step with one argument as a strided, expanded, transposed or negated view
    (a strided or stride-0 ``A`` or ``dt_bias`` used to give a wrong output and a corrupted
    state on the Triton path)."""
    inputs = cast(make_inputs(**LAYOUT_SHAPE, seed=7, device=device), torch.float32)
    args = {k: inputs[k][:, 0] for k in ("x", "dt", "B", "C", "z")}
    args |= {"state": inputs["initial_states"], "A": inputs["A"], "D": inputs["D"],
             "dt_bias": inputs["dt_bias"]}  # fmt: skip
    args[name] = layout(args[name])
    dense = _dense(args)
    y = ssd_state_update(**args, dt_softplus=True, backend=backend)
    want = ssd_state_update_ref(**dense, dt_softplus=True)
    torch.testing.assert_close(y, want, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(args["state"], dense["state"], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", ["x", "B", "C", "dt"])
@pytest.mark.parametrize("value", [math.nan, math.inf], ids=["nan", "inf"])
def test_ssd_outputs_are_causal_under_non_finite_inputs(device, name, value, backend):
    """A NaN or inf at step s (inside a chunk, also in its first block of rows) leaves every
    output before s as in the clean run (it used to reach the earlier outputs of its chunk
    through 0 · NaN in the masked product), and makes the outputs from s on non-finite."""
    shape = dict(batch=1, length=20, heads=2, headdim=4, groups=1, nstate=4, D="H", z=True,
                 init=True, softplus=True)  # fmt: skip
    inputs = cast(make_inputs(**shape, seed=8, device=device), torch.float32)
    flags = {"chunk_size": 16, "dt_softplus": True, "backend": backend}
    clean = ssd(**inputs, **flags)
    step = 5  # chunk 0, steps 0..15
    inputs[name] = inputs[name].clone()
    inputs[name][:, step] = value
    out = ssd(**inputs, **flags)
    assert out[:, :step].isfinite().all()
    torch.testing.assert_close(out[:, :step], clean[:, :step], rtol=1e-6, atol=1e-6)
    assert not out[:, step:].isfinite().all()
    if name != "C":  # C_s reaches y_s only; x, B and dt the state, hence every later step
        assert not out[:, step:].isfinite().all(dim=(2, 3)).any()


# ------------------------------------------------------------------ the probe, the auto choice


def test_triton_probes_pass(device):
    ssd_module._probe_ssd(device)
    ssd_module._probe_update(device)


@pytest.mark.parametrize("mode", AUTO_MODES)
def test_auto_chooses_triton_on_cuda(device, on_gpu, monkeypatch, mode):
    """On CUDA tensors "auto" runs the kernels, also when the first call of the process (fresh
    probe cache) is made under no_grad, inference_mode or autocast, without a warning."""
    if not on_gpu:
        pytest.skip("auto chooses Triton on CUDA tensors only (the CPU run tests the probe)")
    monkeypatch.setattr(dispatch, "_probe_results", {})
    monkeypatch.delenv(dispatch.ENV_VAR, raising=False)
    inputs = cast(make_inputs(device=device), torch.float32)
    step = _update_inputs(inputs)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with mode():
            out = ssd(**inputs, chunk_size=16)
            y = ssd_state_update(**{**step, "state": step["state"].clone()})
    assert dispatch._probe_results == {
        ("ssd", str(out.device)): None,
        ("ssd_state_update", str(out.device)): None,
    }
    # What ran is the kernels: their results, bit for bit (the reference rounds differently).
    with torch.no_grad():
        assert torch.equal(out, ssd_triton(**inputs, chunk_size=16))
        assert torch.equal(y, ssd_state_update_triton(**step))
