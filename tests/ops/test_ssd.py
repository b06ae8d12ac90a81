"""SSD (Mamba-2): the three references against each other and a hand computation in float64,
prefill then decode, argument checks, backend choice, and the Triton kernels in Triton's CPU
interpreter against the float64 reference (fp32 tightly, bf16/fp16 within their precision),
forward and backward, with every buffer they allocate poisoned with NaN."""

import math
import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

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


def make_inputs(
    batch=2, length=33, heads=4, headdim=8, groups=2, nstate=16, *,
    D=None, z=False, dt_bias=False, init=False, softplus=False, seed=0,
):  # fmt: skip
    """Random float64 inputs; ``D`` is None, ``"H"`` or ``"HP"``. With ``softplus`` the raw
    ``dt`` is centred below 0, else it is a positive step."""
    g = torch.Generator().manual_seed(seed)

    def randn(*shape):
        return torch.randn(*shape, generator=g, dtype=torch.float64)

    def rand(*shape):
        return torch.rand(*shape, generator=g, dtype=torch.float64)

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
    w_out = torch.randn(out.shape, generator=g, dtype=torch.float64).to(out.dtype)
    w_final = torch.randn(final.shape, generator=g, dtype=torch.float64).to(final.dtype)
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
def test_recurrent_quadratic_chunked_agree(case, length):
    inputs = make_inputs(batch=2, length=length, heads=4, headdim=3, nstate=5, **case)
    softplus = case.get("softplus", False)
    want = run(ssd_recurrent, inputs, 16, softplus)
    assert_close(run(ssd_quadratic, inputs, 16, softplus), want, 1e-10, "quadratic ")
    assert_close(run(ssd_chunked, inputs, 16, softplus), want, 1e-10, "chunked ")


@pytest.mark.parametrize("chunk_size", [1, 3, 16, 64])
def test_chunked_for_any_chunk_size(chunk_size):
    inputs = make_inputs(length=37, heads=2, headdim=3, nstate=4, D="H", init=True)
    want = run(ssd_recurrent, inputs, chunk_size, False)
    assert_close(run(ssd_chunked, inputs, chunk_size, False), want, 1e-10)


@pytest.mark.parametrize("fn", [ssd_recurrent, ssd_quadratic, ssd_chunked])
def test_two_steps_by_hand(fn):
    """One head, P = N = 1: the recurrence written out with every option on."""
    x, dt_raw, B, C, z = (1.0, 2.0), (0.5, -0.2), (0.7, -1.1), (0.3, 0.9), (0.4, -0.6)
    A, D, bias, h = -1.5, 0.5, 0.1, 0.2
    expected = []
    for t in range(2):
        dt = math.log1p(math.exp(dt_raw[t] + bias))
        h = math.exp(dt * A) * h + dt * x[t] * B[t]
        y = C[t] * h + D * x[t]
        expected.append(y * z[t] / (1 + math.exp(-z[t])))

    def col(v):
        return torch.tensor(v, dtype=torch.float64).view(1, 2, 1, 1)

    out, final = fn(
        col(x),
        col(dt_raw)[..., 0],
        torch.tensor([A], dtype=torch.float64),
        col(B),
        col(C),
        2,
        D=torch.tensor([D], dtype=torch.float64),
        z=col(z),
        dt_bias=torch.tensor([bias], dtype=torch.float64),
        initial_states=torch.full((1, 1, 1, 1), 0.2, dtype=torch.float64),
        dt_softplus=True,
        return_final_states=True,
    )
    torch.testing.assert_close(out.flatten(), torch.tensor(expected, dtype=torch.float64))
    torch.testing.assert_close(final.flatten(), torch.tensor([h], dtype=torch.float64))


def _prefill_then_decode(prefill, update, dtypes, prefill_len=30, steps=3):
    """Outputs of the last ``steps`` steps and the final state, computed by ``prefill`` over
    the first ``prefill_len`` steps and then ``update`` one step at a time (state kept in a
    strided slice of a larger cache)."""
    length = prefill_len + steps
    inputs = make_inputs(
        batch=2,
        length=length,
        heads=4,
        headdim=4,
        groups=2,
        nstate=8,
        D="HP",
        z=True,
        dt_bias=True,
        init=True,
        softplus=True,
    )
    low = {k: v.to(dtypes.get(k, v.dtype)) for k, v in inputs.items()}
    head = {
        k: v[:, :prefill_len] if v.ndim >= 3 and k != "initial_states" else v
        for k, v in low.items()
    }
    _, state = prefill(chunk_size=8, dt_softplus=True, return_final_states=True, **head)
    cache = torch.zeros(*state.shape[:3], state.shape[3] + 3, dtype=state.dtype)
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


