"""Training-memory and compute planner: ``plan(model, ...) -> Plan`` for the model as it
is (its ``requires_grad`` flags decide what trains), on one or many devices.

Fine-tuning strategies, side-by-side comparisons, "will it fit?" and the measured step
are jobs above the analysis (:mod:`layerwise.jobs.plan`): they change a meta copy of the
model and call this planner.

The model of a training step (one function call, so outputs are freed after the
backward)::

    loss = loss_fn(model(*inputs))      # under autocast for the *-mixed precisions
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)

Persistent across the step: weights, buffers, optimizer state, the input batch (and,
on many devices, the communication buffers). On top of them the step goes through
three peaks; the plan's peak is the largest:

- forward: the activations autograd keeps for the backward, the model's outputs
  and the loss's own tensors (for a language model the fp32 logits and their
  log-softmax);
- backward: what is still saved, plus the gradients produced so far, plus the
  transient gradients of large tensors (for a large vocabulary the gradient of the
  logits, which is often the peak of the whole step);
- optimizer step: all gradients plus the optimizer's temporaries.

The forward and backward are *measured* on fake tensors
(:mod:`layerwise.analysis.memory`); weights, gradients, optimizer state and the
optimizer's temporaries follow from the parameter count, dtype and optimizer
(:data:`layerwise.vocab.OPTIMIZERS`, the table the Trainer builds its optimizer from).

A model whose blocks repeat (a transformer's layers) is traced with 2, 3 and 4 of its
identical blocks and the step extrapolated to all of them: every quantity of the step is
affine in the number of identical blocks, and the three traces check it (see
:func:`_extrapolated`), so a 126-block model plans in a fraction of a second.

Precision conventions (:data:`layerwise.vocab.PRECISIONS`):

- ``fp32``: fp32 weights, gradients, optimizer state and activations.
- ``bf16-mixed`` / ``fp16-mixed``: torch autocast. The weights stay fp32 and *are* the
  master copy (no second copy); matmuls run in 16 bits, so autocast makes 16-bit
  working copies of the weights, which autograd keeps for the backward where the
  input needs a gradient (counted under activations, shown apart). Gradients and
  optimizer state are fp32. This is Lightning's and litgpt's "bf16-mixed".
- ``bf16-true`` / ``fp16-true``: the weights themselves are 16-bit; gradients and
  torch's optimizer state (``zeros_like(param)``) are 16-bit too; no master copy
  (litgpt's "bf16-true"). With ``master_weights=True`` an fp32 copy of the
  trainable weights is kept and the optimizer state is fp32 (the DeepSpeed /
  Megatron convention: 2 + 2 + 4 + 4 + 4 = 16 bytes per trainable parameter
  with Adam).

Quantised frozen bases (``base_dtype``: ``nf4``, ``fp4``, ``int8``; bitsandbytes'
formats, :data:`layerwise.vocab.QUANTIZATIONS`): every frozen ``nn.Linear`` weight
outside the head is stored packed. The parameter counts stay the logical counts; the
bytes are the stored ones, per layer. Each matmul on such a weight holds a dequantized
copy in the compute dtype while it runs (forward and backward); autograd keeps only the
packed weight.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import json
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from layerwise.analysis.memory import (
    StepTrace,
    onednn_conv_workspace,
    trace_step,
)
from layerwise.errors import (
    ConfigError,
    InputShapeError,
    LayerwiseError,
    UnknownNameError,
    suggest,
)
from layerwise.vocab import (
    DEFAULT_MOMENTUM,
    OPTIMIZERS,
    PRECISIONS,
    OptimizerSpec,
    optimizer_spec,
    precision_spec,
    quant_spec,
)

DEVICES = ("cuda", "cpu")
SHARDING = ("ddp", "zero1", "zero2", "zero3", "fsdp")
GiB = 1024**3
# DeepSpeed's default reduce_bucket_size (elements): ZeRO-1/2 reduce gradients through a buffer this size
DEEPSPEED_BUCKET = 500_000_000
MIN_RUN = 16  # identical consecutive blocks from which the step is extrapolated rather than traced whole


def _check_precision(name: str) -> str:
    return precision_spec(name).name


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


def make_batch(model: nn.Module, inputs, input_shape, batch_size: int, seq_len: int | None):
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
        batch = model.example_inputs(batch_size=batch_size, seq_len=seq_len)
        if seq_len is not None and not any(
                isinstance(t, torch.Tensor) and not t.is_floating_point() and t.dim() >= 2 and t.shape[1] == seq_len
                for t in torch.utils._pytree.tree_leaves(batch)):
            shapes = [list(t.shape) for t in torch.utils._pytree.tree_leaves(batch) if isinstance(t, torch.Tensor)]
            raise ConfigError(f"--seq-len {seq_len}: {type(model).__name__} takes no sequence (its input is "
                              f"{shapes[0] if len(shapes) == 1 else shapes}); drop --seq-len, or give --input-shape")
        return batch
    raise LayerwiseError(f"{type(model).__name__} has no example_inputs(); pass --input-shape (e.g. 8,3,224,224)")


def _size(dt: torch.dtype) -> int:
    return torch.empty((), dtype=dt).element_size()


def _dtype_name(dt: torch.dtype) -> str:
    return str(dt).replace("torch.", "")


def _leaves(batch) -> list[torch.Tensor]:
    return list({id(t): t for t in torch.utils._pytree.tree_leaves(batch) if isinstance(t, torch.Tensor)}.values())


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
    """Memory (bytes, per device) and compute of one training step. See the module docstring."""

    model: str
    strategy: str | None
    optimizer: str
    optimizer_impl: str  # fused | foreach | for-loop: the update's implementation (the Trainer's choice by default)
    momentum: float
    precision: str
    device: str  # where the step runs (cuda | cpu): decides kernels, the optimizer's implementation, RNN path
    batch_size: int  # per device (the micro-batch one device runs)
    seq_len: int | None
    input_shape: Any
    grad_checkpointing: bool
    params: int  # logical parameter count, each tensor once (quantised weights count as their elements)
    trainable: int
    weights_by_dtype: dict[str, int]  # stored bytes of parameters per storage dtype (nf4, int8, bfloat16 …), per device
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
    flops_per_step: int  # forward + backward (+ recomputation under checkpointing), frozen-aware, per device
    recompute_flops: int
    tokens_per_step: int | None  # per device
    tflops: float | None  # achieved throughput per device the time is computed at
    seconds_per_step: float | None
    devices: int = 1
    shard: str = "ddp"
    comm_buffer_bytes: int = 0  # communication buffers: DDP's gradient buckets, ZeRO's reduce bucket, gathered units
    comm_buffer_how: str = ""
    base_dtype: str | None = None  # storage format of the frozen Linear weights (nf4, fp4, int8) or None
    quantized_params: int = 0  # logical parameters stored in base_dtype
    quantized_layers: list[dict] = field(default_factory=list)  # per layer: name, shape, params, stored bytes
    blocks_traced: dict | None = None  # extrapolation: {"blocks": k, "traced": [2, 3, 4], "container": name}
    active_params: int | None = None  # a mixture of experts: parameters each token uses (top-k routing); None: all
    activation_formula: list[dict] = field(default_factory=list)  # Korthikanti et al. (2022) next to the trace
    inference: InferencePlan | None = None
    strategy_record: dict | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def persistent_bytes(self) -> int:
        return (self.weight_bytes + self.buffer_bytes + self.master_weight_bytes + self.optimizer_state_bytes
                + self.input_bytes + self.comm_buffer_bytes)

    def components(self) -> list[tuple[str, int, str]]:
        """(component, bytes, how it is obtained), in the order of the breakdown table."""
        w = ", ".join(f"{k} {v:,}" for k, v in self.weights_by_dtype.items()) or "none"
        spec = OPTIMIZERS[self.optimizer]
        gdt = ", ".join(k for k in self.weights_by_dtype if k not in ("nf4", "fp4", "int8")) or "-"
        per = f" / {self.devices} devices" if self.devices > 1 else ""
        wsh = per if self.shard in ("zero3", "fsdp") else ""
        gsh = per if self.shard in ("zero2", "zero3", "fsdp") else ""
        osh = per if self.shard != "ddp" else ""
        rows = [
            (f"weights ({w} bytes)", self.weight_bytes,
             ("exact: parameters × dtype size" if not self.base_dtype else
              f"exact: {self.quantized_params:,} frozen Linear (and expert) weights stored {self.base_dtype}, "
              "the rest × dtype size")
             + wsh),
            ("buffers", self.buffer_bytes, "exact: buffer storages"),
            ("master weights (fp32)", self.master_weight_bytes,
             ("fp32 copy of trainable weights" + osh) if self.master_weight_bytes else
             ("none: the fp32 weights are the master copy" if PRECISIONS[self.precision].autocast_dtype else "none kept")),
            (f"gradients (trainable, {gdt})", self.gradient_bytes, "measured: fake backward" + gsh),
            (f"optimizer state ({spec.describe(self.momentum)})", self.optimizer_state_bytes,
             "states × trainable × dtype" + osh),
            ("inputs", self.input_bytes, "exact: the batch (per device)"),
        ]
        if self.devices > 1 or self.comm_buffer_bytes:
            rows.append((f"communication buffers ({self.shard})", self.comm_buffer_bytes, self.comm_buffer_how))
        rows += [
            ("activations (saved for backward, outputs)", self.activation_bytes, "measured: fake forward"),
            ("  of which 16-bit weight copies (autocast)", self.weight_copy_bytes, "measured"),
            ("loss (fp32 logits, log-softmax)", self.loss_bytes, "measured: fake forward"),
            ("backward transient (logit grads, grads so far)", self.backward_transient_bytes, "measured: fake backward"),
            ("optimizer step transient", self.optimizer_step_transient_bytes,
             f"{self.optimizer_impl} {spec.torch_class} temporaries"),
        ]
        return rows

    def peak_breakdown(self) -> list[tuple[str, int]]:
        """What is live at the peak, in parts that sum to ``peak_bytes`` exactly."""
        parts = [
            ("weights + buffers", self.weight_bytes + self.buffer_bytes),
            ("master weights", self.master_weight_bytes),
            ("optimizer state", self.optimizer_state_bytes),
            ("inputs", self.input_bytes),
            ("communication buffers", self.comm_buffer_bytes),
        ]
        if self.peak_phase == "optimizer step":
            if self.shard == "fsdp" and self.devices > 1:  # the root is resharded by then
                parts[-1] = ("communication buffers", 0)
            parts += [("gradients", self.gradient_bytes), ("optimizer step transient", self.optimizer_step_transient_bytes)]
        else:
            top = self.forward_peak_bytes if self.peak_phase == "forward" else self.backward_peak_bytes
            act = self.activation_bytes - self.weight_copy_bytes
            parts += [("activations", act), ("16-bit weight copies", self.weight_copy_bytes), ("loss", self.loss_bytes)]
            parts.append((f"{self.peak_phase} transient",
                          top - self.persistent_bytes - act - self.weight_copy_bytes - self.loss_bytes))
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


# ----------------------------------------------------------------------------- optimizer


def optimizer_bytes(spec: OptimizerSpec, groups: list[list[int]], tensors_on_device: bool, impl: str,
                    n_states: int) -> tuple[int, int]:
    """(persistent state bytes, peak temporaries of one step) for parameter groups of trainable
    tensors (``groups``: each tensor's bytes in its state dtype, in the optimizer's order).

    ``tensors_on_device``: the 0-dim ``step`` tensors live on the device. torch updates one
    parameter group at a time: foreach temporaries span the group, for-loop ones one tensor
    while the previous tensor's last temporary is still referenced; fused kernels update in
    place.
    """
    sizes = [s for g in groups for s in g]
    state = n_states * sum(sizes)
    if spec.step_tensor and tensors_on_device:
        state += 4 * len(sizes)  # 0-dim fp32 step per parameter
    temp = 0
    for g in groups:
        if impl == "foreach":
            temp = max(temp, spec.foreach_temps * sum(g))
        elif impl == "for-loop" and spec.loop_temps:
            temp = max(temp, max((spec.loop_temps * s + (g[i - 1] if i else 0) for i, s in enumerate(g)), default=0))
    return state, temp


# ----------------------------------------------------------------------------- repeated blocks


@dataclass
class _Run:
    container: nn.Module  # the ModuleList / Sequential holding the blocks
    name: str
    keys: list[str]  # the container's keys, in order
    run: list[str]  # the keys of the longest run of identical consecutive blocks


def _signature(module: nn.Module) -> tuple:
    """What makes two blocks interchangeable in a step: structure, tensors, flags and plain attributes."""
    sig = []
    for name, m in module.named_modules():
        attrs = tuple(sorted((k, v) for k, v in vars(m).items()
                             if not k.startswith("_") and k != "training" and "idx" not in k and "index" not in k
                             and isinstance(v, (int, float, str, bool, type(None), tuple))
                             and (not isinstance(v, tuple) or all(isinstance(x, (int, float, str, bool)) for x in v))))
        tensors = tuple((n, tuple(p.shape), p.dtype, p.requires_grad) for n, p in m._parameters.items() if p is not None)
        bufs = tuple((n, tuple(b.shape), b.dtype) for n, b in m._buffers.items() if b is not None)
        hooks = (len(m._forward_hooks), len(m._forward_pre_hooks), len(m._backward_hooks))
        sig.append((name, type(m), m.training, attrs, tensors, bufs, hooks, "forward" in m.__dict__))
    return tuple(sig)


def _repeated_run(model: nn.Module) -> _Run | None:
    """The longest run of identical consecutive blocks in one ModuleList/Sequential, if any."""
    from layerwise.analysis.kinds import detect_blocks

    block_ids = detect_blocks(model)
    if not block_ids:
        return None
    owners: dict[int, int] = {}
    for m in model.modules():
        for p in m._parameters.values():
            if p is not None:
                owners[id(p)] = owners.get(id(p), 0) + 1
    best: _Run | None = None
    for cname, c in model.named_modules():
        if not isinstance(c, (nn.ModuleList, nn.Sequential)):
            continue
        keys = list(c._modules)
        i = 0
        while i < len(keys):
            b = c._modules[keys[i]]
            if b is None or id(b) not in block_ids:
                i += 1
                continue
            sig = _signature(b)
            j = i + 1
            while j < len(keys) and c._modules[keys[j]] is not None and id(c._modules[keys[j]]) in block_ids \
                    and c._modules[keys[j]] is not b and _signature(c._modules[keys[j]]) == sig:
                j += 1
            run = keys[i:j]
            # a block applied twice, or sharing a weight with another module, is not independent
            independent = all(owners[id(p)] == 1 for k in run for p in c._modules[k].parameters()) and \
                len({id(c._modules[k]) for k in run}) == len(run)
            if independent and (best is None or len(run) > len(best.run)):
                best = _Run(c, cname, keys, run)
            i = j
    return best


@contextlib.contextmanager
def _keep_blocks(run: _Run, n: int):
    """Temporarily leave only the first ``n`` blocks of ``run`` in its container (keys renumbered)."""
    c = run.container
    saved = c._modules
    drop = set(run.run[n:])
    kept = [(k, m) for k, m in saved.items() if k not in drop]
    numeric = isinstance(c, nn.ModuleList) or all(k.isdigit() for k in saved)
    c._modules = OrderedDict((str(i) if numeric else k, m) for i, (k, m) in enumerate(kept))
    try:
        yield
    finally:
        c._modules = saved


_TRACE_FIELDS = ("saved_bytes", "saved_tensors", "weight_copy_bytes", "activation_bytes", "loss_bytes",
                 "forward_peak_bytes", "backward_peak_bytes", "gradient_bytes", "gathered_root_bytes")


def _extrapolated(model: nn.Module, trace_fn: Callable[[], StepTrace], flops_fn: Callable[[], dict]):
    """(trace, flops, info): the step of ``model``, from traces of fewer of its repeated blocks.

    With a run of k identical blocks, every quantity q of the step is affine in the number
    n of those blocks kept: q(n) = q(2) + (n - 2)·(q(3) - q(2)). A peak is a maximum over
    moments of the step, each affine in n with slope 0, a (the activations one block
    keeps) or g (one block's gradients), so the peak's slope can only grow to the larger
    of a and g. The traces at 2, 3 and 4 blocks check both: equal differences, and a
    peak whose slope is already the largest possible. Otherwise the model is traced whole.
    """
    run = _repeated_run(model)
    if run is None or len(run.run) < MIN_RUN:
        fl = flops_fn()  # first: the analysis names the layer an input does not fit
        return trace_fn(), fl, None
    k = len(run.run)
    traces, flops = [], []
    for n in (2, 3, 4):
        with _keep_blocks(run, n):
            if n < 4:
                flops.append(flops_fn())
            traces.append(trace_fn())
    vals = {f: [getattr(t, f) for t in traces] for f in _TRACE_FIELDS}
    steps = {f: (v[1] - v[0], v[2] - v[1]) for f, v in vals.items()}
    affine = all(d1 == d2 for d1, d2 in steps.values())
    a, g = steps["activation_bytes"][0], steps["gradient_bytes"][0]
    safe = steps["forward_peak_bytes"][0] >= a and steps["backward_peak_bytes"][0] >= max(a, g)
    if not (affine and safe):
        fl = flops_fn()
        return trace_fn(), fl, {"blocks": k, "container": run.name, "traced": "all",
                                        "why": "the step is not affine in the number of blocks"}
    est = StepTrace(**{f: vals[f][0] + (k - 2) * steps[f][0] for f in _TRACE_FIELDS})
    fl = {key: flops[0][key] + (k - 2) * (flops[1][key] - flops[0][key]) for key in flops[0]}
    per_block = {f: steps[f][0] for f in _TRACE_FIELDS}
    return est, fl, {"blocks": k, "container": run.name, "traced": [2, 3, 4], "per_block": per_block}


# ----------------------------------------------------------------------------- quantised bases


def _quantized_weights(model: nn.Module, head: bool = False) -> list[tuple[str, nn.Parameter]]:
    """What bitsandbytes stores quantised: frozen ``nn.Linear`` weights (outside the head unless
    ``head``), and the frozen 3-D weights of expert layers (kind "expert"), whose experts are the
    bulk of a mixture-of-experts model."""
    from layerwise.analysis.kinds import assign_kinds

    kinds = assign_kinds(model)
    out, seen = [], set()
    for name, m in model.named_modules():
        if kinds.get(name) == "expert" and not isinstance(m, nn.Linear):
            for pn, w in m._parameters.items():
                if w is not None and w.dim() >= 3 and not w.requires_grad and id(w) not in seen:
                    seen.add(id(w))
                    out.append((f"{name}.{pn}" if name else pn, w))
            continue
        if not isinstance(m, nn.Linear):
            continue
        if not head and (kinds.get(name) == "head" or any(
                kinds.get(name.rsplit(".", i)[0]) == "head" for i in range(1, name.count(".") + 1))):
            continue
        w = m.weight
        if w is None or w.requires_grad or id(w) in seen or w.dim() != 2:
            continue
        seen.add(id(w))
        out.append((name + ".weight", w))
    return out


def _matrix_shape(shape: tuple[int, ...]) -> tuple[int, int]:
    """A weight as the 2-D matrix bitsandbytes quantises: experts (E, out, in) as (E·out, in)."""
    rows = 1
    for d in shape[:-1]:
        rows *= d
    return rows, shape[-1]


# ----------------------------------------------------------------------------- sharding


def _unit_params(model: nn.Module, params: list[nn.Parameter], dtype_of) -> tuple[int, int]:
    """(bytes of the largest FSDP unit's parameters, bytes of the root unit's own parameters).

    A unit is a repeated block (``fully_shard`` per block, then the root), the root owns the rest."""
    from layerwise.analysis.kinds import detect_blocks

    ids = detect_blocks(model)
    blocks = [m for m in model.modules() if id(m) in ids]
    in_blocks: set[int] = set()
    largest = 0
    for b in blocks:
        ps = {id(p): p for p in b.parameters()}
        in_blocks |= set(ps)
        largest = max(largest, sum(p.numel() * _size(dtype_of(p)) for p in ps.values()))
    root = sum(p.numel() * _size(dtype_of(p)) for p in params if id(p) not in in_blocks)
    return largest, root


def _largest_layer(params_by_module: list[tuple[nn.Module, list[nn.Parameter]]]) -> int:
    """DeepSpeed's ``largest_layer_params``: the most parameters one module owns itself."""
    return max((sum(p.numel() for p in ps) for _, ps in params_by_module), default=0)


# ----------------------------------------------------------------------------- the planner


def plan(
    model: nn.Module,
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
    strategy: str | None = None,
    strategy_record: dict | None = None,
    momentum: float = DEFAULT_MOMENTUM,
    optimizer_impl: str = "auto",
    base_dtype: str | None = None,
    double_quant: bool = True,
    quantize_head: bool = False,
    quant_saves_input: bool = False,
    devices: int = 1,
    shard: str = "ddp",
    extrapolate: bool = True,
    activation_formula: bool = False,
    param_groups: list[list[nn.Parameter]] | None = None,
    rnn_path: str | None = None,
    compute_flops: bool = True,
) -> Plan:
    """Plan the memory and compute of one training step of ``model`` as it is.

    Args:
        model: any ``nn.Module``, on any device (``meta`` is cheapest); it is not changed.
            Its ``requires_grad`` flags say what trains (apply a strategy first, or use
            :func:`layerwise.jobs.plan.plan`, which does).
        optimizer: a name of :data:`layerwise.vocab.OPTIMIZERS`; ``momentum`` for SGD and
            RMSprop (the Trainer's default 0.9); ``optimizer_impl``: auto (the Trainer's
            choice: fused where torch has it, else foreach), fused, foreach or for-loop.
        precision: a name of :data:`layerwise.vocab.PRECISIONS`.
        batch_size, seq_len: the inputs ``model.example_inputs(batch_size, seq_len)``
            makes, per device; or ``input_shape`` (e.g. ``[8, 3, 224, 224]``), or
            ``inputs`` (tensors).
        grad_checkpointing: each repeated block (``roles.mark_block`` or detected) runs
            under ``torch.utils.checkpoint`` and is recomputed in the backward.
        tflops: achieved throughput per device in TFLOP/s for ``seconds_per_step``.
        device: ``"cuda"`` or ``"cpu"``, where the step will run.
        master_weights: with ``bf16-true``/``fp16-true``, keep fp32 master weights and
            fp32 optimizer state.
        loss_fn: ``output -> loss``; default :func:`layerwise.analysis.memory.default_loss`.
        inference_context: also plan inference (weights + KV cache) at this context.
        strategy, strategy_record: the strategy that made the model what it is (labels).
        base_dtype: ``nf4``, ``fp4`` or ``int8``: frozen Linear weights stored quantised
            (``double_quant``: bitsandbytes' nested quantisation of the 4-bit absmax).
            ``quantize_head``: the output layer too (litgpt's bitsandbytes plugin converts
            every Linear; transformers keeps the output layer). ``quant_saves_input``: the
            quantised layers keep their input for the backward, as bitsandbytes did in 2023.
        devices, shard: data parallel over ``devices`` with ``ddp``, ``zero1``, ``zero2``,
            ``zero3`` or ``fsdp``; every byte of the plan is then per device.
        extrapolate: trace 2, 3 and 4 of the repeated blocks and extrapolate (exact; see
            :func:`_extrapolated`). activation_formula: add Korthikanti et al.'s per-layer
            formula next to the traced activations of a transformer block.
        param_groups: the optimizer's parameter groups (the Trainer's: decayed and not);
            default one group of every trainable parameter.
        rnn_path: how LSTMs are traced: "onednn" (the kernel a CPU step runs, with its
            workspace; the default on the CPU) or "native" (PyTorch's own ops, standing for
            cuDNN's reserve space; the default on CUDA).
        compute_flops: False skips the FLOP analysis (memory only: FLOPs and time are 0/None).
    """
    spec = optimizer_spec(optimizer)
    prec = precision_spec(precision)
    precision = prec.name
    _check_positive(batch_size, "batch_size")
    _check_positive(seq_len, "seq_len", allow_none=True)
    _check_positive(devices, "--devices")
    if device not in DEVICES:
        raise UnknownNameError(f"unknown device {device!r}; expected one of {', '.join(DEVICES)}")
    if shard not in SHARDING:
        raise UnknownNameError(f"unknown --shard {shard!r}; expected one of {', '.join(SHARDING)}{suggest(shard, SHARDING)}")
    if tflops is not None and not (isinstance(tflops, (int, float)) and not isinstance(tflops, bool) and tflops > 0
                                   and tflops != float("inf")):
        raise ConfigError(f"--tflops: expected a number > 0, got {tflops!r}")
    if not isinstance(momentum, (int, float)) or isinstance(momentum, bool) or not 0 <= momentum < 1:
        raise ConfigError(f"--momentum: expected a number in [0, 1), got {momentum!r}")
    param_dtype, amp_dtype = prec.param_dtype, prec.autocast_dtype
    if master_weights and amp_dtype is not None:
        raise ConfigError(f"master_weights: {precision} keeps fp32 weights already (they are the master copy); "
                          "use it with bf16-true or fp16-true")
    if master_weights and param_dtype == torch.float32:
        raise ConfigError("master_weights: fp32 weights need no fp32 master copy; use it with bf16-true or fp16-true")
    if shard == "fsdp" and devices > 1 and optimizer_impl == "auto":
        # FSDP2's parameters are DTensors: torch has no fused kernel for them, and foreach only on CUDA
        optimizer_impl = "foreach" if device == "cuda" else "for-loop"
    impl = spec.implementation(device, optimizer_impl)
    if not spec.trainer and device != "cuda":
        raise ConfigError(f"--optimizer {optimizer}: {spec.torch_class} runs on CUDA only; plan it with --device cuda")
    qspec = quant_spec(base_dtype) if base_dtype is not None else None
    if qspec is not None and amp_dtype is not None:
        raise ConfigError(f"--base-dtype {base_dtype}: bitsandbytes dequantizes to the compute dtype itself; "
                          f"use --precision bf16-true (QLoRA's setting), fp16-true or fp32, not {precision}")
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
    m = model if on_meta else meta_copy(model)  # the planner never changes the model it is given
    meta_in = make_batch(m, inputs, input_shape, batch_size, seq_len)
    blocks = _blocks(m) if grad_checkpointing else []
    if grad_checkpointing and not blocks:
        raise ConfigError(f"grad_checkpointing: {name} has no repeated blocks to checkpoint "
                          "(mark them with layerwise.roles.mark_block)")

    params = list({id(p): p for p in m.parameters()}.values())
    trainable = [p for p in params if p.requires_grad]
    if not trainable:
        raise ConfigError(f"{name}: nothing trains (every parameter is frozen)")

    def dtype_of(t: torch.Tensor) -> torch.dtype:
        return param_dtype if t.is_floating_point() else t.dtype

    quantized = _quantized_weights(m, quantize_head) if qspec is not None else []
    if qspec is not None and not quantized:
        raise ConfigError(f"--base-dtype {base_dtype}: no frozen Linear weight to store quantised "
                          f"(strategy {strategy or 'as built'} trains them all); use it with lora, qlora, head or top-k")
    qids = {id(p) for _, p in quantized}
    grad_shards = devices if shard in ("zero2", "zero3", "fsdp") else 1
    fsdp = shard == "fsdp" and devices > 1
    if fsdp and not _blocks(m):
        raise ConfigError(f"--shard fsdp: {name} has no repeated blocks to shard as units (fully_shard per block)")

    def trace_fn() -> StepTrace:
        return trace_step(m, meta_in, precision, grad_checkpointing, _blocks(m) if grad_checkpointing else [],
                          loss_fn, workspace=onednn_conv_workspace if device == "cpu" else None,
                          param_dtype=param_dtype if param_dtype != torch.float32 else None,
                          rnn_path=rnn_path or ("onednn" if device == "cpu" else "native"), dequantized=qids or None,
                          grad_shards=grad_shards, fsdp_units=_blocks(m) if fsdp else None,
                          dequantized_saves_input=quant_saves_input)

    def flops_fn() -> dict:
        from layerwise.analysis.core import analyze

        if not compute_flops:
            return {"flops_train": 0, "recompute": 0, "active": 0}
        a = analyze(m, inputs=meta_in, name=name)  # FLOPs; also names the layer an input does not fit
        recompute = sum(r.flops_total for r in a.rows if r.is_block and r.reuse_of is None) if grad_checkpointing else 0
        # parameters a token uses under top-k routing (mixtures of experts), where the analysis gives them
        active = getattr(a.totals, "active_params", 0) or 0
        return {"flops_train": a.totals.flops_train, "recompute": recompute, "active": active}

    if extrapolate:
        trace, fl, run_info = _extrapolated(m, trace_fn, flops_fn)
    else:
        fl = flops_fn()
        trace, run_info = trace_fn(), None

    # ---- persistent state, per device
    by_dtype: dict[str, int] = {}
    q_layers = []
    for p in params:
        if id(p) in qids:
            continue
        k = _dtype_name(dtype_of(p))
        by_dtype[k] = by_dtype.get(k, 0) + p.numel() * _size(dtype_of(p))
    if qspec is not None:
        for lname, p in quantized:
            stored = qspec.stored_bytes(_matrix_shape(tuple(p.shape)), double_quant)
            q_layers.append({"name": lname, "shape": list(p.shape), "params": p.numel(), "stored_bytes": stored,
                             "bytes_unquantized": p.numel() * _size(param_dtype)})
        by_dtype = {base_dtype: sum(q["stored_bytes"] for q in q_layers), **by_dtype}
    full_weight_bytes = sum(by_dtype.values())
    buffer_bytes = sum(b.numel() * _size(dtype_of(b)) for b in {id(b): b for b in m.buffers()}.values())
    state_dtype = spec.state_dtype or (torch.float32 if master_weights else param_dtype)
    def nbytes(p: torch.Tensor) -> int:
        return p.numel() * _size(state_dtype if p.is_floating_point() else p.dtype)

    train_ids = {id(p) for p in trainable}
    groups = [[q for q in g if id(q) in train_ids] for g in (param_groups or [])]
    groups = [g for g in groups if g]
    if sum(len(g) for g in groups) != len(trainable):
        groups = [trainable]
    n_states = len(spec.states(momentum))
    # 0-dim step tensors live on the device on the CPU, and on CUDA only with fused kernels
    opt_state, opt_temp = optimizer_bytes(spec, [[nbytes(q) for q in g] for g in groups],
                                          device == "cpu" or impl == "fused", impl, n_states)
    master = sum(p.numel() * 4 for p in trainable) if master_weights else 0
    if master_weights:
        opt_temp += sum(p.numel() * 4 for p in trainable)  # fp32 gradients for the master copy, before the step
    grads = trace.gradient_bytes
    input_bytes = sum(t.numel() * _size(dtype_of(t)) for t in _leaves(meta_in))

    weight_bytes = full_weight_bytes
    comm, comm_how = 0, ""
    shard_note = None
    if devices > 1 or shard != "ddp":
        N = devices
        grad_full = sum(p.numel() * _size(dtype_of(p)) for p in trainable)
        if shard != "ddp":  # optimizer state, master weights and their fp32 gradients are partitioned
            steps = 4 * len(trainable) if (spec.step_tensor and (device == "cpu" or impl == "fused")) else 0
            opt_state, master = -(-(opt_state - steps) // N) + steps, -(-master // N)  # every device has each step
            opt_temp = -(-opt_temp // N)
        if shard == "ddp":
            comm = grad_full if N > 1 else 0
            comm_how = "torch DDP's gradient buckets: a copy of every trainable gradient (gradient_as_bucket_view=False)"
        elif shard in ("zero1", "zero2"):
            elem = _size(param_dtype)
            comm = min(DEEPSPEED_BUCKET, sum(p.numel() for p in trainable)) * elem
            comm_how = (f"DeepSpeed's {'all-reduce' if shard == 'zero1' else 'reduce'} bucket: "
                        f"min(reduce_bucket_size 5e8, trainable) elements × {elem} bytes")
        elif shard == "zero3":
            largest = _largest_layer([(mod, [p for p in mod._parameters.values() if p is not None])
                                      for mod in m.modules()])
            comm = largest * (_size(param_dtype) + _size(param_dtype))
            comm_how = "DeepSpeed's gathered largest layer: its parameters and gradients unsharded (4 × largest layer in 16 bits)"
            weight_bytes = -(-full_weight_bytes // N)
        else:  # fsdp: the all-gathers and reduce-scatters are played in the trace (see trace_step)
            comm = trace.gathered_root_bytes
            comm_how = ("FSDP2 (fully_shard per block, then the root): the root's parameters, all-gathered from the "
                        "forward to the end of the backward; each block's parameters are gathered while it runs "
                        "and its gradients reduce-scattered when its backward ends (in the transients)")
            weight_bytes = -(-full_weight_bytes // N)
        if shard in ("zero3", "fsdp"):
            by_dtype = {k: -(-v // N) for k, v in by_dtype.items()}
        shard_note = (f"{N} devices, {shard}: per-device bytes; micro-batch {batch_size} per device "
                      f"(global batch {batch_size * N})")

    persistent = weight_bytes + buffer_bytes + master + opt_state + input_bytes + comm
    gathered = trace.gathered_root_bytes  # counted in the trace's peaks: shown as communication buffers instead
    phases = {
        "forward": persistent + trace.forward_peak_bytes - gathered,
        "backward": persistent + trace.backward_peak_bytes - gathered,
        # FSDP reshards the root after the backward: its gathered parameters are gone by the step
        "optimizer step": persistent - (comm if fsdp else 0) + grads + opt_temp,
    }
    phase = max(phases, key=phases.get)

    flops = fl["flops_train"] + fl["recompute"]
    tokens = None
    first = next((t for t in torch.utils._pytree.tree_leaves(meta_in) if isinstance(t, torch.Tensor)), None)
    if first is not None and first.dim() == 2 and not first.is_floating_point():
        tokens = first.shape[0] * first.shape[1]
    notes = _notes(precision, master_weights, device, impl, spec, momentum)
    if shard_note:
        notes.insert(0, shard_note)
    if qspec is not None:
        notes.insert(0, f"base stored {base_dtype} (bitsandbytes{', double quantisation' if double_quant and qspec.bits == 4 else ''}):"
                        f" {len(quantized)} frozen Linear (and expert) weights, {sum(p.numel() for _, p in quantized):,} parameters "
                        f"in {by_dtype[base_dtype]:,} bytes; the parameter count is the logical count")
    if run_info and run_info.get("traced") != "all":
        notes.append(f"{run_info['blocks']} identical blocks in {run_info['container']}: traced with 2, 3 and 4 and "
                     "extrapolated (exact: the step is affine in the number of blocks)")
    p = Plan(
        model=name, strategy=strategy, optimizer=optimizer, optimizer_impl=impl, momentum=float(momentum),
        precision=precision, device=device, batch_size=batch_size,
        seq_len=seq_len if seq_len is not None else (first.shape[1] if tokens else None),
        input_shape=[list(t.shape) for t in torch.utils._pytree.tree_leaves(meta_in) if isinstance(t, torch.Tensor)],
        grad_checkpointing=grad_checkpointing,
        params=sum(q.numel() for q in params), trainable=sum(q.numel() for q in trainable),
        weights_by_dtype=by_dtype, weight_bytes=weight_bytes, buffer_bytes=buffer_bytes, master_weight_bytes=master,
        gradient_bytes=grads, optimizer_state_bytes=opt_state, input_bytes=input_bytes,
        activation_bytes=trace.activation_bytes - gathered, saved_bytes=trace.saved_bytes,
        weight_copy_bytes=trace.weight_copy_bytes, loss_bytes=trace.loss_bytes,
        backward_transient_bytes=trace.backward_peak_bytes - trace.activation_bytes - trace.loss_bytes,
        optimizer_step_transient_bytes=opt_temp,
        forward_peak_bytes=phases["forward"], backward_peak_bytes=phases["backward"],
        step_peak_bytes=phases["optimizer step"], peak_bytes=phases[phase], peak_phase=phase,
        flops_per_step=flops, recompute_flops=fl["recompute"], tokens_per_step=tokens, tflops=tflops,
        seconds_per_step=flops / (tflops * 1e12) if (tflops and compute_flops) else None,
        devices=devices, shard=shard, comm_buffer_bytes=comm, comm_buffer_how=comm_how,
        base_dtype=base_dtype, quantized_params=sum(p.numel() for _, p in quantized), quantized_layers=q_layers,
        blocks_traced=run_info, strategy_record=strategy_record, notes=notes,
        active_params=fl.get("active") if fl.get("active") and fl.get("active") != sum(q.numel() for q in params) else None,
    )
    if p.active_params is not None:
        p.notes.insert(0, f"mixture of experts: {p.active_params:,} of {p.params:,} parameters active per token; every "
                          "expert's weights are resident (and its gradients and optimizer state, where it trains); "
                          "the activations follow the routed tokens (top-k rows per token)")
    if activation_formula:
        p.activation_formula = korthikanti_rows(m, p, run_info, trace_fn)
    if inference_context is not None:
        p.inference = plan_inference(model, precision=precision, batch_size=batch_size, context=inference_context, name=name)
    return p


def _blocks(model: nn.Module) -> list[nn.Module]:
    from layerwise.analysis.kinds import detect_blocks

    ids = detect_blocks(model)
    return [m for m in model.modules() if id(m) in ids]


def _notes(precision: str, master_weights: bool, device: str, impl: str, spec: OptimizerSpec, momentum: float) -> list[str]:
    prec = PRECISIONS[precision]
    notes = []
    if prec.autocast_dtype is not None:
        notes.append(f"{precision}: torch autocast; fp32 weights are the master copy, gradients and optimizer "
                     f"state fp32; {_dtype_name(prec.autocast_dtype)} weight copies kept for backward are counted in activations")
    elif prec.param_dtype != torch.float32:
        notes.append(f"{precision}: weights, gradients and optimizer state in {_dtype_name(prec.param_dtype)}"
                     + ("; fp32 master weights and fp32 optimizer state" if master_weights else "; no master copy"))
    notes.append(f"optimizer: {spec.describe(momentum)}, {impl} update" + (" (the Trainer's choice)" if spec.trainer else ""))
    notes.append("activations measured on fake CPU tensors (PyTorch's CPU kernel choices, flash attention); "
                 "kernel workspaces and allocator rounding/fragmentation are not included")
    if device == "cuda":
        notes.append("CUDA context (~0.3–1 GiB) and cuBLAS workspaces are outside torch.cuda.max_memory_allocated "
                     "and outside this plan")
    else:
        notes.append("cpu: oneDNN convolutions' blocked copies are added as a kernel workspace; LSTMs run oneDNN's "
                     "kernel with its workspace, as a CPU step does")
    return notes


# ----------------------------------------------------------------------------- Korthikanti et al.


def _transformer_shape(model: nn.Module) -> dict | None:
    """(hidden, heads, layers, uses flash/SDPA attention, dropout) of a transformer, from its config."""
    cfg = getattr(model, "config", None)
    if cfg is None:
        return None
    fam = getattr(cfg, "family", None)
    if fam == "gpt":
        return {"h": cfg.n_embd, "a": cfg.n_head, "L": cfg.n_layer, "dropout": cfg.dropout, "mlp": cfg.mlp,
                "ffn": cfg.ffn_size, "rope": cfg.pos_embedding == "rope"}
    if fam == "bert":
        return {"h": cfg.hidden, "a": cfg.n_head, "L": cfg.n_layer, "dropout": cfg.dropout, "mlp": "gelu",
                "ffn": cfg.intermediate, "rope": False}
    h = getattr(cfg, "hidden_size", None)
    a = getattr(cfg, "num_attention_heads", None)
    L = getattr(cfg, "num_hidden_layers", None)
    if h and a and L:
        return {"h": h, "a": a, "L": L, "dropout": getattr(cfg, "attention_dropout", 0.0) or 0.0}
    return None


def korthikanti_rows(model: nn.Module, p: Plan, run_info: dict | None, trace_fn) -> list[dict]:
    """Per-layer activations: the trace next to Korthikanti et al. (2022), sbh(34 + 5as/h) bytes.

    "Reducing Activation Recomputation in Large Transformer Models" (arXiv:2205.05198),
    eq. (1): a GPT layer with 16-bit activations, 1-byte dropout masks and no parallelism
    stores s·b·h·(34 + 5·a·s/h) bytes: 34sbh for the layer's inputs, projections, GeLU,
    norms and dropout masks, 5as²b for the attention scores (2as²b), their softmax
    (2as²b) and its dropout mask (as²b). Flash / SDPA attention keeps no s×s matrix (it
    saves its output and the log-sum-exp and recomputes the scores in the backward), so
    the 5as/h term does not apply.
    """
    shape = _transformer_shape(model)
    if shape is None or p.seq_len is None:
        return []
    per_block = None
    if run_info and isinstance(run_info.get("per_block"), dict):
        per_block = run_info["per_block"]["saved_bytes"]
    else:
        run = _repeated_run(model)
        if run is not None and len(run.run) >= 2:
            with _keep_blocks(run, 1):
                t1 = trace_fn()
            with _keep_blocks(run, 2):
                t2 = trace_fn()
            per_block = t2.saved_bytes - t1.saved_bytes
    if per_block is None:
        return []
    s, b, h, a = p.seq_len, p.batch_size, shape["h"], shape["a"]
    base, scores = 34 * s * b * h, 5 * a * s * s * b
    why = ["SDPA/flash attention keeps its output and log-sum-exp, not the s×s scores, softmax and dropout mask: "
           "the 5as/h term does not apply"]
    if not shape.get("dropout"):
        why.append("dropout 0: none of the formula's two sbh dropout masks")
    ffn, mlp = shape.get("ffn"), shape.get("mlp")
    if mlp == "swiglu" and ffn:
        why.append(f"a SwiGLU MLP {ffn / h:.2f}h wide (gate, up and their product kept) where the formula has a 4h GeLU MLP")
    elif ffn and ffn != 4 * h:
        why.append(f"an MLP {ffn / h:.2f}h wide where the formula has 4h")
    if shape.get("rope"):
        why.append("rotary embeddings keep the rotated q and k")
    if PRECISIONS[p.precision].compute_dtype == torch.float32:
        why.append("fp32 activations where the formula counts 16-bit ones")
    return [{
        "model": p.model, "seq_len": s, "batch": b, "hidden": h, "heads": a, "precision": p.precision,
        "traced_per_layer_bytes": per_block,
        "formula_34sbh": base, "formula_5as2b": scores, "formula_bytes": base + scores,
        "formula_without_scores_bytes": base,
        "why": "; ".join(why),
    }]


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
    prec = precision_spec(precision)
    _check_positive(batch_size, "batch_size")
    if not isinstance(context, int) or isinstance(context, bool) or context < 1:
        raise ConfigError(f"--context: expected an integer >= 1, got {context!r}")
    _check_seq_len(model, context, what="context")
    weights = sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())
    weight_bytes = weights * _size(prec.param_dtype)
    bpv = _size(prec.compute_dtype)
    shape = _decoder_shape(model)
    if shape is None:
        return InferencePlan(name or type(model).__name__, prec.name, batch_size, context, weight_bytes, None,
                             None, None, None, bpv, "no KV cache: not a decoder", weight_bytes)
    L, kv, hd = shape
    kv_bytes = 2 * L * kv * hd * context * batch_size * bpv
    formula = f"2 · {L} layers · {kv} kv heads · {hd} head dim · {context:,} positions · batch {batch_size} · {bpv} bytes"
    return InferencePlan(name or type(model).__name__, prec.name, batch_size, context, weight_bytes, kv_bytes,
                         L, kv, hd, bpv, formula, weight_bytes + kv_bytes)
