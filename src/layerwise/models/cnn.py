"""Convolutional networks: plain conv stacks, VGG, ResNet and MobileNet-v1, from one config.

``CNNConfig.arch`` picks the layout:

- ``"plain"``: a Keras-like list of layer specs (``layers``), e.g. the seed MNIST net
  ``("conv:32:k3", "maxpool:2", "conv:64:k3", "maxpool:2", "flatten", "dense:64")``.
- ``"vgg"``: VGG-11/13/16/19 (Simonyan & Zisserman 2014, Table 1), optional BatchNorm.
- ``"resnet"``: ResNet-18/34/50/101/152 in torchvision's layout (stride on the 3×3 conv
  of a bottleneck, "ResNet v1.5"), so the counts equal torchvision's published ones.
- ``"mobilenet_v1"``: Howard et al. 2017 (arXiv:1704.04861), Table 1, width multiplier α.

``conv_type`` rebuilds the same network with other convolutions, for every K×K conv
with K > 1 except the network's first (stem) conv:

- ``"standard"``: K×K conv C_in→C_out, K²·C_in·C_out (+C_out) parameters (kind "conv");
- ``"depthwise_separable"``: depthwise K×K conv (groups = C_in, kind "depthwise") →
  [BN] → activation → pointwise 1×1 conv C_in→C_out (kind "pointwise"):
  K²·C_in + C_in·C_out (+biases);
- ``"grouped"``: K×K conv with ``groups`` groups, K²·C_in·C_out/groups (+C_out) (kind "grouped").

The stem stays a full conv because it sees only the image's few channels, where a
depthwise conv would hold a handful of weights; MobileNet-v1 does the same (Table 1).
1×1 convs (ResNet bottlenecks, shortcuts) are already channel mixers and stay standard.

``residual`` (plain only) adds an identity shortcut around every conv unit whose input
and output feature maps have the same shape, ``x + f(x)`` with f = conv → [BN] →
activation (He et al. 2016); ``init`` re-initialises every conv and Linear ("xavier",
"kaiming", see :data:`layerwise.models.mlp.INITS`) or keeps the family's own ("default":
He et al.'s fan-out normal for convs, as torchvision does, PyTorch's default for Linears).

Every model returns raw class scores (logits); apply softmax in the loss.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from layerwise.errors import ConfigError
from layerwise.models.base import ModelConfig
from layerwise.models.mlp import ACTIVATIONS, INITS, init_weights, make_activation
from layerwise.models.ops import Dropout
from layerwise.models.registry import register_family, register_preset
from layerwise.roles import mark_block, set_kind

ARCHS = ("plain", "vgg", "resnet", "mobilenet_v1")
CONV_TYPES = ("standard", "depthwise_separable", "grouped")
RESNET_STEMS = ("imagenet", "cifar")
RESNET_BLOCKS = ("basic", "bottleneck")

# Convs per stage, Simonyan & Zisserman 2014, Table 1 (configurations A, B, D, E).
VGG_STAGES = {11: (1, 1, 2, 2, 2), 13: (2, 2, 2, 2, 2), 16: (2, 2, 3, 3, 3), 19: (2, 2, 4, 4, 4)}
VGG_WIDTHS = (64, 128, 256, 512, 512)
# Blocks per stage, He et al. 2015, Table 1.
RESNET_LAYOUTS = {
    18: ("basic", (2, 2, 2, 2)),
    34: ("basic", (3, 4, 6, 3)),
    50: ("bottleneck", (3, 4, 6, 3)),
    101: ("bottleneck", (3, 4, 23, 3)),
    152: ("bottleneck", (3, 8, 36, 3)),
}
RESNET_WIDTHS = (64, 128, 256, 512)
BOTTLENECK_EXPANSION = 4
# MobileNet-v1 body, Howard et al. 2017, Table 1: a 3×3 stride-2 stem with 32 channels,
# then 13 depthwise-separable blocks as (output channels, stride).
MOBILENET_V1_STEM = 32
MOBILENET_V1_BLOCKS = (
    (64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2),
    (512, 1), (512, 1), (512, 1), (512, 1), (512, 1),
    (1024, 2), (1024, 1),
)  # fmt: skip

# ---------------------------------------------------------------- plain layer specs

_CONV_KEYS = {"type", "out", "kernel", "stride", "padding", "bias", "conv_type", "groups"}
_SPEC_KEYS = {
    "conv": _CONV_KEYS,
    "maxpool": {"type", "kernel", "stride"},
    "avgpool": {"type", "kernel", "stride"},
    "gap": {"type"},
    "flatten": {"type"},
    "dense": {"type", "out"},
    "dropout": {"type", "p"},
}
SPEC_HELP = (
    "'conv:OUT[:kK][:sS][:pP|:same][:gG][:nobias][:CONV_TYPE]', 'maxpool:K[:sS]', 'avgpool:K[:sS]', "
    "'gap', 'flatten', 'dense:N', 'dropout:P' or the same as a dict with a 'type' key"
)


def parse_layer_spec(spec: str | dict[str, Any]) -> dict[str, Any]:
    """One plain-CNN layer spec as a dict with every key filled in.

    ``"conv:32:k3"`` → ``{"type": "conv", "out": 32, "kernel": 3, "stride": 1, "padding": 0,
    "bias": None, "conv_type": None, "groups": None}`` (None: use the config's value).
    Raises ValueError with a short reason; the config turns it into a ConfigError.
    """
    if isinstance(spec, dict):
        d = dict(spec)
        kind = d.get("type")
        if kind not in _SPEC_KEYS:
            raise ValueError(f"unknown layer type {kind!r}")
        unknown = set(d) - _SPEC_KEYS[kind]
        if unknown:
            raise ValueError(f"unknown key(s) {', '.join(sorted(unknown))} for a {kind} layer")
    elif isinstance(spec, str):
        kind, *args = spec.strip().split(":")
        if kind not in _SPEC_KEYS:
            raise ValueError(f"unknown layer type {kind!r}")
        d = {"type": kind}
        try:
            if kind == "conv":
                if not args:
                    raise ValueError("a conv needs its output channels, e.g. 'conv:32:k3'")
                d["out"] = int(args[0])
                for a in args[1:]:
                    if a == "same":
                        d["padding"] = "same"
                    elif a == "nobias":
                        d["bias"] = False
                    elif a in CONV_TYPES:
                        d["conv_type"] = a
                    elif a[:1] in ("k", "s", "p", "g") and a[1:].isdigit():
                        d[{"k": "kernel", "s": "stride", "p": "padding", "g": "groups"}[a[0]]] = int(a[1:])
                    else:
                        raise ValueError(f"unknown conv option {a!r}")
            elif kind in ("maxpool", "avgpool"):
                if not args:
                    raise ValueError(f"a {kind} needs its window, e.g. '{kind}:2'")
                d["kernel"] = int(args[0])
                for a in args[1:]:
                    if a[:1] == "s" and a[1:].isdigit():
                        d["stride"] = int(a[1:])
                    else:
                        raise ValueError(f"unknown {kind} option {a!r}")
            elif kind == "dense":
                if len(args) != 1:
                    raise ValueError("a dense layer needs exactly its width, e.g. 'dense:64'")
                d["out"] = int(args[0])
            elif kind == "dropout":
                if len(args) != 1:
                    raise ValueError("a dropout needs exactly its probability, e.g. 'dropout:0.5'")
                d["p"] = float(args[0])
            elif args:
                raise ValueError(f"'{kind}' takes no arguments")
        except ValueError as e:
            if "invalid literal" in str(e) or "could not convert" in str(e):
                raise ValueError(f"a number was expected in {spec!r}") from None
            raise
    else:
        raise ValueError(f"a layer spec is a string or a dict, got {type(spec).__name__}")

    kind = d["type"]
    if kind == "conv":
        d.setdefault("kernel", 3)
        d.setdefault("stride", 1)
        d.setdefault("padding", 0)
        for k in ("bias", "conv_type", "groups"):
            d.setdefault(k, None)
        if not (isinstance(d.get("out"), int) and d["out"] > 0):
            raise ValueError("conv 'out' must be a positive integer")
        for k in ("kernel", "stride"):
            if not (isinstance(d[k], int) and d[k] > 0):
                raise ValueError(f"conv '{k}' must be a positive integer")
        if d["padding"] == "same":
            if d["stride"] != 1:
                raise ValueError("'same' padding needs stride 1 (as in torch.nn.Conv2d)")
        elif not (isinstance(d["padding"], int) and d["padding"] >= 0):
            raise ValueError("conv 'padding' must be a non-negative integer or 'same'")
        if d["conv_type"] is not None and d["conv_type"] not in CONV_TYPES:
            raise ValueError(f"conv 'conv_type' must be one of {', '.join(CONV_TYPES)}")
        if d["groups"] is not None and not (isinstance(d["groups"], int) and d["groups"] > 0):
            raise ValueError("conv 'groups' must be a positive integer")
        if d["bias"] is not None and not isinstance(d["bias"], bool):
            raise ValueError("conv 'bias' must be true or false")
    elif kind in ("maxpool", "avgpool"):
        d.setdefault("stride", None)
        if d["stride"] is None:
            d["stride"] = d.get("kernel")
        for k in ("kernel", "stride"):
            if not (isinstance(d.get(k), int) and d[k] > 0):
                raise ValueError(f"{kind} '{k}' must be a positive integer")
    elif kind == "dense":
        if not (isinstance(d.get("out"), int) and d["out"] > 0):
            raise ValueError("dense 'out' must be a positive integer")
    elif kind == "dropout":
        if not (isinstance(d.get("p"), (int, float)) and 0 <= d["p"] < 1):
            raise ValueError("dropout 'p' must be in [0, 1)")
    return d


def _conv_out(size: int, kernel: int, stride: int, padding: int | str) -> int:
    if padding == "same":
        return size
    return (size + 2 * padding - kernel) // stride + 1


# ---------------------------------------------------------------- config


@dataclass
class CNNConfig(ModelConfig):
    """A convolutional image classifier.

    arch: "plain", "vgg", "resnet" or "mobilenet_v1".
    layers: plain only: layer specs (strings or dicts, see :func:`parse_layer_spec`). Each
        conv is followed by [BatchNorm] and the activation, each dense by the activation
        (kind "mlp"); the classifier head Linear(→num_classes) is added after the last spec,
        with a flatten first if the specs end on a feature map.
    depth: vgg: 11, 13, 16 or 19; resnet: 18, 34, 50, 101 or 152, or 0 with ``blocks``.
    blocks, block: resnet with a custom layout: residual blocks per stage and "basic" or
        "bottleneck" (``depth`` must then be 0 or the implied weight depth).
    stem: resnet: "imagenet" (7×7 stride 2 conv + 3×3 max pool) or "cifar" (3×3 stride 1 conv).
    width_multiplier: scales every conv width of vgg/resnet/mobilenet_v1 (MobileNet's α).
    width_per_group: resnet bottleneck 3×3 width per group (64 standard; 4 with 32 groups
        is ResNeXt-50 32×4d; 128 is Wide ResNet-50-2), as in torchvision.
    conv_type: "standard", "depthwise_separable" or "grouped"; None means the arch's own
        (depthwise_separable for mobilenet_v1, standard otherwise).
    groups: groups of every grouped conv (conv_type "grouped").
    batchnorm: BatchNorm after each conv; None means the arch's own (on for resnet and
        mobilenet_v1, off for plain and vgg).
    conv_bias: biases on convs; None means the arch's own (on for plain and vgg, off for
        resnet and mobilenet_v1 whose convs feed a BatchNorm).
    activation: one of relu, relu6, leaky_relu, gelu, silu, tanh, sigmoid.
    dropout: before the head (and after each hidden Linear of VGG's classifier); 0 disables it.
    classifier_pool, classifier_width: vgg: the adaptive pool's output side (7) and the
        width of the two hidden Linears (4096).
    in_channels, num_classes, image_size: input channels, classes, input height = width.
    residual: plain only: an identity shortcut around each conv unit whose input and output
        shapes are equal (needs at least one such conv).
    init: "default" (the family's own), "xavier" or "kaiming" for every conv and Linear.
    """

    family: ClassVar[str] = "cnn"

    arch: str = "plain"
    layers: tuple = ()
    depth: int = 0
    blocks: tuple[int, ...] = ()
    block: str | None = None
    stem: str = "imagenet"
    width_multiplier: float = 1.0
    width_per_group: int = 64
    conv_type: str | None = None
    groups: int = 1
    batchnorm: bool | None = None
    conv_bias: bool | None = None
    activation: str = "relu"
    dropout: float = 0.0
    classifier_pool: int = 7
    classifier_width: int = 4096
    in_channels: int = 3
    num_classes: int = 1000
    image_size: int = 224
    residual: bool = False
    init: str = "default"

    def __post_init__(self) -> None:
        self.layers = tuple(self.layers)
        self.blocks = tuple(self.blocks)
        self.check(self.arch in ARCHS, "arch", f"one of {', '.join(ARCHS)}")
        for name in ("in_channels", "num_classes", "image_size", "groups", "width_per_group",
                     "classifier_pool", "classifier_width"):  # fmt: skip
            v = getattr(self, name)
            self.check(isinstance(v, int) and not isinstance(v, bool) and v > 0, name, "a positive integer")
        self.check(
            isinstance(self.width_multiplier, (int, float)) and self.width_multiplier > 0,
            "width_multiplier",
            "a positive number",
        )
        self.check(self.conv_type is None or self.conv_type in CONV_TYPES, "conv_type",
                   f"null or one of {', '.join(CONV_TYPES)}")  # fmt: skip
        self.check(
            self.conv_type_resolved == "grouped" or self.groups == 1 or self.arch == "plain",
            "groups",
            "1 unless conv_type is 'grouped'",
        )
        self.check(self.conv_type_resolved != "grouped" or self.groups > 1, "groups", "> 1 for conv_type 'grouped'")
        for name in ("batchnorm", "conv_bias"):
            self.check(
                getattr(self, name) is None or isinstance(getattr(self, name), bool), name, "null, true or false"
            )
        self.check(self.activation in ACTIVATIONS, "activation", f"one of {', '.join(ACTIVATIONS)}")
        self.check(isinstance(self.residual, bool), "residual", "true or false")
        self.check(not self.residual or self.arch == "plain", "residual",
                   "false unless arch is 'plain' (ResNet has its own shortcuts)")
        self.check(self.init in INITS, "init", f"one of {', '.join(INITS)}")
        self.check(
            isinstance(self.dropout, (int, float)) and 0.0 <= self.dropout < 1.0, "dropout", "a number in [0, 1)"
        )
        self.check(not self.layers or self.arch == "plain", "layers", "empty unless arch is 'plain'")
        self.check(not self.blocks or self.arch == "resnet", "blocks", "empty unless arch is 'resnet'")
        self.check(self.block is None or self.arch == "resnet", "block", "null unless arch is 'resnet'")
        self.check(self.stem in RESNET_STEMS, "stem", f"one of {', '.join(RESNET_STEMS)}")
        if self.arch == "plain":
            self.check(self.depth == 0, "depth", "0 for arch 'plain' (the layers list sets it)")
            self.check(len(self.layers) > 0, "layers", f"a non-empty list of layer specs: {SPEC_HELP}")
            plan, _ = self._plain_plan()  # validates every spec and the feature-map sizes
            if self.residual:
                self.check(any(d["type"] == "conv" and _next_shape(d, shape) == shape for d, shape in plan), "residual",
                           "false unless some conv keeps its input's shape (an identity shortcut needs it)")
        elif self.arch == "vgg":
            self.check(self.depth in VGG_STAGES, "depth", f"one of {', '.join(map(str, VGG_STAGES))} for arch 'vgg'")
            self.check(self.image_size >= 32, "image_size", ">= 32 for VGG's five 2×2 max pools")
        elif self.arch == "resnet":
            if not self.blocks:
                self.check(self.block is None, "block", "null unless blocks is given (depth sets it)")
                self.check(
                    self.depth in RESNET_LAYOUTS,
                    "depth",
                    f"one of {', '.join(map(str, RESNET_LAYOUTS))} for arch 'resnet' (or 0 with blocks and block)",
                )
            else:
                self.check(
                    all(isinstance(b, int) and not isinstance(b, bool) and b > 0 for b in self.blocks),
                    "blocks",
                    "positive integers (residual blocks per stage)",
                )
                self.check(self.block in RESNET_BLOCKS, "block", f"one of {', '.join(RESNET_BLOCKS)} with blocks")
                self.check(
                    self.depth in (0, self.resnet_layout()[2]),
                    "depth",
                    f"0 or {self.resnet_layout()[2]} (the weight depth implied by blocks and block)",
                )
        else:
            self.check(self.depth == 0, "depth", "0 for arch 'mobilenet_v1'")

    # ---- derived values (arch defaults), used by the builders
    @property
    def conv_type_resolved(self) -> str:
        if self.conv_type is not None:
            return self.conv_type
        return "depthwise_separable" if self.arch == "mobilenet_v1" else "standard"

    @property
    def batchnorm_resolved(self) -> bool:
        if self.batchnorm is not None:
            return self.batchnorm
        return self.arch in ("resnet", "mobilenet_v1")

    @property
    def conv_bias_resolved(self) -> bool:
        if self.conv_bias is not None:
            return self.conv_bias
        return self.arch in ("plain", "vgg")

    def scaled(self, channels: int) -> int:
        """A conv width times the width multiplier (truncated, as Keras' MobileNet does)."""
        return max(1, int(round(channels * self.width_multiplier, 6)))

    def resnet_layout(self) -> tuple[str, tuple[int, ...], int]:
        """(block type, blocks per stage, weight depth) of a resnet config."""
        if self.blocks:
            block, blocks = self.block, self.blocks
        else:
            block, blocks = RESNET_LAYOUTS[self.depth]
        per_block = 2 if block == "basic" else 3
        return block, tuple(blocks), per_block * sum(blocks) + 2

    def _plain_plan(self) -> tuple[list[tuple[dict[str, Any], tuple[int, ...]]], tuple[int, ...]]:
        """Each parsed spec with the shape it receives ((C, H, W) or (features,)), and the final shape."""
        plan = []
        shape: tuple[int, ...] = (self.in_channels, self.image_size, self.image_size)
        for i, spec in enumerate(self.layers):
            try:
                d = parse_layer_spec(spec)
            except ValueError as e:
                raise ConfigError(f"CNNConfig.layers[{i}]: expected {SPEC_HELP}; {e}, got {spec!r}") from None
            if len(shape) == 1 and d["type"] not in ("dense", "dropout"):
                raise ConfigError(
                    f"CNNConfig.layers[{i}]: expected only dense or dropout after flatten/gap/dense, got {spec!r}"
                )
            if d["type"] == "conv" and d["conv_type"] == "grouped" and (d["groups"] or self.groups) == 1:
                raise ConfigError(
                    f"CNNConfig.layers[{i}]: expected groups > 1 (':gG' or config "
                    f"groups) for a grouped conv, got {spec!r}"
                )
            plan.append((d, shape))
            new = _next_shape(d, shape)
            if len(new) == 3 and new[1] < 1:
                raise ConfigError(
                    f"CNNConfig.layers[{i}]: expected a layer that fits a {shape[1]}×{shape[2]} feature map "
                    f"(image_size {self.image_size}), got {spec!r} which leaves nothing"
                )
            shape = new
        return plan, shape


def _next_shape(d: dict[str, Any], shape: tuple[int, ...]) -> tuple[int, ...]:
    """The shape a parsed plain spec outputs for an input of ``shape`` ((C, H, W) or (features,))."""
    kind = d["type"]
    if kind == "conv":
        h = _conv_out(shape[1], d["kernel"], d["stride"], d["padding"])
        return (d["out"], h, h)
    if kind in ("maxpool", "avgpool"):
        h = _conv_out(shape[1], d["kernel"], d["stride"], 0)
        return (shape[0], h, h)
    if kind == "gap":
        return (shape[0],)
    if kind == "flatten":
        return (shape[0] * shape[1] * shape[2],)
    if kind == "dense":
        return (d["out"],)
    return shape  # dropout


# ---------------------------------------------------------------- building blocks


def make_conv(
    cfg: CNNConfig,
    c_in: int,
    c_out: int,
    kernel: int,
    stride: int,
    padding: int | str,
    conv_type: str,
    groups: int,
    bias: bool,
) -> nn.Module:
    """A K×K conv C_in→C_out of the given type (the caller adds the norm and activation after it).

    depthwise_separable returns ``DepthwiseSeparableConv`` (depthwise → [BN] → act → pointwise).
    """
    if conv_type == "depthwise_separable" and kernel > 1:
        return DepthwiseSeparableConv(cfg, c_in, c_out, kernel, stride, padding, bias)
    if conv_type == "grouped" and kernel > 1:
        cfg.check(
            c_in % groups == 0 and c_out % groups == 0,
            "groups",
            f"a divisor of both channel counts of every grouped conv (fails for {c_in}→{c_out})",
        )
        return set_kind(nn.Conv2d(c_in, c_out, kernel, stride, padding, groups=groups, bias=bias), "grouped")
    return set_kind(nn.Conv2d(c_in, c_out, kernel, stride, padding, bias=bias), "conv")


class DepthwiseSeparableConv(nn.Sequential):
    """Depthwise K×K conv (one filter per channel) → [BatchNorm] → activation → pointwise 1×1 conv."""

    def __init__(self, cfg: CNNConfig, c_in: int, c_out: int, kernel: int, stride: int, padding, bias: bool):
        parts: OrderedDict[str, nn.Module] = OrderedDict()
        parts["depthwise"] = set_kind(
            nn.Conv2d(c_in, c_in, kernel, stride, padding, groups=c_in, bias=bias), "depthwise"
        )
        if cfg.batchnorm_resolved:
            parts["norm"] = _norm(cfg, c_in)
        parts["act"] = make_activation(cfg.activation)
        parts["pointwise"] = set_kind(nn.Conv2d(c_in, c_out, 1, bias=bias), "pointwise")
        super().__init__(parts)


def _norm(cfg: CNNConfig, channels: int) -> nn.Module:
    return set_kind(nn.BatchNorm2d(channels), "norm") if cfg.batchnorm_resolved else nn.Identity()


def _conv_unit(cfg: CNNConfig, c_in: int, c_out: int, kernel: int, stride: int, padding, conv_type: str,
               groups: int, bias: bool) -> list[nn.Module]:  # fmt: skip
    """conv → [BN] → activation, as a flat list of modules."""
    mods = [make_conv(cfg, c_in, c_out, kernel, stride, padding, conv_type, groups, bias)]
    if cfg.batchnorm_resolved:
        mods.append(_norm(cfg, c_out))
    mods.append(make_activation(cfg.activation))
    return mods


def _init_weights(model: nn.Module) -> None:
    # He et al. 2015 ("Delving deep into rectifiers") init for convs, as torchvision does;
    # or, with config.init, the chosen scheme for every conv and Linear.
    if model.config.init != "default":
        init_weights(model, model.config.init)
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        return
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


class ResidualUnit(nn.Sequential):
    """conv → [BN] → activation with an identity shortcut: ``x + f(x)`` (shapes equal)."""

    def __init__(self, *mods: nn.Module) -> None:
        super().__init__(*mods)
        mark_block(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + super().forward(x)  # (B, C, H, W)


class _ImageClassifier(nn.Module):
    config: CNNConfig

    def example_inputs(self, batch_size: int = 1, seq_len: int | None = None) -> tuple[torch.Tensor]:
        """A random (batch_size, in_channels, image_size, image_size) batch on the parameters' device."""
        p = next(self.parameters())
        c, s = self.config.in_channels, self.config.image_size
        return (torch.randn(batch_size, c, s, s, device=p.device, dtype=p.dtype),)


# ---------------------------------------------------------------- plain


class PlainCNN(_ImageClassifier):
    """The layer specs in order (``body``), then the head Linear."""

    def __init__(self, cfg: CNNConfig):
        super().__init__()
        self.config = cfg
        conv_type, bias = cfg.conv_type_resolved, cfg.conv_bias_resolved
        mods: list[nn.Module] = []
        first_conv = True
        plan, out_shape = cfg._plain_plan()
        for d, shape in plan:
            kind = d["type"]
            if kind == "conv":
                # The first conv is the stem: standard unless its spec says otherwise.
                ct = d["conv_type"] or ("standard" if first_conv else conv_type)
                g = d["groups"] or cfg.groups
                b = bias if d["bias"] is None else d["bias"]
                unit = _conv_unit(cfg, shape[0], d["out"], d["kernel"], d["stride"], d["padding"], ct, g, b)
                if cfg.residual and _next_shape(d, shape) == shape:
                    mods.append(ResidualUnit(*unit))
                else:
                    mods += unit
                first_conv = False
            elif kind == "maxpool":
                mods.append(nn.MaxPool2d(d["kernel"], d["stride"]))
            elif kind == "avgpool":
                mods.append(nn.AvgPool2d(d["kernel"], d["stride"]))
            elif kind == "gap":
                mods += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
            elif kind == "flatten":
                mods.append(nn.Flatten())
            elif kind == "dense":
                mods += [set_kind(nn.Linear(shape[0], d["out"]), "mlp"), make_activation(cfg.activation)]
            elif kind == "dropout":
                mods.append(Dropout(d["p"]))
        if len(out_shape) == 3:
            mods.append(nn.Flatten())
            features = out_shape[0] * out_shape[1] * out_shape[2]
        else:
            features = out_shape[0]
        if cfg.dropout > 0:
            mods.append(Dropout(cfg.dropout))
        self.body = nn.Sequential(*mods)
        self.head = set_kind(nn.Linear(features, cfg.num_classes), "head")
        _init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: (B, C, H, W)
        x = self.body(x)  # (B, features)
        return self.head(x)  # (B, num_classes)


# ---------------------------------------------------------------- VGG


class VGG(_ImageClassifier):
    """``features``: five stages (each a block: convs then a 2×2 max pool); ``classifier``:
    adaptive pool → two hidden Linears (kind "mlp"); ``head``: the last Linear."""

    def __init__(self, cfg: CNNConfig):
        super().__init__()
        self.config = cfg
        conv_type, bias = cfg.conv_type_resolved, cfg.conv_bias_resolved
        stages = []
        c_in, first = cfg.in_channels, True
        for n_convs, width in zip(VGG_STAGES[cfg.depth], VGG_WIDTHS):
            c_out = cfg.scaled(width)
            mods: list[nn.Module] = []
            for _ in range(n_convs):
                ct = "standard" if first else conv_type
                mods += _conv_unit(cfg, c_in, c_out, 3, 1, 1, ct, cfg.groups, bias)
                c_in, first = c_out, False
            mods.append(nn.MaxPool2d(2, 2))
            stages.append(mark_block(nn.Sequential(*mods)))
        self.features = nn.Sequential(*stages)
        self.avgpool = nn.AdaptiveAvgPool2d(cfg.classifier_pool)
        p, w = cfg.classifier_pool, cfg.classifier_width
        hidden: list[nn.Module] = []
        for d_in in (c_in * p * p, w):
            hidden += [set_kind(nn.Linear(d_in, w), "mlp"), make_activation(cfg.activation)]
            if cfg.dropout > 0:
                hidden.append(Dropout(cfg.dropout))
        self.classifier = nn.Sequential(*hidden)
        self.head = set_kind(nn.Linear(w, cfg.num_classes), "head")
        _init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: (B, C, H, W)
        x = self.features(x)  # (B, 512α, H/32, W/32)
        x = self.avgpool(x)  # (B, 512α, P, P)
        x = self.classifier(torch.flatten(x, 1))  # (B, classifier_width)
        return self.head(x)  # (B, num_classes)


# ---------------------------------------------------------------- ResNet


class BasicBlock(nn.Module):
    """Two 3×3 convs with a shortcut (He et al. 2015, Fig. 2)."""

    expansion = 1

    def __init__(self, cfg: CNNConfig, c_in: int, planes: int, stride: int):
        super().__init__()
        ct, g, bias = cfg.conv_type_resolved, cfg.groups, cfg.conv_bias_resolved
        self.conv1 = make_conv(cfg, c_in, planes, 3, stride, 1, ct, g, bias)
        self.bn1 = _norm(cfg, planes)
        self.conv2 = make_conv(cfg, planes, planes, 3, 1, 1, ct, g, bias)
        self.bn2 = _norm(cfg, planes)
        self.act = make_activation(cfg.activation)
        self.downsample = _shortcut(cfg, c_in, planes, stride)
        mark_block(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: (B, C_in, H, W)
        identity = x if self.downsample is None else self.downsample(x)  # (B, planes, H/s, W/s)
        out = self.act(self.bn1(self.conv1(x)))  # (B, planes, H/s, W/s)
        out = self.bn2(self.conv2(out))  # (B, planes, H/s, W/s)
        return self.act(out + identity)


class Bottleneck(nn.Module):
    """1×1 reduce → 3×3 (stride here, torchvision's "v1.5") → 1×1 expand ×4, with a shortcut."""

    expansion = BOTTLENECK_EXPANSION

    def __init__(self, cfg: CNNConfig, c_in: int, planes: int, stride: int):
        super().__init__()
        ct, bias = cfg.conv_type_resolved, cfg.conv_bias_resolved
        g = cfg.groups if ct == "grouped" else 1
        width = int(planes * cfg.width_per_group / 64) * g
        c_out = planes * self.expansion
        self.conv1 = set_kind(nn.Conv2d(c_in, width, 1, bias=bias), "conv")
        self.bn1 = _norm(cfg, width)
        self.conv2 = make_conv(cfg, width, width, 3, stride, 1, ct, g, bias)
        self.bn2 = _norm(cfg, width)
        self.conv3 = set_kind(nn.Conv2d(width, c_out, 1, bias=bias), "conv")
        self.bn3 = _norm(cfg, c_out)
        self.act = make_activation(cfg.activation)
        self.downsample = _shortcut(cfg, c_in, c_out, stride)
        mark_block(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: (B, C_in, H, W)
        identity = x if self.downsample is None else self.downsample(x)  # (B, 4·planes, H/s, W/s)
        out = self.act(self.bn1(self.conv1(x)))  # (B, width, H, W)
        out = self.act(self.bn2(self.conv2(out)))  # (B, width, H/s, W/s)
        out = self.bn3(self.conv3(out))  # (B, 4·planes, H/s, W/s)
        return self.act(out + identity)


def _shortcut(cfg: CNNConfig, c_in: int, c_out: int, stride: int) -> nn.Module | None:
    """Projection shortcut (1×1 conv + BN, option B of He et al. 2015) when the shape changes."""
    if stride == 1 and c_in == c_out:
        return None
    conv = set_kind(nn.Conv2d(c_in, c_out, 1, stride, bias=cfg.conv_bias_resolved), "conv")
    return nn.Sequential(conv, _norm(cfg, c_out))


class ResNet(_ImageClassifier):
    """torchvision's layout: conv1, bn1, act, maxpool, layer1..layer4 (blocks), avgpool, fc."""

    def __init__(self, cfg: CNNConfig):
        super().__init__()
        self.config = cfg
        block_type, blocks, _ = cfg.resnet_layout()
        block_cls = BasicBlock if block_type == "basic" else Bottleneck
        stem = cfg.scaled(RESNET_WIDTHS[0])
        bias = cfg.conv_bias_resolved
        if cfg.stem == "imagenet":
            self.conv1 = set_kind(nn.Conv2d(cfg.in_channels, stem, 7, 2, 3, bias=bias), "conv")
            self.maxpool: nn.Module = nn.MaxPool2d(3, 2, 1)
        else:
            self.conv1 = set_kind(nn.Conv2d(cfg.in_channels, stem, 3, 1, 1, bias=bias), "conv")
            self.maxpool = nn.Identity()
        self.bn1 = _norm(cfg, stem)
        self.act = make_activation(cfg.activation)
        c_in = stem
        for i, (n, width) in enumerate(zip(blocks, RESNET_WIDTHS[: len(blocks)])):
            planes = cfg.scaled(width)
            stage = []
            for j in range(n):
                stride = 2 if (i > 0 and j == 0) else 1
                stage.append(block_cls(cfg, c_in, planes, stride))
                c_in = planes * block_cls.expansion
            self.add_module(f"layer{i + 1}", nn.Sequential(*stage))
        self.n_stages = len(blocks)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.dropout = Dropout(cfg.dropout) if cfg.dropout > 0 else nn.Identity()
        self.fc = set_kind(nn.Linear(c_in, cfg.num_classes), "head")
        _init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: (B, C, H, W)
        x = self.maxpool(self.act(self.bn1(self.conv1(x))))  # (B, 64α, H/4, W/4) for the imagenet stem
        for i in range(self.n_stages):
            x = getattr(self, f"layer{i + 1}")(x)  # (B, C_stage, H_stage, W_stage)
        x = torch.flatten(self.avgpool(x), 1)  # (B, C_last)
        return self.fc(self.dropout(x))  # (B, num_classes)


# ---------------------------------------------------------------- MobileNet-v1


class MobileNetV1(_ImageClassifier):
    """stem (3×3 s2 conv, BN, act) → 13 blocks (conv of ``conv_type``, BN, act) → pool → fc."""

    def __init__(self, cfg: CNNConfig):
        super().__init__()
        self.config = cfg
        bias, ct = cfg.conv_bias_resolved, cfg.conv_type_resolved
        c = cfg.scaled(MOBILENET_V1_STEM)
        self.stem = nn.Sequential(*_conv_unit(cfg, cfg.in_channels, c, 3, 2, 1, "standard", 1, bias))
        blocks = []
        for width, stride in MOBILENET_V1_BLOCKS:
            c_out = cfg.scaled(width)
            parts: OrderedDict[str, nn.Module] = OrderedDict()
            parts["conv"] = make_conv(cfg, c, c_out, 3, stride, 1, ct, cfg.groups, bias)
            parts["norm"] = _norm(cfg, c_out)
            parts["act"] = make_activation(cfg.activation)
            blocks.append(mark_block(nn.Sequential(parts)))
            c = c_out
        self.blocks = nn.Sequential(*blocks)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.dropout = Dropout(cfg.dropout) if cfg.dropout > 0 else nn.Identity()
        self.fc = set_kind(nn.Linear(c, cfg.num_classes), "head")
        _init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: (B, C, H, W)
        x = self.blocks(self.stem(x))  # (B, 1024α, H/32, W/32)
        x = torch.flatten(self.avgpool(x), 1)  # (B, 1024α)
        return self.fc(self.dropout(x))  # (B, num_classes)


_BUILDERS = {"plain": PlainCNN, "vgg": VGG, "resnet": ResNet, "mobilenet_v1": MobileNetV1}


def build_cnn(config: CNNConfig) -> nn.Module:
    return _BUILDERS[config.arch](config)


register_family("cnn", CNNConfig, build_cnn)

# ---------------------------------------------------------------- presets

_TV = "torchvision.models docs (num_params of the {} weights entry)"

register_preset(
    "seed-cnn-mnist",
    "cnn",
    description=(
        "The seed article's Keras MNIST CNN: Conv(32,3×3) → MaxPool2 → Conv(64,3×3) → MaxPool2 → Dense(64) → Dense(10)"
    ),
    reference_params=121_930,
    reference_source=(
        "Keras count_params() of the seed article's model (320 + 18,496 + 102,464 + "
        "650); checked in tests/models/test_keras_parity.py"
    ),
    arch="plain",
    layers=("conv:32:k3", "maxpool:2", "conv:64:k3", "maxpool:2", "flatten", "dense:64"),
    in_channels=1,
    num_classes=10,
    image_size=28,
)
register_preset(
    "cnn-digits",
    "cnn",
    description=(
        "CNN for scikit-learn's 8×8 digits: Conv(32,3×3,same) → MaxPool2 → Conv(64,3×3,same) → MaxPool2 → Dense(64) → Dense(10)"
    ),
    arch="plain",
    layers=("conv:32:k3:same", "maxpool:2", "conv:64:k3:same", "maxpool:2", "flatten", "dense:64"),
    in_channels=1,
    num_classes=10,
    image_size=8,
)
register_preset(
    "cnn-tiny",
    "cnn",
    description="Tiny plain CNN for tests: two 3×3 convs (8, 16 channels) with pooling on 3×16×16 inputs",
    arch="plain",
    layers=("conv:8:k3:same", "maxpool:2", "conv:16:k3:same", "gap"),
    batchnorm=True,
    in_channels=3,
    num_classes=10,
    image_size=16,
)
for _d, _ref, _src in (
    (11, 132_863_336, "VGG11_Weights.IMAGENET1K_V1"),
    (13, 133_047_848, "VGG13_Weights.IMAGENET1K_V1"),
    (16, 138_357_544, "VGG16_Weights.IMAGENET1K_V1"),
    (19, 143_667_240, "VGG19_Weights.IMAGENET1K_V1"),
):
    register_preset(
        f"vgg{_d}",
        "cnn",
        description=f"VGG-{_d} (Simonyan & Zisserman 2014), ImageNet 224×224, 1000 classes",
        reference_params=_ref,
        reference_source=_TV.format(_src),
        arch="vgg",
        depth=_d,
        dropout=0.5,
    )
register_preset(
    "vgg16-bn",
    "cnn",
    description="VGG-16 with BatchNorm after every conv (convs keep their biases, as in torchvision's vgg16_bn)",
    reference_params=138_365_992,
    reference_source=_TV.format("VGG16_BN_Weights.IMAGENET1K_V1"),
    arch="vgg",
    depth=16,
    batchnorm=True,
    dropout=0.5,
)
register_preset(
    "vgg16-dws",
    "cnn",
    description=(
        "VGG-16 with every 3×3 conv after the first made depthwise-separable (depthwise 3×3 → ReLU → pointwise 1×1)"
    ),
    arch="vgg",
    depth=16,
    conv_type="depthwise_separable",
    dropout=0.5,
)
for _d, _ref in ((18, 11_689_512), (34, 21_797_672), (50, 25_557_032), (101, 44_549_160), (152, 60_192_808)):
    register_preset(
        f"resnet{_d}",
        "cnn",
        description=f"ResNet-{_d} (He et al. 2015) in torchvision's layout, ImageNet 224×224, 1000 classes",
        reference_params=_ref,
        reference_source=_TV.format(f"ResNet{_d}_Weights.IMAGENET1K_V1"),
        arch="resnet",
        depth=_d,
    )
register_preset(
    "resnet18-dws",
    "cnn",
    description="ResNet-18 with every 3×3 conv after the stem made depthwise-separable",
    arch="resnet",
    depth=18,
    conv_type="depthwise_separable",
)
register_preset(
    "resnext50-32x4d",
    "cnn",
    description="ResNeXt-50 32×4d (Xie et al. 2016): ResNet-50 with grouped 3×3 convs, 32 groups of width 4",
    reference_params=25_028_904,
    reference_source=_TV.format("ResNeXt50_32X4D_Weights.IMAGENET1K_V1"),
    arch="resnet",
    depth=50,
    conv_type="grouped",
    groups=32,
    width_per_group=4,
)
register_preset(
    "wide-resnet50-2",
    "cnn",
    description="Wide ResNet-50-2 (Zagoruyko & Komodakis 2016): bottleneck 3×3 convs twice as wide",
    reference_params=68_883_240,
    reference_source=_TV.format("Wide_ResNet50_2_Weights.IMAGENET1K_V1"),
    arch="resnet",
    depth=50,
    width_per_group=128,
)
register_preset(
    "resnet18-cifar",
    "cnn",
    description="ResNet-18 for CIFAR-10: 3×3 stride-1 stem, no max pool, 32×32 inputs, 10 classes",
    reference_params=11_173_962,
    reference_source=(
        "kuangliu/pytorch-cifar models/resnet.py ResNet18() as summarised by "
        "torchsummary (github.com/JinchengLiang/DLminiproject)"
    ),
    arch="resnet",
    depth=18,
    stem="cifar",
    num_classes=10,
    image_size=32,
)
register_preset(
    "resnet-tiny",
    "cnn",
    description="Tiny ResNet for tests: one basic block per stage, widths 8/16/32/64, CIFAR stem, 3×32×32 inputs",
    arch="resnet",
    blocks=(1, 1, 1, 1),
    block="basic",
    stem="cifar",
    width_multiplier=0.125,
    num_classes=10,
    image_size=32,
)
register_preset(
    "mobilenet-v1",
    "cnn",
    description=(
        "MobileNet-v1 1.0-224 (Howard et al. 2017, Table 1): 3×3 s2 stem, 13 depthwise-separable blocks, pool, FC"
    ),
    reference_params=4_231_976,
    reference_source=(
        "Howard et al. 2017 (arXiv:1704.04861) Tables 4 and 6: 4.2M; exact figure = trainable params of "
        "keras.applications.MobileNet(alpha=1.0) (4,253,864 total incl. 21,888 BN moving stats), "
        "checked in tests/models/test_keras_parity.py"
    ),
    arch="mobilenet_v1",
)
register_preset(
    "mobilenet-v1-standard",
    "cnn",
    description=(
        "MobileNet-v1 with full 3×3 convs instead of depthwise-separable ones ('Conv "
        "MobileNet', 29.3M params in Howard et al. 2017, Table 4)"
    ),
    arch="mobilenet_v1",
    conv_type="standard",
)
