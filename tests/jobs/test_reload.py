"""Every run reloads: strategy × frozen-prefix cache × eval / continue, logits after reload
equal logits before saving; exports load in transformers and PEFT with equal logits."""

import json

import pytest
import torch

from layerwise import load_run
from layerwise.cli import main
from layerwise.errors import LoadError
from layerwise.jobs.classify import classify
from layerwise.train import TrainConfig


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LAYERWISE_CACHE", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def lm_run(tmp_path_factory):
    """A tiny pretrained GPT (a `layerwise pretrain` run) to fine-tune from."""
    run = tmp_path_factory.mktemp("lm") / "gpt"
    assert main(["pretrain", "--model", "gpt-nano", "--data", "shakespeare-1m", "--tokenizer", "bpe:300", "--steps", "4",
                 "--batch-size", "4",
                 "--set", "block_size=64", "--out-dir", str(run), "--no-progress"]) == 0
    return run


def _cfg(out, **kw):
    return TrainConfig(**{"steps": 4, "batch_size": 16, "lr": 3e-3, "log_every": 2, "eval_every": 2, "seed": 0,
                          "out_dir": str(out), **kw})


def _logits(model, ids, mask):
    model.eval()
    with torch.no_grad():
        out = model(ids, attention_mask=mask)
        return getattr(out, "logits", out).float()


STRATEGIES = ["full", "head", "top-1", "bitfit", "lora:4", "adapter:8", "lora:4+norms", "full+freeze:embedding"]


