"""The data sets of ssm.data: shapes, determinism, and their contents checked against the
sources they are read from (the mnist1d generator, scikit-learn's digits, raw MNIST and CIFAR
files written here in their real formats), with the network blocked."""

from __future__ import annotations

import collections
import functools
import gzip
import hashlib
import http.server
import io
import pickle
import random
import re
import socket
import struct
import tarfile
import threading
import time

import numpy as np
import pytest
import requests
import torch
from mnist1d.data import get_dataset_args, make_dataset
from sklearn.datasets import load_digits

from ssm import data


@pytest.fixture
def no_network(monkeypatch):
    """Every TCP connection and every ``requests`` call fails at once."""

    def refuse(*args, **kwargs):
        raise OSError("network blocked by the test")

    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(requests.Session, "request", refuse)


# ---------------------------------------------------------------------------------------------
# MNIST-1D
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def mnist1d_small():
    return data.mnist1d(n_train=320, n_test=80, seed=3)


def test_mnist1d_shapes_and_labels(mnist1d_small):
    train, test = mnist1d_small
    for part, n in [(train, 320), (test, 80)]:
        assert part.inputs.shape == (n, 40, 1) and part.inputs.dtype == torch.float32
        assert part.targets.shape == (n,) and part.targets.dtype == torch.int64
        assert part.targets.min() >= 0 and part.targets.max() <= 9
        assert part.n_classes == 10 and part.d_input == 1 and part.vocab_size is None


def test_mnist1d_is_the_package_generator(mnist1d_small):
    """Same sequences and labels as the package's own generator and split at these settings."""
    args = get_dataset_args()
    args.num_samples, args.train_split, args.seed = 400, 0.8, 3
    reference = make_dataset(args)
    train, test = mnist1d_small
    np.testing.assert_allclose(train.inputs[..., 0].numpy(), reference["x"], rtol=0, atol=1e-6)
    np.testing.assert_allclose(test.inputs[..., 0].numpy(), reference["x_test"], rtol=0, atol=1e-6)
    np.testing.assert_array_equal(train.targets.numpy(), reference["y"])
    np.testing.assert_array_equal(test.targets.numpy(), reference["y_test"])


def test_mnist1d_balanced_and_standardized(mnist1d_small):
    train, test = mnist1d_small
    labels = torch.cat([train.targets, test.targets])
    assert torch.bincount(labels, minlength=10).tolist() == [40] * 10
    assert torch.bincount(train.targets, minlength=10).min() >= 20  # shuffled: roughly balanced
    x = torch.cat([train.inputs, test.inputs]).double()
    assert abs(float(x.mean())) < 1e-5 and abs(float(x.std(correction=0)) - 1) < 1e-5


def test_mnist1d_deterministic_by_seed(mnist1d_small):
    again = data.mnist1d(n_train=320, n_test=80, seed=3)
    other = data.mnist1d(n_train=320, n_test=80, seed=4)
    assert torch.equal(again[0].inputs, mnist1d_small[0].inputs)
    assert torch.equal(again[1].targets, mnist1d_small[1].targets)
    assert not torch.allclose(other[0].inputs, mnist1d_small[0].inputs)


def test_mnist1d_sizes_not_multiple_of_ten():
    train, test = data.mnist1d(n_train=33, n_test=7, seed=1)
    assert (len(train), len(test)) == (33, 7)


def test_mnist1d_offline_and_keeps_global_rng(no_network):
    random.seed(11)
    np.random.seed(11)  # noqa: NPY002
    before = (random.random(), np.random.rand())  # noqa: NPY002
    random.seed(11)
    np.random.seed(11)  # noqa: NPY002
    data.mnist1d(n_train=20, n_test=10, seed=0)
    assert (random.random(), np.random.rand()) == before  # noqa: NPY002


def test_mnist1d_long_variant_keeps_the_samples(mnist1d_small):
    """With L - 1 a multiple of 39, every 26th point of L = 1015 is an original sample."""
    train, _ = data.mnist1d(n_train=320, n_test=80, seed=3, length=1015)
    assert train.inputs.shape == (320, 1015, 1) and train.inputs.dtype == torch.float32
    torch.testing.assert_close(train.inputs[:, ::26], mnist1d_small[0].inputs, rtol=0, atol=1e-5)
    assert torch.equal(train.targets, mnist1d_small[0].targets)


