"""Set-up shared by the tests of the accelerated ops.

The Triton kernels run in Triton's CPU interpreter here: ``TRITON_INTERPRET=1`` must be set
before Triton is first imported, which this file (loaded before any test module of this folder)
guarantees.
"""

import os

os.environ["TRITON_INTERPRET"] = "1"

import pytest
import torch

from ssm.ops.interpreter import fix_numpy_loop_bounds

fix_numpy_loop_bounds()


@pytest.fixture
def poisoned():
    """Deterministic mode: ``torch.empty`` returns NaN, so an unwritten output element shows."""
    previous = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    torch.utils.deterministic.fill_uninitialized_memory = True
    assert torch.empty(3).isnan().all()
    yield
    torch.use_deterministic_algorithms(previous)
