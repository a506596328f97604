"""Optimizers and learning-rate schedules, independent of the training loop.

GAN and DQN training call these with their own step; the :class:`~layerwise.train.Trainer`
calls them from a :class:`~layerwise.train.TrainConfig`.

Weight decay convention (GPT-2, BERT, nanoGPT's ``configure_optimizers``): decay applies
to weight matrices and conv kernels (parameters with 2+ dimensions) and never to
biases, normalisation parameters or embedding tables (an LM head tied to the token
embedding is the embedding). The L1 penalty uses the same set. Only parameters with
``requires_grad`` are optimised, so a model with most parameters frozen (head-only,
LoRA) gets an optimizer over just the trainable ones.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass

import torch
from torch import nn

from layerwise.errors import ConfigError
from layerwise.roles import declared_kind
from layerwise.vocab import DEFAULT_MOMENTUM, OPTIMIZERS, TRAINER_OPTIMIZERS, optimizer_spec

OPTIMIZER_NAMES = TRAINER_OPTIMIZERS  # the one table: layerwise.vocab.OPTIMIZERS


def _is_embedding(module: nn.Module) -> bool:
    return isinstance(module, (nn.Embedding, nn.EmbeddingBag)) or declared_kind(module) == "embedding"


def split_decay(model: nn.Module) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """(decay, no_decay): trainable parameters, each once, split by the convention above.

    A parameter shared by several modules (a tied LM head) is not decayed if any owner
    is an embedding.
    """
    owners: dict[int, tuple[nn.Parameter, bool]] = {}
    order: list[int] = []
    for module in model.modules():
        emb = _is_embedding(module)
        for p in module.parameters(recurse=False):
            if not p.requires_grad:
                continue
            if id(p) not in owners:
                owners[id(p)] = (p, emb)
                order.append(id(p))
            elif emb:
                owners[id(p)] = (p, True)
    decay, no_decay = [], []
    for i in order:
        p, emb = owners[i]
        (decay if p.dim() >= 2 and not emb else no_decay).append(p)
    return decay, no_decay


def trainable_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The parameters with requires_grad, each once (shared ones are not repeated)."""
    seen, out = set(), []
    for p in model.parameters():
        if p.requires_grad and id(p) not in seen:
            seen.add(id(p))
            out.append(p)
    return out


def _device_type(params: list[torch.Tensor]) -> str | None:
    """The one device type of ``params`` where torch's multi-tensor kernels apply, else None.

    DTensor parameters (FSDP2) and non-floating parameters get the for-loop update."""
    if not params:
        return None
    types = {p.device.type for p in params}
    if len(types) != 1 or next(iter(types)) not in ("cpu", "cuda"):
        return None
    try:  # DTensor parameters (FSDP2) have no fused or foreach kernels
        from torch.distributed.tensor import DTensor

        if any(isinstance(p.data, DTensor) for p in params):
            return None
    except ImportError:
        pass
    if not all(p.is_floating_point() for p in params):
        return None
    return next(iter(types))


def optimizer_implementation(name: str, params: Iterable[torch.Tensor], fused: bool | None = None,
                             device: str | None = None) -> str:
    """The update's implementation :func:`make_optimizer` builds for ``params``: "fused"
    where torch has a fused kernel for their device, else "foreach"; "for-loop" for
    DTensor (FSDP2), mixed-device or non-floating parameters (see layerwise.vocab).
    ``device``: the device type the parameters will be on (for parameters still on meta)."""
    spec = optimizer_spec(name)
    params = list(params)
    if device is not None and params and all(p.device.type == "meta" for p in params):
        params = [torch.empty(0, device=device, dtype=p.dtype) for p in params[:1]] if all(
            p.is_floating_point() for p in params) else params
    device = _device_type(params)
    if fused and (device is None or device not in spec.fused_devices):
        raise ConfigError(f"optimizer: torch has no fused {name} for these parameters; use fused=None or False")
    if device is None:
        return "for-loop"
    if fused is False:
        return "foreach"
    return spec.implementation(device)


