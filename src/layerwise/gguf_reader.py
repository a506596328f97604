"""Reading GGUF files (llama.cpp's format) with the ``gguf`` package: the reader and its
metadata fields, with one-line errors. Below both the model loaders (weights) and the
tokenizers (vocabulary), so neither imports the other."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from layerwise.errors import LoadError

REQUIRED = object()


def open_gguf(source: Any) -> Any:
    """A ``gguf.GGUFReader`` for a path (or the reader itself), with one-line errors."""
    from gguf import GGUFReader

    if isinstance(source, GGUFReader):
        return source
    path = Path(source)
    if not path.is_file():
        raise LoadError(f"{path}: no such GGUF file")
    try:
        return GGUFReader(path)
    except Exception as e:  # the reader raises ValueError or struct errors on a file it cannot parse
        raise LoadError(f"{path}: not a readable GGUF file ({type(e).__name__}: {e})") from None


def gguf_field(reader: Any, key: str, default: Any = REQUIRED) -> Any:
    """The value of a GGUF metadata key (arrays as lists); a LoadError if absent and no default."""
    field = reader.fields.get(key)
    if field is None:
        if default is REQUIRED:
            raise LoadError(f"{reader.data.filename}: GGUF metadata has no {key!r}")
        return default
    return field.contents()
