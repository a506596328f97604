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


def run(args) -> int:
    from layerwise.jobs.training import train_classifier

    model_name = args.model.rsplit("/", 1)[-1].rsplit(".", 1)[0]
    config = train_config_from_args(args, defaults={"out_dir": f"runs/train-{model_name}", "epochs": 5, "steps": None})
    positive = args.positive
    if positive is not None and positive.isdigit():
        positive = int(positive)
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
        )
    finally:
        progress.close()
    print_summary(result, {"best checkpoint, validation": metrics.get("val"), "best checkpoint, test": metrics.get("test")})
    return 0


def register(sub) -> None:
    p = sub.add_parser("train", help="train a classifier (e.g. seed-cnn-mnist on mnist-5k, seed-lstm on sms-spam)")
    add_model_arguments(p)
    p.add_argument("--data", required=True, help="mnist-5k, digits, sms-spam, movie-snippets, or a .csv/.jsonl/.npy/IDX file")
    p.add_argument("--tokenizer", default=None, help="for texts: char | bpe:VOCAB | gpt2 | path to tokenizer.json")
    p.add_argument("--max-len", type=int, default=64, help="texts are cut to this many tokens (default 64)")
    p.add_argument("--val", type=float, default=0.1, help="validation fraction (stratified, default 0.1)")
    p.add_argument("--test", type=float, default=0.1, help="test fraction (stratified, default 0.1)")
    p.add_argument("--positive", default=None, help="class (index or name) for binary precision/recall/F1")
    add_train_config_arguments(p)
    p.set_defaults(func=run)
