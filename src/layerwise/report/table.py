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


def _scaled(x: float, units: tuple[str, ...], base: int) -> tuple[float, str]:
    i = 0
    while abs(x) >= base and i < len(units) - 1:
        x /= base
        i += 1
    return x, units[i]


def human_bytes(x: int) -> str:
    """1,404 -> '1.37 KiB' (powers of 1024, two decimals; bytes below 1 KiB)."""
    v, unit = _scaled(float(x), ("bytes", "KiB", "MiB", "GiB", "TiB", "PiB"), 1024)
    return f"{x:,} bytes" if unit == "bytes" else f"{v:.2f} {unit}"


def bytes_text(x: int) -> str:
    """'1,404 bytes (1.37 KiB)': the exact count and its size in binary units."""
    return f"{x:,} bytes" + (f" ({human_bytes(x)})" if abs(x) >= 1024 else "")


def human_flops(x: int) -> str:
    """4,089,184,256 -> '4.09 GFLOPs' (powers of 1000, two decimals)."""
    v, unit = _scaled(float(x), ("", "k", "M", "G", "T", "P", "E"), 1000)
    return f"{x:,} FLOPs" if not unit else f"{v:.2f} {unit}FLOPs"


def flops_text(x: int) -> str:
    """'4,089,184,256 FLOPs (4.09 GFLOPs)': the exact count with "FLOPs" written out."""
    return f"{x:,} FLOPs" + (f" ({human_flops(x)})" if abs(x) >= 1000 else "")


def count_text(x: int) -> str:
    """'124,439,808 (124.44 M)': an exact count with its magnitude."""
    v, unit = _scaled(float(x), ("", "k", "M", "B", "T"), 1000)
    return f"{x:,}" + (f" ({v:.2f} {unit})" if unit else "")


NO_INPUT_SHAPE = "no input shape: pass --input-shape to trace FLOPs and depth"


def ordered_rows(a: Analysis, order: str = "forward") -> list:
    """The rows as a tree in ``order``: "forward" puts each module's children in the order
    the forward first called them (modules never called last, in tree order), so ResNet's
    bn1 comes before maxpool whatever order its __init__ created them in; "tree" keeps the
    module tree's registration order (torchinfo's default view is the forward one)."""
    if order not in ("forward", "tree"):
        from layerwise.errors import ConfigError

        raise ConfigError(f"--order: expected forward or tree, got {order!r}")
    if order == "tree" or not a.traced:
        return list(a.rows)
    children: dict[str, list] = {}
    root = None
    for i, r in enumerate(a.rows):
        if r.name == "":
            root = r
            continue
        parent = r.name.rsplit(".", 1)[0] if "." in r.name else ""
        children.setdefault(parent, []).append((i, r))
    out: list = []
    first: dict[str, int | None] = {}  # first call of the module or, for a container the forward
    # never calls itself (a ModuleDict/ModuleList), of its first-called descendant

    def first_call(r) -> int | None:
        if r.name not in first:
            calls = [i for i in [r.call_index, *(first_call(c) for _, c in children.get(r.name, []))] if i is not None]
            first[r.name] = min(calls) if calls else None
        return first[r.name]

    def visit(r) -> None:
        out.append(r)
        kids = children.get(r.name, [])
        called = [c for c in kids if first_call(c[1]) is not None]
        # modules the forward called, by first call; the others keep their tree place after them
        for _, c in sorted(called, key=lambda ic: first_call(ic[1])) + [c for c in kids if first_call(c[1]) is None]:
            visit(c)

    if root is None:
        return list(a.rows)
    visit(root)
    return out


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


def visible_rows(a: Analysis, max_nesting: int | None = None, order: str = "forward"):
    return [r for r in ordered_rows(a, order) if max_nesting is None or r.level <= max_nesting]


