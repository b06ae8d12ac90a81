"""``ssm``: state-space models from S4 to Mamba-2, the package behind the book.

Functional core (float64-exact references):

- :func:`ssm.discretize` — continuous ``(A, B)`` to discrete ``(Ā, B̄)``;
- :func:`ssm.ssm_kernel`, :func:`ssm.recurrence`, :func:`ssm.fft_conv` — the convolutional and
  recurrent views of a discrete SSM;
- :func:`ssm.s4_kernel`, :func:`ssm.s4d_kernel`, :func:`ssm.dss_kernel` — structured kernels
  (and :func:`ssm.dss_recurrence`, DSS's recurrent view); :func:`ssm.ema_kernel`, Mega's damped
  EMA;
- :func:`ssm.associative_scan`, :func:`ssm.s5_scan` — the parallel scan of a diagonal linear
  recurrence, and S5's MIMO SSM run by it;
- :mod:`ssm.hippo` — HiPPO operators and their normal-plus-low-rank form.

Accelerated ops (a PyTorch reference and a Triton kernel each, chosen per call by
:mod:`ssm.ops.dispatch`): :func:`ssm.selective_scan` and :func:`ssm.selective_state_update`
(Mamba), :func:`ssm.ssd` and :func:`ssm.ssd_state_update` (Mamba-2), and in :mod:`ssm.ops` the
Vandermonde and Cauchy kernels, the long convolution and the S4D decoding step.

Models: :mod:`ssm.layers` (S4, DSS, S4D, GSS, S5, Liquid-S4, Mega, SGConv, H3, Hyena, RWKV,
Mamba and causal attention, each with its recurrent step, on one residual backbone that also
stacks them into hybrids), trained by :func:`ssm.train.train` on :mod:`ssm.tasks` and
:mod:`ssm.data`, sampled one token at a time by :func:`ssm.generate.generate`.
"""

from . import hippo
from .conv import causal_conv, fft_conv
from .discretize import discretize
from .kernels import dss_kernel, ema_kernel, s4_kernel, s4d_kernel, ssm_kernel
from .ops.cauchy import cauchy
from .ops.fftconv import FFTConvKernel, fftconv, kernel_fft
from .ops.s4d_step import s4d_prefill, s4d_step
from .ops.selective_scan import selective_scan, selective_state_update
from .ops.ssd import ssd, ssd_state_update
from .ops.vandermonde import vandermonde, vandermonde_transpose
from .scan import associative_scan, dss_recurrence, recurrence, s5_scan

__all__ = [
    "FFTConvKernel",
    "associative_scan",
    "cauchy",
    "causal_conv",
    "discretize",
    "dss_kernel",
    "dss_recurrence",
    "ema_kernel",
    "fft_conv",
    "fftconv",
    "hippo",
    "kernel_fft",
    "recurrence",
    "s4_kernel",
    "s4d_kernel",
    "s4d_prefill",
    "s4d_step",
    "s5_scan",
    "selective_scan",
    "selective_state_update",
    "ssd",
    "ssd_state_update",
    "ssm_kernel",
    "vandermonde",
    "vandermonde_transpose",
]
__version__ = "0.1.0"
