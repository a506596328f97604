"""Training: one loop for pretraining, supervised training and every fine-tuning strategy.

- :class:`Trainer` / :func:`train`: the loop (``trainer.py``);
- :class:`TrainConfig`: every option, validated and serialisable (``config.py``);
- :class:`LanguageModelTask`, :class:`ClassificationTask`, :class:`Seq2SeqTask`: batches -> loss and
  metrics (``tasks.py``);
- :func:`make_optimizer`, :class:`LRSchedule`: optimizers and schedules, usable without the
  loop (GAN, DQN) (``optim.py``);
- checkpoints (``checkpoint.py``), metrics (``metrics.py``), run logs (``runlog.py``),
  throughput and MFU (``perf.py``), torchrun/DDP/FSDP (``distributed.py``).

Whole jobs built on the loop (pretrain from names, train a classifier) live in
:mod:`layerwise.jobs`.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from layerwise.train.checkpoint import (
        Checkpoint,
        CheckpointError,
        CheckpointManager,
        load_checkpoint,
        load_model,
        load_weights,
        resolve_checkpoint,
        save_checkpoint,
        save_weights,
    )
    from layerwise.train.config import EarlyStopping, TrainConfig
    from layerwise.train.metrics import (
        classification_metrics,
        confusion_matrix,
        SequenceMeter,
        perplexity,
        precision_recall_f1,
        sequence_matches,
    )
    from layerwise.train.optim import LRSchedule, l1_penalty, make_optimizer, split_decay
    from layerwise.train.perf import matmul_peak_flops, train_flops
    from layerwise.train.runlog import RunLog, read_records
    from layerwise.train.tasks import (
        BatchSource,
        ClassificationTask,
        LanguageModelTask,
        PairBatches,
        Seq2SeqTask,
        Task,
        TensorBatches,
        TokenBatches,
    )
    from layerwise.train.trainer import (
        Event,
        NonFiniteLossError,
        Trainer,
        TrainResult,
        seed_everything,
        train,
    )

# Names are imported on first use (PEP 562): `layerwise --help` parses TrainConfig's fields
# without importing torch.
_EXPORTS = {
    "BatchSource": "layerwise.train.tasks",
    "Checkpoint": "layerwise.train.checkpoint",
    "CheckpointError": "layerwise.train.checkpoint",
    "CheckpointManager": "layerwise.train.checkpoint",
    "ClassificationTask": "layerwise.train.tasks",
    "EarlyStopping": "layerwise.train.config",
    "Event": "layerwise.train.trainer",
    "LRSchedule": "layerwise.train.optim",
    "LanguageModelTask": "layerwise.train.tasks",
    "NonFiniteLossError": "layerwise.train.trainer",
    "PairBatches": "layerwise.train.tasks",
    "RunLog": "layerwise.train.runlog",
    "Seq2SeqTask": "layerwise.train.tasks",
    "SequenceMeter": "layerwise.train.metrics",
    "Task": "layerwise.train.tasks",
    "TensorBatches": "layerwise.train.tasks",
    "TokenBatches": "layerwise.train.tasks",
    "TrainConfig": "layerwise.train.config",
    "TrainResult": "layerwise.train.trainer",
    "Trainer": "layerwise.train.trainer",
    "classification_metrics": "layerwise.train.metrics",
    "confusion_matrix": "layerwise.train.metrics",
    "l1_penalty": "layerwise.train.optim",
    "load_checkpoint": "layerwise.train.checkpoint",
    "load_model": "layerwise.train.checkpoint",
    "load_weights": "layerwise.train.checkpoint",
    "make_optimizer": "layerwise.train.optim",
    "matmul_peak_flops": "layerwise.train.perf",
    "perplexity": "layerwise.train.metrics",
    "precision_recall_f1": "layerwise.train.metrics",
    "read_records": "layerwise.train.runlog",
    "resolve_checkpoint": "layerwise.train.checkpoint",
    "save_checkpoint": "layerwise.train.checkpoint",
    "save_weights": "layerwise.train.checkpoint",
    "seed_everything": "layerwise.train.trainer",
    "sequence_matches": "layerwise.train.metrics",
    "split_decay": "layerwise.train.optim",
    "train": "layerwise.train.trainer",
    "train_flops": "layerwise.train.perf",
}

__all__ = [
    "BatchSource",
    "Checkpoint",
    "CheckpointError",
    "CheckpointManager",
    "ClassificationTask",
    "EarlyStopping",
    "Event",
    "LRSchedule",
    "LanguageModelTask",
    "NonFiniteLossError",
    "PairBatches",
    "RunLog",
    "Seq2SeqTask",
    "SequenceMeter",
    "Task",
    "TensorBatches",
    "TokenBatches",
    "TrainConfig",
    "TrainResult",
    "Trainer",
    "classification_metrics",
    "confusion_matrix",
    "l1_penalty",
    "load_checkpoint",
    "load_model",
    "load_weights",
    "make_optimizer",
    "matmul_peak_flops",
    "perplexity",
    "precision_recall_f1",
    "read_records",
    "resolve_checkpoint",
    "save_checkpoint",
    "save_weights",
    "seed_everything",
    "sequence_matches",
    "split_decay",
    "train",
    "train_flops",
]


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
