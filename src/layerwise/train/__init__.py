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
