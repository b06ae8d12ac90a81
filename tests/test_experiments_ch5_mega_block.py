"""Chapter 5's Mega block diagram: the shapes it prints are those the layer computes, for sizes
chosen so that every width differs (a swapped or mis-sized map shows), the attention's score
entries are n² full and k·c² chunked with k = ⌈n/c⌉, and the figure labels every tensor
without labels running into each other or into boxes."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.text import Text

from ssm.experiments import available, mega_block

pytestmark = pytest.mark.usefixtures("one_thread")

# d, N, z, v = 3d and c all different; n not a multiple of c, so the last chunk is padded
SMALL = {
    **mega_block.config("ci"),
    "d_model": 8,
    "d_state": 4,
    "d_qk": 12,
    "v_mult": 3,
    "chunk_size": 16,
    "n": 40,
}


@pytest.fixture(scope="module")
def small():
    return mega_block.run(SMALL)


@pytest.fixture(scope="module")
def ci():
    return mega_block.run(mega_block.config("ci"))


def test_registered_with_two_profiles():
    assert "mega_block" in available()
    assert mega_block.config("ci") != mega_block.config("full")
    with pytest.raises(ValueError, match="profile"):
        mega_block.config("huge")


def test_tensor_shapes_follow_the_config(small):
    n, d, z, v = SMALL["n"], SMALL["d_model"], SMALL["d_qk"], SMALL["v_mult"] * SMALL["d_model"]
    expected = {
        "X": [n, d],
        "X_ema": [n, d],
        "Z": [n, z],
        "Q": [n, z],
        "K": [n, z],
        "V": [n, v],
        "O": [n, v],
        "gamma": [n, v],
        "gamma_O": [n, v],
        "phi": [n, d],
        "H_hat": [n, d],
        "Y": [n, d],
    }
    assert small["shapes"] == expected
    assert set(small["shapes"]) == set(mega_block.SYMBOLS)


def test_parameter_shapes_follow_the_config(small):
    d, N, z = SMALL["d_model"], SMALL["d_state"], SMALL["d_qk"]
    v, c = SMALL["v_mult"] * d, SMALL["chunk_size"]
    p = small["params"]
    assert (p["W_z"], p["W_gamma"], p["W_phi"], p["W_h"]) == ([d, z], [d, v], [d, d], [d, d])
    assert (p["W_v"], p["U_h"]) == ([d, v], [v, d])
    assert p["kappa"] == p["mu"] == [2, z]
    assert p["b_rel"] == [2 * c - 1]  # one bias per relative distance inside a chunk
    assert p["alpha_logit"] == p["delta_logit"] == p["beta"] == p["eta"] == [1, d, N]


def test_chunked_scores_are_k_c_squared(small):
    n, c = SMALL["n"], SMALL["chunk_size"]
    k = math.ceil(n / c)
    att = small["attention"]
    assert att["chunks"] == k == 3  # not n/c = 2.5: the last chunk is padded
    assert att["chunk_queries"] == [k, c, SMALL["d_qk"]]
    assert att["scores_chunk"] == att["formula_chunk"] == k * c * c
    assert att["scores_full"] == att["formula_full"] == n * n
    assert att["scores_chunk"] < att["scores_full"]


def test_a_chunk_longer_than_the_sequence_is_full_attention():
    results = mega_block.run({**SMALL, "chunk_size": 64})
    att = results["attention"]
    assert att["chunks"] == 1
    assert att["scores_chunk"] == att["formula_chunk"] == att["scores_full"] == SMALL["n"] ** 2


def test_mask_images_are_the_causal_and_block_diagonal_masks(small):
    n, c = SMALL["mask_n"], SMALL["mask_chunk"]
    full, chunk = (np.asarray(small["masks"][key]) for key in ("full", "chunk"))
    lower = np.tril(np.ones((n, n), dtype=bool))
    assert ((full == mega_block.ATTENDED) == lower).all()
    assert ((full == mega_block.MASKED) == ~lower).all()
    blocks = np.kron(np.eye(n // c, dtype=bool), np.ones((c, c), dtype=bool))
    assert ((chunk != mega_block.SKIPPED) == blocks).all()
    assert ((chunk == mega_block.ATTENDED) == (blocks & lower)).all()


def test_summary_names_every_tensor_and_both_costs(small):
    text = mega_block.summary(small)
    assert all(symbol in text for symbol in mega_block.SYMBOLS.values())
    assert f"{SMALL['n'] ** 2:,}" in text
    assert "3·16² = 768" in text


def test_plot_labels_every_tensor_without_overlaps(ci):
    fig = mega_block.plot(ci)
    assert isinstance(fig, Figure)
    texts = [t.get_text() for t in fig.findobj(Text)]
    for key, symbol in mega_block.SYMBOLS.items():
        assert any(symbol in t for t in texts), symbol
        assert any(mega_block.dims(ci["shapes"][key]) in t for t in texts), key
    FigureCanvasAgg(fig).draw()
    diagram = fig.axes[0]
    renderer = fig.canvas.get_renderer()
    boxes = [t.get_window_extent(renderer) for t in diagram.texts if t.get_text()]
    for a, b in itertools.combinations(boxes, 2):
        assert not a.overlaps(b)
    patches = [p.get_window_extent(renderer) for p in diagram.patches]
    for text, patch in itertools.product(boxes, patches):
        if patch.contains(*text.get_points().mean(axis=0)):  # a box's own text stays inside
            assert patch.x0 <= text.x0 and text.x1 <= patch.x1
        else:  # an edge's label stays off the boxes
            assert not text.overlaps(patch)
