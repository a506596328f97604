"""`layerwise plan`: memory and compute of one training step, per fine-tuning strategy.

    layerwise plan TARGET --strategy lora:16 --optimizer adamw --precision bf16-mixed --batch 8 --seq-len 2048
    layerwise plan TARGET --compare-strategies --plot plan.png
    layerwise plan TARGET --inference --context 8192
    layerwise plan TARGET --measure            # run a real step and report the estimate's error
"""

from __future__ import annotations

import sys
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


def _render(tables, width: int = 200) -> str:
    import io

    from rich.console import Console

    buf = io.StringIO()
    console = Console(file=buf, width=width, color_system=None, force_terminal=False, legacy_windows=False)
    for t in tables:
        console.print(t)
    return "\n".join(line.rstrip() for line in buf.getvalue().splitlines()) + "\n"


def run(args) -> int:
    import dataclasses
    import json

    import torch

    from layerwise.analysis.plan import COMPARE_STRATEGIES, compare_strategies, measure, plan, plan_inference
    from layerwise.errors import LayerwiseError
    from layerwise.targets import parse_shape, resolve

    target = resolve(args.target, device="meta")
    model = target.model
    shape = parse_shape(args.input_shape) if args.input_shape else None
    if shape is None and not hasattr(model, "example_inputs") and target.source == "hf-config":
        shape = [args.batch, args.seq_len or 128]
    device = args.device
    if args.measure and args.master_weights:
        raise LayerwiseError("--measure runs torch's own optimizers, which keep no fp32 master copy; drop --master-weights")
    if args.measure:
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        if device == "cuda" and not torch.cuda.is_available():
            raise LayerwiseError("--measure --device cuda: CUDA is not available here; use --device cpu")
    device = device or "cuda"
    common = dict(optimizer=args.optimizer, precision=args.precision, batch_size=args.batch, seq_len=args.seq_len,
                  input_shape=shape, grad_checkpointing=args.grad_checkpointing, name=target.name)
    docs: dict = {}
    tables = []
    plans = []
    notes_extra: list[str] = []
    if args.inference:
        inf = plan_inference(model, precision=args.precision, batch_size=args.batch,
                             context=args.context or args.seq_len or 2048, name=target.name)
        docs["inference"] = inf
        tables.append(inference_table(inf))
    elif args.compare_strategies is not None:
        names = [s for s in args.compare_strategies.split(",") if s] if args.compare_strategies else list(COMPARE_STRATEGIES)
        skipped: dict[str, str] = {}
        plans = compare_strategies(model, names, skipped=skipped, tflops=args.tflops, device=device,
                                   master_weights=args.master_weights, **common)
        docs["plans"] = plans
        tables.append(comparison_table(plans))
        notes_extra = [f"skipped {k}: {v}" for k, v in skipped.items()]
    elif args.measure:
        m = measure(model, strategy=args.strategy, device=device, **common)
        plans = [m.plan]
        docs["measurement"] = m
        tables += [plan_table(m.plan), measurement_table(m)]
    else:
        p = plan(model, strategy=args.strategy, tflops=args.tflops, device=device,
                 master_weights=args.master_weights, **common)
        plans = [p]
        docs["plan"] = p
        tables += [plan_table(p), compute_table(p)]
    if args.format == "json":
        out = {}
        for k, v in docs.items():
            if isinstance(v, list):
                out[k] = [x.to_dict() for x in v]
            else:
                out[k] = v.to_dict() if hasattr(v, "to_dict") else dataclasses.asdict(v)
        text = json.dumps(out, indent=2) + "\n"
    else:
        text = _render(tables)
        for note in notes_extra + (plans[0].notes if plans else []):
            text += f"note: {note}\n"
    if args.output:
        from layerwise.io import atomic_write_text

        atomic_write_text(Path(args.output), text)
    else:
        sys.stdout.write(text)
    if args.plot:
        if not plans:
            raise LayerwiseError("--plot draws training plans; it does not apply to --inference")
        plot_plans(plans, args.plot)
        print(f"plot written to {args.plot}", file=sys.stderr)
    return 0


def register(sub) -> None:
    s = sub.add_parser("plan", help="memory and compute of a training step per fine-tuning strategy (--measure checks it)")
    s.add_argument("target", metavar="TARGET",
                   help="preset name, layerwise config (.json/.toml), Hugging Face config.json, or package.module:factory")
    s.add_argument("--strategy", default=None,
                   help="fine-tuning strategy: full, head, top-K, bitfit, lora:R[:ALPHA], adapter:SIZE, … joined with +")
    s.add_argument("--optimizer", default="adamw",
                   help="adamw, adam, sgd, sgd-momentum, adagrad, rmsprop, rmsprop-momentum (default adamw)")
    s.add_argument("--precision", default="fp32", help="fp32, bf16-mixed, fp16-mixed, bf16-true, fp16-true (default fp32)")
    s.add_argument("--batch", "--batch-size", dest="batch", type=int, default=1, help="batch size (default 1)")
    s.add_argument("--seq-len", type=int, default=None, help="sequence length for sequence models")
    s.add_argument("--input-shape", help="input shape instead of batch/seq-len, e.g. 8,3,224,224")
    s.add_argument("--grad-checkpointing", action="store_true", help="recompute each block in the backward")
    s.add_argument("--master-weights", action="store_true", help="with bf16-true/fp16-true: fp32 master weights and optimizer state")
    s.add_argument("--device", choices=["cuda", "cpu"], default=None,
                   help="where the step runs: torch's optimizers are foreach on cuda (default), per tensor on cpu")
    s.add_argument("--tflops", type=float, default=None, help="achieved TFLOP/s, for the time per step")
    s.add_argument("--compare-strategies", nargs="?", const="", default=None, metavar="LIST",
                   help="plan several strategies side by side (default: full,head,top-2,bitfit,lora:8,lora:16,adapter:64)")
    s.add_argument("--inference", action="store_true", help="plan inference instead: weights + KV cache")
    s.add_argument("--context", type=int, default=None, help="with --inference: positions in the KV cache (default: --seq-len or 2048)")
    s.add_argument("--measure", action="store_true",
                   help="also run one real step (on --device, default cuda if available else cpu) and report the error")
    s.add_argument("--format", choices=["table", "json"], default="table")
    s.add_argument("--plot", metavar="FILE.png", help="stacked bar chart of what is live at the peak")
    s.add_argument("--output", "-o", metavar="FILE", help="write the report to FILE instead of the terminal")
    s.set_defaults(func=run)
