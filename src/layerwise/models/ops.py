"""Training kernels the models share: a cheaper dropout on CPU and attention with dropout.

Why: on CPU, ``torch.nn.functional.dropout`` draws one Bernoulli sample per element
from the serial CPU generator (``bernoulli_``, about 5 ns an element on this
machine's cores). In a BERT-size fine-tuning step that is 15% of the whole step
(benchmarks/bench_finetune.py profiles it). Here one 64-bit draw from the same
generator gives four independent 16-bit uniforms, and an element is dropped when its
uniform falls below ``round(p * 65536)``: the drop probability is ``p`` to within
``2**-17`` (0.1 → 0.10000610), and survivors are scaled by ``1 / (1 - p_used)``, so
the output's expectation equals the input exactly, as with torch's dropout. The mask
is kept as one byte an element for the backward, as torch does. Results are seeded by torch's
generator (``torch.manual_seed``), so runs and resumed runs are reproducible. Other
devices (CUDA draws its masks with a fast counter-based generator) use torch's dropout.

Attention with dropout cannot use the fused CPU kernel (``scaled_dot_product_attention``
falls back to its unfused path whenever ``dropout_p > 0``); :func:`attention` then runs
the same computation with this dropout on the probabilities.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

_LANES = 65536  # 16-bit uniforms


def has_values(t: torch.Tensor) -> bool:
    """Whether ``t`` holds data a branch may read: not on the meta device and not a fake
    tensor (the memory planner traces models under ``FakeTensorMode``)."""
    if t.device.type == "meta":
        return False
    from torch._subclasses.fake_tensor import is_fake

    return not is_fake(t)


class Tokens(NamedTuple):
    """Where the real tokens of a padded (batch, seq_len) input sit: ``index`` (N,) into the
    flattened batch. Models that skip padding run their Linears on (N, D) rows and go back to
    the padded layout only for attention."""

    index: torch.Tensor
    batch: int
    seq_len: int

    def pad(self, t: torch.Tensor) -> torch.Tensor:
        """(N, D) → (B, T, D), zeros at the padding."""
        full = t.new_zeros(self.batch * self.seq_len, t.shape[-1]).index_copy(0, self.index, t)
        return full.view(self.batch, self.seq_len, -1)

    def unpad(self, t: torch.Tensor) -> torch.Tensor:
        """(B, T, D) → (N, D), the real tokens' rows."""
        return t.reshape(self.batch * self.seq_len, -1).index_select(0, self.index)


def _threshold(p: float) -> int:
    return min(max(round(p * _LANES), 0), _LANES)


def used_probability(p: float) -> float:
    """The drop probability :func:`dropout` really uses on CPU for a requested ``p``."""
    return _threshold(p) / _LANES


def _keep_mask(shape: torch.Size, t: int) -> torch.Tensor:
    n = math.prod(shape)
    words = torch.empty((n + 3) // 4, dtype=torch.int64).random_(-(2**63), None)  # 64 uniform bits each
    lanes = words.view(torch.int16)[:n]  # four uniform int16 per word, in [-32768, 32767]
    keep = lanes >= t - _LANES // 2  # True with probability 1 - t/65536
    return keep.view(torch.uint8).view(shape)  # 0/1 bytes: multiplying by them is far faster than where()


class _CPUDropout(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, t: int) -> torch.Tensor:
        keep = _keep_mask(x.shape, t)
        scale = _LANES / (_LANES - t)
        ctx.save_for_backward(keep)
        ctx.scale = scale
        return x.mul(keep).mul_(scale)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (keep,) = ctx.saved_tensors
        return grad.mul(keep).mul_(ctx.scale), None


def dropout(x: torch.Tensor, p: float, training: bool = True) -> torch.Tensor:
    """Zero each element with probability ``p`` and scale the rest by ``1/(1-p)``; see the module doc."""
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"dropout probability has to be between 0 and 1, but got {p}")
    if not training or p == 0.0:
        return x
    t = _threshold(p)
    if x.device.type != "cpu" or not x.is_floating_point() or t >= _LANES:  # p within 2**-17 of 1
        return F.dropout(x, p, training=True)
    return _CPUDropout.apply(x, t)


