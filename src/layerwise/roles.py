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
- ``mark_experts(module, num_experts, top_k)``: the module holds the routed experts
  of a mixture-of-experts layer; each token runs through ``top_k`` of its
  ``num_experts`` experts, so ``top_k / num_experts`` of its parameters are active
  per token.
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
    "expert",  # routed experts of a mixture-of-experts layer (a share of them runs per token)
    "router",  # the gate that picks each token's experts
    "other",
)

KIND_ATTR = "layerwise_kind"
BLOCK_ATTR = "layerwise_block"
WEIGHT_LAYER_ATTR = "layerwise_weight_layers"
EXPERTS_ATTR = "layerwise_experts"


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


def mark_experts(module: nn.Module, num_experts: int, top_k: int) -> nn.Module:
    if not (isinstance(num_experts, int) and isinstance(top_k, int) and 1 <= top_k <= num_experts):
        raise ValueError(f"experts: expected 1 <= top_k <= num_experts, got top_k={top_k!r}, num_experts={num_experts!r}")
    setattr(module, EXPERTS_ATTR, (int(num_experts), int(top_k)))
    return set_kind(module, "expert")


def declared_experts(module: nn.Module) -> tuple[int, int] | None:
    """(num_experts, top_k) declared with :func:`mark_experts`, or None."""
    return getattr(module, EXPERTS_ATTR, None)
