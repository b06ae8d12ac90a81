"""The shipped text corpus (data/text) and ssm.data.text: windows are slices of the file, shifted
by one for the targets; training and validation come from disjoint parts; the split is seeded;
tokens decode back to the text; impossible sizes raise; the licence is stated and the wheel
carries the files."""

from __future__ import annotations

import fnmatch
import gzip
import hashlib
import re
import sys
from pathlib import Path

import pytest
import torch

from ssm import data
from ssm.experiments._results import data_path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ROOT = Path(__file__).resolve().parent.parent
FOLDER = ROOT / "data" / "text"
CORPUS = FOLDER / "web.txt.gz"
README = FOLDER / "README.md"


@pytest.fixture(scope="module")
def corpus() -> str:
    return gzip.decompress(CORPUS.read_bytes()).decode("ascii")


@pytest.fixture(scope="module")
def sets():
    return data.text(32, 64, 48, seed=3)


def _decode(dataset, tokens: torch.Tensor) -> str:
    return "".join(dataset.vocab[t] for t in tokens.tolist())


def test_the_function_reads_the_shipped_file():
    assert data_path(data.TEXT_FILE).read_bytes() == CORPUS.read_bytes()
    assert "text" in data.__all__


def test_shapes_and_vocabulary(sets, corpus: str):
    vocab = "".join(sorted(set(corpus)))
    for dataset, n in zip(sets, (64, 48), strict=True):
        assert dataset.inputs.shape == dataset.targets.shape == (n, 32)
        assert dataset.inputs.dtype == dataset.targets.dtype == torch.int64
        assert dataset.vocab == vocab
        assert dataset.vocab_size == dataset.n_classes == len(vocab)
        assert dataset.per_step and dataset.d_input is None
        assert 0 <= int(dataset.inputs.min()) and int(dataset.inputs.max()) < len(vocab)


def test_windows_are_the_text_and_targets_the_next_character(sets, corpus: str):
    for dataset in sets:
        assert torch.equal(dataset.targets[:, :-1], dataset.inputs[:, 1:])
        for x, y, offset in zip(dataset.inputs, dataset.targets, dataset.offsets, strict=True):
            o = int(offset)
            assert _decode(dataset, x) == corpus[o : o + 32]
            assert _decode(dataset, y) == corpus[o + 1 : o + 33]


@pytest.mark.parametrize("max_chars", [None, 5000])
def test_training_and_validation_come_from_disjoint_parts(corpus: str, max_chars):
    n = len(corpus) if max_chars is None else max_chars
    split = int(0.9 * n)
    train, val = data.text(40, 300, 300, seed=0, max_chars=max_chars)
    assert int(train.offsets.min()) >= 0 and int(train.offsets.max()) + 40 < split
    assert int(val.offsets.min()) >= split and int(val.offsets.max()) + 40 < n
    # the offsets spread over each part rather than bunching at one end
    assert int(train.offsets.max()) - int(train.offsets.min()) > split // 2
    assert int(val.offsets.max()) - int(val.offsets.min()) > (n - split) // 2


def test_the_smallest_parts_fit_one_window_each():
    train, val = data.text(8, 3, 3, max_chars=90)  # parts of 81 and 9 characters
    assert torch.equal(val.offsets, torch.full((3,), 81))
    assert int(train.offsets.max()) <= 81 - 9


def test_deterministic_for_a_seed():
    a_train, a_val = data.text(16, 20, 10, seed=7)
    b_train, b_val = data.text(16, 20, 10, seed=7)
    assert torch.equal(a_train.inputs, b_train.inputs) and torch.equal(a_val.inputs, b_val.inputs)
    c_train, c_val = data.text(16, 20, 10, seed=8)
    assert not torch.equal(a_train.offsets, c_train.offsets)
    assert not torch.equal(a_val.offsets, c_val.offsets)
    _, d_val = data.text(16, 5, 10, seed=7)  # the validation set does not depend on n_train
    assert torch.equal(a_val.offsets, d_val.offsets)


def test_decode_encode_round_trip(sets):
    train, _ = sets
    sentence = 'In the beginning, God created the heavens and the earth.\n"Where are you?"'
    tokens = torch.tensor([train.vocab.index(c) for c in sentence])
    assert _decode(train, tokens) == sentence
    assert _decode(train, torch.arange(len(train.vocab))) == train.vocab
    assert data.text(4, 1, 1, max_chars=100)[0].vocab == train.vocab  # fixed by the corpus


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"seq_len": 0}, "seq_len must be an integer >= 1"),
        ({"seq_len": 2.5}, "seq_len must be an integer >= 1"),
        ({"n_train": 0}, "n_train must be an integer >= 1"),
        ({"n_val": True}, "n_val must be an integer >= 1"),
        ({"seed": -1}, "seed must be an integer"),
        ({"max_chars": 1}, "max_chars must be an integer >= 2"),
        ({"seq_len": 9, "max_chars": 90}, "validation part holds 9"),
        ({"seq_len": 100, "max_chars": 100}, "training part holds 90"),
        ({"seq_len": 10_000_000}, "use a shorter seq_len"),
    ],
)
def test_impossible_sizes_raise(kwargs, message):
    args = {"seq_len": 8, "n_train": 2, "n_val": 2} | kwargs
    with pytest.raises(ValueError, match=re.escape(message)):
        data.text(**args)


def test_the_readme_names_the_source_the_licence_and_the_sizes(corpus: str):
    readme = README.read_text()
    assert "## Licence: public domain" in readme
    assert "The World English Bible is in the Public Domain." in readme  # the notice itself
    assert "`sword-text-web`, version `426.0-1`" in readme
    assert "apt-get install sword-text-web" in readme
    assert "python scripts/make_text_corpus.py" in readme
    assert hashlib.sha256(corpus.encode()).hexdigest() in readme
    assert f"| {CORPUS.stat().st_size:,} bytes |" in readme
    assert f"| {len(set(corpus))}: the newline and" in readme
    assert 1_000_000 < CORPUS.stat().st_size < 2_000_000 and len(corpus) > 3_000_000


def test_the_wheel_carries_the_corpus_and_its_readme():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert config["package-dir"]["ssm._data"] == "data"
    patterns = config["package-data"]["ssm._data"]
    for path in (CORPUS, README):
        name = path.relative_to(ROOT / "data").as_posix()
        assert any(fnmatch.fnmatch(name, p) for p in patterns), f"{name} not in package-data"
