"""What `layerwise pretrain` and `layerwise train` share: TrainConfig flags derived from the
dataclass's fields, model overrides, and the rich progress bar."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import types
import typing

from layerwise.commands import count, finite_float, integer
from layerwise.errors import ConfigError


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def show_default(value) -> str:
    """A default as ``--help`` shows it: ``1000``, ``0.001``, ``on``/``off``, ``none``."""
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, (list, tuple)):
        return " ".join(show_default(v) for v in value)
    if isinstance(value, dict):  # early stopping
        return ":".join(str(value[k]) for k in ("metric", "mode", "patience"))
    return str(value)


def resolved_train_defaults(defaults: dict | None = None) -> dict:
    """The TrainConfig a command runs with when no training flag is given: TrainConfig's
    own defaults under the command's (``{"epochs": 5}`` for train), as plain data."""
    from layerwise.train.config import TrainConfig

    return TrainConfig.layered(defaults or {}).to_dict()


def add_train_config_arguments(parser: argparse.ArgumentParser, skip: tuple[str, ...] = (),
                               defaults: dict | None = None, shown: dict | None = None) -> None:
    """One flag per TrainConfig field (``--batch-size``, ``--no-compile`` ...), default unset.

    ``defaults``: the command's own defaults (what :func:`train_config_from_args` gets), so
    that ``--help`` shows the values a run with no flags uses; ``shown``: the help text of
    defaults that depend on other flags (``{"out_dir": "runs/pretrain-MODEL"}``)."""
    from layerwise.train.config import TrainConfig

    shown = dict(shown or {})
    resolved = resolved_train_defaults({k: v for k, v in (defaults or {}).items() if k not in shown})
    length = {"steps": "the run is --epochs long", "epochs": "the run is --steps long"}
    g = parser.add_argument_group("training options (TrainConfig fields; also from --train-config FILE)")
    g.add_argument("--train-config", metavar="FILE", help="TrainConfig as JSON or TOML; flags override it")
    hints = typing.get_type_hints(TrainConfig)
    for f in dataclasses.fields(TrainConfig):
        if f.name in skip:
            continue
        hint = hints[f.name]
        args = [_flag(f.name)] + (["--out"] if f.name == "out_dir" else [])
        value = resolved[f.name]
        default = shown.get(f.name) or (f"none ({length[f.name]})" if value is None and f.name in length
                                        else show_default(value))
        kw: dict = {"dest": f.name, "default": argparse.SUPPRESS, "help": f"default: {default}"}
        union = typing.get_origin(hint) in (typing.Union, types.UnionType)
        options = set(typing.get_args(hint)) - {type(None)} if union else {hint}
        t = next(iter(options)) if len(options) == 1 else hint
        if t is bool:
            kw["action"] = argparse.BooleanOptionalAction
        elif f.name == "betas":
            kw.update(nargs=2, type=finite_float, metavar=("BETA1", "BETA2"))
        elif f.name == "early_stopping":
            kw.update(type=str, metavar="METRIC[:MODE[:PATIENCE]]", help=f"e.g. loss:min:5 or f1:max:3 (default: {default})")
        elif t in (int, float):
            kw["type"] = integer if t is int else finite_float
        elif t is str:
            kw["type"] = str
        else:
            kw["type"] = str
        g.add_argument(*args, **kw)


def train_config_from_args(args: argparse.Namespace, defaults: dict | None = None):
    """The TrainConfig of a run: the command's ``defaults``, then ``--train-config FILE``,
    then the flags given. A bad value is a ConfigError naming the flag that gave it."""
    import re

    from layerwise.train.config import TrainConfig

    layers = [defaults or {}]
    if getattr(args, "train_config", None):
        layers.append(TrainConfig.load(args.train_config).to_dict())
    flags = train_flags_given(args)
    layers.append(flags)
    try:
        return TrainConfig.layered(*layers)
    except ConfigError as e:
        m = re.match(r"TrainConfig\.(\w+)(.*)", str(e), re.S)
        if m and m.group(1) in flags:
            raise ConfigError(f"{_flag(m.group(1))}{m.group(2)}") from None
        if m and getattr(args, "train_config", None):
            raise ConfigError(f"--train-config {args.train_config}: {e}") from None
        raise


def train_flags_given(args: argparse.Namespace) -> dict:
    """The TrainConfig fields set by flags on the command line (not their defaults)."""
    from layerwise.train.config import TrainConfig

    return {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig) if hasattr(args, f.name)}


def parse_overrides(items: list[str] | None) -> dict:
    """``KEY=VALUE`` pairs; VALUE is read as JSON (numbers, true/false, null, lists), else a string."""
    out: dict = {}
    for item in items or []:
        if "=" not in item:
            raise ConfigError(f"--set: expected KEY=VALUE, got {item!r}")
        k, v = item.split("=", 1)
        try:
            out[k.strip()] = json.loads(v)
        except json.JSONDecodeError:
            out[k.strip()] = v
    return out


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="model preset name or config file (.json/.toml)")
    parser.add_argument("--set", dest="model_set", action="append", metavar="KEY=VALUE",
                        help="override a model config field (repeatable), e.g. --set dropout=0.1")
    add_run_arguments(parser)
    parser.add_argument("--no-progress", action="store_true", help="no progress bar (log lines only)")


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """--resume and --overwrite: what to do when the run directory already holds a run."""
    parser.add_argument("--resume", action="store_true",
                        help="continue the run in the run directory from its newest checkpoint that verifies")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace the run already in the run directory (it is moved aside, then deleted)")


