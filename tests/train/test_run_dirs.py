"""A run directory belongs to one run: reuse is refused, --overwrite never mixes two runs,
--resume survives a corrupt checkpoint and counts the whole run, Ctrl-C checkpoints."""

import hashlib
import json
import os
import signal
import stat

import numpy as np
import pytest
import torch

from layerwise.cli import main, resume_command
from layerwise.data import TokenStream
from layerwise.errors import ConfigError
from layerwise.models import build
from layerwise.rundir import open_run, read_manifest
from layerwise.train import CheckpointManager, LanguageModelTask, TrainConfig, Trainer, read_records, train


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LAYERWISE_CACHE", str(tmp_path / "cache"))


def _snapshot(root):
    """{relative path: sha256} of every file under ``root``."""
    out = {}
    for dirpath, _, files in os.walk(root):
        for f in files:
            p = os.path.join(dirpath, f)
            out[os.path.relpath(p, root)] = hashlib.sha256(open(p, "rb").read()).hexdigest()
    return out


def _pretrain(run, steps, *extra):
    return ["pretrain", "--model", "gpt-nano", "--data", "shakespeare-1m", "--steps", str(steps), "--batch-size", "4",
            "--eval-every", "10", "--eval-steps", "2", "--log-every", "5", "--checkpoint-every", "10", "--keep-last", "2",
            "--set", "block_size=32", "--out-dir", str(run), "--no-progress", *extra]


def _train_steps(run):
    return [r["step"] for r in read_records(run / "metrics.jsonl") if r["split"] == "train"]


