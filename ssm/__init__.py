"""``ssm``: state-space models from S4 to Mamba-2, the package behind the book.

Functional core (float64-exact references):

- :func:`ssm.discretize` — continuous ``(A, B)`` to discrete ``(Ā, B̄)``;
- :func:`ssm.ssm_kernel`, :func:`ssm.recurrence`, :func:`ssm.fft_conv` — the convolutional and
  recurrent views of a discrete SSM;
- :func:`ssm.s4_kernel`, :func:`ssm.s4d_kernel` — structured kernels;
- :mod:`ssm.hippo` — HiPPO operators and their normal-plus-low-rank form.
"""

from . import hippo
from .conv import causal_conv, fft_conv
from .discretize import discretize
from .kernels import s4_kernel, s4d_kernel, ssm_kernel
from .scan import recurrence

__all__ = [
    "causal_conv",
    "discretize",
    "fft_conv",
    "hippo",
    "recurrence",
    "s4_kernel",
    "s4d_kernel",
    "ssm_kernel",
]
__version__ = "0.1.0"
