"""`layerwise summary`: targets, formats, and one-line errors with exit code 2."""

import csv
import io
import json
import subprocess
import sys

import pytest

from layerwise.cli import main


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_preset_table(capsys):
    code, out, err = run(capsys, "summary", "resnet18", "--show-nesting", "1")
    assert code == 0
    assert "11,689,512" in out
    assert "weight_depth           18" in out
    assert "layer1.0" not in out  # nesting limit hides deeper rows


def test_json_csv_md_formats(capsys, tmp_path):
    code, out, _ = run(capsys, "summary", "seed-mlp", "--format", "json")
    doc = json.loads(out)
    assert doc["totals"]["params"] == 351 and doc["depth"]["weight_depth"] == 3
    code, out, _ = run(capsys, "summary", "seed-mlp", "--format", "csv", "--by", "kind")
    rows = list(csv.DictReader(io.StringIO(out)))
    assert sum(int(r["params"]) for r in rows) == 351
    code, out, _ = run(capsys, "summary", "seed-mlp", "--format", "md")
    assert out.startswith("# seed-mlp") and "| weight_depth | 3 |" in out
    target = tmp_path / "r.md"
    code, out, _ = run(capsys, "summary", "seed-mlp", "--format", "md", "-o", str(target))
    assert code == 0 and out == "" and target.read_text().startswith("# seed-mlp")


def test_keras_view(capsys):
    code, out, _ = run(capsys, "summary", "seed-cnn-mnist", "--keras")
    assert "Total params: 121,930" in out


def test_comparison_and_plot(capsys, tmp_path):
    png = tmp_path / "cmp.png"
    code, out, err = run(capsys, "summary", "resnet50", "mobilenet-v1", "--plot", str(png))
    assert code == 0
    assert "25,557,032" in out and "4,231,976" in out and "weight_depth" in out
    assert png.stat().st_size > 5000 and png.read_bytes()[:4] == b"\x89PNG"


def test_hugging_face_config_json(capsys, tmp_path):
    cfg = {"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"], "n_layer": 12, "n_head": 12, "n_embd": 768,
           "vocab_size": 50257, "n_positions": 1024}
    p = tmp_path / "config.json"
    p.write_text(json.dumps(cfg))
    code, out, _ = run(capsys, "summary", str(p), "--format", "json", "--seq-len", "32")
    doc = json.loads(out)
    assert doc["totals"]["params"] == 124_439_808
    assert doc["depth"]["weight_depth"] == 50 and doc["depth"]["block_depth"] == 12


def test_factory_target(capsys, tmp_path, monkeypatch):
    (tmp_path / "mymodels.py").write_text(
        "import torch.nn as nn\n"
        "def make():\n    return nn.Sequential(nn.Linear(784, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))\n"
    )
    monkeypatch.chdir(tmp_path)
    code, out, _ = run(capsys, "summary", "mymodels:make", "--input-shape", "1,784", "--format", "json")
    doc = json.loads(out)
    assert doc["totals"]["params"] == 55_050 and doc["depth"]["weight_depth"] == 3


def test_layerwise_config_file(capsys, tmp_path):
    p = tmp_path / "net.toml"
    p.write_text('family = "mlp"\nsizes = [784, 64, 64, 10]\nactivation = "relu"\n')
    code, out, _ = run(capsys, "summary", str(p), "--format", "json")
    assert json.loads(out)["totals"]["params"] == 55_050


@pytest.mark.parametrize(
    "argv,expected",
    [
        (["summary", "resnet5"], "unknown model preset 'resnet5'. Did you mean: resnet50"),
        (["summary", "resnet18", "--input-shape", "1,4,224,224"], "does not fit layer 'conv1' (Conv2d)"),
        (["summary", "resnet18", "--input-shape", "1,3,x"], "expected comma-separated integers"),
        (["summary", "no_such_module_xyz:make"], "cannot import module 'no_such_module_xyz'"),
    ],
)
def test_bad_input_is_one_line_exit_2(capsys, argv, expected):
    code, out, err = run(capsys, *argv)
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("layerwise: error: ")
    assert expected in err


def test_malformed_config_names_file_and_field(capsys, tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"family": "mlp", "sizes": [4, -3, 2]}')
    code, _, err = run(capsys, "summary", str(bad))
    assert code == 2 and str(bad) in err and "MLPConfig.sizes" in err and "positive" in err
    bad.write_text('{"family": "mlp", "sizez": [4, 3, 2]}')
    code, _, err = run(capsys, "summary", str(bad))
    assert code == 2 and "unknown field(s) sizez" in err and "valid fields: sizes" in err
    bad.write_text('{"family": ')
    code, _, err = run(capsys, "summary", str(bad))
    assert code == 2 and "malformed JSON at line 1" in err


def test_console_script_exit_code_and_no_traceback(tmp_path):
    (tmp_path / "broken.py").write_text("raise RuntimeError('boom at import')\n")
    r = subprocess.run([sys.executable, "-m", "layerwise", "summary", "broken:make"], cwd=tmp_path,
                       capture_output=True, text=True)
    assert r.returncode == 2
    assert "Traceback" not in r.stderr
    assert r.stderr.strip() == "layerwise: error: broken:make: cannot import module 'broken': RuntimeError: boom at import"
