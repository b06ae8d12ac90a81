"""How a public op chooses between its PyTorch reference and its Triton kernel.

The choice, in order:

1. the op's ``backend=`` argument, else the environment variable ``SSM_BACKEND``, else ``"auto"``;
2. ``"reference"`` always runs the reference;
3. ``"triton"`` runs the kernel, and raises ``RuntimeError`` when it cannot: no Triton installed,
   or tensors not on a CUDA device (CPU tensors are accepted under ``TRITON_INTERPRET=1``, the
   Triton interpreter that the test suite uses);
4. ``"auto"`` runs the kernel on CUDA tensors if the op's probe (a tiny call of the kernel,
   compared with the reference) succeeds once on that device, and the reference otherwise. When
   the probe fails, one warning says why and the reference is used from then on.

A deterministic backward pass (no atomic adds) is used when
``torch.are_deterministic_algorithms_enabled()``.
"""

from __future__ import annotations

import importlib.util
import os
import warnings
from collections.abc import Callable, Iterable

import torch

BACKENDS = ("auto", "reference", "triton")
ENV_VAR = "SSM_BACKEND"

_probe_results: dict[tuple[str, str], str | None] = {}


def triton_installed() -> bool:
    return importlib.util.find_spec("triton") is not None


def interpreting() -> bool:
    """Whether Triton kernels run in the CPU interpreter (``TRITON_INTERPRET=1``)."""
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def deterministic() -> bool:
    return torch.are_deterministic_algorithms_enabled()


def float64_backend(op: str, backend: str | None) -> str:
    """The backend for float64 (complex128) inputs of an op whose kernel computes in float32:
    ``"auto"`` means the reference, and an explicit ``"triton"`` raises ``ValueError``."""
    requested = backend if backend is not None else os.environ.get(ENV_VAR, "auto")
    if requested == "triton":
        raise ValueError(
            f"{op}: the Triton kernel computes in float32 but the inputs are float64 "
            "(complex128); cast them to complex64/float32 or use backend='reference'"
        )
    return "reference" if requested == "auto" else requested


def choose(
    op: str,
    tensors: Iterable[torch.Tensor | None],
    backend: str | None,
    probe: Callable[[torch.device], None],
) -> str:
    """Return ``"reference"`` or ``"triton"`` for one call of ``op`` on ``tensors``.

    ``probe(device)`` runs the kernel once at a tiny size and raises if it fails or disagrees
    with the reference; its outcome is cached per op and device.
    """
    requested = backend if backend is not None else os.environ.get(ENV_VAR, "auto")
    if requested not in BACKENDS:
        source = "backend" if backend is not None else ENV_VAR
        raise ValueError(f"{source} must be one of {BACKENDS}, got {requested!r}")
    if requested == "reference":
        return "reference"
    devices = {t.device for t in tensors if t is not None}
    on_cuda = any(d.type == "cuda" for d in devices)
    if requested == "triton":
        if not triton_installed():
            raise RuntimeError(
                f"{op}: backend 'triton' was asked for but Triton is not installed "
                "(pip install triton), or use backend='reference'"
            )
        if not on_cuda and not interpreting():
            raise RuntimeError(
                f"{op}: backend 'triton' needs CUDA tensors "
                f"(got devices {sorted(map(str, devices))}); "
                "move the inputs to a GPU, set TRITON_INTERPRET=1 to run the kernel in Triton's "
                "CPU interpreter, or use backend='reference'"
            )
        return "triton"
    if not on_cuda:
        return "reference"
    device = next(d for d in devices if d.type == "cuda")
    failure = _probe_once(op, device, probe)
    return "reference" if failure else "triton"


def _probe_once(op: str, device: torch.device, probe: Callable[[torch.device], None]) -> str | None:
    key = (op, str(device))
    if key not in _probe_results:
        failure = None
        if not triton_installed():
            failure = "Triton is not installed"
        else:
            try:
                probe(device)
            except Exception as err:  # any failure to compile or run means: use the reference
                failure = f"{type(err).__name__}: {err}"
        if failure:
            warnings.warn(
                f"{op}: the Triton kernel could not run on {device} ({failure}); "
                "using the PyTorch reference instead",
                RuntimeWarning,
                stacklevel=3,
            )
        _probe_results[key] = failure
    return _probe_results[key]
