"""The book's build, as scripts/build_book.sh runs Jupyter Book (JB_BUILD of scripts/lib.sh).

Run on a one-page book in a temporary folder (not a site test: no browser, no built site): a
warning fails the build and is printed, and the log holds no dump of the MyST and MyST-NB
configurations (Sphinx's status lines, dozens of settings per build).
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def build(tmp_path: Path, page: str) -> subprocess.CompletedProcess:
    book = tmp_path / "book"
    book.mkdir()
    (book / "_config.yml").write_text('title: t\nexecute:\n  execute_notebooks: "off"\n')
    (book / "_toc.yml").write_text("format: jb-book\nroot: index\n")
    (book / "index.md").write_text(page)
    script = f'source "{ROOT}/scripts/lib.sh"; "${{JB_BUILD[@]}}" "$1" --path-output "$2"'
    return subprocess.run(
        ["bash", "-c", script, "build", str(book), str(tmp_path / "out")],
        capture_output=True,
        text=True,
        env={**os.environ, "NO_COLOR": "1"},
    )


def test_build_log_has_no_config_dump(tmp_path):
    run = build(tmp_path, "# A page\n\nSome text.\n")
    log = run.stdout + run.stderr
    assert run.returncode == 0, log
    assert (tmp_path / "out" / "_build" / "html" / "index.html").exists()
    for dump in ("MdParserConfig(", "NbParserConfig("):
        assert dump not in log, f"the build log dumps {dump}...):\n{log}"


def test_build_still_reports_warnings(tmp_path):
    run = build(tmp_path, "# A page\n\nA link to [nowhere](missing.md).\n")
    log = run.stdout + run.stderr
    assert run.returncode != 0, "a warning must fail the build"
    assert "WARNING" in log and "missing.md" in log, log
