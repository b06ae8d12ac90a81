"""The procedural tasks: every label recomputed by an independent rule, determinism, ranges.

The synthetic tasks' targets are recomputed by scanning each sequence in a plain Python loop;
ListOps labels by evaluating the decoded text; Pathfinder labels by a flood fill of the solid
paths (scipy's connected components), which knows nothing of how the generator chose the dots.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage

from ssm import tasks
from ssm.data import IGNORE, SequenceDataset

SMALL = {
    "copying": lambda seed: tasks.copying(40, n_tokens=5, lag=13, vocab_size=7, seed=seed),
    "selective_copying": lambda seed: tasks.selective_copying(
        40, length=48, n_tokens=6, vocab_size=9, seed=seed
    ),
    "induction_heads": lambda seed: tasks.induction_heads(40, length=30, vocab_size=6, seed=seed),
    "associative_recall": lambda seed: tasks.associative_recall(
        40, n_pairs=5, vocab_size=12, seed=seed
    ),
    "mqar": lambda seed: tasks.mqar(40, length=64, n_pairs=6, vocab_size=40, seed=seed),
}


@pytest.fixture(params=sorted(SMALL), ids=sorted(SMALL))
def task(request):
    return request.param, SMALL[request.param]


def rows(ds: SequenceDataset):
    """Each example as plain Python lists (inputs, targets)."""
    return zip(ds.inputs.tolist(), ds.targets.tolist(), strict=True)


# Properties shared by the synthetic tasks ------------------------------------------------------


def test_synthetic_shapes_dtypes_and_ranges(task):
    _, make = task
    ds = make(0)
    assert isinstance(ds, SequenceDataset)
    assert ds.inputs.dtype == torch.int64 and ds.targets.dtype == torch.int64
    assert ds.inputs.ndim == 2 and ds.targets.shape == ds.inputs.shape and ds.per_step
    assert len(ds) == 40
    assert int(ds.inputs.min()) >= 0 and int(ds.inputs.max()) < ds.vocab_size
    scored = ds.targets[ds.targets != IGNORE]
    assert scored.numel() > 0
    assert int(scored.min()) >= 0 and int(scored.max()) < ds.n_classes


def test_synthetic_deterministic_by_seed(task):
    _, make = task
    a, b, c = make(3), make(3), make(4)
    assert torch.equal(a.inputs, b.inputs) and torch.equal(a.targets, b.targets)
    assert not torch.equal(a.inputs, c.inputs)


def test_generators_leave_global_random_state_alone(task):
    _, make = task
    numpy_state = np.random.get_state()  # noqa: NPY002 (the global state is what is checked)
    torch_state = torch.get_rng_state()
    make(0)
    assert np.array_equal(np.random.get_state()[1], numpy_state[1])  # noqa: NPY002
    assert torch.equal(torch.get_rng_state(), torch_state)


# Each synthetic task's labels, recomputed ------------------------------------------------------


def test_copying_targets_are_the_tokens_before_the_marker():
    k, lag, v = 5, 13, 7
    ds = tasks.copying(40, n_tokens=k, lag=lag, vocab_size=v, seed=1)
    assert ds.seq_len == 2 * k + lag + 1
    for x, y in rows(ds):
        marker = x.index(v - 1)
        assert x.count(v - 1) == 1
        data = [t for t in x[:marker] if t != 0]
        assert len(data) == k and all(1 <= t <= v - 2 for t in data)
        assert x[k:marker] == [0] * lag and x[marker + 1 :] == [0] * k
        assert y == [IGNORE] * (marker + 1) + data


def test_selective_copying_targets_skip_the_noise():
    length, k, v = 48, 6, 9
    ds = tasks.selective_copying(40, length=length, n_tokens=k, vocab_size=v, seed=2)
    starts = set()
    for x, y in rows(ds):
        assert x[length - k :] == [v - 1] * k
        data = [t for t in x[: length - k] if t != 0]
        assert len(data) == k and v - 1 not in data
        assert y == [IGNORE] * (length - k) + data
        starts.add(next(i for i, t in enumerate(x) if t != 0))
    assert len(starts) > 3  # the tokens move from sequence to sequence


def test_induction_heads_target_follows_the_first_trigger():
    length, v = 30, 6
    ds = tasks.induction_heads(40, length=length, vocab_size=v, seed=3)
    for x, y in rows(ds):
        first = x.index(v - 1)
        assert x.count(v - 1) == 2 and x[-1] == v - 1 and first <= length - 3
        assert y == [IGNORE] * (length - 1) + [x[first + 1]]


def test_associative_recall_target_is_the_value_of_the_query():
    P, v = 5, 12
    ds = tasks.associative_recall(40, n_pairs=P, vocab_size=v, seed=4)
    assert ds.seq_len == 2 * P + 1
    for x, y in rows(ds):
        keys, values = x[0 : 2 * P : 2], x[1 : 2 * P : 2]
        assert len(set(keys)) == P and all(k < v // 2 for k in keys)
        assert all(v // 2 <= val < v for val in values)
        table = dict(zip(keys, values, strict=True))
        assert y == [IGNORE] * (2 * P) + [table[x[-1]]]


def test_mqar_every_key_is_queried_once_and_answered_by_its_value():
    L, P, v = 64, 6, 40
    ds = tasks.mqar(40, length=L, n_pairs=P, vocab_size=v, seed=5)
    for x, y in rows(ds):
        table = {x[i]: x[i + 1] for i in range(0, 2 * P, 2)}
        assert len(table) == P and len(set(table.values())) == P
        assert all(k < v // 2 <= val for k, val in table.items())
        scored = [t for t in range(L) if y[t] != IGNORE]
        assert len(scored) == P and all(t >= 2 * P and (t - 2 * P) % 2 == 0 for t in scored)
        assert sorted(x[t] for t in scored) == sorted(table)
        assert all(y[t] == table[x[t]] for t in scored)


def test_mqar_queries_follow_the_power_law():
    """With a = 0.01 the gap g is drawn ∝ g^-0.99: far more queries near the context than a
    uniform choice of slots would put there (a quarter of the slots)."""
    L, P = 256, 4
    ds = tasks.mqar(500, length=L, n_pairs=P, vocab_size=64, seed=6)
    slots = (L - 2 * P) // 2
    steps = torch.nonzero(ds.targets != IGNORE)[:, 1]
    gaps = (steps - 2 * P) // 2
    assert float((gaps < slots // 4).float().mean()) > 0.6
    flat = tasks.mqar(500, length=L, n_pairs=P, vocab_size=64, power_a=1.0, seed=6)
    gaps = (torch.nonzero(flat.targets != IGNORE)[:, 1] - 2 * P) // 2
    assert abs(float((gaps < slots // 4).float().mean()) - 0.25) < 0.05


@pytest.mark.parametrize(
    ("call", "argument"),
    [
        (lambda: tasks.copying(4, vocab_size=2), "vocab_size"),
        (lambda: tasks.copying(4, lag=-1), "lag"),
        (lambda: tasks.copying(0), "n"),
        (lambda: tasks.selective_copying(4, length=10, n_tokens=6), "length"),
        (lambda: tasks.selective_copying(4, length=64, vocab_size=2), "vocab_size"),
        (lambda: tasks.induction_heads(4, length=2), "length"),
        (lambda: tasks.induction_heads(4, vocab_size=2), "vocab_size"),
        (lambda: tasks.associative_recall(4, n_pairs=6, vocab_size=11), "vocab_size"),
        (lambda: tasks.mqar(4, length=60, n_pairs=16), "length"),
        (lambda: tasks.mqar(4, length=64, n_pairs=16, vocab_size=30), "vocab_size"),
        (lambda: tasks.mqar(4, power_a=0.0), "power_a"),
        (lambda: tasks.copying(4, seed=-1), "seed"),
        (lambda: tasks.copying(4, n_tokens=2.5), "n_tokens"),
    ],
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_bad_sizes_raise_naming_the_argument(call, argument):
    with pytest.raises(ValueError, match=rf"^{argument} must"):
        call()


# ListOps ---------------------------------------------------------------------------------------

HAND = [
    ("7", 7),
    ("[MAX 2 9 [MIN 4 7 ] 0 ]", 9),  # MIN 4 7 = 4; max(2, 9, 4, 0)
    ("[MIN 5 [MAX 1 3 ] 8 ]", 3),  # MAX 1 3 = 3; min(5, 3, 8)
    ("[SM 9 8 7 ]", 4),  # 24 mod 10
    ("[SM 5 5 ]", 0),  # 10 mod 10
    ("[MED 3 9 1 ]", 3),  # sorted 1 3 9
    ("[MED 1 2 ]", 1),  # (1 + 2) / 2 = 1.5, rounded down
    ("[MED 2 8 4 6 ]", 5),  # sorted 2 4 6 8: (4 + 6) / 2
    ("[MED 9 8 ]", 8),  # 8.5 rounded down
    ("[SM [MAX 9 9 ] [SM 8 3 ] [MED 7 0 ] ]", 3),  # 9 + 1 + 3 = 13
    ("[MIN [MAX [SM 6 6 ] 0 ] [MED 4 4 9 ] ]", 2),  # MAX(2, 0) = 2, MED = 4
    ("( ( [MAX 2 ) 9 ] )", 9),  # LRA's tree form with round brackets
]


@pytest.mark.parametrize(("expression", "value"), HAND, ids=[e for e, _ in HAND])
def test_listops_value_of_hand_computed_expressions(expression, value):
    assert tasks.listops_value(expression) == value


@pytest.mark.parametrize("bad", ["[MAX 1 2", "]", "[MIN ]", "1 2", "[FOO 1 ]", "[SM 12 ]", ""])
def test_listops_value_rejects_malformed_expressions(bad):
    with pytest.raises(ValueError, match="expression"):
        tasks.listops_value(bad)


def structure(text: str) -> tuple[int, int, int]:
    """Operator nesting depth and the fewest and most arguments of an operator, by a scan."""
    depth = deepest = 0
    counts, fewest, most = [], 99, 0
    for token in text.split():
        if token.startswith("["):
            if counts:
                counts[-1] += 1
            counts.append(0)
            depth += 1
            deepest = max(deepest, depth)
        elif token == "]":
            k = counts.pop()
            fewest, most = min(fewest, k), max(most, k)
            depth -= 1
        else:
            counts[-1] += 1
    return deepest, fewest, most


@pytest.mark.parametrize(
    "limits",
    [
        {"max_depth": 3, "max_args": 5, "min_length": 16, "max_length": 64},
        {"max_depth": 6, "max_args": 4, "min_length": 40, "max_length": 120},
    ],
    ids=["depth3", "depth6"],
)
def test_listops_labels_lengths_and_limits(limits):
    n = 300
    ds = tasks.listops(n, seed=0, **limits)
    assert ds.inputs.shape == (n, limits["max_length"]) and ds.targets.shape == (n,)
    assert ds.vocab_size == len(tasks.LISTOPS_TOKENS) == 16 and ds.n_classes == 10
    texts = set()
    for x, label in zip(ds.inputs, ds.targets.tolist(), strict=True):
        text = tasks.listops_text(x)
        texts.add(text)
        assert tasks.listops_value(text) == label
        length = len(text.split())
        assert limits["min_length"] <= length <= limits["max_length"]
        assert x[:length].ne(tasks.LISTOPS_PAD).all() and x[length:].eq(tasks.LISTOPS_PAD).all()
        depth, fewest, most = structure(text)
        assert depth <= limits["max_depth"] - 1 and fewest >= 2 and most <= limits["max_args"]
    assert len(texts) == n  # distinct expressions, as LRA keeps a set
    assert len(set(ds.targets.tolist())) == 10


def test_listops_deterministic_by_seed():
    a = tasks.listops(50, max_depth=3, max_args=5, min_length=10, max_length=40, seed=7)
    b = tasks.listops(50, max_depth=3, max_args=5, min_length=10, max_length=40, seed=7)
    c = tasks.listops(50, max_depth=3, max_args=5, min_length=10, max_length=40, seed=8)
    assert torch.equal(a.inputs, b.inputs) and torch.equal(a.targets, b.targets)
    assert not torch.equal(a.inputs, c.inputs)


def test_listops_text_uses_the_documented_ids():
    ids = [12, 3, 10, 11, 5, 8, 15, 1, 15, 0, 0]  # [MAX 2 9 [MIN 4 7 ] 0 ] then padding
    assert tasks.listops_text(torch.tensor(ids)) == "[MAX 2 9 [MIN 4 7 ] 0 ]"
    with pytest.raises(ValueError, match="tokens"):
        tasks.listops_text(np.array([1, 16]))


@pytest.mark.parametrize(
    ("kwargs", "argument"),
    [
        ({"max_depth": 2, "max_args": 3, "min_length": 6, "max_length": 10}, "min_length"),
        ({"min_length": 30, "max_length": 20}, "max_length"),
        ({"max_depth": 1}, "max_depth"),
        ({"max_args": 1}, "max_args"),
    ],
)
def test_listops_bad_limits_raise_naming_the_argument(kwargs, argument):
    with pytest.raises(ValueError, match=rf"^{argument} must"):
        tasks.listops(4, **kwargs)


def test_listops_too_few_distinct_trees_raise():
    """[OP d d ] is the only shape of length 4: 4 × 100 trees, fewer than asked for."""
    with pytest.raises(RuntimeError, match="distinct"):
        tasks.listops(500, max_depth=2, max_args=2, min_length=4, max_length=4)


# Pathfinder ------------------------------------------------------------------------------------


@pytest.fixture(scope="module", params=[16, 32, 64], ids=lambda s: f"size{s}")
def pathfinder_sample(request):
    size = request.param
    n = 40 if size == 64 else 120
    return size, tasks.pathfinder_images(n, size=size, seed=1, return_geometry=True)


def test_pathfinder_label_is_whether_the_dots_are_connected(pathfinder_sample):
    size, (images, labels, geometry) = pathfinder_sample
    eight = np.ones((3, 3), dtype=bool)
    for image, label, dots, paths in zip(
        images, labels, geometry["dots"], geometry["paths"], strict=True
    ):
        components, _ = ndimage.label(paths > 0, structure=eight)
        (r0, c0), (r1, c1) = np.rint(dots).astype(int)
        assert components[r0, c0] > 0 and components[r1, c1] > 0
        assert (components[r0, c0] == components[r1, c1]) == (label == 1)
        for p in np.unique(paths[paths > 0]):
            assert ndimage.label(paths == p, structure=eight)[1] == 1  # each path in one piece
        assert np.all(paths[image > 0] > 0)  # every lit pixel lies on a path or a dot
        assert image[r0, c0] > 0 and image[r1, c1] > 0  # the dots are drawn
        if size >= 32:  # dots of radius >= 2: their nearest pixel fully lit
            assert image[r0, c0] == 1.0 and image[r1, c1] == 1.0


def test_pathfinder_images_shapes_ranges_and_balance(pathfinder_sample):
    size, (images, labels, geometry) = pathfinder_sample
    n = len(labels)
    assert images.shape == (n, size, size) and images.dtype == np.float32
    assert labels.shape == (n,) and labels.dtype == np.int64
    assert images.min() == 0.0 and images.max() == 1.0
    assert set(labels.tolist()) == {0, 1} and abs(labels.sum() - n / 2) <= 0.5
    assert geometry["dots"].shape == (n, 2, 2) and geometry["paths"].shape == (n, size, size)
    long_paths = np.array([{1, 2} <= set(np.unique(p).tolist()) for p in geometry["paths"]])
    assert long_paths.all()
    if size >= 32:  # the paths are dashed: part of every path's pixels stays dark
        on_path = geometry["paths"] > 0
        assert 0.15 < float((images[on_path] == 0).mean()) < 0.85
        assert np.mean([len(np.unique(p)) - 1 for p in geometry["paths"]]) > 3.5  # distractors


def test_pathfinder_sequences_read_the_images_row_by_row():
    images, labels = tasks.pathfinder_images(12, size=16, seed=4)
    ds = tasks.pathfinder(12, size=16, seed=4)
    assert ds.inputs.shape == (12, 256, 1) and ds.inputs.dtype == torch.float32
    assert ds.d_input == 1 and ds.n_classes == 2 and not ds.per_step
    assert torch.equal(ds.inputs[:, 16 * 3 + 5, 0], torch.from_numpy(images[:, 3, 5]))
    assert torch.equal(ds.targets, torch.from_numpy(labels))


def test_pathfinder_deterministic_by_seed():
    a, la = tasks.pathfinder_images(20, size=32, seed=9)
    b, lb = tasks.pathfinder_images(20, size=32, seed=9)
    c, _ = tasks.pathfinder_images(20, size=32, seed=10)
    assert np.array_equal(a, b) and np.array_equal(la, lb)
    assert not np.array_equal(a, c)


@pytest.mark.parametrize(
    ("kwargs", "argument"),
    [
        ({"size": 12}, "size"),
        ({"n_dashes": 1}, "n_dashes"),
        ({"n_dashes": 60}, "n_dashes"),
        ({"max_turn": 4.0}, "max_turn"),
        ({"n_distractors": -1}, "n_distractors"),
    ],
)
def test_pathfinder_bad_arguments_raise_naming_them(kwargs, argument):
    with pytest.raises(ValueError, match=rf"^{argument}"):
        tasks.pathfinder_images(4, **kwargs)


# The samples experiment ------------------------------------------------------------------------


def test_lra_samples_shows_both_labels_and_true_listops_values():
    from matplotlib.figure import Figure

    from ssm.experiments import lra_samples

    cfg = lra_samples.config("ci")
    results = lra_samples.run(cfg)
    samples = results["pathfinder"]
    small = [s for s in samples if s["size"] == 32]
    assert sorted(s["label"] for s in small) == [0] * cfg["per_label"] + [1] * cfg["per_label"]
    assert [np.shape(s["image"]) for s in samples if s["size"] == 64] == [(64, 64)]
    for e in results["listops"]:
        assert tasks.listops_value(e["text"]) == e["value"]
        assert e["length"] == len(e["text"].split()) <= cfg["listops"]["max_length"]
    lines = lra_samples.summary(results).splitlines()
    assert len(lines) == 1 + cfg["listops"]["n"]
    assert all(
        line.split()[0] == str(e["value"])
        for line, e in zip(lines[1:], results["listops"], strict=True)
    )
    again = lra_samples.run(cfg)
    assert all(
        np.array_equal(a["image"], b["image"])
        for a, b in zip(samples, again["pathfinder"], strict=True)
    )
    fig = lra_samples.plot(results)
    assert isinstance(fig, Figure) and len(fig.axes) == len(samples)
