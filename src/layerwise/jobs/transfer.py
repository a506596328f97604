"""Transfer learning with few labels: pretrain a CNN on one image set, fine-tune it on another
with k labelled images per class, and compare with the same network trained from scratch on
the same images, over several seeds.

:func:`transfer_study` pretrains with the ``train`` job (its own run directory,
``pretrain/``), then runs every (method, k, seed) as a run of the one training loop in
``runs/<method>-k<k>-s<seed>/``: ``transfer`` loads the pretrained weights and applies a
fine-tuning strategy (:func:`~layerwise.finetune.strategies.apply_strategy`, default
``full``); ``scratch`` starts from a fresh initialisation. Both get the same images, steps,
batch size and optimizer. A finished run is not repeated: an interrupted study resumes
where it stopped.

The target images are resized to the pretraining images' size (8×8 digits: 20×20 in a
28×28 frame, MNIST's layout). Half of the target set (stratified, seed 0) is the test set;
the k images per class come from the other half, drawn per seed, the smaller sets inside
the larger ones.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from layerwise.errors import ConfigError
from layerwise.io import atomic_write_text
from layerwise.train.config import TrainConfig
from layerwise.train.trainer import Event

METHODS = ("transfer", "scratch")


@dataclass
class TransferStudy:
    rows: list[dict]  # one per (method, labels_per_class): mean, sd, values over seeds
    runs: list[dict]  # one per (method, labels_per_class, seed)
    gains: dict[int, float]  # labels per class -> mean over seeds of (transfer − scratch) test accuracy
    pretrain: dict  # the pretrained model's test metrics on its own data
    test_images: int
    notes: list[str] = field(default_factory=list)


def _finished(run_dir: Path) -> dict | None:
    from layerwise.errors import ConfigError as _CE
    from layerwise.rundir import read_manifest

    try:
        doc = read_manifest(run_dir) if run_dir.is_dir() else None
    except _CE:
        return None
    f = run_dir / "results.json"
    if doc is None or doc.get("status") != "finished" or not f.is_file():
        return None
    try:
        return json.loads(f.read_text(encoding="utf-8"))
    except json.JSONDecodeError:
        return None


def few_label_indices(labels: torch.Tensor, k: int, seed: int) -> torch.Tensor:
    """k indices per class, drawn with ``seed``; for a fixed seed the sets for smaller k lie
    inside those for larger k."""
    rng = np.random.default_rng(seed)
    out = []
    y = labels.numpy()
    for c in np.unique(y):
        members = rng.permutation(np.flatnonzero(y == c))
        if len(members) < k:
            raise ConfigError(f"--labels-per-class: class {c} has only {len(members)} images to draw {k} from")
        out.append(members[:k])
    return torch.from_numpy(np.sort(np.concatenate(out)))


def transfer_study(
    out_dir: Path,
    pretrain_config: TrainConfig,
    finetune_config: TrainConfig,
    labels_per_class: Sequence[int] = (5, 10, 20, 50),
    seeds: Sequence[int] = (0, 1, 2),
    model: str = "seed-cnn-mnist",
    source: str = "mnist-5k",
    target: str = "digits",
    strategy: str = "full",
    scratch_lr: float | None = None,
    resume: bool = False,
    callback: Callable[[Event], None] | None = None,
    emit: Callable[[str], None] = lambda line: None,
) -> TransferStudy:
    """Run the study into ``out_dir`` (see the module docstring). ``finetune_config`` is the
    budget of every fine-tuning and scratch run (its seed and out_dir are set per run);
    ``scratch_lr`` the learning rate from scratch (default: the fine-tuning one)."""
    from layerwise.data import load_dataset, split
    from layerwise.finetune.strategies import apply_strategy
    from layerwise.jobs.training import train_classifier
    from layerwise.models.registry import build, get_config
    from layerwise.rundir import check_run
    from layerwise.train.checkpoint import load_checkpoint, resolve_checkpoint
    from layerwise.train.tasks import ClassificationTask
    from layerwise.train.trainer import Trainer, seed_everything

    out_dir = Path(out_dir)
    pre_dir = out_dir / "pretrain"
    pre = _finished(pre_dir)
    if pre is None:
        emit(f"pretraining {model} on {source}")
        check_run(pre_dir, "train", resume=resume)
        train_classifier(model, source, pretrain_config.replace(out_dir=str(pre_dir)), resume=resume, callback=callback)
        pre = _finished(pre_dir)
    pre_test = (pre or {}).get("test") or {}
    emit(f"pretrained on {source}: test accuracy {pre_test.get('accuracy', float('nan')):.4f}")
    pretrained_ckpt = resolve_checkpoint(pre_dir, prefer="best")

    src = load_dataset(source)
    tgt = load_dataset(target)
    c, h, w = src.image_shape
    if tgt.image_shape != src.image_shape:
        inner = round(h * 20 / 28)
        tgt = tgt.resized(inner, (h - inner) // 2)
        if tgt.image_shape != src.image_shape:
            raise ConfigError(f"transfer: cannot fit {target}'s {tgt.image_shape} images to {source}'s {src.image_shape}")
    parts = split(tgt, val=0.0, test=0.5, seed=0)
    pool, test = parts.train, parts.test
    cfg_model = get_config(model, num_classes=tgt.num_classes, in_channels=c, image_size=h)
    task = ClassificationTask(tgt.num_classes, tgt.label_names)

    runs: list[dict] = []
    for k in labels_per_class:
        for seed in seeds:
            idx = few_label_indices(pool.labels, k, seed)
            train_set = pool.subset(idx, f"{target}:k{k}:s{seed}")
            for method in METHODS:
                run_dir = out_dir / "runs" / f"{method}-k{k}-s{seed}"
                done = _finished(run_dir)
                if done is None:
                    seed_everything(seed)
                    net = build(cfg_model, device="cpu")
                    record = None
                    if method == "transfer":
                        load_checkpoint(pretrained_ckpt, {"model": net})
                        record = apply_strategy(net, strategy).to_dict()
                    lr = finetune_config.lr if method == "transfer" or scratch_lr is None else scratch_lr
                    cfg = finetune_config.replace(seed=seed, out_dir=str(run_dir), lr=lr,
                                                  batch_size=min(finetune_config.batch_size, len(train_set)))
                    info = {"data": {"name": train_set.name, "kind": "image", "labels_per_class": k},
                            "method": method, "strategy": strategy if method == "transfer" else None,
                            "base": str(pretrained_ckpt) if method == "transfer" else None}
                    trainer = Trainer(net, task, train_set, None, cfg, callback, info)
                    result = trainer.fit(resume=resume)
                    metrics = trainer.evaluate(test)
                    done = {"method": method, "labels_per_class": k, "seed": seed, "train_images": len(train_set),
                            "steps": result.steps, "seconds": result.seconds, "strategy": record,
                            "test": {key: metrics[key] for key in ("loss", "accuracy", "f1_macro")}}
                    atomic_write_text(run_dir / "results.json", json.dumps(done, indent=2) + "\n")
                runs.append(done)
                emit(f"{method:8s} k={k:<3d} seed {seed}: test accuracy {done['test']['accuracy']:.4f}")
    rows, gains = [], {}
    for k in labels_per_class:
        for method in METHODS:
            vals = [r["test"]["accuracy"] for r in runs if r["method"] == method and r["labels_per_class"] == k]
            mean = sum(vals) / len(vals)
            sd = math.sqrt(sum((v - mean) ** 2 for v in vals) / (len(vals) - 1)) if len(vals) > 1 else 0.0
            rows.append({"method": method, "labels_per_class": k, "mean": mean, "sd": sd, "values": vals})
        diffs = [t["test"]["accuracy"] - s["test"]["accuracy"]
                 for t in runs if t["method"] == "transfer" and t["labels_per_class"] == k
                 for s in runs if s["method"] == "scratch" and s["labels_per_class"] == k and s["seed"] == t["seed"]]
        gains[k] = sum(diffs) / len(diffs)
    return TransferStudy(rows, runs, gains, pre_test, len(test))
