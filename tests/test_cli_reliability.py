"""What the CLI promises a careless user (issue 11): --version, the real defaults in --help,
refusals with the list or the reason, the flags the errors name, notes before training about
what the job changed, and output a person reads."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import numpy as np
import pytest

from layerwise.cli import main

ROOT = Path(__file__).resolve().parents[1]


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LAYERWISE_CACHE", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny corpus, a tiny labelled CSV (columns message/category) and a gpt-nano pretrained 2 steps."""
    root = tmp_path_factory.mktemp("tiny")
    corpus = root / "corpus.txt"
    corpus.write_text("call now to claim a free prize, or see you at lunch tomorrow.\n" * 40)
    data = root / "texts.csv"
    data.write_text("message,category\n" + "".join(
        f"{'free prize call now' if i % 2 else 'see you at lunch'} {i},{'spam' if i % 2 else 'ham'}\n" for i in range(40)))
    lm = root / "lm"
    assert main(["pretrain", "--model", "gpt-nano", "--data", str(corpus), "--steps", "2", "--batch-size", "2",
                 "--eval-steps", "1", "--out-dir", str(lm), "--no-progress"]) == 0  # block_size 64: --max-len's default fits
    return {"corpus": corpus, "csv": data, "lm": lm}


# --- --version ---------------------------------------------------------------------------------


def test_version_is_the_package_version(capsys):
    code, out, _ = run(capsys, "--version")
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert code == 0 and out.strip() == f"layerwise {version}"


# --- --help shows the defaults a run uses ----------------------------------------------------------


class _Stop(BaseException):
    """Raised where the training loop would start (not an Exception: main() lets it through)."""


def _help_defaults(capsys, monkeypatch, command: str) -> dict[str, str]:
    """{flag: the default its --help shows}, from the help text laid out one option a line."""
    monkeypatch.setenv("COLUMNS", "2000")
    assert main([command, "--help"]) == 0
    text = capsys.readouterr().out
    shown, current = {}, None
    for line in text.splitlines():
        m = re.match(r"\s+(--[\w-]+)[^ ]*(?: [A-Z0-9_.\[\]:]+)*(?:,? --[\w-]+(?: [A-Z0-9_.\[\]:]+)*)*(?:\s{2,}(.*))?$", line)
        if m:
            current = m.group(1)
            shown[current] = m.group(2) or ""
        elif current and line.startswith(" " * 10):
            shown[current] += " " + line.strip()
        else:
            current = None
    shown = {k: re.search(r"default: (.*?)\)?$", v).group(1) for k, v in shown.items() if "default: " in v}
    return shown


def _value(text: str):
    text = text.strip()
    if text.startswith("none"):
        return None
    if text in ("on", "off"):
        return text == "on"
    if " " in text and all(re.fullmatch(r"[\d.e+-]+", t) for t in text.split()):
        return [float(t) for t in text.split()]
    try:
        return float(text)
    except ValueError:
        return text


def _recorded(monkeypatch, argv) -> list[dict]:
    """The TrainConfig (and run facts) of each training run ``argv`` starts, stopped just before it trains."""
    from layerwise.train.trainer import Trainer

    seen: list[dict] = []

    def spy(self, resume=False, overwrite=False):
        data = self.train_data
        n = len(data.labels) if hasattr(data, "labels") else len(data[-1]) if isinstance(data, tuple) else None
        seen.append({"train": self.config.to_dict(), "run_info": self.run_info, "train_examples": n})
        raise _Stop

    monkeypatch.setattr(Trainer, "fit", spy)
    try:
        code = main(argv)
    except _Stop:
        return seen
    raise AssertionError(f"{' '.join(argv)} exited {code} before training")


