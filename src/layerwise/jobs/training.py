"""Whole jobs from names: pretrain a language model, train a classifier, evaluate a run,
sample from a checkpoint. The CLI commands are thin wrappers over these.

The model's data-dependent sizes come from the data, through explicit config fields:
``vocab_size`` from the tokenizer; ``num_classes`` (CNN, RNN), ``num_labels`` (BERT) or
the last of ``sizes`` (MLP) from the dataset's classes (a model with a single output stays
a binary sigmoid classifier on two classes); ``in_channels``/``image_size`` (CNN) or the
first of ``sizes`` (MLP) from the images.

Every run directory also holds ``tokenizer.json`` (for text) and ``results.json``
(validation and test metrics of the best checkpoint, for classifiers).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from layerwise.errors import ConfigError, LayerwiseError, LoadError
from layerwise.models.base import ModelConfig
from layerwise.rundir import RunDir, check_run, open_run
from layerwise.train.checkpoint import (
    read_state_json,
    resolve_checkpoint,
)
from layerwise.train.config import TrainConfig
from layerwise.train.tasks import ClassificationTask, LanguageModelTask
from layerwise.train.trainer import Event, Trainer, TrainResult, seed_everything

TOKENIZER_SPECS = "char | bpe:VOCAB | gpt2 | a tokenizer.json path"


def make_tokenizer(spec: str, text: str | list[str]):
    """A tokenizer from its spec: ``char`` (the characters of ``text``), ``bpe:N`` (a byte-level
    BPE with N tokens trained on ``text``), ``gpt2``, or a path to a tokenizer file."""
    from layerwise.data.tokenizers import (
        UNK_TOKEN,
        CharTokenizer,
        gpt2_tokenizer,
        load_tokenizer,
        train_bpe,
    )

    if spec == "char":
        # an unknown-character token, so that a prompt with "é" or a test text with a
        # character the training texts lack still encodes (counted and reported)
        return CharTokenizer.from_text(text if isinstance(text, str) else "".join(text), unk_token=UNK_TOKEN)
    if spec.startswith("bpe:"):
        try:
            n = int(spec[4:])
        except ValueError:
            raise ConfigError(f"tokenizer: expected bpe:VOCAB with an integer VOCAB, got {spec!r}") from None
        return train_bpe(text if isinstance(text, str) else list(text), vocab_size=n)
    if spec == "gpt2":
        return gpt2_tokenizer()
    if Path(spec).exists():
        return load_tokenizer(spec)
    raise ConfigError(f"tokenizer: expected {TOKENIZER_SPECS}, got {spec!r} (no such file)")


def _model_config(model: str | ModelConfig | dict, overrides: dict | None) -> ModelConfig:
    from layerwise.models.registry import get_config

    return get_config(model, **(overrides or {}))


def _replace(cfg: ModelConfig, **changes: Any) -> ModelConfig:
    changes = {k: v for k, v in changes.items() if getattr(cfg, k) != v}
    return cfg.replace(**changes) if changes else cfg


def _with_classes(cfg: ModelConfig, k: int) -> ModelConfig:
    if hasattr(cfg, "num_classes"):
        return cfg if (cfg.num_classes == 1 and k == 2) else _replace(cfg, num_classes=k)
    if hasattr(cfg, "num_labels"):
        head = "sequence_classification" if getattr(cfg, "head", None) == "none" else cfg.head
        return _replace(cfg, num_labels=k, head=head)
    if hasattr(cfg, "sizes"):
        last = cfg.sizes[-1]
        return cfg if (last == 1 and k == 2) else _replace(cfg, sizes=(*cfg.sizes[:-1], k))
    raise ConfigError(f"{type(cfg).__name__}: has no num_classes, num_labels or sizes field to set to {k} classes")


def _with_images(cfg: ModelConfig, shape: tuple[int, int, int]) -> ModelConfig:
    c, h, w = shape
    if hasattr(cfg, "image_size") and hasattr(cfg, "in_channels"):
        if h != w:
            raise ConfigError(f"{type(cfg).__name__}: square images expected (image_size), got {h}x{w}")
        return _replace(cfg, in_channels=c, image_size=h)
    if hasattr(cfg, "sizes"):
        return _replace(cfg, sizes=(c * h * w, *cfg.sizes[1:]))
    return cfg


# Output activations that the loss applies itself: BCE/cross-entropy take logits, so a model
# that ends in one would apply it twice (a sigmoid before a softmax cross-entropy trains
# seed-mlp on mnist-5k to 0.77 test accuracy against 0.87 without, after 3 epochs; a sigmoid
# before BCE-with-logits predicts class 1 always).
_LOSS_ACTIVATIONS = ("sigmoid", "softmax")


def _for_training(cfg: ModelConfig) -> ModelConfig:
    """The config a classifier trains as: an output sigmoid/softmax moves into the loss."""
    if getattr(cfg, "output_activation", None) in _LOSS_ACTIVATIONS:
        return cfg.replace(output_activation=None)
    return cfg


def _shown(v: Any) -> str:
    if isinstance(v, (list, tuple)) and v and all(isinstance(x, int) for x in v):
        return "→".join(str(x) for x in v)
    if isinstance(v, int) and not isinstance(v, bool):
        return f"{v:,}"
    return "none" if v is None else str(v)


def _param_count(cfg: ModelConfig) -> int:
    from layerwise.models.registry import build

    net = build(cfg, device="meta")
    return sum(p.numel() for p in {id(p): p for p in net.parameters()}.values())


def _outputs(cfg: ModelConfig) -> int:
    for k in ("num_classes", "num_labels"):
        if hasattr(cfg, k):
            return int(getattr(cfg, k))
    return int(cfg.sizes[-1]) if hasattr(cfg, "sizes") else 0


def architecture_note(name: str, before: ModelConfig, after: ModelConfig, why: str, num_classes: int | None = None) -> str | None:
    """One line saying how the job changed the model to fit the data (None when it did not):
    the fields that changed and the parameter count before and after."""
    a, b = before.to_dict(), after.to_dict()
    changed = [k for k in b if a.get(k) != b[k]]
    if not changed:
        return None
    parts = []
    for k in changed:
        text = f"{k} {_shown(a.get(k))} → {_shown(b[k])}"
        if k == "output_activation" and b[k] is None:
            loss = "the softmax of cross-entropy" if (num_classes or 2) > 2 or _outputs(after) > 1 else "the sigmoid of BCE"
            text += f" (the loss applies {loss})"
        parts.append(text)
    return (f"{name} changed to fit {why}: " + ", ".join(parts)
            + f"; {_param_count(before):,} → {_param_count(after):,} parameters")


def model_name(model: str | ModelConfig | dict) -> str:
    if isinstance(model, str):
        return model
    return type(model).__name__ if isinstance(model, ModelConfig) else "the model"


def unknown_note(tokenizer, texts, what: str) -> str | None:
    """'3 characters of the test texts are not in the char tokenizer's vocabulary: 'é' ×2 (as 'e'), …'
    for a character tokenizer with an unknown token; None when every character is known."""
    counter = getattr(tokenizer, "unknown_chars", None)
    if counter is None:
        return None
    unknown = counter(texts)
    if not unknown:
        return None
    total = sum(k for k, _ in unknown.values())
    shown = ", ".join(f"{c!r} ×{k} (as {a!r})" for c, (k, a) in list(unknown.items())[:6])
    more = f" and {len(unknown) - 6} more" if len(unknown) > 6 else ""
    return (f"{total:,} character{'s' if total != 1 else ''} of {what} {'are' if total != 1 else 'is'} not in the "
            f"char tokenizer's vocabulary: {shown}{more}")


def _build(cfg: ModelConfig) -> torch.nn.Module:
    from layerwise.models.registry import build

    return build(cfg, device="cpu")


def _save_tokenizer(tokenizer, run_dir: Path | None) -> None:
    if run_dir is not None:
        run_dir.mkdir(parents=True, exist_ok=True)
        tokenizer.save(run_dir / "tokenizer.json")


def _run_tokenizer(run_dir: Path | None, resume: bool):
    """The tokenizer saved in a run directory being resumed, else None."""
    if resume and run_dir is not None and (run_dir / "tokenizer.json").is_file():
        from layerwise.data.tokenizers import load_tokenizer

        return load_tokenizer(run_dir / "tokenizer.json")
    return None


def pretrain(
    model: str | ModelConfig | dict,
    data: str,
    config: TrainConfig,
    tokenizer: str = "char",
    val: float = 0.1,
    model_overrides: dict | None = None,
    resume: bool = False,
    callback: Callable[[Event], None] | None = None,
    cache_dir: str | None = None,
    overwrite: bool = False,
    run: RunDir | None = None,
) -> TrainResult:
    """Pretrain a language model (a preset name, config file or config) on a text corpus.

    data: a built-in corpus (``shakespeare-1m``) or a ``.txt`` file; the last ``val`` of it is
    held out. tokenizer: ``char`` (the corpus's characters), ``bpe:N`` (trained on the
    training part), ``gpt2`` or a tokenizer file; the model's ``vocab_size`` is set from it.
    ``resume`` continues the run in ``config.out_dir``; ``overwrite`` replaces one there
    (:mod:`layerwise.rundir`); ``run``: a run directory the caller opened (and finishes).
    """
    from layerwise.data import TextCorpus, TokenStream, load_dataset, split

    seed_everything(config.seed)
    _check_run(config, "pretrain", resume, overwrite, run)
    corpus = load_dataset(data)
    if not isinstance(corpus, TextCorpus):
        raise LayerwiseError(f"pretrain: {data!r} is a {type(corpus).__name__}; expected a text corpus (.txt or e.g. shakespeare-1m)")
    parts = split(corpus, val=val, test=0.0)
    run_dir = Path(config.out_dir) if config.out_dir is not None else None
    tok = _run_tokenizer(run_dir, resume) or make_tokenizer(tokenizer, corpus.text if tokenizer == "char" else parts.train.text)
    asked = _model_config(model, model_overrides)
    if not hasattr(asked, "vocab_size") or not hasattr(asked, "block_size"):
        raise ConfigError(f"pretrain: {type(asked).__name__} is not a language model (needs vocab_size and block_size)")
    cfg = _replace(asked, vocab_size=tok.vocab_size)
    notes = [n for n in [architecture_note(model_name(model), asked, cfg, f"the {tokenizer} tokenizer")] if n]
    train_stream = TokenStream.from_corpus(parts.train, tok, cache_dir=cache_dir)
    val_stream = TokenStream.from_corpus(parts.val, tok, cache_dir=cache_dir) if val > 0 else None
    net = _build(cfg)
    run_info = {
        "data": {"name": str(data), "kind": "text", "val": val, "train_tokens": len(train_stream)},
        "tokenizer": {"spec": tokenizer, "file": "tokenizer.json", "vocab_size": tok.vocab_size},
    }
    with _open_run(config, "pretrain", resume, overwrite, run_info, run) as run:
        _save_tokenizer(tok, run_dir)
        trainer = Trainer(net, LanguageModelTask(cfg.block_size), train_stream, val_stream, config, callback, run_info, run=run,
                          notes=notes)
        return trainer.fit(resume=resume)


def _check_run(config: TrainConfig, command: str, resume: bool, overwrite: bool, run: RunDir | None = None) -> None:
    """Refuse a used --out-dir, or --parallel fsdp without torchrun, before any slow work (nothing is written)."""
    from layerwise.train.distributed import check_parallel

    check_parallel(config.parallel)
    if run is not None:
        if config.out_dir is None or Path(config.out_dir) != run.path:
            raise ConfigError(f"{command}: the run directory given ({run.path}) is not TrainConfig.out_dir ({config.out_dir})")
    elif config.out_dir is not None:
        check_run(config.out_dir, command, resume=resume, overwrite=overwrite)
    elif resume:
        raise ConfigError("--resume: needs --out-dir naming the run directory to resume from")


def _open_run(config: TrainConfig, command: str, resume: bool, overwrite: bool, info: dict, run: RunDir | None = None):
    """The run directory of ``config.out_dir`` (a context that records how the run ended),
    the one a caller opened (``run``: the caller finishes it), or a null context."""
    if run is not None:
        run.update(**info)
        return contextlib.nullcontext(run)
    if config.out_dir is None:
        return contextlib.nullcontext()
    return open_run(config.out_dir, command, resume=resume, overwrite=overwrite, info=info)


def train_classifier(
    model: str | ModelConfig | dict,
    data: str,
    config: TrainConfig,
    tokenizer: str | None = None,
    max_len: int = 64,
    val: float = 0.1,
    test: float = 0.1,
    positive: int | str | None = None,
    model_overrides: dict | None = None,
    resume: bool = False,
    callback: Callable[[Event], None] | None = None,
    overwrite: bool = False,
    run: RunDir | None = None,
    train_fraction: float | None = None,
    data_options: dict | None = None,
) -> tuple[TrainResult, dict]:
    """Train an image or text classifier built from a preset or config; returns (result,
    {"val": ..., "test": ...} metrics of the best checkpoint, or of the final weights
    without a run directory). The one classification job (:func:`layerwise.jobs.classify.classify`).

    Text data needs ``tokenizer`` (``bpe:N`` is trained on the training texts) and is cut
    to ``max_len`` tokens. The split (``val``, ``test``) is stratified and fixed by the seed.
    ``positive``: the class (index or name) whose precision/recall/F1 are reported (default:
    class 1 of a two-class problem; macro averages for more classes).
    ``data_options``: how to read a data file (``text_column``, ``label_column`` for
    CSV/JSONL; ``labels`` for ``.npy`` images), recorded so that ``eval`` reads it alike.
    A model changed to fit the data (its classes, input size or vocabulary) is said in
    one line, in the "start" event's notes.
    """
    from layerwise.jobs.classify import classify

    out = classify(model, data, config, tokenizer=tokenizer, max_len=max_len, val=val, test=test,
                   train_fraction=train_fraction, positive=positive, model_overrides=model_overrides, resume=resume,
                   overwrite=overwrite, run=run, callback=callback, data_options=data_options)
    return out.result, {"val": out.val, "test": out.test}


def generate_text(
    ckpt: str,
    prompt: str = "\n",
    max_new_tokens: int = 200,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    num_samples: int = 1,
    seed: int = 0,
    device: str = "cpu",
    greedy: bool = False,
    emit: Callable[[str], None] | None = None,
) -> list[str]:
    """Sample continuations of ``prompt`` from a run (its best checkpoint), a checkpoint or an
    export directory (:func:`layerwise.jobs.runs.load_run`); each text is the prompt as
    given followed by the generated text. ``greedy`` takes the most likely token at every
    step (temperature, top-k and top-p then do not apply). ``emit`` receives notes for the
    user (characters of the prompt the tokenizer does not know, and what they became)."""
    from layerwise.jobs.runs import load_run
    from layerwise.models.gpt import generate

    if not greedy and not (isinstance(temperature, (int, float)) and temperature > 0):
        raise ConfigError(f"--temperature: expected a number > 0, got {temperature!r} (for the most likely token, use --greedy)")

    loaded = load_run(ckpt, device=device)
    model = loaded.model
    if loaded.kind != "language_model" or not hasattr(model, "make_cache"):
        raise LayerwiseError(f"{loaded.checkpoint or loaded.path}: the model ({type(model).__name__}) is not a language "
                             "model; cannot generate (predict classifies with it)")
    tok = loaded.tokenizer
    if tok is None:
        raise LoadError(f"{loaded.path}: no tokenizer.json in the run directory")
    note = unknown_note(tok, [prompt], "the prompt")
    if note and emit is not None:
        emit(note)
    ids = tok.encode(prompt)
    if not ids:
        raise ConfigError("--prompt: encodes to no tokens; give a non-empty prompt")
    x = torch.tensor([ids] * num_samples, dtype=torch.long, device=device)
    g = torch.Generator(device=device).manual_seed(seed)
    out = generate(model, x, max_new_tokens, temperature=temperature, top_k=top_k, top_p=top_p, greedy=greedy, generator=g)
    return [prompt + tok.decode(row[len(ids):].tolist()) for row in out]


def _check_eval_data(ds, name: str, task_info: dict, dinfo: dict, model) -> None:
    """A one-line error when ``ds`` cannot feed the checkpoint's model: another modality,
    another image shape, another number of classes."""
    from layerwise.data import ImageClassification, TextCorpus

    if task_info.get("task") == "language_model":
        return
    if isinstance(ds, TextCorpus) or not hasattr(ds, "label_names"):
        raise LayerwiseError(f"eval: --data {name} is a {type(ds).__name__}; this checkpoint is a classifier and needs labelled data")
    trained_on = dinfo.get("kind") or "data"
    if isinstance(ds, ImageClassification) != (trained_on == "image"):
        got = "images" if isinstance(ds, ImageClassification) else "texts"
        raise LayerwiseError(f"eval: --data {name} holds {got}; this checkpoint was trained on "
                             f"{ {'image': 'images', 'text': 'texts'}.get(trained_on, trained_on)} ({dinfo.get('name', '?')})")
    if isinstance(ds, ImageClassification):
        expected = tuple(task_info.get("input_shape") or model.example_inputs(1)[0].shape[1:])
        numel = int(torch.Size(expected).numel())
        got = tuple(ds.image_shape)
        if int(torch.Size(got).numel()) != numel or (task_info.get("input_shape") is None and got != expected):
            raise LayerwiseError(f"eval: --data {name} has images of shape {got}; the model takes {expected} "
                                 f"(it was trained on {dinfo.get('name', '?')})")
    if ds.num_classes != task_info.get("num_classes", ds.num_classes):
        raise LayerwiseError(f"eval: --data {name} has {ds.num_classes} classes; the checkpoint predicts "
                             f"{task_info['num_classes']} ({dinfo.get('name', '?')})")


def evaluate_run(ckpt: str, data: str | None = None, split: str = "test", device: str = "cpu", batch_size: int | None = None,
                 data_options: dict | None = None) -> dict:
    """Metrics of a checkpoint on the ``split`` part ("train", "val", "test") of the data it was
    trained on, recomputed from the recorded split; or on all of another dataset ``data``
    (read with ``data_options``: columns, labels file; the training data is read as recorded).
    Texts with characters a char tokenizer does not know count them in ``unknown_chars``."""
    from layerwise.data import (
        TextCorpus,
        TokenStream,
        encode_classification,
        load_dataset,
    )
    from layerwise.data import split as split_data

    ckpt_dir = resolve_checkpoint(ckpt)
    state = read_state_json(ckpt_dir)
    info = state.get("run_info") or {}
    dinfo = info.get("data") or {}
    tcfg = TrainConfig.from_dict(state.get("train_config") or {}, source=str(ckpt_dir / "state.json"))
    if batch_size is not None:
        tcfg = tcfg.replace(batch_size=batch_size)
    name = data or dinfo.get("name")
    if not name:
        raise ConfigError(f"eval: {ckpt_dir} records no training data; pass --data")
    if split not in ("train", "val", "test"):
        raise ConfigError(f"eval: split must be train, val or test, got {split!r}")
    same = data is None or str(data) == dinfo.get("name")
    from layerwise.jobs.runs import load_run

    loaded = load_run(ckpt_dir, device=device)
    model, run_tok = loaded.model, loaded.tokenizer
    task_info = state.get("task") or {}
    given = {k: str(v) for k, v in (data_options or {}).items() if v is not None}
    if data is None and given:
        raise ConfigError(f"{', '.join('--' + k.replace('_', '-') for k in given)}: apply to --data; "
                          "without --data the run's own data is read as it was for training")
    ds = load_dataset(name, **(given if data is not None else dinfo.get("options") or {}))
    _check_eval_data(ds, name, task_info, dinfo, model)
    unknown = 0
    if task_info.get("task") == "language_model":
        if not isinstance(ds, TextCorpus):
            raise LayerwiseError(f"eval: {name!r} is not a text corpus; this checkpoint is a language model")
        if same:
            parts = split_data(ds, val=dinfo.get("val", 0.1), test=0.0)
            if split == "test":
                split = "val"  # pretraining holds out one part
            ds = getattr(parts, split)
        source_data = TokenStream.from_corpus(ds, run_tok)
        task = LanguageModelTask(task_info.get("block_size") or model.config.block_size)
    else:
        if same:
            parts = split_data(ds, val=dinfo.get("val", 0.1), test=dinfo.get("test", 0.1), seed=dinfo.get("split_seed", tcfg.seed))
            ds = getattr(parts, split)
        task = ClassificationTask(
            task_info["num_classes"], task_info.get("label_names"), positive=task_info.get("positive"),
            input_shape=task_info.get("input_shape"),
        )
        if hasattr(ds, "texts"):
            if hasattr(run_tok, "unknown_chars"):
                unknown = sum(k for k, _ in run_tok.unknown_chars(ds.texts).values())
            source_data = encode_classification(ds, run_tok, dinfo.get("max_len", 64))
        else:
            source_data = ds
    trainer = Trainer(model, task, None, None, tcfg.replace(device=device, out_dir=None))
    trainer.device = torch.device(device)
    metrics = trainer.evaluate(source_data)
    if unknown:
        metrics["unknown_chars"] = unknown
    metrics["checkpoint"] = str(ckpt_dir)
    metrics["data"] = f"{name}:{split}" if same else str(name)
    return metrics
