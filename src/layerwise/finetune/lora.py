"""LoRA (Hu et al. 2021, arXiv:2106.09685): W' = W + (α/r)·B·A with A (r×in), B (out×r).

``LoRALinear`` *is* an ``nn.Linear``: it keeps the base layer's ``weight`` and
``bias`` Parameters (the same objects) under the same names, so a base
checkpoint loads without remapping; the low-rank factors live in two child
Linears, ``lora_a`` and ``lora_b``, of kind "adapter". B starts at zero, so the
wrapped model computes exactly what the base model computed.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from layerwise import roles


class LoRALinear(nn.Linear):
    def __init__(self, in_features: int, out_features: int, rank: int, alpha: float, dropout: float = 0.0,
                 bias: bool = True, device=None, dtype=None):
        super().__init__(in_features, out_features, bias=bias, device=device, dtype=dtype)
        self._init_lora(rank, alpha, dropout)

    def _init_lora(self, rank: int, alpha: float, dropout: float) -> None:
        dev, dt = self.weight.device, self.weight.dtype
        self.rank, self.alpha = rank, float(alpha)
        self.scaling = self.alpha / rank
        self.lora_dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.lora_a = roles.set_kind(nn.Linear(self.in_features, rank, bias=False, device=dev, dtype=dt), "adapter")
        self.lora_b = roles.set_kind(nn.Linear(rank, self.out_features, bias=False, device=dev, dtype=dt), "adapter")
        self.merged = False
        self.reset_lora()

    def reset_lora(self) -> None:
        # A as nn.Linear's default (Kaiming-uniform, a=√5), B zero: the product starts at 0.
        if self.lora_a.weight.device.type != "meta":
            nn.init.kaiming_uniform_(self.lora_a.weight, a=math.sqrt(5))
            nn.init.zeros_(self.lora_b.weight)

    @classmethod
    def from_linear(cls, base: nn.Linear, rank: int, alpha: float, dropout: float = 0.0) -> "LoRALinear":
        """Wrap ``base`` without copying: its Parameters become this module's."""
        new = cls.__new__(cls)
        nn.Module.__init__(new)
        new.in_features, new.out_features = base.in_features, base.out_features
        new.weight = base.weight
        new.bias = base.bias
        for k, v in vars(base).items():  # keep declared roles (kind) of the wrapped layer
            if k.startswith("layerwise_"):
                setattr(new, k, v)
        new.weight.requires_grad_(False)
        if new.bias is not None:
            new.bias.requires_grad_(False)
        new._init_lora(rank, alpha, dropout)
        return new

    def delta_weight(self) -> torch.Tensor:
        return (self.lora_b.weight @ self.lora_a.weight) * self.scaling  # (out, in)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.linear(x, self.weight, self.bias)  # (..., out)
        if self.merged:
            return y
        return y + self.lora_b(self.lora_a(self.lora_dropout(x))) * self.scaling

    @torch.no_grad()
    def merge(self) -> None:
        """Fold B·A into W; merging twice changes nothing."""
        if not self.merged:
            self.weight += self.delta_weight().to(self.weight.dtype)
            self.merged = True

    @torch.no_grad()
    def unmerge(self) -> None:
        if self.merged:
            self.weight -= self.delta_weight().to(self.weight.dtype)
            self.merged = False

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, rank={self.rank}, alpha={self.alpha:g}, merged={self.merged}"


def lora_modules(model: nn.Module) -> dict[str, LoRALinear]:
    return {n: m for n, m in model.named_modules() if isinstance(m, LoRALinear)}


def merge_lora(model: nn.Module) -> int:
    mods = lora_modules(model)
    for m in mods.values():
        m.merge()
    return len(mods)


def unmerge_lora(model: nn.Module) -> int:
    mods = lora_modules(model)
    for m in mods.values():
        m.unmerge()
    return len(mods)