@pytest.mark.slow
@pytest.mark.parametrize("cache", [True, False], ids=["cache", "no-cache"])
@pytest.mark.parametrize("strategy", STRATEGIES)
def test_every_strategy_reloads_with_the_same_logits_and_metrics(strategy, cache, lm_run, tmp_path, capsys):
    out = tmp_path / "ft"
    c = classify(str(lm_run), "sms-spam", _cfg(out), strategy=strategy, max_len=24, train_fraction=0.05, cache=cache)
    assert (c.cache is not None) == cache
    enc = __import__("layerwise.data", fromlist=["x"])
    texts = ["WINNER!! claim your free prize now", "see you at lunch tomorrow?"]
    loaded = load_run(out)
    tok = loaded.tokenizer
    ds = enc.TextClassification("t", texts, [0, 0], ["ham", "spam"])
    e = enc.encode_classification(ds, tok, 24)
    torch.testing.assert_close(_logits(loaded.model, e.ids, e.attention_mask), _logits(c.model, e.ids, e.attention_mask),
                               rtol=0, atol=0)
    # only what the strategy changes is saved for the PEFT-style strategies
    state = json.loads((sorted((out / "checkpoints").glob("step-*"))[-1] / "state.json").read_text())
    n_saved = len(state["saved_names"])
    if strategy in ("head", "lora:4", "adapter:8", "bitfit"):
        assert n_saved < len(c.model.state_dict()) / 2
    # eval RUN recomputes the same test split and the same metrics
    capsys.readouterr()
    assert main(["eval", "--ckpt", str(out), "--format", "json"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["accuracy"] == pytest.approx(c.test["accuracy"], abs=0) and metrics["f1"] == pytest.approx(c.test["f1"])
    # continue: fine-tune the run further (a new run starts from its weights)
    more = tmp_path / "more"
    c2 = classify(str(out), "sms-spam", _cfg(more, steps=1, lr=1e-9, eval_every=0), strategy="head", max_len=24,
                  train_fraction=0.05)
    torch.testing.assert_close(_logits(c2.model, e.ids, e.attention_mask), _logits(c.model, e.ids, e.attention_mask),
                               rtol=1e-4, atol=1e-5)
    assert load_run(more).recipe["base"]["source"] == "run"


def test_a_run_refuses_a_different_base(lm_run, tmp_path):
    out = tmp_path / "ft"
    classify(str(lm_run), "sms-spam", _cfg(out, steps=1, eval_every=0), strategy="lora:4", max_len=24, train_fraction=0.05)
    # the base changes under the run: its digest no longer matches
    from layerwise.train.checkpoint import CheckpointManager, read_safetensors, tensors_to_bytes

    ck = CheckpointManager(lm_run / "checkpoints").latest()
    tensors, _ = read_safetensors(ck / "model.safetensors")
    key = next(k for k in tensors if k.startswith("transformer.h.0.") and k.endswith("weight"))
    tensors[key] = tensors[key] + 1
    backup, backup_state = (ck / "model.safetensors").read_bytes(), (ck / "state.json").read_text()
    try:
        (ck / "model.safetensors").write_bytes(tensors_to_bytes(tensors))
        import hashlib

        state = json.loads((ck / "state.json").read_text())
        state["sha256"]["model.safetensors"] = hashlib.sha256((ck / "model.safetensors").read_bytes()).hexdigest()
        (ck / "state.json").write_text(json.dumps(state))
        with pytest.raises(LoadError, match="differs from the one this run was fine-tuned from"):
            load_run(out)
    finally:
        (ck / "model.safetensors").write_bytes(backup)
        (ck / "state.json").write_text(backup_state)


def test_predict_prints_labels_and_probabilities(lm_run, tmp_path, capsys):
    out = tmp_path / "ft"
    classify(str(lm_run), "sms-spam", _cfg(out, steps=2, eval_every=0), strategy="head", max_len=24, train_fraction=0.05)
    capsys.readouterr()
    assert main(["predict", str(out), "FREE entry to win cash", "ok see you", "--format", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["input"] for r in rows] == ["FREE entry to win cash", "ok see you"]
    for r in rows:
        assert r["label"] in ("ham", "spam") and abs(sum(r["probabilities"].values()) - 1) < 1e-6
        assert r["probability"] == max(r["probabilities"].values())
    preds = load_run(out).predict(["FREE entry to win cash"])
    assert preds[0].probability == pytest.approx(rows[0]["probability"])
    assert main(["predict", str(lm_run), "hello"]) == 2
    assert "predict needs a classifier" in capsys.readouterr().err


@pytest.mark.slow
def test_exports_load_in_transformers_and_peft_with_equal_logits(lm_run, tmp_path):
    from transformers import AutoModelForSequenceClassification

    out = tmp_path / "ft"
    c = classify(str(lm_run), "sms-spam", _cfg(out, steps=3), strategy="lora:4", max_len=24, train_fraction=0.05)
    ids = torch.randint(1, 60, (3, 20))
    ours = _logits(c.model, ids, torch.ones_like(ids))
    assert main(["export", str(out), "--to", "hf", "--out-dir", str(tmp_path / "hf")]) == 0
    hf = AutoModelForSequenceClassification.from_pretrained(tmp_path / "hf").eval()
    with torch.no_grad():
        torch.testing.assert_close(hf(ids).logits, ours, rtol=1e-4, atol=1e-5)
    assert main(["export", str(out), "--to", "peft", "--out-dir", str(tmp_path / "peft")]) == 0
    from peft import PeftModel

    base = AutoModelForSequenceClassification.from_pretrained(tmp_path / "peft" / "base")
    peft_model = PeftModel.from_pretrained(base, tmp_path / "peft").eval()
    with torch.no_grad():
        torch.testing.assert_close(peft_model(ids).logits, ours, rtol=1e-4, atol=1e-5)
    assert main(["export", str(out), "--to", "merged", "--out-dir", str(tmp_path / "merged")]) == 0
    torch.testing.assert_close(_logits(load_run(tmp_path / "merged").model, ids, torch.ones_like(ids)), ours,
                               rtol=1e-5, atol=1e-6)
    # the reverse: a transformers directory and a PEFT adapter as the starting point
    back = classify(str(tmp_path / "peft" / "base"), "sms-spam", _cfg(tmp_path / "back", steps=1, lr=1e-9, eval_every=0),
                    strategy="head", max_len=24, train_fraction=0.05, adapter=str(tmp_path / "peft"))
    torch.testing.assert_close(_logits(back.model, ids, torch.ones_like(ids)), ours, rtol=1e-4, atol=1e-5)


def test_export_refusals_are_one_line(lm_run, tmp_path, capsys):
    out = tmp_path / "ft"
    classify(str(lm_run), "sms-spam", _cfg(out, steps=1, eval_every=0), strategy="adapter:8", max_len=24,
             train_fraction=0.05)
    capsys.readouterr()
    for to, expected in [("merged", "adapters are not linear"), ("peft", "not trained with LoRA")]:
        assert main(["export", str(out), "--to", to, "--out-dir", str(tmp_path / to)]) == 2
        err = capsys.readouterr().err.strip()
        assert expected in err and "\n" not in err
        assert not (tmp_path / to).exists()


@pytest.mark.slow
def test_finetune_minilm_lora_then_eval_prints_the_same_test_f1(tmp_path, capsys):
    run = tmp_path / "lora"
    assert main(["finetune", "--model", "minilm-l6", "--data", "sms-spam", "--strategy", "lora:8", "--steps", "12",
                 "--train-fraction", "0.15", "--max-len", "32", "--eval-every", "6", "--out-dir", str(run),
                 "--no-progress"]) == 0
    out = capsys.readouterr().out
    test_line = next(line for line in out.splitlines() if line.startswith("test: "))
    f1 = float(test_line.split("f1 ")[1].split(",")[0])
    assert main(["eval", str(run), "--data", "sms-spam"]) == 0
    table = capsys.readouterr().out
    row = next(line for line in table.splitlines() if " f1 " in f" {line} " and "macro" not in line)
    assert f"{f1:.4f}" in row


def test_summary_shows_the_model_as_fine_tuned(lm_run, tmp_path, capsys):
    out = tmp_path / "ft"
    c = classify(str(lm_run), "sms-spam", _cfg(out, steps=1, eval_every=0), strategy="lora:4", max_len=24,
                 train_fraction=0.05)
    capsys.readouterr()
    assert main(["summary", str(out), "--format", "json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["totals"]["trainable"] == c.record.trainable
    rows = {r["name"]: r for r in doc["rows"]}
    assert any(n.endswith("lora_a") and r["trainable"] for n, r in rows.items())
    assert all(r["trainable"] == 0 for n, r in rows.items() if n.endswith(".attn.c_proj"))  # frozen rows
    assert main(["summary", "bert-tiny", "--strategy", "lora:4"]) == 0
    text = capsys.readouterr().out
    assert "LoRA on 4 layers: layers.0.attention.query" in text and "trainable params: 4,096 of the base's 4,385,920" in text
