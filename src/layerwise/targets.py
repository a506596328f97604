"""Turn a command-line TARGET into a model: a preset name, a layerwise config file,
a Hugging Face ``config.json``, or ``package.module:factory`` for a user's model."""

from __future__ import annotations

import importlib
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from layerwise.errors import ConfigError, LayerwiseError, LoadError


@dataclass
class Target:
    name: str
    model: nn.Module
    source: str  # "preset" | "config" | "hf-config" | "factory"


def _is_hf_config(data: dict) -> bool:
    return "model_type" in data or "architectures" in data


DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
          "float16": torch.float16, "fp16": torch.float16, "half": torch.float16, "float": torch.float32}


def parse_dtype(text: str | None, where: str = "--dtype") -> torch.dtype | None:
    """'bf16' / 'bfloat16' / 'torch.bfloat16' -> torch.bfloat16; None -> None."""
    if text is None:
        return None
    key = str(text).removeprefix("torch.").lower()
    if key not in DTYPES:
        raise ConfigError(f"{where} {text!r}: expected one of float32, bfloat16, float16 (or fp32, bf16, fp16)")
    return DTYPES[key]


def _hf_model(path: Path, data: dict, device: str, dtype: torch.dtype | None = None) -> nn.Module:
    try:
        import transformers
    except ImportError:
        raise LoadError(f"{path}: a Hugging Face config needs the transformers package: pip install 'layerwise[hf]'") from None
    model_type = data.get("model_type")
    if not model_type:
        raise ConfigError(f"{path}: Hugging Face config has no 'model_type' field")
    fields = {k: v for k, v in data.items() if k not in ("model_type", "transformers_version")}
    try:
        config = transformers.AutoConfig.for_model(model_type, **fields)
    except (ValueError, KeyError) as e:
        raise ConfigError(f"{path}: model_type {model_type!r} is not known to transformers {transformers.__version__}: {e}") from None
    cls = None
    for arch in data.get("architectures") or []:
        cls = getattr(transformers, arch, None)
        if cls is not None:
            break
    cls = cls or transformers.AutoModel
    # the weights' dtype: --dtype, else the config's own (``dtype``, formerly ``torch_dtype``)
    declared = data.get("dtype") or data.get("torch_dtype")
    if dtype is None and declared not in (None, "auto"):
        dtype = parse_dtype(declared, where=f"{path}: dtype")
    try:
        with torch.device(device):
            model = cls.from_config(config) if cls is transformers.AutoModel else cls(config)
    except Exception as e:  # transformers validates the config while building: name the file
        msg = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise ConfigError(f"{path}: transformers cannot build {getattr(cls, '__name__', cls)} from this config: "
                          f"{type(e).__name__}{': ' + msg if msg else ''}") from None
    if torch.device(device).type == "meta" and any(not t.is_meta for t in list(model.parameters()) + list(model.buffers())):
        model = model.to("meta")  # tensors made by legacy constructors (torch.Tensor(n)) ignore the device context
    if dtype is not None:
        model = model.to(dtype=dtype)
    return model


def _factory(spec: str, device: str) -> nn.Module:
    mod_name, _, fn_name = spec.partition(":")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        mod = importlib.import_module(mod_name)
    except Exception as e:  # the user's module may fail in any way while importing
        raise LoadError(f"{spec}: cannot import module {mod_name!r}: {type(e).__name__}: {e}") from None
    fn = getattr(mod, fn_name, None)
    if fn is None:
        raise LoadError(f"{spec}: module {mod_name!r} has no attribute {fn_name!r}")
    try:
        with torch.device(device):
            model = fn() if callable(fn) and not isinstance(fn, nn.Module) else fn
    except Exception as e:
        raise LoadError(f"{spec}: calling {fn_name}() failed: {type(e).__name__}: {e}") from None
    if not isinstance(model, nn.Module):
        raise LoadError(f"{spec}: {fn_name} returned {type(model).__name__}, expected a torch.nn.Module")
    return model


def resolve(target: str, device: str = "meta", dtype: torch.dtype | None = None, **overrides) -> Target:
    """Build the model a TARGET names, on ``device`` (meta by default: no weight memory).

    ``dtype``: the weights' dtype (``--dtype``); by default a Hugging Face config's own
    ``dtype``/``torch_dtype``, else float32."""
    from layerwise import models

    path = Path(target)
    if ":" in target and not path.exists() and not target.endswith((".json", ".toml")):
        model = _factory(target, device)
        return Target(target.split(":")[-1], model.to(dtype=dtype) if dtype is not None else model, "factory")
    if target.endswith((".json", ".toml")) or path.is_file():
        from layerwise.models.base import read_config_file

        data = read_config_file(path)
        if _is_hf_config(data):
            return Target(data.get("_name_or_path") or data.get("model_type") or path.stem,
                          _hf_model(path, data, device, dtype), "hf-config")
        return Target(path.stem, models.build(str(path), device=device, dtype=dtype, **overrides), "config")
    model = models.build(target, device=device, dtype=dtype, **overrides)
    return Target(target, model, "preset")


def parse_shape(text: str) -> list:
    """'1,3,224,224' -> [1, 3, 224, 224]; '1x128;1x128' -> two shapes."""
    shapes = []
    for part in text.replace(" ", "").split(";"):
        tokens = re.split(r"[,x×]", part)
        if not all(t.isdigit() for t in tokens):
            raise LayerwiseError(f"--input-shape {text!r}: expected comma-separated integers like 1,3,224,224")
        dims = [int(t) for t in tokens]
        if any(d <= 0 for d in dims):
            raise LayerwiseError(f"--input-shape {text!r}: expected positive integers like 1,3,224,224")
        shapes.append(dims)
    return shapes if len(shapes) > 1 else shapes[0]


def target_inputs(target: Target, input_shape=None, batch_size: int = 1, seq_len: int | None = None,
                  decoder_seq_len: int | None = None):
    """The inputs ``summary`` and ``plan`` run TARGET's model on: ``--input-shape`` zeros, or the
    model's example inputs (an encoder-decoder's decoder ids included), or None."""
    from layerwise.analysis.core import make_inputs
    from layerwise.analysis.inputs import example_inputs

    if input_shape is not None and target.source != "hf-config":
        return make_inputs(target.model, input_shape)
    return example_inputs(target.model, batch_size=batch_size, seq_len=seq_len, decoder_seq_len=decoder_seq_len,
                          input_shape=input_shape)


def analyze_target(
    target: str,
    input_shape=None,
    batch_size: int = 1,
    seq_len: int | None = None,
    device: str = "meta",
    trace_forward: bool = True,
    decoder_seq_len: int | None = None,
    dtype: torch.dtype | None = None,
):
    """Resolve TARGET and analyse it (see :func:`layerwise.analysis.analyze`)."""
    return resolve_and_analyze(target, input_shape, batch_size, seq_len, device, trace_forward, decoder_seq_len, dtype)[1]


def resolve_and_analyze(
    target: str,
    input_shape=None,
    batch_size: int = 1,
    seq_len: int | None = None,
    device: str = "meta",
    trace_forward: bool = True,
    decoder_seq_len: int | None = None,
    dtype: torch.dtype | None = None,
):
    """(Target, its Analysis, the input shape used or None): :func:`analyze_target` keeping the model."""
    from layerwise.analysis import analyze

    t = resolve(target, device=device, dtype=dtype)
    inputs = target_inputs(t, input_shape, batch_size, seq_len, decoder_seq_len) if trace_forward else None
    a = analyze(t.model, inputs=inputs, name=t.name, trace_forward=trace_forward and inputs is not None)
    return t, a, input_shape
