"""Renderings of memory plans (:mod:`layerwise.analysis.plan`): rich tables and a stacked bar chart."""

from __future__ import annotations

from pathlib import Path

from rich import box
from rich.table import Table


def _unit(largest: int) -> tuple[str, int]:
    """The binary unit that shows ``largest`` with a few digits before the point."""
    for name, size in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if largest >= size:
            return name, size
    return "bytes", 1


def _b(x: int | None) -> str:
    return "" if x is None else f"{x:,}"


def _u(x: int | None, size: int) -> str:
    return "" if x is None else f"{x / size:,.2f}"


def _title(p) -> str:
    shape = f"batch {p.batch_size} × seq {p.seq_len}" if p.tokens_per_step else f"input {p.input_shape}"
    ckpt = " · grad checkpointing" if p.grad_checkpointing else ""
    base = f" · {p.base_dtype} base" if p.base_dtype else ""
    dev = f" · {p.devices} devices, {p.shard} (per device)" if p.devices > 1 else ""
    return (f"{p.model} — training step: strategy {p.strategy or 'as built'} · {p.optimizer} ({p.optimizer_impl}) · "
            f"{p.precision}{base} · {shape}{ckpt} · planned for {p.device}{dev}")


def plan_table(p) -> Table:
    unit, size = _unit(p.peak_bytes)
    t = Table(title=_title(p), box=box.SIMPLE_HEAD, title_justify="left", pad_edge=False)
    t.add_column("Component")
    t.add_column("Bytes", justify="right")
    t.add_column(unit, justify="right")
    t.add_column("How")
    for name, value, how in p.components():
        t.add_row(name, _b(value), _u(value, size), how)
    t.add_section()
    parts = " + ".join(name for name, v in p.peak_breakdown() if v)
    t.add_row(f"peak ({p.peak_phase})", _b(p.peak_bytes), _u(p.peak_bytes, size), parts)
    return t


def compute_table(p) -> Table:
    t = Table(box=box.SIMPLE_HEAD, show_header=False, pad_edge=False)
    t.add_column("what")
    t.add_column("value", justify="right")
    share = 100 * p.trainable / p.params if p.params else 0.0
    t.add_row("Parameters", _b(p.params))
    if getattr(p, "active_params", None):
        t.add_row("  active per token (top-k routing)", f"{p.active_params:,} ({100 * p.active_params / p.params:.2f}%)")
    t.add_row("  trainable", f"{p.trainable:,} ({share:.2f}%)")
    t.add_row("Training FLOPs per step (frozen-aware)", _b(p.flops_per_step))
    if p.recompute_flops:
        t.add_row("  of which checkpoint recomputation", _b(p.recompute_flops))
    if p.tokens_per_step:
        t.add_row("Tokens per step", _b(p.tokens_per_step))
    if p.seconds_per_step is not None:
        t.add_row(f"Time per step at {p.tflops:g} TFLOP/s", f"{p.seconds_per_step:.4g} s")
    return t


def inference_table(i) -> Table:
    unit, size = _unit(i.total_bytes)
    t = Table(title=f"{i.model} — inference: {i.precision} · batch {i.batch_size} × context {i.context:,}",
              box=box.SIMPLE_HEAD, title_justify="left", pad_edge=False)
    t.add_column("Component")
    t.add_column("Bytes", justify="right")
    t.add_column(unit, justify="right")
    t.add_column("How")
    t.add_row("weights", _b(i.weight_bytes), _u(i.weight_bytes, size), "parameters × dtype size")
    t.add_row("KV cache", _b(i.kv_cache_bytes) if i.kv_cache_bytes is not None else "-",
              _u(i.kv_cache_bytes, size), i.formula)
    t.add_section()
    t.add_row("total", _b(i.total_bytes), _u(i.total_bytes, size), "")
    return t


def _common(plans, attr: str):
    values = {getattr(p, attr) for p in plans}
    return values.pop() if len(values) == 1 else None


