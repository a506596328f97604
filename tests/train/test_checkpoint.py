"""Checkpoints: safetensors round trips (tied weights, optimizer state), pickles refused,
corrupt files named, and a full disk leaving the previous checkpoint intact."""

import errno
import json

import pytest
import torch
from safetensors.torch import load_file

from layerwise.errors import LoadError
from layerwise.models import build
from layerwise.train import checkpoint as ck
from layerwise.train.checkpoint import (
    CheckpointError,
    CheckpointManager,
    load_checkpoint,
    load_model,
    load_weights,
    resolve_checkpoint,
    save_checkpoint,
    save_weights,
)
from layerwise.train.optim import make_optimizer


def _train_steps(model, opt, n, seed=0):
    g = torch.Generator().manual_seed(seed)
    for _ in range(n):
        x = torch.randint(0, model.config.vocab_size, (4, 16), generator=g)
        loss = model(x, x).loss
        opt.zero_grad()
        loss.backward()
        opt.step()


def test_tied_weights_saved_once_and_retied(tmp_path):
    torch.manual_seed(0)
    model = build("gpt-nano")
    save_weights(model, tmp_path / "w.safetensors")
    raw = load_file(tmp_path / "w.safetensors")  # a plain safetensors file any reader opens
    assert "transformer.wte.weight" in raw and "lm_head.weight" not in raw
    other = build("gpt-nano")
    load_weights(other, tmp_path / "w.safetensors")
    assert other.lm_head.weight is other.transformer.wte.weight
    for (n, a), (_, b) in zip(model.state_dict().items(), other.state_dict().items()):
        assert torch.equal(a, b), n


def test_optimizer_state_round_trip_continues_identically(tmp_path):
    torch.manual_seed(0)
    a = build("gpt-nano")
    opt_a = make_optimizer(a, "adamw", lr=1e-2, weight_decay=0.1)
    _train_steps(a, opt_a, 3)
    save_checkpoint(tmp_path / "c", models={"model": a}, optimizers={"optimizer": opt_a}, state={"step": 3})
    b = build("gpt-nano")
    opt_b = make_optimizer(b, "adamw", lr=1e-2, weight_decay=0.1)
    c = load_checkpoint(tmp_path / "c", {"model": b})
    c.load_optimizer(opt_b)
    assert c.step == 3
    _train_steps(a, opt_a, 3, seed=1)
    _train_steps(b, opt_b, 3, seed=1)
    for (n, p), q in zip(a.named_parameters(), b.parameters()):
        assert torch.equal(p, q), n
    # what is on disk is safetensors + JSON only
    assert sorted(f.name for f in (tmp_path / "c").iterdir()) == ["model.safetensors", "state.json", "state.safetensors"]


def test_pickles_are_refused(tmp_path):
    model = build("gpt-nano")
    torch.save(model.state_dict(), tmp_path / "pytorch_model.bin")
    with pytest.raises(LoadError, match="refusing to load a pickle"):
        load_weights(model, tmp_path / "pytorch_model.bin")
    with pytest.raises(LoadError, match="refusing to load a pickle"):
        resolve_checkpoint(tmp_path)
    load_weights(model, tmp_path / "pytorch_model.bin", allow_pickle=True)  # weights_only=True


def _one_line(e) -> str:
    msg = str(e.value)
    assert "\n" not in msg
    return msg


def test_corrupt_checkpoint_gives_a_one_line_error_naming_the_file(tmp_path):
    model = build("gpt-nano")
    save_checkpoint(tmp_path / "c", models={"model": model}, state={"step": 1, "model_config": model.config.to_dict()})
    f = tmp_path / "c" / "model.safetensors"
    data = bytearray(f.read_bytes())
    data[-5] ^= 0xFF  # one flipped bit in the weights
    f.write_bytes(bytes(data))
    with pytest.raises(LoadError) as e:
        load_checkpoint(tmp_path / "c", {"model": build("gpt-nano")})
    assert str(f) in _one_line(e) and "corrupt" in str(e.value)
    f.write_bytes(bytes(data[:100]))  # truncated: not even a readable header
    with pytest.raises(LoadError) as e:
        load_checkpoint(tmp_path / "c", {"model": build("gpt-nano")}, verify=False)
    assert str(f) in _one_line(e)
    (tmp_path / "c" / "state.json").write_text("{not json")
    with pytest.raises(LoadError) as e:
        load_model(tmp_path / "c")
    assert "state.json" in _one_line(e)


