"""Multilayer perceptron: Linear → [norm] → activation → [dropout], repeated, then a Linear head.

``MLPConfig(sizes=(784, 64, 64, 10))`` has three weight layers: two hidden Linears
(kind "mlp", each one repeated block) and the output Linear (kind "head").
The output is raw scores unless ``output_activation`` is set (the seed article's
binary classifier ends in a sigmoid; classifiers trained with cross-entropy
should leave it ``None`` and let the loss apply softmax).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from layerwise.models.base import ModelConfig
from layerwise.models.ops import Dropout
from layerwise.models.registry import register_family, register_preset
from layerwise.roles import mark_block, set_kind

# Name → module factory; shared with the CNN family.
ACTIVATIONS = {
    "relu": nn.ReLU,
    "relu6": nn.ReLU6,
    "leaky_relu": nn.LeakyReLU,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
}
OUTPUT_ACTIVATIONS = (*ACTIVATIONS, "softmax")
NORMS = ("layernorm", "batchnorm")


def make_activation(name: str) -> nn.Module:
    """An activation module from its name (one of ``ACTIVATIONS`` or "softmax")."""
    if name == "softmax":
        return nn.Softmax(dim=-1)
    return ACTIVATIONS[name]()


@dataclass
class MLPConfig(ModelConfig):
    """A fully connected network.

    sizes: widths from input to output, e.g. ``(784, 64, 64, 10)`` (at least two).
    activation: hidden activation, one of relu, relu6, leaky_relu, gelu, silu, tanh, sigmoid.
    output_activation: applied to the head's output, or ``None`` for raw scores.
    dropout: probability after each hidden activation (0 disables it).
    norm: ``None``, "layernorm" or "batchnorm", between each hidden Linear and its activation.
    bias: whether the Linears have biases.
    """

    family: ClassVar[str] = "mlp"

    sizes: tuple[int, ...] = (784, 64, 64, 10)
    activation: str = "relu"
    output_activation: str | None = None
    dropout: float = 0.0
    norm: str | None = None
    bias: bool = True

    def __post_init__(self) -> None:
        self.sizes = tuple(self.sizes)
        self.check(len(self.sizes) >= 2, "sizes", "at least two widths (input and output)")
        self.check(
            all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in self.sizes),
            "sizes",
            "positive integers",
        )
        self.check(self.activation in ACTIVATIONS, "activation", f"one of {', '.join(ACTIVATIONS)}")
        self.check(
            self.output_activation is None or self.output_activation in OUTPUT_ACTIVATIONS,
            "output_activation",
            f"null or one of {', '.join(OUTPUT_ACTIVATIONS)}",
        )
        self.check(
            isinstance(self.dropout, (int, float)) and 0.0 <= self.dropout < 1.0, "dropout", "a number in [0, 1)"
        )
        self.check(self.norm is None or self.norm in NORMS, "norm", f"null or one of {', '.join(NORMS)}")
        self.check(isinstance(self.bias, bool), "bias", "true or false")


class MLP(nn.Module):
    def __init__(self, config: MLPConfig):
        super().__init__()
        self.config = config
        sizes = config.sizes
        self.hidden = nn.ModuleList()
        for d_in, d_out in zip(sizes[:-2], sizes[1:-1]):
            parts: OrderedDict[str, nn.Module] = OrderedDict()
            parts["linear"] = set_kind(nn.Linear(d_in, d_out, bias=config.bias), "mlp")
            if config.norm == "layernorm":
                parts["norm"] = set_kind(nn.LayerNorm(d_out), "norm")
            elif config.norm == "batchnorm":
                parts["norm"] = set_kind(nn.BatchNorm1d(d_out), "norm")
            parts["act"] = make_activation(config.activation)
            if config.dropout > 0:
                parts["dropout"] = Dropout(config.dropout)
            self.hidden.append(mark_block(nn.Sequential(parts)))
        self.head = set_kind(nn.Linear(sizes[-2], sizes[-1], bias=config.bias), "head")
        self.out_act = make_activation(config.output_activation) if config.output_activation else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: (B, sizes[0])
        for layer in self.hidden:
            x = layer(x)  # (B, width)
        return self.out_act(self.head(x))  # (B, sizes[-1])

    def example_inputs(self, batch_size: int = 1, seq_len: int | None = None) -> tuple[torch.Tensor]:
        """A random (batch_size, sizes[0]) float batch on the parameters' device; seq_len is ignored."""
        p = next(self.parameters())
        return (torch.randn(batch_size, self.config.sizes[0], device=p.device, dtype=p.dtype),)


def build_mlp(config: MLPConfig) -> MLP:
    return MLP(config)


register_family("mlp", MLPConfig, build_mlp)

register_preset(
    "seed-mlp",
    "mlp",
    description=(
        "The seed article's Keras binary classifier: Dense(10, input_shape=(10,), "
        "relu) → Dense(20, relu) → Dense(1, sigmoid)"
    ),
    reference_params=351,
    reference_source=(
        "Keras count_params() of the seed article's Sequential model (110 + 220 + "
        "21); checked in tests/models/test_keras_parity.py"
    ),
    sizes=(10, 10, 20, 1),
    activation="relu",
    output_activation="sigmoid",
)
register_preset(
    "mlp-784-64-64-10",
    "mlp",
    description="MNIST MLP from the seed article: 784 → 64 → 64 → 10 with ReLU (logits out)",
    reference_params=55_050,
    reference_source=(
        "Keras count_params() of Dense(64, input_shape=(784,)) → Dense(64) → Dense(10): 50,240 + 4,160 + 650"
    ),
    sizes=(784, 64, 64, 10),
    activation="relu",
)
register_preset(
    "mlp-digits",
    "mlp",
    description="MLP for scikit-learn's 8×8 digits: 64 → 128 → 64 → 10 with ReLU (logits out)",
    sizes=(64, 128, 64, 10),
    activation="relu",
)
