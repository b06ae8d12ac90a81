"""Check on the GPU machine that every anchor loads and runs once; print versions and timings.

source benchmarks/setup_device.sh && python3 benchmarks/probe_anchors.py --out "$OUT"
"""

from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path

import torch
import triton
from anchors import (
    build_selective_scan_cuda,
    extract_mamba_sdist,
    import_fla_chunk_simple_gla,
    import_mamba_submodules,
    import_mambapy_pscan,
)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--wheels", default=".whl")
    parser.add_argument("--out", default=".")
    args = parser.parse_args()
    report: dict[str, object] = {
        "device": torch.cuda.get_device_name(),
        "torch": torch.__version__,
        "triton": triton.__version__,
        "cuda": torch.version.cuda,
        "python": platform.python_version(),
    }
    root = extract_mamba_sdist(Path(args.wheels), Path("/tmp/anchors"))
    _, seconds = build_selective_scan_cuda(root, Path("/tmp/anchors/build"))
    report["selective_scan_cuda_build_s"] = round(seconds, 1)
    found = import_mamba_submodules(root)
    found["chunk_simple_gla"] = import_fla_chunk_simple_gla()
    found["pscan"] = import_mambapy_pscan()
    report["anchors"] = {k: ("ok" if callable(v) else repr(v)) for k, v in found.items()}
    dev = "cuda"
    b, d, n, L = 2, 64, 16, 256
    u, delta = torch.randn(b, d, L, device=dev), torch.rand(b, d, L, device=dev)
    A = -torch.rand(d, n, device=dev)
    B, C = torch.randn(b, n, L, device=dev), torch.randn(b, n, L, device=dev)
    if callable(found["selective_scan_fn"]):
        y = found["selective_scan_fn"](u, delta, A, B, C)
        y_ref = found["selective_scan_ref"](u, delta, A, B, C)
        report["selective_scan_fn_vs_ref_maxdiff"] = float((y - y_ref).abs().max())
    print(json.dumps(report, indent=1))
    Path(args.out, "anchors.json").write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
