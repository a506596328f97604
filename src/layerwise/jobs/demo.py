"""The main job end to end (``layerwise demo``, what ``make demo`` runs).

1. Depth and parameters, compared: GPT-2 small, Llama-3-8B and BERT-base built on
   the meta device; ResNet-50 against MobileNet-v1; VGG-16 built with standard and
   with depthwise-separable convolutions — the four depths, parameters per layer
   kind with shares, FLOPs, and the formula behind the biggest layers.
2. Pretraining from scratch: a baby character-level GPT on the built-in Shakespeare
   text, its loss curve and a generated sample.
3. Fine-tuning, strategy by strategy: the packaged MiniLM on ``sms-spam`` with
   head-only, top-2, BitFit and LoRA — trainable parameters per layer kind, time,
   planned memory, F1.
4. A plan: what full fine-tuning against LoRA of a 7B model needs in memory.

Everything goes into ``out_dir`` and into one self-contained ``report.html``.
Progress is reported through ``emit(text)`` and, for training, ``progress(event)``;
the function returns the report's path.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from layerwise.analysis import Analysis, analyze
from layerwise.analysis.roles_view import by_role
from layerwise.io import atomic_write_text
from layerwise.models import build
from layerwise.report import plots, table
from layerwise.report.html import Section, sig4, write_report

GROUPS = {
    "transformers": [("gpt2", dict(seq_len=1024)), ("llama-3-8b", dict(seq_len=1024)), ("bert-base", dict(seq_len=512))],
    "cnns": [("resnet50", {}), ("mobilenet-v1", {})],
    "conv-types": [("vgg16", {}), ("vgg16-dws", {})],
}


@dataclass(frozen=True)
class DemoBudget:
    pretrain_steps: int
    pretrain_eval_every: int
    sample_tokens: int
    strategies: tuple[str, ...]
    train_fraction: float
    finetune_epochs: int
    max_len: int


# About two minutes of pretraining on 2 cores (~34 ms a step); the whole demo ~4 minutes.
FULL = DemoBudget(pretrain_steps=3500, pretrain_eval_every=500, sample_tokens=400,
                  strategies=("head", "top-2", "bitfit", "lora:8"), train_fraction=0.5, finetune_epochs=1, max_len=48)
# The quick version trains what the frozen-prefix cache makes cheap (a head; the top two blocks).
QUICK = DemoBudget(pretrain_steps=100, pretrain_eval_every=50, sample_tokens=120,
                   strategies=("head", "top-2"), train_fraction=0.15, finetune_epochs=2, max_len=32)


def biggest_formulas(a: Analysis, k: int = 3) -> list[str]:
    rows = sorted((r for r in a.rows if r.formula and r.params_raw), key=lambda r: -r.params_raw)
    return [f"{r.name}: {r.formula}" for r in rows[:k]]


def step_depth(out_dir: Path, emit) -> list[Section]:
    from layerwise.report.runs import analysis_sections

    emit("[1/4] Depth and parameters, compared (built on the meta device: no weights are allocated)")
    sections = []
    for group, members in GROUPS.items():
        models = [build(name, device="meta") for name, _ in members]
        analyses = [analyze(m, name=name, **kw) for m, (name, kw) in zip(models, members)]
        # the articles' split: input layer, hidden layers, output layer (layerwise summary --by role)
        views = [by_role(m, a, **kw) for m, a, (_, kw) in zip(models, analyses, members)]
        emit(table.render_comparison(analyses))
        for a, v in zip(analyses, views):
            emit(f"  biggest layers of {a.model}: " + "; ".join(biggest_formulas(a, 2)))
            emit(f"  {a.model} by role: " + ", ".join(f"{r.role} {r.params:,} ({100 * r.share:.1f}%)" for r in v.rows))
        png = plots.plot_comparison(analyses, out_dir / f"params-by-kind-{group}.png")
        md = _comparison_md(analyses) + "\n**Input, hidden and output layers**\n\n" + _roles_md(views)
        sections.append(Section(f"Depth and parameters: {', '.join(a.model for a in analyses)}", markdown=md, images=[png],
                                data=[{"model": a.model, "totals": a.totals.__dict__,
                                       "depth": {k: v for k, v in a.depth.__dict__.items() if k != "channel_depths"},
                                       "by_kind": [k.__dict__ for k in a.by_kind],
                                       "by_role": [r.__dict__ for r in v.rows],
                                       "biggest_layers": biggest_formulas(a, 5)} for a, v in zip(analyses, views)]))
        analysis_sections(analyses, out_dir / "summaries" / group)
    return sections


def _roles_md(views) -> str:
    """One row per model: the parameters of its input layer(s), hidden layers and output layer."""
    head = "| model | input | hidden | output | input layers | output layer |\n|---|---:|---:|---:|---|---|\n"
    rows = []
    for v in views:
        cells = [f"{r.params:,} ({100 * r.share:.1f}%)" for r in v.rows]
        rows.append(f"| {v.model} | " + " | ".join(cells) + f" | {', '.join(f'`{n}`' for n in v.row('input').layers)} | "
                    f"{', '.join(f'`{n}`' for n in v.row('output').layers)} |")
    return head + "\n".join(rows) + "\n"


def _comparison_md(analyses: list[Analysis]) -> str:
    kinds = []
    for a in analyses:
        kinds += [k.kind for k in a.by_kind if k.params and k.kind not in kinds]
    head = "| | " + " | ".join(a.model for a in analyses) + " |\n|---|" + "---:|" * len(analyses) + "\n"
    rows = [("parameters", lambda a: f"{a.totals.params:,}"),
            ("weight_depth", lambda a: str(a.depth.weight_depth)),
            ("block_depth", lambda a: str(a.depth.block_depth)),
            ("module_depth", lambda a: str(a.depth.module_depth)),
            ("channel depth (max)", lambda a: "" if a.depth.max_channel_depth is None else str(a.depth.max_channel_depth))]
    rows += [(f"{k} params (share)", lambda a, k=k: f"{a.kind(k).params:,} ({100 * a.kind(k).share:.1f}%)") for k in kinds]
    rows += [("input", lambda a: str(a.input_shape)), ("forward FLOPs", lambda a: f"{a.totals.flops_forward:,}"),
             ("training-step FLOPs", lambda a: f"{a.totals.flops_train:,}")]
    body = "".join(f"| {label} | " + " | ".join(f(a) for a in analyses) + " |\n" for label, f in rows)
    formulas = "\n".join(f"- **{a.model}**: " + "; ".join(f"`{x}`" for x in biggest_formulas(a, 2)) for a in analyses)
    return head + body + "\n**The formula behind the biggest layers**\n\n" + formulas + "\n"


def step_pretrain(out_dir: Path, budget: DemoBudget, emit, progress) -> list[Section]:
    from layerwise.train.config import TrainConfig
    from layerwise.jobs.training import generate_text, pretrain

    emit(f"[2/4] Pretraining a baby GPT from scratch on Shakespeare ({budget.pretrain_steps} steps)")
    run_dir = out_dir / "pretrain"
    cfg = TrainConfig(steps=budget.pretrain_steps, batch_size=12, lr=1e-3, schedule="cosine", warmup_steps=50,
                      min_lr=1e-4, eval_every=budget.pretrain_eval_every, eval_steps=20, log_every=25,
                      checkpoint_every=0, keep_last=1, out_dir=str(run_dir), device="cpu", seed=0)
    result = pretrain("gpt-baby-char", "shakespeare-1m", cfg, tokenizer="char", callback=progress)
    sample = generate_text(str(run_dir), prompt="ROMEO:\n", max_new_tokens=budget.sample_tokens, temperature=0.8,
                           top_k=40, seed=0)[0]
    final = result.final or {}
    emit(f"  validation loss {final.get('loss', float('nan')):.4f} after {result.steps:,} step{'' if result.steps == 1 else 's'} in {result.seconds:.0f} s")
    emit("  sample:\n" + "\n".join("    " + line for line in sample.splitlines()))
    atomic_write_text(run_dir / "sample.txt", sample)
    a = analyze(build(json.loads((run_dir / "config.json").read_text())["model"], device="meta"), name="gpt-baby-char")
    md = (f"A character-level GPT ({a.totals.params:,} parameters, weight_depth {a.depth.weight_depth}, "
          f"{a.depth.block_depth} blocks) trained for {result.steps} steps of 12×64 characters on the first 1.1 M "
          f"characters of Shakespeare's works, in {result.seconds:.0f} s. Validation loss "
          f"**{sig4(final.get('loss', float('nan')))}** (perplexity {sig4(final.get('perplexity', float('nan')))}).")
    images = [p for p in (run_dir / "loss-curve.png",) if p.exists()]
    return [Section("Pretraining from scratch: a baby GPT on Shakespeare", markdown=md, images=images,
                    preformatted="ROMEO:\n" + sample[len("ROMEO:\n"):] if sample.startswith("ROMEO:\n") else sample,
                    data={"final": final, "steps": result.steps, "seconds": result.seconds, "history_tail": result.history[-5:]})]


def step_finetune(out_dir: Path, budget: DemoBudget, emit, progress) -> list[Section]:
    from layerwise.jobs.finetune import compare, comparison_markdown
    from layerwise.train.config import TrainConfig

    emit(f"[3/4] Fine-tuning the packaged MiniLM on sms-spam: {', '.join(budget.strategies)}")
    cfg = TrainConfig(epochs=budget.finetune_epochs, batch_size=32, device="cpu", seed=0, log_every=10)

    def done(r):
        f1 = r.test.get("f1") if r.test else None
        emit(f"  {r.strategy}: trains {r.trainable:,} of {r.params_base:,} base parameters "
             f"({100 * r.trainable / r.params_base:.4g}%), {r.train_seconds:.0f} s" + (f", test F1 {f1:.4f}" if f1 is not None else ""))

    comp = compare("minilm-l6", "sms-spam", list(budget.strategies), cfg, out_dir=out_dir / "finetune",
                   max_len=budget.max_len, train_fraction=budget.train_fraction, auto_lr=True, on_result=done,
                   callback=progress)
    paths = sorted((out_dir / "finetune").glob("*.png"))
    md = comparison_markdown(comp).split("\n", 2)[2]
    return [Section("Fine-tuning, strategy by strategy: MiniLM on sms-spam", markdown=md,
                    images=[p for p in paths if p.suffix == ".png"], data=comp.to_dict())]


def step_plan(out_dir: Path, emit) -> list[Section]:
    from layerwise.jobs.plan import plan
    from layerwise.report.plan import comparison_table, plot_plans, render

    emit("[4/4] A plan: full fine-tuning against LoRA of Llama-2-7B (batch 1 × 2048 tokens, on a GPU)")
    model = build("llama-2-7b", device="meta")
    setups = [("full, bf16-mixed", dict(strategy="full", precision="bf16-mixed")),
              ("full, bf16-true, checkpointing", dict(strategy="full", precision="bf16-true", grad_checkpointing=True)),
              ("lora:8 on q,v, bf16-true", dict(strategy="lora:8", precision="bf16-true",
                                               strategy_options={"lora_targets": ["q_proj", "v_proj"]}))]
    plans = [plan(model, optimizer="adamw", batch_size=1, seq_len=2048, name="llama-2-7b", **kw) for _, kw in setups]
    labels = [label for label, _ in setups]
    text = render([comparison_table(plans, labels=labels)])
    emit(text)
    png = plot_plans(plans, out_dir / "plan-llama-2-7b.png", labels=labels)
    md = ("Peak memory of one training step, planned on the meta device (nothing is allocated). Full fine-tuning "
          "keeps weights, gradients and two AdamW moments for 6.7 B parameters; LoRA keeps the frozen weights once "
          "and trains 4,194,304 parameters.\n\n" + "\n".join(
              f"- **{label}**: peak {p.peak_bytes / 2**30:,.1f} GiB ({p.peak_phase}); trainable {p.trainable:,}"
              for label, p in zip(labels, plans)))
    return [Section("A plan: fine-tuning a 7B model", markdown=md, preformatted=text, images=[png],
                    data=[{"setup": label, **p.to_dict()} for label, p in zip(labels, plans)])]


def run_demo(out_dir: Path, quick: bool = False, emit: Callable[[str], None] = lambda s: None,
             progress: Callable | None = None, overwrite: bool = False) -> Path:
    """Run the four steps into ``out_dir``. A previous demo there is replaced (running
    ``make demo`` twice just works); any other run is refused unless ``overwrite``."""
    from layerwise.rundir import open_run, read_manifest

    out_dir = Path(out_dir)
    previous = read_manifest(out_dir) if out_dir.is_dir() else None
    old_demo = (previous or {}).get("command") == "demo" or (
        previous is None and (out_dir / "report.json").is_file() and (out_dir / "pretrain").is_dir())
    budget = QUICK if quick else FULL
    with open_run(out_dir, "demo", overwrite=overwrite or old_demo, info={"quick": quick}) as run:
        for note in run.notes:
            emit(f"note: {note}")
        sections = step_depth(out_dir, emit)
        sections += step_pretrain(out_dir, budget, emit, progress)
        sections += step_finetune(out_dir, budget, emit, progress)
        sections += step_plan(out_dir, emit)
        page = write_report(out_dir / "report.html", "layerwise demo", sections,
                            subtitle="How deep is this network, and where do its trainable parameters live?"
                            + (" (quick version)" if quick else ""))
        atomic_write_text(out_dir / "report.json", json.dumps([{"title": s.title, "data": s.data} for s in sections],
                                                              indent=2, default=str))
    emit(f"report: {page}")
    return page
