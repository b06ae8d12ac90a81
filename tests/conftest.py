"""Options shared by every test.

``--device`` chooses where the accelerated ops' tests run: ``cpu`` (the default) runs the Triton
kernels in Triton's CPU interpreter at small sizes, as CI does; ``cuda`` runs them compiled on
the GPU at real sizes (``pytest tests/ops --device cuda``). The interpreter must be switched on
before the kernels are first compiled, so it is set here, at configuration time, with the
interpreter's fix for NumPy 2.4 (:func:`ssm.ops.interpreter.fix_numpy_loop_bounds`).
"""

from __future__ import annotations

import os

import pytest
import torch

from ssm.ops.interpreter import fix_numpy_loop_bounds


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--device",
        choices=("cpu", "cuda"),
        default="cpu",
        help="where tests/ops runs the kernels: cpu (Triton interpreter, small sizes) or "
        "cuda (compiled, real sizes)",
    )


def pytest_configure(config: pytest.Config) -> None:
    if config.getoption("--device") == "cuda":
        if not torch.cuda.is_available():
            raise pytest.UsageError("--device cuda: no CUDA device is visible to torch")
        os.environ.pop("TRITON_INTERPRET", None)
        # the poisoned fixture turns deterministic mode on, where cuBLAS needs a fixed workspace
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    else:
        os.environ["TRITON_INTERPRET"] = "1"
        fix_numpy_loop_bounds()


@pytest.fixture(scope="session")
def device(pytestconfig: pytest.Config) -> torch.device:
    """The device the op tests put their tensors on."""
    return torch.device(pytestconfig.getoption("--device"))


@pytest.fixture(scope="session")
def on_gpu(device: torch.device) -> bool:
    """Whether the kernels run compiled on a GPU (real sizes) rather than interpreted."""
    return device.type == "cuda"


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread for a module of many tiny ops (``pytest.mark.usefixtures``): more
    threads only contend with each other, and with other processes, on a small machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
