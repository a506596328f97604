"""The articles' bank of programs, each one runnable end to end on offline data:
``layerwise examples`` lists them, ``layerwise example NAME`` runs one.

An example is one module in this package with an ``EXAMPLE`` (:class:`Example`): what it
shows, its data and model, the expected time of a full run on 2 CPU cores, the headline
metric with its target, the flags it takes, and ``run(ctx) -> ExampleOutput``. Modules
import torch and the rest inside ``run``, so the list stays fast.

:func:`run_example` gives every example the same run directory (:mod:`layerwise.rundir`,
command ``example:NAME``) and the same finish: ``results.json`` with a top-level
``"metrics"`` object holding the headline metrics (and whether each target was met, for
full runs), the report sections, and ``report.html`` built by ``layerwise report``.
"""

from __future__ import annotations

import importlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from layerwise.errors import UnknownNameError, suggest

# Module names, in the order the table lists them (the articles' order).
MODULES = ("keras_seed_mlp", "numpy_mlp", "mlp_mnist", "cnn_mnist", "lstm_sentiment", "seq2seq_attention", "bert_classifier",
           "transformer_lm")


@dataclass(frozen=True)
class Option:
    """A flag an example takes besides the common ones: ``--flag`` of ``type`` (int, float,
    str or bool) with a default, as argparse builds it."""

    flag: str
    type: type
    default: Any
    help: str

    @property
    def dest(self) -> str:
        return self.flag.lstrip("-").replace("-", "_")


@dataclass(frozen=True)
class Target:
    """The headline metric's target for a full run: ``metric op value`` (op ``>=``, ``<=``, ``==``, ``>``)."""

    metric: str
    op: str
    value: float

    def met(self, metrics: dict) -> bool | None:
        v = metrics.get(self.metric)
        if not isinstance(v, (int, float)):
            return None
        return {">=": v >= self.value, "<=": v <= self.value, "==": v == self.value, ">": v > self.value}[self.op]

    def __str__(self) -> str:
        return f"{self.metric} {self.op} {self.value:g}"


@dataclass
class ExampleContext:
    """What an example's ``run`` receives."""

    out_dir: Path
    quick: bool
    seed: int
    options: dict[str, Any]  # the example's own flags, parsed (defaults filled in)
    train: dict[str, Any]  # TrainConfig fields given on the command line (--epochs, --lr, --device ...)
    run: Any = None  # the example's RunDir (layerwise.rundir): pass it to the jobs it calls
    resume: bool = False
    callback: Callable | None = None  # the training loop's events (a progress bar)
    emit: Callable[[str], None] = lambda line: None  # lines for the person watching


@dataclass
class ExampleOutput:
    """What an example's ``run`` returns: headline metrics (names as in the table), any
    other results for ``results.json``, and the report's sections."""

    metrics: dict[str, Any]
    details: dict[str, Any] = field(default_factory=dict)
    sections: list = field(default_factory=list)  # layerwise.report.html.Section


@dataclass(frozen=True)
class Example:
    name: str
    shows: str  # the articles' program it makes real
    data: str
    model: str
    minutes: float  # a full run on 2 CPU cores
    targets: tuple[Target, ...]
    run: Callable[[ExampleContext], ExampleOutput]
    options: tuple[Option, ...] = ()
    train_flags: bool = True  # takes the training loop's flags (--epochs, --lr, --precision, --device ...)
    quick_seconds: float = 60.0


def _module(name: str):
    return importlib.import_module(f"layerwise.jobs.examples.{name}")


def examples() -> list[Example]:
    """Every example, in the articles' order."""
    return [_module(m).EXAMPLE for m in MODULES]


def get_example(name: str) -> Example:
    for ex in examples():
        if ex.name == name:
            return ex
    names = [ex.name for ex in examples()]
    raise UnknownNameError(f"unknown example {name!r}; expected one of {', '.join(names)}.{suggest(name, names)}")


def run_example(
    name: str,
    out_dir: str | Path,
    quick: bool = False,
    seed: int = 0,
    options: dict | None = None,
    train: dict | None = None,
    resume: bool = False,
    overwrite: bool = False,
    callback: Callable | None = None,
    emit: Callable[[str], None] = lambda line: None,
) -> dict:
    """Run example ``name`` into run directory ``out_dir``; returns the results document
    (also written to ``out_dir/results.json``) and writes ``report.html``."""
    from layerwise.report.html import Section, report_for_run_dir, write_manifest
    from layerwise.rundir import check_run, open_run

    ex = get_example(name)
    opts = {o.dest: o.default for o in ex.options}
    unknown = sorted(set(options or {}) - set(opts))
    if unknown:
        from layerwise.errors import ConfigError

        raise ConfigError(f"example {name}: unknown option(s) {', '.join(unknown)}")
    opts.update(options or {})
    command = f"example:{name}"
    check_run(out_dir, command, resume=resume, overwrite=overwrite)
    t0 = time.perf_counter()
    with open_run(out_dir, command, resume=resume, overwrite=overwrite,
                  info={"example": name, "quick": quick, "seed": seed, "options": opts, "train": train or {}}) as run:
        for note in run.notes:
            emit(f"note: {note}")
        ctx = ExampleContext(Path(out_dir), quick, seed, opts, dict(train or {}), run, resume, callback, emit)
        out = ex.run(ctx)
        seconds = time.perf_counter() - t0
        targets = {str(t.metric): {"target": str(t), "met": None if quick else t.met(out.metrics)} for t in ex.targets}
        doc = {"example": name, "quick": quick, "seed": seed, "seconds": seconds, "metrics": out.metrics,
               "targets": targets, **out.details}
        from layerwise.io import atomic_write_text

        atomic_write_text(Path(out_dir) / "results.json", json.dumps(doc, indent=2, default=_jsonable) + "\n")
        headline = Section(
            f"{name}: {ex.shows}",
            markdown=_metrics_markdown(ex, out.metrics, quick, seconds),
            data={"metrics": out.metrics, "targets": targets},
        )
        write_manifest(out_dir, f"example {name}", [headline, *out.sections])
        report_for_run_dir(out_dir)
    return doc


def _jsonable(o):
    return o.tolist() if hasattr(o, "tolist") else str(o)


def _metrics_markdown(ex: Example, metrics: dict, quick: bool, seconds: float) -> str:
    lines = [f"Data: **{ex.data}**. Model: **{ex.model}**. "
             f"{'Quick run' if quick else 'Full run'} in {seconds:.1f} s on this machine.", "",
             "| metric | value | full-run target |", "|---|---:|---|"]
    targets = {t.metric: t for t in ex.targets}
    for k, v in metrics.items():
        val = f"{v:.4f}" if isinstance(v, float) else (f"{v:,}" if isinstance(v, int) and not isinstance(v, bool) else str(v))
        t = targets.get(k)
        lines.append(f"| {k} | {val} | {t.op + ' ' + format(t.value, 'g') if t else ''} |")
    return "\n".join(lines) + "\n"
