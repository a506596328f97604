"""Model families written from scratch. ``build(name, device="meta")`` builds any preset."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from layerwise.models.base import ModelConfig
    from layerwise.models.registry import (
        build,
        families,
        get_config,
        get_preset,
        list_presets,
        register_family,
        register_preset,
    )

# Names are imported on first use (PEP 562): `layerwise --help` parses TrainConfig's fields
# without importing torch.
_EXPORTS = {
    "ModelConfig": "layerwise.models.base",
    "build": "layerwise.models.registry",
    "families": "layerwise.models.registry",
    "get_config": "layerwise.models.registry",
    "get_preset": "layerwise.models.registry",
    "list_presets": "layerwise.models.registry",
    "register_family": "layerwise.models.registry",
    "register_preset": "layerwise.models.registry",
}

__all__ = [
    "ModelConfig",
    "build",
    "families",
    "get_config",
    "get_preset",
    "list_presets",
    "register_family",
    "register_preset",
]


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
