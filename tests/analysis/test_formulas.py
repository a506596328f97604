"""Every built-in layer type: the formula (from hyper-parameters) equals the tensors' numel()."""

import pytest
import torch
from torch import nn

from layerwise.analysis import analyze, formula

CASES = {
    "linear": nn.Linear(768, 3072),
    "linear-nobias": nn.Linear(17, 5, bias=False),
    "bilinear": nn.Bilinear(4, 6, 3),
    "conv1d": nn.Conv1d(16, 32, 5),
    "conv1d-grouped-nobias": nn.Conv1d(16, 32, 3, groups=4, bias=False),
    "conv2d": nn.Conv2d(64, 128, 3),
    "conv2d-depthwise": nn.Conv2d(32, 32, 3, groups=32),
    "conv2d-depthwise-multiplier": nn.Conv2d(8, 16, 3, groups=8),
    "conv2d-pointwise": nn.Conv2d(32, 64, 1, bias=False),
    "conv2d-rect": nn.Conv2d(3, 8, (3, 5)),
    "conv3d": nn.Conv3d(4, 8, (3, 3, 2), groups=2),
    "convT1d": nn.ConvTranspose1d(8, 4, 3),
    "convT2d": nn.ConvTranspose2d(128, 64, 4, stride=2),
    "convT2d-grouped": nn.ConvTranspose2d(8, 12, 3, groups=4, bias=False),
    "convT3d": nn.ConvTranspose3d(4, 2, 2),
    "embedding": nn.Embedding(50257, 768),
    "embedding-bag": nn.EmbeddingBag(100, 16),
    "layernorm": nn.LayerNorm(768),
    "layernorm-nobias": nn.LayerNorm(64, bias=False),
    "layernorm-2d": nn.LayerNorm((4, 8)),
    "layernorm-noaffine": nn.LayerNorm(10, elementwise_affine=False),
    "rmsnorm": nn.RMSNorm(576),
    "batchnorm1d": nn.BatchNorm1d(20),
    "batchnorm2d": nn.BatchNorm2d(64),
    "batchnorm2d-noaffine": nn.BatchNorm2d(8, affine=False),
    "groupnorm": nn.GroupNorm(4, 32),
    "instancenorm-affine": nn.InstanceNorm2d(6, affine=True),
    "rnn": nn.RNN(10, 20, num_layers=2),
    "rnn-relu-nobias": nn.RNN(10, 20, nonlinearity="relu", bias=False),
    "lstm": nn.LSTM(128, 128),
    "lstm-stack": nn.LSTM(32, 64, num_layers=3),
    "lstm-bidirectional": nn.LSTM(32, 64, num_layers=2, bidirectional=True),
    "lstm-proj": nn.LSTM(32, 64, num_layers=2, proj_size=16),
    "lstm-bi-proj": nn.LSTM(32, 64, num_layers=2, proj_size=16, bidirectional=True),
    "gru": nn.GRU(16, 32, num_layers=2, bidirectional=True),
    "rnncell": nn.RNNCell(8, 16),
    "lstmcell": nn.LSTMCell(8, 16),
    "grucell-nobias": nn.GRUCell(8, 16, bias=False),
    "mha": nn.MultiheadAttention(64, 8),
    "mha-kdim-vdim": nn.MultiheadAttention(64, 4, kdim=32, vdim=48),
    "mha-bias-kv-nobias": nn.MultiheadAttention(32, 4, bias=False, add_bias_kv=True),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_formula_equals_numel(name):
    m = CASES[name]
    f = formula(m)
    assert f is not None, f"no formula for {type(m).__name__}"
    own = sum(p.numel() for p in m.parameters(recurse=False))
    assert f.value == own, f"{name}: {f} but numel = {own}"
    assert str(f).endswith(f"= {own:,}")


def test_formula_text_has_numbers_substituted():
    assert str(formula(nn.Linear(768, 3072))) == "Linear: 768·3072 + 3072 = 2,362,368"
    assert str(formula(nn.Embedding(50257, 768))) == "Embedding: 50257·768 = 38,597,376"
    assert str(formula(nn.LayerNorm(768))) == "LayerNorm: 2·768 = 1,536"
    # PyTorch's LSTM keeps two bias vectors: 4·h·(i + h) + 8h
    assert str(formula(nn.LSTM(128, 128))) == "LSTM (G=4): (4·128·(128 + 128) + 2·4·128) = 132,096"
    assert formula(nn.Conv2d(32, 32, 3, groups=32)).substituted == "3·3·(32/32)·32 + 32"


def test_depthwise_separable_pair_matches_textbook_formula():
    k, cin, cout = 3, 32, 64
    dw, pw = nn.Conv2d(cin, cin, k, groups=cin, bias=False), nn.Conv2d(cin, cout, 1, bias=False)
    std = nn.Conv2d(cin, cout, k, bias=False)
    assert formula(std).value == k * k * cin * cout
    assert formula(dw).value + formula(pw).value == k * k * cin + cin * cout


def test_unknown_module_falls_back_to_counting_and_is_marked():
    class Scale(nn.Module):
        def __init__(self):
            super().__init__()
            self.alpha = nn.Parameter(torch.ones(7))

        def forward(self, x):
            return x * self.alpha

    m = nn.Sequential(nn.Linear(7, 7), Scale())
    a = analyze(m, input_shape=(2, 7))
    row = a.row("1")
    assert row.formula is None and row.params == 7
    from layerwise.report.table import render

    text = render(a, explain=True)
    assert "(no formula: counted) 7" in text
    assert "Linear: 7·7 + 7 = 56 ✓" in text


def test_every_builtin_row_of_a_real_model_checks_out():
    """The explain column of a whole model: every formula equals the layer's numel."""
    m = nn.Sequential(
        nn.Conv2d(3, 16, 3), nn.BatchNorm2d(16), nn.ReLU(), nn.Conv2d(16, 16, 3, groups=16), nn.Conv2d(16, 8, 1),
        nn.Flatten(), nn.Linear(8 * 28 * 28, 10),
    )
    a = analyze(m, input_shape=(1, 3, 32, 32))
    checked = [r for r in a.rows if r.formula]
    assert len(checked) == 5
    assert all(r.formula_value == r.params_raw for r in checked)
