"""Model families written from scratch. ``build(name, device="meta")`` builds any preset."""

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
