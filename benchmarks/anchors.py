"""The public kernels our Triton kernels are measured against, loaded on a GPU machine.

- ``mamba_ssm`` 2.3.2.post1: ``selective_scan_fn`` (its CUDA extension, built here from the PyPI
  sdist for the local GPU only), ``selective_state_update`` and ``mamba_chunk_scan_combined``
  (Triton). The package's ``__init__`` imports compiled extensions we do not build, so its
  submodules are imported under a bare package stub instead.
- ``fla-core`` 0.6.0: ``chunk_simple_gla`` (SSD with ``q = C``, ``k = dt·B``, ``v = x``,
  ``g = dt·A``).
- ``mambapy``: its parallel scan.

The packages come as files in a wheel folder (see ``benchmarks/README.md``); nothing is
downloaded here.
"""

from __future__ import annotations

import importlib
import os
import sys
import tarfile
import time
import types
from collections.abc import Callable
from pathlib import Path

MAMBA_SDIST = "mamba_ssm-2.3.2.post1.tar.gz"
SELECTIVE_SCAN_SOURCES = [
    "selective_scan.cpp",
    *(f"selective_scan_fwd_{t}.cu" for t in ("fp32", "fp16", "bf16")),
    *(
        f"selective_scan_bwd_{t}_{k}.cu"
        for t in ("fp32", "fp16", "bf16")
        for k in ("real", "complex")
    ),
]


def extract_mamba_sdist(wheels: Path, dest: Path) -> Path:
    """Unpack the mamba_ssm sdist once; returns its root folder."""
    root = dest / MAMBA_SDIST.removesuffix(".tar.gz")
    if not root.exists():
        with tarfile.open(wheels / MAMBA_SDIST) as tar:
            tar.extractall(dest, filter="data")
    return root


def build_selective_scan_cuda(root: Path, build_dir: Path) -> tuple[types.ModuleType, float]:
    """Compile mamba_ssm's ``selective_scan_cuda`` for the local GPU (same flags as its setup.py,
    one architecture). Returns the module and the build time in seconds."""
    import torch
    from torch.utils.cpp_extension import load

    major, minor = torch.cuda.get_device_capability()
    arch = f"{major}{minor}"
    src = root / "csrc" / "selective_scan"
    build_dir.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("MAX_JOBS", str(os.cpu_count() or 8))
    start = time.perf_counter()
    module = load(
        name="selective_scan_cuda",
        sources=[str(src / s) for s in SELECTIVE_SCAN_SOURCES],
        extra_include_paths=[str(src)],
        extra_cflags=["-O3", "-std=c++17"],
        extra_cuda_cflags=[
            "-O3",
            "-std=c++17",
            "--use_fast_math",
            "--expt-relaxed-constexpr",
            "--expt-extended-lambda",
            "-U__CUDA_NO_HALF_OPERATORS__",
            "-U__CUDA_NO_HALF_CONVERSIONS__",
            "-U__CUDA_NO_BFLOAT16_OPERATORS__",
            "-U__CUDA_NO_BFLOAT16_CONVERSIONS__",
            "-U__CUDA_NO_BFLOAT162_OPERATORS__",
            "-U__CUDA_NO_BFLOAT162_CONVERSIONS__",
            f"-gencode=arch=compute_{arch},code=sm_{arch}",
        ],
        build_directory=str(build_dir),
        verbose=False,
    )
    sys.modules["selective_scan_cuda"] = module
    return module, time.perf_counter() - start


def import_mamba_submodules(root: Path) -> dict[str, object]:
    """Import mamba_ssm's ops without running its package ``__init__``."""
    package = types.ModuleType("mamba_ssm")
    package.__path__ = [str(root / "mamba_ssm")]
    sys.modules["mamba_ssm"] = package
    found: dict[str, object] = {}
    for module, name in [
        ("mamba_ssm.ops.selective_scan_interface", "selective_scan_fn"),
        ("mamba_ssm.ops.selective_scan_interface", "selective_scan_ref"),
        ("mamba_ssm.ops.triton.selective_state_update", "selective_state_update"),
        ("mamba_ssm.ops.triton.ssd_combined", "mamba_chunk_scan_combined"),
    ]:
        try:
            found[name] = getattr(importlib.import_module(module), name)
        except Exception as err:  # an anchor that fails to load is reported, not fatal
            found[name] = err
    return found


def import_fla_chunk_simple_gla():
    try:
        from fla.ops.simple_gla import chunk_simple_gla
    except Exception as err:  # reported by the caller
        return err
    return chunk_simple_gla


def import_mambapy_pscan():
    try:
        from mambapy.pscan import pscan
    except Exception as err:  # reported by the caller
        return err
    return pscan


def build_s4_structured_kernels(src: Path, build_dir: Path) -> tuple[types.ModuleType, float]:
    """Compile the S4 authors' CUDA Cauchy and Vandermonde kernels (``structured_kernels``,
    from their repository's ``extensions/kernels``: ``cauchy.cpp``, ``cauchy_cuda.cu``,
    ``map.h``) for the local GPU. Their ``THC`` include predates PyTorch 1.11 and is mapped to
    its ATen successor in a patched copy. Returns the module and the build time in seconds."""
    import torch
    from torch.utils.cpp_extension import load

    patched = build_dir / "src"
    patched.mkdir(parents=True, exist_ok=True)
    for name in ("cauchy.cpp", "cauchy_cuda.cu", "map.h"):
        text = (src / name).read_text()
        text = text.replace("<THC/THCAtomics.cuh>", "<ATen/cuda/Atomic.cuh>")
        (patched / name).write_text(text)
    major, minor = torch.cuda.get_device_capability()
    arch = f"{major}{minor}"
    start = time.perf_counter()
    module = load(
        name="structured_kernels",
        sources=[str(patched / "cauchy.cpp"), str(patched / "cauchy_cuda.cu")],
        extra_include_paths=[str(patched)],
        extra_cflags=["-O3"],
        extra_cuda_cflags=[
            "-O2",
            "--use_fast_math",
            f"-gencode=arch=compute_{arch},code=sm_{arch}",
        ],
        build_directory=str(build_dir),
        verbose=False,
    )
    return module, time.perf_counter() - start


class PathCounter:
    """Counts the calls of the functions ``names`` of ``module`` (module globals that an
    anchor looks up at each call), to record which of its code paths ran; ``available[name]``
    says whether the function exists (an optional extension may be missing, ``None``)."""

    def __init__(self, module: types.ModuleType, names: tuple[str, ...]) -> None:
        self.names = names
        self.counts = dict.fromkeys(names, 0)
        self.available = {}
        for name in names:
            fn = getattr(module, name, None)
            self.available[name] = callable(fn)
            if callable(fn):
                setattr(module, name, self._wrap(name, fn))

    def _wrap(self, name: str, fn: Callable) -> Callable:
        def counted(*args, **kwargs):
            self.counts[name] += 1
            return fn(*args, **kwargs)

        return counted

    def reset(self) -> None:
        self.counts = dict.fromkeys(self.names, 0)

    def used(self) -> list[str]:
        return [k for k, v in self.counts.items() if v]
