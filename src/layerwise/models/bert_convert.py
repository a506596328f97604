"""Hugging Face BERT checkpoints ↔ :class:`layerwise.models.bert.Bert`.

Keys are renamed one to one (``encoder.layer.3.attention.self.query.weight`` ↔
``layers.3.attention.query.weight``); nothing is reshaped. Loading is strict:
every parameter the model needs must be in the checkpoint with the right shape
and every checkpoint entry must have a home, or a one-line
:class:`~layerwise.errors.LoadError` lists what is missing, unexpected or
mis-shaped, before any weight is copied. Two departures are explicit arguments:
``init_head=True`` lets a task head that the checkpoint lacks keep its fresh
initialisation, and ``discard`` names checkpoint entries dropped on purpose (e.g.
``("cls.", "pooler.")`` to fine-tune a pretraining checkpoint with a head that
reads neither).

Accepted checkpoint spellings: the bare ``BertModel`` names, the task models'
``bert.``-prefixed names, and the legacy ``LayerNorm.gamma``/``beta``. Hugging
Face's ``embeddings.position_ids`` / ``token_type_ids`` buffers (constants, not
weights; older files store them) are dropped.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from layerwise.errors import ConfigError, LoadError
from layerwise.models.bert import Bert, BertConfig

# Hugging Face hidden_act → our activation.
HF_ACTIVATIONS = {
    "gelu": "gelu",
    "gelu_new": "gelu_tanh",
    "gelu_pytorch_tanh": "gelu_tanh",
    "relu": "relu",
    "silu": "silu",
    "swish": "silu",
}
HF_BUFFERS = ("embeddings.position_ids", "embeddings.token_type_ids")

# Our module path → Hugging Face module path (without the task models' "bert." prefix).
_TOP = {
    "embeddings.word": "embeddings.word_embeddings",
    "embeddings.position": "embeddings.position_embeddings",
    "embeddings.token_type": "embeddings.token_type_embeddings",
    "embeddings.norm": "embeddings.LayerNorm",
    "pooler.dense": "pooler.dense",
    "head.classifier": "classifier",
    "head.dense": "cls.predictions.transform.dense",
    "head.norm": "cls.predictions.transform.LayerNorm",
}
_LAYER = {
    "attention.query": "attention.self.query",
    "attention.key": "attention.self.key",
    "attention.value": "attention.self.value",
    "attention.out": "attention.output.dense",
    "attention_norm": "attention.output.LayerNorm",
    "mlp.up": "intermediate.dense",
    "mlp.down": "output.dense",
    "mlp_norm": "output.LayerNorm",
}
_TIED = "head.decoder.weight"  # the masked-LM decoder weight is the word embedding
_HF_DECODER_WEIGHT = "cls.predictions.decoder.weight"
_HF_DECODER_BIAS_ALIAS = "cls.predictions.decoder.bias"  # Hugging Face ties it to cls.predictions.bias


def _hf_name(ours: str) -> str:
    """Our state-dict key → Hugging Face's (unprefixed) key."""
    if ours == "head.decoder.bias":
        return "cls.predictions.bias"
    module, _, leaf = ours.rpartition(".")
    if module.startswith("layers."):
        _, i, sub = module.split(".", 2)
        return f"encoder.layer.{i}.{_LAYER[sub]}.{leaf}"
    return f"{_TOP[module]}.{leaf}"


def _is_body(hf_name: str) -> bool:
    return hf_name.startswith(("embeddings.", "encoder.", "pooler."))


def _expected_shapes(config: BertConfig) -> dict[str, tuple[int, ...]]:
    """Our state-dict keys and shapes for ``config`` (built on the meta device: no memory)."""
    with torch.device("meta"):
        model = Bert(config)
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def _listing(label: str, items: list[str], limit: int = 6) -> str:
    shown = ", ".join(items[:limit])
    more = f" (+{len(items) - limit} more)" if len(items) > limit else ""
    return f"{label} {len(items)}: {shown}{more}"


