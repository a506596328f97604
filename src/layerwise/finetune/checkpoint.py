"""Adapter-only checkpoints and merged export.

``save_adapter`` writes only what the strategy trains (LoRA factors, adapters, and
any unfrozen base parameter such as the head) as safetensors — megabytes instead
of the whole model — with the strategy and a fingerprint of the base model in the
metadata. ``load_adapter`` re-applies the strategy to a fresh base model, checks
the fingerprint, and loads the tensors; a different base is refused with the
mismatch named. ``merged_state_dict`` folds LoRA into the weights and returns a
state dict with the base model's own names.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from layerwise.errors import LoadError
from layerwise.finetune.lora import merge_lora, unmerge_lora
from layerwise.finetune.strategies import StrategyRecord, apply_strategy
from layerwise.io import atomic_write_bytes


def base_fingerprint(model: nn.Module) -> dict[str, list[int]]:
    """Name → shape of every base parameter (LoRA/adapter parameters excluded)."""
    return {n: list(p.shape) for n, p in model.named_parameters() if not _is_added(n)}


def _is_added(name: str) -> bool:
    parts = name.split(".")
    return any(p in ("lora_a", "lora_b", "adapter") for p in parts)


def _digest(fp: dict) -> str:
    return hashlib.sha256(json.dumps(fp, sort_keys=True).encode()).hexdigest()[:16]


def save_adapter(model: nn.Module, path: str | Path, record: StrategyRecord, lora_targets=None) -> Path:
    """Write the trainable tensors and how to recreate them. Returns the path."""
    path = Path(path)
    tensors = {n: p.detach().contiguous().cpu() for n, p in model.named_parameters() if p.requires_grad}
    fp = {n: s for n, s in base_fingerprint(model).items()}
    meta = {
        "format": "layerwise-adapter-1",
        "strategy": record.strategy,
        "lora_targets": json.dumps(record.lora_targets),
        "base_digest": _digest(fp),
        "base_fingerprint": json.dumps(fp),
        "trainable": str(record.trainable),
    }
    import tempfile

    with tempfile.TemporaryDirectory(dir=path.parent if path.parent.exists() else None) as tmp:
        tmp_file = Path(tmp) / "adapter.safetensors"
        save_file(tensors, str(tmp_file), metadata=meta)
        atomic_write_bytes(path, tmp_file.read_bytes())
    return path


def load_adapter(model: nn.Module, path: str | Path) -> StrategyRecord:
    """Apply the saved strategy to ``model`` (a fresh base) and load the saved tensors."""
    path = Path(path)
    if not path.is_file():
        raise LoadError(f"{path}: no such adapter file")
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise LoadError(f"{path}: not a readable safetensors adapter file ({e})") from None
    if meta.get("format") != "layerwise-adapter-1":
        raise LoadError(f"{path}: not a layerwise adapter checkpoint (metadata format {meta.get('format')!r})")
    saved_fp = json.loads(meta["base_fingerprint"])
    fp = base_fingerprint(model)
    if _digest(fp) != meta["base_digest"]:
        missing = [n for n in saved_fp if n not in fp]
        shapes = [f"{n} {tuple(saved_fp[n])} vs {tuple(fp[n])}" for n in saved_fp if n in fp and fp[n] != saved_fp[n]]
        extra = [n for n in fp if n not in saved_fp]
        parts = []
        if shapes:
            parts.append(f"shapes differ: {', '.join(shapes[:3])}{' …' if len(shapes) > 3 else ''}")
        if missing:
            parts.append(f"base lacks {', '.join(missing[:3])}{' …' if len(missing) > 3 else ''}")
        if extra:
            parts.append(f"base has unexpected {', '.join(extra[:3])}{' …' if len(extra) > 3 else ''}")
        raise LoadError(f"{path}: adapter was trained on a different base model ({'; '.join(parts)})")
    targets = json.loads(meta.get("lora_targets", "[]")) or None
    record = apply_strategy(model, meta["strategy"], lora_targets=targets)
    params = dict(model.named_parameters())
    bad = [n for n in tensors if n not in params or params[n].shape != tensors[n].shape]
    if bad:
        raise LoadError(f"{path}: tensors that do not fit the model after applying {meta['strategy']!r}: {', '.join(bad[:5])}")
    with torch.no_grad():
        for n, t in tensors.items():
            params[n].copy_(t.to(params[n].dtype))
    return record


def merged_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """LoRA folded into the weights; keys are the base model's own names."""
    merge_lora(model)
    try:
        return {k: v.detach().clone() for k, v in model.state_dict().items() if not _is_added(k)}
    finally:
        unmerge_lora(model)
