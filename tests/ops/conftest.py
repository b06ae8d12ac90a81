"""Set-up shared by the tests of the accelerated ops.

The Triton kernels run in Triton's CPU interpreter here: ``TRITON_INTERPRET=1`` must be set
before Triton is first imported, which this file (loaded before any test module of this folder)
guarantees.
"""

import os

os.environ["TRITON_INTERPRET"] = "1"

import numpy as np
import pytest
import torch
from triton.runtime import interpreter


def _index_loop_bounds_with_numpy_2_4() -> None:
    """Triton 3.6's interpreter turns a loop bound into an int with ``int(array of shape (1,))``,
    an error since NumPy 2.4 (triton-lang/triton#9171, fixed upstream by squeezing first):
    apply that fix to the interpreter's tensors."""
    patch_tensor = interpreter._patch_lang_tensor

    def patched(tensor, scope):
        patch_tensor(tensor, scope)
        scope.set_attr(tensor, "__index__", lambda self: int(self.handle.data.squeeze()))

    interpreter._patch_lang_tensor = patched


try:
    int(np.ones(1))
except TypeError:
    _index_loop_bounds_with_numpy_2_4()


@pytest.fixture
def poisoned():
    """Deterministic mode: ``torch.empty`` returns NaN, so an unwritten output element shows."""
    previous = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    torch.utils.deterministic.fill_uninitialized_memory = True
    assert torch.empty(3).isnan().all()
    yield
    torch.use_deterministic_algorithms(previous)
