"""The articles' "Seq2Seq with attention" program: train an attentional encoder–decoder on
a generated, seeded "translation" task (or your own pairs) and look at what it learned.

``run_seq2seq(out_dir, quick, seed, callback, **options)``:

1. pairs: ``data="numbers"`` (English number words → digits), ``"dates"`` (spelled-out
   dates → ISO dates) or a ``.tsv`` file of ``source<TAB>target`` lines; split train / val /
   test disjoint by source string; one character vocabulary shared by both sides;
2. training with the one Trainer (:class:`~layerwise.train.tasks.Seq2SeqTask`: teacher
   forcing, cross-entropy; validation exact match with greedy decoding), checkpoints and
   exact resume in ``out_dir``;
3. the best checkpoint (lowest validation loss) on the test set, greedy and beam search;
4. an attention heat-map of three test sentences (short, middling, long), the test
   predictions as TSV, training curves, ``results.json``.

Run directory::

  config.json  metrics.jsonl/.csv  loss-curve.png  checkpoints/   (the Trainer's)
  tokenizer.json  training-curves.png  attention.png  test-predictions.tsv  results.json
  run.json     the run's manifest (:mod:`layerwise.rundir`)
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from layerwise.devices import resolve_device
from layerwise.errors import ConfigError, LayerwiseError
from layerwise.io import atomic_write_text
from layerwise.jobs.training import _check_run, _open_run
from layerwise.rundir import RunDir
from layerwise.train.config import TrainConfig
from layerwise.train.tasks import Seq2SeqTask
from layerwise.train.trainer import Event, Trainer, seed_everything

NAME = "seq2seq-attention"
COMMAND = f"example:{NAME}"  # the run directory's command, as `layerwise example` names it


@dataclasses.dataclass(frozen=True)
class Budget:
    pairs: int  # generated pairs before the split
    train: dict  # TrainConfig fields


FULL = Budget(10_000, dict(steps=600, eval_every=150, checkpoint_every=150))
QUICK = Budget(2_000, dict(steps=100, eval_every=50, checkpoint_every=50))
# One thread: the RNNs' small sequential matmuls gain nothing from a second one, and on a shared
# 2-core machine two spinning OpenMP threads made a step 10x slower (0.15 s → 3.4 s measured).
TRAIN_DEFAULTS = dict(batch_size=64, lr=3e-3, optimizer="adam", schedule="cosine", warmup_steps=30, min_lr=1e-4,
                      clip_grad_norm=1.0, log_every=10, keep_last=1, num_threads=1)
JOB_OPTIONS = ("data", "pairs", "val", "test", "model", "model_overrides", "beam_size", "length_penalty",
               "label_smoothing", "resume", "overwrite", "train_config")
HEATMAP_SENTENCES = 3


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _train_config(out_dir: Path, quick: bool, seed: int, options: dict, base: TrainConfig | dict | None) -> TrainConfig:
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(options) - names)
    if unknown:
        accepted = ", ".join(_flag(n) for n in sorted(set(JOB_OPTIONS) - {"train_config", "model_overrides"}))
        raise ConfigError(
            f"{NAME}: unknown option(s) {', '.join(_flag(u) for u in unknown)}; it takes {accepted} "
            "and the training flags of `layerwise train` (--steps, --lr, --batch-size, --precision, --device, ...)"
        )
    budget = QUICK if quick else FULL
    data = {**TRAIN_DEFAULTS, **budget.train}
    if base is not None:
        data.update(base.to_dict() if isinstance(base, TrainConfig) else dict(base))
    data.update(options)
    if "epochs" in options and options["epochs"] is not None and "steps" not in options:
        data["steps"] = None
    if data.get("steps") is not None and data.get("epochs") is not None:
        data["epochs"] = None
    data["seed"], data["out_dir"] = seed, str(out_dir)
    steps = data.get("steps")
    if steps is not None and isinstance(steps, int) and steps >= 1:
        # The defaults' evaluations, checkpoints and warmup stay inside a shortened run.
        for name in ("eval_every", "checkpoint_every", "warmup_steps"):
            if name not in options and (base is None or name not in _fields(base)) and data.get(name):
                data[name] = min(data[name], steps)
    return TrainConfig.from_dict(data)


def _fields(base: TrainConfig | dict) -> dict:
    return base.to_dict() if isinstance(base, TrainConfig) else dict(base)


def _decode_strings(model, task: Seq2SeqTask, data, tokenizer, eos_id: int, pad_id: int, batch_size: int = 128) -> list[str]:
    device = next(model.parameters()).device
    out: list[str] = []
    src_all, lengths_all, _, tgt_all = data.tensors()
    for start in range(0, len(data), batch_size):
        lengths = lengths_all[start:start + batch_size]
        src = src_all[start:start + batch_size, : int(lengths.max())].to(device)
        max_len = int(tgt_all.shape[1])
        ids = task.decode(model, src, lengths.to(device), max_len).cpu()
        for row in ids.tolist():
            cut = row.index(eos_id) if eos_id in row else len(row)
            out.append(tokenizer.decode([i for i in row[:cut] if i != pad_id]))
    return out


def _heatmap_rows(sources: list[str], k: int = HEATMAP_SENTENCES) -> list[int]:
    """k test rows spread over the source lengths: the shortest, the median, the longest."""
    order = sorted(range(len(sources)), key=lambda i: (len(sources[i]), i))
    if len(order) <= k:
        return order
    picks = [order[round(q * (len(order) - 1))] for q in [j / (k - 1) for j in range(k)]]
    return list(dict.fromkeys(picks))


@torch.no_grad()
def attention_maps(model, tokenizer, sources: list[str], targets: list[str], max_len: int, pad_id: int, bos_id: int,
                   eos_id: int) -> list:
    """Each source's greedy translation and the attention of every output token on every source
    character: the decoder is run teacher-forced on its own greedy output, which reproduces
    the greedy pass's states and weights exactly (the decoder is causal)."""
    from layerwise.models.seq2seq import greedy_decode
    from layerwise.report.curves import AttentionMap

    device = next(model.parameters()).device
    maps = []
    was_training = model.training
    model.eval()
    try:
        for source, target in zip(sources, targets):
            src = torch.tensor([tokenizer.encode(source)], device=device)  # (1, S)
            out = greedy_decode(model, src, max_len).tokens[0].tolist()
            out = out[: out.index(eos_id) + 1] if eos_id in out else out
            tgt_in = torch.tensor([[bos_id, *out[:-1]]], device=device)  # (1, L)
            _, weights = model(src, tgt_in, return_attention=True)  # (1, L, S)
            tokens = [tokenizer.id_to_token(i) for i in out]
            decoded = "".join(t for t in tokens if t not in ("</s>", "<pad>"))
            mark = "✓" if decoded == target else f"✗ (expected {target})"
            maps.append(AttentionMap(list(source), ["</s>" if t == "</s>" else t for t in tokens],
                                     weights[0].double().cpu().tolist(), f"{source!r} → {decoded!r} {mark}"))
    finally:
        model.train(was_training)
    return maps


