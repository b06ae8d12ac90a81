"""Run one experiment and store its results: ``python -m ssm.experiments NAME --profile full``.

On several GPUs of one host, launch it with ``torchrun``, which sets ``WORLD_SIZE``, ``RANK``
and ``LOCAL_RANK`` for each process::

    torchrun --standalone --nproc_per_node=4 -m ssm.experiments NAME --profile full

Each process then joins one process group (NCCL on CUDA, each process on the GPU of its
``LOCAL_RANK``; gloo on CPU) that :func:`ssm.train.train` trains data-parallel over; rank 0
alone writes the results, with the number of processes in their provenance, and prints.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
from collections.abc import Iterator

import torch
import torch.distributed as dist

from . import PROFILES, available, get
from ._results import save


@contextlib.contextmanager
def process_group() -> Iterator[tuple[int, int]]:
    """Join the process group of a ``torchrun`` launch (env ``WORLD_SIZE`` set) for the run,
    and leave it after; yields ``(world_size, rank)``, ``(1, 0)`` outside torchrun."""
    if "WORLD_SIZE" not in os.environ:
        yield 1, 0
        return
    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group("nccl")
    else:
        dist.init_process_group("gloo")
    try:
        yield dist.get_world_size(), dist.get_rank()
    finally:
        dist.destroy_process_group()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m ssm.experiments", description="Run one experiment of the book."
    )
    parser.add_argument("name", choices=available(), help="experiment module")
    parser.add_argument("--profile", choices=PROFILES, default="full")
    parser.add_argument(
        "--out-dir", default=None, help="where to write NAME.json (default: data/results)"
    )
    parser.add_argument("--plot", default=None, help="also save the figure to this file")
    args = parser.parse_args(argv)

    module = get(args.name)
    config = module.config(args.profile)
    with process_group() as (world, rank):
        start = time.perf_counter()
        results = module.run(config)
        wall = time.perf_counter() - start
        if rank == 0:
            path = save(args.name, config, results, wall, args.out_dir, processes=world)
            on = f" on {world} processes" if world > 1 else ""
            print(f"{args.name} ({args.profile}): {wall:.1f} s{on}, results in {path}")
            if args.plot:
                module.plot(results).savefig(args.plot)
                print(f"figure in {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
