"""Fine-tuning strategies: change which parameters train, add LoRA or adapters, in place."""

from layerwise.finetune.adapters import AdaptedLinear, Adapter
from layerwise.finetune.lora import LoRALinear, lora_modules, merge_lora, unmerge_lora
from layerwise.finetune.strategies import (
    REGISTRY,
    STRATEGIES,
    StrategyKind,
    StrategyRecord,
    apply_strategy,
    default_lr,
    head_modules,
    lora_target_modules,
    ordered_blocks,
    parse_strategy,
)

__all__ = [
    "REGISTRY", "STRATEGIES", "AdaptedLinear", "Adapter", "LoRALinear", "StrategyKind", "StrategyRecord", "apply_strategy",
    "default_lr", "head_modules",
    "lora_modules", "lora_target_modules", "merge_lora", "ordered_blocks", "parse_strategy", "unmerge_lora",
]
