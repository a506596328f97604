"""Training-memory and compute planner: ``plan(model, strategy=..., ...) -> Plan``,
and ``measure(...)``, which runs a real step and reports the estimate's error.

The model of a training step (one function call, so outputs are freed after the
backward)::

    loss = loss_fn(model(*inputs))      # under autocast for the *-mixed precisions
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)

Persistent across the step: weights, buffers, optimizer state, the input batch.
On top of them the step goes through three peaks; the plan's peak is the largest:

- forward: the activations autograd keeps for the backward, the model's outputs
  and the loss's own tensors (for a language model the fp32 logits and their
  log-softmax);
- backward: what is still saved, plus the gradients produced so far, plus the
  transient gradients of large tensors (for a large vocabulary the gradient of the
  logits, which is often the peak of the whole step);
- optimizer step: all gradients plus the optimizer's temporaries.

The forward and backward are *measured* on fake tensors
(:mod:`layerwise.analysis.memory`); weights, gradients, optimizer state and the
optimizer's temporaries follow from the parameter count, dtype and optimizer.

Precision conventions (what is modelled):

- ``fp32``: fp32 weights, gradients, optimizer state and activations.
- ``bf16-mixed`` / ``fp16-mixed``: torch autocast. The weights stay fp32 and *are*
  the master copy (no second copy); matmuls run in 16 bits, so autocast makes 16-bit
  working copies of the weights, which autograd keeps for the backward where the
  input needs a gradient (counted under activations, shown apart). Gradients and
  optimizer state are fp32. This is Lightning's and litgpt's "bf16-mixed".
- ``bf16-true`` / ``fp16-true``: the weights themselves are 16-bit; gradients and
  torch's optimizer state (``zeros_like(param)``) are 16-bit too; no master copy
  (litgpt's "bf16-true"). With ``master_weights=True`` an fp32 copy of the
  trainable weights is kept and the optimizer state is fp32 (the DeepSpeed /
  Megatron convention: 2 + 2 + 4 + 4 + 4 = 16 bytes per trainable parameter
  with Adam).
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import gc
import json
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import nn

from layerwise.analysis.memory import (
    PRECISIONS,
    SavedTensors,
    autocast,
    checkpointed,
    default_loss,
    native_rnns,
    onednn_conv_workspace,
    storage_bytes,
    storage_key,
    trace_step,
)
from layerwise.errors import ConfigError, InputShapeError, LayerwiseError, UnknownNameError, suggest


@dataclass(frozen=True)
class OptimizerSpec:
    name: str
    torch_name: str
    states: int  # state tensors of a parameter's shape per trainable parameter tensor
    step_tensor: bool  # a 0-dim fp32 ``step`` per parameter (kept on the CPU unless fused/capturable)
    kwargs: dict = field(default_factory=dict)
    # temporaries of one step, in parameter-sized tensors: (foreach, all tensors at once — torch's
    # default on CUDA) and (for-loop, one tensor at a time — torch's default on the CPU)
    foreach_temps: int = 0
    loop_temps: int = 0

    def describe(self) -> str:
        return f"{self.torch_name}: {self.states} state tensor{'s' if self.states != 1 else ''} per parameter"


# torch.optim's single-tensor Adam computes ``denom = (exp_avg_sq.sqrt() / bc).add_(eps)``:
# two temporaries at once, and ``denom`` lives on into the next parameter's update.
OPTIMIZERS: dict[str, OptimizerSpec] = {
    "adamw": OptimizerSpec("adamw", "AdamW", 2, True, {"lr": 1e-4}, foreach_temps=1, loop_temps=2),
    "adam": OptimizerSpec("adam", "Adam", 2, True, {"lr": 1e-4}, foreach_temps=1, loop_temps=2),
    "sgd": OptimizerSpec("sgd", "SGD", 0, False, {"lr": 1e-3}),
    "sgd-momentum": OptimizerSpec("sgd-momentum", "SGD", 1, False, {"lr": 1e-3, "momentum": 0.9}),
    "adagrad": OptimizerSpec("adagrad", "Adagrad", 1, True, {"lr": 1e-3}, foreach_temps=1, loop_temps=1),
    "rmsprop": OptimizerSpec("rmsprop", "RMSprop", 1, True, {"lr": 1e-4}, foreach_temps=1, loop_temps=1),
    "rmsprop-momentum": OptimizerSpec(
        "rmsprop-momentum", "RMSprop", 2, True, {"lr": 1e-4, "momentum": 0.9}, foreach_temps=1, loop_temps=1
    ),
}

COMPARE_STRATEGIES = ("full", "head", "top-2", "bitfit", "lora:8", "lora:16", "adapter:64")
DEVICES = ("cuda", "cpu")
GiB = 1024**3


def _check_optimizer(name: str) -> OptimizerSpec:
    if name not in OPTIMIZERS:
        raise UnknownNameError(f"unknown optimizer {name!r}; expected one of {', '.join(OPTIMIZERS)}.{suggest(name, OPTIMIZERS)}")
    return OPTIMIZERS[name]


def _check_precision(name: str) -> None:
    if name not in PRECISIONS:
        raise UnknownNameError(f"unknown precision {name!r}; expected one of {', '.join(PRECISIONS)}.{suggest(name, PRECISIONS)}")


def _check_positive(value, name: str, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ConfigError(f"{name}: expected an integer >= 1, got {value!r}")


def _context_limit(model: nn.Module) -> tuple[str, int] | None:
    """The longest sequence the model takes, as (field name, value), from its config."""
    cfg = getattr(model, "config", None)
    if cfg is None:
        return None
    for attr in ("block_size", "max_position", "max_position_embeddings", "n_positions"):
        v = getattr(cfg, attr, None)
        if isinstance(v, int) and not isinstance(v, bool):
            return f"{type(cfg).__name__}.{attr}", v
    return None


def _check_seq_len(model: nn.Module, seq_len: int | None, what: str = "seq_len") -> None:
    lim = _context_limit(model)
    if seq_len is not None and lim is not None and seq_len > lim[1]:
        raise InputShapeError(f"{what} {seq_len} is longer than the model can take: {lim[0]} = {lim[1]}")


def meta_copy(model: nn.Module) -> nn.Module:
    """A deep copy of ``model`` whose parameters and buffers are on the meta device (ties kept)."""
    memo: dict[int, Any] = {}
    for p in model.parameters():
        memo[id(p)] = nn.Parameter(torch.empty_like(p, device="meta"), requires_grad=p.requires_grad)
    for b in model.buffers():
        memo[id(b)] = torch.empty_like(b, device="meta")
    return copy.deepcopy(model, memo)


def _apply(model: nn.Module, strategy: str | None, options: dict | None = None):
    if strategy is None:
        return None
    from layerwise.finetune import apply_strategy

    return apply_strategy(model, strategy, **(options or {}))


def _make_inputs(model: nn.Module, inputs, input_shape, batch_size: int, seq_len: int | None):
    """The batch on the model's device: ``inputs`` (as meta), zeros of ``input_shape``, or example_inputs."""
    from layerwise.analysis.core import make_inputs

    def to_meta(x):
        if isinstance(x, torch.Tensor):
            return torch.empty_like(x, device="meta")
        return x

    if inputs is not None:
        return torch.utils._pytree.tree_map(to_meta, inputs)
    if input_shape is not None:
        return make_inputs(model, input_shape)
    if hasattr(model, "example_inputs"):
        return model.example_inputs(batch_size=batch_size, seq_len=seq_len)
    raise LayerwiseError(f"{type(model).__name__} has no example_inputs(); pass --input-shape (e.g. 8,3,224,224)")