def test_a_fresh_run_into_a_used_directory_is_refused_and_overwrite_replaces_it_cleanly(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(_pretrain(run, 20)) == 0
    first = read_manifest(run)
    assert first["command"] == "pretrain" and first["status"] == "finished"
    assert CheckpointManager(run / "checkpoints").steps() == [10, 20]
    before = _snapshot(run)
    capsys.readouterr()

    # 5 steps into the same directory: refused, and nothing of the old run changes
    assert main(_pretrain(run, 5)) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("layerwise: error: --out-dir") and "--resume" in err and "--overwrite" in err and "\n" not in err
    assert "pretrain run" in err and "checkpoints up to step 20" in err
    assert _snapshot(run) == before

    # --overwrite: the directory holds the new run only
    assert main(_pretrain(run, 5, "--overwrite")) == 0
    err = capsys.readouterr().err
    assert "moved aside" in err
    second = read_manifest(run)
    assert second["run_id"] != first["run_id"] and second["status"] == "finished"
    mgr = CheckpointManager(run / "checkpoints")
    assert mgr.steps() == [5] and mgr.best_info()["step"] == 5
    assert _train_steps(run) == [5]
    assert all(r["step"] <= 5 for r in read_records(run / "metrics.jsonl"))
    assert json.loads((mgr.step_dir(5) / "state.json").read_text())["run_id"] == second["run_id"]
    assert not [p for p in tmp_path.iterdir() if ".replaced-" in p.name]  # the old run is gone once replaced

    assert main(["eval", "--ckpt", str(run), "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["checkpoint"].endswith("step-00000005")


def test_overwrite_keeps_the_old_run_aside_until_the_new_one_has_a_checkpoint(tmp_path):
    run = tmp_path / "run"
    data = TokenStream((np.arange(3000) % 32).astype(np.uint16))
    cfg = TrainConfig(steps=4, batch_size=4, checkpoint_every=2, log_every=1, out_dir=str(run))
    train(build("gpt-nano", vocab_size=32, block_size=16), LanguageModelTask(16), data, config=cfg)
    old = _snapshot(run)

    class Boom(Exception):
        pass

    def fail_at_first_step(ev):
        if ev.kind == "step":
            raise Boom

    with pytest.raises(Boom):
        Trainer(build("gpt-nano", vocab_size=32, block_size=16), LanguageModelTask(16), data, None, cfg,
                callback=fail_at_first_step).fit(overwrite=True)
    aside = [p for p in tmp_path.iterdir() if ".replaced-" in p.name]
    assert len(aside) == 1 and _snapshot(aside[0]) == old  # the old run, whole
    assert read_manifest(run)["status"] == "failed" and not (run / "checkpoints").exists()  # never a mix


def test_out_dir_that_is_a_file_or_a_foreign_directory_is_refused_untouched(tmp_path, capsys):
    f = tmp_path / "notes.txt"
    f.write_text("mine")
    assert main(_pretrain(f, 5)) == 2
    assert "is an existing file" in capsys.readouterr().err and f.read_text() == "mine"
    d = tmp_path / "photos"
    d.mkdir()
    (d / "a.jpg").write_bytes(b"\xff\xd8")
    for extra in ([], ["--overwrite"], ["--resume"]):
        assert main(_pretrain(d, 5, *extra)) == 2
        assert "holds no layerwise run" in capsys.readouterr().err
    assert sorted(p.name for p in d.iterdir()) == ["a.jpg"]


def test_resume_falls_back_past_a_corrupt_checkpoint_and_says_so(tmp_path, capsys):
    run, ref = tmp_path / "run", tmp_path / "ref"
    assert main(_pretrain(ref, 30)) == 0
    assert main(_pretrain(run, 20)) == 0
    weights = run / "checkpoints" / "step-00000020" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-10:] = b"\x00" * 10
    weights.write_bytes(bytes(data))
    capsys.readouterr()
    assert main(_pretrain(run, 30, "--resume")) == 0
    err = capsys.readouterr().err
    assert "step-00000020 does not verify" in err and "resuming from step-00000010" in err
    assert _train_steps(run) == [5, 10, 15, 20, 25, 30]
    ref_losses = {r["step"]: r["loss"] for r in read_records(ref / "metrics.jsonl") if r["split"] == "train"}
    losses = {r["step"]: r["loss"] for r in read_records(run / "metrics.jsonl") if r["split"] == "train"}
    assert losses == ref_losses  # resumed from step 10, the run equals the uninterrupted one


def test_resume_with_nothing_there_starts_fresh_and_refuses_another_commands_run(tmp_path, capsys):
    run = tmp_path / "new"
    assert main(_pretrain(run, 5, "--resume")) == 0
    assert "nothing to resume in" in capsys.readouterr().err and _train_steps(run) == [5]
    clf = tmp_path / "clf"
    assert main(["train", "--model", "mlp-digits", "--data", "digits", "--steps", "3", "--out-dir", str(clf),
                 "--no-progress"]) == 0
    capsys.readouterr()
    assert main(_pretrain(clf, 5, "--resume")) == 2
    err = capsys.readouterr().err
    assert "holds a train run" in err and "not a pretrain run" in err
    with pytest.raises(ConfigError, match="contradict"):
        open_run(tmp_path / "x", "train", resume=True, overwrite=True)


def test_after_a_resume_the_log_and_the_clock_count_the_whole_run(tmp_path):
    data = TokenStream((np.cumsum(np.random.default_rng(0).choice([1, 2], 4000)) % 32).astype(np.uint16))
    cfg = dict(steps=12, batch_size=4, log_every=4, checkpoint_every=6, lr=3e-3)

    def model():
        torch.manual_seed(0)
        return build("gpt-nano", vocab_size=32, block_size=16, dropout=0.1)

    full = train(model(), LanguageModelTask(16), data, config=TrainConfig(**cfg, out_dir=str(tmp_path / "a")))

    class Kill(Exception):
        pass

    def kill_at_7(ev):
        if ev.kind == "step" and ev.step == 7:
            raise Kill

    b = TrainConfig(**cfg, out_dir=str(tmp_path / "b"))
    with pytest.raises(Kill):
        Trainer(model(), LanguageModelTask(16), data, None, b, callback=kill_at_7).fit()
    resumed = Trainer(model(), LanguageModelTask(16), data, None, b).fit(resume=True)
    # the step-8 record averages steps 5..8, two of them before the interruption
    assert [(r["step"], r["loss"]) for r in resumed.history] == [(r["step"], r["loss"]) for r in full.history]
    assert resumed.start_step == 6 and resumed.steps == 12
    elapsed = [r["elapsed_s"] for r in read_records(tmp_path / "b" / "metrics.jsonl") if r["split"] == "train"]
    assert elapsed == sorted(elapsed) and resumed.seconds >= elapsed[-1] - 1e-6


def test_sigint_finishes_the_step_checkpoints_it_and_prints_the_resume_command(tmp_path, capsys, monkeypatch):
    import layerwise.commands._training as training_cli

    real = training_cli.Progress.__call__

    def press_ctrl_c_at_step_7(self, ev):
        real(self, ev)
        if ev.kind == "step" and ev.step == 7:
            signal.raise_signal(signal.SIGINT)

    monkeypatch.setattr(training_cli.Progress, "__call__", press_ctrl_c_at_step_7)
    run = tmp_path / "run"
    argv = _pretrain(run, 20)
    assert main(argv) == 130
    err = capsys.readouterr().err
    assert "interrupted at step 7 of 20" in err and "step-00000007" in err
    assert f"continue with: {resume_command(argv)}" in err and resume_command(argv).endswith("--resume")
    assert CheckpointManager(run / "checkpoints").steps()[-1] == 7
    assert read_manifest(run)["status"] == "interrupted"
    monkeypatch.setattr(training_cli.Progress, "__call__", real)
    assert main([*argv, "--resume"]) == 0
    assert _train_steps(run) == [5, 10, 15, 20] and read_manifest(run)["status"] == "finished"


def test_a_diverging_run_stops_with_the_step_and_the_advice(tmp_path, capsys):
    assert main(["train", "--model", "mlp-digits", "--data", "digits", "--steps", "50", "--lr", "1e9",
                 "--out-dir", str(tmp_path / "r"), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("layerwise: error: diverged at step") and "try a smaller --lr" in err


def test_checkpoints_get_normal_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        data = TokenStream((np.arange(3000) % 32).astype(np.uint16))
        train(build("gpt-nano", vocab_size=32, block_size=16), LanguageModelTask(16), data,
              config=TrainConfig(steps=2, batch_size=4, out_dir=str(tmp_path / "r")))
    finally:
        os.umask(old)
    ck = CheckpointManager(tmp_path / "r" / "checkpoints").latest()
    assert stat.S_IMODE(ck.stat().st_mode) == 0o755
    assert {stat.S_IMODE(p.stat().st_mode) for p in ck.iterdir()} == {0o644}
