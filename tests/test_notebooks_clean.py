"""Checks of the committed chapter notebooks, without running them (nbval runs them).

Every notebook in book/ is listed in _toc.yml, starts with a code cell tagged ``parameters``
that sets ``PROFILE = "ci"``, was executed top to bottom (its outputs are what nbval compares),
and its outputs are clean: no errors, nothing on stderr (warnings), no progress bars, no
absolute paths of the machine it ran on, no papermill run records. At most a quarter of its
code cells are exempt from nbval's comparison. A cell that installs packages (for Colab) never
installs torch.
"""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
BOOK = ROOT / "book"

NBVAL_EXEMPT_TAGS = {"nbval-ignore-output", "nbval-skip", "raises-exception", "nbval-raises"}
NBVAL_EXEMPT_COMMENT = re.compile(r"^\s*#\s*NBVAL_(IGNORE_OUTPUT|SKIP|RAISES_EXCEPTION)", re.M)
MACHINE_PATH = re.compile(r"(/work/|/tmp/|/root/|/home/|/Users/|/opt/|/private/var/|[A-Z]:\\\\)")
PROGRESS_BAR = re.compile(r"\r|\d+%\|[^|]*\||\d+(\.\d+)?\s*it/s|s/it\]")


def toc_entries() -> list[str]:
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    entries = [toc["root"]]
    stack = list(toc.get("chapters", [])) + list(toc.get("parts", []))
    while stack:
        entry = stack.pop(0)
        if "file" in entry:
            entries.append(entry["file"])
        stack.extend(entry.get("chapters", []) + entry.get("sections", []))
    return [str(Path(e).with_suffix("")) if Path(e).suffix else e for e in entries]


def committed_notebooks() -> list[Path]:
    return sorted(
        p
        for p in BOOK.rglob("*.ipynb")
        if ".ipynb_checkpoints" not in p.parts and "_build" not in p.parts
    )


NOTEBOOKS = committed_notebooks()
IDS = [p.relative_to(ROOT).as_posix() for p in NOTEBOOKS]


def load(path: Path) -> dict:
    return json.loads(path.read_text())


def code_cells(nb: dict) -> list[dict]:
    return [c for c in nb["cells"] if c["cell_type"] == "code"]


def source(cell: dict) -> str:
    src = cell.get("source", "")
    return src if isinstance(src, str) else "".join(src)


def output_texts(output: dict) -> list[str]:
    """All the text an output shows (stream text, plain text, html, latex, tracebacks)."""
    texts = []
    if "text" in output:
        texts.append(output["text"] if isinstance(output["text"], str) else "".join(output["text"]))
    for mime, value in output.get("data", {}).items():
        if mime.startswith("text/") or mime in ("application/json",):
            texts.append(value if isinstance(value, str) else "".join(map(str, value)))
    texts += output.get("traceback", [])
    return texts


def test_every_toc_file_exists():
    missing = [
        e for e in toc_entries() if not any((ROOT / f"{e}{s}").exists() for s in (".ipynb", ".md"))
    ]
    assert not missing, f"_toc.yml lists files that do not exist: {missing}"


def test_book_has_chapters():
    assert NOTEBOOKS, "no chapter notebook in book/: the book has nothing to test"


def test_every_notebook_is_in_the_toc():
    listed = set(toc_entries())
    unlisted = [
        p.relative_to(ROOT).as_posix()
        for p in NOTEBOOKS
        if p.relative_to(ROOT).with_suffix("").as_posix() not in listed
    ]
    assert not unlisted, f"notebooks in book/ missing from _toc.yml (never built): {unlisted}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_first_code_cell_is_the_parameters_cell(path):
    cells = code_cells(load(path))
    assert cells, f"{path.name} has no code cell"
    first = cells[0]
    assert "parameters" in first.get("metadata", {}).get("tags", []), (
        f"{path.name}: the first code cell must be tagged 'parameters' (papermill injects the "
        "profile after it)"
    )
    assigned = {
        target.id: node.value
        for node in ast.parse(source(first)).body
        if isinstance(node, ast.Assign)
        for target in node.targets
        if isinstance(target, ast.Name)
    }
    assert "PROFILE" in assigned, f"{path.name}: the parameters cell must set PROFILE"
    value = assigned["PROFILE"]
    assert isinstance(value, ast.Constant) and value.value == "ci", (
        f"{path.name}: the committed default must be PROFILE = 'ci' (the outputs nbval checks)"
    )


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_executed_top_to_bottom(path):
    cells = [c for c in code_cells(load(path)) if source(c).strip()]
    counts = [c.get("execution_count") for c in cells]
    assert all(n is not None for n in counts), (
        f"{path.name}: unexecuted code cells (refresh the outputs with `make refresh`)"
    )
    assert counts == list(range(1, len(counts) + 1)), (
        f"{path.name}: execution counts {counts} are not 1..{len(counts)}: the notebook was not "
        "run top to bottom in a fresh kernel (refresh it with `make refresh`)"
    )
    assert any(c.get("outputs") for c in cells), f"{path.name}: no outputs for nbval to compare"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_outputs_are_clean(path):
    problems = []
    for i, cell in enumerate(code_cells(load(path))):
        for output in cell.get("outputs", []):
            kind = output["output_type"]
            if kind == "error":
                problems.append(f"code cell {i}: error output {output.get('ename')}")
            if kind == "stream" and output.get("name") == "stderr":
                text = "".join(output_texts(output))[:120]
                problems.append(f"code cell {i}: stderr output (a warning?): {text!r}")
            for text in output_texts(output):
                if PROGRESS_BAR.search(text):
                    problems.append(f"code cell {i}: progress-bar output: {text[:120]!r}")
                if MACHINE_PATH.search(text):
                    problems.append(f"code cell {i}: machine path in output: {text[:120]!r}")
    assert not problems, f"{path.name}:\n  " + "\n  ".join(problems)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_no_run_records_or_machine_paths_in_metadata(path):
    nb = load(path)
    assert "papermill" not in nb.get("metadata", {}), (
        f"{path.name}: papermill metadata (run times, paths): refresh with `make refresh`, "
        "which strips it"
    )
    volatile = [
        i
        for i, c in enumerate(nb["cells"])
        if {"papermill", "execution"} & set(c.get("metadata", {}))
    ]
    assert not volatile, f"{path.name}: cells {volatile} carry run records (papermill/execution)"
    metadata = json.dumps(nb.get("metadata", {})) + json.dumps(
        [c.get("metadata", {}) for c in nb["cells"]]
    )
    assert not MACHINE_PATH.search(metadata), f"{path.name}: a machine path in the metadata"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_at_most_a_quarter_of_cells_exempt_from_nbval(path):
    cells = code_cells(load(path))
    exempt = [
        i
        for i, c in enumerate(cells)
        if NBVAL_EXEMPT_TAGS & set(c.get("metadata", {}).get("tags", []))
        or NBVAL_EXEMPT_COMMENT.search(source(c))
    ]
    assert 4 * len(exempt) <= len(cells), (
        f"{path.name}: {len(exempt)} of {len(cells)} code cells are exempt from nbval "
        f"(cells {exempt}); at most a quarter may be"
    )


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_install_cells_never_touch_torch(path):
    for i, cell in enumerate(code_cells(load(path))):
        for line in source(cell).splitlines():
            if re.search(r"\bpip\b.*\binstall\b", line):
                assert not re.search(r"\btorch\b", line.split("#")[0]), (
                    f"{path.name}, code cell {i}: an install line mentions torch: {line.strip()!r}"
                    " (Colab's torch must be kept; install the package with its own pins only)"
                )