def _to_param_dtype(inputs, dtype: torch.dtype):
    def conv(x):
        if isinstance(x, torch.Tensor) and x.is_floating_point() and x.dtype != dtype:
            return x.to(dtype)
        return x

    return torch.utils._pytree.tree_map(conv, inputs)


def _size(dt: torch.dtype) -> int:
    return torch.empty((), dtype=dt).element_size()


def _dtype_name(dt: torch.dtype) -> str:
    return str(dt).replace("torch.", "")


@dataclass
class InferencePlan:
    """Weights plus the KV cache of a decoder for ``batch_size`` sequences of ``context`` positions."""

    model: str
    precision: str
    batch_size: int
    context: int
    weight_bytes: int
    kv_cache_bytes: int | None  # None: not a decoder with a KV cache we know how to size
    n_layer: int | None
    n_kv_head: int | None
    head_dim: int | None
    bytes_per_value: int
    formula: str
    total_bytes: int


@dataclass
class Plan:
    """Memory (bytes) and compute of one training step. See the module docstring for the model."""

    model: str
    strategy: str | None
    optimizer: str
    precision: str
    device: str  # where the step runs: decides the optimizer's implementation (foreach on cuda)
    batch_size: int
    seq_len: int | None
    input_shape: Any
    grad_checkpointing: bool
    params: int
    trainable: int
    weights_by_dtype: dict[str, int]  # bytes of parameters per dtype
    weight_bytes: int
    buffer_bytes: int
    master_weight_bytes: int
    gradient_bytes: int
    optimizer_state_bytes: int
    input_bytes: int
    activation_bytes: int  # live after the model's forward: saved for backward + outputs
    saved_bytes: int  # unique storages autograd saved (saved_tensors_hooks), parameters excluded
    weight_copy_bytes: int  # of activation_bytes: 16-bit working copies of weights kept by autocast
    loss_bytes: int  # the loss's own tensors (fp32 logits copy, log-softmax output)
    backward_transient_bytes: int  # backward peak above activations + loss (logit gradients, gradients so far)
    optimizer_step_transient_bytes: int
    forward_peak_bytes: int
    backward_peak_bytes: int
    step_peak_bytes: int
    peak_bytes: int
    peak_phase: str  # "forward" | "backward" | "optimizer step"
    flops_per_step: int  # forward + backward (+ recomputation under checkpointing), frozen-aware
    recompute_flops: int
    tokens_per_step: int | None
    tflops: float | None  # achieved throughput the time is computed at
    seconds_per_step: float | None
    inference: InferencePlan | None = None
    strategy_record: dict | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def persistent_bytes(self) -> int:
        return self.weight_bytes + self.buffer_bytes + self.master_weight_bytes + self.optimizer_state_bytes + self.input_bytes

    def components(self) -> list[tuple[str, int, str]]:
        """(component, bytes, how it is obtained), in the order of the breakdown table."""
        w = ", ".join(f"{k} {v:,}" for k, v in self.weights_by_dtype.items()) or "none"
        spec = OPTIMIZERS[self.optimizer]
        gdt = ", ".join(self.weights_by_dtype) or "-"
        rows = [
            (f"weights ({w} bytes)", self.weight_bytes, "exact: parameters × dtype size"),
            ("buffers", self.buffer_bytes, "exact: buffer storages"),
            ("master weights (fp32)", self.master_weight_bytes,
             "fp32 copy of trainable weights" if self.master_weight_bytes else
             ("none: the fp32 weights are the master copy" if PRECISIONS[self.precision][1] else "none kept")),
            (f"gradients (trainable, {gdt})", self.gradient_bytes, "measured: fake backward"),
            (f"optimizer state ({spec.describe()})", self.optimizer_state_bytes, "states × trainable × dtype"),
            ("inputs", self.input_bytes, "exact: the batch"),
            ("activations (saved for backward, outputs)", self.activation_bytes, "measured: fake forward"),
            ("  of which 16-bit weight copies (autocast)", self.weight_copy_bytes, "measured"),
            ("loss (fp32 logits, log-softmax)", self.loss_bytes, "measured: fake forward"),
            ("backward transient (logit grads, grads so far)", self.backward_transient_bytes, "measured: fake backward"),
            ("optimizer step transient", self.optimizer_step_transient_bytes,
             f"{'foreach' if self.device == 'cuda' else 'per-tensor'} {spec.torch_name} temporaries"),
        ]
        return rows

    def peak_breakdown(self) -> list[tuple[str, int]]:
        """What is live at the peak, in parts that sum to ``peak_bytes`` exactly."""
        parts = [
            ("weights + buffers", self.weight_bytes + self.buffer_bytes),
            ("master weights", self.master_weight_bytes),
            ("optimizer state", self.optimizer_state_bytes),
            ("inputs", self.input_bytes),
        ]
        base = self.persistent_bytes
        if self.peak_phase == "optimizer step":
            parts += [("gradients", self.gradient_bytes), ("optimizer step transient", self.optimizer_step_transient_bytes)]
        else:
            top = self.forward_peak_bytes if self.peak_phase == "forward" else self.backward_peak_bytes
            act = self.activation_bytes - self.weight_copy_bytes
            parts += [("activations", act), ("16-bit weight copies", self.weight_copy_bytes), ("loss", self.loss_bytes)]
            parts.append((f"{self.peak_phase} transient", top - base - act - self.weight_copy_bytes - self.loss_bytes))
        assert sum(b for _, b in parts) == self.peak_bytes
        return parts

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["persistent_bytes"] = self.persistent_bytes
        d["peak_breakdown"] = dict(self.peak_breakdown())
        d["peak_gib"] = self.peak_bytes / GiB
        return d

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)


