"""`layerwise examples` / `layerwise example NAME --quick`: every program of the articles'
bank runs end to end and leaves every artifact (CI runs each one in --quick)."""

import json
import sys
from pathlib import Path

import pytest

from layerwise.cli import main
from layerwise.jobs.examples import examples, get_example
from layerwise.rundir import read_manifest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import browser  # noqa: E402 - tests/browser.py


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
    if browser.available():  # the report opens in a real browser, every plot shows, the console is clean
        page = browser.inspect_page(out / "report.html", tmp_path / "report.png")
        assert page["console"] == [] and page["images"]
        assert all(i["complete"] and i["w"] > 0 and i["shown_w"] > 0 for i in page["images"]), page["images"]
    assert list(out.glob("*.png")), "no plot"
    if (out / "checkpoints").exists():
        assert list((out / "checkpoints").glob("step-*/model.safetensors")) or list(
            (out / "checkpoints").glob("step-*/*.safetensors"))
    # a second run into the same directory is refused, not mixed
    capsys.readouterr()
    assert main(["example", name, "--quick", "--out-dir", str(out), "--no-progress"]) == 2
    assert "--overwrite" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.parametrize("name, flags", [
    ("dqn-maze", ["--steps", "30", "--checkpoint-every", "10", "--eval-every", "15", "--log-every", "5"]),
    ("gan-mnist", ["--steps", "12", "--checkpoint-every", "5", "--eval-every", "6", "--log-every", "1"]),
])
def test_ctrl_c_then_resume_continues_exactly(name, flags, tmp_path, capsys, monkeypatch):
    import signal

    import layerwise.commands._training as training_cli
    from layerwise.train import read_records

    def train_records(run):
        drop = ("elapsed_s", "images_per_s", "transitions_per_s", "mfu")
        return [{k: v for k, v in r.items() if k not in drop} for r in read_records(run / "metrics.jsonl")
                if r["split"] in ("train", "val")]

    argv = ["example", name, "--quick", *flags, "--no-progress"]
    assert main([*argv, "--out-dir", str(tmp_path / "whole")]) == 0
    real = training_cli.Progress.__call__

    def ctrl_c_at_step_8(self, ev):
        real(self, ev)
        if ev.kind == "step" and ev.step == 8:
            signal.raise_signal(signal.SIGINT)

    monkeypatch.setattr(training_cli.Progress, "__call__", ctrl_c_at_step_8)
    cut = tmp_path / "cut"
    assert main([*argv, "--out-dir", str(cut)]) == 130
    assert read_manifest(cut)["status"] == "interrupted" and "interrupted at step 8" in capsys.readouterr().err
    monkeypatch.setattr(training_cli.Progress, "__call__", real)
    assert main([*argv, "--out-dir", str(cut), "--resume"]) == 0
    assert read_manifest(cut)["status"] == "finished"
    assert train_records(cut) == train_records(tmp_path / "whole")  # losses, evaluations: exactly
    whole, resumed = (json.loads((d / "results.json").read_text())["metrics"] for d in (tmp_path / "whole", cut))
    assert whole == resumed
