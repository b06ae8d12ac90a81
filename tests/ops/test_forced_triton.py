"""``backend="triton"`` without a GPU raises a ``RuntimeError`` that says what to do, for every
public op of the package.

The test suite runs the kernels in Triton's CPU interpreter (``TRITON_INTERPRET=1``, set by
``tests/conftest.py`` before Triton is imported), where CPU tensors are accepted. So the ops are
called once in a subprocess without the interpreter and with CPU tensors (on a GPU machine too),
and each op's outcome is checked by its own test.
"""

import json
import os
import subprocess
import sys

import pytest

OPS = [
    "cauchy",
    "vandermonde",
    "vandermonde_transpose",
    "fftconv",
    "s4d_step",
    "selective_scan",
    "selective_state_update",
    "ssd",
    "ssd_state_update",
]

# Each call has valid CPU inputs of the smallest shapes, so that only the backend can fail.
CALLS = """
import json
import torch
import ssm

c = torch.ones(2, 4, dtype=torch.complex64)
f = torch.ones
calls = {
    "cauchy": lambda: ssm.cauchy(c, torch.ones(5, dtype=torch.complex64), c, backend="triton"),
    "vandermonde": lambda: ssm.vandermonde(c, c, 8, backend="triton"),
    "vandermonde_transpose": lambda: ssm.vandermonde_transpose(f(2, 8), c, backend="triton"),
    "fftconv": lambda: ssm.fftconv(f(1, 2, 8), f(2, 3), backend="triton"),
    "s4d_step": lambda: ssm.s4d_step(
        torch.zeros(1, 2, 4, dtype=torch.complex64), f(1, 2), c, c, c, backend="triton"
    ),
    "selective_scan": lambda: ssm.selective_scan(
        f(1, 2, 8), f(1, 2, 8), -f(2, 4), f(1, 4, 8), f(1, 4, 8), backend="triton"
    ),
    "selective_state_update": lambda: ssm.selective_state_update(
        torch.zeros(1, 2, 4), f(1, 2), f(1, 2), -f(2, 4), f(1, 4), f(1, 4), backend="triton"
    ),
    "ssd": lambda: ssm.ssd(
        f(1, 8, 2, 3), f(1, 8, 2), -f(2), f(1, 8, 1, 4), f(1, 8, 1, 4), 4, backend="triton"
    ),
    "ssd_state_update": lambda: ssm.ssd_state_update(
        torch.zeros(1, 2, 3, 4), f(1, 2, 3), f(1, 2), -f(2), f(1, 1, 4), f(1, 1, 4),
        backend="triton",
    ),
}
outcomes = {}
for name, call in calls.items():
    try:
        call()
        outcomes[name] = "returned"
    except Exception as err:
        outcomes[name] = f"{type(err).__name__}: {err}"
print(json.dumps(outcomes))
"""


@pytest.fixture(scope="module")
def outcomes():
    """What each op's forced Triton call did in a process without the interpreter."""
    env = {k: v for k, v in os.environ.items() if k not in ("TRITON_INTERPRET", "SSM_BACKEND")}
    out = subprocess.run(
        [sys.executable, "-c", CALLS], env=env, capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_every_public_op_is_covered(outcomes):
    import ssm

    assert sorted(outcomes) == sorted(OPS)
    assert all(callable(getattr(ssm, op)) for op in OPS)


@pytest.mark.parametrize("op", OPS)
def test_forced_triton_without_gpu_raises(op, outcomes):
    """A RuntimeError naming the op and the way out: CUDA tensors, the interpreter or the
    reference (or installing Triton, where it is missing)."""
    outcome = outcomes[op]
    assert outcome.startswith(f"RuntimeError: {op}: backend 'triton'"), outcome
    assert "needs CUDA tensors" in outcome or "Triton is not installed" in outcome, outcome
    assert "backend='reference'" in outcome, outcome
