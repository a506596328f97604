"""Metrics against scikit-learn on random labels (a reference we did not write)."""

import math

import numpy as np
import pytest
import torch
from sklearn.metrics import accuracy_score, precision_recall_fscore_support
from sklearn.metrics import confusion_matrix as sk_confusion_matrix

from layerwise.train.metrics import (
    ClassificationMeter,
    accuracy,
    classification_metrics,
    confusion_matrix,
    perplexity,
    precision_recall_f1,
)


@pytest.mark.parametrize("k,n,seed", [(2, 50, 0), (2, 7, 1), (3, 200, 2), (10, 500, 3), (5, 12, 4)])
def test_against_sklearn_on_random_labels(k, n, seed):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    p = rng.integers(0, k, n)
    if seed == 4:  # a class that is never predicted and one that never occurs: zero divisions
        p[p == 0] = 1
        y[y == k - 1] = 0
    cm = confusion_matrix(torch.from_numpy(y), torch.from_numpy(p), k)
    assert cm.tolist() == sk_confusion_matrix(y, p, labels=list(range(k))).tolist()
    assert accuracy(cm) == pytest.approx(accuracy_score(y, p))
    sp, sr, sf, _ = precision_recall_fscore_support(y, p, average="macro", zero_division=0)
    assert precision_recall_f1(cm, "macro") == pytest.approx((sp, sr, sf))
    per_class = precision_recall_fscore_support(y, p, labels=list(range(k)), average=None, zero_division=0)
    for pos in range(k):
        expected = [v[pos] for v in per_class[:3]]
        if k == 2:
            expected = precision_recall_fscore_support(y, p, average="binary", pos_label=pos, zero_division=0)[:3]
        assert precision_recall_f1(cm, "binary", positive=pos) == pytest.approx(tuple(expected))

def test_binary_report_names_the_positive_class():
    y = torch.tensor([0, 0, 1, 1, 1, 0])
    p = torch.tensor([0, 1, 1, 1, 0, 0])
    m = classification_metrics(confusion_matrix(y, p, 2), label_names=["ham", "spam"])
    sp, sr, sf, _ = precision_recall_fscore_support(y.numpy(), p.numpy(), average="binary", pos_label=1)
    assert (m["precision"], m["recall"], m["f1"]) == pytest.approx((sp, sr, sf))
    assert m["positive_label"] == "spam" and m["per_class"]["ham"]["support"] == 3
    m3 = classification_metrics(confusion_matrix(y, p, 3))
    assert m3["f1"] == m3["f1_macro"]  # no positive class for 3 classes: macro


def test_meter_accumulates_batches_like_one_pass():
    rng = np.random.default_rng(5)
    y = torch.from_numpy(rng.integers(0, 4, 100))
    p = torch.from_numpy(rng.integers(0, 4, 100))
    meter = ClassificationMeter(4)
    for i in range(0, 100, 30):
        meter.update(torch.tensor(0.5 + i / 100), p[i : i + 30], y[i : i + 30])
    out = meter.compute()
    assert out["accuracy"] == pytest.approx(accuracy_score(y, p))
    expected = sum((0.5 + i / 100) * len(y[i : i + 30]) for i in range(0, 100, 30)) / 100
    assert out["loss"] == pytest.approx(expected)


def test_perplexity():
    assert perplexity(math.log(65.0)) == pytest.approx(65.0)
    assert perplexity(1e6) == float("inf")


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_inception_score_against_scipy_kl(seed):
    from scipy.stats import entropy

    from layerwise.train.metrics import inception_score

    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(200, 10)) * rng.uniform(0.5, 6)
    p = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    p[:5, 3] = 0.0  # exact zeros: 0 · log 0 = 0
    p[:5] /= p[:5].sum(axis=1, keepdims=True)
    marginal = p.mean(axis=0)
    expected = math.exp(np.mean([entropy(row, marginal) for row in p]))  # scipy: KL(row ‖ marginal)
    assert inception_score(torch.from_numpy(p)) == pytest.approx(expected, rel=1e-12)


def test_inception_score_bounds():
    from layerwise.train.metrics import inception_score

    assert inception_score(torch.eye(10).repeat(30, 1)) == pytest.approx(10.0)  # confident, every class alike often
    assert inception_score(torch.eye(10)[[3] * 50]) == pytest.approx(1.0)  # one class only
    assert inception_score(torch.full((40, 10), 0.1)) == pytest.approx(1.0)  # no confident prediction
