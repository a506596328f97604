"""The vocabularies the trainer and the planner share, each defined once: optimizers,
precisions and the storage formats of quantised frozen weights.

This module sits below ``analysis`` and ``train`` (it imports only torch and
``layerwise.errors``), so the Trainer's :func:`layerwise.train.optim.make_optimizer`,
``TrainConfig``'s validation, the planner and the CLI help all read the same tables.

Optimizers (:data:`OPTIMIZERS`): the torch class, the constructor arguments the trainer
passes, the state tensors each parameter gets (which depend on the arguments: SGD keeps
a ``momentum_buffer`` only with momentum; RMSprop adds one with momentum), and the three
implementations torch has for the update:

- ``fused``: one kernel per parameter group that updates in place (no temporaries);
- ``foreach``: the ``_foreach_*`` ops over all parameters at once (temporaries the size of
  all parameters: Adam's ``exp_avg_sq.sqrt()``, Adagrad's two);
- ``for-loop``: one parameter at a time (temporaries of one parameter, while the
  previous parameter's last temporary is still referenced).

``implementation(device)`` is the trainer's choice: fused where torch has a fused
kernel for the device, else foreach. The temporaries per implementation were measured
with ``torch.profiler`` on the CPU allocator (docs/plan.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from layerwise.errors import ConfigError, UnknownNameError, suggest

IMPLEMENTATIONS = ("auto", "fused", "foreach", "for-loop")
DEFAULT_MOMENTUM = 0.9  # TrainConfig.momentum: SGD and RMSprop train with it unless told otherwise


@dataclass(frozen=True)
class OptimizerSpec:
    name: str  # layerwise's name (TrainConfig.optimizer, plan --optimizer)
    torch_class: str  # attribute of torch.optim
    help: str
    arguments: tuple[str, ...]  # constructor arguments taken from the settings (besides lr, weight_decay)
    fused_devices: tuple[str, ...]  # device types torch has a fused kernel for
    step_tensor: bool  # a 0-dim fp32 ``step`` per parameter tensor
    foreach_temps: int  # parameter-sized temporaries over all parameters at once (foreach)
    loop_temps: int  # parameter-sized temporaries of one parameter (for-loop)
    trainer: bool = True  # the Trainer builds it (torch.optim); False: planned only
    state_dtype: torch.dtype | None = None  # None: the parameter's dtype (torch's zeros_like(param))

    def states(self, momentum: float = DEFAULT_MOMENTUM) -> tuple[str, ...]:
        """Names of the parameter-shaped state tensors each trainable parameter gets."""
        if self.name == "sgd":
            return ("momentum_buffer",) if momentum else ()
        if self.name == "rmsprop":
            return ("square_avg", "momentum_buffer") if momentum else ("square_avg",)
        if self.name == "adagrad":
            return ("sum",)
        return ("exp_avg", "exp_avg_sq")

    def implementation(self, device_type: str, requested: str = "auto") -> str:
        """The update's implementation on ``device_type``: ``requested``, or the trainer's choice."""
        if requested not in IMPLEMENTATIONS:
            raise UnknownNameError(f"unknown optimizer implementation {requested!r}; expected one of "
                                   f"{', '.join(IMPLEMENTATIONS)}{suggest(requested, IMPLEMENTATIONS)}")
        if requested == "fused" and device_type not in self.fused_devices:
            raise ConfigError(f"optimizer: torch has no fused {self.torch_class} for {device_type}; "
                              f"use foreach, for-loop or auto")
        if requested != "auto":
            return requested
        return "fused" if device_type in self.fused_devices else "foreach"

    def describe(self, momentum: float = DEFAULT_MOMENTUM) -> str:
        s = self.states(momentum)
        return f"{self.torch_class}: {len(s)} state tensor{'s' if len(s) != 1 else ''} per parameter" + (
            f" ({', '.join(s)})" if s else "")

    def kwargs(self, momentum: float = DEFAULT_MOMENTUM, nesterov: bool = False,
               betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8) -> dict:
        """Constructor arguments besides params, lr and weight_decay."""
        given = {"momentum": momentum, "nesterov": nesterov, "betas": tuple(betas), "eps": eps}
        return {k: given[k] for k in self.arguments}

    def build(self, groups, lr: float, implementation: str, **settings) -> torch.optim.Optimizer:
        """The torch optimizer over ``groups`` (param-group dicts) with the given implementation."""
        if not self.trainer:
            raise ConfigError(f"optimizer {self.name}: {self.torch_class} is planned only (it needs bitsandbytes)")
        cls = getattr(torch.optim, self.torch_class)
        speed = {"fused": {"fused": True}, "foreach": {"foreach": True}, "for-loop": {"foreach": False}}[implementation]
        return cls(groups, lr=lr, **self.kwargs(**settings), **speed)


_ALL = ("cpu", "cuda")
OPTIMIZERS: dict[str, OptimizerSpec] = {
    s.name: s for s in (
        OptimizerSpec("sgd", "SGD", "SGD; momentum 0.9 unless --momentum 0 (one momentum buffer per parameter)",
                      ("momentum", "nesterov"), _ALL, False, 0, 0),
        OptimizerSpec("adagrad", "Adagrad", "Adagrad (one sum of squares per parameter)", ("eps",), _ALL, True, 2, 1),
        OptimizerSpec("rmsprop", "RMSprop", "RMSprop; momentum 0.9 unless --momentum 0 (square average, momentum buffer)",
                      ("momentum", "eps"), (), True, 1, 1),
        OptimizerSpec("adam", "Adam", "Adam (two moments per parameter)", ("betas", "eps"), _ALL, True, 1, 2),
        OptimizerSpec("adamw", "AdamW", "AdamW, decoupled weight decay (two moments per parameter)", ("betas", "eps"),
                      _ALL, True, 1, 2),
        # bitsandbytes' PagedAdamW32bit (QLoRA's optimizer): fp32 moments in CUDA unified memory, which
        # the driver pages to the host only under memory pressure; one fused kernel per tensor; its
        # step count is a Python int, not a tensor.
        OptimizerSpec("paged-adamw", "PagedAdamW32bit", "bitsandbytes' paged AdamW, 32-bit moments (QLoRA; planned only)",
                      ("betas", "eps"), ("cuda",), False, 0, 0, trainer=False, state_dtype=torch.float32),
    )
}
TRAINER_OPTIMIZERS = tuple(n for n, s in OPTIMIZERS.items() if s.trainer)


def optimizer_spec(name: str) -> OptimizerSpec:
    if name not in OPTIMIZERS:
        raise UnknownNameError(f"unknown optimizer {name!r}; expected one of {', '.join(OPTIMIZERS)}.{suggest(name, OPTIMIZERS)}")
    return OPTIMIZERS[name]


@dataclass(frozen=True)
class PrecisionSpec:
    name: str
    param_dtype: torch.dtype  # the dtype of the weights (and of their gradients and torch's optimizer state)
    autocast_dtype: torch.dtype | None  # torch.autocast's dtype, None: no autocast
    help: str
    trainer: bool  # the Trainer runs it (TrainConfig.precision)
    aliases: tuple[str, ...] = field(default=())

    @property
    def grad_scaler(self) -> bool:
        """fp16 autocast needs torch.amp.GradScaler (its two 0-dim tensors)."""
        return self.autocast_dtype == torch.float16

    @property
    def compute_dtype(self) -> torch.dtype:
        return self.autocast_dtype or self.param_dtype


PRECISIONS: dict[str, PrecisionSpec] = {
    p.name: p for p in (
        PrecisionSpec("fp32", torch.float32, None, "fp32 weights, gradients, optimizer state and activations", True),
        PrecisionSpec("bf16-mixed", torch.float32, torch.bfloat16,
                      "torch.autocast to bf16; fp32 weights are the master copy", True, aliases=("bf16",)),
        PrecisionSpec("fp16-mixed", torch.float32, torch.float16, "torch.autocast to fp16 with a GradScaler", False),
        PrecisionSpec("bf16-true", torch.bfloat16, None, "bf16 weights, gradients and optimizer state", False),
        PrecisionSpec("fp16-true", torch.float16, None, "fp16 weights, gradients and optimizer state", False),
    )
}
_PRECISION_ALIASES = {a: p.name for p in PRECISIONS.values() for a in p.aliases}


def precision_spec(name: str) -> PrecisionSpec:
    """The precision named ``name`` (or one of its aliases: ``bf16`` is ``bf16-mixed``)."""
    key = _PRECISION_ALIASES.get(name, name)
    if key not in PRECISIONS:
        raise UnknownNameError(f"unknown precision {name!r}; expected one of {', '.join(PRECISIONS)}.{suggest(name, PRECISIONS)}")
    return PRECISIONS[key]


TRAINER_PRECISIONS = tuple(p.name for p in PRECISIONS.values() if p.trainer)


@dataclass(frozen=True)
class QuantSpec:
    """A storage format for frozen Linear weights (bitsandbytes' formats).

    4-bit (``nf4``, ``fp4``; Dettmers et al. 2023, QLoRA): two 4-bit codes per byte, one
    absmax per block of ``block`` weights. The absmax is fp32, or with double
    quantisation an 8-bit code per block plus one fp32 absmax per ``block2`` blocks and an
    fp32 offset (QLoRA §3: 32/64 = 0.5 bits per parameter drop to 8/64 + 32/(64·256) =
    0.127), and per tensor its code table (16 fp32 values) and, with double quantisation,
    the second level's (256 fp32 values). Checked against bitsandbytes' own tensors
    (``Params4bit`` and its ``QuantState``; ``Int8Params`` and its ``SCB``). ``int8``
    (LLM.int8(), Dettmers et al. 2022): one byte per weight plus an fp32 scale per row.
    """

    name: str
    bits: int
    block: int  # weights per absmax (4-bit); 0: per-row scales (int8)
    help: str
    block2: int = 256  # blocks per second-level absmax under double quantisation
    code_values: int = 16  # fp32 entries of the per-tensor code table

    def stored_bytes(self, shape: tuple[int, ...], double_quant: bool = True) -> int:
        """Bytes bitsandbytes stores for a weight of ``shape`` (out_features, in_features)."""
        n = 1
        for d in shape:
            n *= d
        if self.bits == 8:
            return n + 4 * shape[0]  # int8 codes + fp32 row scales (SCB)
        packed = (n + 1) // 2
        blocks = -(-n // self.block)
        if not double_quant:
            return packed + 4 * blocks + 4 * self.code_values
        groups = -(-blocks // self.block2)
        # 8-bit absmax codes, fp32 absmax per group of blocks, fp32 offset, the two code tables
        return packed + blocks + 4 * groups + 4 + 4 * self.code_values + 4 * 256


QUANTIZATIONS: dict[str, QuantSpec] = {
    q.name: q for q in (
        QuantSpec("nf4", 4, 64, "4-bit NormalFloat, blocks of 64 (QLoRA)"),
        QuantSpec("fp4", 4, 64, "4-bit float, blocks of 64"),
        QuantSpec("int8", 8, 0, "LLM.int8(): 8-bit weights, fp32 scale per row"),
    )
}


def quant_spec(name: str) -> QuantSpec:
    if name not in QUANTIZATIONS:
        raise UnknownNameError(f"unknown --base-dtype {name!r}; expected one of {', '.join(QUANTIZATIONS)}"
                               f"{suggest(name, QUANTIZATIONS)}")
    return QUANTIZATIONS[name]
