"""A text classifier on a pretrained BERT: all-MiniLM-L6-v2 (shipped in a PyPI package)
fine-tuned on 4,837 labelled SMS, spam or not."""

from __future__ import annotations

from layerwise.jobs.examples import Example, Option, Target


def run(ctx):
    from layerwise.jobs.examples import ExampleOutput
    from layerwise.jobs.examples._common import metric_line, train_config, training_sections
    from layerwise.finetune import default_lr
    from layerwise.jobs.finetune import finetune

    strategy = ctx.options["strategy"]
    cfg = train_config(ctx, {"epochs": 3, "batch_size": 32, "lr": default_lr(strategy), "log_every": 10},
                       {"steps": 12, "eval_every": 6})
    r = finetune("minilm-l6", "sms-spam", strategy, cfg, max_len=64,
                 train_fraction=0.2 if ctx.quick else None, callback=ctx.callback, resume=ctx.resume, run=ctx.run)
    test = r.test or {}
    ctx.emit(f"{strategy}: {r.trainable:,} of {r.params_base:,} parameters trained; test {metric_line(test)}")
    metrics = {k: test[k] for k in ("f1", "accuracy", "precision", "recall") if isinstance(test.get(k), (int, float))}
    metrics["trainable"] = r.trainable
    md = (f"`layerwise finetune --model minilm-l6 --data sms-spam --strategy {strategy}`: {r.trainable:,} of "
          f"{r.params_base:,} parameters train ({100 * r.trainable / r.params_base:.2f}%); {r.steps} steps in "
          f"{r.train_seconds:.1f} s. Test, spam as the positive class: {metric_line(test)}.")
    return ExampleOutput(metrics, {"test": test, "record": r.record},
                         training_sections(ctx.out_dir, "Fine-tuning MiniLM on SMS spam", md, data={"test": test}))


EXAMPLE = Example(
    name="bert-classifier", shows="a text classifier on a pretrained BERT", data="sms-spam (4,837 SMS, 638 spam)",
    model="minilm-l6 (all-MiniLM-L6-v2, 22.7 M parameters) with a classification head", minutes=6.0,
    targets=(Target("f1", ">=", 0.97),), run=run,
    options=(Option("--strategy", str, "full", "fine-tuning strategy (full, lora:8, top-2, head, ...)"),),
)