def comparison_table(plans, labels: list[str] | None = None) -> Table:
    """Plans side by side; ``labels`` name the rows (default: each plan's strategy).

    Settings shared by every plan go in the title; those that differ get a column."""
    p0 = plans[0]
    unit, size = _unit(max(p.peak_bytes for p in plans))
    shared = [f"{v}" for v in (_common(plans, "optimizer"), _common(plans, "precision")) if v]
    batch = _common(plans, "batch_size")
    seq = _common(plans, "seq_len")
    if batch is not None:
        shared.append(f"batch {batch}{f' × seq {seq}' if seq and p0.tokens_per_step else ''}")
    if _common(plans, "devices") not in (None, 1):
        shared.append(f"{p0.devices} devices, {p0.shard}")
    t = Table(title=f"{p0.model} — {'strategies' if labels is None else 'set-ups'} side by side: "
                    f"{' · '.join(shared + [p0.device])}",
              box=box.SIMPLE_HEAD, title_justify="left", pad_edge=False)
    extra = [c for c, attr in (("Precision", "precision"), ("Optimizer", "optimizer"), ("Batch", "batch_size"))
             if _common(plans, attr) is None]
    ckpt = len({p.grad_checkpointing for p in plans}) > 1
    cols = ["Set-up" if labels else "Strategy", *extra, *(["Checkpointing"] if ckpt else []), "Trainable", "%",
            f"Weights {unit}", f"Grads {unit}", f"Optim {unit}", f"Activ {unit}", f"Loss {unit}", f"Peak {unit}",
            "Peak in", "FLOPs/step"]
    for c in cols:
        t.add_column(c, justify="left" if c in ("Set-up", "Strategy", "Precision", "Optimizer", "Checkpointing", "Peak in")
                     else "right")
    for i, p in enumerate(plans):
        label = labels[i] if labels else (p.strategy or "as built")
        vals = {"Precision": p.precision + (f" + {p.base_dtype} base" if p.base_dtype else ""),
                "Optimizer": p.optimizer, "Batch": str(p.batch_size)}
        t.add_row(label, *[vals[c] for c in extra], *(["yes" if p.grad_checkpointing else "no"] if ckpt else []),
                  _b(p.trainable), f"{100 * p.trainable / p.params:.2f}",
                  _u(p.weight_bytes, size), _u(p.gradient_bytes, size), _u(p.optimizer_state_bytes, size),
                  _u(p.activation_bytes, size), _u(p.loss_bytes, size), _u(p.peak_bytes, size), p.peak_phase,
                  f"{p.flops_per_step:.4g}")
    return t


def quantized_table(p) -> Table:
    """The packed bytes of the quantised base, per layer (layers of one shape and name in every block grouped)."""
    import re

    groups: dict[tuple, list] = {}
    for q in p.quantized_layers:
        key = (re.sub(r"\.\d+\.", ".*.", q["name"]), tuple(q["shape"]))
        groups.setdefault(key, []).append(q)
    t = Table(title=f"{p.model} — frozen Linear weights stored {p.base_dtype}: logical parameters and stored bytes",
              box=box.SIMPLE_HEAD, title_justify="left", pad_edge=False)
    for c in ("Layer", "Shape", "Count", "Parameters (each)", f"{p.base_dtype} bytes (each)", "Bits/param",
              f"{p.precision.split('-')[0]} bytes (each)"):
        t.add_column(c, justify="left" if c in ("Layer", "Shape") else "right")
    for (name, shape), qs in groups.items():
        q = qs[0]
        t.add_row(name, "×".join(map(str, shape)), str(len(qs)), _b(q["params"]), _b(q["stored_bytes"]),
                  f"{8 * q['stored_bytes'] / q['params']:.3f}", _b(q["bytes_unquantized"]))
    t.add_section()
    n = sum(q["params"] for q in p.quantized_layers)
    stored = sum(q["stored_bytes"] for q in p.quantized_layers)
    t.add_row("total", "", str(len(p.quantized_layers)), _b(n), _b(stored), f"{8 * stored / n:.3f}" if n else "",
              _b(sum(q["bytes_unquantized"] for q in p.quantized_layers)))
    return t


def activation_formula_table(rows: list[dict]) -> Table:
    """Traced activations per transformer layer next to Korthikanti et al. (2022), sbh(34 + 5as/h)."""
    t = Table(title="Activations per layer: traced against Korthikanti et al. (2022), s·b·h·(34 + 5·a·s/h) bytes",
              box=box.SIMPLE_HEAD, title_justify="left", pad_edge=False)
    for c in ("Model", "s", "b", "h", "a", "Precision", "Traced (saved per layer)", "34sbh", "5as²b", "Formula",
              "Traced ÷ 34sbh", "Why they differ"):
        t.add_column(c, justify="left" if c in ("Model", "Precision", "Why they differ") else "right")
    for r in rows:
        t.add_row(r["model"], str(r["seq_len"]), str(r["batch"]), str(r["hidden"]), str(r["heads"]), r["precision"],
                  _b(r["traced_per_layer_bytes"]), _b(r["formula_34sbh"]), _b(r["formula_5as2b"]),
                  _b(r["formula_bytes"]), f"{r['traced_per_layer_bytes'] / r['formula_34sbh']:.3f}", r["why"])
    return t


