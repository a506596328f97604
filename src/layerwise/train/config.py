"""The training configuration: one validated, serialisable dataclass for every run.

:class:`TrainConfig` is plain data (JSON/TOML), written into the run directory and
into every checkpoint, so a run can be resumed or reproduced from its files alone.
Invalid values raise a one-line :class:`~layerwise.errors.ConfigError` naming the
field and what was expected.

Batch sizes are global: ``batch_size`` examples (sequences for a language model)
per micro-batch summed over all processes, ``grad_accum`` micro-batches per
optimizer step. A 2-process run with ``batch_size=8`` gives each process 4
examples per micro-batch and takes the same optimizer steps as a 1-process run.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from layerwise.devices import DEVICES, check_device_name
from layerwise.errors import ConfigError
from layerwise.models.base import check, read_config_file
from layerwise.vocab import PRECISIONS as _PRECISION_SPECS
from layerwise.vocab import TRAINER_OPTIMIZERS, TRAINER_PRECISIONS

OPTIMIZERS = TRAINER_OPTIMIZERS  # the one table: layerwise.vocab.OPTIMIZERS (those torch.optim builds)
SCHEDULES = ("constant", "linear", "cosine")
# the precisions the Trainer runs, by their one name, and their aliases ("bf16" is bf16-mixed)
PRECISIONS = TRAINER_PRECISIONS + tuple(a for n in TRAINER_PRECISIONS for a in _PRECISION_SPECS[n].aliases)
PARALLEL = ("ddp", "fsdp")
MODES = ("min", "max")


@dataclass
class EarlyStopping:
    """Stop when validation ``metric`` has not improved by more than ``min_delta`` for
    ``patience`` evaluations in a row (``mode`` "min" for losses, "max" for accuracy/F1)."""

    metric: str = "loss"
    mode: str = "min"
    patience: int = 5
    min_delta: float = 0.0

    def __post_init__(self) -> None:
        name = "TrainConfig.early_stopping"
        check(isinstance(self.metric, str) and bool(self.metric), name, "metric", "a metric name such as 'loss' or 'f1'", self.metric)
        check(self.mode in MODES, name, "mode", "'min' or 'max'", self.mode)
        check(_is_int(self.patience) and self.patience >= 1, name, "patience", "an integer >= 1", self.patience)
        check(_is_num(self.min_delta) and self.min_delta >= 0, name, "min_delta", "a number >= 0", self.min_delta)

    @classmethod
    def parse(cls, value: str | dict | EarlyStopping | None) -> EarlyStopping | None:
        """From ``"metric[:mode[:patience]]"`` (e.g. ``"f1:max:3"``), a dict, or None."""
        if value is None or isinstance(value, EarlyStopping):
            return value
        if isinstance(value, dict):
            unknown = set(value) - {f.name for f in dataclasses.fields(cls)}
            if unknown:
                raise ConfigError(f"TrainConfig.early_stopping: unknown key(s) {', '.join(sorted(unknown))}")
            return cls(**value)
        if isinstance(value, str):
            parts = value.split(":")
            if len(parts) > 3 or not parts[0]:
                raise ConfigError(f"TrainConfig.early_stopping: expected 'metric[:mode[:patience]]', got {value!r}")
            kw: dict[str, Any] = {"metric": parts[0]}
            if len(parts) > 1:
                kw["mode"] = parts[1]
            if len(parts) > 2:
                try:
                    kw["patience"] = int(parts[2])
                except ValueError:
                    raise ConfigError(f"TrainConfig.early_stopping: patience must be an integer, got {parts[2]!r}") from None
            return cls(**kw)
        raise ConfigError(f"TrainConfig.early_stopping: expected 'metric[:mode[:patience]]' or a table, got {value!r}")


def _device_ok(name: str) -> bool:
    try:
        check_device_name(name)
    except ConfigError:
        return False
    return name != "meta"


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    """A finite int or float (not a bool, NaN or infinity)."""
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


@dataclass
class TrainConfig:
    """Everything the training loop needs besides the model, the task and the data.

    Length: ``steps`` optimizer steps, or ``epochs`` passes over the training data
    (exactly one; neither means 1000 steps).
    Optimizer: ``optimizer`` one of sgd, adagrad, rmsprop, adam, adamw; ``momentum`` and
    ``nesterov`` for SGD (momentum also for RMSprop); ``betas``, ``eps`` for Adam(W).
    Regularisation: ``weight_decay`` (L2 / decoupled for AdamW) on weight matrices and
    conv kernels only -- never on biases, norm parameters or embedding tables (the
    GPT-2/BERT convention; a tied LM head is the embedding); ``l1`` adds
    ``l1 * sum(|w|)`` over the same weights to the loss; dropout comes from the model config.
    Schedule: ``schedule`` constant | linear | cosine from ``lr`` down to ``min_lr``
    after ``warmup_steps`` linear warmup steps.
    Evaluation: every ``eval_every`` steps (0: once per epoch for epoch runs, else only
    at the end) over ``eval_steps`` batches (None: the whole validation set for
    classification, 50 batches for a language model); ``early_stopping``.
    Imbalanced labels: ``class_weights`` (weighted cross-entropy, weights n/(k*count))
    and/or ``oversample`` (each epoch resamples the training set to equal class counts).
    Numerics: ``precision`` fp32 or bf16-mixed (alias bf16: autocast; weights and optimizer stay fp32),
    ``compile`` (torch.compile), ``seed``, ``device`` ("auto": cuda if available),
    ``num_threads`` (torch.set_num_threads; None leaves torch's default).
    Divergence: the run stops with a one-line error when the loss becomes non-finite or
    exceeds ``diverge_factor`` times the first step's loss (None: only non-finite losses).
    Output: ``out_dir`` (None: no run directory, no checkpoints), ``checkpoint_every``
    steps (0: only at the end), ``keep_last`` step checkpoints (the best one is kept
    too), ``log_every`` steps, ``tensorboard`` (needs the tensorboard package).
    Distributed (under torchrun): ``parallel`` "ddp" or "fsdp".
    """

    steps: int | None = None
    epochs: int | None = None
    batch_size: int = 32
    grad_accum: int = 1
    lr: float = 1e-3
    optimizer: str = "adamw"
    momentum: float = 0.9
    nesterov: bool = False
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    weight_decay: float = 0.0
    l1: float = 0.0
    clip_grad_norm: float | None = None
    schedule: str = "constant"
    warmup_steps: int = 0
    min_lr: float = 0.0
    eval_every: int = 0
    eval_steps: int | None = None
    early_stopping: EarlyStopping | None = None
    class_weights: bool = False
    oversample: bool = False
    precision: str = "fp32"
    compile: bool = False
    seed: int = 0
    device: str = "auto"
    num_threads: int | None = None
    checkpoint_every: int = 0
    keep_last: int = 2
    log_every: int = 10
    diverge_factor: float | None = 1e4
    out_dir: str | None = None
    tensorboard: bool = False
    parallel: str = "ddp"

    def __post_init__(self) -> None:
        c = self._check
        if self.steps is None and self.epochs is None:
            self.steps = 1000
        c(not (self.steps is not None and self.epochs is not None), "epochs", "unset when steps is set (give one of steps, epochs)")
        if self.steps is not None:
            c(_is_int(self.steps) and self.steps >= 1, "steps", "an integer >= 1")
        if self.epochs is not None:
            c(_is_int(self.epochs) and self.epochs >= 1, "epochs", "an integer >= 1")
        for name in ("batch_size", "grad_accum"):
            c(_is_int(getattr(self, name)) and getattr(self, name) >= 1, name, "an integer >= 1")
        c(_is_num(self.lr) and self.lr > 0, "lr", "a number > 0")
        c(self.optimizer in OPTIMIZERS, "optimizer", f"one of {', '.join(OPTIMIZERS)}")
        c(_is_num(self.momentum) and 0 <= self.momentum < 1, "momentum", "a number in [0, 1)")
        c(isinstance(self.nesterov, bool), "nesterov", "true or false")
        if self.nesterov:
            c(self.optimizer == "sgd" and self.momentum > 0, "nesterov", "only with optimizer 'sgd' and momentum > 0")
        self.betas = tuple(self.betas) if isinstance(self.betas, (list, tuple)) else self.betas
        c(
            isinstance(self.betas, tuple) and len(self.betas) == 2 and all(_is_num(b) and 0 <= b < 1 for b in self.betas),
            "betas",
            "two numbers in [0, 1)",
        )
        c(_is_num(self.eps) and self.eps > 0, "eps", "a number > 0")
        c(_is_num(self.weight_decay) and self.weight_decay >= 0, "weight_decay", "a number >= 0")
        c(_is_num(self.l1) and self.l1 >= 0, "l1", "a number >= 0")
        if self.clip_grad_norm is not None:
            c(_is_num(self.clip_grad_norm) and self.clip_grad_norm > 0, "clip_grad_norm", "a number > 0 or null")
        c(self.schedule in SCHEDULES, "schedule", f"one of {', '.join(SCHEDULES)}")
        c(_is_int(self.warmup_steps) and self.warmup_steps >= 0, "warmup_steps", "an integer >= 0")
        if self.steps is not None:
            c(self.warmup_steps <= self.steps, "warmup_steps", f"at most steps={self.steps}")
        c(_is_num(self.min_lr) and 0 <= self.min_lr <= self.lr, "min_lr", f"a number in [0, lr={self.lr}]")
        c(_is_int(self.eval_every) and self.eval_every >= 0, "eval_every", "an integer >= 0 (0: per epoch or at the end)")
        if self.eval_steps is not None:
            c(_is_int(self.eval_steps) and self.eval_steps >= 1, "eval_steps", "an integer >= 1 or null")
        self.early_stopping = EarlyStopping.parse(self.early_stopping)
        c(isinstance(self.class_weights, bool), "class_weights", "true or false")
        c(isinstance(self.oversample, bool), "oversample", "true or false")
        c(self.precision in PRECISIONS, "precision",
          f"one of {', '.join(TRAINER_PRECISIONS)} (bf16 is bf16-mixed)")
        c(isinstance(self.compile, bool), "compile", "true or false")
        c(_is_int(self.seed) and self.seed >= 0, "seed", "an integer >= 0")
        c(isinstance(self.device, str) and _device_ok(self.device), "device", DEVICES)
        if self.num_threads is not None:
            c(_is_int(self.num_threads) and self.num_threads >= 1, "num_threads", "an integer >= 1 or null")
        c(_is_int(self.checkpoint_every) and self.checkpoint_every >= 0, "checkpoint_every", "an integer >= 0 (0: at the end)")
        c(_is_int(self.keep_last) and self.keep_last >= 1, "keep_last", "an integer >= 1")
        c(_is_int(self.log_every) and self.log_every >= 1, "log_every", "an integer >= 1")
        if self.diverge_factor is not None:
            c(_is_num(self.diverge_factor) and self.diverge_factor > 1, "diverge_factor", "a number > 1 or null")
        if self.out_dir is not None:
            self.out_dir = os.fspath(self.out_dir)
        c(isinstance(self.tensorboard, bool), "tensorboard", "true or false")
        c(self.parallel in PARALLEL, "parallel", f"one of {', '.join(PARALLEL)}")

    def _check(self, condition: bool, name: str, expected: str) -> None:
        check(condition, "TrainConfig", name, expected, getattr(self, name, None))

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if isinstance(v, EarlyStopping):
                v = dataclasses.asdict(v)
            d[f.name] = list(v) if isinstance(v, tuple) else v
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str | None = None) -> TrainConfig:
        """Build from plain data; unknown fields are a ConfigError (``source`` prefixes it)."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            where = source or "TrainConfig"
            raise ConfigError(f"{where}: unknown field(s) {', '.join(unknown)}; valid fields: {', '.join(sorted(names))}")
        try:
            return cls(**data)
        except ConfigError as e:
            if source is None:
                raise
            raise ConfigError(f"{source}: {e}") from None

    @classmethod
    def layered(cls, *layers: dict[str, Any], source: str | None = None) -> TrainConfig:
        """From several dicts of fields, later ones winning (defaults, then a file, then
        flags); a layer that gives one of ``steps``/``epochs`` unsets the other."""
        data: dict[str, Any] = {}
        for layer in layers:
            if layer.get("steps") is not None and layer.get("epochs") is None:
                data["epochs"] = None
            if layer.get("epochs") is not None and layer.get("steps") is None:
                data["steps"] = None
            data.update({k: v for k, v in layer.items() if k not in ("steps", "epochs") or v is not None})
        return cls.from_dict(data, source=source)

    @classmethod
    def load(cls, path: str | os.PathLike) -> TrainConfig:
        """From a JSON or TOML file (a ``[train]`` table, or the fields at the top level)."""
        data = read_config_file(path)
        if "train" in data and isinstance(data["train"], dict):
            data = data["train"]
        return cls.from_dict(data, source=str(path))

    def replace(self, **overrides: Any) -> TrainConfig:
        d = self.to_dict()
        if "epochs" in overrides and overrides["epochs"] is not None and "steps" not in overrides:
            d["steps"] = None
        if "steps" in overrides and overrides["steps"] is not None and "epochs" not in overrides:
            d["epochs"] = None
        d.update(overrides)
        return type(self).from_dict(d)

    def save(self, path: str | os.PathLike) -> Path:
        from layerwise.io import atomic_write_text

        return atomic_write_text(Path(path), json.dumps(self.to_dict(), indent=2) + "\n")