def _optimizer_bytes(spec: OptimizerSpec, trainable: list[torch.Tensor], state_dtype: torch.dtype,
                     device: str) -> tuple[int, int]:
    """(persistent state bytes, peak temporaries of one step)."""
    sizes = [p.numel() * _size(state_dtype if p.is_floating_point() else p.dtype) for p in trainable]
    state = spec.states * sum(sizes)
    if spec.step_tensor and device == "cpu":
        state += 4 * len(trainable)  # 0-dim fp32 step per parameter; on CUDA it stays on the host
    if device == "cuda":
        temp = spec.foreach_temps * sum(sizes)
    elif spec.loop_temps:
        # parameter i's temporaries while parameter i-1's result is still referenced
        temp = max((spec.loop_temps * s + (sizes[i - 1] if i else 0) for i, s in enumerate(sizes)), default=0)
    else:
        temp = 0
    return state, temp


def _blocks(model: nn.Module) -> list[nn.Module]:
    from layerwise.analysis.kinds import detect_blocks

    ids = detect_blocks(model)
    return [m for m in model.modules() if id(m) in ids]


def plan(
    model: nn.Module,
    strategy: str | None = None,
    optimizer: str = "adamw",
    precision: str = "fp32",
    batch_size: int = 1,
    seq_len: int | None = None,
    input_shape=None,
    inputs=None,
    grad_checkpointing: bool = False,
    tflops: float | None = None,
    device: str = "cuda",
    master_weights: bool = False,
    loss_fn: Callable[[Any], torch.Tensor] | None = None,
    inference_context: int | None = None,
    name: str | None = None,
    strategy_options: dict | None = None,
) -> Plan:
    """Plan the memory and compute of one training step of ``model``.

    Args:
        model: any ``nn.Module``, on any device (``meta`` is cheapest); it is not changed.
        strategy: a fine-tuning strategy (``"lora:16"``, ``"head"``, ``"top-2"`` …,
            see :func:`layerwise.finetune.apply_strategy`), applied to a meta copy; None
            keeps the model's own ``requires_grad`` flags.
        optimizer: one of :data:`OPTIMIZERS`. precision: one of ``fp32``, ``bf16-mixed``,
            ``fp16-mixed``, ``bf16-true``, ``fp16-true``.
        batch_size, seq_len: the inputs ``model.example_inputs(batch_size, seq_len)``
            makes; or ``input_shape`` (e.g. ``[8, 3, 224, 224]``), or ``inputs`` (tensors).
        grad_checkpointing: each repeated block (``roles.mark_block`` or detected) runs
            under ``torch.utils.checkpoint`` and is recomputed in the backward.
        tflops: achieved throughput in TFLOP/s for ``seconds_per_step``.
        device: ``"cuda"`` or ``"cpu"``, where the step will run: torch's optimizers
            update all tensors at once (foreach) on CUDA and one at a time on the CPU.
        master_weights: with ``bf16-true``/``fp16-true``, keep fp32 master weights and
            fp32 optimizer state.
        loss_fn: ``output -> loss``; default :func:`layerwise.analysis.memory.default_loss`.
        inference_context: also plan inference (weights + KV cache) at this context.
        strategy_options: keyword arguments for ``apply_strategy`` (``lora_targets``,
            ``lora_alpha``, ``lora_dropout``).
    """
    spec = _check_optimizer(optimizer)
    _check_precision(precision)
    _check_positive(batch_size, "batch_size")
    _check_positive(seq_len, "seq_len", allow_none=True)
    if device not in DEVICES:
        raise UnknownNameError(f"unknown device {device!r}; expected one of {', '.join(DEVICES)}")
    if tflops is not None and not (isinstance(tflops, (int, float)) and tflops > 0):
        raise ConfigError(f"tflops: expected a number > 0, got {tflops!r}")
    param_dtype, amp_dtype = PRECISIONS[precision]
    if master_weights and amp_dtype is not None:
        raise ConfigError(f"master_weights: {precision} keeps fp32 weights already (they are the master copy); "
                          "use it with bf16-true or fp16-true")
    if master_weights and param_dtype == torch.float32:
        raise ConfigError("master_weights: fp32 weights need no fp32 master copy; use it with bf16-true or fp16-true")
    if not isinstance(model, nn.Module):
        raise LayerwiseError(f"plan: expected a torch.nn.Module, got {type(model).__name__}")
    if input_shape is not None:
        shapes = input_shape if isinstance(input_shape[0], (list, tuple)) else [input_shape]
        for s in shapes:
            if not all(isinstance(d, int) and d >= 1 for d in s):
                raise ConfigError(f"--input-shape: expected positive integers, got {list(s)}")
        batch_size = shapes[0][0]
    _check_seq_len(model, seq_len)
    name = name or type(model).__name__

    on_meta = all(t.device.type == "meta" for t in list(model.parameters()) + list(model.buffers()))
    m = meta_copy(model) if (strategy is not None or not on_meta) else model  # the caller's model is not changed
    record = _apply(m, strategy, strategy_options)
    meta_in = _make_inputs(m, inputs, input_shape, batch_size, seq_len)
    blocks = _blocks(m) if grad_checkpointing else []
    if grad_checkpointing and not blocks:
        raise ConfigError(f"grad_checkpointing: {name} has no repeated blocks to checkpoint "
                          "(mark them with layerwise.roles.mark_block)")
    from layerwise.analysis.core import analyze

    a = analyze(m, inputs=meta_in, name=name)  # FLOPs; also names the layer an input does not fit
    trace = trace_step(m, meta_in, precision, grad_checkpointing, blocks, loss_fn,
                       workspace=onednn_conv_workspace if device == "cpu" else None,
                       param_dtype=param_dtype if param_dtype != torch.float32 else None)

    params = list({id(p): p for p in m.parameters()}.values())
    trainable = [p for p in params if p.requires_grad]

    def dtype_of(t: torch.Tensor) -> torch.dtype:
        return param_dtype if t.is_floating_point() else t.dtype

    by_dtype: dict[str, int] = {}
    for p in params:
        k = _dtype_name(dtype_of(p))
        by_dtype[k] = by_dtype.get(k, 0) + p.numel() * _size(dtype_of(p))
    weight_bytes = sum(by_dtype.values())
    buffer_bytes = sum(b.numel() * _size(dtype_of(b)) for b in {id(b): b for b in m.buffers()}.values())
    master = sum(p.numel() * 4 for p in trainable) if master_weights else 0
    state_dtype = torch.float32 if master_weights else param_dtype
    opt_state, opt_temp = _optimizer_bytes(spec, trainable, state_dtype, device)
    grads = trace.gradient_bytes
    if master_weights:
        # fp32 gradients for the master copy, made from the 16-bit ones before the step
        opt_temp += sum(p.numel() * 4 for p in trainable)
    input_bytes = sum(t.numel() * _size(dtype_of(t)) for t in
                      {id(t): t for t in torch.utils._pytree.tree_leaves(meta_in) if isinstance(t, torch.Tensor)}.values())

    persistent = weight_bytes + buffer_bytes + master + opt_state + input_bytes
    phases = {
        "forward": persistent + trace.forward_peak_bytes,
        "backward": persistent + trace.backward_peak_bytes,
        "optimizer step": persistent + grads + opt_temp,
    }
    phase = max(phases, key=phases.get)

    recompute = sum(r.flops_total for r in a.rows if r.is_block and r.reuse_of is None) if grad_checkpointing else 0
    flops = a.totals.flops_train + recompute
    tokens = None
    first = next((t for t in torch.utils._pytree.tree_leaves(meta_in) if isinstance(t, torch.Tensor)), None)
    if first is not None and first.dim() == 2 and not first.is_floating_point():
        tokens = first.shape[0] * first.shape[1]
    notes = _notes(precision, master_weights, device)
    p = Plan(
        model=name,
        strategy=strategy,
        optimizer=optimizer,
        precision=precision,
        device=device,
        batch_size=batch_size,
        seq_len=seq_len if seq_len is not None else (first.shape[1] if tokens else None),
        input_shape=[list(t.shape) for t in torch.utils._pytree.tree_leaves(meta_in) if isinstance(t, torch.Tensor)],
        grad_checkpointing=grad_checkpointing,
        params=sum(q.numel() for q in params),
        trainable=sum(q.numel() for q in trainable),
        weights_by_dtype=by_dtype,
        weight_bytes=weight_bytes,
        buffer_bytes=buffer_bytes,
        master_weight_bytes=master,
        gradient_bytes=grads,
        optimizer_state_bytes=opt_state,
        input_bytes=input_bytes,
        activation_bytes=trace.activation_bytes,
        saved_bytes=trace.saved_bytes,
        weight_copy_bytes=trace.weight_copy_bytes,
        loss_bytes=trace.loss_bytes,
        backward_transient_bytes=trace.backward_peak_bytes - trace.activation_bytes - trace.loss_bytes,
        optimizer_step_transient_bytes=opt_temp,
        forward_peak_bytes=phases["forward"],
        backward_peak_bytes=phases["backward"],
        step_peak_bytes=phases["optimizer step"],
        peak_bytes=phases[phase],
        peak_phase=phase,
        flops_per_step=flops,
        recompute_flops=recompute,
        tokens_per_step=tokens,
        tflops=tflops,
        seconds_per_step=flops / (tflops * 1e12) if tflops else None,
        strategy_record=record.to_dict() if record is not None else None,
        notes=notes,
    )
    if inference_context is not None:
        p.inference = plan_inference(model, precision=precision, batch_size=batch_size, context=inference_context, name=name)
    return p


