"""An LSTM text classifier on 10,605 movie-review snippets (positive or negative)."""

from __future__ import annotations

from layerwise.jobs.examples import Example, Option, Target


def run(ctx):
    from layerwise.jobs.examples._classifier import run_classifier

    return run_classifier(ctx, "seed-lstm-binary", "movie-snippets", tokenizer=ctx.options["tokenizer"], max_len=48,
                          full={"epochs": 6, "batch_size": 64, "lr": 2e-3, "log_every": 20, "clip_grad_norm": 1.0},
                          quick={"steps": 60}, overrides={"dropout": 0.3} if ctx.options["dropout"] else None,
                          title="An LSTM on movie-review snippets")


EXAMPLE = Example(
    name="lstm-sentiment", shows="an LSTM text classifier", data="movie-snippets (10,605 snippets, sentiment sign)",
    model="seed-lstm-binary (Embedding → LSTM(128) → Dense(1))", minutes=4.0,
    targets=(Target("accuracy", ">=", 0.70),), run=run,
    options=(Option("--tokenizer", str, "bpe:8000", "tokenizer for the snippets (char | bpe:VOCAB | gpt2)"),
             Option("--dropout", bool, False, "dropout 0.3 in the model")),
)