def test_mnist1d_long_variant_is_linear_between_samples(mnist1d_small):
    """At L = 1024 the points lie on the segments joining the original samples, so
    interpolating them back at the original positions recovers the original sequence."""
    train, _ = data.mnist1d(n_train=320, n_test=80, seed=3, length=1024)
    short = mnist1d_small[0].inputs[..., 0].numpy()  # (n, 40)
    long = train.inputs[..., 0].numpy()  # (n, 1024)
    positions = np.arange(1024) * 39 / 1023  # where each long point sits on the short grid
    expected = np.stack([np.interp(positions, np.arange(40), row) for row in short])
    np.testing.assert_allclose(long, expected, rtol=0, atol=1e-5)
    back = np.stack([np.interp(np.arange(40), positions, row) for row in long])
    spread = np.abs(np.diff(short, 2)).max()  # bound on a kink the resampling can cut
    np.testing.assert_allclose(back, short, rtol=0, atol=spread * 39 / 1023)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        pytest.param({"n_train": 0}, "n_train", id="no-train"),
        pytest.param({"n_test": 2.5}, "n_test", id="float-test"),
        pytest.param({"seed": -1}, "seed", id="negative-seed"),
        pytest.param({"length": 39}, "length", id="shorter"),
        pytest.param({"length": True}, "length", id="bool-length"),
    ],
)
def test_mnist1d_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        data.mnist1d(**kwargs)


# ---------------------------------------------------------------------------------------------
# Digits
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def digits_split():
    return data.digits(seed=0)


def raster(images: np.ndarray) -> np.ndarray:
    """``(n, h, w)`` images as ``(n, h w)`` sequences, step ``w r + c`` = pixel ``(r, c)``."""
    n, h, w = images.shape
    out = np.empty((n, h * w))
    for r in range(h):
        for c in range(w):
            out[:, w * r + c] = images[:, r, c]
    return out


def test_digits_shapes_and_range(digits_split):
    train, test = digits_split
    assert train.inputs.shape == (1347, 64, 1) and test.inputs.shape == (450, 64, 1)
    for part in (train, test):
        assert part.inputs.dtype == torch.float32 and part.targets.dtype == torch.int64
        assert part.inputs.min() >= 0 and part.inputs.max() <= 1 and part.inputs.max() == 1
        assert set(part.targets.tolist()) == set(range(10)) and part.n_classes == 10


def test_digits_read_in_raster_order(digits_split):
    """Train and test together are exactly scikit-learn's images, row by row, with labels."""
    bunch = load_digits()
    expected = raster(bunch.images) / 16.0  # (1797, 64)
    want = collections.Counter(
        (row.astype(np.float32).tobytes(), int(y))
        for row, y in zip(expected, bunch.target, strict=True)
    )
    got = collections.Counter(
        (x[:, 0].numpy().tobytes(), int(y))
        for part in digits_split
        for x, y in zip(part.inputs, part.targets, strict=True)
    )
    assert got == want


def test_digits_split_is_stratified(digits_split):
    counts = np.bincount(load_digits().target, minlength=10)
    in_test = np.bincount(digits_split[1].targets.numpy(), minlength=10)
    assert np.all(np.abs(in_test - 0.25 * counts) <= 1), (in_test, counts)


def test_digits_deterministic_by_seed(digits_split):
    again, other = data.digits(seed=0), data.digits(seed=1)
    assert torch.equal(again[1].inputs, digits_split[1].inputs)
    assert torch.equal(again[1].targets, digits_split[1].targets)
    assert not torch.equal(other[1].inputs, digits_split[1].inputs)


def test_digits_test_fraction():
    train, test = data.digits(test_fraction=0.1)
    assert (len(train), len(test)) == (1617, 180)


def test_digits_long_variant_holds_each_pixel(digits_split):
    train, test = data.digits(seed=0, length=1024)
    assert train.inputs.shape == (1347, 1024, 1) and test.inputs.shape == (450, 1024, 1)
    blocks = train.inputs[..., 0].reshape(1347, 64, 16)  # (n, pixel, held step)
    assert torch.equal(blocks, blocks[..., :1].expand_as(blocks))
    assert torch.equal(train.inputs[:, ::16], digits_split[0].inputs)
    assert torch.equal(test.targets, digits_split[1].targets)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        pytest.param({"length": 100}, "multiple of 64", id="length"),
        pytest.param({"length": 0}, "length", id="zero-length"),
        pytest.param({"test_fraction": 0}, "test_fraction", id="no-test"),
        pytest.param({"test_fraction": 1.0}, "test_fraction", id="all-test"),
        pytest.param({"test_fraction": 0.001}, "one per class", id="too-few"),
        pytest.param({"test_fraction": "0.2"}, "test_fraction", id="string"),
        pytest.param({"seed": 2**32}, "seed", id="seed"),
    ],
)
def test_digits_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        data.digits(**kwargs)


