"""Procedurally generated tasks: the synthetic recall tasks of the SSM papers, and ListOps and
Pathfinder of the Long Range Arena.

Every generator returns a :class:`ssm.data.SequenceDataset`, is deterministic given ``seed``
(one local :func:`numpy.random.default_rng`, no global state), is vectorized over examples,
takes its sizes as keyword arguments and raises a ``ValueError`` naming the argument when the
sizes cannot hold the task.

Token layout of the synthetic tasks (inputs ``(n, L)`` int64, targets ``(n, L)`` int64):

- ``0`` is the blank (or noise) token where a task has one, and special tokens take the top
  ids: the marker of :func:`copying` and :func:`selective_copying` and the trigger of
  :func:`induction_heads` are ``vocab_size - 1``;
- data tokens lie in between, ``[1, vocab_size - 1)`` for the copying tasks;
- the recall tasks split the vocabulary: keys in ``[0, vocab_size // 2)``, values in
  ``[vocab_size // 2, vocab_size)``;
- targets are input token ids (``n_classes = vocab_size``), and :data:`ssm.data.IGNORE` at every
  step that is not scored.

The Long Range Arena tasks (Tay et al. 2021, arXiv 2011.04006): :func:`listops` gives tokens
``(n, max_length)`` padded with :data:`LISTOPS_PAD` (ids in :data:`LISTOPS_TOKENS`) and one class
per sequence; :func:`pathfinder` gives images read pixel by pixel, ``(n, size * size, 1)``
float32 in ``[0, 1]``, and one label per image.

Dimension letters: n examples, L length, K tokens to remember, P key-value pairs, S image side.
The chapter on S4 v2 and the Long Range Arena uses ListOps and Pathfinder; the chapters on
selection (Mamba) and on Mamba-2 use the recall tasks.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from .data import IGNORE, SequenceDataset

__all__ = [
    "LISTOPS_PAD",
    "LISTOPS_TOKENS",
    "associative_recall",
    "copying",
    "induction_heads",
    "listops",
    "listops_text",
    "listops_value",
    "mqar",
    "pathfinder",
    "pathfinder_images",
    "selective_copying",
]


# Argument checks -------------------------------------------------------------------------------


def _int_at_least(name: str, value: object, low: int, why: str = "") -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        reason = f" ({why})" if why else ""
        raise ValueError(f"{name} must be an integer >= {low}{reason}, got {value!r}")
    return int(value)


def _rng(seed: object) -> np.random.Generator:
    _int_at_least("seed", seed, 0)
    return np.random.default_rng(int(seed))


def _distinct(rng: np.random.Generator, n: int, k: int, high: int) -> np.ndarray:
    """``(n, k)`` integers of ``[0, high)``, distinct within each row, a uniform ordered sample.

    Rows with a repeat are drawn again when repeats are rare (``2 k² <= high``); otherwise each
    row is the first ``k`` entries of a random permutation.
    """
    if 2 * k * k > high:
        return np.argsort(rng.random((n, high)), axis=1)[:, :k]
    out = rng.integers(high, size=(n, k))
    while True:
        s = np.sort(out, axis=1)
        bad = np.flatnonzero((s[:, 1:] == s[:, :-1]).any(axis=1))
        if bad.size == 0:
            return out
        out[bad] = rng.integers(high, size=(bad.size, k))


def _per_step(
    inputs: np.ndarray, targets: np.ndarray, vocab_size: int, name: str
) -> SequenceDataset:
    return SequenceDataset(
        torch.from_numpy(inputs.astype(np.int64, copy=False)),
        torch.from_numpy(targets.astype(np.int64, copy=False)),
        n_classes=vocab_size,
        vocab_size=vocab_size,
        name=name,
    )


# Synthetic recall tasks ------------------------------------------------------------------------


def copying(
    n: int, *, n_tokens: int = 10, lag: int = 100, vocab_size: int = 10, seed: int = 0
) -> SequenceDataset:
    """The copying memory task: remember ``K`` tokens across ``lag`` blank steps.

    Hochreiter & Schmidhuber (1997), in the form of Arjovsky, Shah & Bengio (2016, arXiv
    1511.06464, §4.1) that the HiPPO and S4 papers use. Each sequence, of length
    ``L = 2 K + lag + 1``, is

    ``x = (d_1 … d_K, 0 × lag, vocab_size - 1, 0 × K)``

    with data tokens ``d_k`` uniform in ``[1, vocab_size - 1)``; the marker ``vocab_size - 1``
    says "now repeat". The targets are ``d_1 … d_K`` at the last ``K`` steps (the blanks after
    the marker) and :data:`~ssm.data.IGNORE` elsewhere: a causal model must output ``d_k`` at step
    ``K + lag + k``, ``lag + K`` steps after it saw it.

    Args:
        n: number of sequences.
        n_tokens: ``K``, the tokens to copy.
        lag: blank steps between the last data token and the marker (Arjovsky et al.'s ``T - 1``).
        vocab_size: blank ``0``, data ``1 … vocab_size - 2``, marker ``vocab_size - 1``.

    Returns:
        inputs ``(n, L)`` int64 and targets ``(n, L)``, ``n_classes = vocab_size``.
    """
    n = _int_at_least("n", n, 1)
    k = _int_at_least("n_tokens", n_tokens, 1)
    lag = _int_at_least("lag", lag, 0)
    v = _int_at_least("vocab_size", vocab_size, 3, "a blank, a marker and one data token")
    rng = _rng(seed)
    L = 2 * k + lag + 1
    tokens = rng.integers(1, v - 1, size=(n, k))  # (n, K)
    x = np.zeros((n, L), dtype=np.int64)
    x[:, :k] = tokens
    x[:, k + lag] = v - 1
    y = np.full((n, L), IGNORE, dtype=np.int64)
    y[:, L - k :] = tokens
    return _per_step(x, y, v, "copying")


def selective_copying(
    n: int, *, length: int = 4096, n_tokens: int = 16, vocab_size: int = 16, seed: int = 0
) -> SequenceDataset:
    """Selective copying: copy the data tokens scattered among noise, skipping the noise.

    Gu & Dao (2023), Mamba (arXiv 2312.00752, §3.1 Fig. 2 and App. E.1, where ``L = 4096``, a
    vocabulary of 16 and 16 tokens to memorize), laid out as the S4 authors' copying generator
    with ``variable=True``. The first ``L - K`` steps hold ``K`` data tokens, uniform in
    ``[1, vocab_size - 1)``, at random distinct positions ``p_1 < … < p_K``, and the blank ``0``
    everywhere else; the last ``K`` steps are markers ``vocab_size - 1``:

    ``x = (… d_1 … d_2 … d_K …, m × K)``,  target at step ``L - K + k - 1`` is ``d_k``.

    Where the tokens sit varies from sequence to sequence, so a time-invariant convolution
    cannot pick them out: the model must select by content.

    Args:
        n: number of sequences.
        length: ``L``, the whole sequence, markers included (at least ``2 K``).
        n_tokens: ``K``, the data tokens to copy.
        vocab_size: blank ``0``, data ``1 … vocab_size - 2``, marker ``vocab_size - 1``.

    Returns:
        inputs ``(n, L)`` int64 and targets ``(n, L)``, scored at the ``K`` marker steps.
    """
    n = _int_at_least("n", n, 1)
    k = _int_at_least("n_tokens", n_tokens, 1)
    L = _int_at_least("length", length, 2 * k, f"room for the {k} tokens and {k} markers")
    v = _int_at_least("vocab_size", vocab_size, 3, "a blank, a marker and one data token")
    rng = _rng(seed)
    tokens = rng.integers(1, v - 1, size=(n, k))  # (n, K)
    where = np.sort(_distinct(rng, n, k, L - k), axis=1)  # (n, K) positions in the prefix
    x = np.zeros((n, L), dtype=np.int64)
    np.put_along_axis(x, where, tokens, axis=1)
    x[:, L - k :] = v - 1
    y = np.full((n, L), IGNORE, dtype=np.int64)
    y[:, L - k :] = tokens
    return _per_step(x, y, v, "selective copying")


def induction_heads(
    n: int, *, length: int = 256, vocab_size: int = 16, seed: int = 0
) -> SequenceDataset:
    """Induction heads: after the trigger, recall the token that followed it the first time.

    Olsson et al. (2022, arXiv 2209.11895); Gu & Dao (2023), Mamba (arXiv 2312.00752, §4.1.2,
    trained at ``L = 256`` with a vocabulary of 16). Every step holds a token uniform in
    ``[0, vocab_size - 1)``, except that the trigger ``t = vocab_size - 1`` appears twice: at a
    uniform position ``p ∈ [0, L - 3]`` and at the last step ``L - 1``. The one target is at the
    last step: ``y[L - 1] = x[p + 1]``, the token after the first trigger.

    Args:
        n: number of sequences.
        length: ``L`` (at least 3: the trigger, the token after it, the trigger again).
        vocab_size: ordinary tokens ``0 … vocab_size - 2`` and the trigger (at least 3).

    Returns:
        inputs ``(n, L)`` int64 and targets ``(n, L)``, scored at the last step only.
    """
    n = _int_at_least("n", n, 1)
    L = _int_at_least("length", length, 3, "the trigger, its successor and the trigger again")
    v = _int_at_least("vocab_size", vocab_size, 3, "two ordinary tokens and the trigger")
    rng = _rng(seed)
    x = rng.integers(v - 1, size=(n, L))  # (n, L) ordinary tokens
    p = rng.integers(L - 2, size=n)  # (n,) first trigger, in [0, L - 3]
    rows = np.arange(n)
    x[rows, p] = v - 1
    x[:, L - 1] = v - 1
    y = np.full((n, L), IGNORE, dtype=np.int64)
    y[:, L - 1] = x[rows, p + 1]
    return _per_step(x, y, v, "induction heads")


def associative_recall(
    n: int, *, n_pairs: int = 8, vocab_size: int = 20, seed: int = 0
) -> SequenceDataset:
    """Associative recall: key-value pairs, then one key; output its value.

    Dao, Fu et al. (2023), H3 (arXiv 2212.14052, §3.1 and Table 1, vocabulary 20). With ``P``
    pairs of distinct keys ``k_i`` uniform in ``[0, vocab_size // 2)`` and values ``v_i`` uniform
    in ``[vocab_size // 2, vocab_size)``,

    ``x = (k_1, v_1, …, k_P, v_P, k_q)``,  ``L = 2 P + 1``,  ``y[L - 1] = v_q``,

    the query ``q`` uniform among the ``P`` pairs.

    Args:
        n: number of sequences.
        n_pairs: ``P`` (at most ``vocab_size // 2``, so the keys can be distinct).
        vocab_size: keys in the lower half, values in the upper half.

    Returns:
        inputs ``(n, 2 P + 1)`` int64 and targets of the same shape, scored at the last step.
    """
    n = _int_at_least("n", n, 1)
    P = _int_at_least("n_pairs", n_pairs, 1)
    v = _int_at_least("vocab_size", vocab_size, 2 * P, f"{P} distinct keys in its lower half")
    rng = _rng(seed)
    half = v // 2
    keys = _distinct(rng, n, P, half)  # (n, P)
    values = rng.integers(half, v, size=(n, P))  # (n, P)
    q = rng.integers(P, size=n)  # (n,)
    rows = np.arange(n)
    x = np.empty((n, 2 * P + 1), dtype=np.int64)
    x[:, 0 : 2 * P : 2] = keys
    x[:, 1 : 2 * P : 2] = values
    x[:, 2 * P] = keys[rows, q]
    y = np.full(x.shape, IGNORE, dtype=np.int64)
    y[:, 2 * P] = values[rows, q]
    return _per_step(x, y, v, "associative recall")


def mqar(
    n: int,
    *,
    length: int = 256,
    n_pairs: int = 16,
    vocab_size: int = 8192,
    power_a: float = 0.01,
    seed: int = 0,
) -> SequenceDataset:
    """Multi-query associative recall (MQAR): every key of the context is asked once, later.

    Arora et al. (2023), Zoology (arXiv 2312.04927, §3 and App. E.1, its ``multiquery_ar``
    generator), the recall task of Dao & Gu (2024), Mamba-2 (arXiv 2405.21060, §9.1). The first
    ``2 P`` steps are ``P`` pairs ``(k_i, v_i)`` with distinct keys in ``[0, vocab_size // 2)``
    and distinct values in ``[vocab_size // 2, vocab_size)``. The remaining ``L - 2 P`` steps
    are cut into ``(L - 2 P) // 2`` slots of two steps; each key is asked once, at the first step
    of slot ``g``, ``g`` drawn without replacement with probability ``∝ g^(a - 1)``
    (``g = 1, 2, …``, a power law that puts most queries close to the context), and the target at
    that step is the key's value. Every other step holds a random token (Zoology's
    ``random_non_queries``), not scored.

    Args:
        n: number of sequences.
        length: ``L`` (at least ``4 P``, as Zoology requires).
        n_pairs: ``P``, the key-value pairs (and queries) per sequence.
        vocab_size: keys in the lower half, values in the upper half (``P`` of each distinct).
        power_a: the exponent ``a > 0`` of the query gaps.

    Returns:
        inputs ``(n, L)`` int64 and targets ``(n, L)``, scored at the ``P`` query steps.
    """
    n = _int_at_least("n", n, 1)
    P = _int_at_least("n_pairs", n_pairs, 1)
    L = _int_at_least("length", length, 4 * P, f"{P} pairs and {P} query slots of two steps")
    v = _int_at_least("vocab_size", vocab_size, 2 * P, f"{P} distinct keys and values")
    if not isinstance(power_a, (int, float)) or not power_a > 0:
        raise ValueError(f"power_a must be a number > 0, got {power_a!r}")
    rng = _rng(seed)
    half = v // 2
    keys = _distinct(rng, n, P, half)  # (n, P)
    values = half + _distinct(rng, n, P, v - half)  # (n, P)
    slots = (L - 2 * P) // 2
    log_p = (power_a - 1.0) * np.log(np.arange(1, slots + 1))  # (slots,) power law, unnormalized
    gumbel = -np.log(-np.log(rng.random((n, slots))))  # (n, slots)
    # The top P of log p + Gumbel noise: P slots drawn without replacement with probability ∝ p.
    gaps = np.argsort(-(log_p + gumbel), axis=1)[:, :P]  # (n, P)
    where = 2 * P + 2 * gaps  # (n, P) query steps
    x = rng.integers(v, size=(n, L))  # (n, L) random fill
    x[:, 0 : 2 * P : 2] = keys
    x[:, 1 : 2 * P : 2] = values
    np.put_along_axis(x, where, keys, axis=1)
    y = np.full((n, L), IGNORE, dtype=np.int64)
    np.put_along_axis(y, where, values, axis=1)
    return _per_step(x, y, v, "MQAR")


# ListOps ---------------------------------------------------------------------------------------

#: The ListOps vocabulary, by token id: padding, the digits, the four operators, the closing
#: bracket. Text form: ``[MAX 2 9 [MIN 4 7 ] 0 ]``.
LISTOPS_TOKENS: tuple[str, ...] = (
    "<pad>",
    *(str(d) for d in range(10)),
    "[MIN",
    "[MAX",
    "[MED",
    "[SM",
    "]",
)
#: Token id of the padding after a ListOps expression.
LISTOPS_PAD = 0
_DIGIT0 = 1  # id of the digit 0; digit d is d + 1
_OP0 = 11  # id of the first operator; LRA's order MIN, MAX, MED, SM
_END = 15
_OPERATOR_P = 0.25  # LRA's VALUE_P: a node above the depth limit is an operator w.p. 0.25


def _median(values: list[int]) -> int:
    return int(np.median(values))


_LISTOPS_OPS = {
    "[MIN": min,
    "[MAX": max,
    "[MED": _median,
    "[SM": lambda values: sum(values) % 10,
}


def listops_value(expression: str) -> int:
    """The value of a ListOps expression in text form, such as ``[MAX 2 9 [MIN 4 7 ] 0 ] = 9``.

    The operators of Nangia & Bowman (2018, arXiv 1804.06028) as the Long Range Arena uses them
    (Tay et al. 2021, arXiv 2011.04006, §3.1): ``MAX`` and ``MIN`` of their arguments, ``MED``
    their median and ``SM`` their sum modulo 10. ``MED`` follows LRA's generator,
    ``int(np.median(args))``: for an even number of arguments, the mean of the two middle
    values rounded down (``[MED 1 2 ] = 1``). Tokens are separated by spaces; round brackets (the
    tree form of LRA's files) are ignored.
    """
    stack: list[list[int]] = [[]]
    operators: list[str] = []
    for token in expression.replace("(", " ").replace(")", " ").split():
        if token in _LISTOPS_OPS:
            operators.append(token)
            stack.append([])
        elif token == "]":
            if not operators:
                raise ValueError(f"expression has a ']' without an operator: {expression!r}")
            args = stack.pop()
            if not args:
                raise ValueError(f"expression applies {operators[-1]} to nothing: {expression!r}")
            stack[-1].append(_LISTOPS_OPS[operators.pop()](args))
        elif token.isdigit() and len(token) == 1:
            stack[-1].append(int(token))
        else:
            raise ValueError(f"expression has an unknown token {token!r}: {expression!r}")
    if operators or len(stack[0]) != 1:
        raise ValueError(f"expression must be one complete term, got {expression!r}")
    return stack[0][0]


def listops_text(tokens: torch.Tensor | np.ndarray) -> str:
    """The text form of one row of :func:`listops` tokens ``(L,)``, padding dropped."""
    ids = np.asarray(tokens).ravel()
    if ids.size and (ids.min() < 0 or ids.max() >= len(LISTOPS_TOKENS)):
        raise ValueError(
            f"tokens must be ListOps ids in [0, {len(LISTOPS_TOKENS)}), got range "
            f"[{ids.min()}, {ids.max()}]"
        )
    return " ".join(LISTOPS_TOKENS[i] for i in ids if i != LISTOPS_PAD)


def _listops_max_length(max_depth: int, max_args: int) -> int:
    """Tokens of the largest tree within the limits (an operator with ``max_args`` arguments
    at every depth below ``max_depth``)."""
    longest = 1
    for _ in range(max_depth - 1):
        longest = 2 + max_args * longest
    return longest


def _listops_trees(
    rng: np.random.Generator, m: int, max_depth: int, max_args: int, max_length: int
) -> tuple[list[dict[str, np.ndarray]], np.ndarray]:
    """``m`` random trees drawn level by level, as LRA's ``generate_tree`` draws them one by one.

    The root has depth 1; a node at depth ``d < max_depth`` is an operator with probability
    1/4 (uniform among the four, with ``U{2, …, max_args}`` arguments), else a digit
    ``U{0, …, 9}``; at ``max_depth`` it is a digit. Trees already longer than ``max_length``
    stop growing (they will be rejected). Each level lists its nodes with the tree ``tree``,
    ``token`` id, ``n_args`` (children drawn, 0 for a digit or a stopped tree) and ``parent``
    (index in the level above); the children of a node are consecutive. Also returns the
    length ``(m,)`` of each tree in tokens (a stopped tree's: what was drawn, past the limit).
    """
    levels = []
    tree = np.arange(m)  # (nodes,) which tree each node of the level belongs to
    parent = np.full(m, -1)
    length = np.zeros(m, dtype=np.int64)  # (m,) tokens so far: 1 per digit, 2 per operator
    for depth in range(1, max_depth + 1):
        k = tree.size
        is_op = rng.random(k) < _OPERATOR_P if depth < max_depth else np.zeros(k, dtype=bool)
        token = np.where(is_op, _OP0 + rng.integers(4, size=k), _DIGIT0 + rng.integers(10, size=k))
        n_args = np.where(is_op, rng.integers(2, max_args + 1, size=k), 0)
        length += np.bincount(tree, weights=1 + is_op, minlength=m).astype(np.int64)
        n_args[length[tree] > max_length] = 0  # a tree too long already grows no further
        levels.append({"tree": tree, "token": token, "n_args": n_args, "parent": parent})
        if not n_args.any():
            break
        parent = np.repeat(np.arange(k), n_args)  # (children,)
        tree = tree[parent]
    return levels, length


def _listops_select(
    levels: list[dict[str, np.ndarray]], keep: np.ndarray
) -> list[dict[str, np.ndarray]]:
    """The levels of the trees ``keep`` only, renumbered ``0 … len(keep) - 1``."""
    new_tree = np.full(levels[0]["tree"].size, -1)
    new_tree[keep] = np.arange(keep.size)
    out, index_above = [], None
    for level in levels:
        mine = new_tree[level["tree"]] >= 0
        parent = level["parent"][mine]
        out.append(
            {
                "tree": new_tree[level["tree"][mine]],
                "token": level["token"][mine],
                "n_args": level["n_args"][mine],
                "parent": parent if index_above is None else index_above[parent],
            }
        )
        index_above = np.cumsum(mine) - 1  # old index in this level -> new index
    return [level for level in out if level["tree"].size]


def _listops_fold(levels: list[dict[str, np.ndarray]]) -> None:
    """Add each node's ``value`` and ``size`` (tokens of its subtree), bottom-up."""
    below = None
    for level in reversed(levels):
        is_op = level["token"] >= _OP0
        value = level["token"] - _DIGIT0  # digits' own values; operators' set below
        size = np.ones(level["token"].size, dtype=np.int64) + is_op
        if below is not None and below["parent"].size:
            counts = level["n_args"]
            grown = np.flatnonzero(counts)  # (grown,) nodes with children
            start = (np.cumsum(counts) - counts)[grown]  # (grown,) first child of each
            child = below["value"]  # (children,)
            size += np.bincount(below["parent"], weights=below["size"], minlength=size.size).astype(
                np.int64
            )
            order = np.lexsort((child, below["parent"]))  # children sorted within each parent
            ranked = child[order]
            k = counts[grown]
            results = np.stack(
                [
                    np.minimum.reduceat(child, start),
                    np.maximum.reduceat(child, start),
                    (ranked[start + (k - 1) // 2] + ranked[start + k // 2]) // 2,
                    np.add.reduceat(child, start) % 10,
                ]
            )  # (4, grown) every operator's result; pick the node's own
            value[grown] = results[level["token"][grown] - _OP0, np.arange(grown.size)]
        level["value"], level["size"] = value, size
        below = level


def _listops_rows(levels: list[dict[str, np.ndarray]], max_length: int) -> np.ndarray:
    """Token rows ``(trees, max_length)`` of folded trees, in prefix order.

    A node at position ``q`` has its first child at ``q + 1``, each next child after the
    subtree of the one before, and its closing bracket at ``q + size - 1``.
    """
    m = levels[0]["tree"].size
    out = np.full((m, max_length), LISTOPS_PAD, dtype=np.int64)
    position = np.zeros(m, dtype=np.int64)  # (trees,) the roots come first
    for depth, level in enumerate(levels):
        if depth:
            above = levels[depth - 1]
            size, par = level["size"], level["parent"]
            ahead = np.cumsum(size) - size  # (nodes,) sizes of all earlier nodes of the level
            first = np.cumsum(above["n_args"]) - above["n_args"]  # (above,) first child index
            position = position[par] + 1 + ahead - ahead[first[par]]  # (nodes,)
        rows = level["tree"]
        out[rows, position] = level["token"]
        ops = level["token"] >= _OP0
        out[rows[ops], (position + level["size"] - 1)[ops]] = _END
    return out


def _listops_draw(
    rng: np.random.Generator,
    m: int,
    max_depth: int,
    max_args: int,
    min_length: int,
    max_length: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Of ``m`` random trees, the token rows ``(kept, max_length)`` and values ``(kept,)`` of
    those whose length lies in ``[min_length, max_length]``."""
    levels, length = _listops_trees(rng, m, max_depth, max_args, max_length)
    keep = np.flatnonzero((length >= min_length) & (length <= max_length))  # (kept,)
    if keep.size == 0:
        return np.zeros((0, max_length), dtype=np.int64), np.zeros(0, dtype=np.int64)
    levels = _listops_select(levels, keep)
    _listops_fold(levels)
    return _listops_rows(levels, max_length), levels[0]["value"]


def listops(
    n: int,
    *,
    max_depth: int = 10,
    max_args: int = 10,
    min_length: int = 500,
    max_length: int = 2000,
    seed: int = 0,
) -> SequenceDataset:
    """ListOps (Nangia & Bowman 2018) as in the Long Range Arena (Tay et al. 2021, arXiv
    2011.04006, §3.1): the value 0–9 of a nested expression such as ``[MAX 2 9 [MIN 4 7 ] 0 ]``.

    Trees are drawn as LRA's generator (``lra_benchmarks/data/listops.py``) draws them: from
    the root at depth 1, each node above ``max_depth`` is an operator (``MIN``, ``MAX``, ``MED``
    or ``SM``) with probability 1/4 and ``U{2, …, max_args}`` arguments, else a digit; so at
    most ``max_depth - 1`` operators are nested. A tree is kept when its length in tokens (2 per
    operator, 1 per digit) is in ``[min_length, max_length]`` (LRA's script: strictly between
    500 and 2000) and it differs from the trees kept before, as LRA keeps a set. Its label is its
    value (:func:`listops_value`, ``MED`` rounded down as LRA's ``int(np.median)``).

    Token ids are :data:`LISTOPS_TOKENS`: ``0`` padding, ``1 + d`` the digit ``d``, ``11 … 14``
    the operators ``[MIN [MAX [MED [SM``, ``15`` the closing bracket ``]``. Rows are written in
    prefix order and padded to ``max_length``.

    Args:
        n: number of expressions.
        max_depth: depth limit (LRA: 10).
        max_args: most arguments of an operator (LRA: 10).
        min_length, max_length: bounds on the length in tokens (LRA: 500, 2000).

    Returns:
        inputs ``(n, max_length)`` int64, ``vocab_size = 16``, and targets ``(n,)`` in ``0 … 9``.
    """
    n = _int_at_least("n", n, 1)
    max_depth = _int_at_least("max_depth", max_depth, 2, "room for one operator above digits")
    max_args = _int_at_least("max_args", max_args, 2)
    min_length = _int_at_least("min_length", min_length, 1)
    max_length = _int_at_least("max_length", max_length, min_length, "at least min_length")
    longest = _listops_max_length(max_depth, max_args)
    if min_length > longest:
        raise ValueError(
            f"min_length must be at most {longest}, the length of the largest tree with "
            f"max_depth={max_depth} and max_args={max_args}, got {min_length}"
        )
    rng = _rng(seed)
    rows, labels, seen = [], [], set()
    batch, tried = 1024, 0
    while len(seen) < n:
        drawn = _listops_draw(rng, batch, max_depth, max_args, min_length, max_length)
        for row, label in zip(*drawn, strict=True):
            key = row.tobytes()
            if key not in seen and len(seen) < n:
                seen.add(key)
                rows.append(row)
                labels.append(label)
        tried += batch
        if tried >= 2**20 + 1000 * n and len(seen) < n:
            raise RuntimeError(
                f"found only {len(seen)} distinct expressions of length in [{min_length}, "
                f"{max_length}] among {tried} trees; widen the length range or raise "
                "max_depth or max_args"
            )
        accepted = max(len(seen), 1) / tried
        batch = int(min(8192, max(1024, 1.2 * (n - len(seen)) / accepted)))
    inputs = torch.from_numpy(np.stack(rows))  # (n, max_length)
    targets = torch.from_numpy(np.asarray(labels, dtype=np.int64))  # (n,)
    return SequenceDataset(
        inputs, targets, n_classes=10, vocab_size=len(LISTOPS_TOKENS), name="ListOps"
    )


# Pathfinder ------------------------------------------------------------------------------------

# Geometry at the 32 × 32 scale, in pixels; it scales with size / 32.
_PF_DASH = 1.0  # length of a dash
_PF_GAP = 1.8  # gap between dashes: with the stroke below, at least one dark pixel
_PF_STROKE = 0.85  # a stroke lights the pixels closer than this to its centre line
_PF_DOT = 2.0  # radius of a dot
_PF_SPACING = 0.5  # step between the points that trace a path (below a pixel: no holes)


def _pf_trace(
    rng: np.random.Generator, m: int, n_dashes: int, scale: float, max_turn: float
) -> tuple[np.ndarray, np.ndarray]:
    """``m`` random paths of ``n_dashes`` dashes, starting at the origin.

    The direction of dash ``i + 1`` turns from that of dash ``i`` by ``U(-max_turn, max_turn)``
    (the curvature limit of Linsley et al.'s paths), the first direction uniform. Returns the
    points tracing the centre line ``(m, M, 2)`` (row, column), every ``_PF_SPACING`` pixels
    from the first dash's start to the last dash's end, and whether each point lies on a dash
    rather than in a gap ``(M,)``.
    """
    dash, step = _PF_DASH * scale, (_PF_DASH + _PF_GAP) * scale
    turns = rng.uniform(-max_turn, max_turn, size=(m, n_dashes - 1))
    theta = rng.uniform(0.0, 2 * np.pi, size=(m, 1)) + np.cumsum(
        np.concatenate([np.zeros((m, 1)), turns], axis=1), axis=1
    )  # (m, n_dashes)
    u = np.stack([np.sin(theta), np.cos(theta)], axis=-1)  # (m, n_dashes, 2) unit directions
    start = np.concatenate([np.zeros((m, 1, 2)), np.cumsum(step * u[:, :-1], axis=1)], axis=1)
    total = (n_dashes - 1) * step + dash
    arc = np.linspace(0.0, total, math.ceil(total / _PF_SPACING) + 1)  # (M,)
    which = np.minimum((arc // step).astype(np.int64), n_dashes - 1)  # (M,) dash of each point
    along = arc - which * step  # (M,) distance from that dash's start
    points = start[:, which] + along[None, :, None] * u[:, which]  # (m, M, 2)
    return points, along <= dash + 1e-9


def _pf_position(
    rng: np.random.Generator, points: np.ndarray, size: int, margin: float
) -> tuple[np.ndarray, np.ndarray]:
    """Move each path to a uniform position where it keeps ``margin`` from the borders.

    Returns the moved points ``(m, M, 2)`` and whether the path fits at all ``(m,)``.
    """
    low = margin - points.min(axis=1)  # (m, 2) smallest shift
    high = size - 1 - margin - points.max(axis=1)  # (m, 2) largest shift
    fits = (low <= high).all(axis=1)
    shift = low + rng.random(low.shape) * np.maximum(high - low, 0.0)  # (m, 2)
    return points + shift[:, None, :], fits


def _pf_cover(points: np.ndarray, radius: float, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixels near ``points`` ``(m, M, 2)`` and how much each is lit.

    Pixel ``(r, c)`` has its centre at ``(r, c)``; at distance ``δ`` from a point it is lit
    ``clip(radius - δ, 0, 1)``: an anti-aliased disc. Returns flat pixel indices and the
    light, both ``(m, M · w²)`` with ``w`` the window around each point's nearest pixel.
    """
    half = math.ceil(radius + 0.5) - 1  # |pixel - point| < radius within this many pixels
    grid = np.arange(-half, half + 1)
    offsets = np.stack(np.meshgrid(grid, grid, indexing="ij"), axis=-1).reshape(-1, 2)  # (w², 2)
    near = np.rint(points)  # (m, M, 2) nearest pixel
    d_row = (near[..., 0] - points[..., 0])[..., None] + offsets[:, 0]  # (m, M, w²)
    d_col = (near[..., 1] - points[..., 1])[..., None] + offsets[:, 1]  # (m, M, w²)
    light = np.clip(radius - np.sqrt(d_row**2 + d_col**2), 0.0, 1.0)
    rows = np.clip(near[..., 0, None] + offsets[:, 0], 0, size - 1).astype(np.int64)
    cols = np.clip(near[..., 1, None] + offsets[:, 1], 0, size - 1).astype(np.int64)
    m = points.shape[0]
    return (rows * size + cols).reshape(m, -1), light.reshape(m, -1)


def _pf_dilate(mask: np.ndarray, steps: int) -> np.ndarray:
    """``mask`` ``(m, S, S)`` grown by ``steps`` pixels, diagonals included (8-neighbours)."""
    size = mask.shape[-1]
    for _ in range(steps):
        padded = np.pad(mask, ((0, 0), (1, 1), (1, 1)))
        mask = np.zeros_like(mask)
        for dr in range(3):
            for dc in range(3):
                mask |= padded[:, dr : dr + size, dc : dc + size]
    return mask


class _Canvas:
    """The paths placed so far in each of ``n`` images: their solid (gap-filled) pixels."""

    def __init__(self, n: int, size: int, scale: float, max_turn: float) -> None:
        self.size, self.scale, self.max_turn = size, scale, max_turn
        self.owner = np.zeros((n, size, size), dtype=np.int8)  # 1 + path index, 0 empty
        self.clearance = max(1, round(scale))  # empty pixels kept between two paths
        self.stroke = max(_PF_STROKE, _PF_STROKE * scale)  # > √2 / 2: no holes in a path
        self.dot = max(1.2, _PF_DOT * scale)

    def add(
        self,
        rng: np.random.Generator,
        images: np.ndarray,
        n_dashes: int,
        path: int,
        tries: int,
        with_dots: bool,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Add path number ``path`` to each of ``images``, ``tries`` attempts at most.

        A path is kept when it fits the image and its solid pixels (with room for a dot at
        each end when ``with_dots``) are neither on nor next to another path's. Round ``r``
        draws ``2^r`` candidates per image still waiting and keeps the first that fits.
        Returns the images that got it, its points ``(placed, M, 2)`` and the dash mask
        ``(M,)``.
        """
        S = self.size
        blocked = _pf_dilate(self.owner[images] > 0, self.clearance).reshape(images.size, -1)
        todo = np.arange(images.size)  # indices into images still without this path
        done, traces = [], []
        margin = self.dot if with_dots else self.stroke
        batch, drawn = 1, 0
        while todo.size and drawn < tries:
            which = np.repeat(todo, batch)  # (m,) candidates, batch per image
            points, on_dash = _pf_trace(rng, which.size, n_dashes, self.scale, self.max_turn)
            points, fits = _pf_position(rng, points, S, margin)
            flat, light = _pf_cover(points, self.stroke, S)
            if with_dots:
                ends = points[:, [0, -1]]  # (m, 2, 2)
                dot_flat, dot_light = _pf_cover(ends, self.dot, S)
                flat = np.concatenate([flat, dot_flat], axis=1)
                light = np.concatenate([light, dot_light], axis=1)
            solid = light > 0  # (m, pixels)
            good = fits & ~(blocked[which[:, None], flat] & solid).any(axis=1)  # (m,)
            good = good.reshape(todo.size, batch)
            pick = np.flatnonzero(good.any(axis=1))  # images with a good candidate
            ok = pick * batch + good[pick].argmax(axis=1)  # its first good candidate
            flat, solid, points = flat[ok], solid[ok], points[ok]
            ok = pick
            rows = images[todo[ok]]
            owner = self.owner.reshape(self.owner.shape[0], -1)
            cells = np.broadcast_to(rows[:, None], flat.shape)[solid]
            owner[cells, flat[solid]] = path + 1
            done.append(todo[ok])
            traces.append(points)
            todo = np.delete(todo, ok)
            drawn, batch = drawn + batch, min(2 * batch, tries - drawn - batch)
        got = np.concatenate(done)
        order = np.argsort(got)  # back to the order of images
        return images[got[order]], np.concatenate(traces)[order], on_dash

    def clear(self, images: np.ndarray) -> None:
        self.owner[images] = 0


def pathfinder_images(
    n: int,
    *,
    size: int = 32,
    n_dashes: int = 8,
    n_distractors: int = 4,
    max_turn: float = math.pi / 6,
    seed: int = 0,
    return_geometry: bool = False,
):
    """Pathfinder images: are the two dots joined by a dashed path?

    Linsley et al. (2018, arXiv 1805.08315, §3), the Pathfinder of the Long Range Arena (Tay et
    al. 2021, arXiv 2011.04006, §3.5: 32 × 32, and 128 × 128 for Path-X; contour length 14).
    Each image holds two long paths of ``n_dashes`` dashes and up to ``n_distractors`` paths of
    ``n_dashes // 2`` dashes. A path is a smooth random walk: the direction turns by at most
    ``max_turn`` from one dash to the next. Paths never touch: at least one empty pixel
    (``size / 32`` pixels from 64 on) separates any two, gaps filled in. Two dots are drawn at
    ends of the long paths: both ends of one path when the label is 1, one end of each path when
    it is 0, so the paths of the two classes are drawn alike and only the dots differ. Labels
    are balanced (``n // 2`` or ``n // 2 + 1`` ones, in random order).

    Sizes scale with ``size / 32``; at 32: dashes 1 pixel long with gaps of 1.8 (each gap
    leaves a dark pixel), strokes lighting the pixels within 0.85 of the centre line, dots of
    radius 2; a long path spans about two thirds of the side. LRA's contour length 14 counts
    the dashes of Linsley et al.'s 300-pixel renderings, which merge once shrunk to 32 pixels;
    here the dashes stay visible, so the default is 8 longer ones. Below 32 the strokes keep
    their width at 32 (thinner ones could leave holes), the dots shrink to a radius of 1.2 at
    least, and the dashes merge. Pixels are
    anti-aliased, ``clip(r - δ, 0, 1)`` at distance ``δ`` from a stroke or dot of radius ``r``,
    in ``[0, 1]`` (0 background).

    Args:
        n: number of images.
        size: ``S``, the side in pixels (at least 16; LRA uses 32, 64 and 128).
        n_dashes: dashes of each long path (at least 2).
        n_distractors: short paths without dots, each placed when there is room for it.
        max_turn: largest turn between consecutive dashes, in radians, in ``[0, π]``.
        return_geometry: also return a dict with ``"dots"`` ``(n, 2, 2)`` (row, column of the
            two dots' centres) and ``"paths"`` ``(n, S, S)`` int8, each path's solid pixels
            (gaps filled in, dots of the long paths' both ends included) marked ``1 + p`` for
            path ``p`` (0 and 1 the long paths), 0 elsewhere.

    Returns:
        images ``(n, S, S)`` float32, labels ``(n,)`` int64 (and the geometry).
    """
    n = _int_at_least("n", n, 1)
    S = _int_at_least("size", size, 16)
    n_dashes = _int_at_least("n_dashes", n_dashes, 2)
    n_distractors = _int_at_least("n_distractors", n_distractors, 0)
    if not isinstance(max_turn, (int, float)) or not 0 <= max_turn <= math.pi:
        raise ValueError(f"max_turn must be an angle in [0, π] radians, got {max_turn!r}")
    rng = _rng(seed)
    scale = S / 32
    canvas = _Canvas(n, S, scale, float(max_turn))
    if (n_dashes - 1) * (_PF_DASH + _PF_GAP) * scale + 2 * canvas.dot > 4 * S:
        raise ValueError(
            f"n_dashes={n_dashes} makes paths too long for size={S} (at most "
            f"{int(4 * S / ((_PF_DASH + _PF_GAP) * scale))} dashes)"
        )
    long_paths = [np.zeros((n, 0, 2)), np.zeros((n, 0, 2))]
    todo = np.arange(n)
    for _ in range(100):
        canvas.clear(todo)
        first, points0, on_long = canvas.add(rng, todo, n_dashes, 0, 100, True)
        second, points1, _ = canvas.add(rng, first, n_dashes, 1, 100, True)
        if long_paths[0].shape[1] == 0:
            long_paths = [np.zeros((n, on_long.size, 2)) for _ in range(2)]
        long_paths[0][second] = points0[np.isin(first, second)]
        long_paths[1][second] = points1
        todo = np.setdiff1d(todo, second)
        if todo.size == 0:
            break
    if todo.size:
        raise RuntimeError(
            f"could not place two paths of {n_dashes} dashes apart in {todo.size} images of "
            f"size {S}; use fewer dashes or a larger size"
        )
    strokes = [(np.arange(n), long_paths[0], on_long), (np.arange(n), long_paths[1], on_long)]
    for p in range(n_distractors):
        placed, points, on_dash = canvas.add(
            rng, np.arange(n), max(n_dashes // 2, 2), 2 + p, 8, False
        )
        strokes.append((placed, points, on_dash))

    labels = rng.permutation(np.arange(n) % 2)  # (n,) balanced
    end0 = rng.integers(2, size=n)  # which end of long path 0 has a dot
    end1 = np.where(labels == 1, 1 - end0, rng.integers(2, size=n))  # the other dot's end
    ends = np.stack([long_paths[0][:, [0, -1]], long_paths[1][:, [0, -1]]], axis=1)  # (n, 2, 2, 2)
    rows = np.arange(n)
    dots = np.stack(
        [ends[rows, 0, end0], ends[rows, 1 - labels, end1]], axis=1
    )  # (n, 2, 2) dot 1 on path 0; dot 2 on path 0 (label 1) or path 1 (label 0)

    light = np.zeros(n * S * S, dtype=np.float64)  # (n S S) flat
    for images, points, on_dash in strokes:
        if images.size:
            flat, value = _pf_cover(points[:, on_dash], canvas.stroke, S)
            np.maximum.at(light, (images[:, None] * S * S + flat).ravel(), value.ravel())
    flat, value = _pf_cover(dots, canvas.dot, S)
    np.maximum.at(light, (rows[:, None] * S * S + flat).ravel(), value.ravel())
    images_out = light.reshape(n, S, S).astype(np.float32)
    labels_out = labels.astype(np.int64)
    if return_geometry:
        return images_out, labels_out, {"dots": dots, "paths": canvas.owner}
    return images_out, labels_out


def pathfinder(n: int, *, size: int = 32, seed: int = 0, **kwargs) -> SequenceDataset:
    """Pathfinder as a sequence task: :func:`pathfinder_images` read pixel by pixel.

    Tay et al. (2021), Long Range Arena (arXiv 2011.04006, §3.5); the images of Linsley et al.
    (2018, arXiv 1805.08315). Each image is read in raster order (row by row, left to right),
    one pixel per step in ``[0, 1]``: ``L = size²`` (1024 at 32, 4096 at 64, 16384 for Path-X at
    128). Label 1 when the two dots are joined by a path. Other keyword arguments go to
    :func:`pathfinder_images`.

    Returns:
        inputs ``(n, size², 1)`` float32 and targets ``(n,)`` in ``{0, 1}``.
    """
    images, labels = pathfinder_images(n, size=size, seed=seed, **kwargs)
    inputs = torch.from_numpy(images.reshape(n, size * size, 1))  # (n, L, 1)
    return SequenceDataset(
        inputs, torch.from_numpy(labels), n_classes=2, name=f"Pathfinder {size}×{size}"
    )
