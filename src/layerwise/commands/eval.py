"""`layerwise eval`: metrics of a checkpoint on held-out data."""

from __future__ import annotations

import json
import sys


def run(args) -> int:
    from layerwise.jobs.training import evaluate_run

    from layerwise.errors import ConfigError

    if args.run and args.ckpt and args.run != args.ckpt:
        raise ConfigError("eval: give the run once (RUN or --ckpt RUN)")
    target = args.run or args.ckpt
    if not target:
        raise ConfigError("eval: which run? give RUN (a run, checkpoint or export directory)")
    from layerwise.commands.finetune import data_options

    metrics = evaluate_run(target, data=args.data, split=args.split, device=args.device, batch_size=args.batch_size,
                           data_options=data_options(args))
    if args.format == "json":
        sys.stdout.write(json.dumps(metrics, indent=2) + "\n")
        return 0
    from rich.table import Table

    from layerwise.commands import stdout_console

    t = Table(title=metrics["data"], caption=metrics["checkpoint"])
    t.add_column("metric")
    t.add_column("value", justify="right")
    for k, v in metrics.items():
        if isinstance(v, float):
            t.add_row(k, f"{v:.4f}")
        elif isinstance(v, int) and not isinstance(v, bool):
            t.add_row(k, f"{v:,}")
    stdout_console().print(t)
    if "confusion_matrix" in metrics:
        names = list(metrics.get("per_class", {}))
        cm = Table(title="confusion matrix (rows: true, columns: predicted)")
        cm.add_column("")
        for n in names:
            cm.add_column(n, justify="right")
        for n, row in zip(names, metrics["confusion_matrix"]):
            cm.add_row(n, *(str(v) for v in row))
        stdout_console().print(cm)
    return 0


def register(sub) -> None:
    p = sub.add_parser("eval", help="evaluate a checkpoint (loss/perplexity, or accuracy/precision/recall/F1)")
    p.add_argument("run", nargs="?", metavar="RUN", help="run directory (its best checkpoint) or a checkpoint directory")
    p.add_argument("--ckpt", default=None, help="the same as RUN")
    p.add_argument("--data", default=None, help="dataset; default: the one the run was trained on, split as in training")
    p.add_argument("--split", default="test", choices=["train", "val", "test"],
                   help="part of the training data to use (default test; a pretraining run's held-out part is val)")
    from layerwise.commands import positive_int
    from layerwise.commands.finetune import add_data_arguments

    add_data_arguments(p, images=True)
    p.add_argument("--batch-size", type=positive_int, default=None, help="examples per batch (default: the run's)")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N, mps or auto")
    p.add_argument("--format", choices=["table", "json"], default="table", help="a table, or JSON with exact values")
    p.set_defaults(func=run)
