"""Multilayer perceptron: Linear → [norm] → activation → [dropout], repeated, then a Linear head.

With ``residual`` every hidden layer whose input and output widths are equal adds its
input to its output, ``x + f(x)`` (He et al. 2016, "Deep Residual Learning"), so the
gradient reaches early layers through the identity. ``init`` picks the weight
initialisation: PyTorch's default, Xavier/Glorot (Glorot & Bengio 2010) or Kaiming/He
(He et al. 2015).

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
# "default": what nn.Linear does (weights and biases U(±1/sqrt(fan_in)), i.e. kaiming_uniform
# with a=sqrt(5)); "xavier": Glorot & Bengio 2010, U(±sqrt(6/(fan_in + fan_out))), zero biases;
# "kaiming": He et al. 2015, N(0, 2/fan_in) (the ReLU gain), zero biases.
INITS = ("default", "xavier", "kaiming")


def init_weights(model: nn.Module, init: str) -> None:
    """Re-initialise every Linear and Conv of ``model`` by ``init`` (one of ``INITS``;
    "default" leaves the modules' own initialisation)."""
    if init == "default":
        return
    for m in model.modules():
        if isinstance(m, (nn.Linear, nn.modules.conv._ConvNd)):
            if init == "xavier":
                nn.init.xavier_uniform_(m.weight)
            else:
                nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)


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
    residual: each hidden layer with equal input and output widths computes ``x + f(x)``
        (an identity shortcut around Linear → [norm] → activation → [dropout]); needs at
        least one such layer.
    init: weight initialisation, "default" (PyTorch's), "xavier" or "kaiming" (see ``INITS``).
    """

    family: ClassVar[str] = "mlp"

    sizes: tuple[int, ...] = (784, 64, 64, 10)
    activation: str = "relu"
    output_activation: str | None = None
    dropout: float = 0.0
    norm: str | None = None
    bias: bool = True
    residual: bool = False
    init: str = "default"

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
        self.check(isinstance(self.residual, bool), "residual", "true or false")
        if self.residual:
            widths = self.sizes[:-1]
            self.check(
                any(a == b for a, b in zip(widths[:-1], widths[1:])),
                "residual",
                "false unless some hidden layer has equal input and output widths (an identity shortcut "
                f"needs them; sizes are {list(self.sizes)})",
            )
        self.check(self.init in INITS, "init", f"one of {', '.join(INITS)}")


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
        # which hidden layers add their input (equal widths only)
        self.shortcut = [config.residual and a == b for a, b in zip(sizes[:-2], sizes[1:-1])]
        init_weights(self, config.init)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: (B, sizes[0])
        for layer, skip in zip(self.hidden, self.shortcut):
            x = x + layer(x) if skip else layer(x)  # (B, width)
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
