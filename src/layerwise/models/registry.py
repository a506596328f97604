"""Model families and named presets: ``build(name_or_config, device=..., **overrides)``.

A family registers its config class and a builder; presets are named configs.
Family modules are imported lazily by :func:`_load_families`, so importing
``layerwise.models`` stays cheap.
"""

from __future__ import annotations

import contextlib
import importlib
from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from layerwise.errors import ConfigError, UnknownNameError, suggest
from layerwise.models.base import ModelConfig, read_config_file

# Family modules in src/layerwise/models/ that register themselves on import.
FAMILY_MODULES = ("mlp", "cnn", "rnn", "gpt", "bert", "seq2seq", "gan", "dqn")


@dataclass(frozen=True)
class Family:
    name: str
    config_cls: type[ModelConfig]
    build: Callable[[ModelConfig], nn.Module]


@dataclass(frozen=True)
class Preset:
    name: str
    family: str
    fields: dict[str, Any]
    description: str = ""
    reference_params: int | None = None  # published count, for tests and docs
    reference_source: str = ""
    reference_active_params: int | None = None  # mixture of experts: the published count used per token


_FAMILIES: dict[str, Family] = {}
_PRESETS: dict[str, Preset] = {}
_loaded = False


def register_family(name: str, config_cls: type[ModelConfig], build: Callable[[ModelConfig], nn.Module]) -> None:
    _FAMILIES[name] = Family(name, config_cls, build)


def register_preset(
    name: str,
    family: str,
    description: str = "",
    reference_params: int | None = None,
    reference_source: str = "",
    reference_active_params: int | None = None,
    **fields: Any,
) -> None:
    if name in _PRESETS and _PRESETS[name].family != family:
        raise ValueError(f"preset {name!r} registered twice")
    _PRESETS[name] = Preset(name, family, fields, description, reference_params, reference_source, reference_active_params)


def _load_families() -> None:
    global _loaded
    if _loaded:
        return
    for mod in FAMILY_MODULES:
        try:
            importlib.import_module(f"layerwise.models.{mod}")
        except ModuleNotFoundError as e:
            if e.name != f"layerwise.models.{mod}":
                raise
    _loaded = True


def families() -> dict[str, Family]:
    _load_families()
    return dict(_FAMILIES)


def list_presets(family: str | None = None) -> list[Preset]:
    """Every preset, or those of ``family`` (an unknown family is an UnknownNameError listing them)."""
    _load_families()
    if family is not None and family not in _FAMILIES:
        raise UnknownNameError(f"--family: unknown model family {family!r}; expected one of {', '.join(sorted(_FAMILIES))}."
                               f"{suggest(family, _FAMILIES)}")
    return [p for p in _PRESETS.values() if family is None or p.family == family]


def get_preset(name: str) -> Preset:
    _load_families()
    if name not in _PRESETS:
        raise UnknownNameError(f"unknown model preset {name!r}.{suggest(name, _PRESETS)} (`layerwise models` lists them)")
    return _PRESETS[name]


def config_from_dict(data: dict[str, Any], source: str | None = None) -> ModelConfig:
    _load_families()
    fam = data.get("family")
    if fam is None:
        raise ConfigError(f"{source or 'config'}: missing field 'family'; expected one of {', '.join(sorted(_FAMILIES))}")
    if fam not in _FAMILIES:
        raise ConfigError(f"{source or 'config'}: unknown family {fam!r}; expected one of {', '.join(sorted(_FAMILIES))}")
    return _FAMILIES[fam].config_cls.from_dict(data, source=source)


def get_config(name_or_config: str | ModelConfig | dict, **overrides: Any) -> ModelConfig:
    """A config from a preset name, a config file path (.json/.toml), a dict or a config."""
    _load_families()
    if isinstance(name_or_config, ModelConfig):
        cfg = name_or_config
    elif isinstance(name_or_config, dict):
        cfg = config_from_dict(name_or_config)
    elif isinstance(name_or_config, str) and name_or_config.endswith((".json", ".toml")):
        data = read_config_file(name_or_config)
        if "preset" in data:  # a file may start from a preset and override fields
            base = get_preset(data.pop("preset"))
            data = {"family": base.family, **base.fields, **data}
        cfg = config_from_dict(data, source=name_or_config)
    else:
        p = get_preset(str(name_or_config))
        cfg = _FAMILIES[p.family].config_cls.from_dict({"family": p.family, **p.fields})
    return cfg.replace(**overrides) if overrides else cfg


# In-place fills an initialiser makes: on the meta device there are no values to fill.
_INIT_FILLS = frozenset({
    "normal_", "uniform_", "trunc_normal_", "kaiming_normal_", "kaiming_uniform_", "xavier_normal_", "xavier_uniform_",
    "orthogonal_", "zeros_", "ones_", "constant_", "zero_", "fill_", "exponential_", "random_", "bernoulli_",
    "log_normal_", "geometric_", "cauchy_", "eye_", "dirac_", "sparse_",
})


class _SkipInitOnMeta(TorchFunctionMode):
    """Initialisers do nothing to meta tensors. torch's ``normal_`` on meta runs through its
    Python reference implementation (and imports ``torch._dynamo``, about 2 s, on first
    use); the values would be thrown away anyway."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if getattr(func, "__name__", "") in _INIT_FILLS:
            t = args[0] if args else kwargs.get("tensor", kwargs.get("input"))  # nn.init.* name it ``tensor``
            if isinstance(t, torch.Tensor) and t.is_meta:
                return t
        return func(*args, **kwargs)


def build(
    name_or_config: str | ModelConfig | dict,
    device: str | torch.device = "cpu",
    dtype: torch.dtype | None = None,
    **overrides: Any,
) -> nn.Module:
    """Build a model from a preset name, config file, dict or config.

    ``device="meta"`` builds without allocating weights (and without running the
    initialisers, which have nothing to fill there), so any size can be analysed.
    The returned module carries its config as ``model.config``.
    """
    cfg = get_config(name_or_config, **overrides)
    fam = _FAMILIES[cfg.family]
    on_meta = torch.device(device).type == "meta"
    with torch.device(device), (_SkipInitOnMeta() if on_meta else contextlib.nullcontext()):
        model = fam.build(cfg)
    if dtype is not None:
        model = model.to(dtype=dtype)
    model.config = cfg
    return model
