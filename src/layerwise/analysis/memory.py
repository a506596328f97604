"""Memory of one training step, measured by running it on fake tensors.

:func:`trace_step` runs the forward, the loss and the backward of a model on fake
CPU tensors (``torch._subclasses.fake_tensor.FakeTensorMode``: shapes, dtypes,
strides and storages, but no data and no compute), so it costs no memory and
works for a model built on the ``meta`` device. Every op runs through the same
kernel choice as on a real CPU (flash attention for ``scaled_dot_product_attention``,
autocast's casting rules, autograd's saving and freeing), and two instruments
watch it:

- ``torch.autograd.graph.saved_tensors_hooks`` sees every tensor autograd saves
  for the backward; the bytes are those of the *unique storages* behind them
  (a transposed weight, a view of a fused qkv output, the same input saved by
  three ops all count once). On the meta device ``data_ptr()`` is 0 for every
  tensor, so storages are told apart by the identity of their ``StorageImpl``
  (``untyped_storage()._cdata``), which is what views share.
- a ``TorchDispatchMode`` is a simulated allocator: each storage an op creates
  is added to the live total and removed again when the storage dies (a
  ``weakref.finalize`` on the storage object, which PyTorch keeps alive exactly as
  long as the storage). The peak of that total over the forward and backward is
  the activation peak, including the gradient of a large vocabulary's logits at
  the start of the backward and the gradients as they accumulate.

What the simulation cannot see: buffers a kernel allocates internally without
returning them (BLAS/oneDNN scratch space), and the rounding and fragmentation
of a caching allocator. ``layerwise.jobs.plan.measure`` checks the result
against a real step.
"""

from __future__ import annotations

import contextlib
import functools
import weakref
from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils import _pytree as pytree
from torch.utils._python_dispatch import TorchDispatchMode

from layerwise.analysis.trace import _tensors  # the one walker over nested tensors
from layerwise.errors import InputShapeError, LayerwiseError
from layerwise.vocab import precision_spec

_aten = torch.ops.aten
_prim_device = torch.ops.prim.device.default
_mkldnn_rnn_layer = torch.ops.aten.mkldnn_rnn_layer.default
_mkldnn_rnn_layer_backward = torch.ops.aten.mkldnn_rnn_layer_backward.default

def storage_key(t: torch.Tensor) -> int:
    """Identity of the storage behind ``t`` (shared by all its views), on any device, meta included."""
    return t.untyped_storage()._cdata


def storage_bytes(tensors) -> int:
    """Bytes of the unique storages behind ``tensors``."""
    seen: dict[int, int] = {}
    for t in tensors:
        if isinstance(t, torch.Tensor):
            seen.setdefault(storage_key(t), t.untyped_storage().nbytes())
    return sum(seen.values())


def default_loss(output: Any) -> torch.Tensor:
    """Cross-entropy of the model's first floating-point output against class 0, in fp32.

    The last dimension is the class dimension: (B, C) classifier scores, (B, T, V)
    language-model logits (flattened to (B·T, V), as GPT's own loss does); a single
    output column is a binary logit (BCE with logits). The targets are zeros; their
    values change no memory.
    """
    out = next((t for t in _tensor_leaves(output) if t.is_floating_point()), None)
    if out is None:
        raise LayerwiseError("the model returned no floating-point tensor to compute a loss on; pass loss_fn")
    if out.dim() == 0:
        return out.float()
    logits = out.float()  # a copy under mixed or 16-bit precision, the tensor itself in fp32
    if out.shape[-1] == 1:
        return F.binary_cross_entropy_with_logits(logits, torch.zeros_like(logits))
    flat = logits.reshape(-1, out.shape[-1])  # (N, C)
    target = torch.zeros(flat.shape[0], dtype=torch.long, device=out.device)  # (N,)
    return F.cross_entropy(flat, target)


