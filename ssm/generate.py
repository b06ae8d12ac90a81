"""Autoregressive generation with a per-step model, one token at a time through its state.

A per-step :class:`ssm.layers.Backbone` over tokens (``per_step=True``, ``vocab_size`` set)
predicts the next token at every step; :func:`generate` reads the prompt through
``model.step`` (the prefill), then samples one token at a time and feeds it back. An SSM
carries a state of fixed size from step to step, attention a key-value cache that grows by one
entry per token: the same loop measures what decoding costs each of them. Chapter *2023*.
Dimension letters: B batch, P prompt length, T new tokens, V vocabulary.
"""

from __future__ import annotations

import torch

__all__ = ["generate"]


def _check_model(model: torch.nn.Module) -> None:
    if not getattr(model, "per_step", False) or getattr(model, "vocab_size", None) is None:
        raise ValueError(
            "generate needs a per-step model over tokens: a Backbone built with "
            "per_step=True and vocab_size set"
        )


def _sample(logits: torch.Tensor, temperature: float, gen: torch.Generator) -> torch.Tensor:
    """``logits`` ``(B, V)`` → tokens ``(B,)``: the most likely one at temperature 0, else a
    draw from ``softmax(logits / temperature)``."""
    if temperature == 0:
        return logits.argmax(-1)
    probs = torch.softmax(logits.float() / temperature, dim=-1)  # (B V)
    return torch.multinomial(probs.cpu(), 1, generator=gen).squeeze(-1).to(logits.device)


@torch.no_grad()
def generate(
    model: torch.nn.Module,
    prompt: torch.Tensor,
    n_new: int,
    *,
    temperature: float = 1.0,
    seed: int = 0,
) -> torch.Tensor:
    """Continue ``prompt`` ``(B, P)`` (``P >= 1`` tokens) by ``n_new`` sampled tokens.

    The prompt is read step by step (``model.step``), then each new token is drawn from the
    model's prediction at the previous step (``temperature`` 0: the most likely one) and fed
    back. Returns the tokens ``(B, P + n_new)``, the prompt first. Runs in ``model.eval()``
    (restored afterwards); ``seed`` seeds the draws alone.
    """
    _check_model(model)
    if prompt.ndim != 2 or prompt.shape[1] < 1 or prompt.is_floating_point():
        raise ValueError(
            f"prompt must hold integer tokens of shape (batch, P) with P >= 1, got "
            f"{prompt.dtype} of shape {tuple(prompt.shape)}"
        )
    if isinstance(n_new, bool) or not isinstance(n_new, int) or n_new < 0:
        raise ValueError(f"n_new must be an integer >= 0, got {n_new!r}")
    if not isinstance(temperature, (int, float)) or temperature < 0:
        raise ValueError(f"temperature must be a number >= 0, got {temperature!r}")
    was_training = model.training
    model.eval()
    try:
        device = next(model.parameters()).device
        gen = torch.Generator().manual_seed(seed)
        tokens = prompt.to(device)
        state = model.init_state(prompt.shape[0])
        for t in range(prompt.shape[1]):
            logits, state = model.step(tokens[:, t], state)  # (B V)
        new = []
        for _ in range(n_new):
            nxt = _sample(logits, temperature, gen)  # (B,)
            new.append(nxt)
            logits, state = model.step(nxt, state)
        return torch.cat([tokens, *(t.unsqueeze(1) for t in new)], dim=1)  # (B P+T)
    finally:
        model.train(was_training)
