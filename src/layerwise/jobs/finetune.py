"""Whole fine-tuning jobs: ``finetune`` one strategy, ``compare`` several on the same
data, seed and budget. The CLI commands are thin wrappers over these.

A fine-tune is the one classification job (:mod:`layerwise.jobs.classify`) started from a
pretrained base (:func:`layerwise.jobs.runs.load_base`) with a strategy; this module adds
what a comparison reads: what the strategy trains (per layer kind), what it costs (time,
examples/s, planned peak memory) and what it buys (accuracy, F1 on the test split).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from torch import nn

from layerwise.errors import ConfigError
from layerwise.finetune.strategies import default_lr
from layerwise.io import atomic_write_text
from layerwise.rundir import RunDir, check_run, open_run


def display_name(name: str) -> str:
    """A model or data name as titles show it: a path's last part (``runs/pretrain-gpt``)."""
    return Path(name).name if ("/" in name or "\\" in name) else name


@dataclass
class FinetuneResult:
    model: str
    data: str
    strategy: str
    record: dict
    params_base: int  # the one denominator: the base model, each tensor once
    trainable: int
    trainable_by_kind: dict[str, int]
    train_examples: int
    steps: int
    train_seconds: float
    examples_per_second: float
    cache: dict | None  # the frozen-prefix cache: stage, bytes, seconds
    planned_peak_bytes: int | None
    val: dict | None
    test: dict | None
    run_dir: str | None = None
    losses: list[float] = field(default_factory=list)

    @property
    def test_f1(self) -> float | None:
        return None if not self.test else self.test.get("f1")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _kinds_trainable(model: nn.Module) -> dict[str, int]:
    from layerwise.analysis import analyze

    a = analyze(model, trace_forward=False)
    return {k.kind: k.trainable for k in a.by_kind if k.trainable}


def _planned_peak(model: nn.Module, task, train_data, config) -> int:
    """The planned peak of the step the Trainer runs: ``model`` as it trains (the cached suffix
    when the frozen prefix is cached), its first training batch, the Trainer's optimizer and
    precision (:func:`layerwise.jobs.plan.plan_training`)."""
    from layerwise.jobs.plan import plan_training

    task.bind(model)
    batch = task.make_source(train_data, config.batch_size, seed=config.seed, shuffle=True).batch(0)
    return plan_training(model, config, batch, task=task).peak_bytes


def finetune(
    model: str,
    data: str,
    strategy: str,
    config,
    lora_targets=None,
    lora_alpha: float | None = None,
    lora_dropout: float = 0.0,
    max_len: int = 64,
    val: float = 0.1,
    test: float = 0.1,
    train_fraction: float | None = None,
    positive: int | str | None = None,
    cache: bool | str = "auto",
    callback: Callable | None = None,
    prepared=None,
    resume: bool = False,
    overwrite: bool = False,
    run: RunDir | None = None,
    adapter: str | None = None,
    data_options: dict | None = None,
) -> FinetuneResult:
    """Fine-tune ``model`` (a built-in pretrained model, a run directory or a local
    transformers directory; ``adapter``: a PEFT LoRA folded into it first) on ``data`` with
    ``strategy`` (:mod:`layerwise.finetune.strategies`): the one classification job
    (:func:`layerwise.jobs.classify.classify`) with a strategy and the frozen-prefix cache.

    ``resume`` continues the run in ``config.out_dir``, ``overwrite`` replaces one there
    (:mod:`layerwise.rundir`); ``run``: a run directory the caller opened (and finishes)."""
    from layerwise.jobs.classify import classify

    c = classify(model, data, config, strategy=strategy, max_len=max_len, val=val, test=test,
                 train_fraction=train_fraction, positive=positive, cache=cache, lora_targets=lora_targets,
                 lora_alpha=lora_alpha, lora_dropout=lora_dropout, adapter=adapter, prepared=prepared, resume=resume,
                 overwrite=overwrite, run=run, callback=callback, data_options=data_options)
    record = c.record
    out = FinetuneResult(
        model=model, data=data, strategy=strategy, record=record.to_dict(), params_base=record.total_base,
        trainable=record.trainable, trainable_by_kind=_kinds_trainable(c.model), train_examples=c.train_examples,
        steps=c.result.steps, train_seconds=c.result.train_seconds, examples_per_second=c.examples_per_second,
        cache=c.cache, planned_peak_bytes=_planned_peak(c.trained_model, c.task, c.train_set, config),
        val=c.val, test=c.test, run_dir=str(c.result.run_dir) if c.result.run_dir else None, losses=c.result.losses,
    )
    if c.result.run_dir is not None:
        atomic_write_text(Path(c.result.run_dir) / "finetune.json", json.dumps(out.to_dict(), indent=2, default=str))
        write_finetune_report(out, c.model, Path(c.result.run_dir))
    return out


