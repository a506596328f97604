"""``layerwise inspect RUN_OR_MODEL``: look inside a network on a batch of real data.

What is inspected: a run directory (or one of its checkpoints), rebuilt with its weights; or a
model preset / config file at its initial weights (seeded), shaped to the data as ``layerwise
train`` shapes it (classes, image size, vocabulary). What it is inspected on: ``--data`` (a
dataset name or file; a run's own data by default, the test part of its recorded split) or
``--inputs`` (texts for token models, comma-separated numbers for tabular ones).

The sections (``--sections``, all that apply by default):

- ``health``: every weight layer in forward order (:mod:`layerwise.train.layerstats`) — weight
  norm and std, activation mean/std and dead or saturated fraction, gradient norm of the
  loss on the batch, update/weight ratio with ``--lr``; histograms; one-line diagnoses;
- ``attributions`` (Captum): Integrated Gradients for tabular and text classifiers (text
  through the token embedding, rendered as highlighted tokens) with the completeness check;
  permutation feature importance for tabular classifiers; Grad-CAM for CNNs;
- ``attention``: attention probabilities per layer and head on the user's text (GPT, BERT);
- ``weights``: the first convolution's filters; the token embedding on two principal axes.

It writes a run directory (``run.json``, ``results.json``, PNGs, ``report.html``).
"""

from __future__ import annotations

import json
import math
import re
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from layerwise.errors import ConfigError, LayerwiseError
from layerwise.models.base import ModelConfig

SECTIONS = ("health", "attributions", "attention", "weights")
DATA_HINT = "pass --data D (a dataset name or file) or --inputs TEXT ... (texts, or comma-separated numbers)"


# ---------------------------------------------------------------- what is inspected


def load_run_model(path: str | Path) -> tuple[nn.Module, dict, Path | None, Any]:
    """(model with its weights, what the run recorded — task, data, train config —, checkpoint
    directory, tokenizer or None) of a run directory, checkpoint or export directory.

    The one place inspect loads runs: :func:`layerwise.jobs.runs.load_run` rebuilds any run
    (train, pretrain, finetune, export)."""
    from layerwise.jobs.runs import load_run
    from layerwise.train.checkpoint import read_state_json

    run = load_run(path)
    state = read_state_json(run.checkpoint) if run.checkpoint is not None else {}
    state = {**state, "task": run.task, "run_info": {**(state.get("run_info") or {}), "data": run.data}}
    return run.model, state, run.checkpoint, run.tokenizer


@dataclass
class Subject:
    model: nn.Module
    source: str
    trained: bool
    state: dict = field(default_factory=dict)  # a run's checkpoint state (run_info, task, train_config)
    ckpt_dir: Path | None = None
    tokenizer: Any = None
    notes: list[str] = field(default_factory=list)

    @property
    def task_info(self) -> dict:
        return self.state.get("task") or {}

    @property
    def data_info(self) -> dict:
        return (self.state.get("run_info") or {}).get("data") or {}


@dataclass
class Batch:
    """The data inspected: ``kind`` tabular | image | text | lm."""

    kind: str
    x: torch.Tensor  # features (B, F), images (B, C, H, W) or token ids (B, T)
    labels: torch.Tensor | None = None
    mask: torch.Tensor | None = None  # (B, T) for text
    texts: list[str] = field(default_factory=list)
    label_names: list[str] | None = None
    source: str = ""
    targets: torch.Tensor | None = None  # next tokens (lm)
    frequency_ids: list[int] = field(default_factory=list)  # token ids of more of the data (embedding labels)
    image_shape: tuple | None = None  # (C, H, W) of flattened images read by an MLP


def _is_path(source: str) -> bool:
    return Path(source).exists()


def _input_kind(model: nn.Module) -> str:
    """token | image | tabular, from the model's first weight layer in module order."""
    for m in model.modules():
        if isinstance(m, (nn.Embedding, nn.EmbeddingBag)):
            return "token"
        if isinstance(m, nn.modules.conv._ConvNd):
            return "image"
        if isinstance(m, nn.Linear):
            return "tabular"
    return "tabular"


def _preset_config(source: str, ds, tokenizer) -> ModelConfig:
    """The preset or config file shaped to the data, as ``layerwise train`` shapes it."""
    from layerwise.data import ImageClassification, TextClassification
    from layerwise.jobs.training import _replace, _with_classes, _with_images
    from layerwise.models.registry import get_config

    cfg = get_config(source)
    if isinstance(ds, (ImageClassification, TextClassification)):
        cfg = _with_classes(cfg, ds.num_classes)
        if getattr(cfg, "head", None) == "lm":  # a GPT reading labelled texts: its classification head
            cfg = _replace(cfg, head="classification")
    if isinstance(ds, ImageClassification):
        cfg = _with_images(cfg, ds.image_shape)
    if tokenizer is not None and hasattr(cfg, "vocab_size") and cfg.vocab_size != tokenizer.vocab_size:
        cfg = _replace(cfg, vocab_size=tokenizer.vocab_size)
    return cfg


def _default_tokenizer(cfg: ModelConfig, spec: str | None, texts: list[str]):
    from layerwise.jobs.training import make_tokenizer

    if spec:
        return make_tokenizer(spec, texts), spec
    vocab = getattr(cfg, "vocab_size", None)
    if vocab == 50257:
        return make_tokenizer("gpt2", texts), "gpt2"
    if vocab == 30522:  # BERT's uncased WordPiece vocabulary, as all-MiniLM-L6-v2 ships it
        from layerwise.data.tokenizers import load_tokenizer
        from layerwise.pretrained import minilm_l6_files

        return load_tokenizer(minilm_l6_files()["tokenizer"]), "bert-uncased (all-MiniLM-L6-v2's tokenizer.json)"
    return make_tokenizer("char", texts), "char"


