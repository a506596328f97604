"""Hugging Face <-> layerwise conversion for decoder-only checkpoints (GPT-2, Llama, and the
mixtures of experts Mixtral and Qwen2-MoE).

- :func:`gpt_config_from_hf` / :func:`gpt_config_to_hf`: a ``config.json`` dict
  (``model_type`` "gpt2" or "llama") to a :class:`~layerwise.models.gpt.GPTConfig` and back.
- :func:`gpt_state_dict_from_hf` / :func:`gpt_state_dict_to_hf`: rename tensors, transpose
  GPT-2's ``Conv1D`` weights (stored (in, out)), fuse or split the query/key/value
  projections to the layout each side uses, and share the tied LM head.
- :func:`load_hf_gpt`: config dict + state dict -> a loaded :class:`~layerwise.models.gpt.GPT`.

Both directions check every key and shape against the config first and raise one
:class:`~layerwise.errors.LoadError` listing what is missing, unexpected or mis-shaped,
so a model is never half-loaded.
"""

from __future__ import annotations

import re
from typing import Any, Mapping

import torch

from layerwise.errors import ConfigError, LoadError
from layerwise.models.gpt import GPT, GPTConfig

HF_MODEL_TYPES = ("gpt2", "llama", "mixtral", "qwen2_moe")

# GPT-2 keeps these Linear-like weights in transformers' Conv1D, shape (in, out).
_GPT2_CONV1D = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")
# Non-parameter entries some checkpoints carry: GPT-2's causal-mask buffers, Llama's RoPE frequencies.
_IGNORED = {
    "gpt2": re.compile(r"\.attn\.(bias|masked_bias)$"),
    "llama": re.compile(r"\.rotary_emb\.inv_freq$"),
    "mixtral": re.compile(r"\.rotary_emb\.inv_freq$"),
    "qwen2_moe": re.compile(r"\.rotary_emb\.inv_freq$"),
}
# Module paths inside layer i: ours (transformer.h.i.*) and Llama's (model.layers.i.*).
_LLAMA_LAYER_NAMES = (
    ("ln_1", "input_layernorm"),
    ("attn.q_proj", "self_attn.q_proj"),
    ("attn.k_proj", "self_attn.k_proj"),
    ("attn.v_proj", "self_attn.v_proj"),
    ("attn.c_proj", "self_attn.o_proj"),
    ("ln_2", "post_attention_layernorm"),
    ("mlp.gate_proj", "mlp.gate_proj"),
    ("mlp.up_proj", "mlp.up_proj"),
    ("mlp.down_proj", "mlp.down_proj"),
)
# A mixture-of-experts layer: the router is transformers' ``gate``; the 3-D expert weights
# (gate_up_proj, down_proj) and the shared expert keep their names.
_MOE_LAYER_NAMES = tuple(p for p in _LLAMA_LAYER_NAMES if not p[0].startswith("mlp.")) + (
    ("mlp.router", "mlp.gate"),
    ("mlp.experts", "mlp.experts"),
    ("mlp.shared_expert_gate", "mlp.shared_expert_gate"),
    ("mlp.shared_expert", "mlp.shared_expert"),
)
_LLAMA_TOP_NAMES = (
    ("transformer.wte", "model.embed_tokens"),
    ("transformer.ln_f", "model.norm"),
    ("lm_head", "lm_head"),
)

# Defaults transformers applies when a config.json leaves a key out.
_GPT2_DEFAULTS = {
    "n_positions": 1024,
    "n_inner": None,
    "activation_function": "gelu_new",
    "layer_norm_epsilon": 1e-5,
    "tie_word_embeddings": True,
    "resid_pdrop": 0.1,
}
_LLAMA_DEFAULTS = {
    "num_key_value_heads": None,
    "head_dim": None,
    "hidden_act": "silu",
    "max_position_embeddings": 2048,
    "rms_norm_eps": 1e-6,
    "rope_theta": 10000.0,
    "attention_bias": False,
    "mlp_bias": False,
    "tie_word_embeddings": False,
    "attention_dropout": 0.0,
}
_GPT2_ACTIVATIONS = {"gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh", "gelu": "gelu"}


