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
