"""The articles' GAN image generator on 5,000 MNIST digits: a generator and a discriminator of
dense layers, trained against each other; scored by a CNN trained on the real digits."""

from __future__ import annotations

from layerwise.jobs.examples import Example, Option, Target


def run(ctx):
    from layerwise.jobs.examples._gan import run_gan_example

    return run_gan_example(
        ctx, "gan-mlp-mnist", "mnist-5k", "mnist_score",
        full={"epochs": 100, "batch_size": 64, "lr": 2e-4, "optimizer": "adam", "betas": (0.5, 0.999), "log_every": 20,
              "keep_last": 2, "num_threads": 1},
        quick={"epochs": 3}, scorer_epochs=(8, 1), title="A GAN of dense layers on MNIST",
        task_options={"label_smoothing": ctx.options["label_smoothing"]},
        # The seed's 128-wide ReLU networks collapse on 4,000 digits (the discriminator wins within ~5,000 steps):
        # a wider generator, LeakyReLU and batch norm (DCGAN's recipe, in dense layers) train stably.
        model_overrides={"g_hidden": (256, 512, 1024), "d_hidden": (512, 256), "g_activation": "leaky_relu",
                         "d_activation": "leaky_relu", "batch_norm": True})


EXAMPLE = Example(
    name="gan-mnist", shows="GAN image generation", data="mnist-5k (the 4,000 training digits)",
    model="gan-mlp-mnist widened: G 100 → 256 → 512 → 1024 → 784, D 784 → 512 → 256 → 1 (LeakyReLU, batch norm)",
    minutes=8.0,
    targets=(Target("mnist_score", ">=", 7.0), Target("classes", "==", 10)), run=run,
    options=(Option("--label-smoothing", float, 0.1, "one-sided label smoothing of the real images' target"),),
)