class Dropout(nn.Dropout):
    """``nn.Dropout`` (same name, arguments and state) with :func:`dropout`'s faster CPU masks."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.inplace:
            return super().forward(x)
        return dropout(x, self.p, self.training)


def attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: torch.Tensor | None = None,
    dropout_p: float = 0.0,
    is_causal: bool = False,
) -> torch.Tensor:
    """``F.scaled_dot_product_attention`` (B, h, T, d) → (B, h, T, d), with CPU dropout done by :func:`dropout`.

    ``mask`` is a boolean mask broadcastable to (B, h, T, S), True where a query may
    attend to a key. Without dropout, or off the CPU, this is exactly torch's SDPA.
    """
    if dropout_p == 0.0 or q.device.type != "cpu":
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p, is_causal=is_causal)
    dtype = q.dtype
    if dtype in (torch.float16, torch.bfloat16):  # as torch's math path: scores and softmax in fp32
        q, k, v = q.float(), k.float(), v.float()
    T, S = q.shape[-2], k.shape[-2]
    scores = torch.matmul(q, k.transpose(-2, -1)).mul_(1.0 / math.sqrt(q.shape[-1]))  # (B, h, T, S)
    if is_causal:
        causal = torch.ones(T, S, dtype=torch.bool, device=q.device).tril()  # (T, S)
        mask = causal if mask is None else mask & causal
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    probs = torch.softmax(scores, dim=-1)  # (B, h, T, S)
    if mask is not None:  # a query with every key masked attends to nothing (SDPA gives NaN there)
        probs = probs.nan_to_num(0.0)
    return torch.matmul(dropout(probs, dropout_p), v).to(dtype)  # (B, h, T, d)


@torch.library.custom_op("layerwise::grouped_mm", mutates_args=())
def grouped_mm(input: torch.Tensor, weight: torch.Tensor, offs: torch.Tensor) -> torch.Tensor:
    """Rows of ``input`` (S, K), sorted by group, each times its group's matrix: (S, N).

    ``weight`` (G, K, N); ``offs`` (G,) int32, the cumulative row count at the end of
    each group. The mixture-of-experts product: every token's row meets only the experts
    it was routed to. One op with a shape-only fake implementation, so the model runs on
    the meta device and under ``FakeTensorMode`` as well as on CPU and CUDA (torch's own
    ``grouped_mm`` runs bf16 on recent GPUs only).
    """
    out = input.new_zeros(input.shape[0], weight.shape[2])  # (S, N)
    start = 0
    for g, end in enumerate(offs.tolist()):
        if end > start:
            out[start:end] = input[start:end] @ weight[g]  # (n_g, K) @ (K, N)
        start = end
    return out


@grouped_mm.register_fake
def _grouped_mm_fake(input, weight, offs):
    return input.new_empty(input.shape[0], weight.shape[2])


@torch.library.custom_op("layerwise::grouped_mm_weight_grad", mutates_args=())
def grouped_mm_weight_grad(input: torch.Tensor, grad: torch.Tensor, offs: torch.Tensor) -> torch.Tensor:
    """The gradient of :func:`grouped_mm`'s weight: for each group, input_gᵀ @ grad_g, (G, K, N)."""
    out = input.new_zeros(offs.shape[0], input.shape[1], grad.shape[1])  # (G, K, N)
    start = 0
    for g, end in enumerate(offs.tolist()):
        if end > start:
            out[g] = input[start:end].T @ grad[start:end]  # (K, n_g) @ (n_g, N)
        start = end
    return out


@grouped_mm_weight_grad.register_fake
def _grouped_mm_weight_grad_fake(input, grad, offs):
    return input.new_empty(offs.shape[0], input.shape[1], grad.shape[1])