def _fmt(v) -> str:
    """Metrics as a person reads them: 4 decimals ("1.0000", not "1")."""
    if isinstance(v, float):
        return f"{v:.4f}" if abs(v) < 1e4 else f"{v:.4g}"
    return str(v)


class Progress:
    """The trainer's events on standard error: a rich progress bar, or (``enabled=False``,
    ``--no-progress``) plain log lines: start, resume, notes, every evaluation, the train
    loss about every 5% of the run, and the end. Only rank 0 speaks under torchrun."""

    def __init__(self, enabled: bool = True) -> None:
        from layerwise.commands import stdout_console

        self.console = stdout_console(stderr=True)
        self.speak = os.environ.get("RANK", "0") == "0"
        self.use_bar = enabled
        self.bar = None
        self.task = None
        self.unit = "examples"
        self.fields = {"loss": "", "speed": "", "mfu": ""}
        self._every = self._last = 1

    def _line(self, text: str) -> None:
        (self.bar.console if self.bar is not None else self.console).print(text, highlight=False, markup=False, soft_wrap=True)

    def __call__(self, ev) -> None:
        if not self.speak:
            return
        if ev.kind == "start":
            r = ev.record
            self.unit = r.get("unit", "examples")
            for note in r.get("notes") or []:
                self._line(f"note: {note}")
            added = r.get("params_added") or 0
            self._line(
                f"training {r['trainable_params']:,} of {r['params']:,} parameters"
                + (f" (the base model's; the strategy added {added:,})" if added else "") + f" on {r['device']}"
                f" x{r['world_size']}; {count(ev.total_steps, 'step')}"
                + (f", resuming at step {ev.step} from {r['resumed_from']}" if ev.step else "")
                + (f"; matmul peak {r['peak_flops'] / 1e9:.0f} GFLOP/s" if r.get("peak_flops") else "")
            )
            self._every, self._last = max(1, ev.total_steps // 20), ev.step
            if not self.use_bar:
                return
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )
            from rich.progress import Progress as RichProgress

            self.bar = RichProgress(
                TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(),
                TextColumn("loss {task.fields[loss]}"), TextColumn("{task.fields[speed]}"),
                TextColumn("MFU {task.fields[mfu]}"), TimeElapsedColumn(), TimeRemainingColumn(),
                console=self.console, transient=False,
            )
            self.bar.start()
            self.task = self.bar.add_task("train", total=ev.total_steps, completed=ev.step, **self.fields)
        elif ev.kind == "step":
            if self.bar is not None:
                self.bar.update(self.task, completed=ev.step, loss=f"{ev.record['loss']:.4f}")
        elif ev.kind == "log":
            r = ev.record
            speed = r.get(f"{self.unit}_per_s")
            m = r.get("mfu")
            if self.bar is not None:
                self.bar.update(self.task, speed=f"{speed:,.0f} {self.unit}/s" if speed else "",
                                mfu=f"{100 * m:.1f}%" if m else "n/a")
            elif ev.step - self._last >= self._every or ev.step == ev.total_steps:
                self._last = ev.step
                self._line(f"step {ev.step:,}/{ev.total_steps:,}: train loss {r['loss']:.4f}"
                           + (f", {speed:,.0f} {self.unit}/s" if speed else "") + (f", MFU {100 * m:.1f}%" if m else ""))
        elif ev.kind == "eval":
            keys = [k for k in ("loss", "perplexity", "accuracy", "precision", "recall", "f1", "f1_macro") if k in ev.record]
            if not keys:  # a task's own evaluation (a DQN's greedy policy): its first few numbers
                keys = [k for k, v in ev.record.items()
                        if k not in ("split", "step") and isinstance(v, (int, float)) and not isinstance(v, bool)][:4]
            self._line(f"step {ev.step:,}: validation " + ", ".join(f"{k} {_fmt(ev.record[k])}" for k in keys))
        elif ev.kind == "end":
            if self.bar is not None:
                self.bar.stop()
                self.bar = None
            r = ev.record
            self._line(f"done: {ev.step:,} of {count(ev.total_steps, 'step')} in {r.get('seconds', 0):.1f} s"
                       + (" (stopped early)" if r.get("stopped_early") else ""))

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()
            self.bar = None


def print_summary(result, extra: dict | None = None) -> None:
    out = sys.stdout
    print(f"steps: {result.steps}/{result.total_steps}{' (stopped early)' if result.stopped_early else ''} in {result.seconds:.1f} s", file=out)
    if result.history:
        print(f"final train loss: {result.history[-1]['loss']:.4f}", file=out)
    if result.final:
        keys = [k for k in ("loss", "perplexity", "accuracy", "precision", "recall", "f1", "f1_macro") if k in result.final]
        print("validation: " + ", ".join(f"{k} {_fmt(result.final[k])}" for k in keys), file=out)
    if result.best:
        print(f"best: {result.best['metric']} {_fmt(result.best['value'])} at step {result.best['step']}", file=out)
    for name, metrics in (extra or {}).items():
        if metrics:
            keys = [k for k in ("loss", "accuracy", "precision", "recall", "f1", "f1_macro") if k in metrics]
            print(f"{name}: " + ", ".join(f"{k} {_fmt(metrics[k])}" for k in keys), file=out)
    if result.run_dir is not None:
        print(f"run directory: {result.run_dir}", file=out)
