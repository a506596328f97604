"""`layerwise summary`: targets, formats, and one-line errors with exit code 2."""

import csv
import io
import json
import re
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


def _hf_config_file(tmp_path, name, cfg, arch):
    d = cfg.to_dict()
    d["architectures"] = [arch]
    p = tmp_path / f"{name}.json"
    p.write_text(json.dumps(d))
    return p


def _encoder_decoders():
    import transformers as T

    small = dict(d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4, decoder_attention_heads=4,
                 encoder_ffn_dim=64, decoder_ffn_dim=64, vocab_size=100)
    return {
        "t5": (T.T5Config(d_model=32, d_ff=64, num_layers=2, num_decoder_layers=2, num_heads=4, d_kv=8, vocab_size=100),
               "T5ForConditionalGeneration", (9, 13)),
        "bart": (T.BartConfig(**small, max_position_embeddings=64), "BartForConditionalGeneration", (9, 13)),
        "marian": (T.MarianConfig(**small, max_position_embeddings=64, decoder_start_token_id=0, pad_token_id=0),
                   "MarianMTModel", (9, 13)),
        "whisper": (T.WhisperConfig(**small, num_mel_bins=16, max_source_positions=30, max_target_positions=32,
                                    pad_token_id=0, bos_token_id=1, eos_token_id=2, decoder_start_token_id=1,
                                    begin_suppress_tokens=None, suppress_tokens=None),
                    "WhisperForConditionalGeneration", (10, 13)),
    }


@pytest.mark.parametrize("family", ["t5", "bart", "marian", "whisper"])
def test_encoder_decoder_config_json_gets_decoder_inputs_and_both_depths(capsys, tmp_path, family):
    cfg, arch, (enc, dec) = _encoder_decoders()[family]
    p = _hf_config_file(tmp_path, family, cfg, arch)
    code, out, _ = run(capsys, "summary", str(p), "--format", "json", "--seq-len", "8", "--decoder-seq-len", "5")
    assert code == 0
    doc = json.loads(out)
    assert doc["input_shape"]["decoder_input_ids"] == [1, 5]
    main = "input_features" if family == "whisper" else "input_ids"
    assert doc["input_shape"][main] == ([1, 16, 60] if family == "whisper" else [1, 8])  # Whisper: 2 × 30 mel frames
    parts = {p["part"]: (p["weight_depth"], p["block_depth"]) for p in doc["depth"]["parts"]}
    assert parts == {"encoder": (enc, 2), "decoder": (dec, 2)}
    code, out, _ = run(capsys, "summary", str(p), "--show-nesting", "0")
    assert code == 0 and re.search(rf"encoder weight_depth\s+{enc}\s", out) and re.search(r"decoder block_depth\s+2\s", out)


def test_decoder_seq_len_on_a_decoder_only_model_is_refused(capsys):
    code, _, err = run(capsys, "summary", "gpt-nano", "--decoder-seq-len", "4")
    assert code == 2 and err.startswith("layerwise: error: --decoder-seq-len:") and "not an encoder-decoder" in err


def test_config_dtype_is_honoured_and_dtype_overrides_it(capsys, tmp_path):
    import transformers as T

    cfg = T.MixtralConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                          num_key_value_heads=2, vocab_size=100, num_local_experts=4, num_experts_per_tok=2,
                          dtype="bfloat16")
    p = _hf_config_file(tmp_path, "mixtral", cfg, "MixtralForCausalLM")
    assert json.loads(p.read_text())["dtype"] == "bfloat16"
    code, out, err = run(capsys, "summary", str(p), "--format", "json", "--seq-len", "16")
    assert code == 0, err
    doc = json.loads(out)
    params = doc["totals"]["params"]
    assert doc["totals"]["weight_bytes"] == 2 * params  # bf16 on meta, and grouped_mm did not crash
    assert doc["totals"]["active_params"] < params and doc["totals"]["flops_forward"] > 0
    code, out, _ = run(capsys, "summary", str(p), "--format", "json", "--dtype", "float32")
    assert json.loads(out)["totals"]["weight_bytes"] == 4 * params
    code, _, err = run(capsys, "summary", "gpt-nano", "--dtype", "int3")
    assert code == 2 and "--dtype 'int3': expected one of float32, bfloat16, float16" in err


def test_a_config_transformers_cannot_build_is_one_line(capsys, tmp_path):
    p = tmp_path / "config.json"
    p.write_text(json.dumps({"model_type": "whisper", "architectures": ["WhisperForConditionalGeneration"],
                             "vocab_size": 10, "pad_token_id": 50, "d_model": 8, "encoder_attention_heads": 2,
                             "decoder_attention_heads": 2}))
    code, _, err = run(capsys, "summary", str(p))
    assert code == 2 and err.count("\n") == 1
    assert f"{p}: transformers cannot build WhisperForConditionalGeneration from this config" in err


def test_a_failing_forward_prints_a_partial_report_then_one_error_line(capsys, tmp_path, monkeypatch):
    (tmp_path / "broken_net.py").write_text(
        "import torch.nn as nn\n"
        "class Net(nn.Module):\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        "        self.a, self.b, self.c = nn.Linear(8, 16), nn.Linear(16, 4), nn.Linear(5, 2)\n"
        "    def forward(self, x):\n"
        "        return self.c(self.b(self.a(x)))\n"
        "def make():\n    return Net()\n")
    monkeypatch.chdir(tmp_path)
    code, out, err = run(capsys, "summary", "broken_net:make", "--input-shape", "3,8")
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("layerwise: error: input [3, 8] does not fit layer 'c' (Linear)")
    lines = out.splitlines()
    row = {ln.split()[0]: ln for ln in lines if ln.strip() and ln.split()[0] in ("a", "b", "c")}
    assert "[3, 16]" in row["a"] and "[3, 4]" in row["b"]  # traced up to the failing layer
    assert "✗" in row["c"] and "forward failed here; inputs [3, 4]" in row["c"]
    assert re.search(r"Parameters \(each tensor once\)\s+224\n", out)  # the module tree's total: 144 + 68 + 12
    assert "forward failed at c (Linear), inputs [3, 4]; rows after it were not traced" in out


def test_no_sizes_leaves_out_the_planned_lines_only(capsys):
    assert main(["summary", "seed-mlp"]) == 0
    full = capsys.readouterr().out
    assert main(["summary", "seed-mlp", "--no-sizes"]) == 0
    short = capsys.readouterr().out
    assert "Estimated training footprint" in full and "Activations per example" in full
    assert "Estimated training footprint" not in short and "Activations per example" not in short
    assert "Params size (weights)" in short  # the weights' bytes come from the analysis, not the planner
    assert main(["summary", "seed-mlp", "--no-sizes", "--format", "json"]) == 0
    assert "sizes" not in json.loads(capsys.readouterr().out)