def sanitize(text: str) -> str:
    """Apply tests/nbval_sanitize.cfg the way nbval does (each section's regex, in order)."""
    import configparser

    config = configparser.ConfigParser(interpolation=None)
    config.read(ROOT / "tests" / "nbval_sanitize.cfg")
    for section in config.sections():
        text = re.sub(config[section]["regex"], config[section]["replace"], text)
    return text


@pytest.mark.parametrize("varies", ["<Foo object at 0x7f3a2c1b9d90>", "at 0xDEADBEEF>"])
def test_sanitizer_masks_what_varies(varies):
    assert sanitize(varies) != varies


@pytest.mark.parametrize(
    "result",
    [
        "<Figure size 800x400 with 2 Axes>",
        "max error 3.1e-12",
        "N = 64 states, 3 steps",
        "RMSE 0.405",
        "L = 1024, H = 8",
        # the duration of a stored run is part of its provenance, the same at every run
        "views, full profile: cuda: NVIDIA H100 80GB HBM3, commit 169691775e, 101 s",
        "s4_kernel, full profile: 27 s",
    ],
)
def test_sanitizer_keeps_results(result):
    assert sanitize(result) == result, "the nbval sanitizer hides a result, not a timing"


#: A call that plots live timings: a timing plot of a live run, not of a stored one.
LIVE_TIMING_PLOT = re.compile(r"\bplot_timings\((?![^)]*(stored|\[.results.\]))")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_live_timing_cells_are_exempt_from_nbval(path):
    """Live timings vary from run to run and the sanitizer does not mask them: every cell that
    shows one is tagged nbval-ignore-output."""
    for i, cell in enumerate(code_cells(load(path))):
        if LIVE_TIMING_PLOT.search(source(cell)):
            assert "nbval-ignore-output" in cell.get("metadata", {}).get("tags", []), (
                f"{path.name}, code cell {i} shows live timings but is compared by nbval"
            )


def test_the_live_timing_pattern_tells_live_from_stored():
    assert LIVE_TIMING_PLOT.search("views.plot_timings(vw)")
    assert not LIVE_TIMING_PLOT.search('views.plot_timings(full_views["results"])')


LOCAL_LINK = re.compile(r"\]\((?!https?:|#|mailto:)([^)#\s]+)|\{doc\}`(?:[^<`]*<)?([^>`]+)>?`")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_links_point_at_chapters_that_exist(path):
    """A link to another page of the book names a file of _toc.yml; a chapter that is not
    written yet is named as coming, in words, not linked."""
    listed = set(toc_entries())
    for i, cell in enumerate(load(path)["cells"]):
        if cell["cell_type"] != "markdown":
            continue
        for match in LOCAL_LINK.finditer(source(cell)):
            target = (path.parent / (match.group(1) or match.group(2))).resolve()
            page = target.relative_to(ROOT).with_suffix("").as_posix()
            assert page in listed, f"{path.name}, cell {i}: link to {page!r}, not in _toc.yml"


def test_the_link_pattern_finds_both_kinds_of_link():
    text = "see [S4D](02_s4d.ipynb), {doc}`the intro <intro>` and [a paper](https://arxiv.org)"
    found = [m.group(1) or m.group(2) for m in LOCAL_LINK.finditer(text)]
    assert found == ["02_s4d.ipynb", "intro"]
