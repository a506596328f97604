"""`layerwise inspect RUN_OR_MODEL [--data D] [--inputs …]`: per-layer health, attributions,
attention maps and weights of a network on real data; a run directory with results.json and
report.html, and the per-layer table on the terminal."""

from __future__ import annotations

import sys


def _sections(text: str) -> list[str]:
    import argparse

    from layerwise.jobs.inspect import SECTIONS

    items = [s.strip() for s in text.split(",") if s.strip()]
    bad = [s for s in items if s not in SECTIONS]
    if bad or not items:
        raise argparse.ArgumentTypeError(f"expected a comma-separated list of {', '.join(SECTIONS)}, got {text!r}")
    return items


def register(sub) -> None:
    from layerwise.commands import positive_float, positive_int
    from layerwise.jobs.inspect import SECTIONS
    from layerwise.train.optim import OPTIMIZER_NAMES

    p = sub.add_parser("inspect", help="look inside a network on real data: per-layer health, attributions, "
                                       "attention maps, filters and embeddings")
    p.add_argument("source", metavar="RUN_OR_MODEL",
                   help="a run directory (or checkpoint), or a model preset / config file (inspected at its initial weights)")
    p.add_argument("--data", help="dataset name or file to inspect it on (default for a run: its own data, test split)")
    p.add_argument("--inputs", nargs="+", metavar="TEXT",
                   help="your own inputs: texts for token models, comma-separated numbers for tabular ones "
                        "(a row that starts with a minus sign needs a space in it: '-1, 0.5, 2')")
    p.add_argument("--sections", type=_sections, metavar="LIST",
                   help=f"comma-separated subset of {', '.join(SECTIONS)} (default: every one that applies)")
    p.add_argument("--lr", type=positive_float, help="also the update/weight ratio of one optimizer step at this rate")
    p.add_argument("--optimizer", choices=OPTIMIZER_NAMES, help="optimizer of that step (default: the run's, else sgd)")
    p.add_argument("--batch-size", type=positive_int, default=64, help="examples inspected (default 64)")
    p.add_argument("--max-len", type=positive_int, default=64, help="tokens per text (default 64)")
    p.add_argument("--tokenizer", metavar="SPEC",
                   help="for a model preset reading text: char | bpe:VOCAB | gpt2 | a tokenizer.json (default: by vocabulary)")
    p.add_argument("--quick", action="store_true", help="a small batch and few integration steps (seconds)")
    p.add_argument("--seed", type=int, default=0, help="initial weights of a preset, data sample, permutations (default 0)")
    p.add_argument("--out-dir", help="run directory (default runs/inspect-NAME)")
    p.add_argument("--overwrite", action="store_true", help="replace the inspect run already in --out-dir")
    p.add_argument("--no-progress", action="store_true", help="a line per stage instead of a progress bar")
    p.set_defaults(func=run)


def _table(rows: list[dict]):
    from rich.table import Table

    def f(v, spec=".3g"):
        return "–" if v is None else format(v, spec)

    t = Table(title="Per-layer health (weight layers in forward order)")
    for c in ("#", "layer", "kind", "‖W‖", "std W", "activation", "act mean", "act std", "dead", "saturated",
              "‖∂L/∂W‖", "update/W"):
        t.add_column(c, justify="left" if c in ("layer", "kind", "activation") else "right")
    for r in rows:
        a = r.get("activation") or {}
        name = r["name"] + (f" (= {r['shared_with']})" if r.get("shared_with") else "")
        t.add_row(str(r["index"]), name, r["kind"], f(r["weight_norm"]), f(r["weight_std"]), a.get("activation", "–"),
                  f(a.get("mean")), f(a.get("std")), f(a.get("dead_fraction"), ".1%"),
                  f(a.get("saturation_fraction"), ".1%"), f(r["grad_norm"]), f(r["update_ratio"]))
    return t


def run(args) -> int:
    from layerwise.commands import stdout_console
    from layerwise.jobs.inspect import default_out_dir, inspect_model

    out_dir = args.out_dir or default_out_dir(args.source)
    err = stdout_console(stderr=True)
    bar = None
    if not args.no_progress and err.is_terminal:  # else (a log, CI) one line per stage
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

        bar = Progress(TextColumn("[bold]inspect"), BarColumn(), TextColumn("{task.description}"), TimeElapsedColumn(),
                       console=err, transient=True)
        task = bar.add_task("", total=6)

    def progress(stage: str) -> None:
        if bar is None:
            err.print(f"inspect: {stage}", highlight=False, markup=False)
            return
        if not bar.live.is_started:
            bar.start()
        else:
            bar.advance(task)
        bar.update(task, description=stage)

    try:
        doc = inspect_model(args.source, data=args.data, inputs=args.inputs, out_dir=out_dir, sections=args.sections,
                            lr=args.lr, optimizer=args.optimizer, batch_size=args.batch_size, max_len=args.max_len,
                            tokenizer=args.tokenizer, quick=args.quick, seed=args.seed, overwrite=args.overwrite,
                            progress=progress, argv=sys.argv)
    finally:
        if bar is not None and bar.live.is_started:
            bar.stop()
    out = stdout_console()
    what = "trained" if doc["trained"] else "initial weights"
    print(f"{doc['source']} ({doc['model']['class']}, {doc['model']['params']:,} parameters, {what}) on "
          f"{doc['data']['examples']} examples of {doc['data']['source']}")
    for note in doc["notes"]:
        print(f"note: {note}")
    h = doc.get("health")
    if h:
        out.print(_table(h["layers"]))
        print(f"loss: {h['loss']}")
        for d in h["diagnosis"] or [{"line": "every number is in its usual range"}]:
            print(f"diagnosis: {d['line']}")
    a = doc.get("attributions") or {}
    if "integrated_gradients" in a:
        ig = a["integrated_gradients"]
        print(f"integrated gradients: {ig['examples']} examples, completeness within "
              f"{100 * ig['completeness_error_max']:.3f}% (largest |delta| {max(abs(d) for d in ig['convergence_delta']):.2e})")
    if "permutation_importance" in a:
        pi = a["permutation_importance"]
        top = sorted(zip(pi["features"], pi["mean"]), key=lambda t: -t[1])[:5]
        print("permutation importance (accuracy drop): " + ", ".join(f"{n} {v:.3f}" for n, v in top))
    if "token_importance" in a:
        ti = a["token_importance"]
        for r in ti["texts"][:3]:
            top = sorted(r["tokens"], key=lambda t: -t[1])[:5]
            print(f"tokens for {r['predicted']}: " + ", ".join(f"{t.strip() or repr(t)} {v:+.3g}" for t, v in top))
        print(f"token importance: completeness within {100 * (ti['completeness_error_max'] or 0):.3f}%")
    if "grad_cam" in a:
        for name, s in a["grad_cam"]["layers"].items():
            print(f"grad-cam {name}: {100 * s['mass_on_strokes_mean']:.1f}% of the mass on the strokes "
                  f"(strokes are {100 * a['grad_cam']['stroke_pixel_share']:.1f}% of the pixels)")
    if doc.get("attention"):
        at = doc["attention"]
        print(f"attention maps: {len(at['layers'])} layers × {at['layers'][0]['heads']} heads on {len(at['tokens'])} tokens")
    for s, why in doc["skipped"].items():
        print(f"not shown: {s}: {why}")
    print(f"run directory: {out_dir} (report.html, results.json)")
    return 0
