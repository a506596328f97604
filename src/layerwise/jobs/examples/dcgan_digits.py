"""The articles' image generator with a convolutional network: a DCGAN (transposed
convolutions up, strided convolutions down, batch norm) on scikit-learn's 8×8 digits; scored
by a CNN trained on the real digits."""

from __future__ import annotations

from layerwise.jobs.examples import Example, Option, Target


def run(ctx):
    from layerwise.jobs.examples._gan import run_gan_example

    return run_gan_example(
        ctx, "dcgan-digits", "digits", "digits_score",
        full={"epochs": 150, "batch_size": 64, "lr": 2e-4, "optimizer": "adam", "betas": (0.5, 0.999), "log_every": 20,
              "keep_last": 2, "num_threads": 1},
        quick={"epochs": 10}, scorer_epochs=(40, 10), title="A DCGAN on 8×8 digits",
        task_options={"label_smoothing": ctx.options["label_smoothing"]})


EXAMPLE = Example(
    name="dcgan-digits", shows="image generation with a convolutional network", data="digits (the 1,437 training digits, 8×8)",
    model="dcgan-digits (G: z 32 → 128×2×2 → ConvT 64×4×4 → ConvT 1×8×8; D: Conv 64 → Conv 128 → 1)", minutes=4.0,
    targets=(Target("digits_score", ">=", 7.0), Target("classes", "==", 10)), run=run,
    options=(Option("--label-smoothing", float, 0.1, "one-sided label smoothing of the real images' target"),),
)