# ---------------------------------------------------------------- configs


def gpt_config_from_hf(hf_config: Mapping[str, Any]) -> GPTConfig:
    """A GPTConfig from a Hugging Face ``config.json`` dict with model_type "gpt2" or "llama"."""
    model_type = hf_config.get("model_type")
    if model_type == "gpt2":
        return _gpt2_config(hf_config)
    if model_type == "llama":
        return _llama_config(hf_config)
    if model_type in ("mixtral", "qwen2_moe"):
        return _moe_config(hf_config, model_type)
    raise ConfigError(
        f"Hugging Face config: model_type {model_type!r} is not supported; expected one of {', '.join(HF_MODEL_TYPES)}"
    )


def _getter(hf: Mapping[str, Any], model_type: str, defaults: Mapping[str, Any]):
    def get(key: str):
        if key in hf and hf[key] is not None:
            return hf[key]
        if key in defaults:
            return defaults[key]
        raise ConfigError(f"Hugging Face {model_type} config: missing key {key!r}")

    return get


def _unsupported(model_type: str, key: str, value: Any, expected: str) -> ConfigError:
    return ConfigError(f"Hugging Face {model_type} config: {key}={value!r} is not supported; expected {expected}")


def _gpt2_config(hf: Mapping[str, Any]) -> GPTConfig:
    get = _getter(hf, "gpt2", _GPT2_DEFAULTS)
    act = get("activation_function")
    if act not in _GPT2_ACTIVATIONS:
        raise _unsupported("gpt2", "activation_function", act, f"one of {', '.join(_GPT2_ACTIVATIONS)}")
    for key, supported in (("scale_attn_weights", True), ("scale_attn_by_inverse_layer_idx", False)):
        if hf.get(key, supported) != supported:
            raise _unsupported("gpt2", key, hf[key], str(supported))
    if hf.get("add_cross_attention"):
        raise _unsupported("gpt2", "add_cross_attention", True, "False (decoder-only)")
    return GPTConfig(
        vocab_size=int(get("vocab_size")),
        block_size=int(hf.get("n_positions") or hf.get("n_ctx") or get("n_positions")),
        n_layer=int(get("n_layer")),
        n_head=int(get("n_head")),
        n_embd=int(get("n_embd")),
        intermediate_size=None if get("n_inner") is None else int(get("n_inner")),
        mlp=_GPT2_ACTIVATIONS[act],
        norm="layernorm",
        norm_eps=float(get("layer_norm_epsilon")),
        pos_embedding="learned",
        attn_qkv="fused",
        attn_bias=True,
        mlp_bias=True,
        tie_embeddings=bool(get("tie_word_embeddings")),
        dropout=float(get("resid_pdrop")),
    )


def _llama_rope(hf: Mapping[str, Any], get) -> dict[str, Any]:
    """RoPE fields from transformers 5's ``rope_parameters`` or the older rope_theta + rope_scaling."""
    params = dict(hf.get("rope_parameters") or {})
    scaling = dict(hf.get("rope_scaling") or {})
    theta = params.get("rope_theta", get("rope_theta"))
    params = {**scaling, **params}
    kind = params.get("rope_type", params.get("type", "default"))
    if params.get("partial_rotary_factor", 1.0) != 1.0:
        raise _unsupported("llama", "partial_rotary_factor", params["partial_rotary_factor"], "1.0")
    fields: dict[str, Any] = {"rope_base": float(theta)}
    if kind == "default":
        return {**fields, "rope_scaling": "none"}
    if kind != "llama3":
        raise _unsupported("llama", "rope_type", kind, "'default' or 'llama3'")
    try:
        return {
            **fields,
            "rope_scaling": "llama3",
            "rope_scaling_factor": float(params["factor"]),
            "rope_low_freq_factor": float(params["low_freq_factor"]),
            "rope_high_freq_factor": float(params["high_freq_factor"]),
            "rope_original_context": int(
                params.get("original_max_position_embeddings") or get("max_position_embeddings")
            ),
        }
    except KeyError as e:
        raise ConfigError(f"Hugging Face llama config: llama3 rope scaling is missing {e.args[0]!r}") from None


