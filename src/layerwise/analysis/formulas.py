"""Parameter formulas for built-in layer types, with the numbers substituted.

``formula(module)`` returns a :class:`Formula` whose ``value`` is computed from the
layer's hyper-parameters (not from its tensors), so a test can check it against
``numel()``: the formula is the explanation, the tensors are the truth.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from torch import nn

from layerwise.analysis.kinds import is_hf_conv1d, is_norm


@dataclass(frozen=True)
class Formula:
    layer: str  # "Linear"
    symbolic: str  # "in·out + out"
    substituted: str  # "768·3072 + 3072"
    value: int

    def __str__(self) -> str:
        return f"{self.layer}: {self.substituted} = {self.value:,}"


def _dot(*xs) -> str:
    return "·".join(str(x) for x in xs)


def _linear(m: nn.Linear) -> Formula:
    i, o = m.in_features, m.out_features
    if m.bias is not None:
        return Formula("Linear", "in·out + out", f"{_dot(i, o)} + {o}", i * o + o)
    return Formula("Linear", "in·out", _dot(i, o), i * o)


def _hf_conv1d(m) -> Formula:
    nx, nf = m.weight.shape
    if getattr(m, "bias", None) is not None:
        return Formula("Conv1D (Linear)", "in·out + out", f"{_dot(nx, nf)} + {nf}", nx * nf + nf)
    return Formula("Conv1D (Linear)", "in·out", _dot(nx, nf), nx * nf)


def _bilinear(m: nn.Bilinear) -> Formula:
    a, b, o = m.in1_features, m.in2_features, m.out_features
    v = a * b * o + (o if m.bias is not None else 0)
    return Formula("Bilinear", "in1·in2·out + out", f"{_dot(a, b, o)} + {o}" if m.bias is not None else _dot(a, b, o), v)


def _conv(m: nn.modules.conv._ConvNd) -> Formula:
    ks = tuple(m.kernel_size)
    g = m.groups
    name = type(m).__name__
    kdims = _dot(*ks)
    k = math.prod(ks)
    if m.transposed:
        # weight (C_in, C_out/g, *k)
        ci, co = m.in_channels, m.out_channels
        w = k * ci * (co // g)
        sym = "K·C_in·(C_out/g)"
        sub = f"{kdims}·{ci}·({co}/{g})" if g > 1 else f"{kdims}·{ci}·{co}"
    else:
        ci, co = m.in_channels, m.out_channels
        w = k * (ci // g) * co
        sym = "K·(C_in/g)·C_out"
        sub = f"{kdims}·({ci}/{g})·{co}" if g > 1 else f"{kdims}·{ci}·{co}"
    if m.bias is not None:
        return Formula(name, sym + " + C_out", f"{sub} + {co}", w + co)
    return Formula(name, sym, sub, w)


def _embedding(m) -> Formula:
    v, d = m.num_embeddings, m.embedding_dim
    return Formula(type(m).__name__, "V·d", _dot(v, d), v * d)


def _norm(m: nn.Module) -> Formula | None:
    name = type(m).__name__
    if isinstance(m, (nn.modules.batchnorm._BatchNorm, nn.modules.instancenorm._InstanceNorm)):
        c = m.num_features
        if not m.affine:
            return Formula(name, "0 (affine=False)", "0", 0)
        return Formula(name, "2·C (γ, β)", _dot(2, c), 2 * c)
    if isinstance(m, nn.GroupNorm):
        c = m.num_channels
        if not m.affine:
            return Formula(name, "0 (affine=False)", "0", 0)
        return Formula(name, "2·C (γ, β)", _dot(2, c), 2 * c)
    if isinstance(m, nn.LayerNorm):
        d = math.prod(m.normalized_shape)
        if not m.elementwise_affine:
            return Formula(name, "0 (no affine)", "0", 0)
        if m.bias is None:
            return Formula(name, "d (γ)", str(d), d)
        return Formula(name, "2·d (γ, β)", _dot(2, d), 2 * d)
    if isinstance(m, nn.RMSNorm):
        d = math.prod(m.normalized_shape)
        if not m.elementwise_affine:
            return Formula(name, "0 (no affine)", "0", 0)
        return Formula(name, "d (γ)", str(d), d)
    if isinstance(m, nn.LocalResponseNorm):
        return Formula(name, "0", "0", 0)
    return None


_GATES = {"RNN_TANH": 1, "RNN_RELU": 1, "LSTM": 4, "GRU": 3}


def _rnn(m: nn.RNNBase) -> Formula:
    gates = _GATES[m.mode]
    h, p = m.hidden_size, getattr(m, "proj_size", 0) or 0
    dirs = 2 if m.bidirectional else 1
    out = p or h  # size of each direction's output / recurrent state fed to W_hh
    terms, total = [], 0
    for layer in range(m.num_layers):
        i = m.input_size if layer == 0 else out * dirs
        w = gates * h * (i + out)
        b = 2 * gates * h if m.bias else 0
        proj = p * h if p else 0
        total += dirs * (w + b + proj)
        t = f"{gates}·{h}·({i} + {out})"
        if m.bias:
            t += f" + 2·{gates}·{h}"
        if p:
            t += f" + {p}·{h}"
        terms.append(f"{dirs}·({t})" if dirs > 1 else f"({t})")
    sym = "Σ_layers dirs·(G·h·(i + h) + 2·G·h)"
    if p:
        sym = "Σ_layers dirs·(G·h·(i + p) + 2·G·h + p·h)"
    return Formula(f"{type(m).__name__} (G={gates})", sym, " + ".join(terms), total)


def _rnn_cell(m: nn.RNNCellBase) -> Formula:
    gates = {"RNNCell": 1, "LSTMCell": 4, "GRUCell": 3}.get(type(m).__name__, m.weight_ih.shape[0] // m.hidden_size)
    i, h = m.input_size, m.hidden_size
    w = gates * h * (i + h)
    if m.bias:
        return Formula(type(m).__name__, "G·h·(i + h) + 2·G·h", f"{gates}·{h}·({i} + {h}) + 2·{gates}·{h}", w + 2 * gates * h)
    return Formula(type(m).__name__, "G·h·(i + h)", f"{gates}·{h}·({i} + {h})", w)


def _mha(m: nn.MultiheadAttention) -> Formula:
    # Own parameters only: the output projection is a child Linear with its own row.
    e, kd, vd = m.embed_dim, m.kdim, m.vdim
    if m._qkv_same_embed_dim:
        w, sub = 3 * e * e, f"3·{e}·{e}"
        sym = "3·E·E"
    else:
        w, sub = e * e + e * kd + e * vd, f"{e}·{e} + {e}·{kd} + {e}·{vd}"
        sym = "E·E + E·k + E·v"
    if m.in_proj_bias is not None:
        w += 3 * e
        sub += f" + 3·{e}"
        sym += " + 3·E"
    if m.bias_k is not None:
        w += 2 * e
        sub += f" + 2·{e}"
        sym += " + 2·E (bias_k, bias_v)"
    return Formula("MultiheadAttention (in-proj)", sym, sub, w)


def formula(module: nn.Module) -> Formula | None:
    """The parameter formula of a built-in layer type (own parameters), or None if unknown."""
    if isinstance(module, nn.Linear):
        return _linear(module)
    if is_hf_conv1d(module):
        return _hf_conv1d(module)
    if isinstance(module, nn.Bilinear):
        return _bilinear(module)
    if isinstance(module, nn.modules.conv._ConvNd):
        return _conv(module)
    if isinstance(module, (nn.Embedding, nn.EmbeddingBag)):
        return _embedding(module)
    if isinstance(module, nn.RNNBase):
        return _rnn(module)
    if isinstance(module, nn.RNNCellBase):
        return _rnn_cell(module)
    if isinstance(module, nn.MultiheadAttention):
        return _mha(module)
    if is_norm(module):
        return _norm(module)
    return None
