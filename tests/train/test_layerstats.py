"""Per-layer health and gradient statistics: hand-computed activation statistics, gradients
against autograd and a hand-written NumPy backward, update ratios against their closed forms
and the SGD update rule through the Trainer, and the vanishing-gradient diagnosis on deep nets."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from layerwise.analysis.trace import trace
from layerwise.models import build
from layerwise.train import ClassificationTask, TrainConfig, Trainer
from layerwise.train.layerstats import (
    THRESHOLDS,
    GradientRecorder,
    backward_gradient_norms,
    diagnose,
    first_last_ratio,
    gradient_norms,
    in_forward_order,
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


def _tiny(**kw):
    torch.manual_seed(0)
    return build("mlp-digits", sizes=(3, 4, 2), **kw)


def _batch():
    g = torch.Generator().manual_seed(1)
    return torch.randn(5, 3, generator=g), torch.tensor([0, 1, 1, 0, 1])


def test_gradient_norms_equal_a_hand_computed_backward():
    model = _tiny()
    x, y = _batch()
    norms = backward_gradient_norms(model, lambda m: F.cross_entropy(m(x), y))
    # the same network's backward by hand: z1 = x W1ᵀ + b1, h = relu(z1), z2 = h W2ᵀ + b2,
    # J = mean cross-entropy; dJ/dz2 = (softmax(z2) - onehot(y)) / B
    W1, b1 = (t.detach().double().numpy() for t in (model.hidden[0].linear.weight, model.hidden[0].linear.bias))
    W2, b2 = (t.detach().double().numpy() for t in (model.head.weight, model.head.bias))
    X, Y = x.double().numpy(), np.eye(2)[y.numpy()]
    z1 = X @ W1.T + b1
    h = np.maximum(z1, 0)
    z2 = h @ W2.T + b2
    p = np.exp(z2 - z2.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    d2 = (p - Y) / len(X)
    dW2 = d2.T @ h
    d1 = (d2 @ W2) * (z1 > 0)
    dW1 = d1.T @ X
    assert norms == pytest.approx([np.linalg.norm(dW1), np.linalg.norm(dW2)], rel=1e-5)
    # the model's gradients were put back as they were (none)
    assert all(p.grad is None for p in model.parameters())


def test_gradient_norms_equal_autograd_on_a_functional_copy():
    model = _tiny(residual=False, norm="layernorm", activation="tanh")
    x, y = _batch()
    norms = backward_gradient_norms(model, lambda m: F.cross_entropy(m(x), y))
    lin, ln = model.hidden[0].linear, model.hidden[0].norm
    w1, w2 = lin.weight.detach().clone().requires_grad_(), model.head.weight.detach().clone().requires_grad_()
    h = torch.tanh(F.layer_norm(F.linear(x, w1, lin.bias.detach()), (4,), ln.weight.detach(), ln.bias.detach()))
    g1, g2 = torch.autograd.grad(F.cross_entropy(F.linear(h, w2, model.head.bias.detach()), y), [w1, w2])
    assert norms == pytest.approx([g1.norm().item(), g2.norm().item()], rel=1e-6)


def test_layers_come_in_forward_order_with_the_tied_head_marked():
    torch.manual_seed(0)
    model = build("gpt-nano", vocab_size=32, block_size=16)
    layers = in_forward_order(model)
    names = [lay.name for lay in layers]
    assert names[:4] == ["transformer.wte", "transformer.wpe", "transformer.h.0.attn.c_attn", "transformer.h.0.attn.c_proj"]
    assert names[-1] == "lm_head" and len(names) == 2 + 4 * 3 + 1
    assert layers[-1].shared_with == "transformer.wte"
    assert list(layers[2].weights) == ["transformer.h.0.attn.c_attn.weight"]  # the bias is left out
    # each layer of an RNN stack is a weight layer, with its own matrices, in stack order
    torch.manual_seed(0)
    lstm = build("seed-lstm", vocab_size=50)
    rnn = [lay for lay in in_forward_order(lstm, inputs=(torch.zeros(1, 6, dtype=torch.long),)) if lay.name.startswith("rnn.")]
    assert [lay.name for lay in rnn] == ["rnn.l0", "rnn.l1"]
    assert [sorted(n.split(".")[-1] for n in lay.weights) for lay in rnn] == [["weight_hh_l0", "weight_ih_l0"],
                                                                              ["weight_hh_l1", "weight_ih_l1"]]


def test_weight_layers_leave_the_rng_alone():
    model = _tiny()
    torch.manual_seed(7)
    expected = torch.rand(3)
    torch.manual_seed(7)
    in_forward_order(model)  # traces with example_inputs, which draws random numbers
    assert torch.equal(torch.rand(3), expected)


def test_recorder_through_the_trainer_matches_sgd_and_the_first_batch():
    model = _tiny()
    g = torch.Generator().manual_seed(2)
    data = (torch.randn(64, 3, generator=g), torch.randint(0, 2, (64,), generator=g))
    task = ClassificationTask(2)
    lr = 0.05
    cfg = TrainConfig(steps=6, batch_size=8, optimizer="sgd", momentum=0.0, lr=lr, log_every=3, seed=3, device="cpu")
    init = [p.detach().clone() for p in model.parameters()]
    seen = []
    rec = GradientRecorder(model, every=3, then=seen.append)
    Trainer(model, task, data, config=cfg, callback=rec).fit()
    assert [r["step"] for r in rec.records] == [1, 3, 6]
    assert "gradients" in [e.kind for e in seen]  # events are passed on
    # step 1 = the gradient at initialisation on the first training batch
    fresh = _tiny()
    for p, q in zip(fresh.parameters(), init):
        p.data.copy_(q)
    first = task.make_source(data, cfg.batch_size, seed=cfg.seed, shuffle=True).batch(0)
    expected = backward_gradient_norms(fresh, lambda m: task.loss(m, first)[0])
    assert rec.at_init == pytest.approx(expected, rel=1e-6)
    # plain SGD: ΔW = -lr·g, so ‖ΔW‖/‖W‖ = lr·‖g‖/‖W‖ at every recorded step
    for r in rec.records:
        for gn, wn, ur in zip(r["grad_norm"], r["weight_norm"], r["update_ratio"]):
            assert ur == pytest.approx(lr * gn / wn, rel=1e-5)


def test_frozen_layers_and_the_ratio():
    model = _tiny()
    model.hidden[0].linear.weight.requires_grad_(False)
    x, y = _batch()
    norms = backward_gradient_norms(model, lambda m: F.cross_entropy(m(x), y))
    assert norms[0] is None and norms[1] > 0
    assert first_last_ratio(norms) is None
    assert first_last_ratio([0.01, 0.5, 2.0]) == pytest.approx(200.0)
    assert gradient_norms(weight_layers(model)) == [None, None]  # no backward has run
    assert math.isnan(first_last_ratio([float("nan"), 1.0]) or float("nan"))


def test_vanishing_gradients_do_not_underflow_to_zero():
    # a 32-layer sigmoid MLP's first gradient is ~1e-27: its float32 squares underflow
    torch.manual_seed(0)
    model = build("mlp-digits", sizes=(20, *([16] * 32), 3), activation="sigmoid")
    x, y = torch.randn(8, 20), torch.arange(8) % 3
    norms = backward_gradient_norms(model, lambda m: F.cross_entropy(m(x), y))
    model.zero_grad()
    F.cross_entropy(model(x), y).backward()
    g = model.hidden[0].linear.weight.grad
    expected = math.sqrt(float((g.double() ** 2).sum()))
    assert 0 < expected < 1e-24  # small enough that float32 squares are 0
    assert float(torch.linalg.vector_norm(g)) == 0.0  # which is what a float32 norm returns
    assert norms[0] == pytest.approx(expected, rel=1e-9)
    assert first_last_ratio(norms) > 1e12
