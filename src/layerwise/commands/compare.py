"""`layerwise compare`: every fine-tuning strategy on the same data, seed and budget."""

from __future__ import annotations

from layerwise.commands.finetune import add_finetune_arguments, check_lora_flags, data_options, lora_targets, positive_class
from layerwise.finetune.grammar import COMPARE_DEFAULT

DEFAULT_STRATEGIES = ",".join(COMPARE_DEFAULT)
# What a run uses when no training flag is given (its --help shows these; lr: by strategy).
TRAIN_DEFAULTS = {"epochs": 2, "steps": None, "batch_size": 32, "out_dir": "runs/compare"}
TRAIN_FRACTION = 0.5


def run(args) -> int:
    from rich.markdown import Markdown

    from layerwise.commands import stdout_console
    from layerwise.commands._training import Progress, train_config_from_args
    from layerwise.jobs.finetune import compare, comparison_markdown

    from layerwise.errors import ConfigError

    strategies = [s.strip() for s in args.strategies.split(",") if s.strip()]
    if args.rank is not None:
        raise ConfigError("--rank: compare runs several strategies; give each LoRA its rank in --strategies (lora:8,lora:16)")
    if strategies:
        check_lora_flags(args, strategies)
    if args.adapter:
        raise ConfigError("--adapter: compare starts every strategy from --model; fold the adapter in with finetune first")
    if args.resume:
        raise ConfigError("--resume: compare does not resume; it reruns every strategy (use --overwrite to replace the report)")
    config = train_config_from_args(args, defaults=TRAIN_DEFAULTS)
    out = config.out_dir
    auto_lr = not hasattr(args, "lr") and not getattr(args, "train_config", None)
    console = stdout_console()
    progress = Progress(enabled=not args.no_progress)

    def done(r):
        progress.close()
        f1 = r.test.get("f1") if r.test else None
        console.print(f"[bold]{r.strategy}[/]: trains {r.trainable:,} of {r.params_base:,} base parameters, "
                      f"{r.train_seconds:.1f} s" + (f", test F1 {f1:.4f}" if f1 is not None else ""), highlight=False)

    c = compare(args.model, args.data, strategies, config, out_dir=out, max_len=args.max_len, val=args.val,
                test=args.test, train_fraction=args.train_fraction,
                lora_targets=lora_targets(args), positive=positive_class(args.positive), data_options=data_options(args),
                cache=not args.no_cache and "auto", auto_lr=auto_lr, on_result=done, callback=progress,
                lora_alpha=args.alpha, lora_dropout=args.lora_dropout, overwrite=args.overwrite)
    progress.close()
    console.print(Markdown(comparison_markdown(c)))
    console.print(f"report: {out}/compare.md, compare.json, trainable-by-kind.png, f1-vs-trainable.png "
                  f"(layerwise report {out} builds the HTML page)")
    return 0


def register(sub) -> None:
    p = sub.add_parser("compare", help="compare fine-tuning strategies: trainable parameters per kind, time, memory, F1")
    from layerwise.commands.finetune import lr_help

    p.add_argument("--strategies", default=DEFAULT_STRATEGIES, help="comma-separated strategy specs")
    add_finetune_arguments(p, TRAIN_DEFAULTS, shown={"lr": lr_help() + " (unless --lr or --train-config gives one)"},
                           train_fraction=TRAIN_FRACTION)
    p.set_defaults(func=run)
