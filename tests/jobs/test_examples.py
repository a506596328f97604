"""`layerwise examples` / `layerwise example NAME --quick`: every program of the articles'
bank runs end to end and leaves every artifact (CI runs each one in --quick)."""

import json

import pytest

from layerwise.cli import main
from layerwise.jobs.examples import examples, get_example
from layerwise.rundir import read_manifest


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LAYERWISE_CACHE", str(tmp_path / "cache"))


def test_the_table_lists_every_example_with_its_target(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "400")  # one line per example: no cell wraps
    assert main(["examples"]) == 0
    out = capsys.readouterr().out
    for ex in examples():
        assert ex.name in out and ex.targets
        assert all(str(t) in out.replace("\n", " ") or t.metric in out for t in ex.targets)


def test_unknown_names_and_flags_are_one_line_errors(capsys):
    assert main(["example", "no-such-example"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("layerwise: error: unknown example 'no-such-example'") and "cnn-mnist" in err
    assert main(["example", "cnn-mnist", "--no-such-flag", "3"]) == 2
    err = capsys.readouterr().err.strip()
    assert "unrecognized arguments: --no-such-flag 3" in err and "\n" not in err


@pytest.mark.slow
@pytest.mark.parametrize("name", [ex.name for ex in examples()])
def test_every_example_runs_quick_and_writes_every_artifact(name, tmp_path, capsys):
    out = tmp_path / name
    assert main(["example", name, "--quick", "--out-dir", str(out), "--no-progress"]) == 0
    doc = json.loads((out / "results.json").read_text())
    assert doc["example"] == name and doc["quick"] is True
    for t in get_example(name).targets:
        assert isinstance(doc["metrics"].get(t.metric), (int, float)), t.metric
    assert read_manifest(out)["command"] == f"example:{name}" and read_manifest(out)["status"] == "finished"
    html = (out / "report.html").read_text()
    assert html.startswith("<!doctype html>") and name in html
    assert list(out.glob("*.png")), "no plot"
    if (out / "checkpoints").exists():
        assert list((out / "checkpoints").glob("step-*/model.safetensors")) or list(
            (out / "checkpoints").glob("step-*/*.safetensors"))
    # a second run into the same directory is refused, not mixed
    capsys.readouterr()
    assert main(["example", name, "--quick", "--out-dir", str(out), "--no-progress"]) == 2
    assert "--overwrite" in capsys.readouterr().err