METRICS = ("loss", "accuracy", "precision", "recall", "f1", "f1_macro")


def results_markdown(r: FinetuneResult) -> str:
    """The test-results table (validation and test metrics of the fine-tuned model)."""
    from layerwise.report.html import sig4

    rows = [k for k in METRICS if any(isinstance((m or {}).get(k), (int, float)) for m in (r.val, r.test))]
    lines = ["| metric | validation | test |", "|---|---:|---:|"]
    for k in rows:
        lines.append(f"| {k} | {sig4(r.val[k]) if r.val and k in r.val else '-'} | {sig4(r.test[k]) if r.test and k in r.test else '-'} |")
    return "\n".join(lines)


def write_finetune_report(r: FinetuneResult, net: nn.Module, run_dir: Path) -> Path:
    """The sections of a fine-tuning run's report (``layerwise report RUN_DIR``): what trains,
    the test results, the loss curve, the per-layer table of the model as fine-tuned (frozen
    rows greyed) and the training metrics."""
    from layerwise.analysis import analyze
    from layerwise.report.html import Section, _csv_markdown, layer_rows_html, sig4, write_manifest

    share = 100 * r.trainable / r.params_base if r.params_base else 0.0
    added = r.record.get("added", 0)
    kinds = ", ".join(f"{k} {v:,}" for k, v in r.trainable_by_kind.items())
    md = [f"**{r.strategy}** trains **{r.trainable:,} of {r.params_base:,}** parameters of the base model "
          f"({sig4(share)}%)" + (f"; the strategy added {added:,} (counted in the trainable ones)" if added else "")
          + f". Trainable by layer kind: {kinds}.", ""]
    md += [f"- {step}" for step in r.record.get("steps", []) + r.record.get("notes", [])]
    md += ["", f"{r.steps:,} optimizer step{'' if r.steps == 1 else 's'} on {r.train_examples:,} training examples in "
           f"{sig4(r.train_seconds)} s ({sig4(r.examples_per_second)} examples/s)."
           + (f" Planned peak memory {r.planned_peak_bytes / 2**20:.4g} MiB." if r.planned_peak_bytes else ""),
           "", "### Test results", "", results_markdown(r)]
    try:
        from layerwise.analysis.plan import meta_copy

        a = analyze(meta_copy(net), name=display_name(r.model))
    except Exception:  # noqa: BLE001 - a model the meta trace cannot run: the table in module-tree order
        a = analyze(net, name=display_name(r.model), trace_forward=False)
    sections = [
        Section(f"Fine-tuning {display_name(r.model)} on {display_name(r.data)}: {r.strategy}", markdown="\n".join(md),
                images=[p for p in (run_dir / "loss-curve.png",) if p.exists()],
                data={k: v for k, v in r.to_dict().items() if k != "losses"}),
        Section("Layers as fine-tuned", markdown="Every layer of the model after the strategy: trainable rows in "
                "black, frozen rows greyed (parameters each tensor once, containers the sum of their children).",
                html=layer_rows_html(a)),
    ]
    if (run_dir / "metrics.csv").is_file():
        sections.append(Section("Training metrics (first and last rows)", markdown=_csv_markdown(run_dir / "metrics.csv")))
    return write_manifest(run_dir, f"finetune {r.strategy}: {display_name(r.model)} on {display_name(r.data)}", sections)


@dataclass
class Comparison:
    model: str
    data: str
    results: list[FinetuneResult]
    settings: dict

    def to_dict(self) -> dict:
        return {"model": self.model, "data": self.data, "settings": self.settings,
                "results": [r.to_dict() for r in self.results]}


KIND_ORDER = ("embedding", "attention", "mlp", "norm", "head", "adapter", "other")


