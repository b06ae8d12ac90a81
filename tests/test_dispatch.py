"""The backend choice of accelerated ops (ssm.ops.dispatch)."""

import warnings

import pytest
import torch

from ssm.ops import dispatch


def never_called(device):
    raise AssertionError("the probe must not run here")


@pytest.fixture(autouse=True)
def clean(monkeypatch):
    monkeypatch.delenv(dispatch.ENV_VAR, raising=False)
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    monkeypatch.setattr(dispatch, "_probe_results", {})


def test_cpu_tensors_use_the_reference_automatically():
    assert dispatch.choose("op", [torch.zeros(2)], None, never_called) == "reference"


def test_forced_reference_and_environment(monkeypatch):
    assert dispatch.choose("op", [torch.zeros(2)], "reference", never_called) == "reference"
    monkeypatch.setenv(dispatch.ENV_VAR, "reference")
    assert dispatch.choose("op", [torch.zeros(2)], None, never_called) == "reference"


def test_unknown_backend_names_its_source(monkeypatch):
    with pytest.raises(ValueError, match="backend must be one of"):
        dispatch.choose("op", [], "cuda", never_called)
    monkeypatch.setenv(dispatch.ENV_VAR, "fast")
    with pytest.raises(ValueError, match="SSM_BACKEND must be one of"):
        dispatch.choose("op", [], None, never_called)


def test_forced_triton_without_gpu_raises(monkeypatch):
    monkeypatch.setattr(dispatch, "triton_installed", lambda: True)
    with pytest.raises(RuntimeError, match=r"needs CUDA tensors.*TRITON_INTERPRET=1"):
        dispatch.choose("op", [torch.zeros(2)], "triton", never_called)
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert dispatch.choose("op", [torch.zeros(2)], "triton", never_called) == "triton"


def test_forced_triton_without_triton_raises(monkeypatch):
    monkeypatch.setattr(dispatch, "triton_installed", lambda: False)
    with pytest.raises(RuntimeError, match="Triton is not installed"):
        dispatch.choose("op", [torch.zeros(2)], "triton", never_called)


def test_failed_probe_warns_once_and_falls_back(monkeypatch):
    monkeypatch.setattr(dispatch, "triton_installed", lambda: True)
    calls = []

    def failing_probe(device):
        calls.append(device)
        raise RuntimeError("no kernel image")

    device = torch.device("cuda:0")
    with pytest.warns(RuntimeWarning, match="no kernel image.*reference"):
        assert dispatch._probe_once("op", device, failing_probe) is not None
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert dispatch._probe_once("op", device, failing_probe) is not None
    assert len(calls) == 1


def test_successful_probe_is_cached(monkeypatch):
    monkeypatch.setattr(dispatch, "triton_installed", lambda: True)
    calls = []
    device = torch.device("cuda:1")
    for _ in range(3):
        assert dispatch._probe_once("op", device, calls.append) is None
    assert calls == [device]


def backward_probe(device):
    """What a real probe does: build a graph and run a backward pass through it."""
    assert torch.is_grad_enabled() and not torch.is_inference_mode_enabled()
    assert not torch.is_autocast_enabled("cpu")
    x = torch.ones(3, requires_grad=True)
    (x.float() * 2).sum().backward()
    assert torch.equal(x.grad, torch.full((3,), 2.0))


@pytest.mark.parametrize(
    "mode",
    [
        pytest.param(torch.no_grad, id="no_grad"),
        pytest.param(torch.inference_mode, id="inference_mode"),
        pytest.param(lambda: torch.autocast("cpu", dtype=torch.bfloat16), id="autocast"),
    ],
)
def test_probe_ignores_the_callers_grad_mode(monkeypatch, mode):
    """A first call under no_grad / inference_mode / autocast must not cache a fallback."""
    monkeypatch.setattr(dispatch, "triton_installed", lambda: True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with mode():
            assert dispatch._probe_once("op", torch.device("cpu"), backward_probe) is None
    assert dispatch._probe_results[("op", "cpu")] is None


def test_out_of_memory_in_the_probe_is_not_cached(monkeypatch):
    monkeypatch.setattr(dispatch, "triton_installed", lambda: True)
    calls = []

    def probe(device):
        calls.append(device)
        if len(calls) == 1:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory")

    with pytest.warns(RuntimeWarning, match="out of memory.*for this call"):
        assert dispatch._probe_once("op", torch.device("cpu"), probe) is not None
    assert dispatch._probe_once("op", torch.device("cpu"), probe) is None
    assert len(calls) == 2


@pytest.mark.parametrize("dtype", [torch.float64, torch.complex128], ids=["float64", "complex128"])
def test_one_float64_policy(monkeypatch, dtype):
    """Kernels compute in float32: float64 runs the reference under auto, and triton refuses."""
    monkeypatch.setattr(dispatch, "triton_installed", lambda: True)
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    wide = [torch.zeros(2, dtype=dtype), None, 3]
    with pytest.raises(
        ValueError,
        match=f"computes in float32 but inputs are {dtype}".replace("torch.", "torch\\."),
    ):
        dispatch.choose("op", wide, "triton", never_called)
    assert dispatch.choose("op", wide, None, never_called) == "reference"
    assert dispatch.choose("op", [torch.zeros(2)], "triton", never_called) == "triton"
