"""`layerwise study conv`: the per-layer formulas against Keras and torch's FlopCounterMode,
the equal-budget widening, grouped convs, and the quick run's artifacts."""

import json
import os

os.environ.setdefault("KERAS_BACKEND", "torch")

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from layerwise.cli import main
from layerwise.jobs.studies.conv import (
    canonical_layers,
    conv_spec,
    layer_comparison,
    plan_points,
)
from layerwise.jobs.studies.point import model_facts

MNIST = {"channels": 1, "size": 28, "classes": 10}


def test_seed_cnn_layer_formulas_match_keras():
    import keras
    from keras import layers

    (row,) = layer_comparison("seed", MNIST)  # the seed CNN's second conv, 32 → 64, on a 13×13 map
    assert row["standard"]["substituted"] == "3·3·32·64 + 64" and row["standard"]["value"] == row["standard"]["numel"]
    x = keras.Input((13, 13, 32))
    std = layers.Conv2D(64, 3)
    dw, pw = layers.DepthwiseConv2D(3), layers.Conv2D(64, 1)
    pw(dw(x)), std(x)
    assert row["standard"]["value"] == std.count_params() == 18_496
    assert row["separable"]["value"] == dw.count_params() + pw.count_params() == 2_432
    assert row["separable"]["value"] == row["separable"]["numel"]
    # Keras's fused SeparableConv2D keeps one bias (on the pointwise part): C_in fewer than ours
    sep = layers.SeparableConv2D(64, 3)
    sep(x)
    assert sep.count_params() == 2_432 - 32
    assert row["param_ratio"] == pytest.approx(18_496 / 2_432)


def test_per_layer_flops_match_flop_counter_mode():
    for net, shape in (("vgg", MNIST), ("mobilenet", {"channels": 1, "size": 8, "classes": 10})):
        for r in layer_comparison(net, shape):
            c_in, c_out, stride = r["c_in"], r["c_out"], r["stride"][0]
            x = torch.zeros(r["input_shape"])
            conv = torch.nn.Conv2d(c_in, c_out, 3, stride, 1)
            dw, pw = torch.nn.Conv2d(c_in, c_in, 3, stride, 1, groups=c_in), torch.nn.Conv2d(c_in, c_out, 1)
            with FlopCounterMode(display=False) as a:
                conv(x)
            with FlopCounterMode(display=False) as b:
                pw(dw(x))
            assert r["flops_standard"] == a.get_total_flops(), (net, r["layer"])
            assert r["flops_separable"] == b.get_total_flops(), (net, r["layer"])


def test_canonical_ratio_tends_to_k_squared():
    rows = canonical_layers()
    for r in rows:
        c = r["c"]
        assert r["standard"]["value"] == 9 * c * c + c == r["standard"]["numel"]
        assert r["separable"]["value"] == 9 * c + c + c * c + c == r["separable"]["numel"]
    assert rows[-1]["param_ratio"] == pytest.approx((9 * 512 * 512 + 512) / (9 * 512 + 512 + 512 * 512 + 512))
    assert [r["param_ratio"] for r in rows] == sorted(r["param_ratio"] for r in rows) and rows[-1]["param_ratio"] < 9


def test_equal_budget_and_grouped_points():
    points = plan_points(conv_spec(data=["digits"], seeds=1))
    for net in ("seed", "vgg", "mobilenet"):
        std = next(p for p in points if p["network"] == net and p["form"] == "standard")
        bud = next(p for p in points if p["network"] == net and p["form"] == "separable-budget")
        n_std, n_bud = (model_facts(p["model"], 1)["params"] for p in (std, bud))
        assert abs(n_bud - n_std) <= 0.02 * n_std and bud["within_2pct"] and bud["width_multiplier"] > 1
    grouped = [p for p in points if p["part"] == "grouped"]
    assert [p["groups"] for p in grouped] == [1, 2, 4, 8, 16, 32]
    for p in grouped:
        f = p["conv_formula"]
        assert f["value"] == f["numel"] == 9 * (32 // p["groups"]) * 32 + 32
    assert grouped[0]["conv_formula"]["kind"] == "conv" and grouped[-1]["conv_formula"]["kind"] == "depthwise"
    assert grouped[2]["conv_formula"]["kind"] == "grouped"


def test_bad_input(capsys):
    assert main(["study", "conv", "--networks", "resnet"]) == 2
    assert "--networks: unknown network 'resnet'; expected some of seed, vgg, mobilenet" in capsys.readouterr().err


@pytest.mark.slow
def test_quick_run_writes_every_artifact(tmp_path, capsys):
    out = tmp_path / "conv"
    assert main(["study", "conv", "--quick", "--threads", "1", "--no-progress", "--out-dir", str(out)]) == 0
    assert "metrics.param_ratio" in capsys.readouterr().out
    doc = json.loads((out / "results.json").read_text())
    m = doc["metrics"]
    assert m["param_ratio"] == pytest.approx(18_496 / 2_432)
    assert isinstance(m["accuracy_gap_equal_budget"], float)
    assert set(m["speed"]) == {"digits/seed", "digits/vgg", "digits/mobilenet"}
    assert len(doc["points"]) == 3 * 3 + 6 and len(doc["runs"]) == 15
    kinds = next(p for p in doc["points"] if p["network"] == "mobilenet" and p["form"] == "separable")["by_kind"]
    assert set(kinds) == {"conv", "depthwise", "pointwise", "norm", "head"}
    for png in ("conv-params-by-kind.png", "conv-accuracy-time.png", "conv-grouped.png"):
        assert (out / png).stat().st_size > 10_000
    html = (out / "report.html").read_text()
    assert "Per layer: the two formulas, substituted and checked" in html and "3·3·32·64 + 64 = 18,496 ✓" in html
