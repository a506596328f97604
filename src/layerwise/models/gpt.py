"""Decoder-only transformer: GPT-2 style and Llama style from one implementation.

Every architectural difference is an explicit :class:`GPTConfig` field, never a
model name:

==================  =====================  =========================
field               GPT-2                  Llama
==================  =====================  =========================
``pos_embedding``   ``"learned"``          ``"rope"`` (+ ``rope_base``)
``norm``            ``"layernorm"``        ``"rmsnorm"``
``mlp``             ``"gelu_tanh"``        ``"swiglu"``
``n_kv_head``       = ``n_head``           fewer (grouped-query attention)
``attn_qkv``        ``"fused"``            ``"separate"``
``attn_bias``       True                   False
``mlp_bias``        True                   False
``tie_embeddings``  True                   False (True for SmolLM2)
==================  =====================  =========================

Parameter names follow GPT-2's checkpoints (``transformer.wte``,
``transformer.h.0.attn.c_attn``, ``lm_head``); separate query/key/value and the
gated MLP use Llama's names (``q_proj``, ``k_proj``, ``v_proj``, ``gate_proj``,
``up_proj``, ``down_proj``). :mod:`layerwise.models.convert` maps Hugging Face
state dicts onto these names.

``model(idx, targets=None, cache=None)`` always returns a :class:`GPTOutput`
named tuple ``(logits, loss)``: ``logits, loss = model(x, y)`` while training,
``model(x).logits`` otherwise. :func:`generate` samples with a KV cache.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from layerwise.errors import ConfigError, InputShapeError
from layerwise.models.base import ModelConfig
from layerwise.models.ops import Dropout, Tokens, attention, attention_with_probs, grouped_mm, has_values
from layerwise.models.registry import register_family, register_preset
from layerwise.roles import mark_block, mark_experts, set_kind

MLP_TYPES = ("gelu", "gelu_tanh", "swiglu")
NORM_TYPES = ("layernorm", "rmsnorm")
POS_EMBEDDINGS = ("learned", "rope")
ROPE_SCALINGS = ("none", "llama3")
QKV_LAYOUTS = ("fused", "separate")


GPT_HEADS = ("lm", "classification")


@dataclass
class GPTConfig(ModelConfig):
    """A decoder-only transformer. ``None`` fields are derived (see the properties)."""

    family: ClassVar[str] = "gpt"

    vocab_size: int = 50257
    block_size: int = 1024  # context length: the most positions one forward sees
    n_layer: int = 12
    n_head: int = 12
    n_kv_head: int | None = None  # key/value heads (GQA); None: n_head; 1: multi-query
    n_embd: int = 768
    head_dim: int | None = None  # None: n_embd // n_head
    intermediate_size: int | None = None  # MLP hidden width; None: 4 * n_embd
    mlp: str = "gelu_tanh"  # "gelu" (exact), "gelu_tanh" (GPT-2's approximation), "swiglu"
    norm: str = "layernorm"  # "layernorm" | "rmsnorm"
    norm_eps: float = 1e-5
    pos_embedding: str = "learned"  # "learned" absolute positions | "rope" rotary
    rope_base: float = 10000.0  # theta of RoPE (Su et al. 2021); Llama 3 uses 500000
    # Llama 3.1's frequency-dependent RoPE rescaling for long context ("none" | "llama3").
    rope_scaling: str = "none"
    rope_scaling_factor: float = 8.0
    rope_low_freq_factor: float = 1.0
    rope_high_freq_factor: float = 4.0
    rope_original_context: int = 8192
    attn_qkv: str = "fused"  # "fused": one c_attn Linear | "separate": q_proj, k_proj, v_proj
    attn_bias: bool = True  # biases of the attention Linears
    attn_out_bias: bool | None = None  # bias of the output projection; None: attn_bias (Qwen: q/k/v only)
    mlp_bias: bool = True  # biases of the MLP Linears
    # Mixture of experts (Shazeer et al. 2017; Mixtral, Jiang et al. 2024): n_experts > 0
    # replaces each block's MLP by n_experts SwiGLU experts, of which a router picks
    # n_experts_per_token for each token; a shared expert (Qwen1.5-MoE, DeepSeekMoE) runs
    # on every token beside them.
    n_experts: int = 0
    n_experts_per_token: int = 2
    moe_intermediate_size: int | None = None  # each expert's hidden width; None: intermediate_size
    moe_norm_topk: bool = True  # renormalise the chosen experts' weights to sum to 1 (Mixtral; not Qwen1.5-MoE)
    shared_expert_size: int = 0  # hidden width of the shared expert; 0: none
    shared_expert_gate: bool = False  # scale the shared expert by sigmoid(Linear(x)) (Qwen1.5-MoE)
    tie_embeddings: bool = True  # the LM head reuses the token embedding matrix
    dropout: float = 0.0
    # "lm": next-token logits; "classification": the hidden state of the last real token
    # through a new Linear (the spam classifier of Raschka's "Build a Large Language Model
    # (From Scratch)", ch. 6), returning (B, num_labels).
    head: str = "lm"
    num_labels: int = 2
    # A bias in the classification Linear; transformers' GPT2/LlamaForSequenceClassification
    # have none, and a classifier made from a pretrained LM follows them (so it exports).
    score_bias: bool = True

    def __post_init__(self) -> None:
        for name in ("vocab_size", "block_size", "n_layer", "n_head", "n_embd"):
            self.check(isinstance(getattr(self, name), int) and getattr(self, name) >= 1, name, "an integer >= 1")
        if self.n_kv_head is not None:
            self.check(
                isinstance(self.n_kv_head, int) and self.n_kv_head >= 1 and self.n_head % self.n_kv_head == 0,
                "n_kv_head",
                f"an integer >= 1 that divides n_head={self.n_head} (or null for n_head)",
            )
        if self.head_dim is None:
            self.check(self.n_embd % self.n_head == 0, "n_embd", f"a multiple of n_head={self.n_head}")
        else:
            self.check(isinstance(self.head_dim, int) and self.head_dim >= 1, "head_dim", "an integer >= 1 or null")
        if self.intermediate_size is not None:
            self.check(
                isinstance(self.intermediate_size, int) and self.intermediate_size >= 1,
                "intermediate_size",
                "an integer >= 1 or null (4 * n_embd)",
            )
        self.check(self.mlp in MLP_TYPES, "mlp", f"one of {', '.join(MLP_TYPES)}")
        self.check(self.norm in NORM_TYPES, "norm", f"one of {', '.join(NORM_TYPES)}")
        self.check(self.norm_eps > 0, "norm_eps", "a number > 0")
        self.check(self.pos_embedding in POS_EMBEDDINGS, "pos_embedding", f"one of {', '.join(POS_EMBEDDINGS)}")
        self.check(self.rope_base > 0, "rope_base", "a number > 0")
        self.check(self.rope_scaling in ROPE_SCALINGS, "rope_scaling", f"one of {', '.join(ROPE_SCALINGS)}")
        if self.pos_embedding == "rope":
            self.check(self.head_size % 2 == 0, "head_dim" if self.head_dim else "n_embd", "an even head size for RoPE")
        if self.rope_scaling == "llama3":
            self.check(self.rope_scaling_factor >= 1, "rope_scaling_factor", "a number >= 1")
            self.check(self.rope_low_freq_factor > 0, "rope_low_freq_factor", "a number > 0")
            self.check(
                self.rope_high_freq_factor > self.rope_low_freq_factor,
                "rope_high_freq_factor",
                f"a number > rope_low_freq_factor={self.rope_low_freq_factor}",
            )
            self.check(self.rope_original_context >= 1, "rope_original_context", "an integer >= 1")
        self.check(self.attn_qkv in QKV_LAYOUTS, "attn_qkv", f"one of {', '.join(QKV_LAYOUTS)}")
        self.check(isinstance(self.n_experts, int) and self.n_experts >= 0 and self.n_experts != 1, "n_experts",
                   "0 (a dense MLP) or an integer >= 2")
        if self.n_experts:
            self.check(self.mlp == "swiglu", "mlp", "swiglu with n_experts > 0 (the experts are SwiGLU MLPs)")
            self.check(isinstance(self.n_experts_per_token, int) and 1 <= self.n_experts_per_token <= self.n_experts,
                       "n_experts_per_token", f"an integer in [1, n_experts={self.n_experts}]")
            if self.moe_intermediate_size is not None:
                self.check(isinstance(self.moe_intermediate_size, int) and self.moe_intermediate_size >= 1,
                           "moe_intermediate_size", "an integer >= 1 or null (intermediate_size)")
            self.check(isinstance(self.shared_expert_size, int) and self.shared_expert_size >= 0,
                       "shared_expert_size", "an integer >= 0 (0: no shared expert)")
            if self.shared_expert_gate:
                self.check(self.shared_expert_size > 0, "shared_expert_gate", "false without a shared expert")
        self.check(0.0 <= self.dropout < 1.0, "dropout", "a probability in [0, 1)")
        self.check(self.head in GPT_HEADS, "head", f"one of {', '.join(GPT_HEADS)}")
        self.check(isinstance(self.num_labels, int) and self.num_labels >= 1, "num_labels", "an integer >= 1")
        self.check(isinstance(self.score_bias, bool), "score_bias", "true or false")

    @property
    def kv_heads(self) -> int:
        return self.n_head if self.n_kv_head is None else self.n_kv_head

    @property
    def head_size(self) -> int:
        return self.n_embd // self.n_head if self.head_dim is None else self.head_dim

    @property
    def ffn_size(self) -> int:
        return 4 * self.n_embd if self.intermediate_size is None else self.intermediate_size

    @property
    def expert_size(self) -> int:
        return self.ffn_size if self.moe_intermediate_size is None else self.moe_intermediate_size


class GPTOutput(NamedTuple):
    """What :class:`GPT` returns: logits (B, T, V) and the mean cross-entropy, or None without targets."""

    logits: torch.Tensor
    loss: torch.Tensor | None = None


class KVCache:
    """Keys and values of the positions seen so far, preallocated for ``max_len`` positions.

    One ``(B, n_kv_head, max_len, head_size)`` pair per layer; ``pos`` is the number
    of positions already stored. :meth:`GPT.forward` fills it and advances ``pos``.
    """

    def __init__(
        self,
        config: GPTConfig,
        batch_size: int,
        max_len: int,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        shape = (batch_size, config.kv_heads, max_len, config.head_size)
        self.keys = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(config.n_layer)]
        self.values = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(config.n_layer)]
        self.max_len = max_len
        self.pos = 0

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store k, v (B, n_kv_head, T, hs) at the current positions; return all (B, n_kv_head, pos+T, hs)."""
        end = self.pos + k.size(2)
        self.keys[layer][:, :, self.pos : end] = k
        self.values[layer][:, :, self.pos : end] = v
        return self.keys[layer][:, :, :end], self.values[layer][:, :, :end]


