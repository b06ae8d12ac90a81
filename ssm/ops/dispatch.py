"""How a public op chooses between its PyTorch reference and its Triton kernel.

Every accelerated op calls :func:`choose` once per call, after checking its arguments. The
choice, in order:

1. the op's ``backend=`` argument, else the environment variable ``SSM_BACKEND``, else ``"auto"``;
2. ``"reference"`` always runs the reference;
3. the float64 policy, the same for every op: the kernels compute in float32 (their inputs may
   be float16, bfloat16 or float32, complex64 for the complex ops), so float64 or complex128
   inputs run the reference under ``"auto"``, and an explicit ``"triton"`` raises
   ``ValueError``;
4. ``"triton"`` runs the kernel, and raises ``RuntimeError`` when it cannot: no Triton installed,
   or tensors not on a CUDA device (CPU tensors are accepted under ``TRITON_INTERPRET=1``, the
   Triton interpreter that the test suite uses);
5. ``"auto"`` runs the kernel on CUDA tensors if the op's probe (a tiny call of the kernel,
   compared with the reference) succeeds once on that device, and the reference otherwise.

The probe runs in a context of its own, whatever the caller's: gradients enabled, outside
``torch.inference_mode``, autocast off. So a first call made under ``torch.no_grad()`` tests the
same thing as any other, and a cached fallback only ever records that the kernel failed to
compile or disagreed with the reference. When it does, one warning says why and the reference is
used from then on. Running out of memory during the probe is not cached: the next call probes
again. During CUDA-graph capture an op that was not probed yet runs its kernel unprobed (probe
outside the capture by calling the op once before).

A deterministic backward pass (no atomic adds) is used when
``torch.are_deterministic_algorithms_enabled()``.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import warnings
from collections.abc import Callable, Iterable, Iterator

import torch

BACKENDS = ("auto", "reference", "triton")
ENV_VAR = "SSM_BACKEND"
WIDE_DTYPES = (torch.float64, torch.complex128)  # what the kernels do not compute in

_probe_results: dict[tuple[str, str], str | None] = {}


def triton_installed() -> bool:
    return importlib.util.find_spec("triton") is not None


def interpreting() -> bool:
    """Whether Triton kernels run in the CPU interpreter (``TRITON_INTERPRET=1``)."""
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def deterministic() -> bool:
    return torch.are_deterministic_algorithms_enabled()


def requested_backend(backend: str | None) -> str:
    """The backend asked for: the argument, else ``$SSM_BACKEND``, else ``"auto"``."""
    requested = backend if backend is not None else os.environ.get(ENV_VAR, "auto")
    if requested not in BACKENDS:
        source = "backend" if backend is not None else ENV_VAR
        raise ValueError(f"{source} must be one of {BACKENDS}, got {requested!r}")
    return requested


def choose(
    op: str,
    tensors: Iterable[object],
    backend: str | None,
    probe: Callable[[torch.device], None],
) -> str:
    """Return ``"reference"`` or ``"triton"`` for one call of ``op`` on ``tensors``.

    ``tensors`` may hold ``None`` and non-tensors (skipped). ``probe(device)`` runs the kernel
    once at a tiny size and raises if it fails or disagrees with the reference; its outcome is
    cached per op and device.
    """
    requested = requested_backend(backend)
    if requested == "reference":
        return "reference"
    tensors = [t for t in tensors if isinstance(t, torch.Tensor)]
    wide = sorted({str(t.dtype) for t in tensors if t.dtype in WIDE_DTYPES})
    if wide:
        if requested == "triton":
            raise ValueError(
                f"{op}: the Triton kernel computes in float32 but inputs are {', '.join(wide)}; "
                "cast them to float32 (complex64) or use backend='reference'"
            )
        return "reference"
    devices = {t.device for t in tensors}
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
    if key in _probe_results:
        return _probe_results[key]
    if _capturing(device):
        return None
    failure, cache = None, True
    if not triton_installed():
        failure = "Triton is not installed"
    else:
        try:
            with _clean_context(device):
                probe(device)
        except torch.cuda.OutOfMemoryError as err:
            failure, cache = f"out of memory while probing ({err})", False
        except Exception as err:  # any failure to compile or run means: use the reference
            failure = f"{type(err).__name__}: {err}"
    if failure:
        warnings.warn(
            f"{op}: the Triton kernel could not run on {device} ({failure}); "
            f"using the PyTorch reference {'from now on' if cache else 'for this call'}",
            RuntimeWarning,
            stacklevel=3,
        )
    if cache:
        _probe_results[key] = failure
    return failure


def _capturing(device: torch.device) -> bool:
    """Whether a CUDA graph is being captured on ``device``'s current stream."""
    return (
        device.type == "cuda"
        and torch.cuda.is_available()
        and torch.cuda.is_current_stream_capturing()
    )


@contextlib.contextmanager
def _clean_context(device: torch.device) -> Iterator[None]:
    """Gradients on, inference mode off, autocast off: the probe's context, not the caller's."""
    with (
        torch.inference_mode(False),
        torch.enable_grad(),
        torch.autocast(device_type=device.type, enabled=False),
    ):
        yield
