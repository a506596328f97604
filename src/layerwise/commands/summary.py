"""`layerwise summary`: per-layer parameters, kinds, depths and FLOPs."""

from __future__ import annotations

import sys
from pathlib import Path

from layerwise.commands import nonnegative_int, positive_int


def run(args) -> int:
    from layerwise.devices import check_device_name, resolve_device
    from layerwise.errors import ForwardFailure
    from layerwise.io import PLOT_SUFFIXES, TEXT_SUFFIXES, check_output_file
    from layerwise.report import table
    from layerwise.targets import parse_dtype, parse_shape, resolve_and_analyze

    # every output is checked before any work is done
    if check_device_name(args.device) != "meta":
        resolve_device(args.device)
    if args.output:
        check_output_file(args.output, TEXT_SUFFIXES, "--output")
    if args.plot:
        check_output_file(args.plot, PLOT_SUFFIXES, "--plot")
    if args.out_dir:
        from layerwise.rundir import check_run

        check_run(args.out_dir, "summary", overwrite=args.overwrite)
    shape = parse_shape(args.input_shape) if args.input_shape else None
    dtype = parse_dtype(args.dtype)
    if args.by == "role":
        if args.strategy:
            from layerwise.errors import ConfigError

            raise ConfigError("--strategy: not available with --by role; expected --by layer, kind or block")
        return _run_roles(args, shape)
    from layerwise.jobs.summary import analyze_finetuned, is_run_dir

    analyses, notes, resolved = [], [], []
    for t in args.targets:
        try:
            if args.strategy or is_run_dir(t):
                lora = args.targets_lora.split(",") if args.targets_lora else None
                a, n = analyze_finetuned(t, strategy=args.strategy, lora_targets=lora, input_shape=shape,
                                         batch_size=args.batch_size, seq_len=args.seq_len, device=args.device)
                analyses.append(a)
                notes += [f"note: {a.model}: {line}" for line in n]
            else:
                target, a, used = resolve_and_analyze(t, input_shape=shape, batch_size=args.batch_size,
                                                      seq_len=args.seq_len, device=args.device,
                                                      decoder_seq_len=args.decoder_seq_len, dtype=dtype)
                analyses.append(a)
                resolved.append((target, used))
        except ForwardFailure as e:
            if e.partial is not None:
                # what the forward got through, and the module tree's rows and totals; the error line follows
                _write(args, _render(args, [e.partial], table), partial=True)
            raise
    single = (len(analyses) == 1 and len(resolved) == 1 and not args.keras and args.format != "csv" and args.by == "layer"
              and not args.no_sizes)
    size = None
    if single and analyses[0].traced:
        from layerwise.report.sizes import sizes

        target, used = resolved[0]
        size = sizes(target.model, batch_size=args.batch_size, seq_len=args.seq_len, input_shape=used)
    text = _render(args, analyses, table, size)
    if notes and args.format in ("table", "md"):
        text += "\n".join(notes) + "\n"
    _write(args, text)
    if args.out_dir:
        from layerwise.report.runs import write_summary_dir
        from layerwise.rundir import open_run

        with open_run(args.out_dir, "summary", overwrite=args.overwrite, info={"targets": list(args.targets)}):
            write_summary_dir(analyses, args.out_dir)
        print(f"run directory written to {args.out_dir} (layerwise report {args.out_dir} builds its HTML page)", file=sys.stderr)
    if args.plot:
        from layerwise.report import plots

        if len(analyses) > 1:
            plots.plot_comparison(analyses, args.plot)
        else:
            plots.plot_params(analyses[0], args.plot, by=args.by)
        print(f"plot written to {args.plot}", file=sys.stderr)
    return 0


def _write(args, text: str, partial: bool = False) -> None:
    if args.output and not partial:
        from layerwise.io import atomic_write_text

        atomic_write_text(Path(args.output), text)
    else:  # a partial report goes to the terminal, never over a complete one
        sys.stdout.write(text)
        sys.stdout.flush()


def _render(args, analyses, table, size: dict | None = None) -> str:
    out = []
    if args.format == "json":
        out.append(table.render_json(analyses, sizes=size))
    elif args.format == "csv":
        out += [table.render_csv(a, by=args.by, order=args.order) for a in analyses]
    elif args.format == "md":
        out += [table.render_markdown(a, by=args.by, max_nesting=args.show_nesting, order=args.order, sizes=size)
                for a in analyses]
    elif args.keras:
        out += [table.render_keras(a) for a in analyses]
    elif len(analyses) > 1:
        out.append(table.render_comparison(analyses))
        if args.explain or args.by != "layer":
            out += [table.render(a, by=args.by, max_nesting=args.show_nesting, explain=args.explain, order=args.order)
                    for a in analyses]
    else:
        out.append(table.render(analyses[0], by=args.by, max_nesting=args.show_nesting, explain=args.explain,
                                order=args.order, sizes=size))
    return "\n".join(o.rstrip("\n") for o in out) + "\n"


