"""`layerwise pretrain`: train a language model on a text corpus."""

from __future__ import annotations

from layerwise.commands._training import (
    Progress,
    add_model_arguments,
    add_train_config_arguments,
    parse_overrides,
    print_summary,
    train_config_from_args,
)
from layerwise.commands import fraction

# What a run uses when no training flag is given (its --help shows these).
TRAIN_DEFAULTS = {"eval_every": 250}


def run(args) -> int:
    from layerwise.jobs.training import pretrain

    model_name = args.model.rsplit("/", 1)[-1].rsplit(".", 1)[0]
    config = train_config_from_args(args, defaults={**TRAIN_DEFAULTS, "out_dir": f"runs/pretrain-{model_name}"})
    progress = Progress(enabled=not args.no_progress)
    try:
        result = pretrain(
            args.model,
            args.data,
            config,
            tokenizer=args.tokenizer,
            val=args.val,
            model_overrides=parse_overrides(args.model_set),
            resume=args.resume,
            overwrite=args.overwrite,
            callback=progress,
            cache_dir=args.cache_dir,
        )
    finally:
        progress.close()
    print_summary(result)
    return 0


def register(sub) -> None:
    p = sub.add_parser("pretrain", help="pretrain a language model (e.g. gpt-baby-char on shakespeare-1m)")
    add_model_arguments(p)
    p.add_argument("--data", required=True, help="text corpus: shakespeare, shakespeare-1m or a .txt file")
    p.add_argument("--tokenizer", default="char", help="char | bpe:VOCAB | gpt2 | path to tokenizer.json")
    p.add_argument("--val", type=fraction, default=0.1, help="fraction of the corpus held out for validation (its end)")
    p.add_argument("--cache-dir", default=None, help="token cache folder (default $LAYERWISE_CACHE or ~/.cache/layerwise)")
    add_train_config_arguments(p, defaults=TRAIN_DEFAULTS, shown={"out_dir": "runs/pretrain-MODEL"})
    p.set_defaults(func=run)
