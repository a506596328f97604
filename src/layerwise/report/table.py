"""Text renderings of an :class:`~layerwise.analysis.Analysis`: rich tables, Keras-style
summary, markdown, CSV and JSON. Each returns a string; the CLI prints it."""

from __future__ import annotations

import csv
import io
import json

from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from layerwise.analysis.core import Analysis


def n(x) -> str:
    """Exact digits with thousands separators."""
    return f"{x:,}" if isinstance(x, int) else ("" if x is None else str(x))


def pct(x: float) -> str:
    return f"{100 * x:.2f}%"


def shape(s) -> str:
    if s is None:
        return ""
    if isinstance(s, list) and s and all(isinstance(v, int) for v in s):
        return "[" + ", ".join(str(v) for v in s) + "]"
    if isinstance(s, list) and len(s) == 1:
        return shape(s[0])
    if isinstance(s, list):
        return "(" + ", ".join(shape(v) for v in s) + ")"
    if isinstance(s, dict):
        return "{" + ", ".join(f"{k}: {shape(v)}" for k, v in s.items()) + "}"
    return str(s)


def _console(width: int) -> tuple[Console, io.StringIO]:
    buf = io.StringIO()
    return Console(file=buf, width=width, color_system=None, force_terminal=False, legacy_windows=False), buf


def _render(tables, width: int) -> str:
    console, buf = _console(width)
    for t in tables:
        console.print(t)
    return "\n".join(line.rstrip() for line in buf.getvalue().splitlines()) + "\n"


def visible_rows(a: Analysis, max_nesting: int | None = None):
    return [r for r in a.rows if max_nesting is None or r.level <= max_nesting]


def layer_table(a: Analysis, max_nesting: int | None = None, explain: bool = False) -> Table:
    t = Table(title=f"{a.model} — layers", box=box.SIMPLE_HEAD, title_justify="left", pad_edge=False)
    t.add_column("Layer", no_wrap=True)
    t.add_column("Type", no_wrap=True)
    t.add_column("Kind", no_wrap=True)
    t.add_column("Output shape", no_wrap=True)
    t.add_column("Params", justify="right")
    t.add_column("Train", justify="left")
    t.add_column("FLOPs (fwd)", justify="right")
    if explain:
        t.add_column("Formula", overflow="fold")
    rows = visible_rows(a, max_nesting)
    failed_at = a.failure["module"] if a.failure else None
    with_notes = any(r.shared or r.reuse_of is not None for r in rows) or a.failure is not None
    if with_notes:
        t.add_column("Notes", overflow="fold")
    for r in rows:
        label = ("  " * r.level) + (r.name.rsplit(".", 1)[-1] if r.name else a.model)
        if r.is_block:
            label += " ▣"
        out_shape = shape(r.output_shape)
        if a.failure is not None and r.output_shape is None and r.reuse_of is None:
            out_shape = "✗" if r.name == failed_at else "(not reached)" if r.calls == 0 else ""
        row = [label, r.cls, r.kind, out_shape, n(r.params_total), r.status or "-", n(r.flops_total)]
        if explain:
            if r.formula:
                ok = "✓" if r.formula_value == r.params_raw else "✗ ≠ numel"
                row.append(f"{r.formula} {ok}")
            elif r.params_raw and r.is_leaf:
                row.append(f"(no formula: counted) {n(r.params_raw)}")
            else:
                row.append("")
        if with_notes:
            notes = ["shared: " + "; ".join(r.shared)] if r.shared else []
            if r.reuse_of is not None:
                notes.append(f"same module as {r.reuse_of}")
            if a.failure is not None and r.name == failed_at:
                notes.append(f"forward failed here; inputs {shape(a.failure['input_shapes'])}")
            row.append("; ".join(notes))
        t.add_row(*row)
    return t


