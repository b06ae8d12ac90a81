"""Running the Triton kernels in Triton's CPU interpreter (``TRITON_INTERPRET=1``), as the tests
and the ci profile of the book do."""

from __future__ import annotations

import numpy as np


def fix_numpy_loop_bounds() -> None:
    """Make Triton 3.6's interpreter work with NumPy >= 2.4 (a no-op where not needed).

    The interpreter turns a loop bound into an int with ``int(array of shape (1,))``, an error
    since NumPy 2.4 (triton-lang/triton#9171, fixed upstream by squeezing first): apply that fix
    to the interpreter's tensors. Call it after setting ``TRITON_INTERPRET=1``, before running
    a kernel.
    """
    try:
        int(np.ones(1))
        return
    except TypeError:
        pass
    from triton.runtime import interpreter

    if getattr(interpreter, "_ssm_index_fix", False):
        return
    patch_tensor = interpreter._patch_lang_tensor

    def patched(tensor, scope):
        patch_tensor(tensor, scope)
        scope.set_attr(tensor, "__index__", lambda self: int(self.handle.data.squeeze()))

    interpreter._patch_lang_tensor = patched
    interpreter._ssm_index_fix = True