def _notes(precision: str, master_weights: bool, device: str) -> list[str]:
    param_dtype, amp = PRECISIONS[precision]
    notes = []
    if amp is not None:
        notes.append(f"{precision}: torch autocast; fp32 weights are the master copy, gradients and optimizer "
                     f"state fp32; {_dtype_name(amp)} weight copies kept for backward are counted in activations")
    elif param_dtype != torch.float32:
        notes.append(f"{precision}: weights, gradients and optimizer state in {_dtype_name(param_dtype)}"
                     + ("; fp32 master weights and fp32 optimizer state" if master_weights else "; no master copy"))
    notes.append("activations measured on fake CPU tensors (PyTorch's CPU kernel choices, flash attention); "
                 "kernel workspaces and allocator rounding/fragmentation are not included")
    if device == "cuda":
        notes.append("CUDA context (~0.3–1 GiB) and cuBLAS workspaces are outside torch.cuda.max_memory_allocated "
                     "and outside this plan")
    else:
        notes.append("cpu: oneDNN convolutions' blocked copies are added as a kernel workspace; RNN layers are "
                     "traced (and measured) through PyTorch's native implementation")
    return notes


# ----------------------------------------------------------------------------- inference


_ENCODER_ONLY = ("bert", "roberta", "distilbert", "albert", "electra", "deberta", "deberta-v2", "xlm-roberta", "mpnet")


