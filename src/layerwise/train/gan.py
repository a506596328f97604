"""Adversarial training of a :class:`~layerwise.models.gan.GAN` in the one training loop.

:class:`GANTask` is a :class:`~layerwise.train.tasks.StepTask`: each optimizer step is one
discriminator update and one generator update (Goodfellow et al. 2014, Algorithm 1 with
k = 1), with two optimizers named ``discriminator`` and ``generator`` that the loop makes
from the TrainConfig (``--optimizer``, ``--lr`` and its schedule, ``--betas``; DCGAN's
Adam(2e-4, β1 = 0.5) is a good start). The generator minimises the non-saturating loss
−log D(G(z)) (Goodfellow et al. 2014, section 3), not log(1 − D(G(z))).

Losses, per step, on a batch of B real images x (scaled to [-1, 1]) and B noise vectors z:

    d_loss = ½ [BCE(D(x), 1 − s) + BCE(D(G(z)), 0)]     s: one-sided label smoothing
    g_loss = BCE(D(G(z)), 1)                             (Salimans et al. 2016, 3.4)

The noise of step i is drawn from a generator seeded by (seed, i), and the real batch is
the batch source's batch i, so a step is a pure function of the weights, the optimizer
states and i: a resumed run repeats the uninterrupted one exactly.

Collapse (the run stops with a one-line error, the last good checkpoint is kept): the
samples become non-finite, or the discriminator's loss stays below ``collapse_loss`` for
``collapse_patience`` steps in a row (it rejects every sample and the generator gets no
useful gradient). While the discriminator's loss is that low, or while any weight is
non-finite, the loop writes no checkpoint, so the checkpoints it keeps are good ones.

Evaluation (``val_data``: real held-out images): the discriminator's loss and accuracy on
them and on ``eval_samples`` samples from a fixed noise batch; with a ``scorer`` (a
function of images in [0, 1] returning metrics, e.g. an Inception Score from a classifier
trained on the real data) its metrics too, and the best checkpoint is the one with the
highest ``scorer.metric``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from layerwise.errors import ConfigError, LayerwiseError
from layerwise.train.tasks import Batch, BatchSource, StepContext, StepResult, StepTask, TensorBatches, _generator

# Streams of the per-step generators (see tasks._generator): training noise, evaluation noise.
_NOISE, _EVAL_NOISE = 11, 13


def _images(data: Any, where: str) -> torch.Tensor:
    """Images (N, C, H, W) in [0, 1] from an ImageClassification or a tensor."""
    from layerwise.data import ImageClassification

    x = data.images if isinstance(data, ImageClassification) else data
    if isinstance(x, (tuple, list)) and x and isinstance(x[0], torch.Tensor):
        x = x[0]
    if not isinstance(x, torch.Tensor) or x.dim() != 4 or not x.is_floating_point():
        raise LayerwiseError(f"{where}: expected images (an ImageClassification or a float tensor (N, C, H, W) in [0, 1]), "
                             f"got {type(x).__name__}{' ' + str(tuple(x.shape)) if isinstance(x, torch.Tensor) else ''}")
    return x


class GANTask(StepTask):
    """One discriminator and one generator update per step (see the module docstring).

    seed: seeds the noise (the TrainConfig's seed is a good choice).
    label_smoothing: s, the real images' target is 1 − s (0 to 0.3).
    collapse_loss, collapse_patience: the collapse rule; patience None turns it off.
    scorer: images in [0, 1] (N, C, H, W) -> metrics dict; ``scorer.metric`` (default
        "score") names the one that picks the best checkpoint.
    eval_samples: samples generated for each evaluation (from one fixed noise batch).
    d_lr_scale, g_lr_scale: factors on the scheduled learning rate of each network.
    """

    unit = "images"

    def __init__(self, seed: int = 0, label_smoothing: float = 0.0, collapse_loss: float = 1e-3,
                 collapse_patience: int | None = 200, scorer: Callable[[torch.Tensor], dict] | None = None,
                 eval_samples: int = 1000, d_lr_scale: float = 1.0, g_lr_scale: float = 1.0) -> None:
        if not 0.0 <= label_smoothing < 0.5:
            raise ConfigError(f"GANTask.label_smoothing: expected a number in [0, 0.5), got {label_smoothing!r}")
        if collapse_patience is not None and (not isinstance(collapse_patience, int) or collapse_patience < 1):
            raise ConfigError(f"GANTask.collapse_patience: expected an integer >= 1 or None, got {collapse_patience!r}")
        if not collapse_loss > 0:
            raise ConfigError(f"GANTask.collapse_loss: expected a number > 0, got {collapse_loss!r}")
        if not isinstance(eval_samples, int) or eval_samples < 1:
            raise ConfigError(f"GANTask.eval_samples: expected an integer >= 1, got {eval_samples!r}")
        for name, v in (("d_lr_scale", d_lr_scale), ("g_lr_scale", g_lr_scale)):
            if not v >= 0:
                raise ConfigError(f"GANTask.{name}: expected a number >= 0, got {v!r}")
        self.seed = seed
        self.label_smoothing = float(label_smoothing)
        self.collapse_loss = float(collapse_loss)
        self.collapse_patience = collapse_patience
        self.scorer = scorer
        self.eval_samples = eval_samples
        self.d_lr_scale, self.g_lr_scale = float(d_lr_scale), float(g_lr_scale)
        self.low_steps = 0  # consecutive steps with d_loss < collapse_loss
        self.latent_dim: int | None = None

    def bind(self, model: nn.Module) -> None:
        if not (hasattr(model, "generator") and hasattr(model, "discriminate") and hasattr(model, "config")):
            raise LayerwiseError(f"GANTask: expected a layerwise GAN (generator + discriminator), got {type(model).__name__}")
        self.latent_dim = model.config.latent_dim
        self.image_shape = tuple(model.config.image_shape)

    # -- data
    def make_source(self, data: Any, batch_size: int, seed: int = 0, shuffle: bool = True, oversample: bool = False) -> BatchSource:
        x = _images(data, "GANTask")
        if self.latent_dim is not None and tuple(x.shape[1:]) != self.image_shape:
            raise LayerwiseError(f"GANTask: the images are {tuple(x.shape[1:])}, the GAN makes {self.image_shape}")
        return TensorBatches((x * 2 - 1,), batch_size, seed, shuffle=shuffle)  # [0, 1] -> [-1, 1], tanh's range

    def model_inputs(self, batch: Batch) -> tuple[tuple, dict]:
        return (torch.zeros(batch[0].shape[0], self.latent_dim or 1, device=batch[0].device),), {}

    def count(self, batch: Batch) -> int:
        return int(batch[0].shape[0])

    # -- what the loop builds and saves
    def optimizer_params(self, model: nn.Module) -> dict[str, nn.Module]:
        return {"discriminator": model.discriminator, "generator": model.generator}

    def lr_scales(self) -> dict[str, float]:
        return {"discriminator": self.d_lr_scale, "generator": self.g_lr_scale}

    def checkpoint_models(self, model: nn.Module) -> dict[str, nn.Module]:
        return {"discriminator": model.discriminator, "generator": model.generator}

    def state_dict(self) -> tuple[dict[str, torch.Tensor], dict]:
        return {}, {"low_steps": self.low_steps}

    def load_state_dict(self, tensors: dict[str, torch.Tensor], state: dict) -> None:
        self.low_steps = int(state.get("low_steps", 0))

    def checkpoint_ok(self, model: nn.Module) -> bool:
        return self.low_steps == 0 and all(bool(torch.isfinite(p).all()) for p in model.parameters())

    def monitor(self) -> tuple[str, str]:
        if self.scorer is not None:
            return getattr(self.scorer, "metric", "score"), "max"
        return "loss", "min"

    def step_flops(self, model: nn.Module, batch: Batch) -> int | None:
        from layerwise.train.perf import train_flops

        real = batch[0]
        z = self.model_inputs(batch)[0][0]
        g = train_flops(model.generator, (z,))
        d = train_flops(model.discriminator, (real,))
        # D on real and fake images (forward + backward), then G's update through D
        return 2 * d + d + g if g and d else None

    def describe(self) -> dict:
        return {"task": "gan", "label_smoothing": self.label_smoothing, "collapse_loss": self.collapse_loss,
                "collapse_patience": self.collapse_patience, "eval_samples": self.eval_samples,
                "d_lr_scale": self.d_lr_scale, "g_lr_scale": self.g_lr_scale,
                "monitor": self.monitor()[0]}

    # -- the update
    def noise(self, n: int, index: int, stream: int = _NOISE, device: torch.device | str = "cpu") -> torch.Tensor:
        """Standard normal noise (n, latent_dim) of step (or evaluation) ``index``."""
        return torch.randn(n, self.latent_dim, generator=_generator(self.seed, index, stream)).to(device)

    def train_step(self, model: nn.Module, batch: Batch, ctx: StepContext) -> StepResult:
        real = batch[0]  # (B, C, H, W) in [-1, 1]
        b = real.shape[0]
        z = self.noise(b, ctx.step, device=ctx.device)  # (B, latent)
        with ctx.autocast():
            fake = model(z)  # (B, C, H, W)
        if not bool(torch.isfinite(fake).all()):
            return StepResult(float("nan"), {}, b, stop="the generator's samples are NaN or infinite (its weights diverged); "
                              "try a smaller --lr")
        ones = torch.ones(b, 1, device=ctx.device)
        zeros = torch.zeros(b, 1, device=ctx.device)
        with ctx.autocast():
            d_real = model.discriminate(real).float()  # (B, 1) logits
            d_fake = model.discriminate(fake.detach()).float()  # (B, 1)
        d_loss = 0.5 * (F.binary_cross_entropy_with_logits(d_real, ones * (1 - self.label_smoothing))
                        + F.binary_cross_entropy_with_logits(d_fake, zeros))
        d_value = ctx.update("discriminator", d_loss)
        for p in model.discriminator.parameters():  # the generator's update needs no D gradients
            p.requires_grad_(False)
        try:
            with ctx.autocast():
                g_logits = model.discriminate(fake).float()  # (B, 1)
            g_value = ctx.update("generator", F.binary_cross_entropy_with_logits(g_logits, ones))
        finally:
            for p in model.discriminator.parameters():
                p.requires_grad_(True)
        metrics = {"d_loss": d_value, "g_loss": g_value,
                   "d_real": float(torch.sigmoid(d_real.detach()).mean()), "d_fake": float(torch.sigmoid(d_fake.detach()).mean())}
        stop = None
        if self.collapse_patience is not None:
            self.low_steps = self.low_steps + 1 if d_value < self.collapse_loss else 0
            if self.low_steps >= self.collapse_patience:
                stop = (f"the GAN collapsed: the discriminator's loss stayed below {self.collapse_loss:g} for "
                        f"{self.low_steps} steps (it rejects every sample, the generator learns nothing); "
                        "try a smaller --lr, label smoothing, or a smaller discriminator")
        return StepResult(d_value + g_value, metrics, b, stop=stop)

    # -- evaluation
    @torch.no_grad()
    def sample(self, model: nn.Module, n: int, index: int = 0, device: torch.device | str = "cpu",
               chunk: int = 500) -> torch.Tensor:
        """``n`` samples as images in [0, 1] (n, C, H, W) from the fixed noise batch ``index``
        (evaluation noise: the same for every evaluation of a run)."""
        was = model.training
        model.eval()
        try:
            z = torch.randn(n, self.latent_dim, generator=_generator(self.seed, index, _EVAL_NOISE))
            out = [model(z[i:i + chunk].to(device)).float().cpu() for i in range(0, n, chunk)]
        finally:
            model.train(was)
        return (torch.cat(out) + 1) / 2

    def evaluate(self, model: nn.Module, data: Any, ctx: StepContext) -> dict:
        fake01 = self.sample(model, self.eval_samples, device=ctx.device)  # (N, C, H, W) in [0, 1]
        real = _images(data, "GANTask val_data")[: self.eval_samples]
        if not bool(torch.isfinite(fake01).all()):
            return {"loss": float("nan"), "finite_samples": 0.0}
        with ctx.autocast():
            dr = torch.cat([model.discriminate((real[i:i + 500] * 2 - 1).to(ctx.device)).float() for i in range(0, len(real), 500)])
            df = torch.cat([model.discriminate((fake01[i:i + 500] * 2 - 1).to(ctx.device)).float() for i in range(0, len(fake01), 500)])
        loss = 0.5 * (F.binary_cross_entropy_with_logits(dr, torch.ones_like(dr))
                      + F.binary_cross_entropy_with_logits(df, torch.zeros_like(df)))
        out = {"loss": float(loss), "d_real_acc": float((dr > 0).float().mean()), "d_fake_acc": float((df < 0).float().mean()),
               "g_loss": float(F.binary_cross_entropy_with_logits(df, torch.ones_like(df)))}
        if self.scorer is not None:
            out.update(self.scorer(fake01))
        return out
