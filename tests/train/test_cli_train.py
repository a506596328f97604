"""`layerwise pretrain / train / generate / eval` end to end on built-in data, small."""

import json

import pytest

from layerwise.cli import main


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LAYERWISE_CACHE", str(tmp_path / "cache"))


def test_pretrain_generate_eval_and_resume(tmp_path, capsys):
    run = tmp_path / "baby"
    args = ["pretrain", "--model", "gpt-nano", "--data", "shakespeare-1m", "--tokenizer", "char", "--steps", "12",
            "--batch-size", "4", "--eval-every", "6", "--eval-steps", "4", "--log-every", "3", "--out", str(run),
            "--set", "block_size=32", "--no-progress"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "steps: 12/12" in out and f"run directory: {run}" in out
    cfg = json.loads((run / "config.json").read_text())
    tok = json.loads((run / "tokenizer.json").read_text())
    assert tok["unk_token"] == "<unk>" and tok["special_tokens"] == ["<unk>"]
    assert cfg["model"]["vocab_size"] == len(tok["chars"]) + 1  # the characters and the unknown-character token
    assert cfg["model"]["block_size"] == 32 and cfg["data"]["name"] == "shakespeare-1m"

    assert main(["generate", "--ckpt", str(run), "--prompt", "ROMEO:", "--max-new-tokens", "20", "--top-k", "5"]) == 0
    text = capsys.readouterr().out
    assert text.startswith("ROMEO:") and len(text) >= 26

    assert main(["eval", "--ckpt", str(run), "--format", "json", "--batch-size", "256"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["data"] == "shakespeare-1m:val" and metrics["tokens"] > 100_000 and metrics["perplexity"] > 1

    assert main([*args[:7], "--steps", "15", *args[9:], "--resume"]) == 0  # 3 more steps
    steps = [r["step"] for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if r["split"] == "train"]
    assert steps == [3, 6, 9, 12, 15]


def test_train_classifier_and_eval_agree(tmp_path, capsys):
    run = tmp_path / "digits"
    assert main(["train", "--model", "mlp-digits", "--data", "digits", "--epochs", "2", "--batch-size", "32",
                 "--lr", "0.003", "--out", str(run), "--no-progress"]) == 0
    assert "best checkpoint, test: loss" in capsys.readouterr().out
    results = json.loads((run / "results.json").read_text())
    assert main(["eval", "--ckpt", str(run), "--format", "json"]) == 0  # recomputes the same test split
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["data"] == "digits:test" and metrics["accuracy"] == results["test"]["accuracy"]
    assert metrics["confusion_matrix"] == results["test"]["confusion_matrix"]


@pytest.mark.parametrize(
    "argv,expected",
    [
        (["train", "--model", "mlp-digits", "--data", "digits", "--lr", "-1"], "--lr: expected a number > 0, got -1.0"),
        (["train", "--model", "mlp-digits", "--data", "no-such-set"], "unknown dataset 'no-such-set'"),
        (["train", "--model", "seed-lstm", "--data", "sms-spam"], "holds texts; pass --tokenizer"),
        (["pretrain", "--model", "gpt-nano", "--data", "digits"], "expected a text corpus"),
        (["pretrain", "--model", "gpt-nano", "--data", "shakespeare-1m", "--tokenizer", "bpe:x"], "tokenizer: expected bpe:VOCAB"),
        (["generate", "--ckpt", "/nonexistent/run"], "/nonexistent/run: no such checkpoint or run directory"),
    ],
)
def test_errors_are_one_line_exit_2(argv, expected, capsys, tmp_path):
    assert main([*argv, "--out", str(tmp_path / "r")] if argv[0] != "generate" else argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("layerwise: error:") and expected in err and "\n" not in err


def test_eval_on_data_that_cannot_feed_the_model_is_one_line(tmp_path, capsys):
    run = tmp_path / "cnn"
    assert main(["train", "--model", "seed-cnn-mnist", "--data", "mnist-5k", "--steps", "2", "--out-dir", str(run),
                 "--no-progress"]) == 0
    capsys.readouterr()
    for data, expected in [("digits", "has images of shape (1, 8, 8); the model takes (1, 28, 28)"),
                           ("sms-spam", "holds texts; this checkpoint was trained on images (mnist-5k)"),
                           ("shakespeare-1m", "needs labelled data")]:
        assert main(["eval", "--ckpt", str(run), "--data", data]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("layerwise: error: eval: --data") and expected in err and "\n" not in err
    assert main(["eval", "--ckpt", str(run), "--device", "cuda"]) == 2
    assert "CUDA is not available in this torch build" in capsys.readouterr().err
    assert main(["generate", "--ckpt", str(run), "--device", "tpu"]) == 2
    assert "unknown device 'tpu'" in capsys.readouterr().err
