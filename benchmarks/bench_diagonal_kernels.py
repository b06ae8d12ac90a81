"""Kernel generation time of one layer: S4 (NPLR), DSS-exp, DSS-softmax and S4D (Vandermonde).

    source benchmarks/setup_device.sh
    python3 benchmarks/bench_diagonal_kernels.py --out "$OUT"
    python3 benchmarks/bench_diagonal_kernels.py --smoke --out "$(mktemp -d)"   # CPU check, tiny

For each layer of ``ssm.experiments.diagonal_cost.LAYERS`` (built from the package's layer
configs: ``S4Config``, ``DSSConfig`` exp and softmax, ``S4DConfig`` at its defaults), H = 256
channels, N in 64 and 256, L in 1024, 4096 and 16384: the median time of generating the kernels
``(1, H, L)`` (forward, autograd recording as in training) and of forward plus backward of
``K.sum()`` to the kernel's parameters (``triton.testing.do_bench`` on a GPU, float32, no TF32),
and the peak memory of one forward plus backward. A case that fails (out of memory, or an
error) is recorded with its error; the others still run. ``--out DIR`` writes
``DIR/diagonal_kernels.json``; the chapter *S4D* plots it (``diagonal_cost.plot_benchmark``).
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
import traceback
from pathlib import Path

import torch

from ssm.experiments.diagonal_cost import LAYERS, forward_backward, kernel_module

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # provenance.py and timing.py, beside this file

from provenance import git_commit, versions  # noqa: E402 (found through the path just set)
from timing import Timer, describe_error, free  # noqa: E402


def time_case(name: str, H: int, N: int, L: int, timer: Timer, device: str) -> dict:
    """Forward and forward-plus-backward times and peak memory of one layer's kernel."""
    rec: dict = {"layer": name, "H": H, "N": N, "L": L}
    kernel = None
    try:
        torch.manual_seed(0)
        kernel = kernel_module(name, H, N, L).to(device)
        rec["parameters"] = sum(p.numel() for p in kernel.parameters())
        forward_backward(kernel)  # first call: compiles the Triton kernels
        rec["ms_fwd"] = round(timer.ms(kernel), 4)
        free(device)
        rec["ms_fwd_bwd"] = round(timer.ms(lambda: forward_backward(kernel)), 4)
        free(device)
        peak = timer.peak_mib(lambda: forward_backward(kernel))
        if peak is not None:
            rec["peak_extra_MiB"] = peak["peak_extra_MiB"]
    except Exception as err:  # out of memory, or a kernel failing: recorded, not fatal
        rec["error"] = describe_error(err)
        rec.pop("ms_fwd", None)
        if not isinstance(err, torch.cuda.OutOfMemoryError):
            rec["traceback"] = traceback.format_exc(limit=4)[-1500:]
    finally:
        kernel = None  # freed before the next case
        free(device)
    return rec


def _out_file(out: str) -> Path:
    path = Path(out)
    return path if path.suffix == ".json" else path / "diagonal_kernels.json"


def _ints(text: str) -> list[int]:
    return [int(s) for s in text.split(",")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out",
        default="data/bench/diagonal_kernels.json",
        help="a .json file, or a folder for diagonal_kernels.json",
    )
    parser.add_argument("--smoke", action="store_true", help="tiny sizes on the CPU")
    parser.add_argument("--commit", default=None, help="default: $SSM_COMMIT, else git HEAD")
    parser.add_argument("--H", type=int, default=None, help="channels; default 256 (8 smoke)")
    parser.add_argument("--sizes", default=None, help="comma-separated N; default 64,256")
    parser.add_argument(
        "--lengths", default=None, help="comma-separated L; default 1024,4096,16384"
    )
    args = parser.parse_args()

    device = "cpu" if args.smoke or not torch.cuda.is_available() else "cuda"
    H = args.H or (8 if args.smoke else 256)
    sizes = _ints(args.sizes or ("8,16" if args.smoke else "64,256"))
    lengths = _ints(args.lengths or ("32,64" if args.smoke else "1024,4096,16384"))
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    timer = Timer(device, args.smoke)
    meta = versions(device) | {
        "benchmark": "diagonal kernels: kernel generation of one layer",
        "commit": args.commit or git_commit(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "smoke": args.smoke,
        "timer": timer.how,
        "tf32": False,
        "dtype": "float32",
        "sizes": {"H": H, "N": sizes, "L": lengths},
        "layers": list(LAYERS),
        "configs": {name: {"config": cls.__name__, **kw} for name, (cls, kw) in LAYERS.items()},
        "fwd": "the kernels (1, H, L) with autograd recording; fwd_bwd adds backward of "
        "K.sum() to the kernel's parameters",
    }
    print(json.dumps({k: v for k, v in meta.items() if k != "configs"}))
    cases = []
    for name in LAYERS:
        for N in sizes:
            for L in lengths:
                case = time_case(name, H, N, L, timer, device)
                cases.append(case)
                print(json.dumps({k: v for k, v in case.items() if k != "traceback"}))
    out = _out_file(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(meta | {"cases": cases}, indent=1) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
