"""`layerwise finetune`: fine-tune a pretrained model with one strategy."""

from __future__ import annotations

from layerwise.commands import count, fraction, open_fraction, positive_float, positive_int, probability
from layerwise.commands._training import Progress, add_run_arguments, add_train_config_arguments, train_config_from_args
from layerwise.errors import ConfigError
from layerwise.finetune.grammar import SPECS, STRATEGIES

# What a run uses when no training flag is given (its --help shows these; lr: by strategy).
TRAIN_DEFAULTS = {"epochs": 2, "steps": None, "batch_size": 32}


def add_data_arguments(p, images: bool = False) -> None:
    """How to read a data file: the columns of a CSV/JSONL, the labels of .npy images."""
    p.add_argument("--text-column", default=None, metavar="NAME",
                   help="column (CSV) or key (JSONL) holding the texts (default: text)")
    p.add_argument("--label-column", default=None, metavar="NAME",
                   help="column (CSV) or key (JSONL) holding the labels (default: label)")
    if images:
        p.add_argument("--labels", default=None, metavar="FILE",
                       help="labels of a .npy image array (a .npy of N class indices), or of IDX images "
                            "(default for IDX: the MNIST-named file beside the images)")


def data_options(args) -> dict:
    """The data-file options the flags gave (for load_dataset)."""
    return {k: getattr(args, k) for k in ("text_column", "label_column", "labels") if getattr(args, k, None) is not None}


def lr_help() -> str:
    """'by --strategy (its first item): full 5e-05, head 0.005, …' for --help, from the strategy grammar."""
    return "by --strategy (its first item): " + ", ".join(f"{k.syntax.split(':')[0]} {k.default_lr:g}" for k in SPECS.values())


def add_finetune_arguments(p, train_defaults: dict | None = None, shown: dict | None = None,
                           train_fraction: float | None = None) -> None:
    p.add_argument("--model", default="minilm-l6",
                   help="minilm-l6 | smollm2-135m | a layerwise run directory (a pretrained LM, or a classifier to "
                        "fine-tune further) | a local transformers directory (safetensors)")
    p.add_argument("--adapter", default=None, metavar="PEFT_DIR",
                   help="a PEFT LoRA adapter directory folded into --model before the strategy applies")
    p.add_argument("--data", default="sms-spam", help="labelled texts: sms-spam, movie-snippets, or a .csv/.tsv/.jsonl file")
    add_data_arguments(p)
    p.add_argument("--rank", type=positive_int, default=None, help="LoRA rank (with --strategy lora; default 8)")
    p.add_argument("--alpha", type=positive_float, default=None, help="LoRA alpha (default: 2·rank)")
    p.add_argument("--lora-dropout", type=probability, default=0.0, help="dropout on the LoRA input")
    p.add_argument("--targets", default=None,
                   help="LoRA targets, comma-separated: name globs or kinds (attention, mlp, all-linear); default q and v")
    p.add_argument("--max-len", type=positive_int, default=64, help="texts are cut to this many tokens")
    p.add_argument("--val", type=fraction, default=0.1, help="validation fraction (stratified)")
    p.add_argument("--test", type=fraction, default=0.1, help="test fraction (stratified)")
    p.add_argument("--train-fraction", type=open_fraction, default=train_fraction,
                   help="train on a stratified subsample of the training split"
                        + (" (default: all of it)" if train_fraction is None else ""))
    p.add_argument("--positive", default=None, help="class (index or name) for binary F1 (default: class 1)")
    p.add_argument("--no-cache", action="store_true", help="do not cache the frozen prefix's outputs")
    p.add_argument("--no-progress", action="store_true", help="log lines instead of a progress bar")
    add_run_arguments(p)
    add_train_config_arguments(p, defaults=train_defaults, shown=shown)


def check_lora_flags(args, specs: list[str]) -> None:
    """--targets, --alpha and --lora-dropout configure LoRA: refused when no strategy has a lora item."""
    if any(item.split(":")[0] == "lora" for spec in specs for item in spec.split("+")):
        return
    for flag, given in (("--targets", args.targets is not None), ("--alpha", args.alpha is not None),
                        ("--lora-dropout", bool(args.lora_dropout))):
        if given:
            what = f"--strategy {specs[0]}" if len(specs) == 1 else f"--strategies {','.join(specs)}"
            raise ConfigError(f"{flag}: applies to LoRA only; {what} has no lora item")


