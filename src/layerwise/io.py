"""Files written so that a reader never sees half of one: temp file, fsync, rename; and the
check a user-named output file passes before any work is done."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically; on any failure the old file is untouched."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(tmp, 0o666 & ~current_umask())  # what open() would have given; mkstemp makes 0600
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


PLOT_SUFFIXES = (".png", ".svg", ".pdf")
TEXT_SUFFIXES = (".txt", ".md", ".json", ".csv", ".log")


def check_output_file(path: str | os.PathLike, suffixes: tuple[str, ...], flag: str) -> Path:
    """``path`` if a file can be written there, else a one-line ConfigError naming ``flag``.

    Checked before any work: the suffix is one of ``suffixes``, the path is not a directory,
    and its parent directory exists (layerwise creates the file the user named, never the
    directories above it)."""
    from layerwise.errors import ConfigError

    path = Path(path)
    if path.suffix.lower() not in suffixes:
        got = f"{path.suffix!r}" if path.suffix else "no extension"
        raise ConfigError(f"{flag} {path}: unsupported file type ({got}); expected one of {', '.join(suffixes)}")
    if path.is_dir():
        raise ConfigError(f"{flag} {path}: is a directory; expected a file name")
    parent = path.parent
    if not parent.is_dir():
        raise ConfigError(f"{flag} {path}: the directory {parent} does not exist (create it first)")
    if not os.access(parent, os.W_OK):
        raise ConfigError(f"{flag} {path}: the directory {parent} is not writable")
    return path
