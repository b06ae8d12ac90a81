"""The README and the book's intro list the chapters that exist, as _toc.yml has them.

Both keep a list of the book's parts and chapters in this form, in the order of the sidebar:

    - **Foundations**
      - [From a continuous ODE to S4](book/01_from_ode_to_s4.ipynb): what it covers.

(the intro links relative to book/). Parts that are not written yet are listed in prose, with
no link to a chapter file. The list must equal _toc.yml's parts (captions), chapters (files,
in order) and chapter titles (the first heading of each notebook or page), so that neither
promises a chapter that does not exist nor misses one that does.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
PART = re.compile(r"^- \*\*(?P<caption>[^*]+)\*\*$")
CHAPTER = re.compile(r"^  - \[(?P<title>[^\]]+)\]\((?P<target>[^)\s]+)\)")
CHAPTER_LINK = re.compile(r"\]\(([^)\s]+\.(?:ipynb|md))\)")
DOCS = {  # document -> (the folder its links are relative to, the heading of its list)
    "README.md": ("", "## The book"),
    "book/intro.md": ("book", "## Reading map"),
}

Outline = list[tuple[str, list[tuple[str, str]]]]


def toc_outline(toc: dict) -> Outline:
    """[(part caption, [(chapter file, title), ...]), ...] of a _toc.yml (jb-book format)."""
    parts = toc.get("parts") or [{"caption": None, "chapters": toc.get("chapters", [])}]
    return [
        (part.get("caption"), [(c["file"], chapter_title(c["file"])) for c in part["chapters"]])
        for part in parts
    ]


def chapter_title(file: str) -> str:
    """The first level-1 heading of the chapter (a notebook's markdown cell or a page)."""
    stem = ROOT / Path(file).with_suffix("")
    if stem.with_suffix(".ipynb").exists():
        cells = json.loads(stem.with_suffix(".ipynb").read_text())["cells"]
        text = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "markdown")
    else:
        text = stem.with_suffix(".md").read_text()
    heading = re.search(r"^# (.+)$", text, re.MULTILINE)
    assert heading, f"{file} has no title (a first '# ' heading)"
    return heading.group(1).strip()


def section(text: str, heading: str) -> str:
    """The lines under ``heading`` up to the next heading of the same level."""
    start = text.index(heading + "\n") + len(heading) + 1
    end = re.search(rf"^{heading.split()[0]} ", text[start:], re.MULTILINE)
    return text[start : start + end.start()] if end else text[start:]


def listed_outline(text: str, folder: str) -> Outline:
    """The parts and chapters a document lists, its links made relative to the repository."""
    outline: Outline = []
    for line in text.splitlines():
        if m := PART.match(line):
            outline.append((m["caption"], []))
        elif m := CHAPTER.match(line):
            if not outline:
                raise AssertionError(f"chapter {m['title']!r} listed before any part")
            target = (Path(folder) / m["target"]).with_suffix("").as_posix()
            outline[-1][1].append((target, m["title"]))
    return outline


def toc() -> dict:
    return yaml.safe_load((ROOT / "_toc.yml").read_text())


@pytest.mark.parametrize("doc", sorted(DOCS))
def test_chapter_list_matches_toc(doc):
    folder, heading = DOCS[doc]
    text = (ROOT / doc).read_text()
    assert heading + "\n" in text, f"{doc} has no {heading!r} section listing the chapters"
    listed = listed_outline(section(text, heading), folder)
    expected = toc_outline(toc())
    assert listed == expected, (
        f"{doc} lists other parts or chapters than _toc.yml:\n  {doc}: {listed}\n"
        f"  _toc.yml: {expected}"
    )


@pytest.mark.parametrize("doc", sorted(DOCS))
def test_no_link_to_a_chapter_that_does_not_exist(doc):
    folder, _ = DOCS[doc]
    files = {f for _, chapters in toc_outline(toc()) for f, _ in chapters}
    text = (ROOT / doc).read_text()
    links = {(Path(folder) / t).with_suffix("").as_posix() for t in CHAPTER_LINK.findall(text)}
    chapters = {link for link in links if link.startswith("book/")}
    assert chapters <= files, f"{doc} links chapters that are not in _toc.yml: {chapters - files}"


def test_toc_has_parts():
    """Every chapter sits in a captioned part, so that the sidebar groups them."""
    parts = toc().get("parts")
    assert parts and not toc().get("chapters"), "_toc.yml: chapters belong in parts"
    assert all(p.get("caption") for p in parts), "_toc.yml: every part needs a caption"


def test_outline_check_can_fail():
    """A chapter missing from a list, one too many, and a renamed part are all caught."""
    expected = toc_outline(toc())
    (caption, chapters), rest = expected[0], expected[1:]
    variants = [
        [(caption, chapters[:-1]), *rest],
        [(caption, [*chapters, ("book/02_not_written", "Not written")]), *rest],
        [("Renamed", chapters), *rest],
    ]
    for variant in variants:
        lines = []
        for cap, chs in variant:
            lines.append(f"- **{cap}**")
            lines += [f"  - [{title}]({file}.ipynb): ..." for file, title in chs]
        assert listed_outline("\n".join(lines), "") != expected


def test_kernels_chapter_comes_after_the_models():
    """ "Making SSMs fast" is in the last part, after every model chapter."""
    outline = toc_outline(toc())
    where = [i for i, (_, chapters) in enumerate(outline) for f, _ in chapters]
    files = [f for _, chapters in outline for f, _ in chapters]
    part = where[files.index("book/making_ssms_fast")]
    assert part == len(outline) - 1, f"'Making SSMs fast' is in part {part + 1} of {len(outline)}"
