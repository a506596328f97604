"""Per-layer health: hand-computed activation statistics, gradients against autograd, update
ratios against their closed forms, and the vanishing-gradient diagnosis on deep nets."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from layerwise.analysis.trace import trace
from layerwise.models import build
from layerwise.train.layerstats import (
    THRESHOLDS,
    diagnose,
    layer_health,
    layer_ranges,
    update_ratios,
    weight_layers,
)


def _fixed_net() -> nn.Sequential:
    net = nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 2), nn.Tanh(), nn.Linear(2, 1), nn.Sigmoid())
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, -1.0]]))
        net[2].weight.copy_(torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 5.0]]))
        net[4].weight.copy_(torch.tensor([[6.0, 0.0]]))
        for i in (0, 2, 4):
            net[i].bias.zero_()
    return net


X = torch.tensor([[1.0, 2.0], [3.0, 1.0]])


def test_dead_and_saturated_fractions_match_the_hand_computation():
    rows = layer_health(_fixed_net(), lambda m: m(X).sum())
    relu, tanh, sigmoid = (r.activation for r in rows)
    # Linear 1: pre-activations [[1, 2, -3], [3, 1, -4]]; after ReLU unit 3 is 0 on both examples.
    relu_out = [1.0, 2.0, 0.0, 3.0, 1.0, 0.0]
    mean = sum(relu_out) / 6
    assert relu.activation == "ReLU" and relu.units == 3
    assert relu.dead_fraction == pytest.approx(1 / 3)
    assert relu.mean == pytest.approx(mean)
    assert relu.std == pytest.approx(math.sqrt(sum((v - mean) ** 2 for v in relu_out) / 6))
    assert relu.saturation_fraction is None
    # Linear 2 (its third input is dead, so its second output is 0): tanh of [1, 0] and [3, 0];
    # only tanh(3) = 0.99505 is beyond 0.99.
    assert tanh.activation == "Tanh" and tanh.saturation_fraction == pytest.approx(1 / 4)
    assert tanh.dead_fraction is None
    assert tanh.mean == pytest.approx((math.tanh(1) + math.tanh(3)) / 4)
    # Head: sigmoid(6 tanh(1)) = 0.98975 is not saturated, sigmoid(6 tanh(3)) = 0.99745 is (> 0.995).
    assert sigmoid.activation == "Sigmoid" and sigmoid.saturation_fraction == pytest.approx(1 / 2)


def test_conv_units_are_channels():
    conv = nn.Sequential(nn.Conv2d(1, 2, 1), nn.ReLU())
    with torch.no_grad():
        conv[0].weight.copy_(torch.tensor([1.0, -1.0]).view(2, 1, 1, 1))
        conv[0].bias.zero_()
    x = torch.rand(3, 1, 4, 4) + 0.1  # positive pixels: channel 2 is negative everywhere, so dead
    (row,) = layer_health(conv, lambda m: m(x).sum())
    assert row.activation.units == 2 and row.activation.dead_fraction == 0.5


def test_gradient_norms_equal_autograd_and_order_is_the_forward_order():
    torch.manual_seed(0)

    class Backwards(nn.Module):  # defined in one order, called in the other
        def __init__(self):
            super().__init__()
            self.last = nn.Linear(5, 3)
            self.first = nn.Linear(4, 5)

        def forward(self, x):
            return self.last(torch.relu(self.first(x)))

    net = Backwards()
    x, y = torch.randn(8, 4), torch.randint(0, 3, (8,))
    rows = layer_health(net, lambda m: F.cross_entropy(m(x), y))
    assert [r.name for r in rows] == trace(net, (x,), set()).call_order == ["first", "last"]
    F.cross_entropy(net(x), y).backward()  # the reference: torch's own gradients
    for r in rows:
        w = net.get_submodule(r.name).weight
        assert r.grad_norm == pytest.approx(float(torch.linalg.vector_norm(w.grad)), rel=1e-6)
        assert r.weight_norm == pytest.approx(float(torch.linalg.vector_norm(w.detach())), rel=1e-6)
        assert r.weight_std == pytest.approx(float(w.detach().std(unbiased=False)), rel=1e-6)
        assert r.params == w.numel()  # biases are not weights
    assert rows[0].activation.activation == "output"  # a functional ReLU is not seen: the layer's own output


def test_update_ratios_match_their_closed_forms_and_restore_the_weights():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(6, 4), nn.ReLU(), nn.Linear(4, 2))
    x = torch.randn(5, 6)
    net(x).pow(2).sum().backward()
    layers = weight_layers(net)
    before = [p.detach().clone() for p in net.parameters()]
    lr = 1e-2
    sgd = update_ratios(net, layers, lr, "sgd")
    adam = update_ratios(net, layers, lr, "adam")
    for layer in layers:
        w, g = layer.module.weight.detach(), layer.module.weight.grad
        # SGD's first step is lr·g; Adam's first step is lr·g/(|g| + eps): lr on every weight with g ≠ 0.
        assert sgd[layer.name] == pytest.approx(lr * float(g.norm()) / float(w.norm()), rel=1e-5)
        moved = int((g != 0).sum())
        assert adam[layer.name] == pytest.approx(lr * math.sqrt(moved) / float(w.norm()), rel=1e-3)
    for p, b in zip(net.parameters(), before):
        assert torch.equal(p, b)


def test_weight_layers_split_rnn_stacks_and_mark_tied_weights():
    rnn = build("rnn-tiny")
    names = [l.name for l in weight_layers(rnn)]
    assert names == ["embedding", "rnn.l0", "rnn.l1", "head"]
    l1 = weight_layers(rnn)[2]
    assert sorted(n.rsplit(".", 1)[1] for n in l1.weights) == ["weight_hh_l1", "weight_hh_l1_reverse", "weight_ih_l1",
                                                                "weight_ih_l1_reverse"]
    gpt = weight_layers(build("gpt-nano"))
    head = [l for l in gpt if l.name == "lm_head"][0]
    assert head.shared_with == "transformer.wte"
    assert len(gpt) == 2 + 4 * 3 + 1  # wte, wpe, 4 per block, the (tied) head


def test_layer_ranges():
    assert layer_ranges([6, 1, 2, 3, 9, 8]) == "1–3, 6, 8–9"
    assert layer_ranges([4]) == "4"


# ---------------------------------------------------------------- the vanishing-gradient diagnosis


class ResidualNet(nn.Module):
    """16 weight layers: an input Linear, 14 pre-norm residual blocks x + Linear(ReLU(LayerNorm(x))), a head."""

    def __init__(self, d_in=64, width=64, classes=10, blocks=14):
        super().__init__()
        self.inp = nn.Linear(d_in, width)
        self.blocks = nn.ModuleList(nn.Sequential(nn.LayerNorm(width), nn.ReLU(), nn.Linear(width, width))
                                    for _ in range(blocks))
        self.head = nn.Linear(width, classes)

    def forward(self, x):
        x = self.inp(x)
        for b in self.blocks:
            x = x + b(x)
        return self.head(x)


@pytest.fixture(scope="module")
def digits_batch():
    from layerwise.data import load_dataset

    ds = load_dataset("digits")
    return ds.images[:128].flatten(1), ds.labels[:128]


def _vanishing(net, batch):
    x, y = batch
    rows = layer_health(net.eval(), lambda m: F.cross_entropy(m(x), y))
    assert len(rows) == 16
    return rows, [d for d in diagnose(rows) if d.code == "vanishing_grad"]


def test_vanishing_gradients_are_diagnosed_on_a_deep_sigmoid_mlp(digits_batch):
    torch.manual_seed(0)
    net = build({"family": "mlp", "sizes": (64,) + (64,) * 15 + (10,), "activation": "sigmoid"})
    rows, found = _vanishing(net, digits_batch)
    (d,) = found
    assert d.layers[0] == 1 and len(d.layers) >= 6  # the first layers, furthest from the loss
    assert all(rows[i - 1].grad_norm < THRESHOLDS["vanishing_grad"] for i in d.layers)
    assert rows[-1].grad_norm > 1e-3  # the head still learns
    assert d.line.startswith(f"layers 1–{d.layers[-1]}: gradient norm < 1e-06 — vanishing; consider ReLU/residual/normalisation")


def test_no_vanishing_gradients_on_a_residual_relu_layernorm_net_of_the_same_depth(digits_batch):
    torch.manual_seed(0)
    rows, found = _vanishing(ResidualNet(), digits_batch)
    assert found == []
    assert min(r.grad_norm for r in rows) > 1e-3