def bert_config_from_hf(hf_config: Mapping[str, Any], **overrides: Any) -> BertConfig:
    """A :class:`BertConfig` from a Hugging Face BERT ``config.json`` dict.

    ``overrides`` set any BertConfig field (``head``, ``num_labels``,
    ``classifier_pooling`` …). Unless ``pooler`` is given it follows the head:
    present for head "none" and for "cls"-pooled sequence classification, absent
    otherwise (as in Hugging Face's task models). ``num_labels`` defaults to the
    config's ``num_labels`` or the size of its ``id2label``.
    """
    src = "Hugging Face BERT config"
    hf = dict(hf_config)
    model_type = hf.get("model_type", "bert")
    if model_type != "bert":
        raise ConfigError(f"{src}: model_type {model_type!r} is not supported; expected 'bert'")
    pos_type = hf.get("position_embedding_type", "absolute")
    if pos_type not in (None, "absolute"):
        raise ConfigError(f"{src}: position_embedding_type {pos_type!r} is not supported; expected 'absolute'")
    for flag in ("is_decoder", "add_cross_attention"):
        if hf.get(flag):
            raise ConfigError(f"{src}: {flag}=true is not supported; expected a bidirectional encoder (false)")
    required = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size")
    absent = [k for k in required if k not in hf]
    if absent:
        raise ConfigError(f"{src}: missing field(s) {', '.join(absent)}")
    act = hf.get("hidden_act", "gelu")
    if act not in HF_ACTIVATIONS:
        raise ConfigError(
            f"{src}: hidden_act {act!r} is not supported; expected one of {', '.join(HF_ACTIVATIONS)}"
        )
    if "num_labels" in hf:
        num_labels = hf["num_labels"]
    elif hf.get("id2label"):
        num_labels = len(hf["id2label"])
    else:
        num_labels = 2
    fields: dict[str, Any] = dict(
        vocab_size=hf["vocab_size"],
        max_position=hf.get("max_position_embeddings", 512),
        type_vocab_size=hf.get("type_vocab_size", 2),
        hidden=hf["hidden_size"],
        n_layer=hf["num_hidden_layers"],
        n_head=hf["num_attention_heads"],
        intermediate=hf["intermediate_size"],
        dropout=hf.get("hidden_dropout_prob", 0.1),
        attention_dropout=hf.get("attention_probs_dropout_prob", 0.1),
        classifier_dropout=hf.get("classifier_dropout"),
        layer_norm_eps=hf.get("layer_norm_eps", 1e-12),
        activation=HF_ACTIVATIONS[act],
        pad_token_id=hf.get("pad_token_id", 0),
        init_std=hf.get("initializer_range", 0.02),
        num_labels=num_labels,
    )
    fields.update(overrides)
    if "pooler" not in overrides:
        head = fields.get("head", "none")
        fields["pooler"] = head == "none" or (
            head == "sequence_classification" and fields.get("classifier_pooling", "cls") == "cls"
        )
    return BertConfig(**fields)


_HF_CLASSES = {
    "none": "BertModel",
    "sequence_classification": "BertForSequenceClassification",
    "token_classification": "BertForTokenClassification",
    "masked_lm": "BertForMaskedLM",
}


