"""What a fine-tuned checkpoint holds, and merged export.

A fine-tune saves only what differs from its base: the parameters its strategy trains, the
modules it added (LoRA factors, adapters) and the task head (freshly initialised for the
task, so not in the base even when frozen) — :func:`finetuned_names`. The base is referenced
by name and by :func:`base_digest`, a sha256 of its tensors, so reloading onto another base
is refused. :func:`merged_state_dict` folds LoRA into the weights and returns a state dict
with the base model's own names.
"""

from __future__ import annotations

import hashlib

import torch
from torch import nn

from layerwise.finetune.lora import merge_lora, unmerge_lora
from layerwise.finetune.strategies import head_modules

ADDED = ("lora_a", "lora_b", "adapter")


def is_added(name: str) -> bool:
    """Whether a parameter or module name belongs to a module a strategy added."""
    return any(p in ADDED for p in name.split("."))


def head_names(model: nn.Module) -> set[str]:
    """State-dict keys of the task head's tensors."""
    out = set()
    for hname, m in head_modules(model):
        out |= {f"{hname}.{k}" for k in m.state_dict()}
    return out


def finetuned_names(model: nn.Module) -> list[str]:
    """The state-dict keys a fine-tuned checkpoint saves: trainable parameters, every tensor
    of an added module, and the head's tensors."""
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    heads = head_names(model)
    return sorted(k for k in model.state_dict() if k in trainable or k in heads or is_added(k))


def base_digest(model: nn.Module, exclude: set[str] = frozenset()) -> str:
    """sha256 (first 16 hex digits) of the base's tensors: names, dtypes, shapes and bytes of
    every state-dict entry not added by a strategy and not in ``exclude`` (a fresh head)."""
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        if is_added(name) or name in exclude or t.device.type == "meta":
            continue
        t = t.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()[:16]


def merged_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """LoRA folded into the weights; keys are the base model's own names (adapters, which
    are not linear, cannot be folded: their tensors are dropped, so check first)."""
    merge_lora(model)
    try:
        return {k: v.detach().clone() for k, v in model.state_dict().items() if not is_added(k)}
    finally:
        unmerge_lora(model)
