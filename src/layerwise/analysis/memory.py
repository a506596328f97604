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
of a caching allocator. ``layerwise.analysis.plan.measure`` checks the result
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

_aten = torch.ops.aten
_prim_device = torch.ops.prim.device.default

# precision -> (parameter dtype, autocast dtype or None)
PRECISIONS: dict[str, tuple[torch.dtype, torch.dtype | None]] = {
    "fp32": (torch.float32, None),
    "bf16-mixed": (torch.float32, torch.bfloat16),
    "fp16-mixed": (torch.float32, torch.float16),
    "bf16-true": (torch.bfloat16, None),
    "fp16-true": (torch.float16, None),
}


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

    def settle(self) -> None:
        if self.pending is not None:
            key, level = self.pending
            if key in self.sizes or key in self.external:  # the left operand lives on: a real out-of-place add
                self.peak = max(self.peak, level)
            self.pending = None

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


@contextlib.contextmanager
def native_rnns(model: nn.Module):
    """Run the model's RNN/LSTM/GRU layers through PyTorch's native implementation on the CPU.

    On the CPU, ``nn.LSTM`` otherwise runs oneDNN's fused kernel, whose opaque workspace
    has no size on fake tensors; the native implementation is ordinary autograd ops,
    whose saved tensors (the gates of every step) are what cuDNN's reserve space holds
    on a GPU. The plan and the CPU measurement both use it.
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
    dtype = PRECISIONS[precision][1]
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
    """
    from torch._subclasses.fake_tensor import FakeTensorMode
    from torch.nn.utils.stateless import _reparametrize_module

    loss_fn = loss_fn or default_loss
    fake_mode = FakeTensorMode()
    state, params = _swap_state(model, fake_mode, param_dtype)
    fake_in = _fake_inputs(inputs, fake_mode, param_dtype)
    param_keys = {storage_key(t) for t in state.values()}
    external = param_keys | {storage_key(t) for t in pytree.tree_leaves(fake_in) if isinstance(t, torch.Tensor)}
    alloc = Allocations(external, param_keys, workspace)
    saved = SavedTensors(external)
    was_training = model.training
    model.train()
    try:
        with contextlib.ExitStack() as stack:
            stack.enter_context(_reparametrize_module(model, state, tie_weights=True, strict=False))
            stack.enter_context(native_rnns(model))
            if grad_checkpointing and blocks:
                stack.enter_context(checkpointed(blocks))
            stack.enter_context(fake_mode)
            stack.enter_context(alloc)
            with torch.enable_grad(), saved.hooks():
                with autocast(precision):
                    out = _call(model, fake_in)
                    activation = alloc.current
                    loss = loss_fn(out)
                after_loss = alloc.current
                alloc.settle()
                forward_peak = alloc.peak
                if not loss.requires_grad:
                    raise LayerwiseError("the loss does not depend on any trainable parameter: nothing to train")
                alloc.reset_peak()
                loss.backward()
                alloc.settle()
                backward_peak = alloc.peak
                del loss, out
                grads = storage_bytes(p.grad for p in params if p.grad is not None)
    except LayerwiseError:
        raise
    except Exception as e:
        raise _input_error(model, inputs, e) from None
    finally:
        model.train(was_training)
    copies = sum(n for k, n in saved.sizes.items() if k in alloc.weight_copies)
    return StepTrace(
        saved_bytes=saved.bytes,
        saved_tensors=saved.tensors,
        weight_copy_bytes=copies,
        activation_bytes=activation,
        loss_bytes=after_loss - activation,
        forward_peak_bytes=forward_peak,
        backward_peak_bytes=backward_peak,
        gradient_bytes=grads,
    )


def _input_error(model: nn.Module, inputs, e: Exception) -> Exception:
    if isinstance(e, InputShapeError):
        return e
    shapes = [list(t.shape) for t in pytree.tree_leaves(inputs) if isinstance(t, torch.Tensor)]
    msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return InputShapeError(f"inputs of shapes {shapes} do not fit {type(model).__name__}: {type(e).__name__}: {msg}")