def bert_config_to_hf(config: BertConfig) -> dict[str, Any]:
    """A Hugging Face ``config.json`` dict for ``config`` (the inverse of :func:`bert_config_from_hf`).

    ``architectures`` names the Hugging Face class matching the head. Fields Hugging
    Face has no place for (``pooler``, ``classifier_pooling`` "mean") are not written.
    """
    act = {"gelu": "gelu", "gelu_tanh": "gelu_pytorch_tanh", "relu": "relu", "silu": "silu"}[config.activation]
    return {
        "model_type": "bert",
        "architectures": [_HF_CLASSES[config.head]],
        "vocab_size": config.vocab_size,
        "max_position_embeddings": config.max_position,
        "type_vocab_size": config.type_vocab_size,
        "hidden_size": config.hidden,
        "num_hidden_layers": config.n_layer,
        "num_attention_heads": config.n_head,
        "intermediate_size": config.intermediate,
        "hidden_act": act,
        "hidden_dropout_prob": config.dropout,
        "attention_probs_dropout_prob": config.attention_dropout,
        "classifier_dropout": config.classifier_dropout,
        "layer_norm_eps": config.layer_norm_eps,
        "pad_token_id": config.pad_token_id,
        "initializer_range": config.init_std,
        "num_labels": config.num_labels,
        "position_embedding_type": "absolute",
    }


def bert_state_dict_from_hf(
    hf_state_dict: Mapping[str, torch.Tensor],
    config: BertConfig,
    *,
    init_head: bool = False,
    discard: Sequence[str] = (),
    source: str = "state dict",
) -> dict[str, torch.Tensor]:
    """Rename a Hugging Face BERT state dict to :class:`Bert`'s keys, checking it fits ``config``.

    init_head: the checkpoint may lack the whole task head (it keeps its fresh
        initialisation); a partly present head is still an error.
    discard: prefixes of (unprefixed, Hugging Face) keys to drop on purpose.
    source: names the checkpoint in error messages (e.g. its file path).

    Returns a dict for ``Bert(config).load_state_dict``; for a masked-LM head the
    tied decoder weight is the word-embedding tensor itself. Raises LoadError.
    """
    expected = _expected_shapes(config)
    to_ours = {_hf_name(k): k for k in expected if k != _TIED}
    head_keys = {k for k in expected if k.startswith("head.") and k != _TIED}

    renamed: dict[str, torch.Tensor] = {}
    duplicated: list[str] = []
    not_tensor: list[str] = []
    for key, value in hf_state_dict.items():
        if not isinstance(value, torch.Tensor):
            not_tensor.append(f"{key} ({type(value).__name__})")
            continue
        name = key[len("bert.") :] if key.startswith("bert.") else key
        if name.endswith("LayerNorm.gamma"):
            name = name[: -len("gamma")] + "weight"
        elif name.endswith("LayerNorm.beta"):
            name = name[: -len("beta")] + "bias"
        if name in renamed:
            duplicated.append(key)
        renamed[name] = value

    out: dict[str, torch.Tensor] = {}
    origin: dict[str, str] = {}  # our key → the checkpoint key it came from
    unexpected: list[str] = []
    conflicting: list[str] = []
    decoder_weight = None
    for name, value in renamed.items():
        if name in HF_BUFFERS or any(name.startswith(p) for p in discard):
            continue
        if config.head == "masked_lm" and name == _HF_DECODER_WEIGHT:
            decoder_weight = value
            continue
        ours = to_ours.get(name)
        if ours is None and config.head == "masked_lm" and name == _HF_DECODER_BIAS_ALIAS:
            ours = "head.decoder.bias"
        if ours is None:
            unexpected.append(name)
            continue
        if ours in out:  # cls.predictions.bias and its alias cls.predictions.decoder.bias
            if not (out[ours].shape == value.shape and torch.equal(out[ours], value)):
                conflicting.append(f"{origin[ours]} vs {name}")
            continue
        out[ours] = value
        origin[ours] = name

    missing = [k for k in expected if k != _TIED and k not in out]
    if init_head and head_keys and all(k in missing for k in head_keys):
        missing = [k for k in missing if k not in head_keys]
    wrong_shape = [
        f"{origin[k]} {tuple(v.shape)} != {expected[k]}"
        for k, v in out.items()
        if tuple(v.shape) != expected[k]
    ]
    if decoder_weight is not None and "embeddings.word.weight" in out:
        emb = out["embeddings.word.weight"]
        if tuple(decoder_weight.shape) != tuple(emb.shape) or not torch.equal(decoder_weight, emb):
            conflicting.append(f"{_HF_DECODER_WEIGHT} is not tied to embeddings.word_embeddings.weight")

    problems = []
    if missing:
        problems.append(_listing("missing", [_hf_name(k) for k in missing]))
    if unexpected:
        problems.append(_listing("unexpected", unexpected))
    if wrong_shape:
        problems.append(_listing("wrong shape", wrong_shape))
    if duplicated:
        problems.append(_listing("given twice (with and without 'bert.')", duplicated))
    if conflicting:
        problems.append(_listing("conflicting", conflicting))
    if not_tensor:
        problems.append(_listing("not a tensor", not_tensor))
    if problems:
        hint = ""
        if missing and not init_head and all(k in head_keys for k in missing):
            hint = " (pass init_head=True to start the task head from scratch)"
        elif unexpected and all(k.startswith(("cls.", "pooler.", "classifier.")) for k in unexpected):
            hint = " (pass discard=(prefix, ...) to drop checkpoint parts this model does not use)"
        raise LoadError(
            f"{source}: does not fit BertConfig(hidden={config.hidden}, n_layer={config.n_layer}, "
            f"head={config.head!r}, pooler={config.pooler}): {'; '.join(problems)}{hint}"
        )
    if config.head == "masked_lm" and "head.decoder.bias" in out:
        out[_TIED] = out["embeddings.word.weight"]
    return out


