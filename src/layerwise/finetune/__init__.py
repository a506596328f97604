"""Fine-tuning strategies: change which parameters train, add LoRA or adapters, in place."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from layerwise.finetune.adapters import AdaptedLinear, Adapter
    from layerwise.finetune.lora import LoRALinear, lora_modules, merge_lora, unmerge_lora
    from layerwise.finetune.strategies import (
        STRATEGIES,
        StrategyRecord,
        apply_strategy,
        head_modules,
        lora_target_modules,
        ordered_blocks,
        parse_strategy,
    )

# Names are imported on first use (PEP 562): the CLI reads layerwise.finetune.defaults
# for its --help without importing torch.
_EXPORTS = {
    "STRATEGIES": "layerwise.finetune.strategies",
    "AdaptedLinear": "layerwise.finetune.adapters",
    "Adapter": "layerwise.finetune.adapters",
    "LoRALinear": "layerwise.finetune.lora",
    "StrategyRecord": "layerwise.finetune.strategies",
    "apply_strategy": "layerwise.finetune.strategies",
    "head_modules": "layerwise.finetune.strategies",
    "lora_modules": "layerwise.finetune.lora",
    "lora_target_modules": "layerwise.finetune.strategies",
    "merge_lora": "layerwise.finetune.lora",
    "ordered_blocks": "layerwise.finetune.strategies",
    "parse_strategy": "layerwise.finetune.strategies",
    "unmerge_lora": "layerwise.finetune.lora",
}

__all__ = [
    "STRATEGIES", "AdaptedLinear", "Adapter", "LoRALinear", "StrategyRecord", "apply_strategy", "head_modules",
    "lora_modules", "lora_target_modules", "merge_lora", "ordered_blocks", "parse_strategy", "unmerge_lora",
]


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
