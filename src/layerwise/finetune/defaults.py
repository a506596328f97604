"""Per-strategy defaults, without torch (the CLI's --help reads them).

Learning rates that suit each strategy with AdamW (used when none is given): a head on
frozen features or a few bias vectors take large steps; LoRA factors and adapters start
at zero and take ~1e-3 (Hu et al. 2021 use 2e-4..5e-4 on larger models); whole pretrained
layers take the small steps of full fine-tuning (BERT's 2e-5..5e-5). Keys are the first
item of a strategy spec (``top`` for top-K); ``norms`` is ``train:norm``.
"""

DEFAULT_LR = {"head": 5e-3, "bitfit": 5e-3, "lora": 1e-3, "adapter": 1e-3, "top": 2e-4, "full": 5e-5,
              "train": 1e-3, "freeze": 1e-3}


def lr_help() -> str:
    """'by --strategy: head 0.005, bitfit 0.005, …' for --help."""
    names = {"top": "top-K", "train": "train:X/norms", "freeze": "freeze:X"}
    return "by --strategy (its first item): " + ", ".join(f"{names.get(k, k)} {v:g}" for k, v in DEFAULT_LR.items())
