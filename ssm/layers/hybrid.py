"""Hybrid stacks: different sequence layers in one backbone, block by block.

StripedHyena (Poli et al. 2023, Together AI's model card and blog post "StripedHyena-7B") and
the hybrids of the Mamba line (Jamba, Lieber et al. 2024, arXiv:2403.19887; the Mamba-2 paper's
Section 9.2.3, arXiv:2405.21060) interleave a few attention blocks with many blocks of a
recurrent or long-convolution layer: the attention blocks do what a fixed-size state cannot
(exact recall of any earlier token), the others keep the cost near linear in the length.
In the shared backbone a stack is a list of layer configs, one per block
(:class:`ssm.layers.Backbone` takes it as its ``layer_cfg``); :func:`stripes` spells the list
as a pattern of letters. RWKV's block, time mixing then channel mixing each in its own
residual, is such a stack too. Chapter *2023*.
"""

from __future__ import annotations

from typing import Any

__all__ = ["stripes"]


def stripes(pattern: str, **layers: Any) -> list[Any]:
    """The layer configs of a stack, one per letter of ``pattern``.

    ``stripes("MMMA", M=MambaConfig(), A=AttentionConfig())`` is four blocks, attention in the
    fourth: a 3:1 hybrid. Give the result to :class:`ssm.layers.Backbone` with
    ``n_layers=len(pattern)``.
    """
    if not isinstance(pattern, str) or not pattern:
        raise ValueError(f"pattern must be a non-empty string of layer letters, got {pattern!r}")
    unknown = sorted(set(pattern) - set(layers))
    if unknown:
        raise ValueError(
            f"pattern {pattern!r} uses letters {unknown} that name no layer; given: "
            f"{sorted(layers)}"
        )
    return [layers[letter] for letter in pattern]