# ---------------------------------------------------------------------------------------------
# The data folder
# ---------------------------------------------------------------------------------------------


def test_data_root_order(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("SSM_DATA", raising=False)
    assert data.data_root() == tmp_path / "home" / ".cache" / "ssm"
    monkeypatch.setenv("SSM_DATA", str(tmp_path / "env"))
    assert data.data_root() == tmp_path / "env"
    assert data.data_root(tmp_path / "given") == tmp_path / "given"
    assert data.data_root(str(tmp_path)) == tmp_path
    with pytest.raises(ValueError, match="root"):
        data.data_root(3)


# ---------------------------------------------------------------------------------------------
# Offline: missing files give an error at once
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "load, folder, files",
    [
        pytest.param(data.smnist, "mnist", list(data.MNIST_FILES), id="smnist"),
        pytest.param(
            functools.partial(data.smnist, permuted=True),
            "mnist",
            list(data.MNIST_FILES),
            id="psmnist",
        ),
        pytest.param(data.scifar, "cifar10", ["cifar-10-python.tar.gz"], id="scifar"),
    ],
)
def test_offline_error_says_what_to_put_where(no_network, tmp_path, load, folder, files):
    start = time.monotonic()
    with pytest.raises(RuntimeError) as info:
        load(root=tmp_path)
    assert time.monotonic() - start < 5
    message = str(info.value)
    assert str(tmp_path / folder) in message and "SSM_DATA" in message
    for name in files:
        assert name in message and f"/{name}" in message.split(name, 1)[1]  # and its URL


def test_offline_error_names_the_env_folder(no_network, tmp_path, monkeypatch):
    monkeypatch.setenv("SSM_DATA", str(tmp_path / "env"))
    with pytest.raises(RuntimeError, match=re.escape(str(tmp_path / "env" / "mnist"))):
        data.smnist()


def test_reachability_check_has_a_timeout(tmp_path, monkeypatch):
    """Every connection attempt carries a timeout of a few seconds, so none can hang."""
    timeouts = []

    def silent_host(address, timeout=None, **kwargs):
        timeouts.append(timeout)
        raise TimeoutError("no answer")

    monkeypatch.setattr(socket, "create_connection", silent_host)
    with pytest.raises(RuntimeError, match="unreachable"):
        data.scifar(root=tmp_path)
    assert timeouts and all(t is not None and 0 < t <= 5 for t in timeouts), timeouts


# ---------------------------------------------------------------------------------------------
# sMNIST and psMNIST from fake raw files
# ---------------------------------------------------------------------------------------------


def idx_bytes(array: np.ndarray) -> bytes:
    """``array`` (uint8) in the gzipped IDX format of the MNIST files."""
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    return gzip.compress(header + array.astype(np.uint8).tobytes())


def fake_mnist(folder, n_train=12, n_test=5, seed=0):
    """Random images and labels written as the four MNIST files; returns them."""
    rng = np.random.default_rng(seed)
    arrays = {
        "train-images-idx3-ubyte.gz": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte.gz": rng.integers(0, 10, n_train, dtype=np.uint8),
        "t10k-images-idx3-ubyte.gz": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte.gz": rng.integers(0, 10, n_test, dtype=np.uint8),
    }
    folder.mkdir(parents=True, exist_ok=True)
    for name, array in arrays.items():
        (folder / name).write_bytes(idx_bytes(array))
    return arrays


def test_smnist_loads_cached_files(no_network, tmp_path):
    arrays = fake_mnist(tmp_path / "mnist")
    train, test = data.smnist(root=tmp_path)
    for part, prefix, n in [(train, "train", 12), (test, "t10k", 5)]:
        assert part.inputs.shape == (n, 784, 1) and part.inputs.dtype == torch.float32
        expected = raster(arrays[f"{prefix}-images-idx3-ubyte.gz"]) / 255.0
        np.testing.assert_allclose(part.inputs[..., 0].numpy(), expected, rtol=0, atol=1e-7)
        np.testing.assert_array_equal(part.targets, arrays[f"{prefix}-labels-idx1-ubyte.gz"])
        assert part.n_classes == 10