def _decoder_shape(model: nn.Module) -> tuple[int, int, int] | None:
    """(n_layer, n_kv_head, head_dim) of a decoder's attention, from its config."""
    cfg = getattr(model, "config", None)
    if cfg is None:
        return None
    if getattr(cfg, "family", None) == "gpt":
        return cfg.n_layer, cfg.kv_heads, cfg.head_size
    if getattr(cfg, "family", None) or getattr(cfg, "is_encoder_decoder", False):
        return None  # layerwise's other families and encoder-decoders: no decoder-only KV cache
    if getattr(cfg, "model_type", "") in _ENCODER_ONLY:
        return None
    n_layer = getattr(cfg, "num_hidden_layers", None) or getattr(cfg, "n_layer", None)
    n_head = getattr(cfg, "num_attention_heads", None) or getattr(cfg, "n_head", None)
    hidden = getattr(cfg, "hidden_size", None) or getattr(cfg, "n_embd", None)
    if not (n_layer and n_head and hidden):
        return None
    kv = getattr(cfg, "num_key_value_heads", None) or n_head
    head_dim = getattr(cfg, "head_dim", None) or hidden // n_head
    return n_layer, kv, head_dim


def plan_inference(model: nn.Module, precision: str = "bf16-true", batch_size: int = 1, context: int = 2048,
                   name: str | None = None) -> InferencePlan:
    """Weights + KV cache: 2 (K and V) · n_layer · n_kv_head · head_dim · context · batch · bytes.

    Weights are counted in the precision's parameter dtype (fp32 for ``*-mixed``,
    which keep fp32 weights under autocast); the cache holds 16-bit values for any
    16-bit precision, fp32 for ``fp32``.
    """
    _check_precision(precision)
    _check_positive(batch_size, "batch_size")
    _check_positive(context, "context")
    _check_seq_len(model, context, what="context")
    param_dtype, amp = PRECISIONS[precision]
    weights = sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())
    weight_bytes = weights * torch.empty((), dtype=param_dtype).element_size()
    bpv = torch.empty((), dtype=amp or param_dtype).element_size()
    shape = _decoder_shape(model)
    if shape is None:
        return InferencePlan(name or type(model).__name__, precision, batch_size, context, weight_bytes, None,
                             None, None, None, bpv, "no KV cache: not a decoder", weight_bytes)
    L, kv, hd = shape
    kv_bytes = 2 * L * kv * hd * context * batch_size * bpv
    formula = f"2 · {L} layers · {kv} kv heads · {hd} head dim · {context:,} positions · batch {batch_size} · {bpv} bytes"
    return InferencePlan(name or type(model).__name__, precision, batch_size, context, weight_bytes, kv_bytes,
                         L, kv, hd, bpv, formula, weight_bytes + kv_bytes)


