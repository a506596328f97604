"""`layerwise inspect`: bad input gets one line naming the flag; tabular, image and text models
write a run directory whose report opens in a real browser without console errors."""

import json
import sys

import pytest
import torch

from layerwise.cli import main

import browser

SEED_MLP_ROWS = ["0.5,-1,2,0,0,1,0,0,0.3,0", "-1, -1, -1, 0, 2, 0, 0, 1, 0, 0", "1,1,1,0,0,0,0,0,0,0"]


def _run(args, capsys):
    """(exit code, stdout, the error line or the whole of stderr)."""
    code = main(args)
    cap = capsys.readouterr()
    errors = [line for line in cap.err.splitlines() if line.startswith("layerwise: ")]
    assert "Traceback" not in cap.err and len(errors) <= 1, cap.err
    return code, cap.out, (errors[0] + "\n") if errors else cap.err


def test_a_model_without_data_names_both_flags(tmp_path, capsys):
    code, _, err = _run(["inspect", "seed-cnn-mnist", "--out-dir", str(tmp_path / "r")], capsys)
    assert code == 2
    assert err.startswith("layerwise: error: ") and err.count("\n") == 1
    assert "--data" in err and "--inputs" in err
    assert not (tmp_path / "r").exists()  # nothing written


def test_attention_maps_of_a_cnn_are_refused(tmp_path, capsys):
    for data in ([], ["--data", "mnist-5k"]):  # refused before the data matters
        code, _, err = _run(["inspect", "seed-cnn-mnist", *data, "--sections", "attention", "--batch-size", "4",
                             "--out-dir", str(tmp_path / "r")], capsys)
        assert code == 2 and "--sections attention: no attention layers in this model" in err
        assert not (tmp_path / "r").exists()


def test_missing_captum_gives_the_pip_install_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "captum", None)
    monkeypatch.setitem(sys.modules, "captum.attr", None)
    code, _, err = _run(["inspect", "seed-mlp", "--inputs", *SEED_MLP_ROWS, "--out-dir", str(tmp_path / "r")], capsys)
    assert code == 2 and "pip install 'layerwise[inspect]'" in err and err.count("\n") == 1
    # without the attributions the rest still works
    code, out, _ = _run(["inspect", "seed-mlp", "--inputs", *SEED_MLP_ROWS, "--sections", "health",
                         "--out-dir", str(tmp_path / "r"), "--no-progress"], capsys)
    assert code == 0 and "Per-layer health" in out


@pytest.mark.parametrize("args, match", [
    (["seed-mlp", "--inputs", "1,2,3"], "has 3 numbers; this model takes 10 features"),
    (["seed-mlp", "--inputs", "a,b"], "is not comma-separated numbers"),
    (["seed-cnn-mnist", "--inputs", "hello"], "takes images; give them with --data"),
    (["seed-cnn-mnist", "--data", "sms-spam"], "holds texts"),
    (["no-such-model", "--data", "digits"], "unknown model preset 'no-such-model'"),
    (["seed-mlp", "--inputs", "1", "--sections", "bogus"], "--sections"),
])
def test_bad_input_is_one_line(tmp_path, capsys, args, match):
    code, _, err = _run(["inspect", *args, "--out-dir", str(tmp_path / "r")], capsys)
    assert code == 2 and match in err and err.count("\n") == 1


@pytest.mark.slow
def test_tabular_inputs_health_attributions_and_the_run_directory(tmp_path, capsys):
    pytest.importorskip("captum")
    out_dir = tmp_path / "r"
    args = ["inspect", "seed-mlp", "--inputs", *SEED_MLP_ROWS, "--lr", "1e-3", "--out-dir", str(out_dir), "--no-progress"]
    code, out, _ = _run(args, capsys)
    assert code == 0
    doc = json.loads((out_dir / "results.json").read_text())
    rows = doc["health"]["layers"]
    assert [r["name"] for r in rows] == ["hidden.0.linear", "hidden.1.linear", "head"]
    assert [r["activation"]["activation"] for r in rows] == ["ReLU", "ReLU", "Sigmoid"]
    assert all(r["grad_norm"] > 0 and r["update_ratio"] > 0 for r in rows)
    assert doc["health"]["optimizer"] == "sgd" and "own predictions" in doc["health"]["loss"]
    ig = doc["attributions"]["integrated_gradients"]
    assert ig["examples"] == 3 and ig["completeness_error_max"] < 0.01
    assert "permutation_importance" not in doc["attributions"]  # --inputs have no labels
    assert json.loads((out_dir / "run.json").read_text())["command"] == "inspect"
    assert (out_dir / "report.html").stat().st_size > 10_000
    assert "Per-layer health" in out and "run directory:" in out
    # the directory now belongs to that run: a second one is refused, then replaced with --overwrite
    code, _, err = _run(args, capsys)
    assert code == 2 and "--overwrite" in err
    assert _run([*args, "--overwrite"], capsys)[0] == 0


