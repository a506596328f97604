"""The ``layerwise`` command: one subcommand per user task, thin over the library."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from layerwise.errors import LayerwiseError


def _summary(args) -> int:
    from layerwise.report import table
    from layerwise.targets import analyze_target, parse_shape

    shape = parse_shape(args.input_shape) if args.input_shape else None
    analyses = [
        analyze_target(t, input_shape=shape, batch_size=args.batch_size, seq_len=args.seq_len, device=args.device)
        for t in args.targets
    ]
    out = []
    if args.format == "json":
        import json

        docs = [a.to_dict() for a in analyses]
        out.append(json.dumps(docs[0] if len(docs) == 1 else docs, indent=2))
    elif args.format == "csv":
        out += [table.render_csv(a, by=args.by) for a in analyses]
    elif args.format == "md":
        out += [table.render_markdown(a, by=args.by, max_nesting=args.show_nesting) for a in analyses]
    elif args.keras:
        out += [table.render_keras(a) for a in analyses]
    elif len(analyses) > 1:
        out.append(table.render_comparison(analyses))
        if args.explain or args.by != "layer":
            out += [table.render(a, by=args.by, max_nesting=args.show_nesting, explain=args.explain) for a in analyses]
    else:
        out.append(table.render(analyses[0], by=args.by, max_nesting=args.show_nesting, explain=args.explain))
    text = "\n".join(o.rstrip("\n") for o in out) + "\n"
    if args.output:
        from layerwise.models.base import atomic_write_text

        atomic_write_text(Path(args.output), text)
    else:
        sys.stdout.write(text)
    if args.plot:
        from layerwise.report import plots

        if len(analyses) > 1:
            plots.plot_comparison(analyses, args.plot)
        else:
            plots.plot_params(analyses[0], args.plot, by=args.by)
        print(f"plot written to {args.plot}", file=sys.stderr)
    return 0


def _models(args) -> int:
    from rich.console import Console
    from rich.table import Table

    from layerwise.models import list_presets

    t = Table(title="Model presets")
    for c in ("preset", "family", "reference params", "description"):
        t.add_column(c, justify="right" if c == "reference params" else "left")
    for p in list_presets(args.family):
        t.add_row(p.name, p.family, f"{p.reference_params:,}" if p.reference_params else "", p.description)
    Console().print(t)
    return 0


def _demo(args) -> int:
    from layerwise.demo import run_demo

    written = run_demo(out_dir=Path(args.out), quick=args.quick, emit=lambda s: print(s, flush=True))
    print(f"wrote {len(written)} files to {args.out}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="layerwise", description="How deep is this network, and where do its trainable parameters live?")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("summary", help="per-layer parameters, kinds, depths and FLOPs of one or more models")
    s.add_argument("targets", nargs="+", metavar="TARGET",
                   help="preset name, layerwise config (.json/.toml), Hugging Face config.json, or package.module:factory")
    s.add_argument("--input-shape", help="input shape, e.g. 1,3,224,224 (token ids for models that start with an embedding)")
    s.add_argument("--batch-size", type=int, default=1)
    s.add_argument("--seq-len", type=int, default=None, help="sequence length for language models")
    s.add_argument("--by", choices=["layer", "kind", "block"], default="layer")
    s.add_argument("--show-nesting", type=int, default=None, metavar="N",
                   help="display module-tree rows down to nesting level N (a display limit, not network depth)")
    s.add_argument("--explain", action="store_true", help="show each layer's parameter formula with the numbers substituted")
    s.add_argument("--keras", action="store_true", help="Keras-style view (BatchNorm moving statistics as non-trainable params)")
    s.add_argument("--format", choices=["table", "json", "csv", "md"], default="table")
    s.add_argument("--plot", metavar="FILE.png", help="stacked trainable/frozen bars (per kind, block or layer)")
    s.add_argument("--output", "-o", metavar="FILE", help="write the report to FILE instead of the terminal")
    s.add_argument("--device", default="meta", help="device to build on (default meta: no weight memory)")
    s.set_defaults(func=_summary)

    m = sub.add_parser("models", help="list model presets")
    m.add_argument("--family", default=None)
    m.set_defaults(func=_models)

    d = sub.add_parser("demo", help="the main job end to end on built-in data")
    d.add_argument("--out", default="runs/demo")
    d.add_argument("--quick", action="store_true", help="a one-minute version")
    d.set_defaults(func=_demo)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except LayerwiseError as e:
        print(f"layerwise: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("layerwise: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
