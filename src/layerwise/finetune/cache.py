"""Frozen-prefix caching: when the bottom of a model is frozen and deterministic,
compute its output once per example and train only the rest.

Models that support it describe themselves as a chain of stages
(``stage_names()``, ``stage_modules(i)``, ``initial_state(*inputs)``,
``run_stages(state, start, stop)`` — layerwise's Bert and GPT classifiers). The
prefix is every stage before the first one holding a trainable parameter; it runs
once, in eval mode and without autograd, over the whole dataset, and the
:class:`SuffixModel` trains from the cached states. Head-only fine-tuning then
trains a Linear on cached features; top-k trains k blocks on cached hidden states.
The results equal an uncached run in which the frozen prefix is deterministic
(dropout off), which is what "frozen" means for fine-tuning here.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from layerwise.errors import LayerwiseError


def supports_stages(model: nn.Module) -> bool:
    return all(hasattr(model, a) for a in ("stage_names", "stage_modules", "initial_state", "run_stages"))


def first_trainable_stage(model: nn.Module) -> int:
    names = model.stage_names()
    for i in range(len(names)):
        if any(p.requires_grad for m in model.stage_modules(i) for p in m.parameters()):
            return i
    raise LayerwiseError("frozen-prefix cache: nothing in the model trains")


class SuffixModel(nn.Module):
    """The trainable part of a staged model: ``forward(*state)`` runs stages ``start:``."""

    def __init__(self, model: nn.Module, start: int) -> None:
        super().__init__()
        self.model = model
        self.start = start
        self.stop = len(model.stage_names())

    def forward(self, *state: torch.Tensor) -> torch.Tensor:
        return self.model.run_stages(tuple(state), self.start, self.stop)[0]


@dataclass
class CachedPrefix:
    start: int  # first stage that runs during training
    stage: str  # its name
    states: tuple[torch.Tensor, ...]  # the prefix output for every example, (N, ...) each
    bytes: int


def _pad_time(t: torch.Tensor, length: int, full: int) -> torch.Tensor:
    """Pad dim 1 of a per-token state from ``length`` back to ``full`` (zeros: padding)."""
    if t.dim() >= 2 and t.shape[1] == length and length < full:
        pad = torch.zeros((t.shape[0], full - length, *t.shape[2:]), dtype=t.dtype, device=t.device)
        return torch.cat([t, pad], dim=1)
    return t


@torch.no_grad()
def cache_prefix(model: nn.Module, inputs: tuple[torch.Tensor, ...], batch_size: int = 64,
                 dtype: torch.dtype | None = None, progress=None) -> CachedPrefix:
    """Run the frozen prefix once over ``inputs`` (tensors with N rows each)."""
    if not supports_stages(model):
        raise LayerwiseError(f"frozen-prefix cache: {type(model).__name__} does not describe its stages")
    start = first_trainable_stage(model)
    was_training = model.training
    model.eval()
    try:
        n, T = inputs[0].shape[0], inputs[0].shape[1]
        mask = inputs[1] if len(inputs) > 1 else None
        # Length buckets: examples sorted by length run trimmed to their chunk's longest
        # real sequence (padding is masked, so real tokens' outputs do not change), then
        # go back to their places, padded to the full length again.
        order = torch.argsort(mask.sum(dim=1), stable=True) if mask is not None else torch.arange(n)
        chunks: list[tuple] = []
        for lo in range(0, n, batch_size):
            rows = order[lo:lo + batch_size]
            part = [t[rows] for t in inputs]
            if mask is not None:
                L = max(int(part[1].sum(dim=1).max()), 1)
                part = [t[:, :L] for t in part]
            out = model.run_stages(model.initial_state(*part), 0, start)
            out = tuple(_pad_time(t, part[0].shape[1], T) for t in out)
            if dtype is not None:
                out = tuple(t.to(dtype) if t.is_floating_point() else t for t in out)
            chunks.append(out)
            if progress is not None:
                progress(min(lo + batch_size, n), n)
        inverse = torch.empty_like(order)
        inverse[order] = torch.arange(n)
        states = tuple(torch.cat([c[j] for c in chunks])[inverse] for j in range(len(chunks[0])))
    finally:
        model.train(was_training)
    size = sum(t.numel() * t.element_size() for t in states)
    return CachedPrefix(start, model.stage_names()[start], states, size)