def _open_in_browser(report, tmp_path):
    if not browser.available():
        pytest.skip("Debian chromium and chromium-driver are installed by `make test`")
    r = browser.inspect_page(report, tmp_path / "shot.png")
    assert r["console"] == []
    for img in r["images"]:
        assert img["complete"] and img["w"] > 100 and img["h"] > 100, img
    return r


@pytest.mark.slow
def test_inspect_quick_on_a_trained_cnn_run_opens_in_the_browser(tmp_path, capsys):
    pytest.importorskip("captum")
    from layerwise.jobs.training import train_classifier
    from layerwise.train import TrainConfig

    run = tmp_path / "cnn-run"
    torch.manual_seed(0)
    train_classifier("seed-cnn-mnist", "mnist-5k", TrainConfig(steps=30, batch_size=64, lr=2e-3, out_dir=str(run),
                                                               log_every=10, device="cpu"))
    out_dir = tmp_path / "inspect"
    code, out, _ = _run(["inspect", str(run), "--quick", "--lr", "2e-3", "--out-dir", str(out_dir), "--no-progress"],
                        capsys)
    assert code == 0, out
    doc = json.loads((out_dir / "results.json").read_text())
    assert doc["trained"] and doc["data"]["source"] == "mnist-5k:test"  # the run's own data, its test split
    assert doc["health"]["optimizer"] == "adamw"  # the run's optimizer
    assert [r["name"] for r in doc["health"]["layers"]] == ["body.0", "body.3", "body.7", "head"]
    gc = doc["attributions"]["grad_cam"]
    assert gc["default_layer"] == "body.0" and set(gc["layers"]) == {"body.0", "body.3"}
    assert doc["weights"]["filters"]["shape"] == [32, 1, 3, 3]
    r = _open_in_browser(out_dir / "report.html", tmp_path)
    assert [s["title"] for s in r["sections"]] == ["What was inspected", "Per-layer health", "Grad-CAM", "Weights"]
    assert len(r["images"]) == 5


@pytest.mark.slow
def test_inspect_quick_on_a_text_classifier_and_a_gpt(tmp_path, capsys):
    pytest.importorskip("captum")
    out_dir = tmp_path / "bert"
    code, out, _ = _run(["inspect", "bert-tiny", "--data", "sms-spam", "--quick", "--out-dir", str(out_dir),
                         "--no-progress"], capsys)
    assert code == 0, out
    doc = json.loads((out_dir / "results.json").read_text())
    ti = doc["attributions"]["token_importance"]
    assert len(ti["texts"]) == 4 and ti["completeness_error_max"] < 0.01
    first = ti["texts"][0]
    assert "".join(t for t, _ in first["tokens"]).startswith("[CLS]")  # the pieces read as the text
    at = doc["attention"]
    assert len(at["layers"]) == 2 and all(layer["row_sums_max_error"] < 1e-5 for layer in at["layers"])
    html = (out_dir / "report.html").read_text()
    assert html.count("<p class='tokens'>") == 4
    r = _open_in_browser(out_dir / "report.html", tmp_path)
    assert [s["title"] for s in r["sections"]] == ["What was inspected", "Per-layer health", "Token importance",
                                                   "Attention maps", "Weights"]

    out_dir = tmp_path / "gpt"
    code, out, _ = _run(["inspect", "gpt-nano", "--inputs", "To be, or not to be", "--sections", "attention",
                         "--out-dir", str(out_dir), "--no-progress"], capsys)
    assert code == 0, out
    doc = json.loads((out_dir / "results.json").read_text())
    assert [layer["heads"] for layer in doc["attention"]["layers"]] == [3, 3, 3]
    assert doc["attention"]["text"] == "To be, or not to be"
    _open_in_browser(out_dir / "report.html", tmp_path)
