"""Generative adversarial networks: a generator and a discriminator in one module.

``forward(z)`` runs the generator: noise (B, latent_dim) → images (B, C, H, W) in
[-1, 1] (tanh). ``discriminate(x)`` runs the discriminator: images → real/fake logits
(B, 1), no sigmoid (train with ``BCEWithLogitsLoss``). Both networks are submodules,
so the analysis reports both; the forward data flow (and so ``weight_depth``) is the
generator's.

Architectures (``arch``):
- "mlp": the seed article's GAN. Generator Linear stack → Linear to C·H·W → tanh;
  discriminator flattens the image → Linear stack → Linear to 1.
- "dcgan" (Radford et al. 2016): the generator projects z with a Linear to
  ``g_hidden[0]`` maps of size image_size / 2**len(g_hidden), then each
  ConvTranspose2d(kernel 4, stride 2, padding 1) doubles the size, ending at
  ``channels``; the discriminator's Conv2d(kernel 4, stride 2, padding 1) layers
  halve it, then a Linear gives the logit. 28×28 (MNIST) is 7 → 14 → 28.

Roles: the layer that produces each network's output (the generator's image layer,
the discriminator's logit layer) is kind "head"; hidden Linears are "mlp", convolutions
"conv", batch norms "norm". The generator and the discriminator are the two blocks.
With ``batch_norm`` (DCGAN's rule) every hidden generator layer and every discriminator
layer but the first is followed by BatchNorm, and those layers have no bias (the
norm's shift replaces it).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from layerwise.errors import InputShapeError
from layerwise.models.base import ModelConfig
from layerwise.models.mlp import ACTIVATIONS
from layerwise.models.registry import register_family, register_preset
from layerwise.roles import mark_block, set_kind

ARCHS = ("mlp", "dcgan")


def _activation(name: str, slope: float) -> nn.Module:
    return nn.LeakyReLU(slope) if name == "leaky_relu" else ACTIVATIONS[name]()


@dataclass
class GANConfig(ModelConfig):
    """A generator/discriminator pair for square images.

    arch: "mlp" or "dcgan".
    image_size: side of the square images (8 for scikit-learn digits, 28 for MNIST);
        for "dcgan" divisible by 2**len(g_hidden) and by 2**len(d_hidden).
    channels: image channels (1 for grey).
    latent_dim: size of the noise vector z.
    g_hidden: generator widths: Linear widths ("mlp") or feature-map channels from the
        projected noise to the last hidden map ("dcgan", one ConvTranspose2d each).
    d_hidden: discriminator widths: Linear widths ("mlp") or Conv2d channels ("dcgan").
    g_activation, d_activation: one of relu, relu6, leaky_relu, gelu, silu, tanh, sigmoid.
    leaky_slope: negative slope when an activation is leaky_relu (0.2 as in DCGAN).
    batch_norm: BatchNorm after hidden generator layers and discriminator layers but the first.
    """

    family: ClassVar[str] = "gan"

    arch: str = "mlp"
    image_size: int = 28
    channels: int = 1
    latent_dim: int = 100
    g_hidden: tuple[int, ...] = (128, 128, 128)
    d_hidden: tuple[int, ...] = (128, 128)
    g_activation: str = "relu"
    d_activation: str = "leaky_relu"
    leaky_slope: float = 0.2
    batch_norm: bool = False

    def __post_init__(self) -> None:
        self.g_hidden = tuple(self.g_hidden)
        self.d_hidden = tuple(self.d_hidden)
        self.check(self.arch in ARCHS, "arch", f"one of {', '.join(ARCHS)}")
        for name in ("image_size", "channels", "latent_dim"):
            v = getattr(self, name)
            self.check(isinstance(v, int) and not isinstance(v, bool) and v > 0, name, "a positive integer")
        for name in ("g_hidden", "d_hidden"):
            v = getattr(self, name)
            self.check(
                len(v) >= 1 and all(isinstance(w, int) and not isinstance(w, bool) and w > 0 for w in v),
                name,
                "one or more positive integers",
            )
        if self.arch == "dcgan":
            for name in ("g_hidden", "d_hidden"):
                factor = 2 ** len(getattr(self, name))
                self.check(
                    self.image_size % factor == 0,
                    "image_size",
                    f"a multiple of {factor} for dcgan with {len(getattr(self, name))} stride-2 layers in {name}",
                )
        for name in ("g_activation", "d_activation"):
            self.check(getattr(self, name) in ACTIVATIONS, name, f"one of {', '.join(ACTIVATIONS)}")
        self.check(
            isinstance(self.leaky_slope, (int, float)) and 0.0 <= self.leaky_slope < 1.0,
            "leaky_slope",
            "a number in [0, 1)",
        )
        self.check(isinstance(self.batch_norm, bool), "batch_norm", "true or false")

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return (self.channels, self.image_size, self.image_size)


def mlp_generator(c: GANConfig) -> nn.Sequential:
    parts: OrderedDict[str, nn.Module] = OrderedDict()
    widths = (c.latent_dim, *c.g_hidden)
    for i, (d_in, d_out) in enumerate(zip(widths, widths[1:]), start=1):
        parts[f"fc{i}"] = set_kind(nn.Linear(d_in, d_out, bias=not c.batch_norm), "mlp")
        if c.batch_norm:
            parts[f"bn{i}"] = set_kind(nn.BatchNorm1d(d_out), "norm")
        parts[f"act{i}"] = _activation(c.g_activation, c.leaky_slope)
    parts["out"] = set_kind(nn.Linear(widths[-1], math.prod(c.image_shape)), "head")
    parts["tanh"] = nn.Tanh()
    parts["unflatten"] = nn.Unflatten(1, c.image_shape)
    return nn.Sequential(parts)


def mlp_discriminator(c: GANConfig) -> nn.Sequential:
    parts: OrderedDict[str, nn.Module] = OrderedDict(flatten=nn.Flatten())
    widths = (math.prod(c.image_shape), *c.d_hidden)
    for i, (d_in, d_out) in enumerate(zip(widths, widths[1:]), start=1):
        norm = c.batch_norm and i > 1
        parts[f"fc{i}"] = set_kind(nn.Linear(d_in, d_out, bias=not norm), "mlp")
        if norm:
            parts[f"bn{i}"] = set_kind(nn.BatchNorm1d(d_out), "norm")
        parts[f"act{i}"] = _activation(c.d_activation, c.leaky_slope)
    parts["out"] = set_kind(nn.Linear(widths[-1], 1), "head")
    return nn.Sequential(parts)


def dcgan_generator(c: GANConfig) -> nn.Sequential:
    start = c.image_size // 2 ** len(c.g_hidden)
    parts: OrderedDict[str, nn.Module] = OrderedDict()
    parts["project"] = set_kind(nn.Linear(c.latent_dim, c.g_hidden[0] * start * start, bias=not c.batch_norm), "mlp")
    parts["unflatten"] = nn.Unflatten(1, (c.g_hidden[0], start, start))
    if c.batch_norm:
        parts["bn0"] = set_kind(nn.BatchNorm2d(c.g_hidden[0]), "norm")
    parts["act0"] = _activation(c.g_activation, c.leaky_slope)
    maps = (*c.g_hidden, c.channels)
    for i, (c_in, c_out) in enumerate(zip(maps, maps[1:]), start=1):
        last = i == len(c.g_hidden)
        norm = c.batch_norm and not last
        # kernel 4, stride 2, padding 1: out = (in − 1)·2 − 2 + 4 = 2·in exactly
        conv = nn.ConvTranspose2d(c_in, c_out, kernel_size=4, stride=2, padding=1, bias=not norm)
        if last:
            parts["out"] = set_kind(conv, "head")
            parts["tanh"] = nn.Tanh()
        else:
            parts[f"deconv{i}"] = set_kind(conv, "conv")
            if norm:
                parts[f"bn{i}"] = set_kind(nn.BatchNorm2d(c_out), "norm")
            parts[f"act{i}"] = _activation(c.g_activation, c.leaky_slope)
    return nn.Sequential(parts)


def dcgan_discriminator(c: GANConfig) -> nn.Sequential:
    parts: OrderedDict[str, nn.Module] = OrderedDict()
    maps = (c.channels, *c.d_hidden)
    for i, (c_in, c_out) in enumerate(zip(maps, maps[1:]), start=1):
        norm = c.batch_norm and i > 1
        # kernel 4, stride 2, padding 1: out = (in + 2 − 4) // 2 + 1 = in / 2 for even in
        parts[f"conv{i}"] = set_kind(nn.Conv2d(c_in, c_out, kernel_size=4, stride=2, padding=1, bias=not norm), "conv")
        if norm:
            parts[f"bn{i}"] = set_kind(nn.BatchNorm2d(c_out), "norm")
        parts[f"act{i}"] = _activation(c.d_activation, c.leaky_slope)
    end = c.image_size // 2 ** len(c.d_hidden)
    parts["flatten"] = nn.Flatten()
    parts["out"] = set_kind(nn.Linear(c.d_hidden[-1] * end * end, 1), "head")
    return nn.Sequential(parts)


class GAN(nn.Module):
    def __init__(self, config: GANConfig):
        super().__init__()
        self.config = config
        if config.arch == "mlp":
            self.generator = mark_block(mlp_generator(config))
            self.discriminator = mark_block(mlp_discriminator(config))
        else:
            self.generator = mark_block(dcgan_generator(config))
            self.discriminator = mark_block(dcgan_discriminator(config))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """Generate: z (B, latent_dim) → images (B, C, H, W) in [-1, 1]."""
        if z.dim() != 2 or z.size(1) != self.config.latent_dim:
            raise InputShapeError(
                f"gan.generator: z has shape {tuple(z.shape)}, expected (batch, {self.config.latent_dim})"
            )
        return self.generator(z)  # (B, C, H, W)

    def discriminate(self, x: torch.Tensor) -> torch.Tensor:
        """Score images: x (B, C, H, W), or flattened (B, C·H·W) → real/fake logits (B, 1)."""
        shape = self.config.image_shape
        if x.dim() == 2 and x.size(1) == math.prod(shape):
            x = x.view(x.size(0), *shape)  # (B, C, H, W)
        if x.dim() != 4 or tuple(x.shape[1:]) != shape:
            raise InputShapeError(
                f"gan.discriminator: x has shape {tuple(x.shape)}, expected (batch, {', '.join(map(str, shape))}) "
                f"or (batch, {math.prod(shape)})"
            )
        return self.discriminator(x)  # (B, 1)

    def analysis_forward(self, z: torch.Tensor) -> torch.Tensor:
        """What the analysis traces: the generator's training step, z → G → D → logits (B, 1),
        so both networks get shapes and FLOPs (the forward alone generates)."""
        return self.discriminate(self(z))  # (B, 1)

    def example_inputs(self, batch_size: int = 1, seq_len: int | None = None) -> tuple[torch.Tensor]:
        """(z,): standard normal noise (batch_size, latent_dim) on the parameters' device; seq_len is ignored."""
        p = next(self.parameters())
        return (torch.randn(batch_size, self.config.latent_dim, device=p.device, dtype=p.dtype),)


