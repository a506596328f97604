"""`layerwise examples` (the table of the articles' programs) and `layerwise example NAME`
(run one: a run directory with checkpoints, metrics, plots, results.json and report.html)."""

from __future__ import annotations

import argparse


def run_list(args) -> int:
    from rich.table import Table

    from layerwise.commands import stdout_console
    from layerwise.jobs.examples import examples

    t = Table(title="The articles' programs: layerwise example NAME [--quick]")
    for c in ("name", "what it shows", "data", "model", "full run, 2 cores", "headline metric (target)"):
        t.add_column(c)
    for ex in examples():
        minutes = f"~{ex.minutes:.0f} min" if ex.minutes >= 1 else f"~{ex.minutes * 60:.0f} s"
        t.add_row(ex.name, ex.shows, ex.data, ex.model, minutes, ", ".join(str(x) for x in ex.targets))
    stdout_console().print(t)
    return 0


def _example_parser(ex):
    from layerwise.cli import _Parser
    from layerwise.commands import finite_float, nonnegative_int, positive_int
    from layerwise.commands._training import add_run_arguments, add_train_config_arguments

    p = _Parser(prog=f"layerwise example {ex.name}", description=f"{ex.name}: {ex.shows}")
    p.add_argument("--quick", action="store_true", help=f"a short version (under {ex.quick_seconds:.0f} s) that writes every artifact")
    p.add_argument("--out-dir", default=f"runs/example-{ex.name}", help=f"run directory (default runs/example-{ex.name})")
    p.add_argument("--seed", type=nonnegative_int, default=0, help="seed of data splits, initialisation and sampling (default 0)")
    p.add_argument("--no-progress", action="store_true", help="log lines instead of a progress bar")
    add_run_arguments(p)
    g = p.add_argument_group(f"options of {ex.name}")
    for o in ex.options:
        if o.type is bool:
            g.add_argument(o.flag, dest=o.dest, action=argparse.BooleanOptionalAction, default=o.default, help=o.help)
        else:
            # numbers are counts and sizes (>= 1) or finite values; text is taken as it is
            kind = {int: positive_int, float: finite_float}.get(o.type, o.type)
            g.add_argument(o.flag, dest=o.dest, type=kind, default=o.default, help=f"{o.help} (default {o.default!r})")
    if ex.train_flags:
        add_train_config_arguments(p, skip=("out_dir", "seed"))
    return p


def run_one(args) -> int:
    from layerwise.commands._training import Progress, train_flags_given
    from layerwise.jobs.examples import get_example, run_example

    ex = get_example(args.name)
    ns = _example_parser(ex).parse_args(args.rest)
    options = {o.dest: getattr(ns, o.dest) for o in ex.options}
    train = {k: v for k, v in train_flags_given(ns).items() if k not in ("seed", "out_dir")} if ex.train_flags else {}
    if ex.train_flags and getattr(ns, "train_config", None):
        # the file's fields, then the flags: read (and checked) before the example starts
        from layerwise.train.config import TrainConfig

        from layerwise.models.base import read_config_file

        TrainConfig.load(ns.train_config)  # a bad file is refused before the example starts
        data = read_config_file(ns.train_config)
        fields = data["train"] if isinstance(data.get("train"), dict) else data
        skipped = {"out_dir", "seed"}  # the example's own --out-dir and --seed decide these
        train = {**{k: v for k, v in fields.items() if k not in skipped}, **train}
    progress = Progress(enabled=not ns.no_progress)
    try:
        doc = run_example(ex.name, ns.out_dir, quick=ns.quick, seed=ns.seed, options=options, train=train,
                          resume=ns.resume, overwrite=ns.overwrite, callback=progress,
                          emit=lambda line: (progress.close(), print(line, flush=True)))
    finally:
        progress.close()
    print(f"{ex.name}: " + ", ".join(
        f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in doc["metrics"].items()))
    for t in doc["targets"].values():
        if t["met"] is not None:
            print(f"  target {t['target']}: {'met' if t['met'] else 'NOT met'}")
    print(f"run directory: {ns.out_dir} (report.html, results.json)")
    return 0


def register(sub) -> None:
    s = sub.add_parser("examples", help="list the articles' programs (layerwise example NAME runs one)")
    s.set_defaults(func=run_list)
    e = sub.add_parser("example", help="run one of the articles' programs end to end (see layerwise examples)",
                       add_help=False)
    e.add_argument("name", metavar="NAME", help="an example name from `layerwise examples`")
    e.add_argument("rest", nargs=argparse.REMAINDER, help="--quick, --out-dir DIR, --seed N and the example's flags")
    e.set_defaults(func=run_one)