def compare_strategies(model: nn.Module, strategies=COMPARE_STRATEGIES, skipped: dict[str, str] | None = None,
                       **kwargs) -> list[Plan]:
    """:func:`plan` for each strategy, side by side (the model is not changed).

    A strategy that does not apply to the model (LoRA without attention projections,
    top-k without repeated blocks) raises, unless ``skipped`` is a dict: then it is
    left out and its reason recorded there.
    """
    plans = []
    for s in strategies:
        try:
            plans.append(plan(model, strategy=s, **kwargs))
        except ConfigError as e:
            if skipped is None:
                raise
            skipped[s] = str(e)
    if not plans:
        raise ConfigError(f"no strategy applies to {kwargs.get('name') or type(model).__name__}: "
                          + "; ".join(f"{k}: {v}" for k, v in (skipped or {}).items()))
    return plans


# ----------------------------------------------------------------------------- measure


@dataclass
class Measurement:
    """A real training step next to its plan. Bytes; ``None`` where not measured."""

    plan: Plan
    device: str
    method: str
    weight_bytes: int
    buffer_bytes: int
    gradient_bytes: int
    optimizer_state_bytes: int
    input_bytes: int
    saved_bytes: int  # real saved_tensors_hooks, unique storages
    activation_bytes: int  # allocated after the model's forward − before
    loss_bytes: int
    forward_peak_bytes: int
    backward_peak_bytes: int
    step_peak_bytes: int
    peak_bytes: int
    seconds: float

    def rows(self) -> list[tuple[str, int, int, float | None]]:
        """(component, estimate, measured, error in % of measured)."""
        p = self.plan
        pairs = [
            ("weights", p.weight_bytes, self.weight_bytes),
            ("buffers", p.buffer_bytes, self.buffer_bytes),
            ("gradients", p.gradient_bytes, self.gradient_bytes),
            ("optimizer state", p.optimizer_state_bytes, self.optimizer_state_bytes),
            ("inputs", p.input_bytes, self.input_bytes),
            ("saved for backward", p.saved_bytes, self.saved_bytes),
            ("activations (after forward)", p.activation_bytes, self.activation_bytes),
            ("loss", p.loss_bytes, self.loss_bytes),
            ("forward peak", p.forward_peak_bytes, self.forward_peak_bytes),
            ("backward peak", p.backward_peak_bytes, self.backward_peak_bytes),
            ("optimizer step peak", p.step_peak_bytes, self.step_peak_bytes),
            ("peak", p.peak_bytes, self.peak_bytes),
        ]
        return [(n, e, m, error_pct(e, m)) for n, e, m in pairs]

    @property
    def peak_error_pct(self) -> float | None:
        return error_pct(self.plan.peak_bytes, self.peak_bytes)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["rows"] = [dict(zip(("component", "estimate", "measured", "error_pct"), r)) for r in self.rows()]
        return d


def error_pct(estimate: int, measured: int) -> float | None:
    return None if not measured else 100.0 * (estimate - measured) / measured


