"""The input / hidden / output view, against references we did not write: Keras's per-layer
count_params() of the seed article's model, and Hugging Face GPT-2 / BERT's own parameters."""

import json
import os

os.environ.setdefault("KERAS_BACKEND", "torch")

import pytest
import torch

from layerwise.analysis import analyze
from layerwise.analysis.roles_view import by_role, forward_weight_layers
from layerwise.cli import main
from layerwise.models import build


def _split(view):
    return {r.role: r.params for r in view.rows}


def test_seed_mlp_matches_keras_layer_by_layer():
    import keras
    from keras import layers

    k = keras.Sequential([keras.Input((10,)), layers.Dense(10, activation="relu"),
                          layers.Dense(20, activation="relu"), layers.Dense(1, activation="sigmoid")])
    first, middle, last = (lay.count_params() for lay in k.layers)
    view = by_role(build("seed-mlp", device="meta"))
    assert _split(view) == {"input": first, "hidden": middle, "output": last}  # 110, 220, 21
    assert sum(r.share for r in view.rows) == pytest.approx(1.0)
    assert [r.weight_layers for r in view.rows] == [1, 1, 1]
    assert view.layers[0].formula == "Linear: 10·10 + 10 = 110"


def test_hf_gpt2_embeddings_are_the_input_and_the_tied_head_owns_nothing():
    transformers = pytest.importorskip("transformers")
    cfg = transformers.GPT2Config(n_layer=2, n_embd=32, n_head=2, vocab_size=100, n_positions=16)
    with torch.device("meta"):
        hf = transformers.GPT2LMHeadModel(cfg)
    view = by_role(hf, input_shape=[1, 8])
    p = dict(hf.named_parameters())
    emb = p["transformer.wte.weight"].numel() + p["transformer.wpe.weight"].numel()
    # the first block's ln_1 normalises the embeddings' output: it counts with them
    ln1 = p["transformer.h.0.ln_1.weight"].numel() + p["transformer.h.0.ln_1.bias"].numel()
    total = sum(t.numel() for t in hf.parameters())
    assert _split(view) == {"input": emb + ln1, "hidden": total - emb - ln1, "output": 0}
    assert view.row("input").layers == ["transformer.wte", "transformer.wpe"]
    assert view.row("output").layers == ["lm_head"]
    assert "transformer.wte.weight" in next(lay for lay in view.layers if lay.name == "lm_head").note


def test_hf_bert_classifier():
    transformers = pytest.importorskip("transformers")
    cfg = transformers.BertConfig(num_hidden_layers=2, hidden_size=32, num_attention_heads=2, intermediate_size=64,
                                  vocab_size=100, max_position_embeddings=16, num_labels=3)
    with torch.device("meta"):
        hf = transformers.BertForSequenceClassification(cfg)
    view = by_role(hf, input_shape=[1, 8])
    p = dict(hf.named_parameters())
    emb = sum(t.numel() for n, t in p.items() if n.startswith("bert.embeddings."))  # 3 tables + their LayerNorm
    head = p["classifier.weight"].numel() + p["classifier.bias"].numel()
    total = sum(t.numel() for t in hf.parameters())
    assert _split(view) == {"input": emb, "hidden": total - emb - head, "output": head}
    assert view.row("input").weight_layers == 3


def test_single_layer_and_lstm_depths():
    view = by_role(build("mlp-digits", sizes=(64, 10), device="meta"))
    assert _split(view) == {"input": 0, "hidden": 0, "output": 650}  # one layer: it is the output layer
    lstm = build("seed-lstm", device="meta")
    v = by_role(lstm, seq_len=12)
    assert v.row("hidden").weight_layers == analyze(lstm, seq_len=12).depth.weight_depth - 2  # a 2-layer LSTM counts 2
    order = forward_weight_layers(lstm, seq_len=12)
    assert [f.name for f in order] == ["embedding", "rnn", "head"] and order[0].input_depth == 0


def test_summary_by_role_table_and_json(capsys):
    assert main(["summary", "gpt-nano", "--by", "role", "--seq-len", "16"]) == 0
    out = capsys.readouterr().out
    assert "input / hidden / output" in out and "Embedding: 256·48 = 12,288" in out
    assert main(["summary", "seed-cnn-mnist", "--by", "role", "--format", "json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert [r["params"] for r in doc["rows"]] == [320, 18_496 + 102_464, 650]  # Keras: conv1 | conv2 + dense | head
    assert main(["summary", "seed-mlp", "--by", "role", "--plot", "x.png"]) == 2
    assert "--plot: not available with --by role" in capsys.readouterr().err
