"""String pairs for seq2seq: the generated tasks against num2words and the standard library,
splits disjoint by source, TSV files, the shared character vocabulary and the encoding."""

import datetime

import numpy as np
import pytest
from num2words import num2words

from layerwise.data import (
    encode_pairs,
    load_pairs,
    load_pairs_tsv,
    number_words,
    pair_tokenizer,
    special_ids,
    spell_number,
    spelled_dates,
    split_pairs,
)
from layerwise.data.pairs import TextPairs, spell_date, spell_year
from layerwise.data.tokenizers import load_tokenizer
from layerwise.errors import ConfigError, LoadError, UnknownNameError


def test_number_words_are_num2words_british_english():
    rng = np.random.default_rng(0)
    values = list(range(0, 2100)) + rng.integers(0, 10**9, size=2000).tolist() + [10**6, 10**9, 999_999_999_999]
    for v in values:
        assert spell_number(v) == num2words(v).replace(",", ""), v  # num2words puts commas between the groups
    assert spell_number(312) == "three hundred and twelve"


def test_years_days_and_months_are_num2words_and_strftime():
    for year in range(1900, 2100):
        assert spell_year(year) == num2words(year, to="year"), year
    day = datetime.date(1900, 1, 1)
    while day.year < 2100:
        assert spell_date(day, 0) == f"the {num2words(day.day, to='ordinal')} of {day.strftime('%B').lower()} {num2words(day.year, to='year')}"
        assert datetime.datetime.strptime(spell_date(day, 1), "%B %d, %Y").date() == day
        assert datetime.datetime.strptime(spell_date(day, 2), "%d %B %Y").date() == day
        day += datetime.timedelta(days=37)


def test_generated_pairs_are_correct_distinct_and_seeded():
    p = number_words(3000, seed=4)
    assert len(set(p.sources)) == 3000
    for s, t in zip(p.sources, p.targets):
        assert s == num2words(int(t)).replace(",", "") and t == str(int(t))
    lengths = {len(t) for t in p.targets}
    assert lengths == {1, 2, 3, 4, 5, 6}  # every number of digits, from "zero" to 999,999
    assert number_words(3000, seed=4).sources == p.sources
    assert number_words(3000, seed=5).sources != p.sources

    d = spelled_dates(2000, seed=1)
    assert len(set(d.sources)) == 2000
    for s, t in zip(d.sources, d.targets):
        date = datetime.date.fromisoformat(t)
        assert s in {spell_date(date, f) for f in range(3)}
        assert datetime.date(1900, 1, 1) <= date <= datetime.date(2099, 12, 31)


def test_split_is_disjoint_by_source_and_keeps_repeated_sources_together():
    base = number_words(500, seed=0)
    # every source twice, with two different targets
    pairs = TextPairs("dup", base.sources + base.sources, base.targets + [t + "!" for t in base.targets])
    parts = split_pairs(pairs, val=0.1, test=0.2, seed=3)
    seen = [set(p.sources) for p in parts]
    assert not (seen[0] & seen[1]) and not (seen[0] & seen[2]) and not (seen[1] & seen[2])
    assert [len(s) for s in seen] == [350, 50, 100]  # of the 500 distinct sources
    assert sum(len(p) for p in parts) == 1000 and all(len(p) == 2 * len(s) for p, s in zip(parts, seen))
    again = split_pairs(pairs, val=0.1, test=0.2, seed=3)
    assert [p.sources for p in again] == [p.sources for p in parts]
    assert split_pairs(pairs, val=0.1, test=0.2, seed=4).test.sources != parts.test.sources


def test_tsv_files_and_their_errors(tmp_path):
    good = tmp_path / "pairs.tsv"
    good.write_text("hello\tbonjour\n\ncat\tchat\nsee you\tà bientôt\n", encoding="utf-8")
    p = load_pairs(good)
    assert p.sources == ["hello", "cat", "see you"] and p.targets == ["bonjour", "chat", "à bientôt"]
    assert load_pairs(str(good), n=2).sources == ["hello", "cat"]

    cases = {
        "one\tun\ttwo\n": r"bad.tsv: line 1: expected two tab-separated fields \(source<TAB>target\), got 3",
        "one\tun\nno tab here\n": r"line 2: expected two tab-separated fields \(source<TAB>target\), got 1",
        "one\tun\n\tdeux\n": "line 2: the source is empty",
        "one\t\n": "line 1: the target is empty",
        "\n\n": "no pairs",
    }
    bad = tmp_path / "bad.tsv"
    for text, message in cases.items():
        bad.write_text(text, encoding="utf-8")
        with pytest.raises(LoadError, match=message) as e:
            load_pairs(bad)
        assert "\n" not in str(e.value)
    bad.write_bytes(b"caf\xe9\tcoffee\n")
    with pytest.raises(LoadError, match="not UTF-8"):
        load_pairs_tsv(bad)
    with pytest.raises(LoadError, match="no such file"):
        load_pairs(tmp_path / "missing.tsv")
    with pytest.raises(UnknownNameError, match="unknown pair data 'numbrs'.*Did you mean: numbers"):
        load_pairs("numbrs")
    with pytest.raises(ConfigError, match=r"numbers: expected a number of pairs in \[1, 1,000,000\]"):
        number_words(1_000_001)


def test_shared_vocabulary_and_encoding_round_trip(tmp_path):
    parts = split_pairs(spelled_dates(300, seed=0), 0.1, 0.1, seed=0)
    tok = pair_tokenizer(*parts)
    pad, bos, eos = special_ids(tok)
    assert len({pad, bos, eos}) == 3 and max(pad, bos, eos) == tok.vocab_size - 1
    tok.save(tmp_path / "tokenizer.json")
    tok2 = load_tokenizer(tmp_path / "tokenizer.json")
    assert special_ids(tok2) == (pad, bos, eos) and tok2.vocab_size == tok.vocab_size
    enc = encode_pairs(parts.train, tok2)
    for i in range(len(parts.train)):
        n = int(enc.src_lengths[i])
        assert tok.decode(enc.src[i, :n].tolist()) == parts.train.sources[i]
        assert bool((enc.src[i, n:] == pad).all())
        out = enc.tgt_out[i].tolist()
        end = out.index(eos)
        assert tok.decode(out[:end]) == parts.train.targets[i]
        assert enc.tgt_in[i, 0] == bos and enc.tgt_in[i, 1 : end + 1].tolist() == out[:end]  # shifted by one
        assert all(t == pad for t in out[end + 1 :])