def recovered_permutation(plain: torch.Tensor, permuted: torch.Tensor) -> list[int]:
    """For each step of ``permuted`` ``(n, L, 1)``, the step of ``plain`` holding the same
    values in every example (random images make each step's column unique)."""
    columns = {plain[:, s, 0].numpy().tobytes(): s for s in range(plain.shape[1])}
    assert len(columns) == plain.shape[1], "fake images too few to tell steps apart"
    return [columns[permuted[:, t, 0].numpy().tobytes()] for t in range(permuted.shape[1])]


def test_psmnist_one_fixed_permutation_per_seed(no_network, tmp_path):
    fake_mnist(tmp_path / "mnist", n_train=12, n_test=12)
    plain = data.smnist(root=tmp_path)
    perms = {}
    for seed in (0, 0, 1):
        train, test = data.smnist(root=tmp_path, permuted=True, seed=seed)
        assert torch.equal(train.targets, plain[0].targets)
        from_train = recovered_permutation(plain[0].inputs, train.inputs)
        assert from_train == recovered_permutation(plain[1].inputs, test.inputs)
        perms.setdefault(seed, []).append(from_train)
    assert sorted(perms[0][0]) == list(range(784)) and perms[0][0] != list(range(784))
    assert perms[0][0] == perms[0][1] and perms[0][0] != perms[1][0]
    assert data.smnist(root=tmp_path, seed=5)[0].inputs.equal(plain[0].inputs)  # seed unused


def test_smnist_corrupt_file(no_network, tmp_path):
    fake_mnist(tmp_path / "mnist")
    path = tmp_path / "mnist" / "t10k-labels-idx1-ubyte.gz"
    path.write_bytes(idx_bytes(np.zeros((5, 2), dtype=np.uint8)))  # 2 dimensions instead of 1
    with pytest.raises(RuntimeError, match=re.escape("t10k-labels-idx1-ubyte.gz")):
        data.smnist(root=tmp_path)
    path.write_bytes(b"not gzip")
    with pytest.raises(RuntimeError, match="not a gzip file"):
        data.smnist(root=tmp_path)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        pytest.param({"permuted": 1}, "permuted", id="permuted"),
        pytest.param({"seed": -3}, "seed", id="seed"),
        pytest.param({"root": 7}, "root", id="root"),
    ],
)
def test_smnist_bad_arguments(no_network, kwargs, match):
    with pytest.raises(ValueError, match=match):
        data.smnist(**kwargs)


# ---------------------------------------------------------------------------------------------
# Downloads, from a local server standing in for the mirrors
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def local_mirror(tmp_path):
    """A folder served over HTTP on 127.0.0.1: (folder, base URL)."""
    served = tmp_path / "served"
    served.mkdir()
    handler = functools.partial(QuietHandler, directory=str(served))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield served, f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def test_smnist_downloads_missing_files(local_mirror, tmp_path, monkeypatch):
    served, url = local_mirror
    arrays = fake_mnist(served)
    md5 = {name: hashlib.md5((served / name).read_bytes()).hexdigest() for name in arrays}
    monkeypatch.setattr(data, "MNIST_FILES", md5)
    monkeypatch.setattr(data, "MNIST_MIRRORS", ("http://127.0.0.1:9/", url))  # first one closed
    train, _ = data.smnist(root=tmp_path / "cache")
    assert sorted(p.name for p in (tmp_path / "cache" / "mnist").iterdir()) == sorted(md5)
    np.testing.assert_array_equal(train.targets, arrays["train-labels-idx1-ubyte.gz"])


def test_download_with_wrong_checksum_is_refused(local_mirror, tmp_path, monkeypatch):
    served, url = local_mirror
    fake_mnist(served)
    monkeypatch.setattr(data, "MNIST_FILES", dict.fromkeys(data.MNIST_FILES, "0" * 32))
    monkeypatch.setattr(data, "MNIST_MIRRORS", (url,))
    with pytest.raises(RuntimeError, match="MD5"):
        data.smnist(root=tmp_path / "cache")
    assert list((tmp_path / "cache" / "mnist").iterdir()) == []