def layer_table(a: Analysis, max_nesting: int | None = None, explain: bool = False, order: str = "forward") -> Table:
    t = Table(title=f"{a.model} — layers" + (" (forward order)" if a.traced and order == "forward" else " (module tree order)"),
              box=box.SIMPLE_HEAD, title_justify="left", pad_edge=False)
    t.add_column("Layer", no_wrap=True)
    t.add_column("Type", no_wrap=True)
    t.add_column("Kind", no_wrap=True)
    if a.traced:
        t.add_column("Output shape", no_wrap=True)
    t.add_column("Params", justify="right")
    t.add_column("Train", justify="left")
    if a.traced:
        t.add_column("FLOPs (fwd)", justify="right")
    if explain:
        t.add_column("Formula", overflow="fold")
    rows = visible_rows(a, max_nesting, order)
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
        row = [label, r.cls, r.kind] + ([out_shape] if a.traced else []) + [n(r.params_total), r.status or "-"]
        row += [n(r.flops_total)] if a.traced else []
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


def totals_table(a: Analysis, sizes: dict | None = None) -> Table:
    """Parameters, buffers and FLOPs with their units; ``sizes`` (:func:`layerwise.report.sizes.sizes`)
    adds the size block torchinfo and Keras print: parameters, activations per example and the
    estimated training footprint."""
    tt = a.totals
    t = Table(title="Totals", box=box.SIMPLE_HEAD, title_justify="left", show_header=False, pad_edge=False)
    t.add_column("what")
    t.add_column("value", justify="right")
    t.add_row("Parameters (each tensor once)", count_text(tt.params))
    t.add_row("  trainable", count_text(tt.trainable))
    t.add_row("  frozen", count_text(tt.frozen))
    if tt.active_params != tt.params:
        t.add_row("  active per token (top-k experts)", count_text(tt.active_params))
    if a.shared:
        t.add_row("  shared tensors (counted once)", ", ".join(f"{s.name} = {s.owner}" for s in a.shared))
        t.add_row("  if shared were counted twice", count_text(tt.params_if_shared_counted_twice))
    t.add_row("Buffers (state, not parameters)", n(tt.buffers))
    if a.traced:
        t.add_row("Input shape", shape(a.input_shape))
        partial = " (up to the failure)" if a.failure else ""
        t.add_row("Forward FLOPs" + partial, flops_text(tt.flops_forward))
        if tt.attention_flops:
            t.add_row("  of which attention scores+values", flops_text(tt.attention_flops))
        if tt.dense_flops_forward != tt.flops_forward:
            t.add_row("  if every token ran every expert", flops_text(tt.dense_flops_forward))
        t.add_row("Training-step FLOPs (frozen-aware)" + partial, flops_text(tt.flops_train))
    else:
        t.add_row("FLOPs", NO_INPUT_SHAPE)
    t.add_section()
    t.add_row("Params size (weights)", bytes_text(tt.weight_bytes))
    if sizes:
        if sizes.get("activation_bytes_per_example") is not None:
            t.add_row("Activations per example (saved for backward, outputs)", bytes_text(sizes["activation_bytes_per_example"]))
        if sizes.get("training_peak_bytes") is not None:
            t.add_row(f"Estimated training footprint ({sizes['setting']})", bytes_text(sizes["training_peak_bytes"]))
        if sizes.get("not_estimated"):
            t.add_row("Estimated training footprint", f"not estimated: {sizes['not_estimated']}")
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


def render(a: Analysis, by: str = "layer", max_nesting: int | None = None, explain: bool = False, width: int = 200,
           order: str = "forward", sizes: dict | None = None) -> str:
    """The terminal report: the chosen breakdown (layers in ``order``, see :func:`ordered_rows`),
    then depth and totals (with the size block of ``sizes``)."""
    if by == "kind":
        main = [kind_table(a)]
    elif by == "block":
        main = [block_table(a)]
    else:
        main = [layer_table(a, max_nesting, explain, order)]
    head = [Text(NO_INPUT_SHAPE)] if not a.traced else []
    return _render(head + main + [depth_table(a), totals_table(a, sizes)], width) + notes_text(a)


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
    per = tt.weight_bytes / tt.params if tt.params else 4.0  # bytes per parameter (BatchNorm statistics alike)

    def size(count: int) -> str:
        return f"{n(count)} ({keras_memory_size(count * per)})"

    foot = Text(f" Total params: {size(tt.keras_params)}\n Trainable params: {size(tt.keras_trainable)}\n"
                f" Non-trainable params: {size(tt.keras_non_trainable)}")
    return _render([t, foot], width)


