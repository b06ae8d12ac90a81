"""Generation through the recurrent step: greedy decoding equals the argmax of the full
forward pass re-run on the growing sequence, sampling is seeded, and bad calls are refused."""

from __future__ import annotations

import pytest
import torch

from ssm.generate import generate
from ssm.layers import Backbone, BackboneConfig, S4DConfig

pytestmark = pytest.mark.usefixtures("one_thread")

V, P, T = 7, 5, 6


def model(per_step=True):
    torch.manual_seed(0)
    return Backbone(
        BackboneConfig(d_model=8, n_layers=2), S4DConfig(d_state=4, l_max=P + T),
        n_classes=V, vocab_size=V, per_step=per_step,
    ).double()  # fmt: skip


def test_greedy_decoding_equals_the_forward_argmax_step_by_step():
    m = model()
    prompt = torch.randint(V, (3, P))
    out = generate(m, prompt, T, temperature=0)
    assert out.shape == (3, P + T) and torch.equal(out[:, :P], prompt)
    m.eval()
    seq = prompt
    for _ in range(T):
        nxt = m(seq)[:, -1].argmax(-1, keepdim=True)  # (B 1) from the whole sequence
        seq = torch.cat([seq, nxt], 1)
    assert torch.equal(out, seq)


def test_sampling_is_seeded_and_restores_training_mode():
    m = model().train()
    prompt = torch.randint(V, (4, P))
    a, b = (generate(m, prompt, T, seed=3) for _ in range(2))
    assert torch.equal(a, b) and m.training
    assert not torch.equal(a, generate(m, prompt, T, seed=4))
    assert ((a >= 0) & (a < V)).all()


def test_bad_calls_are_refused():
    with pytest.raises(ValueError, match="per-step model over tokens"):
        generate(model(per_step=False), torch.zeros(1, 2, dtype=torch.long), 3)
    with pytest.raises(ValueError, match="prompt must hold integer tokens"):
        generate(model(), torch.zeros(1, 0, dtype=torch.long), 3)
    with pytest.raises(ValueError, match="n_new must be"):
        generate(model(), torch.zeros(1, 2, dtype=torch.long), -1)
    with pytest.raises(ValueError, match="temperature"):
        generate(model(), torch.zeros(1, 2, dtype=torch.long), 1, temperature=-1)