def make_optimizer(
    params: nn.Module | Iterable[torch.Tensor] | Iterable[dict],
    name: str = "adamw",
    lr: float = 1e-3,
    weight_decay: float = 0.0,
    momentum: float = DEFAULT_MOMENTUM,
    nesterov: bool = False,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    fused: bool | None = None,
) -> torch.optim.Optimizer:
    """A torch optimizer, built from the one table (:data:`layerwise.vocab.OPTIMIZERS`).

    params: a module (its trainable parameters, split into a decayed and a non-decayed
        group as described in the module docstring), or parameters / param-group dicts
        (``weight_decay`` then applies to all of them).
    name: sgd (``momentum``, ``nesterov``), adagrad, rmsprop (``momentum``), adam, adamw.
    fused: use torch's fused kernel (one kernel for all parameters); None picks it when
        torch has one for this optimizer and the parameters' device, else ``foreach``
        (:func:`optimizer_implementation`, which the planner models too).
    """
    if name not in TRAINER_OPTIMIZERS:
        raise ConfigError(f"optimizer: expected one of {', '.join(TRAINER_OPTIMIZERS)}, got {name!r}")
    if isinstance(params, nn.Module):
        decay, no_decay = split_decay(params)
        groups = [g for g in ({"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}) if g["params"]]
    else:
        items = list(params)
        if items and isinstance(items[0], dict):
            groups = [dict(g) for g in items]
            for g in groups:
                g["params"] = [p for p in g["params"] if p.requires_grad]
                g.setdefault("weight_decay", weight_decay)
        else:
            groups = [{"params": [p for p in items if p.requires_grad], "weight_decay": weight_decay}]
        groups = [g for g in groups if g["params"]]
    flat = [p for g in groups for p in g["params"]]
    if not flat:
        raise ConfigError("optimizer: the model has no trainable parameters (every parameter has requires_grad=False)")
    impl = optimizer_implementation(name, flat, fused)
    if impl == "for-loop":
        impl = "default"  # torch's own choice for parameters its multi-tensor kernels do not take
    spec = OPTIMIZERS[name]
    settings = dict(momentum=momentum, nesterov=nesterov, betas=betas, eps=eps)
    if impl == "default":
        return getattr(torch.optim, spec.torch_class)(groups, lr=lr, **spec.kwargs(**settings))
    return spec.build(groups, lr, impl, **settings)


def l1_penalty(params: Iterable[torch.Tensor]) -> torch.Tensor:
    """sum(|w|) over ``params`` (use the ``decay`` half of :func:`split_decay`)."""
    params = list(params)
    if not params:
        return torch.zeros(())
    return torch.stack([p.abs().sum() for p in params]).sum()


@dataclass(frozen=True)
class LRSchedule:
    """Learning rate as a pure function of the optimizer step, so resuming needs only the step.

    ``warmup_steps`` linear steps from lr/warmup_steps up to ``lr``, then:
    constant ``lr``; linear decay to ``min_lr`` at ``total_steps``; or cosine decay to
    ``min_lr`` at ``total_steps`` (Loshchilov & Hutter 2017, SGDR, without restarts).
    """

    kind: str
    lr: float
    total_steps: int
    warmup_steps: int = 0
    min_lr: float = 0.0

    def __post_init__(self) -> None:
        if self.kind not in ("constant", "linear", "cosine"):
            raise ConfigError(f"schedule: expected constant, linear or cosine, got {self.kind!r}")
        if self.total_steps < 1 or not 0 <= self.warmup_steps <= self.total_steps:
            raise ConfigError(
                f"schedule: expected 0 <= warmup_steps <= total_steps >= 1, "
                f"got warmup_steps={self.warmup_steps}, total_steps={self.total_steps}"
            )

    def __call__(self, step: int) -> float:
        """The learning rate for optimizer step ``step`` (0-based)."""
        if step < self.warmup_steps:
            return self.lr * (step + 1) / self.warmup_steps
        if self.kind == "constant":
            return self.lr
        span = max(1, self.total_steps - self.warmup_steps)
        progress = min(1.0, (step - self.warmup_steps) / span)
        if self.kind == "linear":
            return self.lr - (self.lr - self.min_lr) * progress
        return self.min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (self.lr - self.min_lr)

    def state_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_state_dict(cls, d: dict) -> LRSchedule:
        return cls(**d)


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for g in optimizer.param_groups:
        g["lr"] = lr
