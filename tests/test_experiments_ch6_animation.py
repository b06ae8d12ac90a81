"""Chapter 2023's selection animation: Δ_t and A are read as the Mamba block's own forward
computes them, the retention is the recurrence's weight of each input, the LTI block's depends
on the lag alone, the results are plain JSON covering both models, the animation is offline,
deterministic and small, and the claim says what the chapter says."""

from __future__ import annotations

import json
import re

import pytest
import torch
import torch.nn.functional as F
from matplotlib.figure import Figure

import ssm.layers.mamba as mamba_module
from ssm.experiments import selection_animation as sa
from ssm.layers import MambaConfig

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def results():
    cfg = sa.config("ci")
    cfg["data"] = {**cfg["data"], "n_train": 64, "n_val": 40}
    cfg["train"] = {**cfg["train"], "steps": 4, "eval_every": 2, "warmup_steps": 1}
    return sa.run({**cfg, "n_ratio": 40})


@pytest.mark.parametrize("selective", ["all", "delta", "bc", "none"])
def test_selection_is_what_the_block_hands_its_scan(monkeypatch, selective):
    torch.manual_seed(0)
    layer = MambaConfig(d_state=4, selective=selective).build(8)
    x = torch.randn(2, 7, 8)
    seen, real = {}, mamba_module.selective_scan

    def scan(u, delta, A, B, C, D, z, dt_bias, **kwargs):
        seen.update(delta=delta, A=A, bias=dt_bias)
        return real(u, delta, A, B, C, D, z, dt_bias, **kwargs)

    monkeypatch.setattr(mamba_module, "selective_scan", scan)
    with torch.no_grad():
        layer(x)
        delta, A = sa.selection(layer, x)
    assert seen, "the block did not call selective_scan"
    torch.testing.assert_close(A, seen["A"])
    expected = F.softplus(seen["delta"].transpose(1, 2) + seen["bias"])  # (B L E)
    torch.testing.assert_close(delta, expected)
    assert delta.shape == (2, 7, layer.d_inner) and A.shape == (layer.d_inner, 4)


def test_retention_is_the_recurrence_weight_of_each_input():
    """``r_t(s)`` equals the state at ``t`` of ``h_t = exp(Δ_t A) h_{t-1} + Δ_t x_t`` fed one
    impulse at ``s`` (``B = 1``), averaged over channels and states, in float64."""
    g = torch.Generator().manual_seed(1)
    L, E, N = 6, 3, 4
    delta = torch.rand(L, E, generator=g, dtype=torch.float64) + 0.05
    A = -torch.rand(E, N, generator=g, dtype=torch.float64) * 3
    matrix = sa.retention_matrix(delta, A)
    for s in range(L):
        h = torch.zeros(E, N, dtype=torch.float64)
        for t in range(L):
            h = torch.exp(delta[t, :, None] * A) * h + (delta[t, :, None] if t == s else 0.0)
            want = h.mean() if t >= s else torch.tensor(0.0, dtype=torch.float64)
            torch.testing.assert_close(matrix[t, s], want, rtol=1e-12, atol=1e-15)


def test_lti_retention_depends_on_the_lag_alone_and_not_on_the_sequence():
    torch.manual_seed(0)
    layer = MambaConfig(d_state=4, selective="none").build(8)
    with torch.no_grad():
        delta, A = sa.selection(layer, torch.randn(2, 9, 8, dtype=torch.float32))
    one, other = (sa.retention_matrix(d.double(), A.double()) for d in delta)
    torch.testing.assert_close(one, other)
    for lag in range(9):
        diagonal = torch.diagonal(one, -lag)
        torch.testing.assert_close(diagonal, diagonal[:1].expand_as(diagonal))


def test_written_mask_follows_the_convolution_window_and_the_ratio_counts_it():
    x = torch.tensor([0, 3, 0, 0, 0, 0, 2, 0, 9, 9])  # K = 2 markers at the end
    written = sa.written_mask(x, 2, 2)
    assert written.tolist() == [False, True, True, False, False, False, True, True]
    r = torch.where(written, 3.0, 1.0)
    assert float(sa.keep_ratio(r, written)) == 3.0


def test_results_are_plain_json_and_cover_both_models(results):
    L, K = results["data"]["length"], results["data"]["n_tokens"]
    assert json.loads(json.dumps(results)) == results
    assert len(results["tokens"]) == L and len(results["written"]) == L - K
    assert results["end"] == L - K - 1 and results["frames"] == list(range(L))
    assert set(results["runs"]) == set(results["views"]) == set(sa.MODELS)
    E = results["config"]["backbone"]["d_model"] * results["config"]["layers"]["lti"]["expand"]
    for key, view in results["views"].items():
        assert torch.tensor(view["delta"]).shape == (L, E)
        R = torch.tensor(view["retention"])  # (L L)
        assert R.shape == (L, L) and (R >= 0).all()
        assert (torch.triu(R, 1) == 0).all(), key
        assert view["ratio"] > 0 and view["ratio_validation"] > 0
    lti = torch.tensor(results["views"]["lti"]["retention"])
    torch.testing.assert_close(torch.diagonal(lti, -3), torch.diagonal(lti, -3)[:1].expand(L - 3))


def test_summary_and_static_frame_cover_both_models(results):
    text = sa.summary(results)
    assert all(label in text for label, _ in sa.MODELS.values())
    assert len(text.splitlines()) == 4 + len(sa.MODELS) + 1
    fig = sa.plot(results)
    assert isinstance(fig, Figure) and len(fig.axes) == 4
    assert all(ax.get_title() for ax in fig.axes)
    heights = [[p.get_height() for p in ax.patches] for ax in fig.axes[2:]]
    assert all(sum(h) > 0 for h in heights)


def test_animation_is_offline_deterministic_and_small(results):
    frames = [0, 10, results["end"]]
    small = dict(results, frames=frames)
    html = sa.animation(small)
    assert "http://" not in html and "https://" not in html
    assert not re.search(r"[0-9a-f]{32}", html), "a uuid-like id is left in the HTML"
    assert html.count("data:image/png;base64,") == len(frames)
    assert html == sa.animation(small)
    per_frame = len(html) / len(frames)
    assert per_frame * len(results["frames"]) < 1.5e6


def hand_made(selective: float | None, lti: float) -> dict:
    views = {"lti": {"ratio_validation": lti}}
    if selective is not None:
        views["selective"] = {"ratio_validation": selective}
    return {"runs": dict.fromkeys(sa.MODELS), "views": views}


def test_claim_on_constructed_results():
    assert sa.selection_keeps_data(hand_made(3.0, 1.0)) is True
    assert sa.selection_keeps_data(hand_made(1.2, 1.0)) is False
    assert sa.selection_keeps_data(hand_made(None, 1.0)) is None