def test_prefill_then_decode_equals_full_pass():
    got, want = _prefill_then_decode(ssd_chunked, ssd_state_update_ref, {})
    assert_close(got, want, 1e-12)


# ---------------------------------------------------------------- arguments and backends


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
    pytest.param(
        "dt", lambda i: i["dt"][:, :-1], r"^dt must have shape \(B, L, H\)", id="dt-length"
    ),
    pytest.param(
        "A", lambda i: torch.cat([i["A"], i["A"]]), r"^A must have shape \(H,\)", id="A-size"
    ),
    pytest.param(
        "B", lambda i: i["B"][:, :-1], r"^B must have shape \(B, L, G, N\)", id="B-length"
    ),
    pytest.param(
        "B",
        lambda i: torch.zeros(2, 33, 3, 16, dtype=torch.float64),
        r"divisible by the number of groups",
        id="B-groups",
    ),
    pytest.param("C", lambda i: i["C"][..., :-1], r"^C must have shape", id="C-state"),
    pytest.param("chunk_size", lambda i: 0, r"^chunk_size must be an integer >= 1", id="chunk0"),
    pytest.param(
        "D", lambda i: torch.zeros(4, 3, dtype=torch.float64), r"^D must have shape", id="D-shape"
    ),
    pytest.param("z", lambda i: i["x"][:, :, :, :-1], r"^z must have shape", id="z-shape"),
    pytest.param(
        "dt_bias",
        lambda i: torch.zeros(3, dtype=torch.float64),
        r"^dt_bias must have shape",
        id="bias-shape",
    ),
    pytest.param(
        "initial_states",
        lambda i: torch.zeros(2, 4, 8, 15, dtype=torch.float64),
        r"^initial_states must have shape",
        id="init-shape",
    ),
]


@pytest.mark.parametrize(("name", "bad", "message"), BAD_SSD)
def test_ssd_rejects_bad_arguments(name, bad, message):
    inputs = make_inputs()
    args = {**inputs, "chunk_size": 16}
    args[name] = bad(inputs)
    with pytest.raises(ValueError, match=message):
        ssd(**args)


BAD_UPDATE = [
    pytest.param("state", lambda i: i["state"][0], r"^state must have shape", id="state-3d"),
    pytest.param("x", lambda i: i["x"][..., :-1], r"^x must have shape \(B, H, P\)", id="x-shape"),
    pytest.param("dt", lambda i: i["dt"][:, None], r"^dt must have shape \(B, H\)", id="dt-shape"),
    pytest.param("B", lambda i: i["B"][..., :-1], r"^B must have shape \(B, G, N\)", id="B-state"),
    pytest.param("C", lambda i: i["C"][:, :1], r"^C must have shape", id="C-groups"),
]


@pytest.mark.parametrize(("name", "bad", "message"), BAD_UPDATE)
def test_state_update_rejects_bad_arguments(name, bad, message):
    args = _update_inputs(make_inputs())
    args[name] = bad(args)
    with pytest.raises(ValueError, match=message):
        ssd_state_update(**args)


def test_unknown_backend_is_rejected():
    with pytest.raises(ValueError, match="backend must be one of"):
        ssd(**make_inputs(), chunk_size=16, backend="cuda")


def test_triton_backend_rejects_float64():
    with pytest.raises(ValueError, match="float64"):
        ssd(**make_inputs(), chunk_size=16, backend="triton")


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


def test_backend_choice(kernel_calls, monkeypatch):
    inputs = {k: v.float() for k, v in make_inputs().items()}
    ssd(**inputs, chunk_size=16)  # auto, CPU tensors: the reference
    ssd(**inputs, chunk_size=16, backend="reference")
    assert kernel_calls == []
    ssd(**inputs, chunk_size=16, backend="triton")  # CPU is allowed under the interpreter
    ssd_state_update(**_update_inputs(inputs), backend="triton")
    assert kernel_calls == ["ssd", "update"]
    monkeypatch.setenv("SSM_BACKEND", "triton")
    ssd(**inputs, chunk_size=16)
    assert kernel_calls == ["ssd", "update", "ssd"]


def test_triton_backend_on_cpu_without_interpreter_raises():
    code = (
        "import torch\n"
        "from ssm.ops.ssd import ssd\n"
        "x = torch.randn(1, 4, 2, 4)\n"
        "B = torch.randn(1, 4, 1, 4)\n"
        "try:\n"
        "    ssd(x, torch.rand(1, 4, 2), -torch.rand(2), B, B, 2, backend='triton')\n"
        "except RuntimeError as err:\n"
        "    print('RuntimeError:', err)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert "RuntimeError:" in done.stdout and "CUDA" in done.stdout, done.stdout


# ---------------------------------------------------------------- Triton kernels (interpreted)


@pytest.fixture
def poisoned(monkeypatch):
    """``torch.empty``/``empty_like`` return NaN-filled floating tensors: any output element a
    kernel forgets to write shows up as NaN."""
    empty, empty_like = torch.empty, torch.empty_like

    def poison(t):
        return t.fill_(math.nan) if t.is_floating_point() else t

    monkeypatch.setattr(torch, "empty", lambda *a, **k: poison(empty(*a, **k)))
    monkeypatch.setattr(torch, "empty_like", lambda *a, **k: poison(empty_like(*a, **k)))
    assert torch.empty(2).isnan().all()


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
]

