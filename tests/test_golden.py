"""Golden files for printed reports. Regenerate on purpose, never by accident:

    LAYERWISE_UPDATE_GOLDEN=1 .venv/bin/python -m pytest tests/test_golden.py

then read the diff before committing it.
"""

import dataclasses
import json
import os
from pathlib import Path

import pytest

from layerwise.analysis import analyze
from layerwise.models import build
from layerwise.report import table

GOLDEN = Path(__file__).parent / "golden"
UPDATE = os.environ.get("LAYERWISE_UPDATE_GOLDEN") == "1"

CASES = {
    "seed-mlp": dict(),
    "seed-cnn-mnist": dict(),
    "seed-lstm": dict(seq_len=20),
    "gpt-nano": dict(seq_len=16),
}


def _compare(name: str, text: str):
    path = GOLDEN / name
    if UPDATE:
        path.write_text(text)
    assert path.exists(), f"golden file {path} missing: run with LAYERWISE_UPDATE_GOLDEN=1"
    assert text == path.read_text(), f"{name} differs from its golden file"


@pytest.mark.parametrize("preset", sorted(CASES))
def test_table_and_json_match_golden(preset):
    a = analyze(build(preset, device="meta"), name=preset, **CASES[preset])
    # invariants, explicitly: the rows add up to the totals
    assert sum(r.params for r in a.rows) == a.totals.params == a.rows[0].params_total
    assert a.totals.trainable + a.totals.frozen == a.totals.params
    assert sum(k.params for k in a.by_kind) == a.totals.params
    _compare(f"{preset}.table.txt", table.render(a, explain=True))
    _compare(f"{preset}.kind.txt", table.render(a, by="kind"))
    assert a.to_dict() == dataclasses.asdict(a)  # the fast to_dict is asdict's layout exactly
    _compare(f"{preset}.json", json.dumps(a.to_dict(), indent=1, sort_keys=True) + "\n")
