"""The training loop: exact resume, stops on NaN, frozen parameters, accumulation,
early stopping, class balancing, bf16, and the run directory."""

import json
import math

import numpy as np
import pytest
import torch
from torch import nn

from layerwise.data import TokenStream
from layerwise.errors import ConfigError, LayerwiseError
from layerwise.models import build
from layerwise.train import (
    CheckpointManager,
    ClassificationTask,
    LanguageModelTask,
    NonFiniteLossError,
    TensorBatches,
    TrainConfig,
    Trainer,
    load_checkpoint,
    read_records,
    train,
)


def _tokens(n=4000, vocab=32, seed=0):
    # a learnable stream: mostly "next = previous + 1 (mod vocab)", with noise
    rng = np.random.default_rng(seed)
    t = np.cumsum(rng.choice([1, 1, 1, 2], n)) % vocab
    return TokenStream(t.astype(np.uint16), name="synthetic")


def _gpt(**kw):
    torch.manual_seed(0)
    return build("gpt-nano", vocab_size=32, block_size=16, **kw)


def _blobs(n=256, k=3, d=8, seed=0, flip=False):
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % k
    centers = torch.randn(k, d, generator=g) * 3
    x = centers[y] + torch.randn(n, d, generator=g)
    if flip:
        y = (y + 1) % k
    return x, y


def _mlp(d=8, k=3):
    torch.manual_seed(0)
    return build("mlp-digits", sizes=(d, 16, k))


LM_CFG = {
    "steps": 20, "batch_size": 4, "grad_accum": 2, "lr": 3e-3, "schedule": "cosine", "warmup_steps": 3, "min_lr": 1e-4,
    "clip_grad_norm": 1.0, "weight_decay": 0.1, "eval_every": 5, "eval_steps": 3, "checkpoint_every": 5, "log_every": 1, "keep_last": 3,
}


def _losses(run_dir, split="train"):
    return [(r["step"], r["loss"]) for r in read_records(run_dir / "metrics.jsonl") if r["split"] == split]


def test_interrupted_then_resumed_run_logs_the_same_losses(tmp_path):
    data, val = _tokens(), _tokens(800, seed=1)
    full = train(_gpt(dropout=0.1), LanguageModelTask(16), data, val, TrainConfig(**LM_CFG, out_dir=str(tmp_path / "a")))

    class Kill(Exception):
        pass

    def kill_at_13(ev):
        if ev.kind == "step" and ev.step == 13:
            raise Kill

    cfg = TrainConfig(**LM_CFG, out_dir=str(tmp_path / "b"))
    with pytest.raises(Kill):
        Trainer(_gpt(dropout=0.1), LanguageModelTask(16), data, val, cfg, callback=kill_at_13).fit()
    assert CheckpointManager(tmp_path / "b" / "checkpoints").steps()[-1] == 10
    torch.manual_seed(123)  # a different global RNG state before resuming: the checkpoint restores it
    resumed = Trainer(_gpt(dropout=0.1), LanguageModelTask(16), data, val, cfg).fit(resume=True)
    a, b = _losses(tmp_path / "a"), _losses(tmp_path / "b")
    assert [s for s, _ in b] == list(range(1, 21))
    assert a == b  # exactly equal, dropout included
    assert _losses(tmp_path / "a", "val") == _losses(tmp_path / "b", "val")
    assert resumed.losses == full.losses and resumed.best == full.best
    a_w = load_checkpoint(tmp_path / "a" / "checkpoints" / "step-00000020", {"model": _gpt()})
    m1, m2 = _gpt(), _gpt()
    load_checkpoint(a_w.path, {"model": m1})
    load_checkpoint(tmp_path / "b" / "checkpoints" / "step-00000020", {"model": m2})
    assert all(torch.equal(p, q) for p, q in zip(m1.parameters(), m2.parameters()))