def _grouped_mm_setup(ctx, inputs, output):
    input, weight, offs = inputs
    ctx.save_for_backward(input, weight, offs)


def _grouped_mm_backward(ctx, grad):
    input, weight, offs = ctx.saved_tensors
    grad_input = grad_weight = None
    if ctx.needs_input_grad[0]:
        grad_input = grouped_mm(grad, weight.transpose(1, 2), offs)  # (S, K)
    if ctx.needs_input_grad[1]:
        grad_weight = grouped_mm_weight_grad(input, grad, offs)  # (G, K, N)
    return grad_input, grad_weight, None


grouped_mm.register_autograd(_grouped_mm_backward, setup_context=_grouped_mm_setup)


# ---------------------------------------------------------------- attention probabilities (inspection only)
#
# Training and inference take the fused path above (SDPA), which never forms the
# probabilities. An attention module that can show them has ``keep_attention = False`` as a
# class attribute; :func:`record_attention` sets it on a model's attention modules for the
# duration of a ``with`` block, and each of them then runs :func:`attention_with_probs` and
# keeps its probabilities (B, h, T, S) in ``attention_probs``. Outside the block nothing
# changes: the default forward is the fast one.

NO_ATTENTION = "no attention layers in this model (attention maps are for the GPT and BERT families)"


def attention_with_probs(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: torch.Tensor | None = None,
    dropout_p: float = 0.0,
    is_causal: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """What :func:`attention` computes, with the weights formed explicitly: (output (B, h, T, d),
    probabilities (B, h, T, S) in float32, before dropout). Rows of keys a query may see sum to 1;
    a query that may see no key gets a row of zeros (SDPA gives NaN there)."""
    dtype = q.dtype
    qf, kf, vf = q.float(), k.float(), v.float()
    T, S = q.shape[-2], k.shape[-2]
    scores = torch.matmul(qf, kf.transpose(-2, -1)) * (1.0 / math.sqrt(q.shape[-1]))  # (B, h, T, S)
    if is_causal:
        causal = torch.ones(T, S, dtype=torch.bool, device=q.device).tril()  # (T, S)
        mask = causal if mask is None else mask & causal
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    probs = torch.softmax(scores, dim=-1)  # (B, h, T, S)
    if mask is not None:
        probs = probs.nan_to_num(0.0)
    y = torch.matmul(dropout(probs, dropout_p), vf).to(dtype)  # (B, h, T, d)
    return y, probs


def attention_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """(qualified name, module) of every attention module that can keep its probabilities, in module order."""
    return [(name, m) for name, m in model.named_modules() if hasattr(type(m), "keep_attention")]


class record_attention:  # noqa: N801 - used as a context manager, like torch.no_grad
    """``with record_attention(model) as maps: model(x)`` → ``maps`` is {module name: [probs (B, h, T, S)
    of each call]}, in module order. The modules go back to the fast path on exit, whatever happens.
    Raises :class:`~layerwise.errors.ConfigError` "no attention layers in this model" for a model
    without any."""

    def __init__(self, model: nn.Module) -> None:
        from layerwise.errors import ConfigError

        self.modules = attention_modules(model)
        if not self.modules:
            raise ConfigError(NO_ATTENTION)
        self.maps: dict[str, list[torch.Tensor]] = {name: [] for name, _ in self.modules}
        self._hooks: list = []

    def __enter__(self) -> dict[str, list[torch.Tensor]]:
        for name, m in self.modules:
            m.keep_attention = True
            self._hooks.append(m.register_forward_hook(self._keep(name)))
        return self.maps

    def _keep(self, name: str):
        def hook(module, args, output):
            self.maps[name].append(module.attention_probs.detach())
            module.attention_probs = None
        return hook

    def __exit__(self, *exc) -> None:
        for h in self._hooks:
            h.remove()
        for _, m in self.modules:
            m.__dict__.pop("keep_attention", None)  # back to the class attribute (False)
            m.attention_probs = None
