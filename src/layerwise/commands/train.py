"""`layerwise train`: supervised training of an image or text classifier."""

from __future__ import annotations

from layerwise.commands._training import (
    Progress,
    add_model_arguments,
    add_train_config_arguments,
    parse_overrides,
    print_summary,
    train_config_from_args,
)
from layerwise.commands import fraction, positive_int
from layerwise.commands.finetune import add_data_arguments, data_options, positive_class

# What a run uses when no training flag is given (its --help shows these).
TRAIN_DEFAULTS = {"epochs": 5, "steps": None}


def run(args) -> int:
    from layerwise.jobs.training import train_classifier

    model_name = args.model.rsplit("/", 1)[-1].rsplit(".", 1)[0]
    config = train_config_from_args(args, defaults={**TRAIN_DEFAULTS, "out_dir": f"runs/train-{model_name}"})
    positive = positive_class(args.positive)
    progress = Progress(enabled=not args.no_progress)
    try:
        result, metrics = train_classifier(
            args.model,
            args.data,
            config,
            tokenizer=args.tokenizer,
            max_len=args.max_len,
            val=args.val,
            test=args.test,
            positive=positive,
            model_overrides=parse_overrides(args.model_set),
            resume=args.resume,
            overwrite=args.overwrite,
            callback=progress,
            data_options=data_options(args),
        )
    finally:
        progress.close()
    print_summary(result, {"best checkpoint, validation": metrics.get("val"), "best checkpoint, test": metrics.get("test")})
    return 0


def register(sub) -> None:
    p = sub.add_parser("train", help="train a classifier (e.g. seed-cnn-mnist on mnist-5k, seed-lstm on sms-spam)")
    add_model_arguments(p)
    p.add_argument("--data", required=True, help="mnist-5k, digits, sms-spam, movie-snippets, or a .csv/.jsonl/.npy/IDX file")
    add_data_arguments(p, images=True)
    p.add_argument("--tokenizer", default=None, help="for texts: char | bpe:VOCAB | gpt2 | path to tokenizer.json")
    p.add_argument("--max-len", type=positive_int, default=64, help="texts are cut to this many tokens")
    p.add_argument("--val", type=fraction, default=0.1, help="validation fraction (stratified)")
    p.add_argument("--test", type=fraction, default=0.1, help="test fraction (stratified)")
    p.add_argument("--positive", default=None, help="class (index or name) for binary precision/recall/F1 (default: class 1 of two)")
    add_train_config_arguments(p, defaults=TRAIN_DEFAULTS, shown={"out_dir": "runs/train-MODEL"})
    p.set_defaults(func=run)