def _llama_config(hf: Mapping[str, Any]) -> GPTConfig:
    get = _getter(hf, "llama", _LLAMA_DEFAULTS)
    if get("hidden_act") != "silu":
        raise _unsupported("llama", "hidden_act", get("hidden_act"), "'silu' (SwiGLU)")
    hidden, heads = int(get("hidden_size")), int(get("num_attention_heads"))
    head_dim = get("head_dim")
    kv_heads = get("num_key_value_heads")
    return GPTConfig(
        vocab_size=int(get("vocab_size")),
        block_size=int(get("max_position_embeddings")),
        n_layer=int(get("num_hidden_layers")),
        n_head=heads,
        n_kv_head=None if kv_heads is None or int(kv_heads) == heads else int(kv_heads),
        n_embd=hidden,
        head_dim=None if head_dim is None or int(head_dim) * heads == hidden else int(head_dim),
        intermediate_size=int(get("intermediate_size")),
        mlp="swiglu",
        norm="rmsnorm",
        norm_eps=float(get("rms_norm_eps")),
        pos_embedding="rope",
        **_llama_rope(hf, get),
        attn_qkv="separate",
        attn_bias=bool(get("attention_bias")),
        mlp_bias=bool(get("mlp_bias")),
        tie_embeddings=bool(get("tie_word_embeddings")),
        dropout=float(get("attention_dropout")),
    )


def _moe_config(hf: Mapping[str, Any], model_type: str) -> GPTConfig:
    qwen = model_type == "qwen2_moe"
    get = _getter(hf, model_type, {**_LLAMA_DEFAULTS, "qkv_bias": True, "norm_topk_prob": False,
                                   "decoder_sparse_step": 1, "mlp_only_layers": [], "use_sliding_window": False,
                                   "sliding_window": None})
    if get("hidden_act") != "silu":
        raise _unsupported(model_type, "hidden_act", get("hidden_act"), "'silu' (SwiGLU experts)")
    if qwen and (get("decoder_sparse_step") != 1 or get("mlp_only_layers")):
        raise _unsupported(model_type, "decoder_sparse_step/mlp_only_layers",
                           (get("decoder_sparse_step"), get("mlp_only_layers")), "1 and [] (experts in every layer)")
    if get("sliding_window") and (not qwen or get("use_sliding_window")):
        raise _unsupported(model_type, "sliding_window", get("sliding_window"), "none (full attention)")
    hidden, heads = int(get("hidden_size")), int(get("num_attention_heads"))
    head_dim, kv_heads = get("head_dim"), get("num_key_value_heads")
    fields: dict[str, Any] = dict(
        vocab_size=int(get("vocab_size")),
        block_size=int(get("max_position_embeddings")),
        n_layer=int(get("num_hidden_layers")),
        n_head=heads,
        n_kv_head=None if kv_heads is None or int(kv_heads) == heads else int(kv_heads),
        n_embd=hidden,
        head_dim=None if head_dim is None or int(head_dim) * heads == hidden else int(head_dim),
        intermediate_size=int(get("intermediate_size")),
        mlp="swiglu", norm="rmsnorm", norm_eps=float(get("rms_norm_eps")), pos_embedding="rope",
        **_llama_rope(hf, get), attn_qkv="separate", mlp_bias=False,
        tie_embeddings=bool(get("tie_word_embeddings")), dropout=float(get("attention_dropout")),
    )
    if qwen:
        qkv_bias = bool(get("qkv_bias"))
        fields.update(attn_bias=qkv_bias, attn_out_bias=False if qkv_bias else None,
                      n_experts=int(get("num_experts")), n_experts_per_token=int(get("num_experts_per_tok")),
                      moe_intermediate_size=(None if int(get("moe_intermediate_size")) == int(get("intermediate_size"))
                                             else int(get("moe_intermediate_size"))),
                      moe_norm_topk=bool(get("norm_topk_prob")),
                      shared_expert_size=int(get("shared_expert_intermediate_size")), shared_expert_gate=True)
    else:
        fields.update(attn_bias=False, n_experts=int(get("num_local_experts")),
                      n_experts_per_token=int(get("num_experts_per_tok")))
    return GPTConfig(**fields)


