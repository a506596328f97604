"""The four depths of DESIGN.md on networks whose depth is known by convention."""

import pytest
import torch
from torch import nn
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM, ResNetConfig, ResNetForImageClassification

from layerwise.analysis import analyze
from layerwise.models import build


def test_mlp_784_64_64_10_has_weight_depth_3():
    m = nn.Sequential(nn.Linear(784, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))
    a = analyze(m, input_shape=(1, 784))
    assert a.depth.weight_depth == 3
    assert a.depth.block_depth == 0
    assert a.depth.module_depth == 1


class EmbLSTM(nn.Module):
    def __init__(self, bidirectional=False):
        super().__init__()
        self.emb = nn.Embedding(1000, 32)
        self.lstm = nn.LSTM(32, 64, num_layers=2, batch_first=True, bidirectional=bidirectional)
        self.fc = nn.Linear(64 * (2 if bidirectional else 1), 2)

    def forward(self, x):
        out, _ = self.lstm(self.emb(x))
        return self.fc(out[:, -1])


@pytest.mark.parametrize("bidirectional", [False, True])
def test_embedding_two_layer_lstm_linear_has_weight_depth_4(bidirectional):
    # the two directions of a layer run in parallel: they count once
    with torch.device("meta"):
        m = EmbLSTM(bidirectional)
    a = analyze(m, input_shape=(2, 12))
    assert a.depth.weight_depth == 4
    assert a.depth.block_depth == 2  # stacked RNN layers are the blocks


def test_gpt2_small_shaped_decoder_hf():
    with torch.device("meta"):
        m = GPT2LMHeadModel(GPT2Config())
    a = analyze(m, input_shape=(1, 64))
    assert a.depth.weight_depth == 50  # wte, 4 per block × 12, head
    assert a.depth.block_depth == 12
    # wte and wpe run in parallel, then q/k/v (one fused c_attn), c_proj, c_fc, c_proj per block
    assert a.depth.weight_layers == 1 + 1 + 48 + 1


def test_llama_shaped_decoder_separate_qkv_counts_four_per_block():
    cfg = LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=3, num_attention_heads=4,
                      num_key_value_heads=2, vocab_size=100)
    with torch.device("meta"):
        m = LlamaForCausalLM(cfg)
    a = analyze(m, input_shape=(1, 16))
    # q, k, v in parallel (1), o (1); gate and up in parallel (1), down (1)
    assert a.depth.weight_depth == 1 + 4 * 3 + 1
    assert a.depth.block_depth == 3


@pytest.mark.parametrize("preset,weight_depth,block_depth", [("resnet18", 18, 8), ("resnet34", 34, 16), ("resnet50", 50, 16), ("vgg16", 16, None), ("vgg11", 11, None)])
def test_cnn_presets_have_their_conventional_depth(preset, weight_depth, block_depth):
    a = analyze(build(preset, device="meta"))
    assert a.depth.weight_depth == weight_depth
    if block_depth is not None:
        assert a.depth.block_depth == block_depth


@pytest.mark.parametrize("layer_type,depths,expected", [("basic", [2, 2, 2, 2], 18), ("bottleneck", [3, 4, 6, 3], 50)])
def test_hugging_face_resnets_without_declared_roles(layer_type, depths, expected):
    """Inferred from the data flow alone: the shortcut projections do not lengthen the path."""
    cfg = ResNetConfig(layer_type=layer_type, depths=depths,
                       hidden_sizes=[64, 128, 256, 512] if layer_type == "basic" else [256, 512, 1024, 2048])
    with torch.device("meta"):
        m = ResNetForImageClassification(cfg)
    a = analyze(m, input_shape=(1, 3, 224, 224))
    assert a.depth.weight_depth == expected
    assert a.depth.block_depth == sum(depths)


def test_residual_shortcut_does_not_lengthen_and_parallel_branches_count_once():
    class Res(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(8, 8), nn.Linear(8, 8)
            self.p, self.q = nn.Linear(8, 8), nn.Linear(8, 8)

        def forward(self, x):
            x = x + self.b(torch.relu(self.a(x)))  # residual: path of 2
            return self.p(x) * self.q(x)  # parallel branches: +1

    a = analyze(Res(), input_shape=(1, 8))
    assert a.depth.weight_depth == 3
    assert a.depth.weight_layers == 4


def test_reused_module_counts_on_every_pass_and_params_once():
    class Shared(nn.Module):
        def __init__(self):
            super().__init__()
            self.f = nn.Linear(8, 8)
            self.g = self.f  # the same module under a second name

        def forward(self, x):
            return self.g(self.f(self.f(x)))

    a = analyze(Shared(), input_shape=(1, 8))
    assert a.depth.weight_depth == 3  # data passes three times through it
    assert a.totals.params == 72
    assert a.row("g").reuse_of == "f"


def test_tied_head_used_functionally_still_counts_as_a_weight_layer():
    class TiedF(nn.Module):
        def __init__(self):
            super().__init__()
            self.wte = nn.Embedding(50, 16)
            self.mlp = nn.Linear(16, 16)

        def forward(self, idx):
            return torch.nn.functional.linear(self.mlp(self.wte(idx)), self.wte.weight)

    a = analyze(TiedF(), input_shape=(1, 5))
    assert a.depth.weight_depth == 3


def test_channel_depth_of_a_depthwise_separable_network():
    m = nn.Sequential(nn.Conv2d(3, 32, 3, stride=2), nn.Conv2d(32, 32, 3, groups=32), nn.Conv2d(32, 64, 1),
                      nn.Conv2d(64, 64, 3, groups=64), nn.Conv2d(64, 128, 1))
    a = analyze(m, input_shape=(1, 3, 32, 32))
    assert [c["kind"] for c in a.depth.channel_depths] == ["conv", "depthwise", "pointwise", "depthwise", "pointwise"]
    assert [c["out_channels"] for c in a.depth.channel_depths] == [32, 32, 64, 64, 128]
    assert a.depth.max_channel_depth == 128
    assert a.depth.weight_depth == 5


def test_module_depth_matches_the_module_tree():
    with torch.device("meta"):
        m = GPT2LMHeadModel(GPT2Config(n_layer=2, n_embd=32, n_head=2, vocab_size=64))
    a = analyze(m, trace_forward=False)
    deepest = max(name.count(".") + 1 for name, _ in m.named_modules() if name)
    assert a.depth.module_depth == deepest == 5  # transformer.h.0.attn.c_attn