def materialize(model: nn.Module, device: str | torch.device) -> nn.Module:
    """Allocate a meta model's tensors on ``device`` (in place) with small random values; ties kept."""
    owners: dict[int, list[tuple[nn.Module, str]]] = {}
    for mod in model.modules():
        for n, p in mod._parameters.items():
            if p is not None:
                owners.setdefault(id(p), []).append((mod, n))
    model.to_empty(device=device)
    for group in owners.values():
        first = group[0][0]._parameters[group[0][1]]
        for mod, n in group[1:]:
            mod._parameters[n] = first
    gen = torch.Generator(device="cpu").manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            if p.is_floating_point():
                p.copy_(torch.randn(p.shape, generator=gen, dtype=p.dtype) * 0.02)
        for n, b in model.named_buffers():
            if n.endswith("running_var"):
                b.fill_(1)
            else:
                b.zero_()
    return model


def _available_bytes(dev: torch.device) -> int | None:
    """Memory free for a measurement on ``dev`` (None if unknown)."""
    if dev.type == "cuda":
        return torch.cuda.mem_get_info(dev)[0]
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def _optimizer(spec: OptimizerSpec, params):
    cls = getattr(torch.optim, spec.torch_name)
    return cls(params, **spec.kwargs)


def _opt_state_tensors(opt) -> list[torch.Tensor]:
    return [v for s in opt.state.values() for v in s.values() if isinstance(v, torch.Tensor)]


def measure(
    model: nn.Module,
    strategy: str | None = None,
    optimizer: str = "adamw",
    precision: str = "fp32",
    batch_size: int = 1,
    seq_len: int | None = None,
    input_shape=None,
    inputs=None,
    grad_checkpointing: bool = False,
    device: str = "cpu",
    loss_fn: Callable[[Any], torch.Tensor] | None = None,
    name: str | None = None,
    strategy_options: dict | None = None,
) -> Measurement:
    """Run one real training step with the same settings as :func:`plan` and measure it.

    A meta copy of the model gets the strategy, is allocated on ``device`` with random
    values (memory does not depend on them; the caller's model is not touched), one
    warm-up step allocates the optimizer state, then a second step is measured:

    - CPU: ``torch.profiler`` with ``profile_memory=True`` records every allocation
      and free of the CPU allocator; their running sum over the step, on top of the
      bytes already live (weights, buffers, optimizer state, batch: counted from their
      storages), gives the live bytes at each moment and the peak of each phase.
    - CUDA: ``torch.cuda.memory_allocated`` / ``max_memory_allocated`` around each phase.

    Saved-for-backward bytes are counted with the same ``saved_tensors_hooks`` as the
    estimate, on the real tensors. The estimate is planned for the same device type.
    """
    import time

    from torch.profiler import ProfilerActivity, profile, record_function

    dev = torch.device(device)
    if dev.type not in DEVICES:
        raise UnknownNameError(f"unknown device {device!r}; expected one of {', '.join(DEVICES)}")
    est = plan(model, strategy=strategy, optimizer=optimizer, precision=precision, batch_size=batch_size,
               seq_len=seq_len, input_shape=input_shape, inputs=inputs, grad_checkpointing=grad_checkpointing,
               device=dev.type, loss_fn=loss_fn, name=name, strategy_options=strategy_options)
    spec = OPTIMIZERS[optimizer]
    param_dtype, amp = PRECISIONS[precision]
    loss_fn = loss_fn or default_loss
    free = _available_bytes(dev)
    if free is not None and est.peak_bytes > 0.9 * free:
        raise LayerwiseError(f"measure: the plan's peak, {est.peak_bytes / GiB:.2f} GiB, does not fit in the "
                             f"{free / GiB:.2f} GiB available on {dev}; measure a smaller batch or model")

    real = meta_copy(model)
    _apply(real, strategy, strategy_options)
    materialize(real, dev)
    if param_dtype != torch.float32:
        real = real.to(dtype=param_dtype)
    real.train()
    if inputs is not None:
        batch = torch.utils._pytree.tree_map(lambda x: x.to(dev) if isinstance(x, torch.Tensor) else x, inputs)
    else:
        batch = _make_inputs(real, None, input_shape, batch_size, seq_len)
    batch = _to_param_dtype(batch, param_dtype) if param_dtype != torch.float32 else batch
    blocks = _blocks(real) if grad_checkpointing else []
    trainable = [p for p in {id(p): p for p in real.parameters()}.values() if p.requires_grad]
    opt = _optimizer(spec, trainable)
    scaler = torch.amp.GradScaler(dev.type) if amp == torch.float16 else None
    params_buffers = list(real.parameters()) + list(real.buffers())
    exclude = {storage_key(t) for t in params_buffers}
    exclude |= {storage_key(t) for t in torch.utils._pytree.tree_leaves(batch) if isinstance(t, torch.Tensor)}
    marks: dict[str, float] = {}
    result: dict[str, int] = {}
    saved = SavedTensors(exclude)
    cuda = dev.type == "cuda"

    def mark(label: str) -> None:
        if cuda:
            torch.cuda.synchronize(dev)
            marks[label] = torch.cuda.memory_allocated(dev)
            marks[label + ":peak"] = torch.cuda.max_memory_allocated(dev)
            torch.cuda.reset_peak_memory_stats(dev)

    def step(record: bool) -> None:
        ctx = saved.hooks() if record else torch.autograd.graph.saved_tensors_hooks(lambda t: t, lambda t: t)
        with record_function("layerwise::forward"), ctx:
            with checkpointed(blocks) if blocks else contextlib.nullcontext(), native_rnns(real), \
                    autocast(precision, dev.type):
                out = _call(real, batch)
                mark("model")
                with record_function("layerwise::loss"):
                    loss = loss_fn(out)
        mark("forward")
        with record_function("layerwise::backward"):
            (scaler.scale(loss) if scaler else loss).backward()
        del out, loss
        mark("backward")
        if record:
            result["gradients"] = storage_bytes(p.grad for p in trainable if p.grad is not None)
        with record_function("layerwise::step"):
            if scaler:
                scaler.step(opt)
                scaler.update()
            else:
                opt.step()
        mark("step")
        opt.zero_grad(set_to_none=True)

    step(record=False)  # allocates the optimizer state
    gc.collect()
    weight_bytes = storage_bytes(real.parameters())
    buffer_bytes = storage_bytes(real.buffers())
    opt_bytes = storage_bytes(_opt_state_tensors(opt))
    input_bytes = storage_bytes(t for t in torch.utils._pytree.tree_leaves(batch) if isinstance(t, torch.Tensor))
    base = storage_bytes(params_buffers + _opt_state_tensors(opt)
                         + [t for t in torch.utils._pytree.tree_leaves(batch) if isinstance(t, torch.Tensor)])
    t0 = time.perf_counter()
    if cuda:
        torch.cuda.synchronize(dev)
        torch.cuda.reset_peak_memory_stats(dev)
        start = torch.cuda.memory_allocated(dev)
        step(record=True)
        seconds = time.perf_counter() - t0
        act = marks["model"] - start
        loss_b = marks["forward"] - marks["model"]
        fwd_peak = max(marks["model:peak"], marks["forward:peak"]) - start + base
        bwd_peak = marks["backward:peak"] - start + base
        step_peak = marks["step:peak"] - start + base
        method = "torch.cuda.memory_allocated / max_memory_allocated per phase"
    else:
        with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
            step(record=True)
        seconds = time.perf_counter() - t0
        live = _profiler_phases(prof)
        act = live["forward_model_end"]
        loss_b = live["forward_end"] - live["forward_model_end"]
        fwd_peak = base + live["forward_peak"]
        bwd_peak = base + live["backward_peak"]
        step_peak = base + live["step_peak"]
        method = "torch.profiler memory events (CPU allocator), on top of the live weights, state and batch"
    return Measurement(
        plan=est,
        device=str(dev),
        method=method,
        weight_bytes=weight_bytes,
        buffer_bytes=buffer_bytes,
        gradient_bytes=result["gradients"],
        optimizer_state_bytes=opt_bytes,
        input_bytes=input_bytes,
        saved_bytes=saved.bytes,
        activation_bytes=act,
        loss_bytes=loss_b,
        forward_peak_bytes=fwd_peak,
        backward_peak_bytes=bwd_peak,
        step_peak_bytes=step_peak,
        peak_bytes=max(fwd_peak, bwd_peak, step_peak),
        seconds=seconds,
    )