def hf_model_type(config: GPTConfig) -> str:
    """The Hugging Face architecture that computes the same function as config: "gpt2",
    "llama", "mixtral" (experts, no shared expert) or "qwen2_moe" (a gated shared expert)."""
    if config.n_experts:
        shared = config.shared_expert_size > 0
        model_type = "qwen2_moe" if shared else "mixtral"
        out_bias = config.attn_bias if config.attn_out_bias is None else config.attn_out_bias
        needs = {"norm": config.norm == "rmsnorm", "pos_embedding": config.pos_embedding == "rope",
                 "mlp_bias": not config.mlp_bias, "attn_qkv": config.attn_qkv == "separate"}
        if shared:
            needs.update(shared_expert_gate=config.shared_expert_gate, attn_out_bias=not out_bias)
        else:
            needs.update(moe_norm_topk=config.moe_norm_topk, attn_bias=not config.attn_bias,
                         moe_intermediate_size=config.moe_intermediate_size in (None, config.ffn_size))
        unmet = [field for field, ok in needs.items() if not ok]
        if unmet:
            values = ", ".join(f"{f}={getattr(config, f)!r}" for f in unmet)
            raise ConfigError(f"GPTConfig: no Hugging Face equivalent for a mixture of experts with {values} "
                              "(mixtral: no biases, top-k renormalised; qwen2_moe: a gated shared expert, "
                              "q/k/v biases or none, no output bias)")
        return model_type
    if config.attn_out_bias is not None and config.attn_out_bias != config.attn_bias:
        raise ConfigError(f"GPTConfig: no Hugging Face equivalent for attn_out_bias={config.attn_out_bias!r} "
                          f"with attn_bias={config.attn_bias!r} in a dense model")
    if config.pos_embedding == "learned":
        model_type = "gpt2"
        needs = {
            "norm": config.norm == "layernorm",
            "mlp": config.mlp in ("gelu", "gelu_tanh"),
            "n_kv_head": config.kv_heads == config.n_head,
            "head_dim": config.head_size * config.n_head == config.n_embd,
            "attn_bias": config.attn_bias,
            "mlp_bias": config.mlp_bias,
        }
    else:
        model_type = "llama"
        needs = {"norm": config.norm == "rmsnorm", "mlp": config.mlp == "swiglu"}
    unmet = [field for field, ok in needs.items() if not ok]
    if unmet:
        values = ", ".join(f"{f}={getattr(config, f)!r}" for f in unmet)
        raise ConfigError(
            f"GPTConfig: no Hugging Face equivalent for pos_embedding={config.pos_embedding!r} with {values} "
            "(gpt2: layernorm, gelu/gelu_tanh, no GQA, biases; llama: rope, rmsnorm, swiglu)"
        )
    return model_type