def totals_table(a: Analysis) -> Table:
    tt = a.totals
    t = Table(title="Totals", box=box.SIMPLE_HEAD, title_justify="left", show_header=False, pad_edge=False)
    t.add_column("what")
    t.add_column("value", justify="right")
    t.add_row("Parameters (each tensor once)", n(tt.params))
    t.add_row("  trainable", n(tt.trainable))
    t.add_row("  frozen", n(tt.frozen))
    if tt.active_params != tt.params:
        t.add_row("  active per token (top-k experts)", n(tt.active_params))
    if a.shared:
        t.add_row("  shared tensors (counted once)", ", ".join(f"{s.name} = {s.owner}" for s in a.shared))
        t.add_row("  if shared were counted twice", n(tt.params_if_shared_counted_twice))
    t.add_row("Buffers (state, not parameters)", n(tt.buffers))
    t.add_row("Weight memory", f"{n(tt.weight_bytes)} bytes")
    if a.traced:
        t.add_row("Input shape", shape(a.input_shape))
        partial = " (up to the failure)" if a.failure else ""
        t.add_row("Forward FLOPs" + partial, n(tt.flops_forward))
        if tt.attention_flops:
            t.add_row("  of which attention scores+values", n(tt.attention_flops))
        if tt.dense_flops_forward != tt.flops_forward:
            t.add_row("  if every token ran every expert", n(tt.dense_flops_forward))
        t.add_row("Training-step FLOPs (frozen-aware)" + partial, n(tt.flops_train))
    return t


def notes_text(a: Analysis) -> str:
    lines = [f"note: {x}" for x in a.notes]
    if a.failure:
        f = a.failure
        lines.append(f"forward failed at {f['module'] or '(the model itself)'} ({f['cls']}), inputs {shape(f['input_shapes'])}; "
                     "rows after it were not traced")
    return "\n".join(lines) + ("\n" if lines else "")


def depth_table(a: Analysis) -> Table:
    d = a.depth
    t = Table(title="Depth", box=box.SIMPLE_HEAD, title_justify="left", show_header=False, pad_edge=False)
    t.add_column("sense")
    t.add_column("value", justify="right")
    t.add_column("meaning")
    t.add_row("weight_depth", str(d.weight_depth) if a.traced else "-", "weight layers on the longest input→output path")
    t.add_row("block_depth", str(d.block_depth) if a.traced else str(d.blocks), "repeated blocks on that path")
    t.add_row("module_depth", str(d.module_depth), "nesting depth of the module tree")
    for p in d.parts:
        t.add_row(f"{p.part} weight_depth", str(p.weight_depth), f"inside {p.module}, from its own inputs")
        t.add_row(f"{p.part} block_depth", str(p.block_depth), f"blocks on that path inside {p.module}")
    if d.max_channel_depth is not None:
        t.add_row("channel depth (max)", str(d.max_channel_depth), "widest conv feature map, in channels")
    t.add_row("weight layers (all)", str(d.weight_layers), "on any path, parallel branches included")
    return t


def kind_table(a: Analysis) -> Table:
    t = Table(title="By layer kind", box=box.SIMPLE_HEAD, title_justify="left", pad_edge=False)
    for c, j in [("Kind", "left"), ("Params", "right"), ("Share", "right"), ("Trainable", "right"),
                 ("Frozen", "right"), ("Weight layers", "right"), ("FLOPs (fwd)", "right")]:
        t.add_column(c, justify=j)
    for k in a.by_kind:
        t.add_row(k.kind, n(k.params), pct(k.share), n(k.trainable), n(k.frozen), str(k.layers), n(k.flops))
    return t


def block_table(a: Analysis) -> Table:
    t = Table(title="By block", box=box.SIMPLE_HEAD, title_justify="left", pad_edge=False)
    for c, j in [("Part", "left"), ("Type", "left"), ("Params", "right"), ("Share", "right"),
                 ("Trainable", "right"), ("FLOPs (fwd)", "right")]:
        t.add_column(c, justify=j)
    for b in a.by_block:
        t.add_row(b.name + (" ▣" if b.is_block else ""), b.cls, n(b.params), pct(b.share), n(b.trainable), n(b.flops))
    return t


