"""Execute the book's chapter notebooks with papermill.

Two uses, both driven by the Makefile:

``--out DIR`` (``make book``)
    Execute every chapter notebook listed in ``_toc.yml`` and write the executed copy to
    ``DIR/<same path>``; the committed notebooks are not touched. ``--profile`` picks the
    experiment scale injected into each chapter's ``parameters`` cell: ``ci`` (CPU, seconds) or
    ``full`` (GPU, minutes); ``auto`` means ``full`` when ``torch.cuda.is_available()``.

``--in-place`` (``make refresh``)
    Re-execute the committed notebooks in ``book/`` with the default parameters (the ``ci``
    profile) and strip what papermill adds that changes on every run (timings, paths), so that
    the diff of a refresh shows only real changes of outputs.

Each notebook runs with its own folder as the working directory, as nbval does. Any cell error
or a cell that runs longer than ``--timeout`` seconds fails the notebook; all notebooks are run
(so one report lists every failure) and the exit status is 1 if any failed.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import nbformat
import yaml

ROOT = Path(__file__).resolve().parent.parent
VOLATILE_CELL_METADATA = ("papermill", "execution")
# The kernel's channels are ZeroMQ sockets on 127.0.0.1. Encrypted with CurveZMQ (ipykernel's
# kernelspec declares it supports it; "auto" falls back to plain TCP for a kernel that does
# not), so ipykernel has no reason to warn, once per chapter, that its TCP traffic is plain text.
KERNEL_CONFIG = {"KernelManager": {"transport_encryption": "auto"}}


def toc_files(toc_path: Path) -> list[str]:
    """Every ``file:`` entry of a Jupyter Book ``_toc.yml`` (root first), without suffix."""
    toc = yaml.safe_load(toc_path.read_text())
    files = [toc["root"]]

    def walk(entries):
        for entry in entries or []:
            if "file" in entry:
                files.append(entry["file"])
            for key in ("chapters", "sections", "parts"):
                walk(entry.get(key))

    for key in ("chapters", "parts", "sections"):
        walk(toc.get(key))
    return files


def chapter_notebooks(root: Path = ROOT) -> list[Path]:
    """The notebooks of the book, in table-of-contents order, relative to ``root``."""
    notebooks = []
    for entry in toc_files(root / "_toc.yml"):
        stem = Path(entry).with_suffix("") if Path(entry).suffix in (".ipynb", ".md") else entry
        nb, md = root / f"{stem}.ipynb", root / f"{stem}.md"
        if nb.exists():
            notebooks.append(nb.relative_to(root))
        elif not md.exists():
            raise SystemExit(f"_toc.yml lists {entry!r} but neither {nb} nor {md} exists")
    return notebooks


def pick_profile(profile: str) -> str:
    if profile != "auto":
        return profile
    import torch

    return "full" if torch.cuda.is_available() else "ci"


def strip_volatile(nb: nbformat.NotebookNode) -> None:
    """Drop papermill's run records (start/end times, durations, input/output paths)."""
    nb.metadata.pop("papermill", None)
    for cell in nb.cells:
        for key in VOLATILE_CELL_METADATA:
            cell.metadata.pop(key, None)
        if cell.metadata.get("tags") == []:
            del cell.metadata["tags"]


def hide_injected_defaults(nb: nbformat.NotebookNode, profile: str) -> None:
    """In the ci profile the injected cell only repeats the defaults: keep it off the page."""
    if profile != "ci":
        return
    for cell in nb.cells:
        tags = cell.metadata.get("tags", [])
        if "injected-parameters" in tags and "remove-cell" not in tags:
            tags.append("remove-cell")


def execute(src: Path, dst: Path, parameters: dict | None, timeout: int) -> None:
    """Run ``src`` top to bottom in a fresh kernel, in its own folder, and write it to ``dst``."""
    import papermill as pm
    from traitlets.config import Config

    pm.execute_notebook(
        str(src),
        str(dst),
        parameters=parameters,
        cwd=str(src.parent),
        execution_timeout=timeout,
        progress_bar=False,
        log_output=False,
        config=Config(KERNEL_CONFIG),
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--out", type=Path, help="write executed notebooks under this folder")
    where.add_argument("--in-place", action="store_true", help="refresh book/ in place (ci)")
    parser.add_argument("--profile", default="auto", choices=["auto", "ci", "full"])
    parser.add_argument(
        "--timeout", type=int, default=600, help="seconds one cell may run (default 600)"
    )
    parser.add_argument(
        "notebooks", nargs="*", type=Path, help="only these notebooks (default: all in _toc.yml)"
    )
    args = parser.parse_args(argv)

    known = chapter_notebooks()
    if args.notebooks:
        chosen = [p.resolve().relative_to(ROOT) for p in args.notebooks]
        unknown = [str(p) for p in chosen if p not in known]
        if unknown:
            parser.error(f"not chapters listed in _toc.yml: {', '.join(unknown)}")
    else:
        chosen = known
    if not chosen:
        print("no chapter notebooks listed in _toc.yml", file=sys.stderr)
        return 1

    if args.in_place:
        if args.profile not in ("auto", "ci"):
            parser.error("--in-place refreshes the committed ci-profile outputs only")
        profile, parameters = "ci", None  # the parameters cell's defaults are the ci profile
    else:
        profile = pick_profile(args.profile)
        parameters = {"PROFILE": profile}

    failures = []
    for rel in chosen:
        src = ROOT / rel
        # A refresh runs into _build/refresh/ first: a failed run leaves the committed notebook
        # as it was and the failed copy (with its traceback) there to read.
        dst = (ROOT / "_build" / "refresh" if args.in_place else args.out) / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        print(f"--- papermill {rel} -> {dst} (profile {profile}, cell timeout {args.timeout} s)")
        start = time.perf_counter()
        try:
            execute(src, dst, parameters, args.timeout)
        except Exception as exc:  # PapermillExecutionError, timeouts, a dead kernel
            failures.append(rel)
            print(
                f"FAILED {rel} (executed copy: {dst}): {type(exc).__name__}: {exc}", file=sys.stderr
            )
            continue
        nb = nbformat.read(dst, as_version=4)
        if args.in_place:
            strip_volatile(nb)
            nbformat.write(nb, src)
        else:
            hide_injected_defaults(nb, profile)
            nbformat.write(nb, dst)
        print(f"    ok in {time.perf_counter() - start:.1f} s")

    if failures:
        print(
            f"{len(failures)} notebook(s) failed: {', '.join(map(str, failures))}", file=sys.stderr
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