def _tensor_leaves(x) -> list[torch.Tensor]:
    if isinstance(x, torch.Tensor):
        return [x]
    if hasattr(x, "__dataclass_fields__") and not isinstance(x, type):
        x = {k: getattr(x, k) for k in x.__dataclass_fields__}
    if isinstance(x, dict):
        x = list(x.values())
    if isinstance(x, (list, tuple)):
        return [t for v in x for t in _tensor_leaves(v)]
    return []


@functools.lru_cache(maxsize=None)
def _allocates(func) -> bool:
    """Whether an op can return a new storage: views, in-place and out= ops alias their inputs."""
    return any(ret.alias_info is None and "Tensor" in str(ret.type) for ret in func._schema.returns)


class Allocations(TorchDispatchMode):
    """A simulated allocator: the bytes of the storages ops create, while they live.

    Storages that existed before (parameters, buffers, inputs: ``external``) and
    views of any input are not allocations.

    Where PyTorch adds in place on real tensors but out of place on a tensor subclass
    (autograd accumulating a gradient, ``F.linear`` adding its bias after a batched
    matmul: "composite compliance"), the fake run allocates a sum and frees the left
    operand right away. So the peak of an ``add`` is settled only at the next op: if
    its left operand died in between, the add counts as in place.
    """

    def __init__(self, external: set[int], param_keys: set[int], workspace: Callable | None = None) -> None:
        super().__init__()
        self.workspace = workspace  # (func, args, out) -> bytes a kernel holds only while it runs
        self.external = external
        self.param_keys = param_keys
        self.sizes: dict[int, int] = {}
        self.current = 0
        self.peak = 0
        self.pending: tuple[int, int] | None = None  # (left operand of an add, live bytes with its sum)
        self.weight_copies: set[int] = set()  # storages holding casts of parameters (autocast)

    def _free(self, key: int) -> None:
        self.current -= self.sizes.pop(key, 0)
        self.weight_copies.discard(key)  # the address may come back for another storage

    def settle(self) -> None:
        if self.pending is not None:
            key, level = self.pending
            if key in self.sizes or key in self.external:  # the left operand lives on: a real out-of-place add
                self.peak = max(self.peak, level)
            self.pending = None

    def adjust(self, delta: int) -> None:
        """Bytes allocated (> 0) or freed (< 0) outside the ops: FSDP's all-gathered parameters."""
        self.settle()
        self.current += delta
        self.peak = max(self.peak, self.current)

    def reset_peak(self) -> None:
        self.settle()
        self.peak = self.current

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func is _prim_device and hasattr(args[0], "fake_device"):
            # asked by autograd for every gradient: answer without a trip through the fake mode
            return args[0].fake_device
        kwargs = kwargs or {}
        if self.pending is not None:
            self.settle()
        out = func(*args, **kwargs)
        if not _allocates(func):
            return out
        if func is _mkldnn_rnn_layer:
            _onednn_lstm_workspace(args, out)
        inputs = _tensors((args, kwargs), [])
        in_keys = {storage_key(t) for t in inputs}
        for t in _tensors(out, []):
            st = t.untyped_storage()
            key = st._cdata
            if key in self.sizes or key in in_keys or key in self.external:
                continue
            self.sizes[key] = st.nbytes()
            self.current += self.sizes[key]
            weakref.finalize(st, self._free, key)
            if func is _aten._to_copy.default and inputs and storage_key(inputs[0]) in self.param_keys:
                self.weight_copies.add(key)
        if func is _aten.add.Tensor and isinstance(args[0], torch.Tensor):
            self.pending = (storage_key(args[0]), self.current)
        else:
            extra = self.workspace(func, args, out) if self.workspace is not None else 0
            self.peak = max(self.peak, self.current + extra)
        return out


