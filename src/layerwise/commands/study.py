"""`layerwise study depth` and `layerwise study conv`: sweeps that measure what depth does
to learning and what each kind of convolution costs (a run directory with results.json,
plots and report.html)."""

from __future__ import annotations

from layerwise.commands import positive_float, positive_int


def _csv(kind):
    def parse(text: str):
        import argparse

        items = [t.strip() for t in text.split(",")]
        if any(not t for t in items):
            raise argparse.ArgumentTypeError(f"expected a comma-separated list, got {text!r}")
        if kind is int:
            try:
                return [int(t) for t in items]
            except ValueError:
                raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
        return items

    return parse


class SweepProgress:
    """One rich progress bar over a study's runs, or one log line per run (``--no-progress``)."""

    def __init__(self, enabled: bool) -> None:
        from layerwise.commands import stdout_console

        self.console = stdout_console(stderr=True)
        self.enabled = enabled
        self.bar = None
        self.task = None

    def line(self, text: str) -> None:
        (self.bar.console if self.bar is not None else self.console).print(text, highlight=False, markup=False,
                                                                           soft_wrap=True)

    def __call__(self, unit: dict, record: dict, finished: int, total: int) -> None:
        if self.enabled and self.bar is None:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            self.bar = Progress(TextColumn("[bold]study"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                                TimeRemainingColumn(), console=self.console)
            self.bar.start()
            self.task = self.bar.add_task("runs", total=total, completed=finished - 1)
        test = record.get("test") or {}
        what = ", ".join(f"{k} {test[k]:.4f}" for k in ("loss", "accuracy") if isinstance(test.get(k), (int, float)))
        status = record["status"] if record["status"] != "ok" else what
        self.line(f"[{finished}/{total}] {unit['key']}: {status} ({record.get('seconds', 0):.1f} s)")
        if self.bar is not None:
            self.bar.update(self.task, completed=finished)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()
            self.bar = None


def run_depth(args) -> int:
    from layerwise.jobs.studies.depth import depth_spec, run_depth_study
    from layerwise.jobs.studies.depth_report import columns, table_rows

    spec = depth_spec(args.family, data=args.data, depths=args.depths, width=args.width, grid=args.grid,
                      budget=args.budget, seeds=args.seeds, steps=args.steps, batch_size=args.batch_size, lr=args.lr,
                      optimizer=args.optimizer, grad_every=args.grad_every, quick=args.quick)
    out_dir = args.out_dir or f"runs/study-depth-{spec.family}" + ("-quick" if spec.quick else "")
    progress = SweepProgress(enabled=not args.no_progress)
    try:
        doc = run_depth_study(out_dir, spec, resume=args.resume, overwrite=args.overwrite, jobs=args.jobs,
                              threads=args.threads, on_done=progress,
                              emit=progress.line)
    finally:
        progress.close()
    _print_table(columns(doc), table_rows(doc))
    m = doc["metrics"]
    for k in ("grad_ratio_plain_sigmoid", "grad_ratio_residual_relu_norm", "grad_ratio_gpt"):
        if m.get(k) is not None:
            print(f"metrics.{k} = {m[k]:.4g}")
    for k in ("depth_effect_plain_sigmoid", "depth_effect_residual_relu_norm"):
        t = m.get(k)
        if t:
            print(f"{t['config']}: depth {t['deep_depth']} " + ("trains measurably worse" if t["deep_trains_worse"]
                  else "does not train measurably worse") + f" than depth {t['shallow_depth']}")
    print(f"run directory: {out_dir} (results.json, report.html) in {doc['seconds']:.0f} s")
    return 0


def _print_table(cols: list[str], rows: list[list[str]]) -> None:
    from rich import box
    from rich.table import Table

    from layerwise.commands import stdout_console

    t = Table(box=box.SIMPLE_HEAD, pad_edge=False)
    for c in cols:
        t.add_column(c, justify="left" if c in ("data", "configuration", "status") else "right")
    for r in rows:
        t.add_row(*r)
    stdout_console().print(t)


def run_conv(args) -> int:
    from layerwise.jobs.studies.conv import conv_spec, run_conv_study

    spec = conv_spec(data=args.data, networks=args.networks, seeds=args.seeds, steps=args.steps,
                     batch_size=args.batch_size, lr=args.lr, quick=args.quick)
    out_dir = args.out_dir or "runs/study-conv" + ("-quick" if spec.quick else "")
    progress = SweepProgress(enabled=not args.no_progress)
    try:
        doc = run_conv_study(out_dir, spec, resume=args.resume, overwrite=args.overwrite, jobs=args.jobs,
                             threads=args.threads, on_done=progress,
                             emit=progress.line)
    finally:
        progress.close()
    from layerwise.jobs.studies.conv import summary_lines

    for line in summary_lines(doc):
        print(line)
    print(f"run directory: {out_dir} (results.json, report.html) in {doc['seconds']:.0f} s")
    return 0


def _common(p) -> None:
    from layerwise.commands._training import add_run_arguments

    p.add_argument("--seeds", type=positive_int, default=None, help="seeds per point (default 3; 1 with --quick)")
    p.add_argument("--steps", type=positive_int, default=None, help="training steps per run (default: the family's)")
    p.add_argument("--batch-size", type=positive_int, default=None)
    p.add_argument("--lr", type=positive_float, default=None)
    p.add_argument("--quick", action="store_true", help="2 depths, 1 seed, a few steps: every artifact in under a minute")
    p.add_argument("--jobs", type=positive_int, default=1,
                   help="worker processes running points in parallel (default 1: the fastest here, docs/depth.md)")
    p.add_argument("--threads", type=positive_int, default=None,
                   help="torch threads per process (default 1: on the shared 2-core machine one thread ran a study "
                        "24x faster than two, docs/depth.md)")
    p.add_argument("--out-dir", default=None, help="run directory (default runs/study-…)")
    p.add_argument("--no-progress", action="store_true", help="a log line per run instead of a progress bar")
    add_run_arguments(p)


def register(sub) -> None:
    from layerwise.jobs.studies.depth import AXES, FAMILIES

    s = sub.add_parser("study", help="sweeps that measure depth and convolution types (study depth | study conv)")
    ss = s.add_subparsers(dest="study", required=True, parser_class=type(s))
    d = ss.add_parser("depth", help="what depth does to learning: loss, accuracy, per-layer gradients, time, FLOPs")
    d.add_argument("--family", choices=FAMILIES, default="mlp",
                   help="mlp (mnist-5k), cnn (plain or residual, mnist-5k) or gpt (shakespeare-1m); default mlp")
    d.add_argument("--data", type=_csv(str), default=None, help="dataset(s), comma-separated, e.g. mnist-5k,digits")
    d.add_argument("--depths", type=_csv(int), default=None, help="hidden layers, comma-separated (default 1,2,4,8,16,32)")
    d.add_argument("--width", type=positive_int, default=None, help="hidden width at every depth (mlp 64, cnn 16 channels, gpt 128)")
    d.add_argument("--grid", default=None,
                   help="axes to cross, e.g. 'activation=sigmoid/relu,residual,norm=none/layernorm' (axes: "
                        + ", ".join(f"{k} {'/'.join(v)}" for k, v in AXES.items()) + "; an axis without values takes all)")
    d.add_argument("--budget", type=positive_int, default=None, metavar="PARAMS",
                   help="compare depths at equal size: the width at each depth keeps the parameters within 2%% of PARAMS "
                        "(the gpt family's default: 800000)")
    d.add_argument("--optimizer", default="adam", help="the training loop's optimizer (default adam)")
    d.add_argument("--grad-every", type=positive_int, default=20, metavar="K",
                   help="log every weight layer's gradient norm and update/weight ratio every K steps (default 20)")
    _common(d)
    d.set_defaults(func=run_depth)
    c = ss.add_parser("conv", help="standard against depthwise-separable and grouped convolutions: parameters, FLOPs, "
                                   "time, accuracy")
    c.add_argument("--data", type=_csv(str), default=None, help="dataset(s), comma-separated (default mnist-5k,digits)")
    c.add_argument("--networks", type=_csv(str), default=None, help="seed, vgg, mobilenet (default: all three)")
    _common(c)
    c.set_defaults(func=run_conv)
