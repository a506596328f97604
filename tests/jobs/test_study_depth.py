"""`layerwise study depth`: the quick run's artifacts, resume after an interruption, bad
input, diverged points, budgets, and parallel workers giving the same numbers."""

import json

import pytest

from layerwise.cli import main
from layerwise.errors import ConfigError
from layerwise.jobs.studies import point as P
from layerwise.jobs.studies import sweep
from layerwise.jobs.studies.depth import depth_spec, plan_points, run_depth_study
from layerwise.rundir import read_manifest


def _tiny(**kw):
    base = {"depths": [1, 3], "grid": "activation=sigmoid/relu", "seeds": 1, "steps": 4, "grad_every": 2}
    return depth_spec("mlp", data=["digits"], **{**base, **kw})


def _losses(doc):
    return {r["key"]: (r["train"] or {}).get("loss") for r in doc["runs"]}


@pytest.mark.slow
def test_quick_run_writes_every_artifact(tmp_path, capsys):
    out = tmp_path / "study"
    assert main(["study", "depth", "--quick", "--threads", "1", "--no-progress", "--out-dir", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "metrics.grad_ratio_plain_sigmoid" in printed
    doc = json.loads((out / "results.json").read_text())
    spec = doc["spec"]
    assert spec["depths"] == [2, 8] and spec["seeds"] == 1
    assert len(doc["points"]) == 8 * 2 and len(doc["runs"]) == 16  # every point and every seed
    m = doc["metrics"]
    # the claims, on the quick run's 8-layer nets already
    assert m["grad_ratio_plain_sigmoid"] >= 100
    assert m["grad_ratio_residual_relu_norm"] <= 10
    for p in doc["points"]:
        d = p["depth"]
        # hand formula of an MLP 784 → 64 × d → 10 (+2·64 per LayerNorm): the analysis' count
        expected = 784 * 64 + 64 + (d - 1) * (64 * 64 + 64) + 64 * 10 + 10 + (2 * 64 * d if "layernorm" in p["label"] else 0)
        assert p["params"] == expected and sum(p["by_role"].values()) == expected
        assert p["by_role"]["input"] == 784 * 64 + 64 + (128 if "layernorm" in p["label"] else 0)
        assert p["weight_depth"] == d + 1 and len(p["layers"]) == d + 1
        assert p["s_per_step"]["mean"] > 0 and p["flops_per_step"] > 0
    run = doc["runs"][0]
    assert run["grad"]["steps"][0] == 1 and len(run["grad"]["grad_norm"][0]) == len(run["grad"]["layers"])
    assert all(len(u) == len(run["grad"]["layers"]) for u in run["grad"]["update_ratio"])
    for png in ("depth-accuracy.png", "grad-heatmap.png", "grad-init.png", "depth-cost.png"):
        assert (out / png).stat().st_size > 10_000
    html = (out / "report.html").read_text()
    assert "Every point (mean ± sd over seeds)" in html and html.count("data:image/png;base64") == 4
    assert "Input, hidden and output layers" in html
    assert read_manifest(out)["status"] == "finished"
    # `layerwise report` rebuilds the page from the directory
    assert main(["report", str(out)]) == 0


def test_an_interrupted_sweep_resumes_losing_at_most_the_running_point(tmp_path, monkeypatch):
    spec = _tiny()
    reference = run_depth_study(tmp_path / "ref", spec, threads=1)
    real, calls = P.run_unit, []

    def interrupted(unit):
        calls.append(unit["key"])
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(unit)

    monkeypatch.setattr(P, "run_unit", interrupted)
    out = tmp_path / "study"
    with pytest.raises(sweep.StudyInterrupted, match="interrupted after 2 of 4 runs"):
        run_depth_study(out, spec, threads=1)
    assert read_manifest(out)["status"] == "interrupted"
    assert len(sweep.load_done(out)) == 2
    with pytest.raises(ConfigError, match="already holds"):
        run_depth_study(out, spec, threads=1)  # a used directory needs --resume or --overwrite
    calls.clear()
    doc = run_depth_study(out, spec, resume=True, threads=1)
    assert len(calls) == 2  # only the two runs that had not finished
    assert _losses(doc) == _losses(reference)  # and the numbers are those of an uninterrupted sweep
    with pytest.raises(ConfigError, match=r"--resume: .* other settings \(steps\)"):
        run_depth_study(out, _tiny(steps=5), resume=True, threads=1)


def test_bad_input_is_one_line_and_writes_nothing(tmp_path, capsys):
    out = tmp_path / "never"
    for argv, message in (
        (["--depths", "0,2"], "--depths: expected positive integers (hidden layers), got 0"),
        (["--grid", ""], "--grid: expected a value, got an empty string"),
        (["--grid", "activation="], "--grid: axis 'activation' has an empty value list"),
        (["--grid", "depthwise"], "--grid: unknown axis 'depthwise'"),
        (["--family", "cnn", "--grid", "norm=layernorm"], "--grid: norm=layernorm is not available for the cnn family"),
        (["--budget", "100", "--depths", "1,32"], "--budget 100: too small for depth 1: the narrowest mlp (width 1) already has 805"),
        (["--family", "gpt", "--grid", "activation"], "--grid: the gpt family has no axes"),
    ):
        assert main(["study", "depth", "--out-dir", str(out), *argv]) == 2, argv
        err = capsys.readouterr().err
        assert err.startswith("layerwise: error: ") and message in err and len(err.strip().splitlines()) == 1, err
    assert not out.exists()


def test_a_diverging_point_is_recorded_and_the_sweep_goes_on(tmp_path):
    doc = run_depth_study(tmp_path / "s", _tiny(lr=1e4), threads=1)  # Adam at lr 1e4 blows every net up
    assert [r["status"] for r in doc["runs"]] == ["diverged"] * 4  # every point ran
    assert all("diverged at step" in r["error"] for r in doc["runs"])
    assert all(p["status"] == "diverged" and p.get("train_loss") is None for p in doc["points"])
    assert len(doc["metrics"]["diverged_points"]) == 4
    assert (tmp_path / "s" / "depth-accuracy.png").is_file()
    html = (tmp_path / "s" / "report.html").read_text()
    assert "Diverged (NaN/inf or an exploding loss; the sweep went on)" in html


def test_budget_keeps_every_depth_within_two_percent():
    spec = depth_spec("mlp", depths=[1, 4, 16, 32], grid="activation=relu", budget=50_000)
    for p in plan_points(spec):
        w, d = p["width"], p["depth"]
        params = 784 * w + w + (d - 1) * (w * w + w) + 10 * w + 10  # the MLP by hand
        assert abs(params - 50_000) <= 0.02 * 50_000, (d, w, params)
        assert p["model"]["sizes"] == [784, *([w] * d), 10]


@pytest.mark.slow
def test_gpt_budget_of_0_8m_across_depths():
    spec = depth_spec("gpt")
    assert spec.depths == (1, 2, 4, 8, 16) and spec.budget == 800_000
    for p in plan_points(spec):
        facts = P.model_facts(p["model"], 16, 64)
        assert abs(facts["params"] - 800_000) <= 16_000, (p["depth"], facts["params"])
        assert facts["block_depth"] == p["depth"]


@pytest.mark.slow
def test_parallel_workers_give_the_same_numbers(tmp_path):
    spec = _tiny()
    one = run_depth_study(tmp_path / "one", spec, threads=1)
    two = run_depth_study(tmp_path / "two", spec, jobs=2, threads=1)
    assert two["machine"]["jobs"] == 2
    assert _losses(two) == _losses(one)
    assert [r["grad_at_init"] for r in two["runs"]] == [r["grad_at_init"] for r in one["runs"]]