def _blocked_bytes(t: torch.Tensor, dims: tuple[int, ...] = (1,)) -> int:
    """Bytes of ``t`` with the given dimensions rounded up to a multiple of 16 (oneDNN's nChw16c layout)."""
    shape = list(t.shape)
    for d in dims:
        if d < len(shape):
            shape[d] = -(-shape[d] // 16) * 16
    n = 1
    for s in shape:
        n *= s
    return n * t.element_size()


def onednn_conv_workspace(func, args, out) -> int:
    """Scratch of PyTorch's CPU (oneDNN) convolution while it runs.

    oneDNN computes in a blocked layout (channels in groups of 16) and reorders into
    and out of it: the forward holds blocked copies of the weight and the output next
    to the plain output; the backward holds blocked copies of the output gradient, the
    input and the weight. An approximation read off the allocator's events (see
    docs/plan.md), not oneDNN's exact rule.
    """
    if func is _aten.convolution.default:
        w = args[1]
        return _blocked_bytes(w, (0, 1)) + _blocked_bytes(out)
    if func is _aten.convolution_backward.default:
        grad_out, x, w = args[0], args[1], args[2]
        return _blocked_bytes(grad_out) + _blocked_bytes(x) + _blocked_bytes(w, (0, 1))
    return 0


class SavedTensors:
    """``saved_tensors_hooks`` that record the unique storages autograd saves (parameters excluded)."""

    def __init__(self, exclude: set[int]) -> None:
        self.exclude = exclude
        self.sizes: dict[int, int] = {}
        self.tensors = 0

    def pack(self, t: torch.Tensor) -> torch.Tensor:
        self.tensors += 1
        key = storage_key(t)
        if key not in self.exclude:
            self.sizes.setdefault(key, t.untyped_storage().nbytes())
        return t

    @staticmethod
    def unpack(t: torch.Tensor) -> torch.Tensor:
        return t

    def hooks(self):
        return torch.autograd.graph.saved_tensors_hooks(self.pack, self.unpack)

    @property
    def bytes(self) -> int:
        return sum(self.sizes.values())


@contextlib.contextmanager
def checkpointed(blocks: list[nn.Module]):
    """Run each block under ``torch.utils.checkpoint`` (non-reentrant) while the context is open."""
    from torch.utils.checkpoint import checkpoint

    previous = []
    for b in blocks:
        previous.append(b.__dict__.get("forward"))
        original = b.forward

        def forward(*args, _f=original, **kwargs):
            return checkpoint(_f, *args, use_reentrant=False, **kwargs)

        b.forward = forward
    try:
        yield
    finally:
        for b, prev in zip(blocks, previous):
            if prev is None:
                del b.forward
            else:
                b.forward = prev


def _round_up(x: int, m: int) -> int:
    return -(-x // m) * m


def _good_ld(dim: int, size: int) -> int:
    """oneDNN's leading dimension: 64-byte aligned, and not a multiple of 256 elements (4K aliasing)."""
    ld = _round_up(dim, 64 // size)
    return ld + 64 // size if ld % 256 == 0 else ld


def onednn_lstm_workspace_bytes(steps: int, batch: int, input_size: int, hidden: int, itemsize: int) -> int:
    """Bytes of the workspace oneDNN's LSTM keeps from a training forward for its backward.

    PyTorch's CPU ``nn.LSTM`` runs each layer and direction through ``aten.mkldnn_rnn_layer``,
    which returns this workspace (a uint8 tensor that autograd saves). Its regions, in
    oneDNN's ``rnn_utils`` order, each starting on a 4096-byte page: the gates (T·B·4H),
    the hidden outputs (T·B·H), the layer states (2·(T+1)·B·max(I, H)), the cell states
    (2·(T+1)·B·H) in the input's dtype, then the fp32 gradients of the layer, iteration and
    cell states (2·(T+1)·B·max(I, H) twice, 2·(T+1)·B·H), leading dimensions padded by
    :func:`_good_ld`. Checked against the tensor the kernel returns (tests/analysis/test_plan.py).
    """
    T, B, I, H, s = steps, batch, input_size, hidden, itemsize
    state = max(I, H)
    regions = [
        T * B * _good_ld(4 * H, s) * s,  # gates
        T * B * _good_ld(H, s) * s,  # h_t
        2 * (T + 1) * B * _good_ld(state, s) * s,  # states (layer and iteration share them)
        2 * (T + 1) * B * H * s,  # cell states
        2 * (T + 1) * B * _good_ld(state, 4) * 4,  # diff states: layer
        2 * (T + 1) * B * _good_ld(state, 4) * 4,  # diff states: iteration
        2 * (T + 1) * B * H * 4,  # diff states: cell
        0,  # grid (GRU only): the offset still rounds up to a page
    ]
    offset = 0
    for r in regions:
        offset = _round_up(offset, 4096) + r
    return offset


def _onednn_lstm_workspace(args, out) -> None:
    """Give the fake workspace of ``aten.mkldnn_rnn_layer`` (size 0 on fake tensors) its real size.

    PyTorch hands the kernel time-major input (T, B, I) whatever its ``batch_first`` flag says."""
    x = args[0]
    n = onednn_lstm_workspace_bytes(x.shape[0], x.shape[1], x.shape[2], int(args[10]), x.element_size())
    out[3].untyped_storage().resize_(n)


def onednn_lstm_scratch_bytes(steps: int, batch: int, hidden: int, itemsize: int) -> int:
    """oneDNN's scratchpad for one LSTM layer call, forward or backward (freed when it returns).

    Page-aligned regions: the fp32 gates of every step (fp32 layers merge the gemms over
    time; bf16 layers run one step at a time), one step's hidden state, its fp32
    gradient, and the kernel's bookkeeping (4,664 bytes in fp32, about 6 KB in bf16). Read
    off the CPU allocator's events of oneDNN 3.12 in torch 2.13 (docs/plan.md): exact for
    fp32 layers of width 16 and more; within a few KB for bf16, whose blocked kernels
    vary with the batch.
    """
    T, B, H = steps, batch, hidden
    offset = 0
    gates = (T if itemsize == 4 else 1) * B * _good_ld(4 * H, 4) * 4
    for r in (gates, B * _good_ld(H, itemsize) * itemsize, B * _good_ld(H, 4) * 4, 0):
        offset = _round_up(offset, 4096) + r
    return offset + (4664 if itemsize == 4 else 6144)


def onednn_lstm_workspace(func, args, out) -> int:
    """Bytes oneDNN's LSTM kernels hold only while they run, besides what they return.

    Forward (``aten.mkldnn_rnn_layer``): the bias, the two weights reordered to its padded
    layout (I·ld(4H) and H·ld(4H) elements) and the scratchpad. Backward
    (``aten.mkldnn_rnn_layer_backward``): copies of the output, h and c gradients and the
    bias, the reordered weights and bias, and the scratchpad; a bf16 layer also stages its
    gradients and its results (input, h, c, weights, bias gradients) in fp32.
    """
    if func is _mkldnn_rnn_layer:
        x, H = args[0], int(args[10])
        s = x.element_size()
        T, B, I = x.shape
        ld = _good_ld(4 * H, s)
        return 4 * H * s + (I + H) * ld * s + onednn_lstm_scratch_bytes(T, B, H, s)
    if func is _mkldnn_rnn_layer_backward:
        x, H = args[0], int(args[15])
        s = x.element_size()
        T, B, I = x.shape
        ld = _good_ld(4 * H, s)
        staged = 0 if s == 4 else 4 * (T * B * I + 2 * B * H + (I + H) * 4 * H + 4 * H + T * B * H + 2 * B * H)
        return ((T * B * H + 2 * B * H) * s + 4 * H * s + (I + H) * ld * s + 4 * H * s
                + onednn_lstm_scratch_bytes(T, B, H, s) + staged)
    return 0


@contextlib.contextmanager
def native_rnns(model: nn.Module):
    """Run the model's RNN/LSTM/GRU layers through PyTorch's native implementation.

    On the CPU, ``nn.LSTM`` runs oneDNN's fused kernel (``aten.mkldnn_rnn_layer``) by
    default, and the plan for the CPU traces that path (with its workspace, see
    :func:`onednn_lstm_workspace_bytes`). A plan for CUDA traces the native
    implementation instead: ordinary autograd ops, whose saved tensors (the gates of
    every step) stand for cuDNN's reserve space.
    """
    handles = []
    previous: list[bool] = []

    def pre(_module, _args):
        previous.append(torch._C._get_mkldnn_enabled())
        torch._C._set_mkldnn_enabled(False)

    def post(_module, _args, _out):
        torch._C._set_mkldnn_enabled(previous.pop())

    for m in model.modules():
        if isinstance(m, nn.RNNBase):
            handles.append(m.register_forward_pre_hook(pre))
            handles.append(m.register_forward_hook(post, always_call=True))
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def autocast(precision: str, device_type: str = "cpu"):
    dtype = precision_spec(precision).autocast_dtype
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device_type, dtype=dtype)


@dataclass
class StepTrace:
    """What one simulated training step holds, in bytes (persistent state not included)."""

    saved_bytes: int  # unique storages saved for backward, parameters excluded
    saved_tensors: int  # tensors packed by saved_tensors_hooks (before deduplication)
    weight_copy_bytes: int  # of saved_bytes: casts of parameters (autocast's 16-bit working copies)
    activation_bytes: int  # live after the model's forward: saved tensors, outputs, checkpoint inputs
    loss_bytes: int  # live added by the loss (fp32 logits copy, log-softmax output)
    forward_peak_bytes: int  # peak during forward and loss
    backward_peak_bytes: int  # peak during backward (gradients included as they accumulate)
    gradient_bytes: int  # live after backward (the parameters' gradients)
    gathered_root_bytes: int = 0  # FSDP: the root unit's parameters, gathered for the forward and backward


def _swap_state(model: nn.Module, fake_mode, dtype: torch.dtype | None) -> tuple[dict[str, torch.Tensor], list[torch.Tensor]]:
    """Fake CPU twins of the model's parameters and buffers, keyed by every name (tied ones share).

    ``dtype``, if given, replaces the dtype of floating-point tensors (as ``model.to(dtype)`` would).
    """
    twins: dict[int, torch.Tensor] = {}
    state: dict[str, torch.Tensor] = {}
    params: list[torch.Tensor] = []

    def twin(t: torch.Tensor) -> torch.Tensor:
        dt = dtype if (dtype is not None and t.is_floating_point()) else t.dtype
        return torch.empty_strided(t.shape, t.stride(), dtype=dt, device="cpu")

    with fake_mode:
        for name, p in model.named_parameters(remove_duplicate=False):
            if id(p) not in twins:
                twins[id(p)] = twin(p).requires_grad_(p.requires_grad)
                params.append(twins[id(p)])
            state[name] = twins[id(p)]
        for name, b in model.named_buffers(remove_duplicate=False):
            if id(b) not in twins:
                twins[id(b)] = twin(b)
            state[name] = twins[id(b)]
    return state, params


def _fake_inputs(inputs, fake_mode, dtype: torch.dtype | None):
    def conv(x):
        if isinstance(x, torch.Tensor):
            dt = dtype if (dtype is not None and x.is_floating_point()) else x.dtype
            with fake_mode:
                return torch.zeros(x.shape, dtype=dt, device="cpu")
        return x

    return pytree.tree_map(conv, inputs)


def _call(model, inputs):
    if isinstance(inputs, dict):
        return model(**inputs)
    if isinstance(inputs, (tuple, list)):
        return model(*inputs)
    return model(inputs)


def trace_step(
    model: nn.Module,
    inputs,
    precision: str = "fp32",
    grad_checkpointing: bool = False,
    blocks: list[nn.Module] | None = None,
    loss_fn: Callable[[Any], torch.Tensor] | None = None,
    workspace: Callable | None = None,
    param_dtype: torch.dtype | None = None,
    rnn_path: str = "native",
    dequantized: set[int] | None = None,
    grad_shards: int = 1,
    fsdp_units: list[nn.Module] | None = None,
    dequantized_saves_input: bool = False,
) -> StepTrace:
    """Simulate forward, loss and backward of ``model`` on ``inputs`` with fake tensors.

    ``model`` may live on any device (``meta`` included): its parameters and buffers
    are replaced, for the duration of the call, by fake CPU tensors of the same
    shape, dtype (or ``param_dtype`` for floating-point ones) and ``requires_grad``.
    ``inputs`` (a tensor, tuple or dict) are turned into fake tensors of the same
    shape and dtype (floating-point ones in ``param_dtype``, if given). ``precision``
    chooses autocast (``bf16-mixed``, ``fp16-mixed``). ``grad_checkpointing`` runs
    each of ``blocks`` under ``torch.utils.checkpoint``. ``workspace(func, args, out)``
    adds bytes a kernel holds only while it runs (see :func:`onednn_conv_workspace`).

    ``rnn_path``: ``"onednn"`` runs LSTMs through oneDNN's CPU kernel (what a CPU step
    runs, with its workspace), ``"native"`` through PyTorch's own ops (see
    :func:`native_rnns`). ``dequantized``: ids of parameters stored quantised; every op
    that reads one holds a dequantized copy in the compute dtype while it runs
    (bitsandbytes dequantizes the weight for each matmul, forward and backward).
    ``dequantized_saves_input``: the layer's autograd function also saves its input, as
    bitsandbytes' ``MatMul4Bit`` did in 2023 (``ctx.tensors = (A, B)``); today it saves
    only the packed weight, which a frozen ``F.linear`` models already.
    ``grad_shards``: each parameter's gradient keeps 1/``grad_shards`` of its bytes once
    autograd has accumulated it (a reduce-scatter to this device's shard: ZeRO-2).

    ``fsdp_units`` (with ``grad_shards`` = the number of devices): FSDP2's step, as
    ``fully_shard`` on each of these modules and then on the root runs it. Each unit's
    parameters are all-gathered (unsharded) while its forward runs and again while its
    backward runs; its gradients stay unsharded until its backward ends, when a
    reduce-scatter (through a copy of them) leaves this device's shard. The root unit
    (every other parameter) stays gathered from the start of the forward to the end of the
    backward: ``StepTrace.gathered_root_bytes``, included in the peaks and the
    activations.
    """
    from torch._subclasses.fake_tensor import FakeTensorMode
    from torch.nn.utils.stateless import _reparametrize_module

    if rnn_path not in ("native", "onednn"):
        raise LayerwiseError(f"rnn_path: expected 'native' or 'onednn', got {rnn_path!r}")
    loss_fn = loss_fn or default_loss
    fake_mode = FakeTensorMode()
    state, params = _swap_state(model, fake_mode, param_dtype)
    fake_in = _fake_inputs(inputs, fake_mode, param_dtype)
    param_keys = {storage_key(t) for t in state.values()}
    external = param_keys | {storage_key(t) for t in pytree.tree_leaves(fake_in) if isinstance(t, torch.Tensor)}
    if rnn_path == "onednn" and any(isinstance(m, nn.LSTM) for m in model.modules()):
        workspace = _combined(workspace, onednn_lstm_workspace)
    quant_mode = None
    if dequantized:
        names = {id(p): n for n, p in model.named_parameters(remove_duplicate=False)}
        compute = _size_of(precision_spec(precision).compute_dtype)
        deq = {storage_key(state[names[i]]): state[names[i]].numel() * compute for i in dequantized if i in names}
        workspace = _with_dequantized(workspace, deq)
        if dequantized_saves_input:
            quant_mode = _SavesInput(set(deq))
    alloc = Allocations(external, param_keys, workspace)
    saved = SavedTensors(external)
    handles = []
    root_bytes = 0
    if fsdp_units is not None:
        handles, root_bytes = _fsdp_hooks(model, state, params, alloc, fsdp_units, grad_shards)
    elif grad_shards > 1:
        def shard(p: torch.Tensor) -> None:
            key = storage_key(p.grad)
            if key in alloc.sizes:
                full = alloc.sizes[key]
                alloc.sizes[key] = -(-full // grad_shards)
                alloc.current -= full - alloc.sizes[key]

        handles = [p.register_post_accumulate_grad_hook(shard) for p in params if p.requires_grad]
    was_training = model.training
    model.train()
    try:
        with contextlib.ExitStack() as stack:
            stack.enter_context(_reparametrize_module(model, state, tie_weights=True, strict=False))
            if rnn_path == "native":
                stack.enter_context(native_rnns(model))
            else:
                stack.enter_context(_mkldnn(True))
            if grad_checkpointing and blocks:
                stack.enter_context(checkpointed(blocks))
            if quant_mode is not None:
                stack.enter_context(quant_mode)
            stack.enter_context(fake_mode)
            stack.enter_context(alloc)
            with torch.enable_grad(), saved.hooks():
                alloc.adjust(root_bytes)  # the root unit, all-gathered for the whole forward and backward
                with autocast(precision):
                    out = _call(model, fake_in)
                    activation = alloc.current
                    loss = loss_fn(out)
                after_loss = alloc.current
                alloc.settle()
                forward_peak = alloc.peak
                # autocast's casts of weights that autograd keeps: counted while they are all alive
                copies = sum(n for k, n in saved.sizes.items() if k in alloc.weight_copies)
                if not loss.requires_grad:
                    raise LayerwiseError("the loss does not depend on any trainable parameter: nothing to train")
                alloc.reset_peak()
                loss.backward()
                if fsdp_units is not None:  # the root's reduce-scatter, then its parameters reshard
                    _reduce_scatter(alloc, [p for p in params if id(p) not in _unit_twin_ids(fsdp_units, model, state)],
                                    grad_shards)
                alloc.settle()
                backward_peak = alloc.peak
                del loss, out
                grads = sum(alloc.sizes.get(storage_key(p.grad), 0) if grad_shards > 1 else p.grad.untyped_storage().nbytes()
                            for p in params if p.grad is not None)
    except LayerwiseError:
        raise
    except Exception as e:
        raise _input_error(model, inputs, e) from None
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return StepTrace(
        saved_bytes=saved.bytes,
        saved_tensors=saved.tensors,
        weight_copy_bytes=copies,
        activation_bytes=activation,
        loss_bytes=after_loss - activation,
        forward_peak_bytes=forward_peak,
        backward_peak_bytes=backward_peak,
        gradient_bytes=grads,
        gathered_root_bytes=root_bytes,
    )


def _unit_twin_ids(units: list[nn.Module], model: nn.Module, state: dict[str, torch.Tensor]) -> set[int]:
    ids = set()
    names = {id(m): n for n, m in model.named_modules()}
    for u in units:
        prefix = names[id(u)]
        for n, _ in u.named_parameters(remove_duplicate=False):
            ids.add(id(state[f"{prefix}.{n}" if prefix else n]))
    return ids


def _reduce_scatter(alloc: "Allocations", twins: list[torch.Tensor], shards: int) -> None:
    """A unit's reduce-scatter: a copy of its gradients as the input, then each keeps 1/shards."""
    keys = [storage_key(p.grad) for p in twins if p.grad is not None]
    full = sum(alloc.sizes.get(k, 0) for k in keys)
    alloc.adjust(full)  # the reduce-scatter input
    alloc.adjust(-full)
    for k in keys:
        if k in alloc.sizes:
            size = alloc.sizes[k]
            alloc.sizes[k] = -(-size // shards)
            alloc.current -= size - alloc.sizes[k]


def _fsdp_hooks(model: nn.Module, state: dict[str, torch.Tensor], params: list[torch.Tensor], alloc: "Allocations",
                units: list[nn.Module], shards: int):
    """Hooks that play FSDP2's all-gathers, reshards and reduce-scatters on the simulated allocator."""
    names = {id(m): n for n, m in model.named_modules()}
    handles = []
    in_units: set[int] = set()
    for u in units:
        prefix = names[id(u)]
        twins = list({id(t): t for t in (state[f"{prefix}.{n}" if prefix else n]
                                         for n, _ in u.named_parameters(remove_duplicate=False))}.values())
        in_units |= {id(t) for t in twins}
        nbytes = sum(t.untyped_storage().nbytes() for t in twins)

        def gather(*_a, _b=nbytes, **_k):
            alloc.adjust(_b)

        def reshard(*_a, _b=nbytes, **_k):
            alloc.adjust(-_b)

        def backward_end(*_a, _b=nbytes, _twins=twins, **_k):
            _reduce_scatter(alloc, [t for t in _twins if t.requires_grad], shards)
            alloc.adjust(-_b)

        handles += [u.register_forward_pre_hook(gather), u.register_forward_hook(reshard),
                    u.register_full_backward_pre_hook(gather), u.register_full_backward_hook(backward_end)]
    root = sum(t.untyped_storage().nbytes() for t in params if id(t) not in in_units)
    return handles, root


def _size_of(dtype: torch.dtype) -> int:
    return torch.empty((), dtype=dtype).element_size()


@contextlib.contextmanager
def _mkldnn(enabled: bool):
    previous = torch._C._get_mkldnn_enabled()
    torch._C._set_mkldnn_enabled(enabled)
    try:
        yield
    finally:
        torch._C._set_mkldnn_enabled(previous)


class _LinearSavingInput(torch.autograd.Function):
    """A frozen linear layer whose autograd function keeps its input for the backward."""

    @staticmethod
    def forward(ctx, x, weight, bias):
        ctx.save_for_backward(x, weight)
        return F.linear(x, weight, bias)

    @staticmethod
    def backward(ctx, grad):
        _x, weight = ctx.saved_tensors
        return grad @ weight, None, None


class _SavesInput(torch.overrides.TorchFunctionMode):
    """``F.linear`` on one of the given (quantised) weights saves its input too."""

    def __init__(self, keys: set[int]) -> None:
        super().__init__()
        self.keys = keys

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is F.linear:
            x, w = args[0], args[1] if len(args) > 1 else kwargs.get("weight")
            b = args[2] if len(args) > 2 else kwargs.get("bias")
            if isinstance(w, torch.Tensor) and storage_key(w) in self.keys and x.requires_grad:
                return _LinearSavingInput.apply(x, w, b)
        return func(*args, **kwargs)


def _combined(a: Callable | None, b: Callable) -> Callable:
    if a is None:
        return b
    return lambda func, args, out: a(func, args, out) + b(func, args, out)


def _with_dequantized(workspace: Callable | None, deq: dict[int, int]) -> Callable:
    """``workspace`` plus the dequantized copy of every quantised weight an op reads."""

    def ws(func, args, out) -> int:
        extra = workspace(func, args, out) if workspace is not None else 0
        seen = set()
        for t in _tensors(args, []):
            key = storage_key(t)
            if key in deq and key not in seen:
                seen.add(key)
                extra += deq[key]
        return extra

    return ws


def _input_error(model: nn.Module, inputs, e: Exception) -> Exception:
    if isinstance(e, InputShapeError):
        return e
    shapes = [list(t.shape) for t in pytree.tree_leaves(inputs) if isinstance(t, torch.Tensor)]
    msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return InputShapeError(f"inputs of shapes {shapes} do not fit {type(model).__name__}: {type(e).__name__}: {msg}")
