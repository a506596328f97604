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
    return (f"{p.model} — training step: strategy {p.strategy or 'as built'} · {p.optimizer} · {p.precision} · "
            f"{shape}{ckpt} · planned for {p.device}")


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


def comparison_table(plans) -> Table:
    p0 = plans[0]
    unit, size = _unit(max(p.peak_bytes for p in plans))
    t = Table(title=f"{p0.model} — strategies side by side: {p0.optimizer} · {p0.precision} · "
                    f"batch {p0.batch_size}{f' × seq {p0.seq_len}' if p0.tokens_per_step else ''} · {p0.device}",
              box=box.SIMPLE_HEAD, title_justify="left", pad_edge=False)
    for c in ("Strategy", "Trainable", "%", f"Weights {unit}", f"Grads {unit}", f"Optim {unit}", f"Activ {unit}",
              f"Loss {unit}", f"Peak {unit}", "Peak in", "FLOPs/step"):
        t.add_column(c, justify="left" if c in ("Strategy", "Peak in") else "right")
    for p in plans:
        t.add_row(p.strategy or "as built", _b(p.trainable), f"{100 * p.trainable / p.params:.2f}",
                  _u(p.weight_bytes, size), _u(p.gradient_bytes, size), _u(p.optimizer_state_bytes, size),
                  _u(p.activation_bytes, size), _u(p.loss_bytes, size), _u(p.peak_bytes, size), p.peak_phase,
                  f"{p.flops_per_step:.4g}")
    return t


def measurement_table(m) -> Table:
    t = Table(title=f"{m.plan.model} — estimate vs measured on {m.device} ({m.method})",
              box=box.SIMPLE_HEAD, title_justify="left", pad_edge=False)
    for c in ("Component", "Estimate", "Measured", "Error"):
        t.add_column(c, justify="left" if c == "Component" else "right")
    for name, est, meas, err in m.rows():
        t.add_row(name, _b(est), _b(meas), "" if err is None else f"{err:+.2f}%")
    return t


def plot_plans(plans, path: str | Path) -> Path:
    """One stacked bar per plan: what is live at its peak."""
    import matplotlib

    unit, size = _unit(max(p.peak_bytes for p in plans))

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = []
    for p in plans:
        for name, value in p.peak_breakdown():
            key = "transient" if name.endswith("transient") else name
            if value and key not in labels:
                labels.append(key)
    fig, ax = plt.subplots(figsize=(max(6, 1.3 * len(plans) + 4), 4.8))
    bottoms = [0.0] * len(plans)
    cmap = plt.get_cmap("tab10")
    for i, label in enumerate(labels):
        vals = []
        for p in plans:
            d = {("transient" if k.endswith("transient") else k): v for k, v in p.peak_breakdown()}
            vals.append(d.get(label, 0) / size)
        ax.bar(range(len(plans)), vals, bottom=bottoms, label=label, color=cmap(i % 10))
        bottoms = [b + v for b, v in zip(bottoms, vals)]
    ax.set_xticks(range(len(plans)))
    ax.set_xticklabels([f"{p.strategy or 'as built'}\n{p.peak_bytes / size:.2f} {unit}\n(peak in {p.peak_phase})"
                        for p in plans], fontsize=8)
    ax.set_ylabel(f"{unit} at the peak of the step")
    p0 = plans[0]
    ax.set_title(f"{p0.model}: {p0.optimizer}, {p0.precision}, batch {p0.batch_size}"
                 f"{f' × {p0.seq_len}' if p0.tokens_per_step else ''}", fontsize=10)
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