def gpt_config_to_hf(config: GPTConfig) -> dict[str, Any]:
    """A Hugging Face ``config.json`` dict (gpt2 or llama, see :func:`hf_model_type`) for config."""
    model_type = hf_model_type(config)
    if model_type == "gpt2":
        return {
            "model_type": "gpt2",
            "architectures": ["GPT2LMHeadModel"],
            "vocab_size": config.vocab_size,
            "n_positions": config.block_size,
            "n_embd": config.n_embd,
            "n_layer": config.n_layer,
            "n_head": config.n_head,
            "n_inner": config.intermediate_size,
            "activation_function": "gelu_new" if config.mlp == "gelu_tanh" else "gelu",
            "layer_norm_epsilon": config.norm_eps,
            "tie_word_embeddings": config.tie_embeddings,
            "resid_pdrop": config.dropout,
            "embd_pdrop": config.dropout,
            "attn_pdrop": config.dropout,
        }
    if model_type in ("mixtral", "qwen2_moe"):
        return _moe_config_to_hf(config, model_type)
    rope_scaling = None
    if config.rope_scaling == "llama3":
        rope_scaling = {
            "rope_type": "llama3",
            "factor": config.rope_scaling_factor,
            "low_freq_factor": config.rope_low_freq_factor,
            "high_freq_factor": config.rope_high_freq_factor,
            "original_max_position_embeddings": config.rope_original_context,
        }
    return {
        "model_type": "llama",
        "architectures": ["LlamaForCausalLM"],
        "vocab_size": config.vocab_size,
        "hidden_size": config.n_embd,
        "intermediate_size": config.ffn_size,
        "num_hidden_layers": config.n_layer,
        "num_attention_heads": config.n_head,
        "num_key_value_heads": config.kv_heads,
        "head_dim": config.head_size,
        "hidden_act": "silu",
        "max_position_embeddings": config.block_size,
        "rms_norm_eps": config.norm_eps,
        "rope_theta": config.rope_base,
        "rope_scaling": rope_scaling,
        "attention_bias": config.attn_bias,
        "mlp_bias": config.mlp_bias,
        "tie_word_embeddings": config.tie_embeddings,
        "attention_dropout": config.dropout,
    }


def _moe_config_to_hf(config: GPTConfig, model_type: str) -> dict[str, Any]:
    rope_scaling = None
    if config.rope_scaling == "llama3":
        rope_scaling = {"rope_type": "llama3", "factor": config.rope_scaling_factor,
                        "low_freq_factor": config.rope_low_freq_factor, "high_freq_factor": config.rope_high_freq_factor,
                        "original_max_position_embeddings": config.rope_original_context}
    d: dict[str, Any] = {
        "model_type": model_type,
        "vocab_size": config.vocab_size,
        "hidden_size": config.n_embd,
        "num_hidden_layers": config.n_layer,
        "num_attention_heads": config.n_head,
        "num_key_value_heads": config.kv_heads,
        "head_dim": config.head_size,
        "hidden_act": "silu",
        "max_position_embeddings": config.block_size,
        "rms_norm_eps": config.norm_eps,
        "rope_theta": config.rope_base,
        "rope_scaling": rope_scaling,
        "tie_word_embeddings": config.tie_embeddings,
        "attention_dropout": config.dropout,
        "num_experts_per_tok": config.n_experts_per_token,
    }
    if model_type == "mixtral":
        d.update(architectures=["MixtralForCausalLM"], intermediate_size=config.expert_size,
                 num_local_experts=config.n_experts, sliding_window=None)
    else:
        d.update(architectures=["Qwen2MoeForCausalLM"], intermediate_size=config.ffn_size,
                 moe_intermediate_size=config.expert_size, shared_expert_intermediate_size=config.shared_expert_size,
                 num_experts=config.n_experts, norm_topk_prob=config.moe_norm_topk, qkv_bias=config.attn_bias,
                 decoder_sparse_step=1, mlp_only_layers=[], use_sliding_window=False)
    return d


# ---------------------------------------------------------------- state dicts


def _shape(t: torch.Tensor) -> tuple[int, ...]:
    return tuple(t.shape)


def _listing(keys: list[str], limit: int = 6) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f" and {len(keys) - limit} more" if len(keys) > limit else "")


def _check_keys(
    what: str,
    got: Mapping[str, torch.Tensor],
    expected: Mapping[str, tuple[int, ...]],
    optional: set[str],
) -> None:
    """One LoadError listing missing, unexpected and mis-shaped keys, if any."""
    missing = [k for k in expected if k not in got and k not in optional]
    unexpected = sorted(k for k in got if k not in expected)
    wrong = [
        f"{k} (expected {expected[k]}, got {_shape(got[k])})"
        for k in expected
        if k in got and _shape(got[k]) != expected[k]
    ]
    problems = []
    if missing:
        problems.append(f"missing {len(missing)} key(s): {_listing(missing)}")
    if unexpected:
        problems.append(f"unexpected {len(unexpected)} key(s): {_listing(unexpected)}")
    if wrong:
        problems.append(f"{len(wrong)} wrong shape(s): {_listing(wrong, 3)}")
    if problems:
        raise LoadError(f"{what}: " + "; ".join(problems))


