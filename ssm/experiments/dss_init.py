"""Chapter 3: DSS's initialization, read off a freshly built layer.

DSS (§3.4) initializes

- ``Λ`` with the eigenvalues of the normal part of HiPPO-LegS (``A + PᵀP`` of
  :func:`ssm.hippo.nplr`): all on the line ``Re λ = -1/2``, one of each conjugate pair kept;
- ``W`` with standard normal real and imaginary parts;
- ``log Δ`` uniform in ``[log 1e-3, log 1e-1]``, one step per channel.

This experiment builds a :class:`ssm.layers.DSS` layer (DSS-exp and DSS-softmax) and checks each
of the three against its definition: ``Λ`` against the eigenvalues computed here from
:func:`ssm.hippo.nplr`, the moments of ``W``, the range and spread of ``log Δ``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from .. import hippo, plotting
from ..layers import DSSConfig
from ._common import check_profile, seed_everything


def config(profile: str = "ci") -> dict[str, Any]:
    check_profile(profile)
    return {
        "profile": profile,
        "seed": 0,
        "d_state": 64,  # N: N/2 = 32 complex eigenvalues per channel
        "d_model": 256 if profile == "ci" else 4096,  # channels H
        "dt_min": 1e-3,
        "dt_max": 1e-1,
    }


def legs_normal_eigenvalues(N: int) -> np.ndarray:
    """The ``N/2`` eigenvalues of positive imaginary part of HiPPO-LegS's normal part, sorted by
    imaginary part: ``(N/2,)`` complex."""
    w = hippo.nplr("legs", N)[0].numpy()  # (N)
    w = w[w.imag > 0]  # (N/2)
    return w[np.argsort(w.imag)]


def run(cfg: dict[str, Any]) -> dict[str, Any]:
    seed_everything(cfg["seed"])
    ref = legs_normal_eigenvalues(cfg["d_state"])  # (N2)
    layers = {}
    for variant in ("exp", "softmax"):
        layer_cfg = DSSConfig(d_state=cfg["d_state"], l_max=16, variant=variant,
                              dt_min=cfg["dt_min"], dt_max=cfg["dt_max"])  # fmt: skip
        layer = layer_cfg.build(cfg["d_model"])
        Lambda, W, dt = (t.detach() for t in layer.kernel.system())  # (H N2) (1 H N2) (H)
        Lambda = Lambda.to(torch.complex128).numpy()  # (H N2)
        order = np.argsort(Lambda.imag, axis=-1)  # (H N2)
        Lambda = np.take_along_axis(Lambda, order, -1)  # (H N2) by imaginary part
        log_dt = np.log(dt.double().numpy())  # (H)
        W = W.to(torch.complex128).numpy().ravel()  # (H N2)
        layers[variant] = {
            "lambda_err": float(np.abs(Lambda - ref).max() / np.abs(ref).max()),
            "W_re_mean": float(W.real.mean()),
            "W_re_std": float(W.real.std()),
            "W_im_std": float(W.imag.std()),
            "log_dt": log_dt,
        }
    return {"eigenvalues": ref, "d_state": cfg["d_state"], "d_model": cfg["d_model"],
            "dt_min": cfg["dt_min"], "dt_max": cfg["dt_max"], "layers": layers}  # fmt: skip


def summary(results: dict[str, Any]) -> str:
    """Per variant: ``Λ`` against LegS's normal eigenvalues, the moments of ``W`` and the range
    of ``Δ`` (with the standard deviation of ``log Δ`` beside that of a uniform law)."""
    lo, hi = math.log(results["dt_min"]), math.log(results["dt_max"])
    lam = np.asarray(results["eigenvalues"])
    lines = [
        f"N = {results['d_state']}: {len(lam)} eigenvalues, Re λ in "
        f"[{lam.real.min():.3f}, {lam.real.max():.3f}], Im λ in "
        f"[{lam.imag.min():.2f}, {lam.imag.max():.2f}]",
        f"{'variant':<8} {'Λ vs LegS':>10} {'mean Re W':>10} {'std Re W':>9} {'std Im W':>9} "
        f"{'Δ min':>8} {'Δ max':>7} {'std log Δ':>10} {'uniform':>8}",
    ]
    for variant, r in results["layers"].items():
        err = "< 1e-6" if r["lambda_err"] < 1e-6 else f"{r['lambda_err']:.1e}"
        log_dt = np.asarray(r["log_dt"])
        lines.append(
            f"{variant:<8} {err:>10} {r['W_re_mean']:>10.2f} {r['W_re_std']:>9.2f} "
            f"{r['W_im_std']:>9.2f} {np.exp(log_dt.min()):>8.4f} {np.exp(log_dt.max()):>7.4f} "
            f"{log_dt.std():>10.2f} {(hi - lo) / math.sqrt(12):>8.2f}"
        )
    return "\n".join(lines)


@plotting.styled
def plot(results: dict[str, Any]):
    """(a) The initial ``Λ`` in the complex plane; (b) the histogram of the initial ``Δ`` of the
    DSS-exp layer's channels, on a log axis."""
    fig, (a, b) = plotting.subplots(1, 2, height=3.0)
    lam = np.asarray(results["eigenvalues"])
    a.plot(lam.real, lam.imag, "o", color=plotting.PALETTE["blue"], ms=4)
    a.set_xlim(-1.5, 0.5)
    a.axvline(0, color=plotting.PALETTE["black"], lw=0.8)
    a.set_yscale("log")
    plotting.label(a, "Re λ", "Im λ (log scale)", f"Λ at init: HiPPO-LegS's normal part, N = "
                   f"{results['d_state']}")  # fmt: skip
    log_dt = np.asarray(results["layers"]["exp"]["log_dt"])
    bins = np.logspace(math.log10(results["dt_min"]), math.log10(results["dt_max"]), 21)
    b.hist(np.exp(log_dt), bins=bins, color=plotting.PALETTE["green"], alpha=0.8)
    b.set_xscale("log")
    plotting.label(b, "Δ", "channels", f"Δ at init: log-uniform, H = {results['d_model']}")
    plotting.panel_letters([a, b])
    return fig
