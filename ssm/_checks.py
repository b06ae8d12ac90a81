"""Argument checks shared by the public functions: each raises a ``ValueError`` that names the
argument, what it got (shape, dtype or value) and what was expected."""

from __future__ import annotations

from collections.abc import Iterable

import torch

HALF = (torch.float16, torch.bfloat16)  # computed in float32 by the functional core
FLOATING = (*HALF, torch.float32, torch.float64)
COMPLEX = (torch.complex64, torch.complex128)


def tensor(name: str, x: object, *, complex_ok: bool = True) -> torch.Tensor:
    """Return ``x`` as a tensor, rejecting integer and boolean data."""
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    allowed = FLOATING + (COMPLEX if complex_ok else ())
    if x.dtype not in allowed:
        kinds = "floating or complex" if complex_ok else "real floating"
        raise ValueError(f"{name} must have a {kinds} dtype, got {x.dtype}")
    return x


def layer_input(x: object, d_model: int, ndim: int, shape: str) -> torch.Tensor:
    """A sequence layer's input: a real floating tensor of ``ndim`` dimensions whose last is
    ``d_model``; ``shape`` names the expected layout in the error, e.g. ``"(batch, d_model)"``."""
    tensor("x", x, complex_ok=False)
    if x.ndim != ndim or x.shape[-1] != d_model:
        raise ValueError(f"x must have shape {shape} with d_model={d_model}, got {tuple(x.shape)}")
    return x


def choice(name: str, value: str, options: Iterable[str]) -> str:
    options = tuple(options)
    if value not in options:
        raise ValueError(f"{name} must be one of {options}, got {value!r}")
    return value


def positive_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    return value


def positive_step(name: str, dt: object, like: torch.Tensor) -> torch.Tensor:
    """A real, strictly positive step size, as a tensor on ``like``'s device."""
    if isinstance(dt, torch.Tensor):
        if dt.is_complex() or not dt.is_floating_point():
            raise ValueError(f"{name} must be a real floating tensor, got {dt.dtype}")
        step = dt
    elif isinstance(dt, (int, float)) and not isinstance(dt, bool):
        step = torch.tensor(float(dt), dtype=like.real.dtype, device=like.device)
    else:
        raise ValueError(f"{name} must be a positive float or a real tensor, got {dt!r}")
    if not bool(torch.all(step > 0)):
        raise ValueError(f"{name} must be > 0 everywhere, got min {float(step.min()):.3g}")
    if not bool(torch.isfinite(step).all()):
        raise ValueError(f"{name} must be finite, got max {float(step.max()):.3g}")
    return step


def last_dim(name: str, x: torch.Tensor, n: int, what: str) -> None:
    if x.ndim < 1 or x.shape[-1] != n:
        raise ValueError(
            f"{name} must have last dimension {n} ({what}), got shape {tuple(x.shape)}"
        )


def square(name: str, A: torch.Tensor) -> int:
    if A.ndim < 2 or A.shape[-1] != A.shape[-2]:
        raise ValueError(f"{name} must be square (..., N, N), got shape {tuple(A.shape)}")
    return A.shape[-1]


def common_dtype(*xs: torch.Tensor) -> torch.dtype:
    """The dtype all of ``xs`` promote to (complex if any is complex)."""
    dtype = xs[0].dtype
    for x in xs[1:]:
        dtype = torch.promote_types(dtype, x.dtype)
    return dtype


def real(
    name: str, x: object, shape: tuple[int, ...] | None = None, what: str = ""
) -> torch.Tensor | None:
    """``x`` is ``None``, or a real floating tensor (of exactly ``shape`` when given)."""
    if x is None:
        return None
    x = tensor(name, x, complex_ok=False)
    if shape is not None and tuple(x.shape) != tuple(shape):
        meaning = f" ({what})" if what else ""
        raise ValueError(f"{name} must have shape {tuple(shape)}{meaning}, got {tuple(x.shape)}")
    return x


def one_device(**tensors: object) -> torch.device | None:
    """All the tensors among ``tensors`` (``None`` and numbers skipped) are on one device, and
    none is a meta tensor (which holds no data to compute on). Returns that device."""
    named = {name: t for name, t in tensors.items() if isinstance(t, torch.Tensor)}
    for name, t in named.items():
        if t.is_meta:
            raise ValueError(
                f"{name} is a meta tensor (shape only, no data); pass a tensor on a CPU or "
                "CUDA device"
            )
    devices = {t.device for t in named.values()}
    if len(devices) > 1:
        listed = ", ".join(f"{name} on {t.device}" for name, t in named.items())
        raise ValueError(f"all tensors must be on one device, got {listed}")
    return next(iter(devices), None)


def in_place(name: str, state: torch.Tensor) -> None:
    """``state`` is updated in place, so no two of its elements may share memory."""
    if any(st == 0 and n > 1 for st, n in zip(state.stride(), state.shape, strict=True)):
        raise ValueError(
            f"{name} is updated in place but is an expanded view (strides {state.stride()}, "
            f"shape {tuple(state.shape)}); pass a tensor that owns its elements (.clone())"
        )


def batch_shape(**shapes: tuple[int, ...]) -> torch.Size:
    """The broadcast of the named batch shapes, or a ``ValueError`` that lists them (the
    functional core's check that its arguments' batch dims fit together)."""
    try:
        return torch.broadcast_shapes(*shapes.values())
    except RuntimeError:
        listed = ", ".join(f"{name} {tuple(shape)}" for name, shape in shapes.items())
        raise ValueError(f"the batch dims must broadcast, got {listed}") from None


def fits(shape: tuple[int, ...], batch: tuple[int, ...]) -> bool:
    """Whether ``shape`` broadcasts to ``batch`` without enlarging it (a skip term ``D``)."""
    return broadcasts(shape, batch) and torch.broadcast_shapes(shape, batch) == batch


def broadcasts(*shapes: tuple[int, ...]) -> bool:
    """Whether the shapes broadcast together."""
    try:
        torch.broadcast_shapes(*shapes)
    except RuntimeError:
        return False
    return True


def skip_term(D: object, batch: tuple[int, ...], of: str) -> torch.Tensor | float | None:
    """The skip term ``D``: ``None``, a number, or a tensor that broadcasts to ``batch`` (the
    batch dims ``of`` what) without enlarging the output."""
    if isinstance(D, torch.Tensor):
        D = tensor("D", D)
        if not fits(D.shape, batch):
            raise ValueError(
                f"D must be a scalar or broadcast to the batch dims {tuple(batch)} of {of}, "
                f"got shape {tuple(D.shape)}"
            )
    elif D is not None and (isinstance(D, bool) or not isinstance(D, (int, float, complex))):
        raise ValueError(f"D must be None, a number or a tensor, got {D!r}")
    return D


def channel_skip(D: object, H: int) -> None:
    """The skip term of the accelerated ops: ``None``, a real number, or a real ``(H,)`` tensor
    (one weight per channel)."""
    if isinstance(D, torch.Tensor):
        tensor("D", D, complex_ok=False)
        if D.shape != (H,):
            raise ValueError(f"D must be a float or have shape (H,) = ({H},), got {tuple(D.shape)}")
    elif D is not None and (isinstance(D, bool) or not isinstance(D, (int, float))):
        raise ValueError(f"D must be None, a float or a tensor of shape (H,), got {D!r}")
