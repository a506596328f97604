"""The articles' Keras CNN on 5,000 MNIST digits."""

from __future__ import annotations

from layerwise.jobs.examples import Example, Target


def run(ctx):
    from layerwise.jobs.examples._classifier import run_classifier

    return run_classifier(ctx, "seed-cnn-mnist", "mnist-5k",
                          full={"epochs": 12, "batch_size": 64, "lr": 2e-3, "schedule": "cosine", "log_every": 20},
                          quick={"epochs": 1}, title="A CNN on MNIST: two 3×3 convolutions, two poolings, two dense layers")


EXAMPLE = Example(
    name="cnn-mnist", shows="a CNN on MNIST", data="mnist-5k (5,000 digits, 80/10/10 split)",
    model="seed-cnn-mnist (121,930 parameters)", minutes=2.0, targets=(Target("accuracy", ">=", 0.96),), run=run,
)