def lora_targets(args) -> list[str] | None:
    if args.targets is None:
        return None
    targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    if not targets:
        raise ConfigError(f"--targets: expected comma-separated layer names or kinds (attention, mlp, all-linear), got {args.targets!r}")
    return targets


def positive_class(text: str | None):
    """--positive: a class index (digits) or a class name."""
    if text is not None and not text.strip():
        raise ConfigError("--positive: expected a class index or a class name, got ''")
    return int(text) if text is not None and text.isdigit() else text


def strategy_spec(strategy: str, rank: int | None, alpha: float | None) -> str:
    """The strategy spec from --strategy, --rank and --alpha; a flag the strategy does not
    take, or one that contradicts the spec, is refused with the reason."""
    items = strategy.split("+")
    lora = [i for i, item in enumerate(items) if item.split(":")[0] == "lora"]
    if (rank is not None or alpha is not None) and not lora:
        flag = "--rank" if rank is not None else "--alpha"
        raise ConfigError(f"{flag}: applies to LoRA only; --strategy {strategy} has no lora item")
    if rank is not None and rank < 1:
        raise ConfigError(f"--rank: expected an integer >= 1, got {rank}")
    if lora:
        i = lora[0]
        parts = items[i].split(":")
        if rank is not None and len(parts) > 1 and parts[1] != str(rank):
            raise ConfigError(f"--rank {rank} contradicts --strategy {strategy} (rank {parts[1]}); give the rank once")
        if alpha is not None and len(parts) > 2 and float(parts[2]) != alpha:
            raise ConfigError(f"--alpha {alpha:g} contradicts --strategy {strategy} (alpha {parts[2]}); give alpha once")
        r = parts[1] if len(parts) > 1 else str(rank if rank is not None else 8)
        a = parts[2] if len(parts) > 2 else (f"{alpha:g}" if alpha is not None else None)
        items[i] = ":".join(["lora", r] + ([a] if a is not None else []))
    return "+".join(items)


def out_dir_for(spec: str) -> str:
    return f"runs/finetune-{spec.replace(':', '-')}"


def run(args) -> int:
    from layerwise.jobs.finetune import finetune

    spec = strategy_spec(args.strategy, args.rank, args.alpha)
    check_lora_flags(args, [spec])
    from layerwise.finetune import default_lr
    from layerwise.finetune.strategies import parse_strategy

    parse_strategy(spec)
    config = train_config_from_args(args, defaults={**TRAIN_DEFAULTS, "out_dir": out_dir_for(spec), "lr": default_lr(spec)})
    progress = Progress(enabled=not args.no_progress)
    try:
        r = finetune(args.model, args.data, spec, config, lora_targets=lora_targets(args),
                     lora_dropout=args.lora_dropout, max_len=args.max_len, val=args.val, test=args.test,
                     train_fraction=args.train_fraction, positive=positive_class(args.positive),
                     cache=not args.no_cache and "auto", callback=progress, resume=args.resume, overwrite=args.overwrite,
                     adapter=args.adapter, data_options=data_options(args))
    finally:
        progress.close()
    print(f"{spec}: trains {r.trainable:,} of {r.params_base:,} base parameters "
          f"({100 * r.trainable / r.params_base:.3f}%): " + ", ".join(f"{k} {v:,}" for k, v in r.trainable_by_kind.items()))
    for line in r.record["steps"] + r.record["notes"]:
        print(f"  {line}")
    if r.cache:
        print(f"  frozen prefix cached up to {r.cache['stage']}: {r.cache['bytes'] / 2**20:.1f} MiB in {r.cache['seconds']:.1f} s")
    print(f"trained {count(r.steps, 'step')} in {r.train_seconds:.1f} s ({r.examples_per_second:,.0f} examples/s)")
    if r.test:
        print("test: " + ", ".join(f"{k} {r.test[k]:.4f}" for k in ("accuracy", "precision", "recall", "f1") if k in r.test))
    if r.run_dir:
        print(f"run directory: {r.run_dir}")
    return 0


def register(sub) -> None:
    p = sub.add_parser("finetune", help="fine-tune a pretrained model with one strategy (head, top-k, bitfit, lora, adapter, full)")
    p.add_argument("--strategy", default="lora",
                   help=" | ".join(STRATEGIES) + " (joined with +; lora alone takes --rank, default 8). "
                        + "; ".join(f"{k.syntax}: {k.help}" for k in SPECS.values()))
    add_finetune_arguments(p, TRAIN_DEFAULTS, shown={"out_dir": "runs/finetune-STRATEGY", "lr": lr_help()})
    p.set_defaults(func=run)