def comparison_markdown(c: Comparison) -> str:
    from layerwise.report.html import sig4

    base = c.results[0].params_base if c.results else 0
    pos = "positive class"
    lines = [
        f"# Fine-tuning strategies: {display_name(c.model)} on {display_name(c.data)}",
        "",
        f"Same data split, seed and budget for every strategy: {json.dumps(c.settings)}. "
        f"Trainable shares are of the base model's {base:,} parameters (each tensor once, head included).",
        "",
        "| strategy | trainable | % of base | " + " | ".join(KIND_ORDER[:-1]) +
        " | train s | examples/s | planned peak MiB | cached prefix | test acc | test F1 (" + pos + ") |",
        "|---|---:|---:|" + "---:|" * (len(KIND_ORDER) - 1) + "---:|---:|---:|---|---:|---:|",
    ]
    for r in c.results:
        kinds = " | ".join(f"{r.trainable_by_kind.get(k, 0):,}" for k in KIND_ORDER[:-1])
        cache = r.cache["stage"] if r.cache else "-"
        peak = sig4(r.planned_peak_bytes / 2**20) if r.planned_peak_bytes else "-"
        acc = sig4(r.test["accuracy"]) if r.test else "-"
        f1 = sig4(r.test["f1"]) if r.test and r.test.get("f1") is not None else "-"
        lines.append(f"| {r.strategy} | {r.trainable:,} | {sig4(100 * r.trainable / r.params_base)}% | {kinds} | "
                     f"{sig4(r.train_seconds)} | {sig4(r.examples_per_second)} | {peak} | {cache} | {acc} | {f1} |")
    return "\n".join(lines) + "\n"