def run_seq2seq(
    out_dir: str | Path,
    quick: bool = False,
    seed: int = 0,
    callback: Callable[[Event], None] | None = None,
    *,
    data: str = "numbers",
    pairs: int | None = None,
    val: float = 0.05,
    test: float = 0.05,
    model: str = "seq2seq-char",
    model_overrides: dict | None = None,
    beam_size: int = 4,
    length_penalty: float = 0.0,
    label_smoothing: float = 0.0,
    resume: bool = False,
    overwrite: bool = False,
    run: RunDir | None = None,
    train_config: TrainConfig | dict | None = None,
    **train_options: Any,
) -> dict:
    """Train and evaluate the attentional Seq2Seq; returns {"metrics": {...}, "artifacts": [...]}.

    data: "numbers", "dates" or a .tsv path (``--data``); pairs: how many to generate (default
    10,000, quick 2,000; for a TSV, the first ``pairs`` lines); val, test: fractions of the
    distinct sources held out. model: a seq2seq preset or config file, ``model_overrides``
    its fields (vocabulary sizes and special ids always come from the data). Any TrainConfig
    field (steps, lr, batch_size, precision, device, ...) may be given as a keyword; the
    defaults are :data:`TRAIN_DEFAULTS` and the budget of the mode (:data:`FULL`, :data:`QUICK`).
    Metrics: ``exact_match`` (greedy) and ``exact_match_beam`` on the test set, their
    ``token_accuracy``, the test loss, and the validation metrics of the same checkpoint.
    ``details``: the rest of ``results.json`` (test metrics of both searches, samples, times).

    Run directory (:mod:`layerwise.rundir`): ``run`` is one the caller opened for ``out_dir``
    (``layerwise example``); without it this job opens ``out_dir`` as a ``example:seq2seq-attention``
    run, refusing a used directory unless ``resume`` (continue it) or ``overwrite``.
    """
    from layerwise.data import encode_pairs, load_pairs, pair_tokenizer, special_ids, split_pairs
    from layerwise.data.pairs import PAIR_TASKS
    from layerwise.data.tokenizers import load_tokenizer
    from layerwise.models.registry import build, get_config
    from layerwise.report.curves import plot_attention, plot_training_curves
    from layerwise.train.checkpoint import load_checkpoint, resolve_checkpoint
    from layerwise.train.runlog import read_records

    t0 = time.perf_counter()
    out_dir = Path(out_dir)
    tcfg = _train_config(out_dir, quick, seed, train_options, train_config)
    budget = QUICK if quick else FULL
    for what, frac in (("--val", val), ("--test", test)):
        if isinstance(frac, bool) or not isinstance(frac, (int, float)) or not 0 < frac < 1:
            raise ConfigError(f"{what}: expected a fraction in (0, 1), got {frac!r}")
    if pairs is not None and (isinstance(pairs, bool) or not isinstance(pairs, int) or pairs < 3):
        raise ConfigError(f"--pairs: expected an integer >= 3, got {pairs!r}")
    base_cfg = get_config(model)
    if base_cfg.family != "seq2seq":
        raise ConfigError(f"--model: {model!r} is a {base_cfg.family} model; expected a seq2seq preset or config (e.g. seq2seq-char)")
    base_cfg = base_cfg.replace(**(model_overrides or {}))
    Seq2SeqTask(0, "beam", beam_size=beam_size, length_penalty=length_penalty, label_smoothing=label_smoothing)  # checks the flags
    resolve_device(tcfg.device)  # an unusable --device fails before anything is written
    _check_run(tcfg, COMMAND, resume, overwrite, run)  # so does a used --out-dir
    generated = str(data) in PAIR_TASKS
    seed_everything(seed)
    all_pairs = load_pairs(data, n=pairs if pairs is not None else (budget.pairs if generated else None), seed=seed)
    parts = split_pairs(all_pairs, val=val, test=test, seed=seed)
    for part, flag in (("val", "--val"), ("test", "--test")):
        if len(getattr(parts, part)) == 0:
            raise ConfigError(f"{flag}: {all_pairs.name} has {len(all_pairs)} pairs; the {part} split is empty, use more pairs or a larger {flag}")

    tok_path = out_dir / "tokenizer.json"
    tokenizer = load_tokenizer(tok_path) if resume and tok_path.is_file() else pair_tokenizer(*parts)
    pad_id, bos_id, eos_id = special_ids(tokenizer)
    enc = [encode_pairs(p, tokenizer) for p in parts]  # a character unseen by a resumed tokenizer is a one-line error

    mcfg = base_cfg.replace(**{"src_vocab": tokenizer.vocab_size, "tgt_vocab": tokenizer.vocab_size,
                           "pad_id": pad_id, "bos_id": bos_id, "eos_id": eos_id})
    torch.manual_seed(seed)
    net = build(mcfg, device="cpu")

    task = Seq2SeqTask(pad_id, "greedy", beam_size=beam_size, length_penalty=length_penalty, label_smoothing=label_smoothing)
    beam_task = Seq2SeqTask(pad_id, "beam", beam_size=beam_size, length_penalty=length_penalty, label_smoothing=label_smoothing)
    run_info = {
        "example": NAME,
        "data": {"name": str(data), "kind": "pairs", "generated": generated, "pairs": len(all_pairs), "val": val, "test": test,
                 "split_seed": seed, "sizes": {k: len(v) for k, v in parts.items()}},
        "tokenizer": {"spec": "char (shared by source and target)", "file": "tokenizer.json", "vocab_size": tokenizer.vocab_size},
    }
    with _open_run(tcfg, COMMAND, resume, overwrite, run_info, run) as run:
        tokenizer.save(tok_path)
        trainer = Trainer(net, task, enc[0], enc[1], tcfg, callback, run_info, run=run)
        result = trainer.fit(resume=resume)

        best = resolve_checkpoint(out_dir, prefer="best")
        load_checkpoint(best, {"model": net})
        val_metrics = trainer.evaluate(enc[1])
        test_greedy = trainer.evaluate(enc[2])
        test_beam = Trainer(net, beam_task, None, None, tcfg.replace(out_dir=None)).evaluate(enc[2])

        # What it produced: every test translation, both searches; the meter's figures are the metrics.
        greedy_out = _decode_strings(net, task, enc[2], tokenizer, eos_id, pad_id)
        beam_out = _decode_strings(net, beam_task, enc[2], tokenizer, eos_id, pad_id)
        test_pairs = parts.test
        buf = io.StringIO()
        w = csv.writer(buf, delimiter="\t", lineterminator="\n", quoting=csv.QUOTE_MINIMAL)
        w.writerow(["source", "target", "greedy", "beam", "greedy_correct", "beam_correct"])
        for s, t, g, b in zip(test_pairs.sources, test_pairs.targets, greedy_out, beam_out):
            w.writerow([s, t, g, b, int(g == t), int(b == t)])
        atomic_write_text(out_dir / "test-predictions.tsv", buf.getvalue())
        string_greedy = sum(g == t for g, t in zip(greedy_out, test_pairs.targets)) / len(test_pairs)
        if abs(string_greedy - test_greedy["exact_match"]) > 1e-12:
            raise LayerwiseError(
                f"{NAME}: the decoded test strings match {string_greedy:.4f} of the targets but the meter counted "
                f"{test_greedy['exact_match']:.4f}; the tokenizer does not round-trip this data"
            )

        rows = _heatmap_rows(test_pairs.sources)
        max_len = int(enc[2].tgt_out.shape[1])
        maps = attention_maps(net, tokenizer, [test_pairs.sources[i] for i in rows], [test_pairs.targets[i] for i in rows],
                              max_len, pad_id, bos_id, eos_id)
        plot_attention(maps, out_dir / "attention.png", title=f"{NAME}: attention of each output character (test sentences)")
        records = read_records(out_dir / "metrics.jsonl")
        plot_training_curves(records, out_dir / "training-curves.png", metrics=("exact_match", "token_accuracy"),
                             title=f"{NAME} on {all_pairs.name}: {result.steps} steps")

        metrics = {
            "exact_match": test_greedy["exact_match"],
            "exact_match_beam": test_beam["exact_match"],
            "token_accuracy": test_greedy["token_accuracy"],
            "token_accuracy_beam": test_beam["token_accuracy"],
            "test_loss": test_greedy["loss"],
            "val_exact_match": val_metrics["exact_match"],
            "val_loss": val_metrics["loss"],
            "test_sentences": test_greedy["sequences"],
        }
        artifacts = ["run.json", "config.json", "metrics.jsonl", "metrics.csv", "loss-curve.png", "training-curves.png", "attention.png",
                     "tokenizer.json", "test-predictions.tsv", "checkpoints", "results.json"]
        doc = {
            "example": NAME,
            "metrics": metrics,
            "test": {"greedy": test_greedy, "beam": {**test_beam, "beam_size": beam_size, "length_penalty": length_penalty}},
            "val": val_metrics,
            "checkpoint": str(best.relative_to(out_dir)) if best.is_relative_to(out_dir) else str(best),
            "data": run_info["data"],
            "model": mcfg.to_dict(),
            "steps": result.steps,
            "train_seconds": result.seconds,
            "seconds": time.perf_counter() - t0,
            "attention_sentences": [m.title for m in maps],
            "samples": [{"source": s, "target": t, "greedy": g, "beam": b}
                        for s, t, g, b in list(zip(test_pairs.sources, test_pairs.targets, greedy_out, beam_out))[:10]],
            "artifacts": artifacts,
        }
        atomic_write_text(out_dir / "results.json", json.dumps(doc, indent=2, ensure_ascii=False) + "\n")
    details = {k: v for k, v in doc.items() if k not in ("metrics", "artifacts")}
    return {"metrics": metrics, "artifacts": artifacts, "details": details}