def keras_memory_size(x: float) -> str:
    """Bytes as Keras' model.summary() writes them: '1.37 KB' (powers of 1024, its unit names)."""
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if x / 1024 < 1:
            return f"{x:.2f} {unit}"
        x /= 1024
    return f"{x:.2f} PB"


def render_markdown(a: Analysis, by: str = "layer", max_nesting: int | None = None, order: str = "forward",
                    sizes: dict | None = None) -> str:
    lines = [f"# {a.model}", ""]
    if not a.traced:
        lines += [f"*{NO_INPUT_SHAPE}*", ""]
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
        for r in visible_rows(a, max_nesting, order):
            name = r.name or a.model
            if r.shared:
                name += " (shared: " + "; ".join(r.shared) + ")"
            lines.append(
                f"| {name} | {r.cls} | {r.kind} | {shape(r.output_shape)} | {n(r.params_total)} | {r.status or '-'} | {n(r.flops_total)} |"
            )
    tt = a.totals
    if tt.active_params != tt.params:
        lines += ["", f"**Active per token (top-k experts):** {count_text(tt.active_params)} parameters; "
                  f"forward FLOPs if every token ran every expert {flops_text(tt.dense_flops_forward)}"]
    flops = (f"forward {flops_text(tt.flops_forward)}; training step {flops_text(tt.flops_train)}" if a.traced
             else NO_INPUT_SHAPE)
    lines += ["", f"**Parameters:** {count_text(tt.params)} (trainable {n(tt.trainable)}, frozen {n(tt.frozen)}); "
              f"buffers {n(tt.buffers)}; params size {bytes_text(tt.weight_bytes)}; {flops}"]
    if sizes and sizes.get("training_peak_bytes") is not None:
        lines.append("")
        lines.append(f"**Sizes:** activations per example {bytes_text(sizes['activation_bytes_per_example'])}; "
                     f"estimated training footprint ({sizes['setting']}) {bytes_text(sizes['training_peak_bytes'])}")
    lines.append("")
    return "\n".join(lines)


CSV_FIELDS = ["name", "cls", "kind", "level", "params", "params_total", "trainable_total", "status", "buffers",
              "output_shape", "flops", "flops_total", "train_flops_total", "formula", "shared"]


def render_csv(a: Analysis, by: str = "layer", order: str = "forward") -> str:
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
        for r in ordered_rows(a, order):
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

    row("parameters", lambda a: count_text(a.totals.params))
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
    row("input shape", lambda a: shape(a.input_shape) if a.traced else "none given")
    row("forward FLOPs", lambda a: flops_text(a.totals.flops_forward) if a.traced else "-")
    row("training FLOPs", lambda a: flops_text(a.totals.flops_train) if a.traced else "-")
    row("params size", lambda a: bytes_text(a.totals.weight_bytes))
    return _render([t], width)


def render_json(analyses: list[Analysis], sizes: dict | None = None) -> str:
    """JSON of one analysis (or a list of them): the top level indented, each row, kind and
    block on one line; ``sizes`` (the size block, one analysis) as a ``sizes`` field. Python's JSON encoder runs in C only without indentation; indenting
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

    dicts = [a.to_dict() for a in analyses]
    if sizes is not None and len(dicts) == 1:
        dicts[0]["sizes"] = sizes
    docs = [doc(d, "") for d in dicts]
    return docs[0] if len(docs) == 1 else "[\n" + ",\n".join(docs) + "\n]"
