"""Training the scratch MLP reproduces torch step for step, and it learns digits.

The same 64→64→10 network (layerwise's torch MLP, its initial weights copied into the
NumPy one), the same mini-batches, the same hyper-parameters, float64 on both sides, a
plain torch optimizer on the torch side: the loss of every step agrees within 1e-6.
"""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from layerwise.data import load_dataset, split
from layerwise.models import build
from layerwise.scratch import L2, MLP, CrossEntropy, evaluate, fit, make_optimizer, minibatches, train_step


@pytest.fixture(scope="module")
def digits():
    parts = split(load_dataset("digits"), val=0.1, test=0.1, seed=0)

    def rows(p):
        return p.images.reshape(len(p.labels), -1).double().numpy(), p.labels.numpy()

    return rows(parts.train), rows(parts.val), rows(parts.test)


def _pair(seed=0):
    torch.manual_seed(seed)
    tm = build("mlp-digits", sizes=(64, 64, 10)).double()
    linears = [tm.hidden[0].linear, tm.head]
    net = MLP((64, 64, 10))
    net.set_weights([(lin.weight.detach().numpy(), lin.bias.detach().numpy()) for lin in linears])
    return tm, linears, net


CASES = {
    "sgd": (dict(lr=0.1), lambda p: torch.optim.SGD(p, lr=0.1)),
    "momentum": (dict(lr=0.05, momentum=0.9), lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9)),
    "adam": (dict(lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8), lambda p: torch.optim.Adam(p, lr=1e-3, betas=(0.9, 0.999), eps=1e-8)),
}


@pytest.mark.parametrize("name", list(CASES))
def test_same_loss_curve_as_torch(digits, name):
    (x, y), _, _ = digits
    tm, linears, net = _pair()
    np_kw, torch_opt = CASES[name]
    opt = make_optimizer(name, **np_kw)
    topt = torch_opt(tm.parameters())
    loss = CrossEntropy()
    ours, theirs = [], []
    for epoch in range(3):
        for rows in minibatches(len(x), 32, epoch, seed=0):
            ours.append(train_step(net, loss, opt, x[rows], y[rows])["loss"])
            topt.zero_grad()
            J = F.cross_entropy(tm(torch.from_numpy(x[rows])), torch.from_numpy(y[rows]))
            J.backward()
            topt.step()
            theirs.append(J.item())
    assert len(ours) == 3 * 45  # 1,437 training rows in batches of 32: 44 full and one of 29
    diff = np.abs(np.array(ours) - np.array(theirs))
    assert diff.max() < 1e-6, (name, diff.max(), int(diff.argmax()))
    assert theirs[-1] < 0.6 * theirs[0]  # and it is learning, not standing still
    for (_, p), tp in zip(net.parameters(), [p for lin in linears for p in (lin.weight, lin.bias)]):
        np.testing.assert_allclose(p.reshape(tp.shape), tp.detach().numpy(), rtol=0, atol=1e-9)


def test_l2_penalty_is_torchs_weight_decay_on_the_weights(digits):
    """Ω = λ Σ W² adds 2λW to ∂J/∂W: torch's SGD weight_decay = 2λ on the weight matrices only."""
    (x, y), _, _ = digits
    tm, linears, net = _pair(seed=1)
    lam = 5e-3
    opt = make_optimizer("sgd", lr=0.1)
    topt = torch.optim.SGD([{"params": [lin.weight for lin in linears], "weight_decay": 2 * lam},
                            {"params": [lin.bias for lin in linears], "weight_decay": 0.0}], lr=0.1)
    loss, penalty = CrossEntropy(), L2(lam)
    for rows in list(minibatches(len(x), 32, 0, seed=3))[:30]:
        rec = train_step(net, loss, opt, x[rows], y[rows], penalty)
        topt.zero_grad()
        J = F.cross_entropy(tm(torch.from_numpy(x[rows])), torch.from_numpy(y[rows]))
        J.backward()
        topt.step()
        assert abs(rec["loss"] - J.item()) < 1e-6
        assert rec["penalty"] > 0
    for (_, p), tp in zip(net.parameters(), [p for lin in linears for p in (lin.weight, lin.bias)]):
        np.testing.assert_allclose(p.reshape(tp.shape), tp.detach().numpy(), rtol=0, atol=1e-9)


def test_learns_digits_to_95_percent_on_the_held_out_test_split(digits):
    (x, y), val, (xt, yt) = digits
    net = MLP((64, 64, 10), seed=0)
    result = fit(net, CrossEntropy(), make_optimizer("adam", lr=1e-3), x, y, epochs=40, batch_size=32, seed=0, val=val)
    assert result.history[-1]["loss"] < result.history[0]["loss"] / 5
    test = evaluate(net, CrossEntropy(), xt, yt)
    assert test["accuracy"] >= 0.95, test
