"""Fine-tuning strategies: change which parameters train, add LoRA or adapters, in place.

The names below are imported on first use, so that the strategy grammar
(:mod:`layerwise.finetune.grammar`, no torch) loads without torch.
"""

_EXPORTS = {
    "AdaptedLinear": "adapters", "Adapter": "adapters",
    "LoRALinear": "lora", "lora_modules": "lora", "merge_lora": "lora", "unmerge_lora": "lora",
    "REGISTRY": "strategies", "StrategyKind": "strategies", "StrategyRecord": "strategies",
    "apply_strategy": "strategies", "head_modules": "strategies", "lora_target_modules": "strategies",
    "ordered_blocks": "strategies",
    "STRATEGIES": "grammar", "default_lr": "grammar", "parse_strategy": "grammar",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(f"layerwise.finetune.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'layerwise.finetune' has no attribute {name!r}")
