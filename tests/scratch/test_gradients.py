"""Every hand-written forward and backward of layerwise.scratch against torch autograd, in float64.

Each check runs the NumPy layer forward on random inputs, backward with a random upstream
gradient G, and compares with torch: the same inputs through torch's own op (torch.sigmoid,
F.leaky_relu, F.cross_entropy, ...), then autograd of sum(out * G). Relative error is
element-wise, |a - b| / max(|a|, |b|), and must stay below 1e-7.
"""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from layerwise.errors import ConfigError, InputShapeError
from layerwise.scratch import (
    L1,
    L2,
    MLP,
    MSE,
    CrossEntropy,
    Dense,
    Dropout,
    Hinge,
    LeakyReLU,
    ReLU,
    make_activation,
    make_loss,
)

TOL = 1e-7


def rel_err(a, b) -> float:
    a = np.asarray(a, dtype=np.float64)
    b = b.detach().numpy() if isinstance(b, torch.Tensor) else np.asarray(b, dtype=np.float64)
    assert a.shape == b.shape, (a.shape, b.shape)
    denom = np.maximum(np.abs(a), np.abs(b))
    err = np.where(denom > 0, np.abs(a - b) / np.where(denom > 0, denom, 1.0), 0.0)
    return float(err.max()) if err.size else 0.0


def t64(x, grad=True):
    return torch.tensor(x, dtype=torch.float64, requires_grad=grad)


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


def test_dense_forward_and_backward_match_autograd(rng):
    layer = Dense(7, 5, rng)
    a = rng.normal(size=(7, 11))
    G = rng.normal(size=(5, 11))
    z = layer.forward(a)
    da = layer.backward(G)
    W, b, at = t64(layer.W), t64(layer.b), t64(a)
    zt = F.linear(at.T, W, b[:, 0]).T  # torch's Linear on rows, transposed to columns
    (zt * torch.tensor(G)).sum().backward()
    assert rel_err(z, zt) < TOL
    assert rel_err(layer.grads["W"], W.grad) < TOL
    assert rel_err(layer.grads["b"], b.grad) < TOL
    assert rel_err(da, at.grad) < TOL


@pytest.mark.parametrize(
    "name, torch_fn",
    [
        ("sigmoid", torch.sigmoid),
        ("tanh", torch.tanh),
        ("relu", F.relu),
        ("leaky_relu", lambda z: F.leaky_relu(z, 0.01)),  # the articles' max(0.01x, x)
    ],
)
def test_activations_match_autograd(rng, name, torch_fn):
    act = make_activation(name)
    z = rng.normal(scale=3.0, size=(6, 9))
    z[0, :3] = [40.0, -40.0, -700.0]  # saturated sigmoid/tanh: no overflow, the right limits
    G = rng.normal(size=z.shape)
    a = act.forward(z)
    dz = act.backward(G)
    zt = t64(z)
    at = torch_fn(zt)
    (at * torch.tensor(G)).sum().backward()
    assert np.all(np.isfinite(a)) and np.all(np.isfinite(dz))
    assert rel_err(a, at) < TOL
    assert rel_err(dz, zt.grad) < TOL


def test_relu_family_derivative_at_zero_is_torchs(rng):
    z = np.array([[-1.0, 0.0, 2.0]])
    for act, fn in ((ReLU(), F.relu), (LeakyReLU(), lambda t: F.leaky_relu(t, 0.01))):
        act.forward(z)
        zt = t64(z)
        fn(zt).sum().backward()
        assert np.array_equal(act.backward(np.ones_like(z)), zt.grad.numpy())


def test_dropout_is_inverted_and_its_backward_uses_the_same_mask(rng):
    layer = Dropout(0.3, np.random.default_rng(0))
    z = rng.normal(size=(50, 400))
    G = rng.normal(size=z.shape)
    a = layer.forward(z, train=True)
    mask = layer.mask
    assert set(np.unique(mask)) == {0.0, 1.0}
    assert abs(1 - mask.mean() - 0.3) < 0.01  # 20,000 draws: the drop rate is p within 5 sd
    dz = layer.backward(G)
    zt = t64(z)
    at = zt * torch.tensor(mask) / (1 - 0.3)
    (at * torch.tensor(G)).sum().backward()
    assert rel_err(a, at) < TOL and rel_err(dz, zt.grad) < TOL
    assert layer.forward(z, train=False) is z  # evaluation: the identity


def test_mse_matches_torch(rng):
    out, y = rng.normal(size=(4, 10)), rng.normal(size=(4, 10))
    loss = MSE()
    J = loss.forward(out, y)
    outt = t64(out)
    Jt = F.mse_loss(outt, torch.tensor(y), reduction="sum") / (2 * 10)  # ½ Σ (y - ŷ)², mean over N=10
    Jt.backward()
    assert rel_err(J, Jt) < TOL
    assert rel_err(loss.backward(), outt.grad) < TOL


