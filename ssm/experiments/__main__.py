"""Run one experiment and store its results: ``python -m ssm.experiments NAME --profile full``."""

from __future__ import annotations

import argparse
import sys
import time

from . import PROFILES, available, get
from ._results import save


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
    start = time.perf_counter()
    results = module.run(config)
    wall = time.perf_counter() - start
    path = save(args.name, config, results, wall, args.out_dir)
    print(f"{args.name} ({args.profile}): {wall:.1f} s, results in {path}")
    if args.plot:
        module.plot(results).savefig(args.plot)
        print(f"figure in {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