@pytest.mark.slow
@pytest.mark.parametrize("command", ["pretrain", "train", "finetune", "compare"])
def test_help_defaults_equal_what_a_run_with_no_flags_records(command, tiny, capsys, monkeypatch, tmp_path):
    """pretrain --steps showed None (1000 is used), train --epochs None (5), finetune --lr 0.001
    (it depends on the strategy), compare --train-fraction nothing (0.5)."""
    from layerwise.train.config import TrainConfig

    monkeypatch.chdir(tmp_path)
    shown = _help_defaults(capsys, monkeypatch, command)
    required = {  # only what the command requires, and small data in place of the built-in sets
        "pretrain": ["--model", "gpt-nano", "--data", str(tiny["corpus"])],
        "train": ["--model", "mlp-digits", "--data", "digits"],
        "finetune": ["--model", str(tiny["lm"]), "--data", str(tiny["csv"]), "--text-column", "message",
                     "--label-column", "category"],
        "compare": ["--model", str(tiny["lm"]), "--data", str(tiny["csv"]), "--text-column", "message",
                    "--label-column", "category"],
    }[command]
    first = _recorded(monkeypatch, [command, *required])[0]
    cfg = first["train"]
    checked = 0
    for name in TrainConfig.__dataclass_fields__:
        flag = "--" + name.replace("_", "-")
        assert flag in shown, f"{command} --help shows no default for {flag}"
        text = shown[flag]
        if name == "lr" and text.startswith("by --strategy"):
            strategy = "lora" if command == "finetune" else "head"  # finetune's default; compare's first
            by = dict(re.findall(r"([\w:/-]+) ([\d.e-]+)", text.split(":", 1)[1]))
            assert float(by[strategy]) == cfg["lr"], (text, cfg["lr"])
        elif name == "out_dir":
            if command == "compare":  # the comparison's own directory; each strategy trains without one
                assert text == "runs/compare" and (tmp_path / "runs" / "compare" / "run.json").is_file()
            else:
                want = text.replace("MODEL", Path(required[1]).name).replace("STRATEGY", "lora-8")
                assert cfg["out_dir"] == want, (text, cfg["out_dir"])
        elif name == "early_stopping":
            assert _value(text) is None and cfg["early_stopping"] is None
        else:
            v = _value(text)
            assert v == cfg[name] or (isinstance(v, float) and v == float(cfg[name])), (flag, text, cfg[name])
        checked += 1
    assert checked == len(TrainConfig.__dataclass_fields__)
    if command == "pretrain":
        assert cfg["steps"] == 1000 and shown["--steps"] == "1000"
    if command == "train":
        assert cfg["epochs"] == 5 and shown["--epochs"] == "5"
        data = first["run_info"]["data"]
        assert (data["val"], data["test"]) == (float(shown["--val"]), float(shown["--test"]))
    if command == "compare":
        assert shown["--train-fraction"] == "0.5"
        assert first["train_examples"] == 16  # 40 texts, 10% validation, 10% test: half of the 32 left
        assert json.loads((tmp_path / "runs" / "compare" / "run.json").read_text())["command"] == "compare"


# --- refusals with the list or the reason ---------------------------------------------------------


def test_unknown_model_family_lists_the_families(capsys):
    code, out, err = run(capsys, "models", "--family", "nosuchfamily")
    assert code == 2 and out == ""
    assert err.strip() == ("layerwise: error: --family: unknown model family 'nosuchfamily'; expected one of "
                           "bert, cnn, dqn, gan, gpt, mlp, rnn, seq2seq.")


def test_fsdp_without_torchrun_is_refused_before_anything_is_written(tmp_path, capsys, monkeypatch):
    """Refused, not warned: FSDP's point is sharding across processes, and one process would
    train unsharded while the user counts on the memory it saves."""
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    out = tmp_path / "r"
    code, _, err = run(capsys, "train", "--model", "mlp-digits", "--data", "digits", "--steps", "1",
                       "--parallel", "fsdp", "--out-dir", str(out), "--no-progress")
    assert code == 2 and not out.exists()
    assert err.strip().startswith("layerwise: error: --parallel fsdp: shards the model across the processes of a torchrun")
    assert "torchrun --nproc_per_node N" in err


