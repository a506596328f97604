"""The seq2seq-attention job: the quick run writes every artifact, your own TSV pairs train
the same way, bad input is a one-line error, and a short run learns."""

import csv
import json
import struct

import pytest
import torch

from layerwise.errors import ConfigError, LoadError
from layerwise.jobs.seq2seq import attention_maps, run_seq2seq
from layerwise.train import load_model


def _png_size(path):
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", head[16:24])


@pytest.mark.slow
def test_quick_run_writes_every_artifact(tmp_path):
    out = tmp_path / "run"
    r = run_seq2seq(out, quick=True, seed=0)
    for name in r["artifacts"]:
        assert (out / name).exists(), name
    doc = json.loads((out / "results.json").read_text())
    m = doc["metrics"]
    assert set(m) >= {"exact_match", "exact_match_beam", "token_accuracy", "test_loss", "val_exact_match"}
    assert all(0 <= m[k] <= 1 for k in ("exact_match", "exact_match_beam", "token_accuracy"))
    assert m["test_sentences"] == 100 and doc["data"]["sizes"] == {"train": 1800, "val": 100, "test": 100}
    assert m == r["metrics"]

    rows = list(csv.DictReader((out / "test-predictions.tsv").open(encoding="utf-8"), delimiter="\t"))
    assert len(rows) == 100
    assert sum(int(x["greedy_correct"]) for x in rows) / 100 == pytest.approx(m["exact_match"])
    assert sum(int(x["beam_correct"]) for x in rows) / 100 == pytest.approx(m["exact_match_beam"])
    train_sources = set()  # the test sources were never trained on
    from layerwise.data import number_words, split_pairs

    parts = split_pairs(number_words(2000, seed=0), val=0.05, test=0.05, seed=0)
    train_sources = set(parts.train.sources)
    assert not train_sources & {x["source"] for x in rows}

    w, h = _png_size(out / "attention.png")
    assert w > 600 and h > 400
    assert len(doc["attention_sentences"]) == 3
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if r["split"] == "val"] == [50, 100]
    assert all("exact_match" in r for r in records if r["split"] == "val")
    model, ck = load_model(out)  # the run directory alone rebuilds the model
    assert type(model).__name__ == "Seq2Seq" and ck.step == 100


def test_attention_maps_are_the_greedy_pass_and_rows_sum_to_one(tmp_path):
    from layerwise.data import pair_tokenizer, special_ids, spelled_dates
    from layerwise.models import build
    from layerwise.models.seq2seq import greedy_decode

    pairs = spelled_dates(50, seed=0)
    tok = pair_tokenizer(pairs)
    pad, bos, eos = special_ids(tok)
    torch.manual_seed(0)
    model = build("seq2seq-tiny", src_vocab=tok.vocab_size, tgt_vocab=tok.vocab_size, pad_id=pad, bos_id=bos, eos_id=eos)
    maps = attention_maps(model, tok, pairs.sources[:3], pairs.targets[:3], 12, pad, bos, eos)
    for m, s in zip(maps, pairs.sources[:3]):
        assert m.source == list(s)
        weights = torch.tensor(m.weights, dtype=torch.float64)
        assert weights.shape == (len(m.output), len(s))
        torch.testing.assert_close(weights.sum(dim=1), torch.ones(len(m.output), dtype=torch.float64))
        ids = greedy_decode(model, torch.tensor([tok.encode(s)]), 12).tokens[0].tolist()
        ids = ids[: ids.index(eos) + 1] if eos in ids else ids
        assert m.output == [tok.id_to_token(i) for i in ids]


def test_own_pairs_from_a_tsv_file(tmp_path):
    """Any pairs of strings: a reversal task from a TSV, a few steps, every artifact."""
    import random

    rng = random.Random(0)
    words = sorted({"".join(rng.choice("abcdef") for _ in range(rng.randint(2, 6))) for _ in range(400)})
    tsv = tmp_path / "reverse.tsv"
    tsv.write_text("".join(f"{w}\t{w[::-1]}\n" for w in words), encoding="utf-8")
    out = tmp_path / "run"
    r = run_seq2seq(out, quick=True, data=str(tsv), steps=6, eval_every=3, batch_size=16, val=0.1, test=0.1,
                    model="seq2seq-tiny", beam_size=2)
    assert all((out / a).exists() for a in r["artifacts"])
    doc = json.loads((out / "results.json").read_text())
    assert doc["data"]["name"] == str(tsv) and doc["data"]["generated"] is False and doc["data"]["pairs"] == len(words)
    assert doc["steps"] == 6
    manifest = json.loads((out / "run.json").read_text())
    assert manifest["command"] == "example:seq2seq-attention" and manifest["status"] == "finished"

    # The directory belongs to that run: a second one is refused before any work, unless --overwrite.
    before = (out / "results.json").read_bytes()
    with pytest.raises(ConfigError, match="already holds a example:seq2seq-attention run.*--resume.*--overwrite"):
        run_seq2seq(out, quick=True, data=str(tsv), steps=6, model="seq2seq-tiny")
    assert (out / "results.json").read_bytes() == before
    r2 = run_seq2seq(out, quick=True, data=str(tsv), steps=4, eval_every=2, batch_size=16, model="seq2seq-tiny",
                     overwrite=True)
    assert json.loads((out / "results.json").read_text())["steps"] == 4 and r2["details"]["steps"] == 4


def test_bad_input_is_one_line_and_writes_nothing(tmp_path):
    bad = tmp_path / "bad.tsv"
    bad.write_text("one\tun\ntwo deux\n", encoding="utf-8")
    out = tmp_path / "run"
    with pytest.raises(LoadError, match=r"bad.tsv: line 2: expected two tab-separated fields"):
        run_seq2seq(out, quick=True, data=str(bad))
    with pytest.raises(ConfigError, match=r"unknown option\(s\) --warmup; it takes .*--data"):
        run_seq2seq(out, quick=True, warmup=3)
    with pytest.raises(ConfigError, match="TrainConfig.lr: expected a number > 0"):
        run_seq2seq(out, quick=True, lr=-1.0)
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="--device cuda: "):
            run_seq2seq(out, quick=True, device="cuda")
    with pytest.raises(ConfigError, match="--model: 'mlp-digits' is a mlp model"):
        run_seq2seq(out, quick=True, model="mlp-digits", pairs=50)
    assert not out.exists()


@pytest.mark.slow
def test_a_short_run_learns_numbers(tmp_path):
    r = run_seq2seq(tmp_path / "run", quick=True, pairs=3000, steps=160, eval_every=160, checkpoint_every=160)
    # Chance is about 10^-5 (guessing the digits of a number); 160 steps get most of the test set right.
    assert r["metrics"]["exact_match"] >= 0.5, r["metrics"]
    assert r["metrics"]["exact_match_beam"] >= 0.5, r["metrics"]
