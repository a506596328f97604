"""`layerwise predict RUN "text" …`: the label and its probability per input, from any
classifier run (train, finetune, an example, an export)."""

from __future__ import annotations

import sys

from layerwise.commands import positive_int


def _inputs(args):
    """Texts from the command line, or the inputs of --data (texts or images)."""
    from layerwise.errors import ConfigError

    if args.texts and args.data:
        raise ConfigError("predict: give texts on the command line or --data FILE, not both")
    if args.texts:
        return list(args.texts), list(args.texts)
    if not args.data:
        raise ConfigError("predict: nothing to predict; give texts (layerwise predict RUN \"some text\") or --data FILE")
    from pathlib import Path

    from layerwise.data import ImageClassification, TextClassification, TextCorpus, load_dataset

    if Path(args.data).suffix == ".txt":
        lines = [ln for ln in Path(args.data).read_text(encoding="utf-8").splitlines() if ln.strip()]
        return lines[: args.limit], lines[: args.limit]
    ds = load_dataset(args.data)
    if isinstance(ds, TextClassification):
        texts = list(ds.texts)[: args.limit]
        return texts, texts
    if isinstance(ds, ImageClassification):
        images = ds.images[: args.limit]
        return images, [f"{ds.name}[{i}]" for i in range(len(images))]
    if isinstance(ds, TextCorpus):
        raise ConfigError(f"--data {args.data}: a text corpus; give a .txt file with one text per line")
    raise ConfigError(f"--data {args.data}: expected texts or images")


def run(args) -> int:
    import json

    from layerwise.jobs.runs import load_run

    loaded = load_run(args.run, device=args.device)
    inputs, names = _inputs(args)
    preds = loaded.predict(inputs, batch_size=args.batch_size)
    rows = [{"input": n, **p.to_dict()} for n, p in zip(names, preds)]
    if args.format == "json":
        sys.stdout.write(json.dumps(rows, indent=2) + "\n")
    elif args.format == "csv":
        import csv

        w = csv.writer(sys.stdout, lineterminator="\n")
        labels = loaded.label_names
        w.writerow(["input", "label", "probability", *[f"p_{n}" for n in labels]])
        for r in rows:
            w.writerow([r["input"], r["label"], f"{r['probability']:.6f}", *[f"{r['probabilities'][n]:.6f}" for n in labels]])
    else:
        from rich.table import Table

        from layerwise.commands import stdout_console

        t = Table(title=f"predictions of {loaded.path}", caption=str(loaded.checkpoint or loaded.path))
        t.add_column("input", overflow="fold", max_width=80)
        t.add_column("label")
        t.add_column("probability", justify="right")
        for r in rows:
            t.add_row(str(r["input"]), r["label"], f"{r['probability']:.4f}")
        stdout_console().print(t)
    return 0


def register(sub) -> None:
    p = sub.add_parser("predict", help="label and probability for each input, from a classifier run")
    p.add_argument("run", metavar="RUN", help="run directory (its best checkpoint), checkpoint or export directory")
    p.add_argument("texts", nargs="*", metavar="TEXT", help="texts to classify (text classifiers)")
    p.add_argument("--data", default=None,
                   help="inputs from a file or dataset: .txt (one text per line), .csv/.jsonl, .npy images, a built-in name")
    p.add_argument("--limit", type=positive_int, default=None, help="at most this many inputs from --data")
    p.add_argument("--batch-size", type=positive_int, default=64)
    p.add_argument("--device", default="cpu")
    p.add_argument("--format", choices=["table", "json", "csv"], default="table")
    p.set_defaults(func=run)