def bert_state_dict_to_hf(state_dict: Mapping[str, torch.Tensor], config: BertConfig) -> dict[str, torch.Tensor]:
    """:class:`Bert`'s state dict under the key names of the matching Hugging Face class.

    Head "none" → ``BertModel``; otherwise ``BertForSequenceClassification`` /
    ``BertForTokenClassification`` / ``BertForMaskedLM`` (body keys prefixed with
    ``bert.``, tied decoder entries included), so the result loads with
    ``load_state_dict(strict=True)``.
    """
    prefix = "" if config.head == "none" else "bert."
    out: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        if key == _TIED:
            out[_HF_DECODER_WEIGHT] = value
            continue
        name = _hf_name(key)
        out[prefix + name if _is_body(name) else name] = value
        if key == "head.decoder.bias":
            out[_HF_DECODER_BIAS_ALIAS] = value
    return out


def load_hf_bert(
    hf_config: Mapping[str, Any],
    hf_state_dict: Mapping[str, torch.Tensor],
    *,
    init_head: bool = False,
    discard: Sequence[str] = (),
    device: str | torch.device = "cpu",
    source: str = "state dict",
    **config_overrides: Any,
) -> Bert:
    """A :class:`Bert` with a Hugging Face BERT checkpoint's weights.

    hf_config: the checkpoint's ``config.json`` as a dict; config_overrides: BertConfig
    fields to change (``head="sequence_classification"``, ``num_labels=3`` …);
    init_head, discard, source: as :func:`bert_state_dict_from_hf`. The checkpoint
    is checked completely before any weight is copied, so a LoadError leaves nothing
    half-loaded. Returns the model on ``device`` (in training mode, as built).
    """
    from layerwise.models.registry import build

    config = bert_config_from_hf(hf_config, **config_overrides)
    state = bert_state_dict_from_hf(hf_state_dict, config, init_head=init_head, discard=discard, source=source)
    model = build(config, device=device)
    result = model.load_state_dict(state, strict=False)
    allowed = {k for k in model.state_dict() if k.startswith("head.")} if init_head else set()
    leftover = [k for k in result.missing_keys if k not in allowed] + list(result.unexpected_keys)
    if leftover:  # bert_state_dict_from_hf has checked this; a failure here is a bug
        raise LoadError(f"{source}: internal key mismatch after conversion: {', '.join(leftover)}")
    return model