def test_full_disk_leaves_the_previous_checkpoint_intact(tmp_path, monkeypatch):
    model = build("gpt-nano")
    mgr = CheckpointManager(tmp_path / "checkpoints", keep_last=2)
    mgr.save(5, models={"model": model}, state={"step": 5})
    before = {p.name: p.read_bytes() for p in mgr.step_dir(5).iterdir()}
    real_write = ck._write_file

    def full_disk(path, data):
        if path.name == "state.safetensors":
            real_write(path, data[: len(data) // 2])  # half written, then the disk is full
            raise OSError(errno.ENOSPC, "No space left on device")
        real_write(path, data)

    monkeypatch.setattr(ck, "_write_file", full_disk)
    with torch.no_grad():
        model.transformer.wte.weight.add_(1.0)
    for step in (10, 5):  # a new step, and rewriting the existing one
        with pytest.raises(CheckpointError) as e:
            mgr.save(step, models={"model": model}, state={"step": step})
        assert "No space left on device" in _one_line(e) and "intact" in str(e.value)
    assert mgr.steps() == [5]
    assert {p.name: p.read_bytes() for p in mgr.step_dir(5).iterdir()} == before
    assert [p.name for p in (tmp_path / "checkpoints").iterdir()] == ["step-00000005"]  # no temp dirs left
    load_checkpoint(mgr.step_dir(5), {"model": build("gpt-nano")})


def test_keep_last_and_best(tmp_path):
    model = build("gpt-nano")
    mgr = CheckpointManager(tmp_path, keep_last=2)
    for s in (1, 2):
        mgr.save(s, models={"model": model}, state={"step": s})
    mgr.mark_best(1, "loss", 0.5)
    for s in (3, 4):
        mgr.save(s, models={"model": model}, state={"step": s})
    assert mgr.steps() == [1, 3, 4]
    assert mgr.best() == mgr.step_dir(1) and mgr.latest() == mgr.step_dir(4)
    assert json.loads((tmp_path / "best.json").read_text())["value"] == 0.5
    assert resolve_checkpoint(tmp_path) == mgr.step_dir(1)
    assert resolve_checkpoint(tmp_path, prefer="latest") == mgr.step_dir(4)


def test_two_models_and_two_optimizers_as_a_gan_saves_them(tmp_path):
    # GAN/DQN loops reuse the pieces with their own step: several named models and optimizers
    torch.manual_seed(0)
    gen, disc = build("mlp-digits", sizes=(4, 8, 16)), build("mlp-digits", sizes=(16, 8, 1))
    opt_g = make_optimizer(gen, "adam", lr=2e-4, betas=(0.5, 0.999))
    opt_d = make_optimizer(disc, "sgd", lr=1e-2, momentum=0.5)
    for _ in range(2):
        loss = disc(gen(torch.randn(8, 4))).mean()
        opt_g.zero_grad(), opt_d.zero_grad()
        loss.backward()
        opt_g.step(), opt_d.step()
    save_checkpoint(tmp_path / "c", models={"generator": gen, "discriminator": disc},
                    optimizers={"g": opt_g, "d": opt_d}, state={"step": 2, "epoch": 0})
    gen2, disc2 = build("mlp-digits", sizes=(4, 8, 16)), build("mlp-digits", sizes=(16, 8, 1))
    c = load_checkpoint(tmp_path / "c", {"generator": gen2, "discriminator": disc2})
    opt_g2 = make_optimizer(gen2, "adam", lr=2e-4, betas=(0.5, 0.999))
    opt_d2 = make_optimizer(disc2, "sgd", lr=1e-2, momentum=0.5)
    c.load_optimizer(opt_g2, "g")
    c.load_optimizer(opt_d2, "d")
    assert opt_g2.param_groups[0]["betas"] == (0.5, 0.999)
    for a, b in ((opt_g, opt_g2), (opt_d, opt_d2)):
        for sa, sb in zip(a.state.values(), b.state.values()):
            assert all(torch.equal(sa[k], sb[k]) for k in sa if isinstance(sa[k], torch.Tensor))
    assert c.state["epoch"] == 0
