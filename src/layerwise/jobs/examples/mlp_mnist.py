"""An MLP image classifier on 5,000 MNIST digits (the articles' MLP classifier)."""

from __future__ import annotations

from layerwise.jobs.examples import Example, Target


def run(ctx):
    from layerwise.jobs.examples._classifier import run_classifier

    return run_classifier(ctx, "mlp-784-64-64-10", "mnist-5k",
                          full={"epochs": 20, "batch_size": 64, "lr": 2e-3, "schedule": "cosine", "log_every": 20},
                          quick={"epochs": 2}, title="An MLP on MNIST: 784 → 64 → 64 → 10")


EXAMPLE = Example(
    name="mlp-mnist", shows="an MLP image classifier", data="mnist-5k (5,000 digits, 80/10/10 split)",
    model="mlp-784-64-64-10 (55,050 parameters)", minutes=0.5, targets=(Target("accuracy", ">=", 0.93),), run=run,
)