def _run_roles(args, shape) -> int:
    """``--by role``: the input / hidden / output split of each target."""
    from layerwise.analysis import analyze
    from layerwise.analysis.roles_view import by_role
    from layerwise.errors import ConfigError
    from layerwise.report.roles import render_roles, roles_csv, roles_markdown
    from layerwise.targets import resolve

    if args.keras or args.plot or args.out_dir:
        flag = "--keras" if args.keras else ("--plot" if args.plot else "--out-dir")
        raise ConfigError(f"{flag}: not available with --by role; expected --format table, json, csv or md")
    views = []
    for target in args.targets:
        t = resolve(target, device=args.device)
        input_shape = shape
        if input_shape is None and not hasattr(t.model, "example_inputs"):
            input_shape = [args.batch_size, args.seq_len or 128]
        a = analyze(t.model, input_shape=input_shape, batch_size=args.batch_size, seq_len=args.seq_len, name=t.name)
        views.append(by_role(t.model, a, input_shape=input_shape, batch_size=args.batch_size, seq_len=args.seq_len))
    if args.format == "json":
        import json

        docs = [v.to_dict() for v in views]
        text = json.dumps(docs[0] if len(docs) == 1 else docs, indent=2)
    elif args.format == "csv":
        text = "\n".join(roles_csv(v) for v in views)
    elif args.format == "md":
        text = "\n".join(roles_markdown(v, explain=True) for v in views)
    else:
        text = "\n".join(render_roles(v, explain=True) for v in views)
    text = text.rstrip("\n") + "\n"
    if args.output:
        from layerwise.io import atomic_write_text

        atomic_write_text(Path(args.output), text)
    else:
        sys.stdout.write(text)
    return 0


def register(sub) -> None:
    s = sub.add_parser("summary", help="per-layer parameters, kinds, depths and FLOPs of one or more models")
    s.add_argument("targets", nargs="+", metavar="TARGET",
                   help="preset name, layerwise config (.json/.toml), Hugging Face config.json, package.module:factory, "
                        "or a run directory (the model as trained, fine-tuned rows frozen or trainable)")
    s.add_argument("--input-shape", help="input shape, e.g. 1,3,224,224 (token ids for models that start with an embedding)")
    s.add_argument("--batch-size", type=positive_int, default=1, help="batch of the traced forward and of the training footprint")
    s.add_argument("--seq-len", type=positive_int, default=None,
                   help="sequence length for language models (an encoder-decoder's encoder)")
    s.add_argument("--decoder-seq-len", type=positive_int, default=None,
                   help="decoder sequence length of an encoder-decoder (T5, BART, Marian, Whisper); default --seq-len")
    s.add_argument("--dtype", default=None, metavar="DTYPE",
                   help="weights' dtype: float32, bfloat16 or float16 (default: the config's own dtype, else float32)")
    s.add_argument("--by", choices=["layer", "kind", "block", "role"], default="layer",
                   help="rows per layer, layer kind, block, or role (input / hidden / output layers, with formulas)")
    s.add_argument("--no-sizes", action="store_true",
                   help="leave out the size block's activation and training-footprint lines (they run one planned "
                        "training step on the meta device: seconds on a 400B model)")
    s.add_argument("--order", choices=["forward", "tree"], default="forward",
                   help="layer rows in forward (execution) order, or in the module tree's order")
    s.add_argument("--show-nesting", type=nonnegative_int, default=None, metavar="N",
                   help="display module-tree rows down to nesting level N (a display limit, not network depth)")
    s.add_argument("--explain", action="store_true", help="show each layer's parameter formula with the numbers substituted")
    s.add_argument("--keras", action="store_true", help="Keras-style view (BatchNorm moving statistics as non-trainable params)")
    s.add_argument("--format", choices=["table", "json", "csv", "md"], default="table", help="JSON keeps exact integers")
    s.add_argument("--plot", metavar="FILE.png", help="stacked trainable/frozen bars (per kind, block or layer)")
    s.add_argument("--output", "-o", metavar="FILE", help="write the report to FILE instead of the terminal")
    s.add_argument("--out-dir", metavar="DIR", help="also write a run directory (tables, JSON, plots) for `layerwise report`")
    s.add_argument("--overwrite", action="store_true", help="replace the run already in --out-dir")
    s.add_argument("--strategy", default=None,
                   help="apply a fine-tuning strategy first (lora:8, top-2, head, … joined with +): the table shows "
                        "trainable and frozen per layer, as fine-tuned")
    s.add_argument("--lora-targets", dest="targets_lora", default=None,
                   help="with --strategy lora: LoRA targets, comma-separated (name globs or kinds)")
    s.add_argument("--device", default="meta", help="device to build on (default meta: no weight memory)")
    s.set_defaults(func=run)