@pytest.mark.parametrize("argv,expected", [
    (["finetune", "--strategy", "head", "--targets", "query"], "--targets: applies to LoRA only; --strategy head has no lora item"),
    (["finetune", "--strategy", "head", "--lora-dropout", "0.1"], "--lora-dropout: applies to LoRA only"),
    (["compare", "--strategies", "head,bitfit", "--alpha", "16"], "--alpha: applies to LoRA only; --strategies head,bitfit"),
    (["train", "--model", "mlp-digits", "--data", "digits", "--tokenizer", "char"], "--tokenizer: applies to texts"),
    (["train", "--model", "mlp-digits", "--data", "digits", "--lr", "-1"], "--lr: expected a number > 0, got -1.0"),
    (["summary", "seed-mlp", "--output", ""], "argument --output/-o: expected a value, got an empty string"),
    (["train", "--model", "mlp-digits", "--data", "digits", "--steps", "1" + "0" * 30], "fits in 64 bits"),
])  # fmt: skip
def test_flags_that_cannot_apply_are_refused_with_the_reason(argv, expected, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, _, err = run(capsys, *argv)
    assert code == 2 and err.count("\n") == 1 and err.startswith("layerwise: error: ") and expected in err, err


# --- notes before training: what the job changed -------------------------------------------------


@pytest.mark.slow
def test_a_model_rebuilt_for_the_data_is_said_in_one_line_and_keeps_no_output_sigmoid(tmp_path, capsys):
    """seed-mlp (10→10→20→1, sigmoid) on 8×8 digits becomes 64→10→20→10, and its sigmoid moves
    into the loss: cross-entropy applies the softmax (a sigmoid before it trained mnist-5k to
    0.77 test accuracy against 0.87 without, 3 epochs)."""
    run_dir = tmp_path / "mlp"
    code, out, err = run(capsys, "train", "--model", "seed-mlp", "--data", "digits", "--steps", "2",
                         "--out-dir", str(run_dir), "--no-progress")
    assert code == 0
    notes = [line for line in err.splitlines() if line.startswith("note: ")]
    # 64·10+10 + 10·20+20 + 20·10+10 = 650 + 220 + 210
    assert notes == ["note: seed-mlp changed to fit digits (10 classes, images 1×8×8): sizes 10→10→20→1 → 64→10→20→10, "
                     "output_activation sigmoid → none (the loss applies the softmax of cross-entropy); "
                     "351 → 1,080 parameters"]
    model = json.loads((run_dir / "config.json").read_text())["model"]
    assert model["sizes"] == [64, 10, 20, 10] and model["output_activation"] is None
    assert err.index("note: seed-mlp") < err.index("training 1,080 of 1,080 parameters")


@pytest.mark.slow
def test_a_tokenizer_that_resizes_the_embedding_is_said_before_training(tiny, tmp_path, capsys):
    """seed-lstm-binary: Keras' Embedding(10000, 64) → LSTM(128) → Dense(1): 739,457 parameters
    (Keras 738,945 + PyTorch's second LSTM bias); GPT-2's 50,257 tokens add 64·40,257."""
    code, _, err = run(capsys, "train", "--model", "seed-lstm-binary", "--data", str(tiny["csv"]), "--tokenizer", "gpt2",
                       "--text-column", "message", "--label-column", "category", "--steps", "1",
                       "--out-dir", str(tmp_path / "lstm"), "--no-progress")
    assert code == 0
    assert 739_457 + 64 * (50_257 - 10_000) == 3_315_905
    assert ("note: seed-lstm-binary changed to fit texts.csv (2 classes, the gpt2 tokenizer): vocab_size 10,000 → 50,257; "
            "739,457 → 3,315,905 parameters") in err.splitlines()
    assert "training 3,315,905 of 3,315,905 parameters" in err


# --- flags the errors promise ------------------------------------------------------------------------


@pytest.mark.slow
def test_text_and_label_columns_and_char_unknowns(tiny, tmp_path, capsys):
    code, _, err = run(capsys, "train", "--model", "seed-lstm", "--data", str(tiny["csv"]), "--tokenizer", "char",
                       "--steps", "1", "--out-dir", str(tmp_path / "a"), "--no-progress")
    assert code == 2 and "no column 'text'" in err and "(choose one with --text-column)" in err
    run_dir = tmp_path / "b"
    code, _, err = run(capsys, "train", "--model", "seed-lstm", "--data", str(tiny["csv"]), "--tokenizer", "char",
                       "--text-column", "message", "--label-column", "category", "--steps", "1",
                       "--out-dir", str(run_dir), "--no-progress")
    assert code == 0, err
    code, out, _ = run(capsys, "eval", "--ckpt", str(run_dir), "--format", "json")  # the columns as recorded
    assert code == 0 and json.loads(out)["data"].endswith(":test") and "unknown_chars" not in json.loads(out)
    # texts with characters the training texts lack: encoded (nearest character, else <unk>) and counted
    accents = tmp_path / "accents.csv"
    texts = ["café au lait", "thé €5", "naïve spam", "see you"]
    accents.write_text("message,category\n" + "".join(f"{t},{'spam' if i % 2 else 'ham'}\n" for i, t in enumerate(texts)))
    known = set("".join(line.rsplit(",", 1)[0] for line in tiny["csv"].read_text().splitlines()[1:]))
    expected = sum(c not in known for t in texts for c in t)
    code, out, err = run(capsys, "eval", "--ckpt", str(run_dir), "--data", str(accents), "--text-column", "message",
                         "--label-column", "category", "--format", "json")
    assert code == 0, err
    assert json.loads(out)["unknown_chars"] == expected > 0
    from layerwise.data.tokenizers import load_tokenizer

    tok = load_tokenizer(run_dir / "tokenizer.json")
    assert tok.unknown_chars(["café €"]) == {"é": (1, "e"), "€": (1, "<unk>")}
    assert tok.encode("café €") == tok.encode("cafe ") + [tok.unk_id]


def test_npy_images_take_labels_from_the_labels_flag(tmp_path, capsys):
    g = np.random.default_rng(0)
    np.save(tmp_path / "x.npy", g.integers(0, 255, (40, 8, 8), dtype=np.uint8))
    np.save(tmp_path / "y.npy", np.arange(40) % 2)
    code, _, err = run(capsys, "train", "--model", "mlp-digits", "--data", str(tmp_path / "x.npy"), "--steps", "1",
                       "--no-progress")
    assert code == 2 and "pass --labels FILE.npy" in err and "labels=" not in err
    run_dir = tmp_path / "r"
    code, _, err = run(capsys, "train", "--model", "mlp-digits", "--data", str(tmp_path / "x.npy"), "--labels",
                       str(tmp_path / "y.npy"), "--steps", "1", "--out-dir", str(run_dir), "--no-progress")
    assert code == 0, err
    code, out, _ = run(capsys, "eval", "--ckpt", str(run_dir), "--format", "json")
    doc = json.loads(out)
    assert code == 0 and sum(doc["per_class"][k]["support"] for k in doc["per_class"]) == 4  # the test split: 10% of 40


def test_generate_greedy_and_an_unknown_prompt_character(tiny, capsys):
    lm = str(tiny["lm"])
    outs = []
    for seed in ("0", "1"):
        code, out, err = run(capsys, "generate", "--ckpt", lm, "--prompt", "café", "--max-new-tokens", "8", "--greedy",
                             "--seed", seed)
        assert code == 0 and out.startswith("café")  # the prompt as given, even where it was mapped
        assert "note: 1 character of the prompt is not in the char tokenizer's vocabulary: 'é' ×1 (as 'e')" in err
        outs.append(out)
    assert outs[0] == outs[1]  # greedy: the seed does not matter
    code, _, err = run(capsys, "generate", "--ckpt", lm, "--greedy", "--temperature", "0.5")
    assert code == 2 and "--temperature contradicts --greedy" in err


@pytest.mark.slow
def test_finetune_lines_share_one_denominator_and_the_head_trains(tiny, tmp_path, capsys):
    code, out, err = run(capsys, "finetune", "--model", str(tiny["lm"]), "--data", str(tiny["csv"]), "--text-column",
                         "message", "--label-column", "category", "--strategy", "lora:4", "--targets", "c_attn",
                         "--steps", "1", "--batch-size", "8", "--max-len", "16", "--out-dir", str(tmp_path / "ft"),
                         "--no-progress")
    assert code == 0, err
    start = re.search(r"training ([\d,]+) of ([\d,]+) parameters \(the base model's; the strategy added ([\d,]+)\)", err)
    summary = re.search(r"lora:4: trains ([\d,]+) of ([\d,]+) base parameters .*head ([\d,]+)", out)
    assert start and summary
    assert start.group(1, 2) == summary.group(1, 2)
    assert int(summary.group(3).replace(",", "")) == 48 * 2  # the new score head (48 → 2, no bias, as transformers' GPT2ForSequenceClassification) trains
    assert "trained 1 step in" in out


# --- output a person reads ----------------------------------------------------------------------------


def test_layer_rows_in_forward_order_as_torchinfo_lists_them(capsys):
    """ResNet's stem registers maxpool before bn1; the forward runs conv1, bn1, act, maxpool.
    torchinfo lists layers in execution order: so do we, with --order tree for the module tree."""
    import torch
    import torchinfo

    from layerwise.models import build

    model = build("resnet18", device="cpu")
    info = torchinfo.summary(model, input_size=(1, 3, 64, 64), depth=1, verbose=0, device="cpu")
    theirs = [layer.var_name for layer in info.summary_list if layer.depth == 1]
    code, out, _ = run(capsys, "summary", "resnet18", "--show-nesting", "1", "--format", "csv")
    rows = [line.split(",")[0] for line in out.splitlines()[1:]]
    ours = [r for r in rows if r and "." not in r]
    assert ours == theirs and ours.index("bn1") < ours.index("maxpool")
    code, out, _ = run(capsys, "summary", "resnet18", "--order", "tree", "--format", "csv")
    tree = [line.split(",")[0] for line in out.splitlines()[1:] if line.split(",")[0] and "." not in line.split(",")[0]]
    assert tree == [n for n, _ in model.named_children()]  # registration order: maxpool before bn1
    del torch


def test_totals_have_units_and_a_size_block(capsys):
    import torchinfo

    from layerwise.analysis.plan import plan
    from layerwise.models import build

    code, out, _ = run(capsys, "summary", "seed-cnn-mnist")
    assert code == 0
    info = torchinfo.summary(build("seed-cnn-mnist", device="cpu"), input_size=(1, 1, 28, 28), verbose=0, device="cpu")
    params_bytes = info.total_param_bytes  # torchinfo's "Params size"
    assert "Params size (weights)" in out and f"{params_bytes:,} bytes ({params_bytes / 1024:.2f} KiB)" in out
    assert re.search(r"Forward FLOPs\s+5,056,000 FLOPs \(5\.06 MFLOPs\)", out)
    code, out, _ = run(capsys, "summary", "seed-cnn-mnist", "--format", "json")
    sizes = json.loads(out)["sizes"]
    p1 = plan(build("seed-cnn-mnist", device="meta"), batch_size=1, device="cpu")
    assert sizes["activation_bytes_per_example"] == p1.activation_bytes and sizes["training_peak_bytes"] == p1.peak_bytes
    assert all(isinstance(sizes[k], int) for k in ("activation_bytes_per_example", "training_peak_bytes"))


def test_a_model_without_input_shape_says_so_instead_of_zeros(capsys, tmp_path, monkeypatch):
    (tmp_path / "nets.py").write_text("import torch.nn as nn\ndef make():\n    return nn.Sequential(nn.Linear(8, 4), nn.ReLU(), nn.Linear(4, 2))\n")
    monkeypatch.chdir(tmp_path)
    code, out, _ = run(capsys, "summary", "nets:make")
    assert code == 0 and out.startswith("no input shape: pass --input-shape to trace FLOPs and depth")
    assert "FLOPs (fwd)" not in out and "Output shape" not in out


def test_gan_summary_traces_the_discriminator(capsys):
    """Both networks of the generator's step D(G(z)): FLOPs equal torch's FlopCounterMode."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from layerwise.models import build

    code, out, _ = run(capsys, "summary", "gan-mlp-mnist", "--format", "json")
    doc = json.loads(out)
    rows = {r["name"]: r for r in doc["rows"]}
    assert rows["discriminator.out"]["output_shape"] == [1, 1] and rows["discriminator"]["flops_total"] > 0
    gan = build("gan-mlp-mnist", device="cpu")
    with FlopCounterMode(display=False) as fc:
        gan.discriminate(gan(torch.randn(1, 100)))
    assert doc["totals"]["flops_forward"] == fc.get_total_flops()


@pytest.mark.slow
def test_plan_measure_prints_no_profiler_chatter(tmp_path):
    r = subprocess.run([sys.executable, "-m", "layerwise", "plan", "seed-mlp", "--measure", "--device", "cpu"],
                       capture_output=True, text=True, cwd=tmp_path, env={**__import__("os").environ,
                                                                         "PYTHONPATH": str(ROOT / "src")})
    assert r.returncode == 0, r.stderr
    assert "USDT" not in r.stderr and "USDT" not in r.stdout
