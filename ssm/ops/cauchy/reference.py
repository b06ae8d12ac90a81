"""The Cauchy kernel of S4, written as the definition.

Gu, Goel & Ré, "Efficiently Modeling Long Sequences with Structured State Spaces" (S4),
arXiv:2111.00396v3, Section 3.3 and Lemma C.3: the generating function of a diagonal-plus-low-rank
SSM at the roots of unity reduces to Cauchy matrix-vector products
``k(z_l) = Σ_n v_n / (z_l - w_n)``. A real SSM has eigenvalues in conjugate pairs, so only one of
each pair is stored and

    out[h, l] = Σ_n  v[h, n] / (z[l] - w[h, n])  +  conj(v[h, n]) / (z[l] - conj(w[h, n])).

Dimension letters: H channels (any batch of independent rows), N stored eigenvalues (half of the
state), L evaluation points. Explained in the book's chapter *Making SSMs fast*, section
"Diagonal kernels: the Vandermonde and Cauchy products".
"""

from __future__ import annotations

import torch


def cauchy_ref(v: torch.Tensor, z: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """``Σ_n v/(z - w) + conj(v)/(z - conj(w))``, materializing the ``(H, L, N)`` terms.

    Args:
        v: ``(H, N)`` complex numerators.
        z: ``(L,)`` complex evaluation points.
        w: ``(H, N)`` complex poles.

    Returns:
        ``(H, L)`` complex.
    """
    vv, ww = v[:, None, :], w[:, None, :]  # (H 1 N)
    zz = z[None, :, None]  # (1 L 1)
    return (vv / (zz - ww) + vv.conj() / (zz - ww.conj())).sum(-1)  # (H L)
