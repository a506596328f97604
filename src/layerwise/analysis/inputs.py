"""Example inputs for a model the analysis (or the planner) runs once.

layerwise's own models say what they take (``example_inputs``). A Hugging Face model
is called with its main input (``model.main_input_name``: token ids, mel features,
pixels or raw audio) sized from its config, and an encoder-decoder
(``config.is_encoder_decoder``: T5, BART, Marian, Whisper, ...) also gets
``decoder_input_ids``, so that both halves run.
"""

from __future__ import annotations

import inspect

import torch
from torch import nn

from layerwise.errors import ConfigError

DEFAULT_SEQ_LEN = 128


def _device_dtype(model: nn.Module) -> tuple[torch.device, torch.dtype]:
    params = [p for p in model.parameters() if p.is_floating_point()]
    if not params:
        return torch.device("cpu"), torch.get_default_dtype()
    meta = next((p for p in params if p.is_meta), None)  # a model on meta may hold a stray CPU tensor
    p = meta if meta is not None else params[0]
    return p.device, p.dtype


def _max_positions(cfg) -> int | None:
    for a in ("max_position_embeddings", "n_positions", "max_target_positions", "n_ctx"):
        v = getattr(cfg, a, None)
        if isinstance(v, int) and v > 0:
            return v
    return None


def is_encoder_decoder(model: nn.Module) -> bool:
    cfg = getattr(model, "config", None)
    return bool(getattr(cfg, "is_encoder_decoder", False))


def example_inputs(model: nn.Module, batch_size: int = 1, seq_len: int | None = None,
                   decoder_seq_len: int | None = None, input_shape=None):
    """What to call ``model`` with: a tuple of positional arguments or a dict of keyword
    arguments on the model's device, or None when the model does not say.

    ``seq_len``: the (encoder's) sequence length, default min(128, the model's context);
    ``decoder_seq_len``: the decoder's, default ``seq_len``. ``input_shape``: the main
    input's shape instead (for a Hugging Face encoder-decoder, a second shape is the
    decoder's ``(batch, length)``).
    """
    for name, v in (("--batch-size", batch_size), ("--seq-len", seq_len), ("--decoder-seq-len", decoder_seq_len)):
        if v is not None and not (isinstance(v, int) and v >= 1):
            raise ConfigError(f"{name}: expected an integer >= 1, got {v!r}")
    own = hasattr(model, "example_inputs") and input_shape is None
    cfg = getattr(model, "config", None)
    hf = cfg is not None and hasattr(cfg, "model_type")
    if decoder_seq_len is not None:
        takes = own and "decoder_seq_len" in inspect.signature(model.example_inputs).parameters
        if not (takes or (hf and getattr(cfg, "is_encoder_decoder", False))):
            raise ConfigError(f"--decoder-seq-len: {type(model).__name__} is not an encoder-decoder model")
    if own:
        kw = {"batch_size": batch_size, "seq_len": seq_len}
        if decoder_seq_len is not None:
            kw["decoder_seq_len"] = decoder_seq_len
        return model.example_inputs(**kw)
    if not hf:
        return None
    return _hf_inputs(model, cfg, batch_size, seq_len, decoder_seq_len, input_shape)


def _hf_inputs(model, cfg, batch_size, seq_len, decoder_seq_len, input_shape) -> dict:
    device, dtype = _device_dtype(model)
    main = getattr(model, "main_input_name", "input_ids")
    shapes = None
    if input_shape is not None:
        shapes = input_shape if isinstance(input_shape[0], (list, tuple)) else [input_shape]
        batch_size = shapes[0][0]
    limit = _max_positions(getattr(cfg, "get_text_config", lambda: cfg)()) or _max_positions(cfg)
    default = min(DEFAULT_SEQ_LEN, limit) if limit else DEFAULT_SEQ_LEN
    S = seq_len or default
    if shapes is not None:
        shape = tuple(shapes[0])
    elif main == "input_features":
        if hasattr(cfg, "num_mel_bins"):  # Whisper: the encoder takes exactly 2 * max_source_positions frames
            shape = (batch_size, cfg.num_mel_bins, 2 * cfg.max_source_positions)
        else:  # Speech2Text: (batch, frames, features)
            feats = getattr(cfg, "input_feat_per_channel", 80) * getattr(cfg, "input_channels", 1)
            shape = (batch_size, S, feats)
    elif main == "pixel_values":
        size = getattr(cfg, "image_size", 224)
        size = tuple(size) if isinstance(size, (list, tuple)) else (size, size)
        shape = (batch_size, getattr(cfg, "num_channels", 3), *size)
    elif main == "input_values":  # raw audio samples
        shape = (batch_size, seq_len or 16000)
    else:
        shape = (batch_size, S)
    is_ids = main in ("input_ids", "decoder_input_ids")
    inputs = {main: torch.zeros(shape, dtype=torch.long if is_ids else dtype, device=device)}
    if getattr(cfg, "is_encoder_decoder", False):
        if shapes is not None and len(shapes) > 1:
            dec = tuple(shapes[1])
        else:
            dec_limit = getattr(cfg, "max_target_positions", None) or limit
            T = decoder_seq_len or seq_len or (min(DEFAULT_SEQ_LEN, dec_limit) if dec_limit else DEFAULT_SEQ_LEN)
            dec = (batch_size, T)
        inputs["decoder_input_ids"] = torch.zeros(dec, dtype=torch.long, device=device)
    return inputs


def meta_copy(model: nn.Module) -> nn.Module:
    """A deep copy of ``model`` with its parameters and buffers on the meta device (ties and
    ``requires_grad`` kept): what the analysis may run without touching the caller's model."""
    import copy

    memo: dict[int, object] = {}
    for p in model.parameters():
        memo[id(p)] = nn.Parameter(torch.empty_like(p, device="meta"), requires_grad=p.requires_grad)
    for b in model.buffers():
        memo[id(b)] = torch.empty_like(b, device="meta")
    return copy.deepcopy(model, memo)