def test_run_directory(tmp_path):
    res = train(_gpt(), LanguageModelTask(16), _tokens(), _tokens(800, seed=1),
                TrainConfig(steps=6, batch_size=4, eval_every=3, log_every=2, out_dir=str(tmp_path)))
    files = {p.name for p in tmp_path.iterdir()}
    assert {"config.json", "metrics.jsonl", "metrics.csv", "checkpoints", "loss-curve.png"} <= files
    cfg = json.loads((tmp_path / "config.json").read_text())
    assert cfg["model"]["family"] == "gpt" and cfg["train"]["steps"] == 6 and cfg["task"]["task"] == "language_model"
    assert (tmp_path / "loss-curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    header = (tmp_path / "metrics.csv").read_text().splitlines()[0].split(",")
    assert {"split", "step", "loss", "lr", "tokens_per_s", "mfu", "perplexity"} <= set(header)
    assert [r["step"] for r in res.history] == [2, 4, 6] and [r["step"] for r in res.evals] == [3, 6]
    assert res.history[-1]["tokens_per_s"] > 0 and 0 < res.history[-1]["mfu"] < 1.5
    assert res.final["perplexity"] == pytest.approx(math.exp(res.final["loss"]))


class _NaNAfter(nn.Module):
    """Wraps a model; its loss becomes NaN from the n-th training call on."""

    def __init__(self, inner, n):
        super().__init__()
        self.inner, self.n, self.calls = inner, n, 0
        self.config = inner.config

    def forward(self, x, targets=None):
        out = self.inner(x, targets)
        self.calls += self.training
        if self.training and self.calls >= self.n:
            return out._replace(loss=out.loss * float("nan"))
        return out


def test_nan_loss_stops_with_the_step_and_keeps_the_last_good_checkpoint(tmp_path):
    model = _NaNAfter(_gpt(), n=7)
    cfg = TrainConfig(steps=20, batch_size=4, checkpoint_every=5, log_every=1, out_dir=str(tmp_path))
    with pytest.raises(NonFiniteLossError) as e:
        train(model, LanguageModelTask(16), _tokens(), config=cfg)
    msg = str(e.value)
    assert msg.startswith("diverged at step 7 (loss nan, not finite)") and "step-00000005" in msg and "\n" not in msg
    mgr = CheckpointManager(tmp_path / "checkpoints")
    assert mgr.steps() == [5]
    good = _NaNAfter(_gpt(), n=10**9)
    load_checkpoint(mgr.latest(), {"model": good})
    assert all(torch.isfinite(p).all() for p in good.parameters())
    assert [r["step"] for r in read_records(tmp_path / "metrics.jsonl")][-1] == 7  # the bad step is logged


def test_only_trainable_parameters_change_and_flops_are_frozen_aware():
    x, y = _blobs()
    full = train(_mlp(), ClassificationTask(3), (x, y), config=TrainConfig(steps=5, batch_size=16, device="cpu"))
    model = _mlp()
    for p in model.hidden.parameters():
        p.requires_grad_(False)
    frozen_before = [p.detach().clone() for p in model.hidden.parameters()]
    head_before = model.head.weight.detach().clone()
    res = train(model, ClassificationTask(3), (x, y), config=TrainConfig(steps=5, batch_size=16, weight_decay=0.1, l1=1e-3))
    assert all(torch.equal(a, p) for a, p in zip(frozen_before, model.hidden.parameters()))
    assert not torch.equal(head_before, model.head.weight)
    assert res.flops_per_step < full.flops_per_step  # no weight gradients for the frozen layers


def test_gradient_accumulation_matches_one_big_batch():
    x, y = _blobs()
    a = train(_mlp(), ClassificationTask(3), (x, y), config=TrainConfig(steps=8, batch_size=16, grad_accum=2, log_every=1))
    b = train(_mlp(), ClassificationTask(3), (x, y), config=TrainConfig(steps=8, batch_size=32, grad_accum=1, log_every=1))
    assert a.losses == pytest.approx(b.losses, rel=1e-5)


def test_early_stopping_on_a_validation_metric():
    x, y = _blobs()
    xv, yv = _blobs(seed=0, flip=True)  # the better the model fits train, the worse it does here
    cfg = TrainConfig(steps=200, batch_size=16, lr=1e-2, eval_every=10, early_stopping="accuracy:max:2")
    res = train(_mlp(), ClassificationTask(3), (x, y), (xv, yv), config=cfg)
    assert res.stopped_early and res.steps < 200
    assert res.best["metric"] == "accuracy" and res.best["step"] == res.steps - 20
    with pytest.raises(ConfigError, match="early_stopping: needs validation data"):
        train(_mlp(), ClassificationTask(3), (x, y), config=cfg)
    with pytest.raises(ConfigError, match="'f2' is not a validation metric"):
        train(_mlp(), ClassificationTask(3), (x, y), (xv, yv), config=cfg.replace(early_stopping="f2:max"))


def test_classification_metrics_class_weights_and_oversampling():
    x, y = _blobs(n=300, k=2)
    y = (torch.arange(300) % 10 == 0).long()  # 10% positives
    x = x + 4 * y[:, None].float()
    src = TensorBatches((x, y), batch_size=20, seed=0, oversample=True)
    epoch = torch.cat([src.batch(i)[1] for i in range(src.batches_per_epoch)])
    assert src.batches_per_epoch == 27 and torch.bincount(epoch).tolist() == [270, 270]
    task = ClassificationTask(2, ["ham", "spam"])
    res = train(_mlp(k=2), task, (x, y), (x, y), config=TrainConfig(steps=40, batch_size=20, lr=1e-2, class_weights=True))
    assert task.class_weights.tolist() == pytest.approx([300 / (2 * 270), 300 / (2 * 30)])
    assert res.final["accuracy"] > 0.9 and res.final["recall"] > 0.9 and res.final["positive_label"] == "spam"
    assert len(res.final["confusion_matrix"]) == 2
    res = train(_mlp(k=2), ClassificationTask(2), (x, y), (x, y), config=TrainConfig(steps=40, batch_size=20, lr=1e-2, oversample=True))
    assert res.final["recall"] > 0.9


def test_bf16_autocast_on_cpu():
    model = _gpt()
    res = train(model, LanguageModelTask(16), _tokens(), config=TrainConfig(steps=15, batch_size=8, lr=3e-3, precision="bf16", log_every=1))
    assert all(math.isfinite(v) for v in res.losses) and res.losses[-1] < res.losses[0]
    assert all(p.dtype == torch.float32 for p in model.parameters())  # weights stay fp32


def test_bad_data_is_a_one_line_error():
    short = TokenStream(np.arange(10, dtype=np.uint16), name="tiny")
    with pytest.raises(LayerwiseError, match="'tiny' has 10 tokens, too short for block_size=16"):
        train(_gpt(), LanguageModelTask(16), short, config=TrainConfig(steps=1))
    with pytest.raises(LayerwiseError, match="label 3 is not a class index in 0..2"):
        train(_mlp(), ClassificationTask(3), (torch.randn(4, 8), torch.tensor([0, 1, 2, 3])), config=TrainConfig(steps=1))
    with pytest.raises(ConfigError, match="--resume: needs --out-dir"):
        Trainer(_mlp(), ClassificationTask(3), _blobs(), config=TrainConfig(steps=1)).fit(resume=True)


def test_events_reach_the_callback():
    events = []
    train(_mlp(), ClassificationTask(3), _blobs(), _blobs(seed=1), callback=events.append,
          config=TrainConfig(steps=4, batch_size=16, log_every=2, eval_every=2))
    assert [e.kind for e in events] == ["start", "gradients", "step", "gradients", "step", "log", "eval",
                                           "gradients", "step", "gradients", "step", "log", "eval", "end"]
    assert events[0].record["trainable_params"] == 8 * 16 + 16 + 16 * 3 + 3


def test_full_disk_during_training_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    import errno

    from layerwise.train import CheckpointError
    from layerwise.train import checkpoint as ck

    real_write, calls = ck._write_file, []

    def write(path, data):
        calls.append(path.name)
        if calls.count("model.safetensors") == 2:  # the second checkpoint
            raise OSError(errno.ENOSPC, "No space left on device")
        real_write(path, data)

    monkeypatch.setattr(ck, "_write_file", write)
    cfg = TrainConfig(steps=20, batch_size=4, checkpoint_every=5, log_every=1, out_dir=str(tmp_path))
    with pytest.raises(CheckpointError, match=r"step-00000010: No space left on device .*earlier checkpoints are intact"):
        train(_gpt(), LanguageModelTask(16), _tokens(), config=cfg)
    mgr = CheckpointManager(tmp_path / "checkpoints")
    assert mgr.steps() == [5]
    load_checkpoint(mgr.latest(), {"model": _gpt()})
    assert (tmp_path / "metrics.csv").read_text().count("\ntrain,") == 10  # the log up to the failure


def test_tensorboard_is_optional(tmp_path):
    import importlib.util

    cfg = TrainConfig(steps=2, batch_size=16, tensorboard=True, out_dir=str(tmp_path))
    if importlib.util.find_spec("tensorboard") is None:
        with pytest.raises(ConfigError, match="pip install tensorboard"):
            train(_mlp(), ClassificationTask(3), _blobs(), config=cfg)
    else:
        train(_mlp(), ClassificationTask(3), _blobs(), config=cfg)
        assert any((tmp_path / "tensorboard").iterdir())
