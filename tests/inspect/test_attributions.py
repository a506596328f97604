"""Attributions with Captum: Integrated Gradients' completeness (tabular and through the token
embedding), permutation importance against scikit-learn's, Grad-CAM on a trained CNN, PCA
against scikit-learn's, and the one-line error when Captum is missing."""

import sys

import numpy as np
import pytest
import torch

pytest.importorskip("captum")

from layerwise.data import load_dataset, split  # noqa: E402
from layerwise.inspect import attributions as A  # noqa: E402
from layerwise.inspect.weights import pca_2d  # noqa: E402
from layerwise.models import build  # noqa: E402
from layerwise.train import ClassificationTask, TrainConfig, Trainer  # noqa: E402


def _cfg(**kw):
    return TrainConfig(**{"batch_size": 32, "lr": 1e-2, "seed": 0, "out_dir": None, "log_every": 10_000,
                          "device": "cpu", **kw})


@pytest.fixture(scope="module")
def seed_mlp():
    """The articles' 10-input seed MLP trained on the keras-seed-mlp example's rule (x1 + x2 + x3 > 0)."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1000, 10, generator=g)
    y = (x[:, :3].sum(dim=1) > 0).long()
    torch.manual_seed(0)
    net = build("seed-mlp", output_activation=None)  # one logit: the sigmoid moves into the loss
    task = ClassificationTask(2, ["false", "true"])
    Trainer(net, task, (x[:800], y[:800]), None, _cfg(epochs=4)).fit()
    return net.eval(), task, x[800:], y[800:]


@pytest.mark.slow
def test_integrated_gradients_is_complete_on_the_seed_mlp(seed_mlp):
    net, _, x, _ = seed_mlp
    ig = A.integrated_gradients(net, x[:64], n_steps=64)
    fixed = A.integrated_gradients(net, x[:64], n_steps=64, tolerance=None)  # one fixed quadrature
    assert fixed.n_steps == 64 and ig.n_steps >= 64
    diff = ig.f_x - ig.f_baseline
    assert ig.attributions.shape == (64, 10) and ig.target == [0] * 64
    # Captum's delta is exactly sum(attributions) − (f(x) − f(baseline)), computed by Captum itself
    torch.testing.assert_close(ig.delta, ig.sums - diff, atol=1e-5, rtol=1e-4)
    big = diff.abs() > 0.05  # relative error of a near-zero difference means nothing
    assert int(big.sum()) > 40
    assert float(ig.completeness_error[big].max()) < 0.01  # within 1%
    # the model learnt the rule: the first three features carry the attributions
    share = ig.attributions.abs().mean(0)
    assert set(share.argsort(descending=True)[:3].tolist()) == {0, 1, 2}


def _bert_classifier():
    torch.manual_seed(0)
    return build("bert-tiny", vocab_size=120, head="sequence_classification", num_labels=2, dropout=0.0,
                 attention_dropout=0.0, init_std=0.2).eval()


@pytest.mark.parametrize("family", ["bert", "rnn"])
def test_token_attributions_are_complete_through_the_embedding(family):
    torch.manual_seed(0)
    if family == "bert":
        net, emb = _bert_classifier(), None
        emb = net.embeddings.word

        def fwd(ids, mask):
            return net(ids, attention_mask=mask)
    else:
        net = build("rnn-tiny").eval()
        emb = net.embedding

        def fwd(ids, mask):
            return net(ids, lengths=mask.sum(dim=1))
    ids = torch.randint(1, 100, (3, 12), generator=torch.Generator().manual_seed(1))
    mask = torch.ones_like(ids)
    base = torch.zeros_like(ids)  # the padding token
    ig = A.token_attributions(fwd, ids, emb, base, n_steps=64, additional_args=(mask,))
    assert ig.attributions.shape == (3, 12)
    torch.testing.assert_close(ig.delta, ig.sums - (ig.f_x - ig.f_baseline), atol=1e-5, rtol=1e-4)
    assert float((ig.f_x - ig.f_baseline).abs().min()) > 1e-3
    assert float(ig.completeness_error.max()) < 0.01


@pytest.mark.slow
def test_permutation_importance_agrees_with_scikit_learn(seed_mlp):
    inspection = pytest.importorskip("sklearn.inspection")
    net, task, x, y = seed_mlp

    def accuracy(xp):
        return (task.loss(net, (xp, y))[1] == y).float().mean()

    ours, ours_std = A.permutation_importance(accuracy, x, n_repeats=30, seed=0)

    class Fitted:  # scikit-learn's view of the same network
        def fit(self, X, y):
            return self

        def predict(self, X):
            with torch.no_grad():
                return (net(torch.as_tensor(X, dtype=torch.float32))[:, 0] > 0).long().numpy()

    ref = inspection.permutation_importance(Fitted(), x.numpy(), y.numpy(), n_repeats=30, random_state=0,
                                            scoring=lambda est, X, Y: float((est.predict(X) == Y).mean()))
    assert set(ours.argsort(descending=True)[:3].tolist()) == {0, 1, 2}
    assert set(np.argsort(-ref.importances_mean)[:3].tolist()) == {0, 1, 2}
    # two different random shuffles of the same quantity: equal within sampling error
    se = np.sqrt((ours_std.numpy() ** 2 + ref.importances_std ** 2) / 30)
    assert np.all(np.abs(ours.numpy() - ref.importances_mean) <= 4 * se + 0.01)
    assert float(ours[3:].abs().max()) < 0.03  # the other seven features do not matter


def test_permutation_importance_leaves_the_callers_rng_alone(seed_mlp):
    net, task, x, y = seed_mlp
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    A.permutation_importance(lambda xp: (task.loss(net, (xp, y))[1] == y).float().mean(), x, n_repeats=2)
    assert torch.equal(torch.rand(3), expected)


def test_mass_inside_by_hand():
    images = torch.zeros(1, 1, 2, 2)
    images[0, 0, 0, 0] = 0.5  # one stroke pixel
    maps = torch.tensor([[[3.0, 1.0], [0.0, 0.0]]])
    assert float(A.mass_inside(maps, images)[0]) == pytest.approx(0.75)


@pytest.mark.slow
def test_grad_cam_of_a_trained_cnn_lies_on_the_strokes():
    ds = load_dataset("mnist-5k")
    parts = split(ds, seed=0)
    torch.manual_seed(0)
    net = build("seed-cnn-mnist")
    Trainer(net, ClassificationTask(10, ds.label_names), parts.train, None, _cfg(steps=40, batch_size=64, lr=2e-3)).fit()
    net.eval()
    x, y = parts.test.images[:100], parts.test.labels[:100]
    with torch.no_grad():
        assert float((net(x).argmax(1) == y).float().mean()) > 0.8  # it has learnt something
    cam, targets = A.grad_cam(net, x, net.body[0])  # the default layer of inspect: the first convolution
    assert cam.shape == (100, 28, 28) and float(cam.min()) >= 0
    inside = A.mass_inside(cam, x)
    strokes = float((x > 0).float().mean())
    assert strokes < 0.25  # strokes are a fifth of the pixels ...
    assert float(inside.nanmean()) > 0.5  # ... and hold more than half of Grad-CAM's mass


def test_pca_agrees_with_scikit_learn():
    decomposition = pytest.importorskip("sklearn.decomposition")
    m = torch.randn(300, 16, generator=torch.Generator().manual_seed(0)) * torch.linspace(3, 0.1, 16)
    ours = pca_2d(m)
    ref = decomposition.PCA(n_components=2, svd_solver="full").fit(m.numpy())
    np.testing.assert_allclose(ours.explained_variance_ratio, ref.explained_variance_ratio_, rtol=1e-5)
    coords = ref.transform(m.numpy())
    for i in range(2):  # a principal axis is defined up to its sign
        sign = np.sign(np.dot(coords[:, i], ours.coords[:, i].numpy()))
        np.testing.assert_allclose(ours.coords[:, i].numpy(), sign * coords[:, i], atol=1e-4)


def test_missing_captum_gives_the_pip_line(monkeypatch):
    monkeypatch.setitem(sys.modules, "captum", None)
    monkeypatch.setitem(sys.modules, "captum.attr", None)
    with pytest.raises(A.MissingDependencyError, match=r"pip install 'layerwise\[inspect\]'"):
        A.require_captum()