def render(a: Analysis, by: str = "layer", max_nesting: int | None = None, explain: bool = False, width: int = 200) -> str:
    """The terminal report: the chosen breakdown, then depth and totals."""
    if by == "kind":
        main = [kind_table(a)]
    elif by == "block":
        main = [block_table(a)]
    else:
        main = [layer_table(a, max_nesting, explain)]
    return _render(main + [depth_table(a), totals_table(a)], width) + notes_text(a)


def render_keras(a: Analysis, width: int = 100) -> str:
    """Keras ``model.summary()``'s view: BatchNorm moving statistics count as non-trainable params."""
    t = Table(title=f'Model: "{a.model}"', box=box.SIMPLE_HEAD, title_justify="left", pad_edge=False)
    t.add_column("Layer (type)")
    t.add_column("Output Shape")
    t.add_column("Param #", justify="right")
    for r in a.rows:
        if not r.is_leaf or r.name == "":
            continue
        t.add_row(f"{r.name} ({r.cls})", shape(r.output_shape), n(r.keras_params))
    tt = a.totals
    foot = Text(
        f" Total params: {n(tt.keras_params)}\n Trainable params: {n(tt.keras_trainable)}\n"
        f" Non-trainable params: {n(tt.keras_non_trainable)}"
    )
    return _render([t, foot], width)


def render_markdown(a: Analysis, by: str = "layer", max_nesting: int | None = None) -> str:
    lines = [f"# {a.model}", ""]
    d = a.depth
    lines += [
        "| depth | value |",
        "|---|---:|",
        f"| weight_depth | {d.weight_depth} |",
        f"| block_depth | {d.block_depth} |",
        f"| module_depth | {d.module_depth} |",
    ]
    for p in d.parts:
        lines += [f"| {p.part} weight_depth | {p.weight_depth} |", f"| {p.part} block_depth | {p.block_depth} |"]
    if d.max_channel_depth is not None:
        lines.append(f"| channel depth (max) | {d.max_channel_depth} |")
    lines.append("")
    if by == "kind":
        lines += ["| kind | params | share | trainable | frozen | weight layers | FLOPs |", "|---|---:|---:|---:|---:|---:|---:|"]
        for k in a.by_kind:
            lines.append(f"| {k.kind} | {n(k.params)} | {pct(k.share)} | {n(k.trainable)} | {n(k.frozen)} | {k.layers} | {n(k.flops)} |")
    elif by == "block":
        lines += ["| part | type | params | share | trainable | FLOPs |", "|---|---|---:|---:|---:|---:|"]
        for b in a.by_block:
            lines.append(f"| {b.name} | {b.cls} | {n(b.params)} | {pct(b.share)} | {n(b.trainable)} | {n(b.flops)} |")
    else:
        lines += ["| layer | type | kind | output shape | params | train | FLOPs |", "|---|---|---|---|---:|---|---:|"]
        for r in visible_rows(a, max_nesting):
            name = r.name or a.model
            if r.shared:
                name += " (shared: " + "; ".join(r.shared) + ")"
            lines.append(
                f"| {name} | {r.cls} | {r.kind} | {shape(r.output_shape)} | {n(r.params_total)} | {r.status or '-'} | {n(r.flops_total)} |"
            )
    tt = a.totals
    if tt.active_params != tt.params:
        lines += ["", f"**Active per token (top-k experts):** {n(tt.active_params)} parameters; "
                  f"forward FLOPs if every token ran every expert {n(tt.dense_flops_forward)}"]
    lines += ["", f"**Parameters:** {n(tt.params)} (trainable {n(tt.trainable)}, frozen {n(tt.frozen)}); "
              f"buffers {n(tt.buffers)}; forward FLOPs {n(tt.flops_forward)}; training-step FLOPs {n(tt.flops_train)}", ""]
    return "\n".join(lines)


CSV_FIELDS = ["name", "cls", "kind", "level", "params", "params_total", "trainable_total", "status", "buffers",
              "output_shape", "flops", "flops_total", "train_flops_total", "formula", "shared"]