def build_gan(config: GANConfig) -> GAN:
    return GAN(config)


register_family("gan", GANConfig, build_gan)

register_preset(
    "gan-mlp-mnist",
    "gan",
    description=(
        "The seed article's GAN: generator Dense(128, relu, in 100) ×3 → Dense(784, tanh); "
        "discriminator Dense(128, relu, in 784) ×2 → Dense(1) (logit; the seed's sigmoid moves into the loss)"
    ),
    reference_params=264_209,
    reference_source=(
        "Keras count_params() of the seed program's two Sequential models: generator 147,088 "
        "(12,928 + 16,512 + 16,512 + 101,136), discriminator 117,121 (100,480 + 16,512 + 129); "
        "checked in tests/models/test_gan.py"
    ),
    arch="mlp",
    image_size=28,
    channels=1,
    latent_dim=100,
    g_hidden=(128, 128, 128),
    d_hidden=(128, 128),
    g_activation="relu",
    d_activation="relu",
)
register_preset(
    "gan-mlp-digits",
    "gan",
    description=(
        "MLP GAN for scikit-learn's 8×8 digits: z 16 → 64 → 64 → 64 pixels; "
        "discriminator 64 → 64 → 32 → 1 (LeakyReLU 0.2)"
    ),
    arch="mlp",
    image_size=8,
    channels=1,
    latent_dim=16,
    g_hidden=(64, 64),
    d_hidden=(64, 32),
    g_activation="relu",
    d_activation="leaky_relu",
)
register_preset(
    "dcgan-mnist",
    "gan",
    description=(
        "DCGAN for 28×28 MNIST: z 100 → Linear → 128×7×7 → ConvTranspose 64×14×14 → ConvTranspose 1×28×28 (tanh); "
        "discriminator Conv 64×14×14 → Conv 128×7×7 → Linear → 1; BatchNorm, ReLU in G, LeakyReLU 0.2 in D"
    ),
    arch="dcgan",
    image_size=28,
    channels=1,
    latent_dim=100,
    g_hidden=(128, 64),
    d_hidden=(64, 128),
    g_activation="relu",
    d_activation="leaky_relu",
    batch_norm=True,
)
register_preset(
    "dcgan-digits",
    "gan",
    description=(
        "DCGAN for scikit-learn's 8×8 digits: z 32 → Linear → 128×2×2 → ConvTranspose 64×4×4 → ConvTranspose 1×8×8 (tanh); "
        "discriminator Conv 64×4×4 → Conv 128×2×2 → Linear → 1; BatchNorm, ReLU in G, LeakyReLU 0.2 in D"
    ),
    arch="dcgan",
    image_size=8,
    channels=1,
    latent_dim=32,
    g_hidden=(128, 64),
    d_hidden=(64, 128),
    g_activation="relu",
    d_activation="leaky_relu",
    batch_norm=True,
)
