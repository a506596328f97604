"""What every model family shares: a validated, serialisable config dataclass.

A family's config is a ``@dataclass`` subclass of :class:`ModelConfig` with a
``family`` class variable. ``__post_init__`` validates fields with :func:`check`,
which raises a one-line :class:`~layerwise.errors.ConfigError` naming the field
and the constraint. Configs are plain data (layer choices as strings), written as
JSON or TOML beside weights and read back with :func:`load_config`.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any, ClassVar

from layerwise.errors import ConfigError, LoadError
from layerwise.io import atomic_write_text


def check(condition: bool, cls_name: str, field: str, expected: str, got: Any) -> None:
    """Raise ConfigError('GPTConfig.n_head: expected ..., got ...') unless condition."""
    if not condition:
        raise ConfigError(f"{cls_name}.{field}: expected {expected}, got {got!r}")


@dataclasses.dataclass
class ModelConfig:
    family: ClassVar[str] = ""

    def check(self, condition: bool, field: str, expected: str) -> None:
        check(condition, type(self).__name__, field, expected, getattr(self, field, None))

    def to_dict(self) -> dict[str, Any]:
        d = {"family": self.family}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            d[f.name] = list(v) if isinstance(v, tuple) else v
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str | None = None) -> "ModelConfig":
        """Build from plain data; ``source`` (a file or preset name) prefixes error messages."""
        data = dict(data)
        where = source or cls.__name__
        fam = data.pop("family", cls.family)
        if fam != cls.family:
            raise ConfigError(f"{where}: family {fam!r} does not match {cls.__name__} (family {cls.family!r})")
        names = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - set(names))
        if unknown:
            raise ConfigError(
                f"{where}: unknown field(s) {', '.join(unknown)} for {cls.__name__}; "
                f"valid fields: {', '.join(names)}"
            )
        for k, v in list(data.items()):
            default = names[k].default
            if isinstance(v, list) and isinstance(default, tuple):
                data[k] = tuple(v)
        try:
            return cls(**data)
        except TypeError as e:  # a required field missing
            raise ConfigError(f"{where}: {e}") from None
        except ConfigError as e:  # name the file (or preset) the bad value came from
            if source is None:
                raise
            raise ConfigError(f"{source}: {e}") from None

    def replace(self, **overrides: Any) -> "ModelConfig":
        return type(self).from_dict({**self.to_dict(), **overrides})

    def save(self, path: str | os.PathLike) -> Path:
        """Write the config as JSON (or TOML if the suffix is .toml), atomically."""
        path = Path(path)
        if path.suffix == ".toml":
            text = _to_toml(self.to_dict())
        else:
            text = json.dumps(self.to_dict(), indent=2) + "\n"
        atomic_write_text(path, text)
        return path


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float, str)):
        return json.dumps(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, dict):  # an inline table; TOML has no null, so None keys are left out
        return "{" + ", ".join(f"{json.dumps(str(k))} = {_toml_value(x)}" for k, x in v.items() if x is not None) + "}"
    raise ConfigError(f"cannot write {type(v).__name__} value {v!r} to TOML")


def _to_toml(d: dict[str, Any]) -> str:
    # TOML has no null: a missing key means the field's default
    return "".join(f"{k} = {_toml_value(v)}\n" for k, v in d.items() if v is not None)


def read_config_file(path: str | os.PathLike) -> dict[str, Any]:
    """Parse a JSON or TOML config file into a dict, with one-line errors."""
    path = Path(path)
    if not path.is_file():
        raise LoadError(f"{path}: no such config file")
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise LoadError(f"{path}: not UTF-8 text (invalid byte at offset {e.start})") from None
    if path.suffix == ".toml":
        import tomllib

        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as e:
            raise LoadError(f"{path}: malformed TOML: {e}") from None
    else:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise LoadError(f"{path}: malformed JSON at line {e.lineno} column {e.colno}: {e.msg}") from None
    if not isinstance(data, dict):
        raise LoadError(f"{path}: expected a table/object of config fields, got {type(data).__name__}")
    return data
