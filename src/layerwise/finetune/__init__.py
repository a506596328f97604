"""Fine-tuning strategies: change which parameters train, add LoRA or adapters, in place."""

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

__all__ = [
    "STRATEGIES", "AdaptedLinear", "Adapter", "LoRALinear", "StrategyRecord", "apply_strategy", "head_modules",
    "lora_modules", "lora_target_modules", "merge_lora", "ordered_blocks", "parse_strategy", "unmerge_lora",
]
