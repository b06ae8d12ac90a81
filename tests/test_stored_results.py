"""Every stored full-profile record still matches its experiment's current ``full`` config.

A record in ``data/results`` is plotted by its chapter as the ``full`` run of the experiment;
once the experiment's ``full`` config changes, the record no longer describes it and must be
rerun (``python -m ssm.experiments NAME --profile full`` on a GPU).
"""

from __future__ import annotations

import json

import pytest

from ssm.experiments import available, get
from ssm.experiments._results import PROVENANCE_KEYS, RESULTS_DIR, config_hash

RECORDS = sorted(RESULTS_DIR.glob("*.json"))


def test_there_are_stored_records():
    assert len(RECORDS) >= 4


@pytest.mark.parametrize("path", RECORDS, ids=[p.stem for p in RECORDS])
def test_a_stored_record_matches_the_current_full_config(path):
    record = json.loads(path.read_text())
    assert record["experiment"] == path.stem in available()
    assert set(PROVENANCE_KEYS) <= set(record["provenance"])
    current = config_hash(get(path.stem).config(record["profile"]))
    assert record["provenance"]["config_hash"] == current, (
        f"{path.name} was run with another config; rerun "
        f"`python -m ssm.experiments {path.stem} --profile full` on a GPU"
    )


def test_stored_or_none_prints_the_provenance_or_how_to_make_the_record(capsys):
    from ssm.experiments import stored_or_none

    name = RECORDS[0].stem
    record = stored_or_none(name)
    assert record["experiment"] == name
    assert capsys.readouterr().out.startswith(f"{name}, full profile: ")
    assert stored_or_none("no_such_experiment") is None
    assert "python -m ssm.experiments no_such_experiment --profile full" in capsys.readouterr().out
