"""Bottleneck adapters (Houlsby et al. 2019, arXiv:1902.00751): after the attention
output projection and after the MLP output projection of every block,
h ← h + up(act(down(h))), with ``up`` zero-initialised so training starts from the
base model's function.

``AdaptedLinear`` is the projection itself (same ``weight``/``bias`` Parameters,
same names) with the adapter as a child, so base checkpoints load unchanged. Data
passes through three weight layers in sequence (projection, down, up), which is
what ``weight_depth`` counts.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from layerwise import roles


class Adapter(nn.Module):
    def __init__(self, dim: int, size: int, device=None, dtype=None):
        super().__init__()
        self.down = nn.Linear(dim, size, device=device, dtype=dtype)
        self.up = nn.Linear(size, dim, device=device, dtype=dtype)
        roles.set_kind(self, "adapter")
        if self.up.weight.device.type != "meta":
            nn.init.zeros_(self.up.weight)
            nn.init.zeros_(self.up.bias)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.up(F.gelu(self.down(h)))  # (..., dim)


class AdaptedLinear(nn.Linear):
    @classmethod
    def from_linear(cls, base: nn.Linear, size: int) -> "AdaptedLinear":
        new = cls.__new__(cls)
        nn.Module.__init__(new)
        new.in_features, new.out_features = base.in_features, base.out_features
        new.weight, new.bias = base.weight, base.bias
        for k, v in vars(base).items():
            if k.startswith("layerwise_"):
                setattr(new, k, v)
        new.weight.requires_grad_(False)
        if new.bias is not None:
            new.bias.requires_grad_(False)
        new.adapter = Adapter(base.out_features, size, device=base.weight.device, dtype=base.weight.dtype)
        roles.mark_weight_layer(new, 3)
        return new

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.linear(x, self.weight, self.bias)  # (..., out)
        return h + self.adapter(h)