# ---------------------------------------------------------------- data


def _parse_numbers(inputs: list[str], width: int) -> torch.Tensor:
    rows = []
    for i, text in enumerate(inputs):
        try:
            row = [float(v) for v in re.split(r"[,\s]+", text.strip()) if v]
        except ValueError:
            raise ConfigError(f"--inputs: input {i + 1} ({text[:40]!r}) is not comma-separated numbers; "
                              f"this model takes {width} features") from None
        if len(row) != width:
            raise ConfigError(f"--inputs: input {i + 1} has {len(row)} numbers; this model takes {width} features")
        rows.append(row)
    return torch.tensor(rows, dtype=torch.float32)


def _encode_texts(tok, texts: list[str], max_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    from layerwise.data import TextClassification, encode_classification

    ds = TextClassification("inputs", list(texts), [0] * len(texts), ["?"])
    enc = encode_classification(ds, tok, max_len)
    return enc.ids, enc.attention_mask


def _lm_windows(tok, text: str, batch: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    ids = tok.encode(text[: max(4000, batch * width * 8)])
    if len(ids) < 2:
        raise ConfigError("the text encodes to fewer than 2 tokens; give a longer text")
    width = min(width, len(ids) - 1)
    n = max(1, min(batch, (len(ids) - 1) // width))
    t = torch.tensor(ids[: n * width + 1], dtype=torch.long)
    x = torch.stack([t[i * width:(i + 1) * width] for i in range(n)])
    y = torch.stack([t[i * width + 1:(i + 1) * width + 1] for i in range(n)])
    return x, y


def prepare(source: str, data: str | None, inputs: list[str] | None, batch_size: int, seed: int,
            tokenizer: str | None, max_len: int) -> tuple[Subject, Batch]:
    """The model and the batch it is inspected on (see the module docstring)."""
    from layerwise.data import ImageClassification, TextClassification, TextCorpus, load_dataset, split
    from layerwise.models.registry import build, get_config

    inputs = list(inputs or [])
    run = _is_path(source) and Path(source).is_dir()
    state: dict = {}
    if run:
        model, state, ckpt_dir, run_tok = load_run_model(source)
        subject = Subject(model, str(source), True, state, ckpt_dir, run_tok)
        data = data or (subject.data_info.get("name") if not inputs else None)
    else:
        get_config(source)  # an unknown name or a bad file fails here, before any data loads
        subject = None
    if not data and not inputs:
        raise ConfigError(f"inspect {source}: nothing to inspect it on; {DATA_HINT}")
    ds = load_dataset(data) if data else None
    texts_for_tok: list[str] = inputs
    if isinstance(ds, TextClassification):
        texts_for_tok = list(ds.texts)
    elif isinstance(ds, TextCorpus):
        texts_for_tok = [ds.text[:200_000]]
    if subject is None:  # a preset or config: build it for the data
        torch.manual_seed(seed)
        cfg0 = get_config(source)
        tok = None
        kind0 = _input_kind(build(cfg0, device="meta"))
        if kind0 == "token":
            tok, spec = _default_tokenizer(cfg0, tokenizer, texts_for_tok)
        cfg = _preset_config(source, ds, tok)
        subject = Subject(build(cfg, device="cpu"), source, False)
        subject.tokenizer = tok
        subject.notes.append(f"{source} at its initial weights (seed {seed}): not trained")
        if tok is not None:
            subject.notes.append(f"tokenizer: {spec} ({tok.vocab_size:,} tokens)")
    elif _input_kind(subject.model) == "token" and subject.tokenizer is None:
        raise LayerwiseError(f"{source}: the run reads tokens but holds no tokenizer.json")
    model = subject.model.eval()
    kind = _input_kind(model)
    tok = subject.tokenizer
    lm = hasattr(model, "make_cache") and getattr(getattr(model, "config", None), "head", "lm") == "lm"
    dinfo = subject.data_info
    same = bool(data) and data == dinfo.get("name")

    def test_part(d):
        """The test part of the split (the run's recorded one for its own data), ``batch_size``
        examples of it drawn at random (seeded): datasets are often sorted by class."""
        part = split(d, val=dinfo.get("val", 0.1) if same else 0.1, test=dinfo.get("test", 0.1) if same else 0.1,
                     seed=dinfo.get("split_seed", seed) if same else seed).test
        pick = torch.randperm(len(part.labels), generator=torch.Generator().manual_seed(seed))[:batch_size]
        return part.subset(pick.tolist(), part.name)

    if inputs:
        if kind == "image":
            raise ConfigError(f"--inputs: {source} takes images; give them with --data (a dataset name, .npy or IDX file)")
        if kind == "tabular":
            width = next(m for m in model.modules() if isinstance(m, nn.Linear)).in_features
            return subject, Batch("tabular", _parse_numbers(inputs, width), source="--inputs")
        if lm:
            x, y = _lm_windows(tok, "\n".join(inputs), batch_size, min(model.config.block_size, max_len))
            return subject, Batch("lm", x, targets=y, texts=inputs, source="--inputs", frequency_ids=x.flatten().tolist())
        ids, mask = _encode_texts(tok, inputs, max_len)
        return subject, Batch("text", ids, mask=mask, texts=inputs, source="--inputs",
                              label_names=subject.task_info.get("label_names"), frequency_ids=ids[mask.bool()].tolist())
    name = str(data) + (":test" if same else "")
    if isinstance(ds, ImageClassification):
        if kind == "token":
            raise ConfigError(f"--data {data} holds images; {source} reads token ids (give texts with --data or --inputs)")
        part = test_part(ds)
        x, y = part.images, part.labels
        if kind == "tabular":
            return subject, Batch("tabular", x.flatten(1), y, label_names=ds.label_names, source=name,
                                  image_shape=tuple(x.shape[1:]))
        return subject, Batch("image", x, y, label_names=ds.label_names, source=name)
    if isinstance(ds, TextClassification):
        if kind != "token":
            raise ConfigError(f"--data {data} holds texts; {source} does not read tokens (it starts with a "
                              f"{'convolution' if kind == 'image' else 'Linear layer'})")
        part = test_part(ds)
        texts = list(part.texts)
        ids, mask = _encode_texts(tok, texts, dinfo.get("max_len", max_len) if same else max_len)
        more = [i for row in tok.encode_batch(list(ds.texts[:2000])) for i in row]
        return subject, Batch("text", ids, torch.tensor(part.labels, dtype=torch.long), mask, texts,
                              ds.label_names, name, frequency_ids=more)
    if isinstance(ds, TextCorpus):
        if not lm:
            raise ConfigError(f"--data {data} is a text corpus (no labels); {source} is not a language model: "
                              "give labelled data with --data or texts with --inputs")
        from layerwise.data import split as split_data

        part = split_data(ds, val=dinfo.get("val", 0.1) if same else 0.1, test=0.0).val
        x, y = _lm_windows(tok, part.text, batch_size, min(model.config.block_size, max_len))
        return subject, Batch("lm", x, targets=y, texts=[tok.decode(x[0].tolist())], source=f"{data}:val",
                              frequency_ids=x.flatten().tolist())
    raise LayerwiseError(f"--data {data}: a {type(ds).__name__} is not something inspect can read")


# ---------------------------------------------------------------- how the model is called


def _is_classifier(model: nn.Module) -> bool:
    """Whether the model ends in class scores: by its config's ``head`` field where it has one
    (BERT, GPT), else every family without a language-model cache (MLP, CNN, RNN)."""
    head = getattr(getattr(model, "config", None), "head", None)
    if head is None:
        return not hasattr(model, "make_cache")
    return head in ("sequence_classification", "classification")


def _task(subject: Subject, batch: Batch):
    """The training task that turns the batch into the model's inputs and a loss; None for a
    model that is neither a classifier nor a language model (a bare encoder)."""
    from layerwise.train.tasks import ClassificationTask, LanguageModelTask

    if batch.kind == "lm":
        return LanguageModelTask(int(subject.model.config.block_size))
    if not _is_classifier(subject.model):
        return None
    info = subject.task_info
    k = info.get("num_classes") or (len(batch.label_names) if batch.label_names else None)
    if k is None:
        with torch.no_grad():
            out = _call(subject.model, None, batch.x[:1], batch.mask[:1] if batch.mask is not None else None)
        k = max(2, out.shape[-1])
    shape = info.get("input_shape") or (batch.x.shape[1:] if batch.kind == "tabular" else None)
    task = ClassificationTask(int(k), info.get("label_names") or batch.label_names, input_shape=shape)
    task.bind(subject.model)
    return task


def _call(model: nn.Module, task, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """The model's scores for x (and its mask), through the task's way of calling it."""
    if task is None:
        out = model(x) if mask is None else model(x, attention_mask=mask)
    else:
        batch = (x, mask, torch.zeros(x.shape[0], dtype=torch.long)) if mask is not None else \
            (x, torch.zeros(x.shape[0], dtype=torch.long))
        args, kw = task.model_inputs(batch)
        out = model(*args, **kw)
    out = getattr(out, "logits", out)
    if isinstance(out, tuple):  # a bare encoder: (hidden, pooled)
        out = out[1] if len(out) > 1 and out[1] is not None else out[0].mean(dim=1)
    return out


def _loss_fn(subject: Subject, batch: Batch, task) -> tuple[Callable[[nn.Module], torch.Tensor], str]:
    if batch.kind == "lm":
        return (lambda m: task.loss(m, (batch.x, batch.targets))[0]), "next-token cross-entropy on the batch"
    if task is None:  # activations and weights only
        return (lambda m: _call(m, None, batch.x, batch.mask).sum().detach() * 0.0), \
            "none (the model has no classification or language-model head): no gradients"
    labels = batch.labels
    how = "cross-entropy against the labels"
    if labels is None:
        with torch.no_grad():
            out = _call(subject.model, task, batch.x, batch.mask)
        labels = (out[:, 0] > 0).long() if out.shape[1] == 1 else out.argmax(dim=1)
        how = "cross-entropy against the model's own predictions (the inputs have no labels)"
    full = (batch.x, batch.mask, labels) if batch.mask is not None else (batch.x, labels)
    return (lambda m: task.loss(m, full)[0]), how


# ---------------------------------------------------------------- the sections


def _health(subject, batch, task, lr, optimizer) -> dict:
    from layerwise.train.layerstats import THRESHOLDS, diagnose, layer_health

    loss_fn, how = _loss_fn(subject, batch, task)
    rows = layer_health(subject.model, loss_fn, lr=lr, optimizer=optimizer)
    found = diagnose(rows)
    return {"loss": how, "lr": lr, "optimizer": optimizer if lr is not None else None,
            "thresholds": THRESHOLDS, "layers": [r.to_dict() for r in rows],
            "diagnosis": [{"code": d.code, "layers": d.layers, "line": d.line} for d in found]}


def _token_text(tok, i: int) -> str:
    """One token as text (for labels)."""
    try:
        return tok.decode([int(i)])
    except Exception:  # noqa: BLE001 - a piece the tokenizer cannot decode alone
        return tok.id_to_token(int(i)) or "?"


def token_pieces(tok, ids: list[int]) -> list[str]:
    """Each token's share of the decoded text, spaces included, so that the pieces joined read
    as the text: what ``decode(ids[:i+1])`` adds to ``decode(ids[:i])`` (WordPiece joins "##"
    pieces and spaces words; byte-level BPE carries its spaces), else the token alone."""
    pieces, before = [], ""
    for i in range(len(ids)):
        now = tok.decode(ids[: i + 1])
        pieces.append(now[len(before):] if now.startswith(before) else _token_text(tok, ids[i]))
        before = now
    return pieces


def _special_ids(tok) -> set[int]:
    try:
        return set(tok.special_tokens.values())
    except Exception:  # noqa: BLE001
        return set()


def _attributions(subject, batch, task, quick: bool, seed: int) -> dict:
    from layerwise.inspect import attributions as A
    from layerwise.inspect.weights import token_embedding

    A.require_captum()
    model = subject.model
    names = task.label_names or [str(i) for i in range(task.num_classes)]
    steps = 16 if quick else 64

    def fwd(x, *extra):
        """Class scores; a one-logit binary classifier's logit z becomes (−z, z), the log-odds of
        each class, so that the predicted class's score is attributed whichever class it is."""
        out = _call(model, task, x, extra[0] if extra else None)
        return torch.cat([-out, out], dim=1) if out.shape[1] == 1 else out

    def raw(x, *extra):
        return _call(model, task, x, extra[0] if extra else None)

    def label(j: int, out_row: torch.Tensor) -> str:
        if out_row.shape[-1] == 1:
            p = float(torch.sigmoid(out_row[0]))
            return f"{names[1] if p >= 0.5 else names[0]} (p {max(p, 1 - p):.2f})"
        pr = torch.softmax(out_row, dim=-1)
        return f"{names[int(pr.argmax())]} (p {float(pr.max()):.2f})"

    out: dict[str, Any] = {}
    if batch.kind == "tabular":
        n = min(len(batch.x), 8 if quick else 32)
        x = batch.x[:n]
        ig = A.integrated_gradients(fwd, x, n_steps=steps, max_steps=256 if quick else 4096)
        feats = [f"x{j + 1}" for j in range(x.shape[1])]
        out["integrated_gradients"] = {
            "baseline": "all-zero features", "n_steps": steps, "examples": n, "features": feats,
            "mean_abs_attribution": ig.attributions.abs().mean(dim=0).tolist(),
            "attributions": ig.attributions.tolist(), "targets": ig.target,
            "f_x": ig.f_x.tolist(), "f_baseline": ig.f_baseline.tolist(),
            "convergence_delta": ig.delta.tolist(), "n_steps_used": ig.n_steps,
            "completeness_checked": ig.checked.tolist(),
            "completeness_error_max": ig.worst_completeness_error,
        }
        if batch.image_shape is not None:  # pixels: a picture of the attributions, not 784 bars
            shape = batch.image_shape
            out["integrated_gradients"]["image_shape"] = list(shape)
            out["_images"] = x[:16].reshape(-1, *shape)[:, 0].numpy()
            out["_maps"] = {"|IG|": ig.attributions.abs()[:16].reshape(-1, *shape)[:, 0].numpy()}
            out["_captions"] = [names[t] if t < len(names) else str(t) for t in ig.target[:16]]
            del out["integrated_gradients"]["attributions"]
        elif batch.labels is not None:
            y = batch.labels

            def accuracy(xp):
                return (task.loss(model, (xp, y))[1] == y).float().mean()

            mean, std = A.permutation_importance(accuracy, batch.x, n_repeats=5 if quick else 20, seed=seed)
            out["permutation_importance"] = {"metric": "accuracy", "baseline_metric": float(accuracy(batch.x)),
                                             "examples": len(batch.x), "repeats": 5 if quick else 20,
                                             "features": feats, "mean": mean.tolist(), "std": std.tolist()}
    elif batch.kind == "text":
        emb = token_embedding(model)
        tok = subject.tokenizer
        pad = _pad_id(tok)
        special = _special_ids(tok)
        rows = []
        n = min(len(batch.x), 4 if quick else 8)
        with torch.no_grad():
            pred = fwd(batch.x, batch.mask).argmax(dim=1)  # (B,)
        by_class = [[i for i in range(len(pred)) if int(pred[i]) == c] for c in sorted(set(pred.tolist()))]
        order = [i for group in zip(*by_class) for i in group] if len(by_class) > 1 else by_class[0]
        order += [i for i in range(len(pred)) if i not in order]  # every predicted class shown, in turn
        for i in sorted(order[:n]):
            length = int(batch.mask[i].sum())
            ids = batch.x[i:i + 1, :length]
            mask = torch.ones_like(ids)
            base = torch.where(torch.isin(ids, torch.tensor(sorted(special) or [-1])), ids, torch.full_like(ids, pad))
            ig = A.token_attributions(fwd, ids, emb[1], base, n_steps=steps, additional_args=(mask,),
                                      internal_batch_size=32, max_steps=256 if quick else 4096)
            with torch.no_grad():
                o = raw(ids, mask)[0]
            rows.append({
                "text": batch.texts[i], "label": names[int(batch.labels[i])] if batch.labels is not None else None,
                "predicted": label(i, o), "target": ig.target[0],
                "tokens": [[t, float(a)] for t, a in zip(token_pieces(tok, ids[0].tolist()), ig.attributions[0].tolist())],
                "f_x": float(ig.f_x[0]), "f_baseline": float(ig.f_baseline[0]), "sum": float(ig.sums[0]),
                "convergence_delta": float(ig.delta[0]), "n_steps_used": ig.n_steps,
                "completeness_error": float(ig.completeness_error[0]),
            })
        out["token_importance"] = {"method": f"Integrated Gradients through {emb[0]} (Captum LayerIntegratedGradients)",
                                   "baseline": "every non-special token replaced by the padding token",
                                   "n_steps": steps, "texts": rows,
                                   "completeness_error_max": max((r["completeness_error"] for r in rows), default=None)}
    elif batch.kind == "image":
        convs = [(n_, m) for n_, m in model.named_modules() if isinstance(m, nn.Conv2d)]
        if not convs:
            return {"note": "no 2-D convolution: Grad-CAM needs one"}
        x = batch.x[: min(len(batch.x), 100)]
        with torch.no_grad():
            scores = fwd(x)
        maps, summary = {}, {}
        for name, layer in (convs[0], convs[-1]) if len(convs) > 1 else (convs[0],):
            cam, tgt = A.grad_cam(fwd, x, layer)
            inside = A.mass_inside(cam, x)
            maps[name] = cam
            summary[name] = {"mass_on_strokes_mean": float(inside.nanmean()), "examples": len(x),
                             "feature_map": list(_feature_shape(model, layer, x[:1]))}
        out["grad_cam"] = {"layers": summary, "default_layer": convs[0][0],
                           "stroke_pixel_share": float((x > 0).float().mean()),
                           "targets": scores.argmax(dim=1).tolist()[:16],
                           "labels": batch.labels[: len(x)].tolist()[:16] if batch.labels is not None else None}
        out["_maps"] = {k: v[:16].numpy() for k, v in maps.items()}
        out["_images"] = x[:16, 0].numpy()
        out["_captions"] = [f"{names[int(t)]}" + (f" ({names[int(batch.labels[j])]})" if batch.labels is not None and
                            int(batch.labels[j]) != int(t) else "") for j, t in enumerate(scores.argmax(dim=1)[:16])]
    return out


def _feature_shape(model, layer, x) -> tuple:
    shape = []
    h = layer.register_forward_hook(lambda m, a, o: shape.extend(o.shape[-2:]))
    try:
        with torch.no_grad():
            model(x)
    finally:
        h.remove()
    return tuple(int(s) for s in shape[:2])


def _label(text: str) -> str:
    """A token as a plot label: whitespace and control characters written out."""
    return text if text.isprintable() and text.strip() else repr(text)


def _pad_id(tok) -> int:
    from layerwise.data.classification import pad_token_id

    return pad_token_id(tok)


def _attention(subject, batch, inputs_given: bool) -> tuple[dict, dict[str, torch.Tensor]]:
    from layerwise.models.ops import record_attention

    model = subject.model
    tok = subject.tokenizer
    if batch.kind not in ("text", "lm"):
        from layerwise.models.ops import NO_ATTENTION

        raise ConfigError(NO_ATTENTION)
    if batch.kind == "text":
        length = int(batch.mask[0].sum())
        ids = batch.x[:1, :length]
        extra = {"attention_mask": torch.ones_like(ids)} if "attention_mask" in _params(model) else {}
    elif inputs_given:  # the user's first text, whole (up to the context length)
        ids = torch.tensor([tok.encode(batch.texts[0])[: model.config.block_size]], dtype=torch.long)
        extra = {}
    else:
        ids = batch.x[:1, : min(batch.x.shape[1], 48)]
        extra = {}
    with torch.no_grad(), record_attention(model) as maps:
        model(ids, **extra)
    tokens = [_label(t.strip() or t) for t in token_pieces(tok, ids[0].tolist())]
    layers = []
    tensors = {}
    for name, calls in maps.items():
        p = calls[0][0]  # (h, T, S) of the one text
        tensors[name] = p.contiguous()
        ent = -(p.clamp_min(1e-12).log() * p).sum(-1).mean(-1)  # (h,) mean entropy of each head's rows
        layers.append({"name": name, "heads": int(p.shape[0]), "shape": list(p.shape),
                       "row_sums_max_error": float((p.sum(-1) - 1).abs().max()),
                       "mean_entropy": ent.tolist(),
                       "most_attended": [tokens[int(j)] for j in p.mean(1).argmax(-1).tolist()]})
    return {"text": tok.decode(ids[0].tolist()), "tokens": tokens, "from": "--inputs" if inputs_given else batch.source,
            "layers": layers, "file": "attention.safetensors"}, tensors


def _params(model) -> set[str]:
    import inspect as _inspect

    return set(_inspect.signature(model.forward).parameters)


def _weights(subject, batch) -> dict:
    from layerwise.inspect.weights import conv_filters, first_conv, pca_2d, token_embedding

    out: dict[str, Any] = {}
    conv = first_conv(subject.model)
    if conv is not None:
        f = conv_filters(conv[1])
        out["filters"] = {"layer": conv[0], "shape": list(conv[1].weight.shape),
                          "averaged_over_input_channels": conv[1].in_channels > 1, "_array": f.numpy()}
    emb = token_embedding(subject.model)
    if emb is not None and subject.tokenizer is not None:
        proj = pca_2d(emb[1].weight)
        counts = Counter(batch.frequency_ids)
        special = _special_ids(subject.tokenizer) | {_pad_id(subject.tokenizer)}
        top = [i for i, _ in counts.most_common() if i not in special][:30]
        out["embedding"] = {"layer": emb[0], "shape": list(emb[1].weight.shape),
                            "explained_variance_ratio": proj.explained_variance_ratio,
                            "labelled": [{"id": i, "token": _label(_token_text(subject.tokenizer, i)), "count": counts[i],
                                          "pc": proj.coords[i].tolist()} for i in top],
                            "_coords": proj.coords.numpy()}
    return out


# ---------------------------------------------------------------- the job


def _slug(source: str) -> str:
    name = Path(source.rstrip("/")).name if _is_path(source) else source
    name = re.sub(r"\.(json|toml)$", "", name)
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-") or "model"


def default_out_dir(source: str) -> str:
    return f"runs/inspect-{_slug(source)}"


def _applicable(subject, batch, classifier: bool) -> dict[str, str | None]:
    """Section → None when it applies, else why not."""
    from layerwise.inspect.weights import first_conv, token_embedding
    from layerwise.models.ops import NO_ATTENTION, attention_modules

    why: dict[str, str | None] = {"health": None}
    if batch.kind == "lm":
        why["attributions"] = "attributions are for classifiers (this is a language model)"
    elif not classifier:
        why["attributions"] = "attributions are for classifiers (this model has no classification head)"
    else:
        why["attributions"] = None
    if not attention_modules(subject.model):
        why["attention"] = NO_ATTENTION
    elif batch.kind not in ("text", "lm"):
        why["attention"] = "attention maps need text (--inputs TEXT or text --data)"
    else:
        why["attention"] = None
    has_w = first_conv(subject.model) is not None or (token_embedding(subject.model) is not None and subject.tokenizer)
    why["weights"] = None if has_w else "no convolution and no token embedding to picture"
    return why


def inspect_model(
    source: str,
    data: str | None = None,
    inputs: list[str] | None = None,
    out_dir: str | Path | None = None,
    sections: list[str] | None = None,
    lr: float | None = None,
    optimizer: str | None = None,
    batch_size: int = 64,
    max_len: int = 64,
    tokenizer: str | None = None,
    quick: bool = False,
    seed: int = 0,
    overwrite: bool = False,
    progress: Callable[[str], None] = lambda stage: None,
    argv: list[str] | None = None,
) -> dict:
    """Inspect ``source`` (see the module docstring); returns the results document (also
    ``out_dir/results.json``) and writes ``report.html`` there.

    sections: a subset of :data:`SECTIONS` (default: every one that applies; one asked for that
    does not apply is an error). lr / optimizer: the update/weight ratio of one step
    (optimizer default: the run's, else sgd). quick: a small batch and few integration steps.
    """
    from layerwise.rundir import check_run, open_run
    from layerwise.train.optim import OPTIMIZER_NAMES

    asked = list(sections) if sections else None
    for s in asked or []:
        if s not in SECTIONS:
            raise ConfigError(f"--sections: unknown section {s!r}; expected some of {', '.join(SECTIONS)}")
    if lr is not None and not (isinstance(lr, (int, float)) and lr > 0 and math.isfinite(lr)):
        raise ConfigError(f"--lr: expected a number > 0, got {lr!r}")
    if optimizer is not None and optimizer not in OPTIMIZER_NAMES:
        raise ConfigError(f"--optimizer: expected one of {', '.join(OPTIMIZER_NAMES)}, got {optimizer!r}")
    out_dir = Path(out_dir or default_out_dir(source))
    check_run(out_dir, "inspect", overwrite=overwrite)
    if asked and "attention" in asked and not _is_path(source):  # refused before any data loads
        from layerwise.models.ops import NO_ATTENTION, attention_modules
        from layerwise.models.registry import build

        if not attention_modules(build(source, device="meta")):
            raise ConfigError(f"--sections attention: {NO_ATTENTION}")
    if quick:
        batch_size = min(batch_size, 16)
    t0 = time.perf_counter()
    progress("loading the model and the data")
    subject, batch = prepare(source, data, inputs, batch_size, seed, tokenizer, max_len)
    task = _task(subject, batch)
    classifier = task is not None and batch.kind != "lm"
    why = _applicable(subject, batch, classifier)
    if asked:
        for s in asked:
            if why[s] is not None:
                raise ConfigError(f"--sections {s}: {why[s]}")
        todo = asked
    else:
        todo = [s for s in SECTIONS if why[s] is None]
        if "attributions" in todo:
            from layerwise.inspect.attributions import require_captum

            require_captum()
    if optimizer is None:
        optimizer = (subject.state.get("train_config") or {}).get("optimizer") or "sgd"
    info = {"source": str(source), "trained": subject.trained, "data": batch.source, "sections": todo,
            "model": getattr(getattr(subject.model, "config", None), "to_dict", lambda: None)()}
    doc: dict[str, Any] = {"source": str(source), "trained": subject.trained,
                           "model": {"class": type(subject.model).__name__, "config": info["model"],
                                     "params": sum(p.numel() for p in {id(p): p for p in subject.model.parameters()}.values())},
                           "data": {"source": batch.source, "kind": batch.kind, "examples": int(batch.x.shape[0])},
                           "notes": list(subject.notes),
                           "skipped": {s: why[s] for s in SECTIONS if s not in todo}}
    if subject.ckpt_dir is not None:
        doc["checkpoint"] = str(subject.ckpt_dir)
    extra: dict[str, Any] = {}
    tensors: dict[str, torch.Tensor] = {}
    if "health" in todo:
        progress("per-layer health (forward and backward)")
        doc["health"] = _health(subject, batch, task, lr, optimizer)
    if "attributions" in todo:
        progress("attributions (Captum)")
        a = _attributions(subject, batch, task, quick, seed)
        extra["attributions"] = {k: a.pop(k) for k in list(a) if k.startswith("_")}
        doc["attributions"] = a
    if "attention" in todo:
        progress("attention maps")
        doc["attention"], tensors = _attention(subject, batch, bool(inputs))
    if "weights" in todo:
        progress("weights")
        w = _weights(subject, batch)
        extra["weights"] = {k: {kk: w[k].pop(kk) for kk in list(w[k]) if kk.startswith("_")} for k in w}
        doc["weights"] = w
    progress("writing the report")
    with open_run(out_dir, "inspect", overwrite=overwrite, argv=argv, info=info) as run:
        for note in run.notes:
            doc["notes"].append(note)
        doc["seconds"] = time.perf_counter() - t0
        _write(out_dir, doc, extra, tensors, subject, batch)
    return doc


def _write(out_dir: Path, doc: dict, extra: dict, tensors: dict, subject: Subject, batch: Batch) -> None:
    from layerwise.io import atomic_write_text
    from layerwise.report.html import report_for_run_dir, write_manifest

    if tensors:
        from safetensors.torch import save

        from layerwise.io import atomic_write_bytes

        atomic_write_bytes(out_dir / "attention.safetensors", save(tensors))
    sections = _sections(out_dir, doc, extra)
    atomic_write_text(out_dir / "results.json", json.dumps(doc, indent=2, default=_jsonable) + "\n")
    write_manifest(out_dir, f"inspect {doc['source']}", sections)
    report_for_run_dir(out_dir)


def _jsonable(o):
    if hasattr(o, "tolist"):
        return o.tolist()
    if isinstance(o, float) and not math.isfinite(o):
        return str(o)
    return str(o)


def _fmt(v, spec: str = ".3g") -> str:
    if v is None:
        return "–"
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)
    return format(v, spec)


def health_table_markdown(rows: list[dict]) -> str:
    head = ("| # | layer | kind | weight norm | weight std | activation | act mean | act std | dead | saturated "
            "| grad norm | update/weight |")
    lines = [head, "|" + "---|" * 12]
    for r in rows:
        a = r.get("activation") or {}
        dead = a.get("dead_fraction")
        sat = a.get("saturation_fraction")
        lines.append(
            f"| {r['index']} | `{r['name']}`{' (shared with `' + r['shared_with'] + '`)' if r.get('shared_with') else ''} "
            f"| {r['kind']} | {_fmt(r['weight_norm'])} | {_fmt(r['weight_std'])} | {a.get('activation', '–')} "
            f"| {_fmt(a.get('mean'))} | {_fmt(a.get('std'))} | {_fmt(dead, '.1%') if dead is not None else '–'} "
            f"| {_fmt(sat, '.1%') if sat is not None else '–'} | {_fmt(r['grad_norm'])} | {_fmt(r['update_ratio'])} |")
    return "\n".join(lines) + "\n"


def _sections(out_dir: Path, doc: dict, extra: dict) -> list:
    import numpy as np

    from layerwise.report import inspect_plots as P
    from layerwise.report.html import Section

    secs = []
    what = "its trained weights" if doc["trained"] else "its initial weights (untrained)"
    overview = [f"**{doc['source']}** ({doc['model']['class']}, {doc['model']['params']:,} parameters) with {what}, "
                f"on {doc['data']['examples']} examples of **{doc['data']['source']}** ({doc['data']['kind']}).", ""]
    overview += [f"- {n}" for n in doc["notes"]]
    overview += [f"- not shown: **{s}**: {why}" for s, why in doc["skipped"].items()]
    secs.append(Section("What was inspected", markdown="\n".join(overview) + "\n",
                        data={k: doc[k] for k in ("source", "trained", "model", "data", "skipped")}))
    h = doc.get("health")
    if h:
        rows = h["layers"]
        diag = h["diagnosis"]
        md = [f"Loss: {h['loss']}. "
              + (f"Update/weight ratio: one {h['optimizer']} step at lr {h['lr']:g}." if h["lr"] else
                 "Pass `--lr` for update/weight ratios."), ""]
        md += ["**Diagnosis**", ""] + ([f"- {d['line']}" for d in diag] or ["- every number is in its usual range"])
        md += ["", health_table_markdown(rows)]
        imgs = [P.plot_layer_health(rows, out_dir / "health-gradients.png", h["thresholds"]["vanishing_grad"],
                                    h["thresholds"]["exploding_grad"]),
                P.plot_histograms(rows, out_dir / "health-activation-histograms.png", "activation"),
                P.plot_histograms(rows, out_dir / "health-weight-histograms.png", "weight")]
        secs.append(Section("Per-layer health", markdown="\n".join(md), images=imgs,
                            data={"diagnosis": diag, "layers": [{k: v for k, v in r.items() if "hist" not in k}
                                                                for r in rows]}))
    a = doc.get("attributions") or {}
    if "integrated_gradients" in a:
        ig = a["integrated_gradients"]
        if ig.get("image_shape"):
            ex = extra["attributions"]
            img = P.plot_gradcam(ex["_images"], ex["_maps"], ex["_captions"], out_dir / "attributions-ig.png",
                                 "Integrated Gradients: |attribution| of each pixel to the predicted class")
        else:
            img = P.plot_feature_bars(ig["features"], ig["mean_abs_attribution"], None, out_dir / "attributions-ig.png",
                                      f"Integrated Gradients: mean |attribution| over {ig['examples']} examples",
                                      "mean |attribution|")
        md = (f"Baseline: {ig['baseline']}; {ig['n_steps_used']} integration steps (doubled from {ig['n_steps']} until "
              "complete within 1%, at most 4096). Completeness: the attributions of each example sum to f(x) − f(baseline) "
              f"within {100 * ig['completeness_error_max']:.3f}% (examples whose difference is under 0.1% of the largest "
              "are not judged) "
              f"(largest Captum convergence delta {max(abs(d) for d in ig['convergence_delta']):.2e}).")
        secs.append(Section("Integrated Gradients", markdown=md, images=[img],
                            data={k: ig[k] for k in ig if k not in ("attributions", "features", "mean_abs_attribution")
                                  or len(ig["features"]) <= 64}))
    if "permutation_importance" in a:
        pi = a["permutation_importance"]
        img = P.plot_feature_bars(pi["features"], pi["mean"], pi["std"], out_dir / "attributions-permutation.png",
                                  f"Permutation importance: drop in {pi['metric']} when a feature is shuffled",
                                  f"{pi['metric']} drop (mean ± std over {pi['repeats']} shuffles)")
        md = (f"{pi['metric'].capitalize()} on the {pi['examples']} examples: {pi['baseline_metric']:.4f}. Each feature's "
              f"column is shuffled across the examples ({pi['repeats']} times; Captum FeaturePermutation) and the drop "
              "is the feature's importance.")
        secs.append(Section("Permutation feature importance", markdown=md, images=[img], data=pi))
    if "token_importance" in a:
        ti = a["token_importance"]
        hl = [{"label": (f"{r['predicted']}" + (f" — label {r['label']}" if r["label"] else "")),
               "tokens": r["tokens"]} for r in ti["texts"]]
        md = (f"{ti['method']}; baseline: {ti['baseline']}; {ti['n_steps']} steps. Red tokens push the predicted class's "
              "score up, blue ones down (hover for the number). Completeness: each text's token attributions sum to "
              f"f(x) − f(baseline) within {100 * (ti['completeness_error_max'] or 0):.3f}%.")
        secs.append(Section("Token importance", markdown=md, highlights=hl,
                            data={"texts": [{k: v for k, v in r.items() if k != "tokens"} for r in ti["texts"]]}))
    if "grad_cam" in a:
        gc = a["grad_cam"]
        ex = extra["attributions"]
        img = P.plot_gradcam(ex["_images"], ex["_maps"], ex["_captions"], out_dir / "attributions-grad-cam.png")
        md = [f"Captum LayerGradCam for the predicted class, upsampled bilinearly to the image. Strokes (pixels > 0) "
              f"cover {100 * gc['stroke_pixel_share']:.1f}% of the pixels.", "",
              "| layer | feature map | share of Grad-CAM mass on the strokes |", "|---|---|---:|"]
        for name, s in gc["layers"].items():
            md.append(f"| `{name}`{' (default)' if name == gc['default_layer'] else ''} | "
                      f"{'×'.join(map(str, s['feature_map']))} | {100 * s['mass_on_strokes_mean']:.1f}% "
                      f"(mean of {s['examples']}) |")
        secs.append(Section("Grad-CAM", markdown="\n".join(md) + "\n", images=[img], data=gc))
    at = doc.get("attention")
    if at:
        import safetensors.torch as st

        maps = st.load_file(str(out_dir / at["file"]))
        imgs = [P.plot_attention(maps[layer["name"]].numpy(), at["tokens"], out_dir / f"attention-{i:02d}.png",
                                 f"attention probabilities, {layer['name']} (rows: queries, columns: keys)")
                for i, layer in enumerate(at["layers"])]
        md = (f"Text ({at['from']}): `{at['text'][:300]}` — {len(at['tokens'])} tokens. Probabilities formed explicitly "
              "in inspection mode (training runs the fused SDPA kernel); each row sums to 1. Full maps: "
              f"`{at['file']}`.")
        secs.append(Section("Attention maps", markdown=md, images=imgs,
                            data={"tokens": at["tokens"], "layers": at["layers"]}))
    w = doc.get("weights") or {}
    if w:
        imgs = []
        md = []
        if "filters" in w:
            f = w["filters"]
            imgs.append(P.plot_filters(extra["weights"]["filters"]["_array"], out_dir / "weights-filters.png",
                                       f"the first convolution's filters ({f['layer']}, {'×'.join(map(str, f['shape']))})"))
            md.append(f"Filters of `{f['layer']}`" + (" (averaged over input channels)" if f["averaged_over_input_channels"]
                                                      else "") + ".")
        if "embedding" in w:
            e = w["embedding"]
            coords = np.asarray(extra["weights"]["embedding"]["_coords"])
            imgs.append(P.plot_embedding(coords, [(t["id"], t["token"]) for t in e["labelled"]],
                                         e["explained_variance_ratio"], out_dir / "weights-embedding-pca.png",
                                         f"{e['layer']}: every token's embedding on its first two principal components"))
            md.append(f"Embedding `{e['layer']}` ({'×'.join(map(str, e['shape']))}) projected by PCA; the "
                      f"{len(e['labelled'])} most frequent tokens of the data are labelled.")
        secs.append(Section("Weights", markdown=" ".join(md), images=imgs, data=w))
    return secs