# ---------------------------------------------------------------------------------------------
# sCIFAR from a fake tarball
# ---------------------------------------------------------------------------------------------


def fake_cifar(folder, per_batch=2, n_test=3, seed=0, skip=()):
    """Random batches written as CIFAR-10's python tarball; returns {batch: (data, labels)}."""
    rng = np.random.default_rng(seed)
    batches = {}
    folder.mkdir(parents=True, exist_ok=True)
    with tarfile.open(folder / "cifar-10-python.tar.gz", "w:gz") as tar:
        for name in [*(f"data_batch_{i}" for i in range(1, 6)), "test_batch"]:
            n = n_test if name == "test_batch" else per_batch
            pixels = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
            labels = rng.integers(0, 10, n).tolist()
            batches[name] = (pixels, labels)
            if name in skip:
                continue
            blob = pickle.dumps({"data": pixels, "labels": labels, "batch_label": name}, 2)
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
    return batches


def cifar_expected(batches, names):
    """``(n, 1024, 3)`` raster sequences in [0, 1] and labels, from rows of R, G, B planes."""
    pixels = np.concatenate([batches[name][0] for name in names]).astype(np.float64)
    out = np.empty((len(pixels), 1024, 3))
    for ch in range(3):
        for r in range(32):
            for c in range(32):
                out[:, 32 * r + c, ch] = pixels[:, 1024 * ch + 32 * r + c] / 255
    return out, np.concatenate([batches[name][1] for name in names])


TRAIN_BATCHES = [f"data_batch_{i}" for i in range(1, 6)]


def test_scifar_color(no_network, tmp_path):
    batches = fake_cifar(tmp_path / "cifar10")
    train, test = data.scifar(root=tmp_path, grayscale=False)
    for part, names in [(train, TRAIN_BATCHES), (test, ["test_batch"])]:
        x, y = cifar_expected(batches, names)
        assert part.inputs.shape == x.shape and part.inputs.dtype == torch.float32
        np.testing.assert_allclose(part.inputs.numpy(), x, rtol=0, atol=1e-6)
        np.testing.assert_array_equal(part.targets.numpy(), y)
        assert part.d_input == 3 and part.n_classes == 10


def test_scifar_grayscale(no_network, tmp_path):
    batches = fake_cifar(tmp_path / "cifar10")
    train, test = data.scifar(root=tmp_path)
    for part, names in [(train, TRAIN_BATCHES), (test, ["test_batch"])]:
        x, y = cifar_expected(batches, names)
        luma = 0.299 * x[..., 0] + 0.587 * x[..., 1] + 0.114 * x[..., 2]
        assert part.inputs.shape == (len(y), 1024, 1)
        np.testing.assert_allclose(part.inputs[..., 0].numpy(), luma, rtol=0, atol=1e-6)
        np.testing.assert_array_equal(part.targets.numpy(), y)


def test_scifar_incomplete_tarball(no_network, tmp_path):
    fake_cifar(tmp_path / "cifar10", skip=("data_batch_4",))
    with pytest.raises(RuntimeError, match="data_batch_4"):
        data.scifar(root=tmp_path)
    with pytest.raises(ValueError, match="grayscale"):
        data.scifar(root=tmp_path, grayscale="yes")


def test_download_of_a_missing_file_fails_cleanly(local_mirror, tmp_path, monkeypatch):
    """A file the mirror lacks (HTTP 404) is named in the error; the others are kept."""
    served, url = local_mirror
    fake_mnist(served)
    md5 = {name: hashlib.md5((served / name).read_bytes()).hexdigest() for name in data.MNIST_FILES}
    (served / "t10k-labels-idx1-ubyte.gz").unlink()
    monkeypatch.setattr(data, "MNIST_FILES", md5)
    monkeypatch.setattr(data, "MNIST_MIRRORS", (url,))
    with pytest.raises(RuntimeError, match="404") as info:
        data.smnist(root=tmp_path / "cache")
    listed = str(info.value).split(":\n", 1)[1]
    assert "t10k-labels-idx1-ubyte.gz" in listed and "train-images" not in listed
    kept = sorted(p.name for p in (tmp_path / "cache" / "mnist").iterdir())
    assert kept == sorted(set(md5) - {"t10k-labels-idx1-ubyte.gz"})
