"""Parameter accounting against references we did not write: transformers, torchinfo, Keras."""

import os

import pytest
import torch
import torchinfo
from torch import nn
from transformers import (
    BertConfig, BertForSequenceClassification, BertModel, GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM,
)

from layerwise.analysis import analyze


def invariants(a):
    """Rows add up to the totals; trainable + frozen = total; kinds and blocks partition the total."""
    assert sum(r.params for r in a.rows) == a.totals.params
    assert a.rows[0].name == "" and a.rows[0].params_total == a.totals.params
    assert a.totals.trainable + a.totals.frozen == a.totals.params
    assert sum(k.params for k in a.by_kind) == a.totals.params
    assert sum(k.trainable for k in a.by_kind) == a.totals.trainable
    assert sum(b.params for b in a.by_block) == a.totals.params
    assert abs(sum(k.share for k in a.by_kind) - 1.0) < 1e-9
    assert sum(r.flops for r in a.rows) == a.totals.flops_forward
    by_parent = {}
    for r in a.rows:
        if r.name:
            parent = r.name.rsplit(".", 1)[0] if "." in r.name else ""
            by_parent[parent] = by_parent.get(parent, 0) + r.params_total
    for r in a.rows:
        assert r.params_total == r.params + by_parent.get(r.name, 0), r.name


def test_gpt2_small_counts_the_tied_head_once_and_marks_it_shared():
    with torch.device("meta"):
        m = GPT2LMHeadModel(GPT2Config())
    a = analyze(m, input_shape=(1, 32))
    assert m.num_parameters() == 124_439_808  # the reference, deduplicated
    assert a.totals.params == 124_439_808
    assert a.totals.params_if_shared_counted_twice == 163_037_184  # the number tools that double-count show
    head = a.row("lm_head")
    assert head.params == 0 and head.shared == ["weight = transformer.wte.weight"]
    assert [(s.name, s.owner) for s in a.shared] == [("lm_head.weight", "transformer.wte.weight")]
    assert a.kind("head").params == 0
    assert a.kind("embedding").params == 50257 * 768 + 1024 * 768
    invariants(a)


@pytest.mark.parametrize(
    "cls,cfg,expected",
    [
        (BertModel, BertConfig(), 109_482_240),
        (BertModel, BertConfig(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096), 335_141_888),
        (BertForSequenceClassification, BertConfig(num_labels=3), None),
        (LlamaForCausalLM, LlamaConfig(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
                                       num_attention_heads=32, vocab_size=32000), 6_738_415_616),
        (LlamaForCausalLM, LlamaConfig(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
                                       num_key_value_heads=8, vocab_size=128256), 8_030_261_248),
    ],
    ids=["bert-base", "bert-large", "bert-cls", "llama-2-7b", "llama-3-8b"],
)
def test_hugging_face_counts_on_meta(cls, cfg, expected):
    with torch.device("meta"):
        m = cls(cfg)
    a = analyze(m, input_shape=(1, 8))
    assert a.totals.params == m.num_parameters()
    assert a.totals.trainable == m.num_parameters(only_trainable=True)
    if expected is not None:
        assert a.totals.params == expected
    invariants(a)


def test_frozen_and_partial_status():
    m = BertForSequenceClassification(BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                                 intermediate_size=64, vocab_size=100))
    for p in m.bert.embeddings.parameters():
        p.requires_grad_(False)
    m.bert.encoder.layer[0].attention.self.query.bias.requires_grad_(False)
    a = analyze(m, input_shape=(1, 8))
    assert a.row("bert.embeddings").status == "frozen"
    assert a.row("bert.encoder.layer.0.attention.self.query").status == "partial"
    assert a.row("bert.encoder.layer.1").status == "trainable"
    assert a.row("bert").status == "partial"
    assert a.totals.trainable == m.num_parameters(only_trainable=True)
    invariants(a)


def _torchinfo_total(model, input_size, dtypes=None):
    return torchinfo.summary(model, input_size=input_size, dtypes=dtypes, verbose=0, device="cpu").total_params


def test_torchinfo_agrees_where_no_weight_is_shared():
    m = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 30 * 30, 10))
    a = analyze(m, input_shape=(1, 3, 32, 32))
    assert a.totals.params == _torchinfo_total(m, (1, 3, 32, 32)) == 224 + 16 + 72_010
    bert = BertModel(BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, vocab_size=100))
    a = analyze(bert, input_shape=(1, 8))
    assert a.totals.params == _torchinfo_total(bert, (1, 8), [torch.long])


def test_torchinfo_double_counts_tied_weights_we_do_not():
    """torchinfo adds the tied LM head to the embedding it shares: a known over-count."""
    m = GPT2LMHeadModel(GPT2Config(n_layer=2, n_head=2, n_embd=32, vocab_size=100, n_positions=64))
    truth = sum(p.numel() for p in m.parameters())  # parameters() yields each tensor once
    ti = _torchinfo_total(m, (1, 16), [torch.long])
    a = analyze(m, input_shape=(1, 16))
    assert truth == m.num_parameters() == 30_720
    assert ti == truth + 100 * 32 == 33_920  # the head's vocab×d counted a second time
    assert a.totals.params == truth
    assert a.totals.params_if_shared_counted_twice == ti


def test_keras_view_counts_batchnorm_statistics_as_non_trainable_like_keras():
    os.environ.setdefault("KERAS_BACKEND", "torch")
    import keras

    km = keras.Sequential([
        keras.Input((28, 28, 1)),
        keras.layers.Conv2D(16, 3), keras.layers.BatchNormalization(), keras.layers.ReLU(),
        keras.layers.MaxPooling2D(), keras.layers.Flatten(), keras.layers.Dense(10),
    ])
    tm = nn.Sequential(nn.Conv2d(1, 16, 3), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(16 * 13 * 13, 10))
    a = analyze(tm, input_shape=(1, 1, 28, 28))
    trainable = sum(int(w.numpy().size) for w in km.trainable_weights)
    non_trainable = sum(int(w.numpy().size) for w in km.non_trainable_weights)
    assert a.totals.keras_params == km.count_params() == 27_274
    assert a.totals.keras_trainable == trainable
    assert a.totals.keras_non_trainable == non_trainable == 32
    assert a.totals.params == km.count_params() - 32  # PyTorch: running stats are buffers
    assert a.totals.buffers == 33  # running mean, var and num_batches_tracked
