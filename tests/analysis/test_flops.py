"""FLOPs against torch's FlopCounterMode on real small models, and published MAC counts.

FlopCounterMode is the reference where it sees the work; two places where it does
not are documented below (CPU LSTM kernels, grouped-conv weight gradients), and the
true value is checked by hand there.
"""

import pytest
import torch
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode
from transformers import BertConfig, BertForSequenceClassification, GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

from layerwise.analysis import analyze
from layerwise.models import build


def reference(model, inputs, train):
    """FlopCounterMode on a real forward (and backward); the math SDPA kernel so it sees attention."""
    with FlopCounterMode(display=False) as fc, sdpa_kernel(SDPBackend.MATH):
        out = model(*inputs)
        if train:
            out = getattr(out, "logits", out)
            out = out[0] if isinstance(out, tuple) else out
            if out.requires_grad:
                out.float().sum().backward()
    return fc.get_total_flops()


def check(model, inputs):
    a = analyze(model, inputs=inputs)
    assert a.totals.flops_forward == reference(model, inputs, train=False)
    assert a.totals.flops_train == reference(model, inputs, train=True)
    return a


def tiny_gpt2():
    torch.manual_seed(0)
    return GPT2LMHeadModel(GPT2Config(n_layer=2, n_head=2, n_embd=32, vocab_size=100, n_positions=64))


def test_mlp_full_and_frozen():
    m = nn.Sequential(nn.Linear(20, 30), nn.ReLU(), nn.Linear(30, 30), nn.ReLU(), nn.Linear(30, 5))
    x = (torch.randn(4, 20),)
    full = check(m, x)
    m[0].requires_grad_(False)
    frozen_first = check(m, x)
    # gone: the first layer's weight gradient, and the second layer's input gradient
    # (nothing upstream of it trains any more)
    assert full.totals.flops_train - frozen_first.totals.flops_train == 2 * 4 * 20 * 30 + 2 * 4 * 30 * 30
    for p in list(m[0].parameters()) + list(m[2].parameters()):
        p.requires_grad_(False)
    head_only = check(m, x)
    assert head_only.totals.flops_train == head_only.totals.flops_forward + 2 * 4 * 30 * 5


def test_gpt2_attention_matmuls_are_counted_and_frozen_bottom_is_cheaper():
    m, x = tiny_gpt2(), (torch.randint(0, 100, (2, 16)),)
    a = check(m, x)
    # scores and values: 2 products of 2·B·H·T·T·d per layer
    assert a.totals.attention_flops == 2 * 2 * (2 * 2 * 2 * 16 * 16 * 16)
    assert a.totals.causal_masked_flops == a.totals.attention_flops // 2
    for p in list(m.transformer.wte.parameters()) + list(m.transformer.wpe.parameters()) + list(m.transformer.h[0].parameters()):
        p.requires_grad_(False)
    m.lm_head.weight.requires_grad_(True)  # tied to wte: the same tensor
    m.transformer.wte.weight.requires_grad_(False)
    b = check(m, x)
    assert b.totals.flops_train < a.totals.flops_train
    assert b.totals.flops_forward == a.totals.flops_forward


def test_llama_gqa_and_bert_classifier():
    cfg = LlamaConfig(hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, vocab_size=128, attn_implementation="sdpa")
    check(LlamaForCausalLM(cfg), (torch.randint(0, 128, (2, 12)),))
    bert = BertForSequenceClassification(BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                                    intermediate_size=64, vocab_size=100, num_labels=3))
    check(bert, (torch.randint(0, 100, (2, 10)),))


def test_multihead_attention_module():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.attn = nn.MultiheadAttention(16, 4, batch_first=True)
            self.fc = nn.Linear(16, 3)

        def forward(self, x):
            return self.fc(self.attn(x, x, x, need_weights=False)[0])

    check(Net(), (torch.randn(2, 5, 16),))


def test_convolutions_match_except_grouped_weight_gradients():
    m = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 16, 1), nn.ConvTranspose2d(16, 4, 2, stride=2),
                      nn.Flatten(), nn.Linear(4 * 20 * 20, 10))
    check(m, (torch.randn(2, 3, 12, 12),))


def test_flop_counter_overcounts_depthwise_weight_gradients_by_the_group_count():
    """FlopCounterMode's convolution_backward formula ignores ``groups`` for the weight
    gradient: for a depthwise conv it reports groups× the work. The weight gradient
    of a conv costs exactly its forward MACs (each MAC of the forward contributes one
    MAC to dW), which is what we report."""
    conv = nn.Conv2d(8, 8, 3, groups=8)
    x = torch.randn(2, 8, 10, 10)  # no input gradient needed
    a = analyze(conv, inputs=(x,))
    fwd = 2 * 2 * 8 * 8 * 8 * 1 * 9
    assert a.totals.flops_forward == fwd == reference(conv, (x,), train=False)
    assert a.totals.flops_train == 2 * fwd
    assert reference(conv, (x,), train=True) == fwd + 8 * fwd


def test_flop_counter_misses_cpu_lstm_kernels():
    """On CPU the LSTM runs as one fused oneDNN kernel that FlopCounterMode has no
    formula for; with projections (not supported by oneDNN) it decomposes into
    matmuls it does see, and there our count agrees exactly, training included."""

    class Net(nn.Module):
        def __init__(self, proj):
            super().__init__()
            self.emb = nn.Embedding(50, 8)
            self.lstm = nn.LSTM(8, 16, num_layers=2, batch_first=True, bidirectional=True, proj_size=proj)
            self.fc = nn.Linear(2 * (proj or 16), 3)

        def forward(self, x):
            out, _ = self.lstm(self.emb(x))
            return self.fc(out[:, -1])

    x = (torch.randint(0, 50, (3, 7)),)
    with pytest.warns(UserWarning, match="oneDNN"):
        check(Net(proj=4), x)
    plain = Net(proj=0)
    a = analyze(plain, inputs=x)
    by_formula = sum(2 * 3 * 7 * 4 * 16 * (i + 16) * 2 for i in (8, 32)) + 2 * 3 * 32 * 3
    assert a.totals.flops_forward == by_formula
    assert reference(plain, x, train=False) < by_formula // 100  # it sees almost nothing


@pytest.mark.parametrize("preset,gmacs", [("resnet18", 1.82), ("resnet50", 4.09), ("mobilenet-v1", 0.569)])
def test_published_multiply_adds_at_224(preset, gmacs):
    """ResNet (He et al. 2016, Table 1: 1.8 and 3.8 GFLOPs counted as multiply-adds;
    torchvision reports 1.81 and 4.09 GMACs including the shortcut projections) and
    MobileNet-v1 (Howard et al. 2017, Table 1: 569 million mult-adds)."""
    a = analyze(build(preset, device="meta"), input_shape=(1, 3, 224, 224))
    assert a.totals.flops_forward / 2 / 1e9 == pytest.approx(gmacs, rel=0.005)


def test_meta_and_real_devices_agree():
    m = tiny_gpt2()
    real = analyze(m, inputs=(torch.randint(0, 100, (1, 16)),))
    with torch.device("meta"):
        meta_model = GPT2LMHeadModel(GPT2Config(n_layer=2, n_head=2, n_embd=32, vocab_size=100, n_positions=64))
    meta = analyze(meta_model, input_shape=(1, 16))
    assert meta.totals.flops_forward == real.totals.flops_forward
    assert meta.totals.flops_train == real.totals.flops_train
    assert meta.depth == real.depth
