"""How a module tells the analysis what it is.

Models written in layerwise declare roles explicitly so that the analysis never
guesses from names; any other model (Hugging Face, torchvision, user code) falls
back to inference from the module's class and qualified name in
``layerwise.analysis.kinds``.

- ``set_kind(module, kind)``: the layer kind used for per-kind aggregation.
  For a container (an attention block, an MLP) the kind is inherited by the
  weight layers inside it that do not set one themselves.
- ``mark_block(module)``: the module is one of the repeated blocks that
  ``block_depth`` counts (a transformer layer, a residual block).
- ``mark_weight_layer(module, count=1)``: a custom module that applies learned
  linear maps; it adds ``count`` to ``weight_depth`` each time data flows through
  it, and weight layers nested inside it are not counted again.
"""

from __future__ import annotations

from torch import nn

KINDS = (
    "embedding",
    "attention",
    "mlp",
    "norm",
    "conv",
    "depthwise",
    "pointwise",
    "grouped",
    "recurrent",
    "head",
    "adapter",
    "other",
)

KIND_ATTR = "layerwise_kind"
BLOCK_ATTR = "layerwise_block"
WEIGHT_LAYER_ATTR = "layerwise_weight_layers"


def set_kind(module: nn.Module, kind: str) -> nn.Module:
    if kind not in KINDS:
        raise ValueError(f"unknown layer kind {kind!r}; expected one of {', '.join(KINDS)}")
    setattr(module, KIND_ATTR, kind)
    return module


def mark_block(module: nn.Module) -> nn.Module:
    setattr(module, BLOCK_ATTR, True)
    return module


def mark_weight_layer(module: nn.Module, count: int = 1) -> nn.Module:
    if count < 1:
        raise ValueError(f"weight layer count must be >= 1, got {count}")
    setattr(module, WEIGHT_LAYER_ATTR, int(count))
    return module


def declared_kind(module: nn.Module) -> str | None:
    return getattr(module, KIND_ATTR, None)


def is_declared_block(module: nn.Module) -> bool:
    return bool(getattr(module, BLOCK_ATTR, False))
