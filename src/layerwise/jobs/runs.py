"""Every run directory reloads: :func:`load_run` rebuilds the exact model a run trained (or
an export wrote) from the directory alone, with its tokenizer and labels, and
:meth:`LoadedRun.predict` uses it.

A checkpoint records how to rebuild its model (``run_info["recipe"]``):

- ``{"kind": "config"}``: the model config in the checkpoint, all weights saved (pretrain,
  train, most examples);
- ``{"kind": "finetune", "base": {...}, "num_labels": K, "strategy": "lora:8", "options":
  {...}}``: the base is loaded by name (a built-in pretrained model, a run directory, a
  local Hugging Face directory), checked against its recorded digest, the strategy is
  applied again, and the saved tensors (what the strategy trains, the modules it added and
  the head) are loaded. The frozen-prefix cache does not change what is saved.

Bases (:func:`load_base`): ``minilm-l6`` and ``smollm2-135m`` (shipped in PyPI packages),
a ``layerwise`` run or export directory (a pretrained LM gets a classification head; a
classifier is the starting point itself, LoRA folded in), or a local transformers directory
(``config.json`` + ``model.safetensors``; a pickle is refused), optionally with a PEFT
LoRA adapter folded in.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from layerwise.errors import ConfigError, LoadError
from layerwise.train.checkpoint import PICKLE_SUFFIXES, load_checkpoint, load_model, read_state_json, resolve_checkpoint

PRETRAINED = ("minilm-l6", "smollm2-135m")
EXPORT_FORMAT = "layerwise-export"


# ---------------------------------------------------------------- bases


@dataclass
class Base:
    """A model to fine-tune: ``net`` (with a task head of ``num_labels``), its tokenizer,
    how to load it again (``spec``, recorded in the run), and which tensors are fresh
    (the head, unless the base was already a classifier for these labels)."""

    net: nn.Module
    tokenizer: Any
    spec: dict
    fresh: set[str] = field(default_factory=set)
    digest: str = ""


def gpt_classifier_from_lm(lm: nn.Module, num_labels: int) -> nn.Module:
    """The same GPT with its LM head replaced by a fresh classification head (no bias, as
    transformers' GPT2/LlamaForSequenceClassification)."""
    from layerwise.models import build

    cfg = lm.config.replace(head="classification", num_labels=num_labels, score_bias=False)
    device = next(lm.parameters()).device
    clf = build(cfg, device=device)
    state = {k: v for k, v in lm.state_dict().items() if not k.startswith("lm_head.")}
    missing, unexpected = clf.load_state_dict(state, strict=False)
    if unexpected or set(missing) - {"score.weight"}:
        raise LoadError(f"classifier from LM: unexpected keys {unexpected}, missing {missing}")
    return clf


def _with_labels(model: nn.Module, num_labels: int) -> tuple[nn.Module, bool]:
    """A classifier with ``num_labels`` outputs from ``model``; (model, whether its head is new)."""
    from layerwise.models import build

    cfg = getattr(model, "config", None)
    if cfg is None or not hasattr(cfg, "num_labels"):
        raise LoadError(f"{type(model).__name__}: has no num_labels to set")
    if cfg.num_labels == num_labels:
        return model, False
    from layerwise.finetune.checkpoint import head_names

    if any(type(m).__name__ in ("LoRALinear", "AdaptedLinear") for m in model.modules()):
        raise ConfigError(f"--model: the run's classifier predicts {cfg.num_labels} classes and holds adapters; "
                          f"it cannot be given a head of {num_labels} classes")
    new = build(cfg.replace(num_labels=num_labels), device=next(model.parameters()).device)
    heads = head_names(new)
    state = {k: v for k, v in model.state_dict().items() if k not in heads}
    new.load_state_dict(state, strict=False)
    return new, True


def _hf_dir(path: Path) -> bool:
    """A transformers directory (``save_pretrained``, or ``layerwise export --to hf``)."""
    if not (path / "config.json").is_file() or (path / "state.json").exists() or (path / "checkpoints").exists():
        return False
    try:
        return "model_type" in json.loads((path / "config.json").read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise LoadError(f"{path / 'config.json'}: not JSON") from None


def _read_hf_weights(path: Path) -> dict[str, torch.Tensor]:
    from layerwise.train.checkpoint import read_safetensors

    files = sorted(path.glob("*.safetensors"))
    pickles = sorted(p.name for p in path.iterdir() if p.suffix in PICKLE_SUFFIXES)
    if not files:
        if pickles:
            raise LoadError(f"{path / pickles[0]}: refusing a pickle checkpoint (unpickling can run arbitrary code); "
                            "save the model with safe_serialization=True (model.safetensors)")
        raise LoadError(f"{path}: no model.safetensors (a transformers directory saved with save_pretrained)")
    state: dict[str, torch.Tensor] = {}
    for f in files:
        if f.name.startswith("adapter_"):
            continue
        state.update(read_safetensors(f)[0])
    return state


def _load_hf(path: Path, num_labels: int, device: str) -> tuple[nn.Module, bool]:
    """A local transformers checkpoint as our model with a classification head."""
    hf_config = json.loads((path / "config.json").read_text())
    model_type = hf_config.get("model_type")
    state = _read_hf_weights(path)
    if model_type in ("gpt2", "llama"):
        from layerwise.models.convert import load_hf_gpt

        head = {k: v for k, v in state.items() if k.startswith("score.")}
        body = {k: v for k, v in state.items() if not k.startswith("score.")}
        tied = hf_config.get("tie_word_embeddings", model_type == "gpt2")
        if not tied and "lm_head.weight" not in body:
            # a ForSequenceClassification checkpoint has no LM head; the classifier drops it anyway
            body["lm_head.weight"] = body["model.embed_tokens.weight"]
        net = gpt_classifier_from_lm(load_hf_gpt(hf_config, body, device=device), num_labels)
        if head and tuple(head["score.weight"].shape) == tuple(net.score.weight.shape):
            with torch.no_grad():
                net.score.weight.copy_(head["score.weight"])
            return net, False
        return net, True
    if model_type == "bert":
        from layerwise.models.bert_convert import load_hf_bert

        has_head = any(k.startswith("classifier.") for k in state)
        head_ok = has_head and int(state["classifier.weight"].shape[0]) == num_labels
        net = load_hf_bert(hf_config, state, init_head=not head_ok, device=device, source=str(path),
                           head="sequence_classification", num_labels=num_labels, classifier_pooling="cls")
        return net, not head_ok
    raise LoadError(f"{path / 'config.json'}: model_type {model_type!r} is not supported for fine-tuning; "
                    "expected gpt2, llama or bert")


def _tokenizer_in(path: Path):
    from layerwise.data.tokenizers import load_tokenizer

    f = path / "tokenizer.json"
    if not f.is_file():
        raise LoadError(f"{path}: no tokenizer.json (the base's tokenizer is needed to encode texts)")
    return load_tokenizer(f)


def load_base(spec: str | dict, num_labels: int, device: str = "cpu", adapter: str | None = None) -> Base:
    """The base a fine-tune starts from, with a head of ``num_labels`` (see the module docstring)."""
    from layerwise.data.tokenizers import load_tokenizer
    from layerwise.finetune.checkpoint import base_digest, head_names

    if isinstance(spec, dict):
        record = dict(spec)
        name = record.get("name") or record.get("path")
        adapter = record.get("adapter", adapter)
    else:
        name, record = spec, {}
    fresh_head = True
    if name == "minilm-l6":
        from layerwise.pretrained import load_minilm_l6, minilm_l6_files

        net, _ = load_minilm_l6(head="sequence_classification", num_labels=num_labels, device=device,
                                classifier_pooling="mean")
        tok = load_tokenizer(minilm_l6_files()["tokenizer"])
        record = {"source": "builtin", "name": name}
    elif name == "smollm2-135m":
        from layerwise.pretrained import load_smollm2

        lm, tok = load_smollm2(device=device)
        net = gpt_classifier_from_lm(lm, num_labels)
        record = {"source": "builtin", "name": name}
    else:
        path = Path(str(name))
        if not path.exists():
            raise LoadError(f"--model {name}: not a built-in pretrained model ({', '.join(PRETRAINED)}) "
                            "and no such run or transformers directory")
        path = path.resolve()
        if path.is_dir() and _hf_dir(path):
            net, fresh_head = _load_hf(path, num_labels, device)
            tok = _tokenizer_in(path)
            record = {"source": "hf", "path": str(path)}
        else:
            loaded = load_run(path, device=device)
            if loaded.kind == "language_model":
                if getattr(loaded.model.config, "family", "") != "gpt":
                    raise LoadError(f"{path}: a language model of family {loaded.model.config.family}; expected a GPT")
                net = gpt_classifier_from_lm(loaded.model, num_labels)
            else:
                from layerwise.finetune.lora import merge_lora

                merge_lora(loaded.model)
                net, fresh_head = _with_labels(loaded.model, num_labels)
            tok = loaded.tokenizer
            record = {"source": "run", "path": str(path), "run_id": loaded.manifest.get("run_id")}
    if adapter:
        from layerwise.jobs.export import fold_peft_adapter

        fold_peft_adapter(net, Path(adapter))
        record["adapter"] = str(Path(adapter).resolve())
    fresh = head_names(net) if fresh_head else set()
    if fresh_head:
        from layerwise.finetune.strategies import head_modules

        for _, m in head_modules(net):
            for sub in m.modules():
                if hasattr(sub, "reset_parameters"):
                    sub.reset_parameters()  # from the caller's seed: every strategy starts from the same head
    return Base(net, tok, record, fresh, base_digest(net, exclude=fresh))


# ---------------------------------------------------------------- runs


@dataclass
class Prediction:
    label: str
    index: int
    probability: float
    probabilities: dict[str, float]

    def to_dict(self) -> dict:
        return {"label": self.label, "index": self.index, "probability": self.probability,
                "probabilities": self.probabilities}


@dataclass
class LoadedRun:
    """A run's model rebuilt from its directory (see :func:`load_run`)."""

    path: Path  # the run (or export) directory
    checkpoint: Path | None
    model: nn.Module
    kind: str  # "language_model" | "classification"
    tokenizer: Any | None
    task: dict
    data: dict
    recipe: dict
    manifest: dict

    @property
    def label_names(self) -> list[str]:
        names = self.task.get("label_names")
        k = int(self.task.get("num_classes") or 0)
        return list(names) if names else [str(i) for i in range(k)]

    @torch.no_grad()
    def predict(self, inputs, batch_size: int = 64) -> list[Prediction]:
        """Label and probability of each input: texts (a list of str) for text classifiers,
        a tensor (N, ...) of images or features for the others."""
        if self.kind != "classification":
            raise ConfigError(f"predict: {self.path} holds a {self.kind.replace('_', ' ')}; predict needs a classifier")
        model = self.model.eval()
        device = next(model.parameters()).device
        if isinstance(inputs, str):
            inputs = [inputs]
        batches: list[tuple] = []
        if isinstance(inputs, (list, tuple)) and all(isinstance(t, str) for t in inputs):
            if self.tokenizer is None:
                raise ConfigError(f"predict: {self.path} was trained on {self.data.get('kind', 'non-text')} data; give "
                                  "images or features, not texts")
            if not inputs:
                raise ConfigError("predict: no inputs")
            from layerwise.data import TextClassification, encode_classification

            ds = TextClassification("inputs", list(inputs), [0] * len(inputs), ["?"])
            enc = encode_classification(ds, self.tokenizer, int(self.data.get("max_len", 64)))
            for lo in range(0, len(inputs), batch_size):
                batches.append((enc.ids[lo:lo + batch_size].to(device), enc.attention_mask[lo:lo + batch_size].to(device)))
        else:
            x = torch.as_tensor(inputs, dtype=torch.float32)
            shape = self.task.get("input_shape")
            if shape:
                x = x.reshape(x.shape[0], *shape)
            for lo in range(0, x.shape[0], batch_size):
                batches.append((x[lo:lo + batch_size].to(device),))
        import inspect

        params = inspect.signature(model.forward).parameters
        names = self.label_names
        out: list[Prediction] = []
        for b in batches:
            if len(b) == 2:
                kw = {"attention_mask": b[1]} if "attention_mask" in params else (
                    {"lengths": b[1].sum(dim=1)} if "lengths" in params else {})
                logits = model(b[0], **kw)
            else:
                logits = model(b[0])
            logits = getattr(logits, "logits", logits).float()
            probs = torch.sigmoid(logits[:, 0]).unsqueeze(1) if logits.shape[1] == 1 else torch.softmax(logits, dim=1)
            if logits.shape[1] == 1:
                probs = torch.cat([1 - probs, probs], dim=1)
            for row in probs.cpu():
                i = int(row.argmax())
                out.append(Prediction(names[i], i, float(row[i]), {n: float(p) for n, p in zip(names, row)}))
        return out


def _run_dir_of(ckpt_dir: Path) -> Path:
    return ckpt_dir.parent.parent if ckpt_dir.parent.name == "checkpoints" else ckpt_dir.parent


def _tokenizer_of(*folders: Path):
    from layerwise.data.tokenizers import load_tokenizer

    for folder in folders:
        if (folder / "tokenizer.json").is_file():
            return load_tokenizer(folder / "tokenizer.json")
    return None


def load_run(path: str | Path, device: str = "cpu", prefer: str = "best") -> LoadedRun:
    """Rebuild the model of a run directory (its best checkpoint, else the latest), a
    checkpoint directory, or an export directory (``layerwise export --to merged``)."""
    from layerwise.devices import resolve_device
    from layerwise.rundir import read_manifest

    resolve_device(device)
    path = Path(path)
    if path.is_dir() and (path / "export.json").is_file():
        return _load_export(path, device)
    ckpt_dir = resolve_checkpoint(path, prefer)
    state = read_state_json(ckpt_dir)
    run_dir = _run_dir_of(ckpt_dir)
    info = state.get("run_info") or {}
    recipe = info.get("recipe") or {"kind": "config"}
    task = state.get("task") or {}
    kind = "language_model" if task.get("task") == "language_model" else "classification"
    if recipe.get("kind") == "finetune":
        model = _rebuild_finetune(recipe, ckpt_dir, state, device)
    elif recipe.get("kind") == "config":
        model, _ = load_model(ckpt_dir, device=device)
    else:
        raise LoadError(f"{ckpt_dir / 'state.json'}: unknown model recipe {recipe.get('kind')!r}")
    manifest = {}
    try:
        manifest = read_manifest(run_dir) or {}
    except ConfigError:
        pass
    tokenizer = _tokenizer_of(ckpt_dir, run_dir)
    if tokenizer is None and info.get("tokenizer"):
        raise LoadError(f"{run_dir}: no tokenizer.json in the run directory (the run was trained on texts)")
    return LoadedRun(run_dir, ckpt_dir, model.eval(), kind, tokenizer, task, info.get("data") or {}, recipe, manifest)


def _rebuild_finetune(recipe: dict, ckpt_dir: Path, state: dict, device: str) -> nn.Module:
    from layerwise.finetune.strategies import apply_strategy

    torch.manual_seed(0)  # the fresh head's values are overwritten by the saved ones below
    base = load_base(recipe["base"], int(recipe["num_labels"]), device)
    want = recipe.get("base_digest")
    if want and base.digest != want:
        raise LoadError(f"{ckpt_dir}: the base model {base.spec.get('name') or base.spec.get('path')} differs from the one "
                        f"this run was fine-tuned from (digest {base.digest} vs {want}); the run needs its own base")
    opts = recipe.get("options") or {}
    apply_strategy(base.net, recipe["strategy"], lora_targets=opts.get("lora_targets"), lora_alpha=opts.get("lora_alpha"),
                   lora_dropout=float(opts.get("lora_dropout") or 0.0), new_head=bool(recipe.get("new_head", True)))
    names = state.get("saved_names")
    load_checkpoint(ckpt_dir, {"model": base.net}, names={"model": set(names)} if names else None)
    return base.net


def _load_export(path: Path, device: str) -> LoadedRun:
    from layerwise.models.registry import build, get_config
    from layerwise.train.checkpoint import load_weights

    doc = json.loads((path / "export.json").read_text())
    if doc.get("format") != EXPORT_FORMAT:
        raise LoadError(f"{path / 'export.json'}: not a layerwise export (format {doc.get('format')!r})")
    model = build(get_config(doc["model"]), device="cpu")
    load_weights(model, path / "model.safetensors")
    task = doc.get("task") or {}
    kind = "language_model" if task.get("task") == "language_model" else "classification"
    return LoadedRun(path, None, model.to(device).eval(), kind, _tokenizer_of(path), task, doc.get("data") or {},
                     {"kind": "config"}, doc)
