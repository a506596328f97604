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

from layerwise.errors import ConfigError


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def add_train_config_arguments(parser: argparse.ArgumentParser, skip: tuple[str, ...] = ()) -> None:
    """One flag per TrainConfig field (``--batch-size``, ``--no-compile`` ...), default unset."""
    from layerwise.train.config import TrainConfig

    g = parser.add_argument_group("training options (TrainConfig fields; also from --train-config FILE)")
    g.add_argument("--train-config", metavar="FILE", help="TrainConfig as JSON or TOML; flags override it")
    hints = typing.get_type_hints(TrainConfig)
    for f in dataclasses.fields(TrainConfig):
        if f.name in skip:
            continue
        hint = hints[f.name]
        args = [_flag(f.name)] + (["--out"] if f.name == "out_dir" else [])
        kw: dict = {"dest": f.name, "default": argparse.SUPPRESS, "help": f"default: {f.default!r}"}
        union = typing.get_origin(hint) in (typing.Union, types.UnionType)
        options = set(typing.get_args(hint)) - {type(None)} if union else {hint}
        t = next(iter(options)) if len(options) == 1 else hint
        if t is bool:
            kw["action"] = argparse.BooleanOptionalAction
        elif f.name == "betas":
            kw.update(nargs=2, type=float, metavar=("BETA1", "BETA2"))
        elif f.name == "early_stopping":
            kw.update(type=str, metavar="METRIC[:MODE[:PATIENCE]]", help="e.g. loss:min:5 or f1:max:3")
        elif t in (int, float, str):
            kw["type"] = t
        else:
            kw["type"] = str
        g.add_argument(*args, **kw)


def train_config_from_args(args: argparse.Namespace, defaults: dict | None = None):
    from layerwise.train.config import TrainConfig

    layers = [defaults or {}]
    if getattr(args, "train_config", None):
        layers.append(TrainConfig.load(args.train_config).to_dict())
    layers.append(train_flags_given(args))
    return TrainConfig.layered(*layers)


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
            self._line(
                f"training {r['trainable_params']:,} of {r['params']:,} parameters on {r['device']}"
                f" x{r['world_size']}; {ev.total_steps:,} steps"
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
            self._line(f"done: {ev.step:,} of {ev.total_steps:,} steps in {r.get('seconds', 0):.1f} s"
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