def rope_inv_freq(config: GPTConfig, device: torch.device | None = None) -> torch.Tensor:
    """RoPE's rotation frequency per pair of channels, theta_i = base^(-2i/d): shape (head_size/2,).

    ``rope_scaling="llama3"`` rescales them as in Llama 3.1 (Meta, "The Llama 3 Herd of
    Models", 2024): wavelengths shorter than original_context/high_freq_factor are kept,
    longer than original_context/low_freq_factor are divided by the factor, and the band
    in between interpolates linearly in original_context/wavelength.
    """
    d = config.head_size
    inv_freq = 1.0 / config.rope_base ** (torch.arange(0, d, 2, device=device).float() / d)  # (hs/2,)
    if config.rope_scaling == "llama3":
        factor, low, high = config.rope_scaling_factor, config.rope_low_freq_factor, config.rope_high_freq_factor
        ctx = config.rope_original_context
        wavelen = 2 * math.pi / inv_freq  # (hs/2,)
        smooth = ((ctx / wavelen - low) / (high - low)).clamp(0.0, 1.0)  # 0: long waves, 1: short waves
        inv_freq = (1 - smooth) * inv_freq / factor + smooth * inv_freq  # (hs/2,)
    return inv_freq


def rope_cos_sin(
    config: GPTConfig, start: int, length: int, device: torch.device, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin of the rotation angles for positions start..start+length-1: each (T, head_size)."""
    pos = torch.arange(start, start + length, device=device).float()  # (T,)
    angles = pos[:, None] * rope_inv_freq(config, device)[None, :]  # (T, hs/2)
    angles = torch.cat((angles, angles), dim=-1)  # (T, hs): channel i pairs with i + hs/2
    return angles.cos().to(dtype), angles.sin().to(dtype)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate each pair (x_i, x_{i+hs/2}) of x (B, nh, T, hs) by its angle (the "half split" layout)."""
    x1, x2 = x.chunk(2, dim=-1)  # (B, nh, T, hs/2) each
    return x * cos + torch.cat((-x2, x1), dim=-1) * sin  # (B, nh, T, hs)


def make_norm(config: GPTConfig) -> nn.Module:
    if config.norm == "rmsnorm":
        return nn.RMSNorm(config.n_embd, eps=config.norm_eps)
    return nn.LayerNorm(config.n_embd, eps=config.norm_eps)


class CausalSelfAttention(nn.Module):
    """Multi-head (or grouped-query) causal self-attention with optional RoPE and KV cache.

    Inside :class:`layerwise.models.ops.record_attention` it forms the probabilities
    explicitly and keeps them in ``attention_probs`` (B, n_head, T, past+T); otherwise it
    runs SDPA's fused kernel."""

    keep_attention = False  # set per instance by record_attention only
    attention_probs: torch.Tensor | None = None

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.n_head, self.n_kv_head, self.head_size = config.n_head, config.kv_heads, config.head_size
        self.q_dim = config.n_head * config.head_size
        self.kv_dim = config.kv_heads * config.head_size
        if config.attn_qkv == "fused":
            self.c_attn = nn.Linear(config.n_embd, self.q_dim + 2 * self.kv_dim, bias=config.attn_bias)
        else:
            self.q_proj = nn.Linear(config.n_embd, self.q_dim, bias=config.attn_bias)
            self.k_proj = nn.Linear(config.n_embd, self.kv_dim, bias=config.attn_bias)
            self.v_proj = nn.Linear(config.n_embd, self.kv_dim, bias=config.attn_bias)
        out_bias = config.attn_bias if config.attn_out_bias is None else config.attn_out_bias
        self.c_proj = nn.Linear(self.q_dim, config.n_embd, bias=out_bias)
        self.attn_dropout = config.dropout
        self.resid_dropout = Dropout(config.dropout)
        set_kind(self, "attention")

    def forward(
        self,
        x: torch.Tensor,
        rope: tuple[torch.Tensor, torch.Tensor] | None,
        cache: KVCache | None,
        layer: int,
        tokens: Tokens | None = None,
    ) -> torch.Tensor:
        # x: (B, T, C), or (N, C) real tokens only when ``tokens`` says where they sit
        B, T = (x.shape[0], x.shape[1]) if tokens is None else (tokens.batch, tokens.seq_len)
        if hasattr(self, "c_attn"):
            qkv = self.c_attn(x)  # (B, T, q+2kv) or (N, q+2kv)
            if tokens is not None:  # back to the padded layout for attention, zeros at the padding
                qkv = tokens.pad(qkv)
            q, k, v = qkv.split([self.q_dim, self.kv_dim, self.kv_dim], dim=-1)
        else:
            q, k, v = self.q_proj(x), self.k_proj(x), self.v_proj(x)
            if tokens is not None:
                q, k, v = tokens.pad(q), tokens.pad(k), tokens.pad(v)
        q = q.view(B, T, self.n_head, self.head_size).transpose(1, 2)  # (B, nh, T, hs)
        k = k.view(B, T, self.n_kv_head, self.head_size).transpose(1, 2)  # (B, nkv, T, hs)
        v = v.view(B, T, self.n_kv_head, self.head_size).transpose(1, 2)  # (B, nkv, T, hs)
        if rope is not None:
            q, k = apply_rope(q, *rope), apply_rope(k, *rope)
        past = 0
        if cache is not None:
            past = cache.pos
            k, v = cache.update(layer, k, v)  # (B, nkv, past+T, hs)
        if self.n_kv_head != self.n_head:  # query head j reads key/value head j // (nh / nkv)
            k = k.repeat_interleave(self.n_head // self.n_kv_head, dim=1)  # (B, nh, past+T, hs)
            v = v.repeat_interleave(self.n_head // self.n_kv_head, dim=1)  # (B, nh, past+T, hs)
        mask = None
        if past and T > 1:  # new queries see every cached position and the new ones up to themselves
            mask = torch.ones(T, past + T, dtype=torch.bool, device=x.device).tril(diagonal=past)  # (T, past+T)
        p = self.attn_dropout if self.training else 0.0
        if self.keep_attention:
            y, self.attention_probs = attention_with_probs(q, k, v, mask, dropout_p=p, is_causal=past == 0 and T > 1)
        else:
            y = attention(q, k, v, mask, dropout_p=p, is_causal=past == 0 and T > 1)  # (B, nh, T, hs)
        y = y.transpose(1, 2).reshape(B, T, self.q_dim)  # (B, T, nh*hs)
        if tokens is not None:
            y = tokens.unpad(y)  # (N, nh*hs)
        return self.resid_dropout(self.c_proj(y))  # (B, T, C) or (N, C)


class MLP(nn.Module):
    """GPT-2's position-wise MLP: Linear, GELU, Linear."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, config.ffn_size, bias=config.mlp_bias)
        self.act = nn.GELU(approximate="tanh" if config.mlp == "gelu_tanh" else "none")
        self.c_proj = nn.Linear(config.ffn_size, config.n_embd, bias=config.mlp_bias)
        self.dropout = Dropout(config.dropout)
        set_kind(self, "mlp")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.c_proj(self.act(self.c_fc(x))))  # (B, T, C)


class SwiGLU(nn.Module):
    """Gated MLP (Shazeer 2020, "GLU Variants Improve Transformer"): down(silu(gate(x)) * up(x))."""

    def __init__(self, config: GPTConfig, hidden: int | None = None) -> None:
        super().__init__()
        hidden = config.ffn_size if hidden is None else hidden
        self.gate_proj = nn.Linear(config.n_embd, hidden, bias=config.mlp_bias)
        self.up_proj = nn.Linear(config.n_embd, hidden, bias=config.mlp_bias)
        self.act = nn.SiLU()
        self.down_proj = nn.Linear(hidden, config.n_embd, bias=config.mlp_bias)
        self.dropout = Dropout(config.dropout)
        set_kind(self, "mlp")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.act(self.gate_proj(x)) * self.up_proj(x)  # (B, T, ffn)
        return self.dropout(self.down_proj(h))  # (B, T, C)


class Experts(nn.Module):
    """``n_experts`` SwiGLU MLPs as 3-D weights, run on the rows routed to each.

    ``gate_up_proj`` (E, 2·ffn, C) holds each expert's gate and up projections,
    ``down_proj`` (E, C, ffn) its down projection (transformers' layout, so Mixtral and
    Qwen-MoE checkpoints map onto it). The rows are sorted by expert and multiplied by
    one grouped matmul per projection (:func:`~layerwise.models.ops.grouped_mm`).
    """

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        e, c, f = config.n_experts, config.n_embd, config.expert_size
        self.n_experts, self.top_k, self.ffn = e, config.n_experts_per_token, f
        self.gate_up_proj = nn.Parameter(torch.empty(e, 2 * f, c))
        self.down_proj = nn.Parameter(torch.empty(e, c, f))
        mark_experts(self, e, config.n_experts_per_token)

    def forward(self, x: torch.Tensor, index: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        # x (N, C) tokens; index (N, k) their experts; weight (N, k) the experts' weights
        k = index.shape[1]
        flat = index.reshape(-1)  # (S,) with S = N·k token-expert pairs
        order = flat.argsort(stable=True)  # (S,) pairs grouped by expert
        token = order // k  # (S,) the token of each pair
        counts = torch.histc(flat.float(), bins=self.n_experts, min=0, max=self.n_experts - 1)  # (E,)
        offs = counts.cumsum(0).to(torch.int32)  # (E,) row where each expert's group ends
        h = grouped_mm(x[token], self.gate_up_proj.transpose(1, 2), offs)  # (S, 2·ffn)
        gate, up = h.split(self.ffn, dim=-1)  # (S, ffn) each
        y = grouped_mm(F.silu(gate) * up, self.down_proj.transpose(1, 2), offs)  # (S, C)
        y = y * weight.reshape(-1)[order, None].to(y.dtype)  # (S, C)
        return torch.zeros_like(x).index_add(0, token, y)  # (N, C)


class MoE(nn.Module):
    """A mixture-of-experts feed-forward layer: a router picks each token's top-k experts
    (softmax over the router's logits, the k largest kept and, with ``moe_norm_topk``,
    renormalised), plus an optional shared expert that every token runs through."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.top_k, self.norm_topk = config.n_experts_per_token, config.moe_norm_topk
        self.router = set_kind(nn.Linear(config.n_embd, config.n_experts, bias=False), "router")
        self.experts = Experts(config)
        if config.shared_expert_size:
            self.shared_expert = SwiGLU(config, config.shared_expert_size)
            if config.shared_expert_gate:
                self.shared_expert_gate = set_kind(nn.Linear(config.n_embd, 1, bias=False), "router")
        self.dropout = Dropout(config.dropout)
        set_kind(self, "mlp")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        x = x.reshape(-1, shape[-1])  # (N, C)
        probs = self.router(x).float().softmax(dim=-1)  # (N, E)
        weight, index = probs.topk(self.top_k, dim=-1)  # (N, k) each
        if self.norm_topk:
            weight = weight / weight.sum(dim=-1, keepdim=True)
        y = self.experts(x, index, weight.to(x.dtype))  # (N, C)
        if hasattr(self, "shared_expert"):
            shared = self.shared_expert(x)  # (N, C)
            if hasattr(self, "shared_expert_gate"):
                shared = torch.sigmoid(self.shared_expert_gate(x)) * shared
            y = y + shared
        return self.dropout(y.reshape(shape))  # (B, T, C) or (N, C)


class Block(nn.Module):
    """One pre-norm transformer layer: x + attn(norm(x)), then x + mlp(norm(x))."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.ln_1 = make_norm(config)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = make_norm(config)
        if config.n_experts:
            self.mlp = MoE(config)
        else:
            self.mlp = SwiGLU(config) if config.mlp == "swiglu" else MLP(config)
        mark_block(self)

    def forward(
        self,
        x: torch.Tensor,
        rope: tuple[torch.Tensor, torch.Tensor] | None,
        cache: KVCache | None,
        layer: int,
        tokens: Tokens | None = None,
    ) -> torch.Tensor:
        # x: (B, T, C), or (N, C) with ``tokens`` (see CausalSelfAttention)
        x = x + self.attn(self.ln_1(x), rope, cache, layer, tokens)
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    """Token ids (B, T) -> next-token logits (B, T, vocab_size)."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.config = config
        modules = {"wte": set_kind(nn.Embedding(config.vocab_size, config.n_embd), "embedding")}
        if config.pos_embedding == "learned":
            modules["wpe"] = set_kind(nn.Embedding(config.block_size, config.n_embd), "embedding")
        modules["drop"] = Dropout(config.dropout)
        modules["h"] = nn.ModuleList(Block(config) for _ in range(config.n_layer))
        modules["ln_f"] = make_norm(config)
        self.transformer = nn.ModuleDict(modules)
        if config.head == "lm":
            self.lm_head = set_kind(nn.Linear(config.n_embd, config.vocab_size, bias=False), "head")
        else:
            self.score = set_kind(nn.Linear(config.n_embd, config.num_labels, bias=config.score_bias), "head")
        self._tie_weights()
        self._init_weights()

    def _tie_weights(self) -> None:
        if self.config.tie_embeddings and self.config.head == "lm":  # one Parameter object, so it is stored and counted once
            self.lm_head.weight = self.transformer.wte.weight

    def to_empty(self, *, device, recurse: bool = True) -> GPT:
        # Moving off the meta device creates new Parameters, one per owner; tie them again.
        super().to_empty(device=device, recurse=recurse)
        self._tie_weights()
        return self

    def _init_weights(self) -> None:
        # GPT-2 (Radford et al. 2019, sec. 2.3): N(0, 0.02), and the projections that write
        # into the residual stream scaled by 1/sqrt(number of residual layers = 2 * n_layer).
        std = 0.02
        resid_std = std / math.sqrt(2 * self.config.n_layer)
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, mean=0.0, std=std)
            if isinstance(module, nn.Linear) and module.bias is not None:
                nn.init.zeros_(module.bias)
            if isinstance(module, Experts):
                nn.init.normal_(module.gate_up_proj, mean=0.0, std=std)
                nn.init.normal_(module.down_proj, mean=0.0, std=resid_std)
        for block in self.transformer.h:
            outs = [block.attn.c_proj]
            if isinstance(block.mlp, MoE):
                outs += [block.mlp.shared_expert.down_proj] if hasattr(block.mlp, "shared_expert") else []
            else:
                outs.append(block.mlp.down_proj if isinstance(block.mlp, SwiGLU) else block.mlp.c_proj)
            for proj in outs:
                nn.init.normal_(proj.weight, mean=0.0, std=resid_std)

    def example_inputs(self, batch_size: int = 1, seq_len: int | None = None) -> tuple[torch.Tensor]:
        """(token ids (B, T),) with T = min(block_size, 128) unless given, on the parameters' device."""
        seq_len = min(self.config.block_size, 128) if seq_len is None else seq_len
        device = self.transformer.wte.weight.device
        return (torch.zeros(batch_size, seq_len, dtype=torch.long, device=device),)

    def make_cache(self, batch_size: int, max_len: int | None = None) -> KVCache:
        """An empty KV cache for up to max_len (default block_size) positions, on the model's device and dtype."""
        w = self.transformer.wte.weight
        return KVCache(
            self.config,
            batch_size,
            self.config.block_size if max_len is None else max_len,
            device=w.device,
            dtype=w.dtype,
        )

    def forward(
        self,
        idx: torch.Tensor,
        targets: torch.Tensor | None = None,
        cache: KVCache | None = None,
        attention_mask: torch.Tensor | None = None,
    ) -> GPTOutput:
        """idx (B, T) token ids; targets (B, T) next-token ids (-100 is ignored) or None.

        With the classification head: targets (B,) class ids, attention_mask (B, T) marks
        real tokens (right padding), logits (B, num_labels).

        With ``cache``, idx continues the sequence already stored there (positions start at
        ``cache.pos``) and the cache is advanced by T.
        """
        if idx.dim() != 2 or idx.dtype not in (torch.int64, torch.int32):
            raise InputShapeError(
                f"GPT: expected integer token ids of shape (batch, seq_len), "
                f"got shape {tuple(idx.shape)} dtype {idx.dtype}"
            )
        B, T = idx.shape
        start = 0 if cache is None else cache.pos
        if start + T > self.config.block_size:
            raise InputShapeError(
                f"GPT: {start + T} positions ({start} cached + {T} new) exceed block_size {self.config.block_size}"
            )
        if cache is not None and start + T > cache.max_len:
            raise InputShapeError(f"GPT: {start + T} positions exceed the KV cache's max_len {cache.max_len}")
        if targets is not None and self.config.head == "lm" and targets.shape != idx.shape:
            raise InputShapeError(
                f"GPT: targets shape {tuple(targets.shape)} does not match idx shape {tuple(idx.shape)}"
            )
        if self.config.head == "classification":
            if cache is not None:
                raise InputShapeError("GPT: a classification head takes whole sequences, not a KV cache")
            state = self.run_stages(self.initial_state(idx, attention_mask), 0, len(self.stage_names()))
            logits = state[0]  # (B, num_labels)
            loss = F.cross_entropy(logits.float(), targets) if targets is not None else None
            return GPTOutput(logits, loss)
        x = self._embed(idx, start)  # (B, T, C)
        rope = self._rope(start, T, x)
        for layer, block in enumerate(self.transformer.h):
            x = block(x, rope, cache, layer)  # (B, T, C)
        x = self.transformer.ln_f(x)  # (B, T, C)
        logits = self.lm_head(x)  # (B, T, V)
        if cache is not None:
            cache.pos += T
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.float().view(B * T, -1), targets.reshape(B * T), ignore_index=-100)
        return GPTOutput(logits, loss)

    def _embed(self, idx: torch.Tensor, start: int = 0) -> torch.Tensor:
        x = self.transformer.wte(idx)  # (B, T, C)
        if self.config.pos_embedding == "learned":
            pos = torch.arange(start, start + idx.shape[1], device=idx.device)  # (T,)
            x = x + self.transformer.wpe(pos)  # (B, T, C)
        return self.transformer.drop(x)

    def _rope(self, start: int, T: int, x: torch.Tensor):
        if self.config.pos_embedding == "rope":
            return rope_cos_sin(self.config, start, T, x.device, x.dtype)  # 2 x (T, hs)
        return None

    # Stages, for caching the output of a frozen prefix (layerwise.finetune.cache): the
    # model is a sequence of stages, each mapping a tuple of tensors to the next.
    def stage_names(self) -> list[str]:
        if self.config.head != "classification":
            raise InputShapeError("GPT: stages are defined for the classification head only")
        return ["embed", *[f"transformer.h.{i}" for i in range(self.config.n_layer)], "pool", "score"]

    def stage_modules(self, i: int) -> list[nn.Module]:
        n = self.config.n_layer
        if i == 0:
            return [self.transformer.wte] + ([self.transformer.wpe] if "wpe" in self.transformer else [])
        if i <= n:
            return [self.transformer.h[i - 1]]
        return [self.transformer.ln_f] if i == n + 1 else [self.score]

    def initial_state(self, idx: torch.Tensor, attention_mask: torch.Tensor | None = None) -> tuple:
        if attention_mask is None:
            attention_mask = torch.ones_like(idx)
        return (idx, attention_mask)

    def run_stages(self, state: tuple, start: int, stop: int) -> tuple:
        """Stages ``start:stop``: (idx, mask) → (hidden (B, T', C), mask (B, T')) after the
        embedding and each block → (pooled (B, C),) → (logits,). Columns after the last
        real token of every row are dropped first (T' ≤ T): attention is causal, so no
        kept position reads them, and the outputs are those of the full width. Inside one
        call a right-padded batch then runs unpadded: every Linear, norm and activation on
        its real tokens only, attention in the padded layout (causal, so a real token never
        reads the padding after it); it comes back padded if the call stops in the blocks."""
        n = self.config.n_layer
        tokens: Tokens | None = None  # set while the hidden state holds the real tokens only, (N, C)
        for i in range(start, stop):
            if i <= n and i == start:
                state = _trim_padding(*state)
            if i == 0:
                idx, mask = state
                tokens = _right_padded_tokens(mask)
                if tokens is None:
                    x = self._embed(idx)  # (B, T, C)
                else:
                    x = self.transformer.wte(idx.flatten().index_select(0, tokens.index))  # (N, C)
                    if self.config.pos_embedding == "learned":
                        x = x + self.transformer.wpe(tokens.index % tokens.seq_len)
                    x = self.transformer.drop(x)
                state = (x, mask)
            elif i <= n:
                x, mask = state
                if i == start and (tokens := _right_padded_tokens(mask)) is not None:  # resuming inside the blocks
                    x = tokens.unpad(x)  # (N, C)
                if i == start or i == 1:  # once per call: the padding check and the rotary angles
                    rope = self._rope(0, mask.shape[1], x)
                state = (self.transformer.h[i - 1](x, rope, None, i - 1, tokens), mask)
            elif i == n + 1:
                x, mask = state
                # causal attention: the last real token has seen the whole text (right padding)
                lengths = mask.long().sum(dim=1)  # (B,)
                if tokens is None:
                    last = (lengths - 1).clamp(min=0)  # (B,)
                    x = x[torch.arange(x.shape[0], device=x.device), last]  # (B, C)
                else:
                    x = x.index_select(0, lengths.cumsum(0) - 1)  # (B, C) each row's last real token
                state, tokens = (self.transformer.ln_f(x),), None
            else:
                state = (self.score(state[0]),)  # (B, num_labels)
        if tokens is not None:  # stopped inside the blocks: back to (B, T, C), zeros at padding
            x, mask = state
            state = (tokens.pad(x), mask)
        return state


def _trim_padding(t: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Drop the trailing columns in which every row is padding: ids (B, T) or hidden (B, T, C), mask (B, T)."""
    if not has_values(mask) or mask.shape[1] <= 1:
        return t, mask
    real = mask.bool().any(dim=0).nonzero()  # columns with a real token in some row
    width = int(real.max()) + 1 if real.numel() else 1
    if width == mask.shape[1]:
        return t, mask
    return t[:, :width], mask[:, :width]


def _right_padded_tokens(mask: torch.Tensor) -> Tokens | None:
    """The real tokens of a right-padded batch (each row a run of real tokens, then padding,
    at least one real token), or None: no padding, another padding pattern (left padding
    puts real tokens after pads they attend to), or no values to read (meta/fake tensors)."""
    if not has_values(mask):
        return None
    keep = mask.bool()  # (B, T)
    if bool(keep.all()):
        return None
    B, T = keep.shape
    lengths = keep.sum(dim=1)  # (B,)
    prefix = torch.arange(T, device=keep.device) < lengths[:, None]  # (B, T)
    if bool((lengths == 0).any()) or not torch.equal(prefix, keep):
        return None
    return Tokens(keep.flatten().nonzero().squeeze(1), B, T)


def build_gpt(config: GPTConfig) -> GPT:
    return GPT(config)


def _check_arg(condition: bool, name: str, expected: str, got) -> None:
    if not condition:
        raise ConfigError(f"generate: {name}: expected {expected}, got {got!r}")


def _next_token(
    logits: torch.Tensor,
    temperature: float,
    top_k: int | None,
    top_p: float | None,
    greedy: bool,
    generator: torch.Generator | None,
) -> torch.Tensor:
    """Pick one token per row from logits (B, V): (B, 1)."""
    if greedy:
        return logits.argmax(dim=-1, keepdim=True)  # (B, 1)
    logits = logits.float() / temperature  # (B, V)
    if top_k is not None and top_k < logits.size(-1):
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]  # (B, 1)
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1.0:
        # Nucleus sampling (Holtzman et al. 2020): the smallest set of most likely
        # tokens whose probability reaches top_p.
        sorted_logits, order = logits.sort(dim=-1, descending=True)  # (B, V)
        probs = sorted_logits.softmax(dim=-1)  # (B, V)
        mass_before = probs.cumsum(dim=-1) - probs  # (B, V)
        drop_sorted = mass_before >= top_p  # (B, V), the first token is always kept
        drop = torch.empty_like(drop_sorted).scatter_(-1, order, drop_sorted)  # (B, V) in vocab order
        logits = logits.masked_fill(drop, float("-inf"))
    probs = logits.softmax(dim=-1)  # (B, V)
    return torch.multinomial(probs, num_samples=1, generator=generator)  # (B, 1)


@torch.no_grad()
def generate(
    model: GPT,
    idx: torch.Tensor,
    max_new_tokens: int,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    stop_tokens: Sequence[int] | None = None,
    greedy: bool = False,
    generator: torch.Generator | None = None,
    use_cache: bool = True,
) -> torch.Tensor:
    """Continue idx (B, T) by up to max_new_tokens tokens; returns (B, T + n).

    Sampling draws from softmax(logits / temperature), restricted to the top_k most
    likely tokens and/or the top_p nucleus; ``greedy`` takes the argmax instead.
    Generation ends early once every row has produced one of ``stop_tokens`` (the stop
    token is kept; a row that stopped repeats it while the others continue).

    With ``use_cache`` keys and values are kept in a :class:`KVCache`, so each step runs
    one position. The context is the last block_size tokens; once the sequence is longer
    than that, every step recomputes that window without a cache, exactly as uncached
    generation does. The model runs in eval mode; its mode is restored afterwards.
    """
    _check_arg(idx.dim() == 2, "idx", "token ids of shape (batch, seq_len)", tuple(idx.shape))
    _check_arg(idx.size(1) >= 1, "idx", "at least one token per row", tuple(idx.shape))
    _check_arg(max_new_tokens >= 0, "max_new_tokens", "an integer >= 0", max_new_tokens)
    if not greedy:
        _check_arg(temperature > 0, "temperature", "a number > 0 (or greedy decoding: --greedy)", temperature)
    _check_arg(top_k is None or top_k >= 1, "top_k", "an integer >= 1 or None", top_k)
    _check_arg(top_p is None or 0 < top_p <= 1, "top_p", "a number in (0, 1] or None", top_p)
    block = model.config.block_size
    stops = None
    if stop_tokens:
        stops = torch.as_tensor(list(stop_tokens), dtype=idx.dtype, device=idx.device)
    finished = torch.zeros(idx.size(0), dtype=torch.bool, device=idx.device)
    was_training = model.training
    model.eval()
    try:
        pending = idx[:, -block:]  # tokens not yet seen by the cache
        cache = None
        if use_cache:
            cache = model.make_cache(idx.size(0), min(block, pending.size(1) + max_new_tokens))
        for _ in range(max_new_tokens):
            if cache is not None and cache.pos + pending.size(1) > cache.max_len:
                cache = None  # the sequence outgrew the context window
            if cache is None:
                logits = model(idx[:, -block:]).logits[:, -1, :]  # (B, V)
            else:
                logits = model(pending, cache=cache).logits[:, -1, :]  # (B, V)
            token = _next_token(logits, temperature, top_k, top_p, greedy, generator)  # (B, 1)
            if stops is not None:
                token = torch.where(finished[:, None], idx[:, -1:], token)  # (B, 1)
                finished |= torch.isin(token[:, 0], stops)
            idx = torch.cat((idx, token), dim=1)  # (B, T+1)
            pending = token
            if stops is not None and bool(finished.all()):
                break
    finally:
        model.train(was_training)
    return idx


register_family("gpt", GPTConfig, build_gpt)

_GPT2 = dict(vocab_size=50257, block_size=1024, mlp="gelu_tanh", norm="layernorm", norm_eps=1e-5)
_GPT2_SRC = "Radford et al. 2019 (GPT-2); equals transformers GPT2LMHeadModel.num_parameters() (tied head once)"
for _name, _layers, _width, _heads, _count in (
    ("gpt2", 12, 768, 12, 124_439_808),
    ("gpt2-medium", 24, 1024, 16, 354_823_168),
    ("gpt2-large", 36, 1280, 20, 774_030_080),
    ("gpt2-xl", 48, 1600, 25, 1_557_611_200),
):
    register_preset(
        _name,
        "gpt",
        description=f"GPT-2 {_layers} layers x {_width}, {_heads} heads, tied LM head",
        reference_params=_count,
        reference_source=_GPT2_SRC,
        n_layer=_layers,
        n_embd=_width,
        n_head=_heads,
        **_GPT2,
    )

_LLAMA = dict(
    mlp="swiglu",
    norm="rmsnorm",
    norm_eps=1e-5,
    pos_embedding="rope",
    attn_qkv="separate",
    attn_bias=False,
    mlp_bias=False,
    tie_embeddings=False,
)
_LLAMA_SRC = "the model's config.json on the Hugging Face Hub; equals transformers LlamaForCausalLM.num_parameters()"
register_preset(
    "llama-2-7b",
    "gpt",
    description="Llama 2 7B: 32 layers x 4096, 32 heads, SwiGLU 11008, RoPE 1e4",
    reference_params=6_738_415_616,
    reference_source="meta-llama/Llama-2-7b-hf; " + _LLAMA_SRC,
    vocab_size=32000,
    block_size=4096,
    n_layer=32,
    n_head=32,
    n_embd=4096,
    intermediate_size=11008,
    rope_base=10000.0,
    **_LLAMA,
)
register_preset(
    "llama-3-8b",
    "gpt",
    description="Llama 3 8B: 32 layers x 4096, 32 heads / 8 kv heads, SwiGLU 14336, RoPE 5e5",
    reference_params=8_030_261_248,
    reference_source="meta-llama/Meta-Llama-3-8B; " + _LLAMA_SRC,
    vocab_size=128256,
    block_size=8192,
    n_layer=32,
    n_head=32,
    n_kv_head=8,
    n_embd=4096,
    intermediate_size=14336,
    rope_base=500000.0,
    **_LLAMA,
)
register_preset(
    "llama-3-70b",
    "gpt",
    description="Llama 3 70B: 80 layers x 8192, 64 heads / 8 kv heads, SwiGLU 28672, RoPE 5e5",
    reference_params=70_553_706_496,
    reference_source="meta-llama/Meta-Llama-3-70B; " + _LLAMA_SRC,
    vocab_size=128256,
    block_size=8192,
    n_layer=80,
    n_head=64,
    n_kv_head=8,
    n_embd=8192,
    intermediate_size=28672,
    rope_base=500000.0,
    **_LLAMA,
)
register_preset(
    "llama-3.1-405b",
    "gpt",
    description="Llama 3.1 405B: 126 layers x 16384, 128 heads / 8 kv heads, SwiGLU 53248, 128k context",
    reference_params=405_853_388_800,
    reference_source="meta-llama/Llama-3.1-405B; " + _LLAMA_SRC,
    vocab_size=128256,
    block_size=131072,
    n_layer=126,
    n_head=128,
    n_kv_head=8,
    n_embd=16384,
    intermediate_size=53248,
    rope_base=500000.0,
    rope_scaling="llama3",
    rope_scaling_factor=8.0,
    rope_low_freq_factor=1.0,
    rope_high_freq_factor=4.0,
    rope_original_context=8192,
    **_LLAMA,
)
register_preset(
    "smollm2-135m",
    "gpt",
    description="SmolLM2-135M: Llama style, 30 layers x 576, 9 heads / 3 kv heads, tied embeddings",
    reference_params=134_515_008,
    reference_source="HuggingFaceTB/SmolLM2-135M; " + _LLAMA_SRC,
    vocab_size=49152,
    block_size=8192,
    n_layer=30,
    n_head=9,
    n_kv_head=3,
    n_embd=576,
    intermediate_size=1536,
    rope_base=100000.0,
    **{**_LLAMA, "tie_embeddings": True},
)

_MOE_SRC = "equals transformers {cls}.num_parameters() on the same config; active: {active}"
register_preset(
    "mixtral-8x7b",
    "gpt",
    description="Mixtral 8x7B: 32 layers x 4096, 32 heads / 8 kv heads, 8 SwiGLU experts of 14336, top-2",
    reference_params=46_702_792_704,
    reference_active_params=12_879_925_248,
    reference_source="mistralai/Mixtral-8x7B-v0.1 config.json (Jiang et al. 2024: 46.7B total, 12.9B active); "
    + _MOE_SRC.format(cls="MixtralForCausalLM", active="embeddings, attention, routers, 2 of 8 experts"),
    vocab_size=32000,
    block_size=32768,
    n_layer=32,
    n_head=32,
    n_kv_head=8,
    n_embd=4096,
    intermediate_size=14336,
    rope_base=1e6,
    n_experts=8,
    n_experts_per_token=2,
    **_LLAMA,
)
register_preset(
    "qwen1.5-moe-a2.7b",
    "gpt",
    description="Qwen1.5-MoE-A2.7B: 24 layers x 2048, 16 heads, 60 fine-grained experts of 1408 (top-4) "
    "and a gated shared expert of 5632",
    reference_params=14_315_784_192,
    reference_active_params=2_689_173_504,
    reference_source="Qwen/Qwen1.5-MoE-A2.7B config.json (Qwen team 2024: 14.3B total, 2.7B activated); "
    + _MOE_SRC.format(cls="Qwen2MoeForCausalLM", active="4 of 60 routed experts plus the shared expert"),
    vocab_size=151936,
    block_size=8192,
    n_layer=24,
    n_head=16,
    n_embd=2048,
    intermediate_size=5632,
    rope_base=1e6,
    n_experts=60,
    n_experts_per_token=4,
    moe_intermediate_size=1408,
    moe_norm_topk=False,
    shared_expert_size=5632,
    shared_expert_gate=True,
    **{**_LLAMA, "attn_bias": True, "attn_out_bias": False},
)

# Tiny presets for tests and quick experiments (no published counts).
register_preset(
    "gpt-nano",
    "gpt",
    description="tiny GPT-2 style: 3 layers x 48, 3 heads (minGPT's gpt-nano shape), byte vocabulary",
    vocab_size=256,
    block_size=64,
    n_layer=3,
    n_head=3,
    n_embd=48,
    **{k: v for k, v in _GPT2.items() if k not in ("vocab_size", "block_size")},
)
register_preset(
    "gpt-micro",
    "gpt",
    description="small GPT-2 style: 4 layers x 128, 4 heads (minGPT's gpt-micro shape), GPT-2 BPE vocabulary",
    vocab_size=50257,
    block_size=128,
    n_layer=4,
    n_head=4,
    n_embd=128,
    **{k: v for k, v in _GPT2.items() if k not in ("vocab_size", "block_size")},
)
register_preset(
    "gpt-baby-char",
    "gpt",
    description="baby character-level GPT: 4 layers x 128, 4 heads, context 64, 65 characters (Shakespeare)",
    vocab_size=65,
    block_size=64,
    n_layer=4,
    n_head=4,
    n_embd=128,
    mlp="gelu",
)
register_preset(
    "llama-nano",
    "gpt",
    description="tiny Llama style: 2 layers x 64, 4 heads / 2 kv heads, SwiGLU 176, byte vocabulary",
    vocab_size=256,
    block_size=64,
    n_layer=2,
    n_head=4,
    n_kv_head=2,
    n_embd=64,
    intermediate_size=176,
    **_LLAMA,
)
register_preset(
    "moe-nano",
    "gpt",
    description="tiny mixture of experts, Qwen-MoE style: 2 layers x 64, 4 experts of 96 (top-2), a gated shared "
    "expert of 64, q/k/v biases",
    vocab_size=256,
    block_size=64,
    n_layer=2,
    n_head=4,
    n_kv_head=2,
    n_embd=64,
    intermediate_size=96,
    n_experts=4,
    n_experts_per_token=2,
    shared_expert_size=64,
    shared_expert_gate=True,
    **{**_LLAMA, "attn_bias": True, "attn_out_bias": False},
)
