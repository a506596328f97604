"""Per-layer gradient statistics, checked against a hand-written backward (NumPy), torch
autograd on an independent functional copy of the network, and the SGD update rule."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from layerwise.models import build
from layerwise.train import ClassificationTask, TrainConfig, Trainer
from layerwise.train.layerstats import (
    GradientRecorder,
    backward_gradient_norms,
    first_last_ratio,
    gradient_norms,
    weight_layers,
)


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
    layers = weight_layers(model)
    names = [lay.name for lay in layers]
    assert names[:4] == ["transformer.wte", "transformer.wpe", "transformer.h.0.attn.c_attn", "transformer.h.0.attn.c_proj"]
    assert names[-1] == "lm_head" and len(names) == 2 + 4 * 3 + 1
    assert layers[-1].shared_with == "transformer.wte"
    assert [n for n, _ in layers[2].tensors] == ["transformer.h.0.attn.c_attn.weight"]  # the bias is left out
    # an RNN stack is one weight-layer module with all its matrices
    torch.manual_seed(0)
    lstm = build("seed-lstm", vocab_size=50)
    rnn = next(lay for lay in weight_layers(lstm, inputs=(torch.zeros(1, 6, dtype=torch.long),)) if lay.name == "rnn")
    assert sorted(n.split(".")[-1] for n, _ in rnn.tensors) == ["weight_hh_l0", "weight_hh_l1", "weight_ih_l0", "weight_ih_l1"]


def test_weight_layers_leave_the_rng_alone():
    model = _tiny()
    torch.manual_seed(7)
    expected = torch.rand(3)
    torch.manual_seed(7)
    weight_layers(model)  # traces with example_inputs, which draws random numbers
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
    expected = float(np.sqrt((g.double() ** 2).sum()))
    assert 0 < expected < 1e-24  # small enough that float32 squares are 0
    assert float(torch.linalg.vector_norm(g)) == 0.0  # which is what a float32 norm returns
    assert norms[0] == pytest.approx(expected, rel=1e-9)
    assert first_last_ratio(norms) > 1e12