def render_csv(a: Analysis, by: str = "layer") -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    if by == "kind":
        w.writerow(["kind", "params", "share", "trainable", "frozen", "weight_layers", "flops"])
        for k in a.by_kind:
            w.writerow([k.kind, k.params, f"{k.share:.6f}", k.trainable, k.frozen, k.layers, k.flops])
    elif by == "block":
        w.writerow(["part", "type", "is_block", "params", "share", "trainable", "flops"])
        for b in a.by_block:
            w.writerow([b.name, b.cls, int(b.is_block), b.params, f"{b.share:.6f}", b.trainable, b.flops])
    else:
        w.writerow(CSV_FIELDS)
        for r in a.rows:
            w.writerow([
                r.name, r.cls, r.kind, r.level, r.params, r.params_total, r.trainable_total, r.status, r.buffers,
                shape(r.output_shape), r.flops, r.flops_total, r.train_flops_total, r.formula or "", "; ".join(r.shared),
            ])
    return buf.getvalue()


def render_comparison(analyses: list[Analysis], width: int = 200) -> str:
    """Several models side by side: the four depths, parameters per kind, FLOPs."""
    t = Table(title="Comparison", box=box.SIMPLE_HEAD, title_justify="left", pad_edge=False)
    t.add_column("")
    for a in analyses:
        t.add_column(a.model, justify="right")

    def row(label, f):
        t.add_row(label, *[f(a) for a in analyses])

    row("parameters", lambda a: n(a.totals.params))
    row("trainable", lambda a: n(a.totals.trainable))
    if any(a.totals.active_params != a.totals.params for a in analyses):
        row("active per token", lambda a: n(a.totals.active_params))
    row("weight_depth", lambda a: str(a.depth.weight_depth))
    row("block_depth", lambda a: str(a.depth.block_depth))
    for part in ("encoder", "decoder"):
        if any(p.part == part for a in analyses for p in a.depth.parts):
            for sense in ("weight_depth", "block_depth"):
                row(f"  {part} {sense}", lambda a, part=part, sense=sense: next(
                    (str(getattr(p, sense)) for p in a.depth.parts if p.part == part), ""))
    row("module_depth", lambda a: str(a.depth.module_depth))
    row("channel depth (max)", lambda a: "" if a.depth.max_channel_depth is None else str(a.depth.max_channel_depth))
    kinds = []
    for a in analyses:
        for k in a.by_kind:
            if k.kind not in kinds and k.params:
                kinds.append(k.kind)
    for kind in kinds:
        row(f"  {kind}", lambda a, kind=kind: f"{n(a.kind(kind).params)} ({pct(a.kind(kind).share)})")
    row("input shape", lambda a: shape(a.input_shape))
    row("forward FLOPs", lambda a: n(a.totals.flops_forward))
    row("training FLOPs", lambda a: n(a.totals.flops_train))
    return _render([t], width)


def render_json(analyses: list[Analysis]) -> str:
    """JSON of one analysis (or a list of them): the top level indented, each row, kind and
    block on one line. Python's JSON encoder runs in C only without indentation; indenting
    every nested field of a 400B model's 1,900 rows costs more than analysing it."""

    def doc(d: dict, pad: str) -> str:
        items = []
        for k, v in d.items():
            key = json.dumps(k)
            if isinstance(v, list) and v and isinstance(v[0], dict):
                inner = (",\n" + pad + "    ").join(json.dumps(x) for x in v)
                items.append(f"{pad}  {key}: [\n{pad}    {inner}\n{pad}  ]")
            elif isinstance(v, dict) and v:
                items.append(f"{pad}  {key}: " + doc(v, pad + "  ").lstrip())
            else:
                items.append(f"{pad}  {key}: {json.dumps(v)}")
        return pad + "{\n" + ",\n".join(items) + "\n" + pad + "}"

    docs = [doc(a.to_dict(), "") for a in analyses]
    return docs[0] if len(docs) == 1 else "[\n" + ",\n".join(docs) + "\n]"