def _expected_ours(config: GPTConfig) -> dict[str, tuple[int, ...]]:
    with torch.device("meta"):
        model = GPT(config)
    return {k: _shape(v) for k, v in model.state_dict().items()}


def _check_model_type(config: GPTConfig, model_type: str) -> str:
    if model_type not in HF_MODEL_TYPES:
        raise ConfigError(f"model_type {model_type!r} is not supported; expected one of {', '.join(HF_MODEL_TYPES)}")
    fits = hf_model_type(config)
    if fits != model_type:
        raise ConfigError(f"model_type {model_type!r} does not fit this GPTConfig, which matches {fits!r}")
    return model_type


def _fuse_qkv(sd: dict[str, torch.Tensor], n_layer: int) -> None:
    for i in range(n_layer):
        p = f"transformer.h.{i}.attn."
        for part in ("weight", "bias"):
            if f"{p}q_proj.{part}" in sd:
                qkv = [sd.pop(f"{p}{name}.{part}") for name in ("q_proj", "k_proj", "v_proj")]
                sd[f"{p}c_attn.{part}"] = torch.cat(qkv, dim=0)  # (q_dim + 2*kv_dim, ...)


def _split_qkv(sd: dict[str, torch.Tensor], config: GPTConfig) -> None:
    sizes = [config.n_head * config.head_size] + [config.kv_heads * config.head_size] * 2
    for i in range(config.n_layer):
        p = f"transformer.h.{i}.attn."
        for part in ("weight", "bias"):
            if f"{p}c_attn.{part}" in sd:
                q, k, v = sd.pop(f"{p}c_attn.{part}").split(sizes, dim=0)
                sd.update({f"{p}q_proj.{part}": q, f"{p}k_proj.{part}": k, f"{p}v_proj.{part}": v})


def _rename(key: str, src_layer: str, dst_layer: str, pairs, top) -> str:
    """Map a key between naming schemes via (source, destination) module-path pairs."""
    m = re.match(rf"{re.escape(src_layer)}\.(\d+)\.(.+)$", key)
    if m:
        index, rest = m.groups()
        for src, dst in pairs:
            if rest.startswith(src + "."):
                return f"{dst_layer}.{index}.{dst}{rest[len(src):]}"
    else:
        for src, dst in top:
            if key.startswith(src + "."):
                return dst + key[len(src) :]
    raise KeyError(key)


def _is_conv1d(key: str) -> bool:
    return key.startswith("transformer.h.") and key.endswith(_GPT2_CONV1D)


def _ours_to_hf(sd: dict[str, torch.Tensor], config: GPTConfig, model_type: str) -> dict[str, torch.Tensor]:
    sd = dict(sd)
    if model_type == "gpt2":
        if config.attn_qkv == "separate":
            _fuse_qkv(sd, config.n_layer)
        return {k: v.t().contiguous() if _is_conv1d(k) else v for k, v in sd.items()}
    if config.attn_qkv == "fused":
        _split_qkv(sd, config)
    pairs = _MOE_LAYER_NAMES if model_type in ("mixtral", "qwen2_moe") else _LLAMA_LAYER_NAMES
    return {_rename(k, "transformer.h", "model.layers", pairs, _LLAMA_TOP_NAMES): v for k, v in sd.items()}


def gpt_state_dict_to_hf(
    state_dict: Mapping[str, torch.Tensor], config: GPTConfig, model_type: str | None = None
) -> dict[str, torch.Tensor]:
    """Our GPT state dict -> Hugging Face names and layouts (``GPT2LMHeadModel`` / ``LlamaForCausalLM``).

    model_type defaults to :func:`hf_model_type` (config). A tied head appears as
    ``lm_head.weight`` sharing the embedding's tensor, as in transformers' own state dict.
    """
    model_type = _check_model_type(config, model_type or hf_model_type(config))
    optional = {"lm_head.weight"} if config.tie_embeddings else set()
    _check_keys("GPT state dict", state_dict, _expected_ours(config), optional)
    sd = dict(state_dict)
    if config.tie_embeddings:
        sd["lm_head.weight"] = sd["transformer.wte.weight"]
    return _ours_to_hf(sd, config, model_type)