def plot_comparison(c: Comparison, out_dir: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter

    out_dir = Path(out_dir)
    names = [r.strategy for r in c.results]
    totals = [r.trainable for r in c.results]
    # Linear axes, each bar labelled with its exact count: the whole range on the left, and
    # (when some strategies train far less than others, as a 770-parameter head does next to
    # full fine-tuning) the small ones zoomed on the right, on their own linear axis.
    small = [i for i, t in enumerate(totals) if t <= 0.05 * max(totals, default=0)]
    panels = [list(range(len(names)))] + ([small] if small and len(small) < len(names) else [])
    fig, axes = plt.subplots(1, len(panels), figsize=(6.5 * len(panels), max(3.0, 0.55 * len(names) + 1.6)),
                             squeeze=False)
    cmap = plt.get_cmap("tab10")
    for p_i, (ax, idx) in enumerate(zip(axes[0], panels)):
        left = [0.0] * len(idx)
        for k_i, kind in enumerate(KIND_ORDER):
            vals = [float(c.results[i].trainable_by_kind.get(kind, 0)) for i in idx]
            if any(vals):
                ax.barh([names[i] for i in idx], vals, left=left, label=kind, color=cmap(k_i))
                left = [a + v for a, v in zip(left, vals)]
        top = max((totals[i] for i in idx), default=1) or 1
        for y, i in enumerate(idx):
            ax.text(totals[i] + 0.01 * top, y, f"{totals[i]:,}", va="center", fontsize=8)
        ax.set_xlim(0, top * 1.25)
        ax.invert_yaxis()
        ax.set_xlabel("trainable parameters")
        ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x:,.0f}"))
        ax.tick_params(axis="x", labelsize=8)
        ax.set_title("all strategies" if p_i == 0 else "zoom: the strategies under 5% of the largest", fontsize=9)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=max(1, len(labels)), fontsize=8, frameon=False)
    fig.suptitle(f"{display_name(c.model)}: trainable parameters per layer kind, per strategy", fontsize=10)
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    p1 = out_dir / "trainable-by-kind.png"
    fig.savefig(p1, dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    for r in c.results:
        f1 = r.test.get("f1") if r.test else None
        if f1 is not None:
            ax.scatter(r.trainable, f1, s=40)
            ax.annotate(r.strategy, (r.trainable, f1), textcoords="offset points", xytext=(5, 4), fontsize=8)
    ax.set_xscale("log")
    ax.set_xlabel("trainable parameters (log)")
    ax.set_ylabel("test F1 (positive class)")
    ax.set_title(f"{display_name(c.model)} on {display_name(c.data)}: F1 against trainable parameters", fontsize=10)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    p2 = out_dir / "f1-vs-trainable.png"
    fig.savefig(p2, dpi=110)
    plt.close(fig)
    return [p1, p2]


def compare(model: str, data: str, strategies: list[str], config, out_dir: str | Path | None = None,
            max_len: int = 64, val: float = 0.1, test: float = 0.1, train_fraction: float | None = None,
            lora_targets=None, positive=None, cache: bool | str = "auto", keep_runs: bool = False, auto_lr: bool = False,
            on_result: Callable[[FinetuneResult], None] | None = None, callback: Callable | None = None,
            lora_alpha: float | None = None, lora_dropout: float = 0.0, overwrite: bool = False,
            data_options: dict | None = None) -> Comparison:
    """Run every strategy with the same data, seed and budget; write the report to ``out_dir``
    (a run directory of its own: refused when it holds a run, unless ``overwrite``).

    ``keep_runs`` also writes each strategy's run directory (checkpoints, metrics) under
    ``out_dir/runs/``; by default only the comparison is written. ``auto_lr`` gives each
    strategy its own learning rate (the strategy registry's ``default_lr``) instead of ``config.lr``.
    """
    from layerwise.finetune.strategies import parse_strategy

    if not strategies:
        raise ConfigError("--strategies: empty; expected a comma-separated list such as head,lora:8,full")
    dupes = sorted({s for s in strategies if strategies.count(s) > 1})
    if dupes:
        raise ConfigError(f"--strategies: {', '.join(dupes)} given more than once; each strategy runs once")
    for s in strategies:
        parse_strategy(s)  # every spec is valid before anything runs
    if not 0 <= lora_dropout < 1:
        raise ConfigError(f"--lora-dropout: expected a probability in [0, 1), got {lora_dropout}")
    from layerwise.train.distributed import check_parallel

    check_parallel(config.parallel)
    if out_dir is not None:
        check_run(out_dir, "compare", overwrite=overwrite)
    from layerwise.jobs.classify import prepare_text_data
    from layerwise.jobs.runs import load_base

    tok = load_base(model, 2, "cpu").tokenizer
    options = {k: str(v) for k, v in (data_options or {}).items() if v is not None}
    prepared = prepare_text_data(data, tok, max_len, val, test, config.seed, train_fraction, options)
    settings = {"epochs": config.epochs, "steps": config.steps, "batch_size": config.batch_size, "lr": config.lr,
                "optimizer": config.optimizer, "seed": config.seed, "max_len": max_len,
                "lr_by_strategy": {s: default_lr(s) for s in strategies} if auto_lr else None,
                "train_examples": len(prepared[1][0].labels), "train_fraction": train_fraction}
    results = []
    run = (open_run(out_dir, "compare", overwrite=overwrite, info={"base": model, "strategies": strategies, "data": {"name": data}})
           if out_dir is not None else contextlib.nullcontext())
    with run:
        for s in strategies:
            sub_out = str(Path(out_dir) / "runs" / s.replace(":", "-").replace("+", "_")) if (out_dir and keep_runs) else None
            cfg = config.replace(out_dir=sub_out, lr=default_lr(s) if auto_lr else config.lr)
            r = finetune(model, data, s, cfg, lora_targets=lora_targets, lora_alpha=lora_alpha, lora_dropout=lora_dropout,
                         max_len=max_len, val=val, test=test, positive=positive, cache=cache, callback=callback,
                         prepared=prepared)
            results.append(r)
            if on_result is not None:
                on_result(r)
        c = Comparison(model, data, results, settings)
        if out_dir is not None:
            write_comparison(c, out_dir)
    return c


def write_comparison(c: Comparison, out_dir: str | Path) -> list[Path]:
    from layerwise.report.html import Section, write_manifest

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    md = comparison_markdown(c)
    paths = [atomic_write_text(out_dir / "compare.md", md),
             atomic_write_text(out_dir / "compare.json", json.dumps(c.to_dict(), indent=2, default=str))]
    pngs = plot_comparison(c, out_dir)
    write_manifest(out_dir, f"compare: {display_name(c.model)} on {display_name(c.data)}",
                   [Section("Fine-tuning strategies compared", markdown=md, images=pngs, data=c.to_dict())])
    return paths + pngs