def _call(model, inputs):
    if isinstance(inputs, dict):
        return model(**inputs)
    if isinstance(inputs, (tuple, list)):
        return model(*inputs)
    return model(inputs)


def _profiler_phases(prof) -> dict[str, int]:
    """Running sum of the CPU allocator's events: live bytes at the phase marks and each phase's peak."""
    events = list(prof.profiler.kineto_results.events())
    spans = {}
    for e in events:
        if e.name().startswith("layerwise::"):
            spans[e.name()[11:]] = (e.start_ns(), e.start_ns() + e.duration_ns())
    mem = sorted((e for e in events if e.name() == "[memory]" and str(e.device_type()).endswith("CPU")),
                 key=lambda e: e.start_ns())
    out = {"forward_peak": 0, "backward_peak": 0, "step_peak": 0}
    cur = 0
    f_end = spans["forward"][1]
    model_end = spans["loss"][0]
    b_end = spans["backward"][1]
    model_done = forward_done = False
    for e in mem:
        t = e.start_ns()
        if not model_done and t >= model_end:
            out["forward_model_end"] = cur
            model_done = True
        if not forward_done and t > f_end:
            out["forward_end"] = cur
            forward_done = True
        cur += e.nbytes()
        phase = "forward_peak" if t <= f_end else ("backward_peak" if t <= b_end else "step_peak")
        out[phase] = max(out[phase], cur)
    out.setdefault("forward_model_end", cur)
    out.setdefault("forward_end", cur)
    return out
