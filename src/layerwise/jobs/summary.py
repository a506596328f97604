"""What ``summary`` shows for a run directory or a model with a strategy applied: the
per-layer table of the model as fine-tuned (trainable and frozen per row), and what the
strategy did — PEFT's ``print_trainable_parameters``, but layer by layer."""

from __future__ import annotations

from pathlib import Path


def is_run_dir(target: str) -> bool:
    p = Path(target)
    return p.is_dir() and any((p / f).exists() for f in ("run.json", "checkpoints", "export.json", "state.json"))


def analyze_finetuned(target: str, strategy: str | None = None, lora_targets=None, input_shape=None,
                      batch_size: int = 1, seq_len: int | None = None, device: str = "meta"):
    """(Analysis, notes): ``target`` a run directory (its model rebuilt by load_run), or a
    preset/config/factory with ``strategy`` applied (on the meta device)."""
    from layerwise.analysis import analyze
    from layerwise.errors import ConfigError
    from layerwise.finetune.lora import LoRALinear
    from layerwise.finetune.strategies import apply_strategy

    notes: list[str] = []
    if is_run_dir(target):
        from layerwise.jobs.runs import load_run

        if strategy is not None:
            raise ConfigError(f"--strategy: {target} is a run directory; it shows the strategy it was trained with")
        loaded = load_run(target)
        model, name = loaded.model, Path(target).name
        if loaded.recipe.get("kind") == "finetune":
            notes.append(f"fine-tuned from {loaded.recipe['base'].get('name') or loaded.recipe['base'].get('path')} with "
                         f"{loaded.recipe['strategy']}")
        if input_shape is None and seq_len is None and loaded.data.get("max_len"):
            seq_len = int(loaded.data["max_len"])
    else:
        from layerwise.targets import resolve

        t = resolve(target, device=device)
        model, name = t.model, t.name
        if strategy is not None:
            rec = apply_strategy(model, strategy, lora_targets=lora_targets)
            name = f"{name} + {strategy}"
            notes += rec.steps + rec.notes
    from layerwise.finetune.checkpoint import is_added

    named = {id(p): (n, p) for n, p in model.named_parameters()}.values()
    base = sum(p.numel() for n, p in named if not is_added(n))
    added = sum(p.numel() for n, p in named if is_added(n))
    trainable = sum(p.numel() for _, p in named if p.requires_grad)
    loras = [n for n, m in model.named_modules() if isinstance(m, LoRALinear)]
    if loras:
        notes.append(f"LoRA on {len(loras)} layers: {', '.join(loras[:8])}{' …' if len(loras) > 8 else ''}")
    notes.append(f"trainable params: {trainable:,} of the base's {base:,} ({100 * trainable / base:.4f}%)"
                 + (f"; {added:,} of them added by the strategy" if added else ""))
    a = analyze(model, input_shape=input_shape, batch_size=batch_size, seq_len=seq_len, name=name)
    return a, notes
