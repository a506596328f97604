"""The numpy-mlp job: every artifact, weights that reload to the reported accuracy, the
explanation's shapes are the arrays' shapes, the full run reaches 0.95 on digits."""

import json

import numpy as np
import pytest
from safetensors.numpy import load_file

from layerwise.errors import ConfigError
from layerwise.jobs.scratch import explain_numpy_mlp, run_numpy_mlp
from layerwise.scratch import MLP, CrossEntropy, evaluate, explain


def test_quick_run_writes_every_artifact_and_the_weights_reload(tmp_path):
    out = tmp_path / "run"
    r = run_numpy_mlp(out, quick=True, seed=0)
    for name in r["artifacts"]:
        assert (out / name).is_file(), name
    doc = json.loads((out / "results.json").read_text())
    assert doc["metrics"] == r["metrics"] and doc["epochs"] == 10 and doc["test_examples"] == 179
    assert r["metrics"]["accuracy"] >= 0.9  # ten epochs
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert sum(r["split"] == "val" for r in records) == 10
    assert all(0 <= r["accuracy"] <= 1 and r["loss"] > 0 for r in records)
    assert (out / "training-curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # The saved weights give the reported test accuracy in a fresh network.
    from layerwise.data import load_dataset, split

    test = split(load_dataset("digits"), val=0.1, test=0.1, seed=0).test
    x, y = test.images.reshape(len(test.labels), -1).double().numpy(), test.labels.numpy()
    w = load_file(str(out / "weights.safetensors"))
    net = MLP((64, 64, 10), seed=123)
    net.set_weights([(w["W1"], w["b1"]), (w["W2"], w["b2"])])
    assert evaluate(net, CrossEntropy(), x, y)["accuracy"] == r["metrics"]["accuracy"]
    assert "z^(1) = W^(1) x + b^(1)" in (out / "explain.txt").read_text()
    assert json.loads((out / "run.json").read_text())["status"] == "finished"
    with pytest.raises(ConfigError, match="already holds a example:numpy-mlp run"):
        run_numpy_mlp(out, quick=True)
    assert json.loads((out / "results.json").read_text()) == doc
    r2 = run_numpy_mlp(out, quick=True, overwrite=True, epochs=2)
    assert r2["details"]["epochs"] == 2


def test_the_explanations_shapes_are_the_real_arrays_shapes():
    net = MLP((64, 32, 16, 10), activation="tanh", dropout=0.1)
    n = 7
    equations = explain(net, batch_size=n)
    x = np.random.default_rng(0).normal(size=(64, n))
    a = x
    for layer, eq in zip(net.layers, equations):
        a = layer.forward(a)
        assert eq.out_shape == a.shape, eq.layer
        for k, shape in eq.params.items():
            assert layer.params[k].shape == shape
    net.backward(np.ones((10, n)))
    for layer, eq in zip(net.layers, equations):
        for k, shape in eq.params.items():
            assert layer.grads[k].shape == shape
    text = explain_numpy_mlp(batch_size=n, hidden="32,16", activation="tanh", dropout=0.1, l2=1e-4, optimizer="momentum")
    assert "(32, 64) · (64, 7) + (32, 1) → (32, 7)" in text  # z^(1) = W^(1) x + b^(1)
    assert "∂J/∂W^(3) = δ^(3) a^(2)ᵀ    (10, 7) · (7, 16) → (10, 16)" in text
    assert "Penalty: l2 (λ = 0.0001)" in text and "v ← μ v + g" in text


@pytest.mark.slow
def test_full_run_reaches_95_percent_on_the_test_split(tmp_path):
    r = run_numpy_mlp(tmp_path / "run", quick=False, seed=0)
    assert r["metrics"]["accuracy"] >= 0.95, r["metrics"]


def test_bad_options_name_the_flag(tmp_path):
    for kwargs, message in (
        ({"optimizer": "rmsprop"}, "--optimizer: expected one of sgd, momentum, adam, got 'rmsprop'"),
        ({"activation": "gelu"}, "--activation: expected one of sigmoid, tanh, relu, leaky_relu"),
        ({"hidden": "64,x"}, "--hidden: expected"),
        ({"dropout": 1.0}, r"--dropout: expected a number in \[0, 1\)"),
        ({"lr": 0}, "--lr: expected a number > 0"),
        ({"batch_size": 0}, "--batch-size: expected an integer >= 1"),
        ({"warmup": 3}, r"unknown option\(s\) --warmup"),
    ):
        with pytest.raises(ConfigError, match=message):
            run_numpy_mlp(tmp_path / "run", quick=True, **kwargs)
    assert not (tmp_path / "run").exists()
