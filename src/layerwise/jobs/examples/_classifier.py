"""The classifier examples (MLP and CNN on MNIST, the LSTM on movie reviews): the ``train``
job with the example's model, data and budget, in the example's run directory."""

from __future__ import annotations

from layerwise.jobs.examples import ExampleOutput


def run_classifier(ctx, model: str, data: str, full: dict, quick: dict, tokenizer: str | None = None,
                   max_len: int = 64, overrides: dict | None = None, title: str = "Training") -> ExampleOutput:
    from layerwise.jobs.examples._common import metric_line, train_config, training_sections
    from layerwise.jobs.training import train_classifier

    cfg = train_config(ctx, full, quick)
    result, metrics = train_classifier(model, data, cfg, tokenizer=tokenizer, max_len=max_len,
                                       model_overrides=overrides, resume=ctx.resume, callback=ctx.callback, run=ctx.run)
    test = metrics["test"] or {}
    ctx.emit(f"best checkpoint, test: {metric_line(test)}")
    headline = {k: test[k] for k in ("accuracy", "precision", "recall", "f1") if isinstance(test.get(k), (int, float))}
    headline["steps"] = result.steps
    md = (f"`layerwise train --model {model} --data {data}` with this budget: {result.steps} steps in "
          f"{result.seconds:.1f} s. The best checkpoint (by validation loss) on the held-out test split: "
          f"{metric_line(test)}.")
    return ExampleOutput(headline, {"val": metrics["val"], "test": test},
                         training_sections(ctx.out_dir, title, md, data={"test": test}))