def test_cross_entropy_matches_torch_with_labels_and_with_soft_targets(rng):
    z = rng.normal(scale=4.0, size=(10, 16))
    z[:, 0] += 800.0  # a column whose naive exp overflows
    labels = rng.integers(0, 10, size=16)
    loss = CrossEntropy()
    J = loss.forward(z, labels)
    zt = t64(z)
    Jt = F.cross_entropy(zt.T, torch.tensor(labels))
    Jt.backward()
    assert rel_err(J, Jt) < TOL
    assert rel_err(loss.backward(), zt.grad) < TOL

    soft = rng.dirichlet(np.ones(10), size=16).T  # (K, N) probabilities
    J = loss.forward(z, soft)
    zt = t64(z)
    Jt = F.cross_entropy(zt.T, torch.tensor(soft.T))
    Jt.backward()
    assert rel_err(J, Jt) < TOL
    assert rel_err(loss.backward(), zt.grad) < TOL


def test_hinge_matches_autograd_and_scikit_learn(rng):
    from sklearn.metrics import hinge_loss

    scores = rng.normal(scale=2.0, size=(1, 40))
    y = rng.choice([-1.0, 1.0], size=(1, 40))
    loss = Hinge()
    J = loss.forward(scores, y)
    assert rel_err(J, hinge_loss(y[0], scores[0])) < TOL  # binary: mean max(0, 1 - y ŷ)
    st = t64(scores)
    Jt = torch.clamp(1 - torch.tensor(y) * st, min=0).sum() / 40
    Jt.backward()
    assert rel_err(J, Jt) < TOL and rel_err(loss.backward(), st.grad) < TOL

    # Class indices: one-vs-rest, +1 for the class and -1 for the others, per output.
    scores = rng.normal(size=(10, 12))
    labels = rng.integers(0, 10, size=12)
    J = loss.forward(scores, labels)
    pm1 = torch.full((10, 12), -1.0, dtype=torch.float64)
    pm1[torch.tensor(labels), torch.arange(12)] = 1.0
    st = t64(scores)
    Jt = torch.clamp(1 - pm1 * st, min=0).sum() / 12
    Jt.backward()
    assert rel_err(J, Jt) < TOL and rel_err(loss.backward(), st.grad) < TOL


@pytest.mark.parametrize("penalty, torch_fn", [(L1(0.03), lambda W: 0.03 * W.abs().sum()), (L2(0.03), lambda W: 0.03 * (W**2).sum())])
def test_penalties_match_autograd(rng, penalty, torch_fn):
    Ws = [rng.normal(size=(5, 3)), rng.normal(size=(2, 5))]
    value = penalty.value(Ws)
    ts = [t64(W) for W in Ws]
    total = sum(torch_fn(W) for W in ts)
    total.backward()
    assert rel_err(value, total) < TOL
    for W, Wt in zip(Ws, ts):
        assert rel_err(penalty.grad(W), Wt.grad) < TOL


@pytest.mark.parametrize("activation", ["sigmoid", "tanh", "relu", "leaky_relu"])
@pytest.mark.parametrize("loss_name", ["mse", "cross_entropy", "hinge"])
def test_whole_network_gradients_match_the_torch_mlp(rng, activation, loss_name):
    """The scratch MLP and layerwise's torch MLP with the same weights: every parameter's gradient."""
    from layerwise.models import build

    torch.manual_seed(0)
    tm = build("mlp-digits", sizes=(12, 9, 7, 5), activation=activation).double()
    linears = [blk.linear for blk in tm.hidden] + [tm.head]
    net = MLP((12, 9, 7, 5), activation=activation)
    net.set_weights([(lin.weight.detach().numpy(), lin.bias.detach().numpy()) for lin in linears])
    x = rng.normal(size=(8, 12))
    labels = rng.integers(0, 5, size=8)
    loss = make_loss(loss_name)
    out = net.forward(x.T)
    J = loss.forward(out, labels)
    net.backward(loss.backward())

    zt = tm(torch.tensor(x))  # (N, K) rows
    if loss_name == "cross_entropy":
        Jt = F.cross_entropy(zt, torch.tensor(labels))
    elif loss_name == "mse":
        Jt = F.mse_loss(zt, F.one_hot(torch.tensor(labels), 5).double(), reduction="sum") / (2 * 8)
    else:
        pm1 = 2 * F.one_hot(torch.tensor(labels), 5).double() - 1
        Jt = torch.clamp(1 - pm1 * zt, min=0).sum() / 8
    Jt.backward()
    assert rel_err(out.T, zt) < TOL and rel_err(J, Jt) < TOL
    for (name, _), g, lin in zip(net.parameters(), net.gradients(), [p for lin in linears for p in (lin.weight, lin.bias)]):
        assert rel_err(g.reshape(lin.shape), lin.grad) < TOL, name


def test_bad_input_is_a_one_line_error():
    with pytest.raises(ConfigError, match="activation: expected one of sigmoid, tanh, relu, leaky_relu"):
        make_activation("swish")
    with pytest.raises(ConfigError, match="loss: expected one of mse, cross_entropy, hinge"):
        make_loss("l2")
    with pytest.raises(ConfigError, match=r"Dropout.p: expected a probability in \[0, 1\)"):
        Dropout(1.0)
    with pytest.raises(InputShapeError, match=r"expected \(3, N\): one column per example"):
        Dense(3, 2).forward(np.zeros((4, 2)))
    with pytest.raises(InputShapeError, match="class index 7 is not in 0..4"):
        CrossEntropy().forward(np.zeros((5, 2)), np.array([0, 7]))


def test_the_package_is_numpy_only():
    import subprocess
    import sys

    code = "import sys, layerwise.scratch, layerwise.scratch.network; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
