"""Set-up shared by the tests of the accelerated ops.

``tests/conftest.py`` chooses the device (``--device cpu``: Triton's CPU interpreter, small sizes;
``--device cuda``: compiled kernels, real sizes) and switches the interpreter on before the kernels
are compiled. Fixtures here: ``poisoned`` (unwritten memory reads as NaN).
"""

import pytest
import torch


@pytest.fixture
def poisoned():
    """Deterministic mode with ``torch.empty`` returning NaN, so that an output element a kernel
    forgets to write shows as NaN (on the CPU and on a GPU alike)."""
    previous = torch.are_deterministic_algorithms_enabled()
    fill = torch.utils.deterministic.fill_uninitialized_memory
    torch.use_deterministic_algorithms(True)
    torch.utils.deterministic.fill_uninitialized_memory = True
    assert torch.empty(3).isnan().all()
    yield
    torch.use_deterministic_algorithms(previous)
    torch.utils.deterministic.fill_uninitialized_memory = fill


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Parametrize each argument that the test module names in ``SIZES = {argument: (small,
    real)}``: the small sizes everywhere, the real ones added on a GPU (``--device cuda``)."""
    on_gpu = metafunc.config.getoption("--device") == "cuda"
    for argument, (small, real) in getattr(metafunc.module, "SIZES", {}).items():
        if argument in metafunc.fixturenames:
            metafunc.parametrize(argument, small + (real if on_gpu else []))
