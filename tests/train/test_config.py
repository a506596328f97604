"""TrainConfig: validation with one-line errors naming the field, and serialisation."""

import json

import pytest

from layerwise.errors import ConfigError
from layerwise.train.config import EarlyStopping, TrainConfig


@pytest.mark.parametrize(
    "field,value,expected",
    [
        ("lr", 0, "TrainConfig.lr: expected a number > 0"),
        ("lr", "fast", "TrainConfig.lr"),
        ("batch_size", 0, "TrainConfig.batch_size: expected an integer >= 1"),
        ("batch_size", 2.5, "TrainConfig.batch_size"),
        ("optimizer", "adamx", "TrainConfig.optimizer: expected one of sgd, adagrad, rmsprop, adam, adamw"),
        ("schedule", "step", "TrainConfig.schedule"),
        ("precision", "fp16", "TrainConfig.precision: expected one of fp32, bf16-mixed (bf16 is bf16-mixed)"),
        ("momentum", 1.0, "TrainConfig.momentum"),
        ("betas", (0.9,), "TrainConfig.betas"),
        ("clip_grad_norm", -1.0, "TrainConfig.clip_grad_norm"),
        ("warmup_steps", 2000, "TrainConfig.warmup_steps: expected at most steps=1000"),
        ("device", "tpu:0", "TrainConfig.device"),
        ("keep_last", 0, "TrainConfig.keep_last"),
        ("parallel", "zero3", "TrainConfig.parallel"),
        ("early_stopping", "f1:up", "TrainConfig.early_stopping.mode: expected 'min' or 'max'"),
        ("early_stopping", "f1:max:x", "TrainConfig.early_stopping: patience must be an integer"),
    ],
)
def test_bad_field_is_a_one_line_config_error(field, value, expected):
    with pytest.raises(ConfigError) as e:
        TrainConfig(**{field: value})
    msg = str(e.value)
    assert msg.startswith(expected) and "\n" not in msg


def test_steps_or_epochs():
    assert TrainConfig().steps == 1000
    assert TrainConfig(epochs=3).steps is None
    with pytest.raises(ConfigError, match="TrainConfig.epochs"):
        TrainConfig(steps=10, epochs=2)
    assert TrainConfig(steps=10).replace(epochs=2).epochs == 2  # replace switches the length unit
    with pytest.raises(ConfigError, match="nesterov"):
        TrainConfig(optimizer="adamw", nesterov=True)


def test_round_trip_json_and_toml(tmp_path):
    cfg = TrainConfig(steps=50, lr=3e-4, betas=(0.9, 0.95), early_stopping="f1:max:3", schedule="cosine", warmup_steps=5)
    d = cfg.to_dict()
    assert json.loads(json.dumps(d)) == d and d["early_stopping"] == {"metric": "f1", "mode": "max", "patience": 3, "min_delta": 0.0}
    assert TrainConfig.from_dict(d) == cfg
    cfg.save(tmp_path / "train.json")
    assert TrainConfig.load(tmp_path / "train.json") == cfg
    (tmp_path / "t.toml").write_text('[train]\nsteps = 20\nlr = 0.01\nbetas = [0.8, 0.9]\n[train.early_stopping]\nmetric = "loss"\npatience = 2\n')
    t = TrainConfig.load(tmp_path / "t.toml")
    assert t.steps == 20 and t.betas == (0.8, 0.9) and t.early_stopping == EarlyStopping("loss", "min", 2)
    (tmp_path / "bad.toml").write_text("stepz = 3\n")
    with pytest.raises(ConfigError, match=r"bad.toml: unknown field\(s\) stepz"):
        TrainConfig.load(tmp_path / "bad.toml")
    (tmp_path / "bad2.json").write_text('{"lr": -1}')
    with pytest.raises(ConfigError, match=r"bad2.json: TrainConfig.lr"):
        TrainConfig.load(tmp_path / "bad2.json")


def test_cli_flags_come_from_the_fields():
    import argparse

    from layerwise.commands._training import (
        add_train_config_arguments,
        train_config_from_args,
    )

    p = argparse.ArgumentParser()
    add_train_config_arguments(p)
    args = p.parse_args(["--epochs", "3", "--lr", "0.01", "--no-oversample", "--compile", "--betas", "0.8", "0.99",
                         "--early-stopping", "accuracy:max:2", "--out", "runs/x", "--clip-grad-norm", "1"])
    cfg = train_config_from_args(args, defaults={"steps": 500})
    assert (cfg.epochs, cfg.steps, cfg.lr, cfg.compile, cfg.oversample, cfg.betas) == (3, None, 0.01, True, False, (0.8, 0.99))
    assert cfg.early_stopping.metric == "accuracy" and cfg.out_dir == "runs/x" and cfg.clip_grad_norm == 1.0