def fit_table(report) -> Table:
    """The "will it fit?" answer, one row per strategy and precision."""
    gib = report.budget_bytes / 2**30
    dev = f" per device ({report.devices} devices, {report.shard})" if report.devices > 1 else ""
    seq = f" × seq {report.seq_len}" if report.seq_len else ""
    t = Table(title=f"{report.model} — will it fit in {gib:,.2f} GiB{dev}? batch {report.batch_size}{seq}",
              box=box.SIMPLE_HEAD, title_justify="left", pad_edge=False)
    for c in ("Strategy", "Precision", "Trainable", "Fits", "Checkpointing", "Peak GiB", "Max batch", "Max seq len",
              "s/step (max batch)", "tokens/s", "Note"):
        t.add_column(c, justify="left" if c in ("Strategy", "Precision", "Fits", "Checkpointing", "Note") else "right")
    for r in report.rows:
        t.add_row(r.strategy, r.precision + (f" + {r.base_dtype}" if r.base_dtype else ""), _b(r.trainable),
                  "yes" if r.fits else "no", "needed" if r.needs_checkpointing else ("-" if r.fits else ""),
                  f"{r.peak_bytes / 2**30:,.2f}", _b(r.max_batch) if r.fits else "0",
                  "" if r.max_seq_len is None else _b(r.max_seq_len),
                  "" if r.seconds_per_step is None else f"{r.seconds_per_step:.4g}",
                  "" if r.tokens_per_second is None else f"{r.tokens_per_second:,.0f}", r.note)
    return t


def measurement_table(m) -> Table:
    t = Table(title=f"{m.plan.model} — estimate vs measured on {m.device} ({m.method})",
              box=box.SIMPLE_HEAD, title_justify="left", pad_edge=False)
    for c in ("Component", "Estimate", "Measured", "Error"):
        t.add_column(c, justify="left" if c == "Component" else "right")
    for name, est, meas, err in m.rows():
        t.add_row(name, _b(est), _b(meas), "" if err is None else f"{err:+.2f}%")
    return t


def plot_plans(plans, path: str | Path, labels: list[str] | None = None) -> Path:
    """One stacked bar per plan (named by ``labels``, default the strategies): what is live at its peak."""
    import matplotlib

    unit, size = _unit(max(p.peak_bytes for p in plans))

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    parts = []
    for p in plans:
        for name, value in p.peak_breakdown():
            key = "transient" if name.endswith("transient") else name
            if value and key not in parts:
                parts.append(key)
    fig, ax = plt.subplots(figsize=(max(6, 1.3 * len(plans) + 4), 4.8))
    bottoms = [0.0] * len(plans)
    cmap = plt.get_cmap("tab10")
    for i, label in enumerate(parts):
        vals = []
        for p in plans:
            d = {("transient" if k.endswith("transient") else k): v for k, v in p.peak_breakdown()}
            vals.append(d.get(label, 0) / size)
        ax.bar(range(len(plans)), vals, bottom=bottoms, label=label, color=cmap(i % 10))
        bottoms = [b + v for b, v in zip(bottoms, vals)]
    ax.set_xticks(range(len(plans)))
    names = labels or [p.strategy or "as built" for p in plans]
    ax.set_xticklabels([f"{n}\n{p.peak_bytes / size:.2f} {unit}\n(peak in {p.peak_phase})"
                        for n, p in zip(names, plans)], fontsize=8)
    ax.set_ylabel(f"{unit} at the peak of the step")
    p0 = plans[0]
    shared = [v for v in (_common(plans, "optimizer"), _common(plans, "precision")) if v]
    batch = _common(plans, "batch_size")
    if batch is not None:
        shared.append(f"batch {batch}{f' × {p0.seq_len}' if p0.tokens_per_step and _common(plans, 'seq_len') else ''}")
    ax.set_title(f"{p0.model}: {', '.join(shared)}", fontsize=10)
    ax.legend(bbox_to_anchor=(1.01, 1), loc="upper left", fontsize=8)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def render(tables, width: int = 200) -> str:
    import io

    from rich.console import Console

    buf = io.StringIO()
    console = Console(file=buf, width=width, color_system=None, force_terminal=False, legacy_windows=False)
    for t in tables:
        console.print(t)
    return "\n".join(line.rstrip() for line in buf.getvalue().splitlines()) + "\n"