FP32 = {k: torch.float32 for k in NAMES}


@pytest.mark.parametrize(("shape", "chunk_size"), KERNEL_CASES)
def test_triton_fp32_matches_reference(poisoned, shape, chunk_size):
    inputs = make_inputs(**shape)
    softplus = shape.get("softplus", False)
    want = run(ssd_recurrent, inputs, chunk_size, softplus)
    got = run(ssd_triton, inputs, chunk_size, softplus, FP32)
    assert_close(got, want, 100 * torch.finfo(torch.float32).eps)


@pytest.mark.parametrize("heads_inner", [False, True], ids=["heads-outer", "heads-inner"])
@pytest.mark.parametrize("use_cb", [False, True], ids=["cb-per-head", "cb-per-group"])
def test_triton_several_blocks_per_chunk(poisoned, monkeypatch, use_cb, heads_inner):
    """Blocks of 16 steps in chunks of 32 (rows and columns in different blocks) and dB/dC
    summed over heads by several programs (one head each); the products C_t·B_s computed per
    head inside the kernels or once per group by their own kernel."""
    monkeypatch.setattr(ssd_triton_module, "USE_CB", use_cb)
    monkeypatch.setattr(ssd_triton_module, "HEADS_INNER", heads_inner)
    monkeypatch.setattr(ssd_triton_module, "BLOCK_M_MAX", 16)
    monkeypatch.setattr(ssd_triton_module, "HEADS_PER_PROGRAM", 1)
    shape = dict(batch=1, length=45, heads=4, headdim=4, groups=1, nstate=8, D="H", z=True,
                 init=True, softplus=True)  # fmt: skip
    inputs = make_inputs(**shape)
    want = run(ssd_chunked, inputs, 32, True)
    got = run(ssd_triton, inputs, 32, True, FP32)
    assert_close(got, want, 100 * torch.finfo(torch.float32).eps)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
def test_triton_half_precision_matches_reference(poisoned, dtype):
    """x, B, C, z in half precision (dt, A, D, dt_bias, initial states in fp32); the reference
    runs in float64 on the same rounded values. Allowed error: 4 eps of the dtype, relative to
    the largest entry (measured: at most 1.6 eps on such inputs)."""
    shape = dict(
        batch=2,
        length=33,
        heads=4,
        headdim=8,
        groups=2,
        nstate=16,
        D="H",
        z=True,
        dt_bias=True,
        init=True,
        softplus=True,
    )
    dtypes = {**FP32, "x": dtype, "B": dtype, "C": dtype, "z": dtype}
    inputs = {k: v.to(dtypes[k]).double() for k, v in make_inputs(**shape).items()}
    want = run(ssd_chunked, inputs, 16, True)
    got = run(ssd_triton, inputs, 16, True, dtypes)
    assert_close(got, want, 4 * torch.finfo(dtype).eps)


def test_triton_deterministic(poisoned):
    inputs = make_inputs(batch=1, length=20, heads=2, headdim=4, nstate=8, D="H", init=True)
    torch.use_deterministic_algorithms(True)
    try:
        first = run(ssd_triton, inputs, 8, False, FP32)
        second = run(ssd_triton, inputs, 8, False, FP32)
    finally:
        torch.use_deterministic_algorithms(False)
    for name in first:
        assert torch.equal(first[name], second[name]), name


def test_triton_prefill_then_decode(poisoned):
    got, want = _prefill_then_decode(ssd_triton, ssd_state_update_triton, FP32)
    assert_close(got, want, 100 * torch.finfo(torch.float32).eps)


def test_triton_probes_pass_on_cpu_interpreter():
    ssd_module._probe_ssd(torch.device("cpu"))
    ssd_module._probe_update(torch.device("cpu"))


def test_f_softplus_threshold_matches_kernels():
    """The references use F.softplus, which returns its input above 20 as the kernels do."""
    x = torch.tensor([19.9, 20.0, 20.1, 40.0], dtype=torch.float64)
    expected = torch.where(x <= 20, torch.log1p(torch.exp(x)), x)
    torch.testing.assert_close(F.softplus(x), expected)
