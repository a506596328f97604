"""Fine-tuning jobs end to end on the packaged MiniLM and real SMS data (small budgets)."""

import json

import pytest

from layerwise.cli import main
from layerwise.jobs.finetune import compare, finetune
from layerwise.report.html import report_for_run_dir
from layerwise.train.config import TrainConfig

pytestmark = pytest.mark.slow


def tiny_config(**kw):
    return TrainConfig(**{"steps": 4, "batch_size": 16, "lr": 2e-3, "device": "cpu", "log_every": 2, **kw})


def test_head_only_uses_the_cache_and_trains_only_the_head(tmp_path):
    r = finetune("minilm-l6", "sms-spam", "head", tiny_config(out_dir=str(tmp_path / "run")), train_fraction=0.05,
                 max_len=32)
    assert r.trainable == 384 * 2 + 2 and r.trainable_by_kind == {"head": 770}
    assert r.params_base == 22_713_216 - 384 * 384 - 384 + 770  # MiniLM without its pooler, plus the new head
    assert r.cache["stage"] == "head"
    assert r.test["accuracy"] > 0.5 and "f1" in r.test
    saved = json.loads((tmp_path / "run" / "finetune.json").read_text())
    assert saved["strategy"] == "head" and saved["record"]["trainable"] == 770


def test_lora_trains_the_adapters_and_cache_starts_after_the_embeddings():
    r = finetune("minilm-l6", "sms-spam", "lora:4", tiny_config(), train_fraction=0.05, max_len=32)
    # the LoRA factors on query and value, and the new head (PEFT's modules_to_save for SEQ_CLS)
    assert r.trainable_by_kind == {"adapter": 6 * 2 * (4 * 384 + 384 * 4), "head": 384 * 2 + 2}
    assert r.cache["stage"] == "layers.0"
    assert r.planned_peak_bytes and r.planned_peak_bytes > 22_713_216 * 4


def test_compare_writes_the_report(tmp_path):
    out = tmp_path / "cmp"
    c = compare("minilm-l6", "sms-spam", ["head", "bitfit"], tiny_config(), out_dir=out, train_fraction=0.05, max_len=32)
    assert [r.strategy for r in c.results] == ["head", "bitfit"]
    assert len({r.params_base for r in c.results}) == 1  # one denominator
    md = (out / "compare.md").read_text()
    assert "| head | 770 |" in md and "| bitfit |" in md
    for png in ("trainable-by-kind.png", "f1-vs-trainable.png"):
        assert (out / png).stat().st_size > 5_000
    page = report_for_run_dir(out).read_text()
    assert "Fine-tuning strategies compared" in page


@pytest.mark.parametrize("argv,message", [
    (["finetune", "--strategy", "sideways"], "unknown strategy 'sideways'"),
    (["finetune", "--strategy", "lora", "--targets", "q_proj"], "match no Linear layer; candidate layer names:"),
    (["finetune", "--strategy", "top-99"], "top-99: the model has only 6 blocks"),
    (["finetune", "--model", "no-such-model"], "--model no-such-model: not a built-in pretrained model"),
])
def test_cli_bad_input(capsys, argv, message, tmp_path):
    code = main(argv + ["--steps", "1", "--train-fraction", "0.02", "--out-dir", str(tmp_path / "x"), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and message in err and err.count("\n") == 1


@pytest.mark.parametrize("strategy,cached", [("head", "head"), ("lora:4", "layers.0"), ("top-1", "layers.5")])
def test_planned_peak_is_the_measured_peak_of_the_same_run(monkeypatch, strategy, cached):
    """The compare table's "planned peak" plans what the Trainer runs (with the frozen-prefix cache,
    the cached suffix; the Trainer's fused AdamW), and matches the peak of that run's own training
    step measured by torch.profiler on the CPU allocator (within 10%).

    The step measured is the second (the optimizer state exists): its peak above the bytes live when
    it starts, plus the bytes of the weights, buffers and optimizer state the run really holds."""
    import torch
    from torch.profiler import ProfilerActivity, profile, record_function

    import layerwise.train.trainer as trainer_mod
    from layerwise.analysis.memory import storage_bytes

    seen: dict = {}
    real_make = trainer_mod.make_optimizer

    def spy_make(*a, **k):  # the real make_optimizer; the test keeps a handle on what it built
        seen["opt"] = real_make(*a, **k)
        return seen["opt"]

    real_init = trainer_mod.Trainer.__init__

    def spy_init(self, *a, **k):
        real_init(self, *a, **k)
        seen["trainer"] = self

    monkeypatch.setattr(trainer_mod, "make_optimizer", spy_make)
    monkeypatch.setattr(trainer_mod.Trainer, "__init__", spy_init)
    prof = profile(activities=[ProfilerActivity.CPU], profile_memory=True)

    def callback(ev):
        if ev.kind != "step":
            return
        if ev.step == 1:
            prof.start()
        if ev.step in (2, 3):
            with record_function(f"mark::{ev.step}"):
                pass
        if ev.step == 3:
            prof.stop()

    torch.set_num_threads(1)
    r = finetune("minilm-l6", "sms-spam", strategy, tiny_config(steps=4, log_every=100), train_fraction=0.05,
                 max_len=32, callback=callback)
    assert r.cache["stage"] == cached
    events = list(prof.profiler.kineto_results.events())
    t2, t3 = (next(e.start_ns() for e in events if e.name() == f"mark::{i}") for i in (2, 3))
    mem = sorted((e for e in events if e.name() == "[memory]" and str(e.device_type()).endswith("CPU")),
                 key=lambda e: e.start_ns())
    cur, start, peak = 0, None, 0
    for e in mem:
        if e.start_ns() > t3:
            break
        if start is None and e.start_ns() >= t2:
            start = cur
        cur += e.nbytes()
        if start is not None:
            peak = max(peak, cur)
    model = seen["trainer"].model
    state = [v for s in seen["opt"].state.values() for v in s.values() if isinstance(v, torch.Tensor)]
    persistent = storage_bytes(list(model.parameters()) + list(model.buffers()) + state)
    measured = persistent + peak - start
    print(f"{strategy}: planned {r.planned_peak_bytes:,} measured {measured:,} "
          f"({100 * (r.planned_peak_bytes - measured) / measured:+.2f}%)")
    assert abs(r.planned_peak_bytes - measured) / measured < 0.10, (r.planned_peak_bytes, measured)
