"""Scoring generated images: an Inception Score (Salimans et al. 2016) whose classifier is a
CNN trained here on the real images (MNIST or digits), not the ImageNet Inception network.

:func:`image_scorer` trains the classifier once with the ``train`` job (a stratified 80/10/10
split with seed 0) and caches the run -- weights, metrics -- in the cache folder
(``$LAYERWISE_CACHE``, else ``~/.cache/layerwise``) under ``scorers/``; later calls load it.
Nothing is downloaded. The returned :class:`ImageScorer` maps images in [0, 1] to the score,
the classes present and the class histogram; its ``reference`` is the score of the real
held-out test images, the value a perfect generator would approach.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from layerwise.errors import ConfigError, LoadError

#: data set -> the classifier preset trained to score its images
SCORER_MODELS = {"mnist-5k": "seed-cnn-mnist", "digits": "cnn-digits"}
_VERSION = 1


@dataclass
class ImageScorer:
    """Inception Score of images by a classifier of ``data``'s classes (call it on images in [0, 1])."""

    data: str
    model: nn.Module
    accuracy: float  # the classifier's test accuracy
    reference: float  # the score of the real test images
    run_dir: Path
    epochs: int
    metric: str = "score"
    info: dict = field(default_factory=dict)

    @torch.no_grad()
    def probabilities(self, images: torch.Tensor, batch_size: int = 500) -> torch.Tensor:
        """Class probabilities (N, K) of images (N, C, H, W) in [0, 1]."""
        self.model.eval()
        out = [torch.softmax(self.model(images[i:i + batch_size].float().cpu()).float(), dim=1)
               for i in range(0, len(images), batch_size)]
        return torch.cat(out)

    def __call__(self, images: torch.Tensor) -> dict:
        """{metric: Inception Score, "classes": classes predicted at least once, "class_counts": [...]}."""
        from layerwise.train.metrics import inception_score

        p = self.probabilities(images)
        counts = torch.bincount(p.argmax(dim=1), minlength=p.shape[1])
        return {self.metric: inception_score(p), "classes": int((counts > 0).sum()), "class_counts": counts.tolist()}


def _cache_root(cache_dir: str | os.PathLike | None) -> Path:
    from layerwise.data.text import resolve_cache_dir

    return Path(resolve_cache_dir(cache_dir)) / "scorers"


def _finished(run_dir: Path) -> bool:
    from layerwise.rundir import read_manifest

    try:
        doc = read_manifest(run_dir) if run_dir.is_dir() else None
    except ConfigError:
        return False
    return doc is not None and doc.get("status") == "finished" and (run_dir / "results.json").is_file()


def image_scorer(data: str = "mnist-5k", epochs: int = 8, metric: str = "score", cache_dir: str | None = None,
                 callback=None, num_threads: int | None = None) -> ImageScorer:
    """The scorer of ``data`` images (see the module docstring), trained for ``epochs`` the first time.

    callback: the training loop's events while the classifier trains (a progress bar).
    num_threads: torch threads while it trains (None: torch's default)."""
    from layerwise.data import load_dataset, split
    from layerwise.jobs.training import train_classifier
    from layerwise.train.checkpoint import load_model
    from layerwise.train.config import TrainConfig
    from layerwise.train.metrics import inception_score

    if data not in SCORER_MODELS:
        raise ConfigError(f"image scorer: no classifier for {data!r}; expected one of {', '.join(SCORER_MODELS)}")
    model_name = SCORER_MODELS[data]
    root = _cache_root(cache_dir)
    run_dir = root / f"{data}-{model_name}-e{epochs}-v{_VERSION}"
    if not _finished(run_dir):
        # Train into a private directory, then move it into place in one rename: two processes
        # scoring at once each train, and the first to finish wins.
        root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=root, prefix=f".{run_dir.name}.tmp-"))
        try:
            cfg = TrainConfig(epochs=epochs, batch_size=64, lr=2e-3, schedule="cosine", log_every=20, seed=0,
                              out_dir=str(tmp / "run"), keep_last=1, num_threads=num_threads)
            train_classifier(model_name, data, cfg, callback=callback)
            if run_dir.exists() and not _finished(run_dir):
                shutil.rmtree(run_dir, ignore_errors=True)  # an interrupted attempt's leftovers
            try:
                os.replace(tmp / "run", run_dir)
            except OSError:
                if not _finished(run_dir):  # not another process that finished first
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    try:
        results = json.loads((run_dir / "results.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise LoadError(f"{run_dir / 'results.json'}: unreadable ({type(e).__name__}); delete {run_dir} to train the scorer again") from None
    model, _ = load_model(run_dir, prefer="best")
    model.eval()
    test = split(load_dataset(data), val=0.1, test=0.1, seed=0).test
    scorer = ImageScorer(data, model, float(results["test"]["accuracy"]), 0.0, run_dir, epochs, metric)
    scorer.reference = inception_score(scorer.probabilities(test.images))
    scorer.info = {"data": data, "model": model_name, "epochs": epochs, "test_accuracy": scorer.accuracy,
                   "real_test_score": scorer.reference, "real_test_images": len(test), "cache": str(run_dir)}
    return scorer
