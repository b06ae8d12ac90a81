"""Published numbers (``data/papers/*.csv``): typed reading, averages that match their tasks,
the S4 v1 -> v2 gains, the references, and the path an installed wheel reads them from."""

from __future__ import annotations

import fnmatch
import re
import shutil
import sys
from pathlib import Path

import pytest

from ssm import papers
from ssm.experiments import _results

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib

ROOT = Path(__file__).resolve().parent.parent
TABLES = sorted(p.stem for p in (ROOT / "data" / "papers").glob("*.csv"))


def test_tables_are_there():
    assert {"s4_lra", "s4_hippo_ablation"} <= set(TABLES)


def test_typed_values():
    rows = {r["model"]: r for r in papers.table("s4_lra")}
    v1 = rows["S4 (original v1)"]
    assert v1["listops"] == 58.35 and isinstance(v1["pathx"], float)
    assert rows["Transformer"]["pathx"] is None  # ✗
    assert v1["trust"] == "P" and v1["note"] is None  # an empty cell


@pytest.mark.parametrize("model", ["S4 (original v1)", "S4 (updated v2)"])
def test_complete_rows_average_their_tasks(model):
    """The printed average is the mean of the six tasks (to the tables' 2 decimals)."""
    row = next(r for r in papers.table("s4_lra") if r["model"] == model)
    assert all(row[t] is not None for t in papers.LRA_TASKS)
    assert abs(papers.lra_average(row) - row["avg"]) <= 0.005


def test_rows_with_a_failed_task_count_it_as_chance():
    """Rows with Path-X ✗ print the mean with ✗ as 50, as the papers do (not the mean of 5)."""
    failed = [r for r in papers.table("s4_lra") if r["pathx"] is None]
    assert [r["model"] for r in failed] == ["Transformer", "S4-FouT", "S4-LegS/FouT"]
    for row in failed:
        assert abs(papers.lra_average(row) - row["avg"]) <= 0.005, row["model"]
        five = sum(row[t] for t in papers.LRA_TASKS[:5]) / 5
        assert abs(five - row["avg"]) > 0.5


def test_v2_gain_is_under_six_points():
    """The seed's "more than 6 points": the average rises 5.61 (80.48 -> 86.09), Text +10.8."""
    gain = papers.lra_gain(papers.table("s4_lra"), "S4 (original v1)", "S4 (updated v2)")
    assert gain["avg"] == 5.61
    assert gain["tasks"]["text"] == 10.8 and gain["largest"] == "text"
    assert gain["tasks"]["pathx"] == 8.25 and gain["tasks"]["listops"] == 1.25
    fout = papers.lra_gain(papers.table("s4_lra"), "S4 (updated v2)", "S4-FouT")
    assert fout["tasks"]["pathx"] is None and fout["tasks"]["image"] == 0.42


def test_ablation_reads_agree_with_the_text():
    """The values read off S4's Fig. 3 with A trained span more than the stated 15 points, and
    every read value says it was read off a plot."""
    rows = papers.table("s4_hippo_ablation")
    fig3 = [r for r in rows if r["figure"] == "Fig. 3"]
    assert all(r["reading"] == "read off the plot, ±0.01" for r in fig3)
    trained = [r["value"] for r in fig3 if r["A"] == "trained"]
    bound = next(r["value"] for r in rows if "separated by over 15%" in r["reading"])
    assert (max(trained) - min(trained)) * 100 > bound == 15
    assert any(r["value"] == 84.27 for r in rows)
    hippo = {(r["figure"], r["A"]): r["value"] for r in rows if r["init"] == "HiPPO"}
    assert hippo["Fig. 4", "trained"] > hippo["Fig. 3", "trained"]  # NPLR beats dense


def test_references_match_the_bibliography():
    bib = (ROOT / "book" / "references.bib").read_text(encoding="utf-8")
    for name in TABLES:
        for row in papers.table(name):
            assert row["citation"] in papers.REFERENCES
            assert row["trust"] in ("P", "S")
            assert row["source"] in papers.cite(row)
    for key, (_, _, year, arxiv) in papers.REFERENCES.items():
        entry = re.search(r"@\w+\{" + key + r",(.*?)\n\}", bib, re.S)
        assert entry, key
        assert f"eprint        = {{{arxiv}}}" in entry.group(1)
        assert f"year          = {{{year}}}" in entry.group(1)


def test_read_through_the_package_data_path(tmp_path, monkeypatch):
    """An installed wheel has the tables in ssm/_data/papers: table() reads data_path's copy."""
    copy = tmp_path / "papers"
    copy.mkdir()
    shutil.copy(ROOT / "data" / "papers" / "s4_lra.csv", copy / "s4_lra.csv")
    text = (copy / "s4_lra.csv").read_text(encoding="utf-8")
    (copy / "s4_lra.csv").write_text(text.replace("58.35", "11.11"), encoding="utf-8")
    monkeypatch.setattr(_results, "DATA_DIR", tmp_path)
    assert papers.table("s4_lra")[1]["listops"] == 11.11


def test_wheel_ships_the_tables():
    """pyproject's package data for ssm._data (= data/) covers every data/papers/*.csv."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    globs = config["tool"]["setuptools"]["package-data"]["ssm._data"]
    for name in TABLES:
        assert any(fnmatch.fnmatch(f"papers/{name}.csv", g) for g in globs), name


@pytest.mark.parametrize("name, match", [("../x", "table name"), ("nope", "available")])
def test_bad_names(name, match):
    with pytest.raises(ValueError, match=match):
        papers.table(name)


def test_unknown_model_and_citation():
    rows = papers.table("s4_lra")
    with pytest.raises(ValueError, match="model"):
        papers.lra_gain(rows, "S4", "S4 (updated v2)")
    with pytest.raises(ValueError, match="citation"):
        papers.cite({"citation": "nobody2020", "source": "x"})
