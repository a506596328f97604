"""Pairs of strings for sequence-to-sequence tasks: generated "translations", TSV files,
splits disjoint by source string, and their encoding for an encoder–decoder.

- :func:`number_words` -- English number words → digits
  ("three hundred and twelve" → "312"), British usage with "and";
- :func:`spelled_dates` -- dates written out three ways → ISO 8601
  ("the twelfth of march nineteen ninety-nine", "march 12, 1999", "12 march 1999" → "1999-03-12");
- :func:`load_pairs_tsv` -- your own pairs, one ``source<TAB>target`` a line;
- :func:`load_pairs` -- any of these from one spec (``numbers``, ``dates`` or a ``.tsv`` path);
- :func:`split_pairs` -- train / val / test with every source string in exactly one part
  (repeated sources stay together, so no test source was seen in training);
- :func:`pair_tokenizer` and :func:`encode_pairs` -- one character vocabulary shared by both
  sides (the specials ``<pad>``, ``<s>``, ``</s>`` get the same ids on both, as
  :class:`~layerwise.models.seq2seq.Seq2SeqConfig` needs) and padded id tensors.

Generation is a pure function of (size, seed): the same call gives the same pairs.
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from layerwise.data.datasets import Splits
from layerwise.data.tokenizers import CharTokenizer, read_text
from layerwise.errors import ConfigError, LayerwiseError, LoadError, UnknownNameError, suggest

PAD, BOS, EOS = "<pad>", "<s>", "</s>"


@dataclass(repr=False)
class TextPairs:
    """Aligned source and target strings: ``targets[i]`` is the translation of ``sources[i]``."""

    name: str
    sources: list[str]
    targets: list[str]

    def __post_init__(self) -> None:
        if len(self.sources) != len(self.targets):
            raise LayerwiseError(f"TextPairs {self.name!r}: {len(self.sources)} sources but {len(self.targets)} targets")
        for what, items in (("source", self.sources), ("target", self.targets)):
            for i, s in enumerate(items):
                if not isinstance(s, str) or not s:
                    raise LayerwiseError(f"TextPairs {self.name!r}: {what} {i} is {s!r}; expected a non-empty string")

    def __len__(self) -> int:
        return len(self.sources)

    def __repr__(self) -> str:
        return f"TextPairs({self.name!r}, {len(self)} pairs)"

    def subset(self, indices: Sequence[int], name: str | None = None) -> TextPairs:
        return TextPairs(name or self.name, [self.sources[i] for i in indices], [self.targets[i] for i in indices])


# --- English number words -------------------------------------------------------------------

_ONES = ("zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
         "sixteen seventeen eighteen nineteen").split()
_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()
_SCALES = ((1_000_000_000, "billion"), (1_000_000, "million"), (1_000, "thousand"))


def _below_100(n: int) -> str:
    if n < 20:
        return _ONES[n]
    tens, ones = divmod(n, 10)
    return _TENS[tens] + (f"-{_ONES[ones]}" if ones else "")


def _below_1000(n: int) -> str:
    hundreds, rest = divmod(n, 100)
    if not hundreds:
        return _below_100(rest)
    return f"{_ONES[hundreds]} hundred" + (f" and {_below_100(rest)}" if rest else "")


def spell_number(n: int) -> str:
    """English words for 0 <= n < 10**12, British style: 312 → "three hundred and twelve",
    1005 → "one thousand and five", 21 → "twenty-one"."""
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or not 0 <= n < 10**12:
        raise ConfigError(f"spell_number: expected an integer in [0, 10**12), got {n!r}")
    n = int(n)
    if n == 0:
        return "zero"
    words: list[str] = []
    for value, name in _SCALES:
        if n >= value:
            words.append(f"{_below_1000(n // value)} {name}")
            n %= value
    if n:
        # "and" joins a last part below 100 to the larger parts: "two thousand and five".
        words.append(("and " if words and n < 100 else "") + _below_1000(n))
    return " ".join(words)


def number_words(n: int, seed: int = 0, max_value: int = 999_999, name: str = "numbers") -> TextPairs:
    """``n`` distinct integers in [0, max_value]: their words → their digits.

    The number of digits is drawn uniformly (1 to len(str(max_value))), then the value
    uniformly among the numbers with that many digits, so "twelve" and "three hundred and
    twelve" are as common as six-digit numbers until the short ones run out (they are then
    all in the set). Repeats are drawn again; the order is the order of first draw.
    """
    if isinstance(max_value, bool) or not isinstance(max_value, int) or not 0 <= max_value < 10**12:
        raise ConfigError(f"number_words.max_value: expected an integer in [0, 10**12), got {max_value!r}")
    _check_count(n, max_value + 1, "numbers")
    rng = np.random.default_rng([seed, 17])
    digits = len(str(max_value))
    lows = np.array([0] + [10 ** (d - 1) for d in range(2, digits + 1)], dtype=np.int64)
    highs = np.minimum(np.array([10**d - 1 for d in range(1, digits + 1)], dtype=np.int64), max_value)
    chosen: dict[int, None] = {}
    while len(chosen) < n:
        d = rng.integers(0, digits, size=2 * (n - len(chosen)) + 16)
        values = lows[d] + np.floor(rng.random(d.shape) * (highs[d] - lows[d] + 1)).astype(np.int64)
        for v in values.tolist():
            if len(chosen) == n:
                break
            chosen.setdefault(v)
    values = list(chosen)
    return TextPairs(name, [spell_number(v) for v in values], [str(v) for v in values])


# --- spelled-out dates ------------------------------------------------------------------------

_MONTHS = "january february march april may june july august september october november december".split()
_ORDINAL_ONES = ("_ first second third fourth fifth sixth seventh eighth ninth tenth eleventh twelfth thirteenth "
                 "fourteenth fifteenth sixteenth seventeenth eighteenth nineteenth").split()
_ORDINAL_TENS = {20: "twentieth", 30: "thirtieth"}
_FIRST_DATE = datetime.date(1900, 1, 1)
_LAST_DATE = datetime.date(2099, 12, 31)
DATE_FORMATS = 3


def _ordinal(day: int) -> str:
    if day < 20:
        return _ORDINAL_ONES[day]
    tens, ones = divmod(day, 10)
    return _ORDINAL_TENS[10 * tens] if not ones else f"{_TENS[tens]}-{_ORDINAL_ONES[ones]}"


def spell_year(year: int) -> str:
    """A year as it is said: 1999 → "nineteen ninety-nine", 1905 → "nineteen oh-five",
    1900 → "nineteen hundred", 2000 → "two thousand", 2004 → "two thousand and four",
    2010 → "twenty ten" (num2words' ``to="year"`` convention)."""
    if 2000 <= year <= 2009:
        return spell_number(year)
    hi, lo = divmod(year, 100)
    if lo == 0:
        return f"{_below_100(hi)} hundred"
    return f"{_below_100(hi)} {_below_100(lo) if lo >= 10 else 'oh-' + _ONES[lo]}"


def spell_date(date: datetime.date, form: int) -> str:
    """A date in one of three forms: 0 "the twelfth of march nineteen ninety-nine",
    1 "march 12, 1999", 2 "12 march 1999"."""
    month = _MONTHS[date.month - 1]
    if form == 0:
        return f"the {_ordinal(date.day)} of {month} {spell_year(date.year)}"
    if form == 1:
        return f"{month} {date.day}, {date.year}"
    if form == 2:
        return f"{date.day} {month} {date.year}"
    raise ConfigError(f"spell_date: form must be 0, 1 or 2, got {form!r}")


def spelled_dates(n: int, seed: int = 0, name: str = "dates") -> TextPairs:
    """``n`` distinct (date, form) sources from 1900-01-01 to 2099-12-31 → ISO dates ("1999-03-12")."""
    days = (_LAST_DATE - _FIRST_DATE).days + 1
    _check_count(n, days * DATE_FORMATS, "dates")
    picks = np.random.default_rng([seed, 29]).choice(days * DATE_FORMATS, size=n, replace=False)
    sources, targets = [], []
    for p in picks.tolist():
        date = _FIRST_DATE + datetime.timedelta(days=p // DATE_FORMATS)
        sources.append(spell_date(date, p % DATE_FORMATS))
        targets.append(date.isoformat())
    return TextPairs(name, sources, targets)


def _check_count(n: int, available: int, what: str) -> None:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or not 1 <= n <= available:
        raise ConfigError(f"{what}: expected a number of pairs in [1, {available:,}], got {n!r}")


# --- files and specs --------------------------------------------------------------------------


def load_pairs_tsv(path: str | os.PathLike, name: str | None = None) -> TextPairs:
    """Pairs from a UTF-8 file with one ``source<TAB>target`` a line (blank lines are skipped).
    A line without exactly one tab, or with an empty side, is a one-line LoadError naming it."""
    path = Path(path)
    if path.is_dir():
        raise LoadError(f"{path}: is a folder; expected a .tsv file of source<TAB>target lines")
    text = read_text(path)
    sources, targets = [], []
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) != 2:
            raise LoadError(
                f"{path}: line {lineno}: expected two tab-separated fields (source<TAB>target), got {len(fields)}"
            )
        src, tgt = fields
        if not src or not tgt:
            side = "source" if not src else "target"
            raise LoadError(f"{path}: line {lineno}: the {side} is empty; expected text on both sides of the tab")
        sources.append(src)
        targets.append(tgt)
    if not sources:
        raise LoadError(f"{path}: no pairs; expected lines of source<TAB>target")
    return TextPairs(name or path.stem, sources, targets)


#: generated tasks by name: (description, generator(n, seed))
PAIR_TASKS: dict[str, tuple[str, Callable[[int, int], TextPairs]]] = {
    "numbers": ('English number words → digits, 0 to 999,999, as many of each length ("three hundred and twelve" → "312")',
                number_words),
    "dates": ('spelled-out dates, 1900–2099, in three forms → ISO dates ("march 12, 1999" → "1999-03-12")',
              spelled_dates),
}


def load_pairs(spec: str | os.PathLike, n: int | None = None, seed: int = 0) -> TextPairs:
    """A generated task by name (:data:`PAIR_TASKS`; ``n`` pairs from ``seed``) or a ``.tsv`` file
    (all its pairs; ``n``, when given, keeps the first n)."""
    key = os.fspath(spec)
    if key in PAIR_TASKS:
        if n is None:
            raise ConfigError(f"load_pairs: the generated task {key!r} needs a number of pairs")
        return PAIR_TASKS[key][1](n, seed)
    path = Path(key)
    if not path.exists():
        if "/" not in key and os.sep not in key and not key.endswith(".tsv"):
            raise UnknownNameError(
                f"unknown pair data {key!r}; expected one of {', '.join(PAIR_TASKS)} or a .tsv file of "
                f"source<TAB>target lines.{suggest(key, PAIR_TASKS)}"
            )
        raise LoadError(f"{path}: no such file")
    pairs = load_pairs_tsv(path)
    return pairs.subset(range(min(n, len(pairs))), pairs.name) if n is not None else pairs


def split_pairs(pairs: TextPairs, val: float = 0.1, test: float = 0.1, seed: int = 0) -> Splits[TextPairs]:
    """Train / val / test parts disjoint by source string.

    The distinct sources are shuffled by ``seed`` and cut: round(U * val) of the U distinct
    sources go to val, round(U * test) to test, the rest to train; every pair follows its
    source, so a source repeated with different targets sits in one part only. Each part keeps
    the original order of its pairs.
    """
    for what, frac in (("val", val), ("test", test)):
        if isinstance(frac, bool) or not isinstance(frac, (int, float)) or not 0 <= frac < 1:
            raise ConfigError(f"split_pairs.{what}: expected a fraction in [0, 1), got {frac!r}")
    if val + test >= 1:
        raise ConfigError(f"split_pairs: val + test = {val + test:g}; expected less than 1")
    unique = list(dict.fromkeys(pairs.sources))
    order = np.random.default_rng([seed, 41]).permutation(len(unique))
    n_val, n_test = int(np.floor(len(unique) * val + 0.5)), int(np.floor(len(unique) * test + 0.5))
    if len(unique) - n_val - n_test < 1:
        raise LayerwiseError(f"{pairs.name}: {len(unique)} distinct sources leave none to train on; use more pairs")
    part_of = {}
    for rank, u in enumerate(order.tolist()):
        part_of[unique[u]] = 1 if rank < n_val else 2 if rank < n_val + n_test else 0
    idx: list[list[int]] = [[], [], []]
    for i, s in enumerate(pairs.sources):
        idx[part_of[s]].append(i)
    return Splits(*(pairs.subset(ix, f"{pairs.name}:{part}") for ix, part in zip(idx, ("train", "val", "test"))))


def pair_tokenizer(*parts: TextPairs) -> CharTokenizer:
    """One character vocabulary for both sides: the sorted characters of every source and
    target, then ``<pad>``, ``<s>`` (bos) and ``</s>`` (eos)."""
    chars = set()
    for p in parts:
        for s in p.sources:
            chars.update(s)
        for t in p.targets:
            chars.update(t)
    return CharTokenizer(sorted(chars), special_tokens=(PAD,), eos_token=EOS, bos_token=BOS)


def special_ids(tokenizer) -> tuple[int, int, int]:
    """(pad_id, bos_id, eos_id) of a :func:`pair_tokenizer`."""
    ids = tuple(tokenizer.token_to_id(t) for t in (PAD, BOS, EOS))
    if any(i is None for i in ids):
        raise LoadError(f"tokenizer: expected the special tokens {PAD}, {BOS} and {EOS} of a pair tokenizer")
    return ids  # type: ignore[return-value]


@dataclass(repr=False)
class EncodedPairs:
    """Padded id tensors: ``src`` (N, S) and ``src_lengths`` (N,); ``tgt_in`` = [bos] + target
    and ``tgt_out`` = target + [eos], both (N, T), right-padded with ``pad_id``."""

    name: str
    src: torch.Tensor
    src_lengths: torch.Tensor
    tgt_in: torch.Tensor
    tgt_out: torch.Tensor
    pad_id: int

    def __len__(self) -> int:
        return int(self.src.shape[0])

    def tensors(self) -> tuple[torch.Tensor, ...]:
        return self.src, self.src_lengths, self.tgt_in, self.tgt_out


def encode_pairs(pairs: TextPairs, tokenizer) -> EncodedPairs:
    """Encode every pair with the shared ``tokenizer`` (:func:`pair_tokenizer`)."""
    pad, bos, eos = special_ids(tokenizer)
    if len(pairs) == 0:
        raise LayerwiseError(f"{pairs.name}: no pairs to encode")
    src_ids = [tokenizer.encode(s) for s in pairs.sources]
    tgt_ids = [tokenizer.encode(t) for t in pairs.targets]
    n, S, T = len(pairs), max(map(len, src_ids)), max(map(len, tgt_ids)) + 1
    src = torch.full((n, S), pad, dtype=torch.long)
    tgt_in = torch.full((n, T), pad, dtype=torch.long)
    tgt_out = torch.full((n, T), pad, dtype=torch.long)
    for i, (s, t) in enumerate(zip(src_ids, tgt_ids)):
        src[i, : len(s)] = torch.tensor(s)
        tgt_in[i, : len(t) + 1] = torch.tensor([bos, *t])
        tgt_out[i, : len(t) + 1] = torch.tensor([*t, eos])
    lengths = torch.tensor([len(s) for s in src_ids], dtype=torch.long)
    return EncodedPairs(pairs.name, src, lengths, tgt_in, tgt_out, pad)