def _normalise_hf_keys(hf_state_dict: Mapping[str, torch.Tensor], model_type: str) -> dict[str, torch.Tensor]:
    """Add the base-model prefix where a checkpoint leaves it out; drop non-parameter buffers."""
    prefix = "transformer." if model_type == "gpt2" else "model."
    out = {}
    for key, value in hf_state_dict.items():
        if _IGNORED[model_type].search(key):
            continue
        if not key.startswith((prefix, "lm_head.")):
            key = prefix + key
        out[key] = value
    return out


def gpt_state_dict_from_hf(
    hf_state_dict: Mapping[str, torch.Tensor], config: GPTConfig, model_type: str
) -> dict[str, torch.Tensor]:
    """A Hugging Face GPT-2 or Llama state dict -> our names, ready for ``GPT(config).load_state_dict``.

    Accepts keys with or without the base-model prefix (``transformer.`` / ``model.``) and
    ignores GPT-2's attention-mask buffers and Llama's ``rotary_emb.inv_freq``. With tied
    embeddings ``lm_head.weight`` may be absent; if present it must equal the embedding.
    Raises LoadError listing every missing, unexpected or mis-shaped key.
    """
    model_type = _check_model_type(config, model_type)
    hf = _normalise_hf_keys(hf_state_dict, model_type)
    with torch.device("meta"):
        expected = {k: _shape(v) for k, v in _ours_to_hf(GPT(config).state_dict(), config, model_type).items()}
    tied = config.tie_embeddings
    embed = "transformer.wte.weight" if model_type == "gpt2" else "model.embed_tokens.weight"
    _check_keys(f"Hugging Face {model_type} state dict", hf, expected, {"lm_head.weight"} if tied else set())
    if tied and "lm_head.weight" in hf:
        head, emb = hf.pop("lm_head.weight"), hf[embed]
        if not (head.is_meta or emb.is_meta or head is emb or torch.equal(head, emb)):
            raise LoadError(
                f"Hugging Face {model_type} state dict: lm_head.weight differs from {embed}, "
                "but the config ties them (tie_word_embeddings)"
            )
    if model_type == "gpt2":
        sd = {k: v.t().contiguous() if _is_conv1d(k) else v for k, v in hf.items()}
        if config.attn_qkv == "separate":
            _split_qkv(sd, config)
    else:
        pairs = _MOE_LAYER_NAMES if model_type in ("mixtral", "qwen2_moe") else _LLAMA_LAYER_NAMES
        hf_ours = [(b, a) for a, b in pairs]
        top = [(b, a) for a, b in _LLAMA_TOP_NAMES]
        sd = {_rename(k, "model.layers", "transformer.h", hf_ours, top): v for k, v in hf.items()}
        if config.attn_qkv == "fused":
            _fuse_qkv(sd, config.n_layer)
    if tied:
        sd["lm_head.weight"] = sd["transformer.wte.weight"]
    return sd


def load_hf_gpt(
    hf_config: Mapping[str, Any],
    hf_state_dict: Mapping[str, torch.Tensor],
    device: str | torch.device = "cpu",
    dtype: torch.dtype | None = None,
) -> GPT:
    """Build a GPT from a Hugging Face config dict and load its state dict (strict), in eval mode.

    Every key and shape is checked before anything is copied. ``dtype`` defaults to
    torch's default dtype; tensors are cast to it.
    """
    from layerwise.models.registry import build

    config = gpt_config_from_hf(hf_config)
    state_dict = gpt_state_dict_from_hf(hf_state_dict, config, hf_config["model_type"])
    model = build(config, device="meta")
    model.to_empty(device=device)
    if dtype is not None:
        model.to(dtype=dtype)
    model.load_state_dict(state_dict, strict=True)
    return model.eval()
