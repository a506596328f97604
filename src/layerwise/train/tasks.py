"""Tasks: how a batch becomes a loss and metrics; and the batch sources they read.

The training loop knows nothing about models or data: a :class:`Task` turns a batch into
a loss (and predictions for metrics), and its :meth:`Task.make_source` wraps the data in
a :class:`BatchSource`, which hands out *global* micro-batches by index.

Batches are a pure function of (seed, index): micro-batch ``i`` is the same tensor in an
uninterrupted run, in a resumed one and across processes (each process then takes its
own rows, see :mod:`layerwise.train.distributed`). That is what makes resuming exact and
a 2-process run equal to a 1-process one with the same global batch.
"""

from __future__ import annotations

import inspect
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from layerwise.errors import ConfigError, LayerwiseError
from layerwise.train.metrics import ClassificationMeter, LanguageModelMeter, SequenceMeter

Batch = tuple[torch.Tensor, ...]


def _generator(seed: int, index: int, stream: int = 0) -> torch.Generator:
    # One generator per (seed, stream, batch index): no state to carry between batches.
    return torch.Generator().manual_seed((seed * 1_000_003 + stream) * 1_000_000_007 + index)


class BatchSource(ABC):
    """Global micro-batches by index, and a fixed sequence of evaluation batches."""

    batch_size: int

    @property
    @abstractmethod
    def batches_per_epoch(self) -> int:
        """Micro-batches in one pass over the data."""

    @abstractmethod
    def batch(self, index: int) -> Batch:
        """Micro-batch number ``index`` (0-based, counted over the whole run)."""

    @abstractmethod
    def eval_batches(self, max_batches: int | None = None) -> Iterator[Batch]:
        """The evaluation batches, in a fixed order (the whole set unless ``max_batches``)."""


class TokenBatches(BatchSource):
    """Random (x, y) windows of a :class:`~layerwise.data.TokenStream` (nanoGPT's sampling);
    evaluation reads non-overlapping windows in order."""

    def __init__(self, stream, batch_size: int, block_size: int, seed: int = 0) -> None:
        self.stream, self.batch_size, self.block_size, self.seed = stream, batch_size, block_size, seed
        if len(stream) <= block_size:
            raise LayerwiseError(
                f"corpus {getattr(stream, 'name', '')!r} has {len(stream):,} tokens, too short for "
                f"block_size={block_size}; expected more than block_size tokens"
            )

    @property
    def batches_per_epoch(self) -> int:
        return max(1, len(self.stream) // (self.batch_size * self.block_size))

    def batch(self, index: int) -> Batch:
        return self.stream.get_batch(self.batch_size, self.block_size, _generator(self.seed, index))

    def eval_batches(self, max_batches: int | None = None) -> Iterator[Batch]:
        return self.stream.iter_sequential(self.batch_size, self.block_size, max_batches)


class TensorBatches(BatchSource):
    """Rows of aligned tensors ``(inputs..., labels)``, reshuffled every epoch.

    Each epoch is a permutation drawn from (seed, epoch) -- or, with ``oversample``, a
    class-balanced resampling (:func:`layerwise.data.oversample_indices`) -- cut into
    ``batch_size`` rows; a last partial batch is dropped (it is in the next epoch's
    permutation with probability ~1). Evaluation reads the rows in order, every row once.
    """

    def __init__(self, tensors: Sequence[torch.Tensor], batch_size: int, seed: int = 0, shuffle: bool = True, oversample: bool = False) -> None:
        self.tensors = tuple(tensors)
        n = {int(t.shape[0]) for t in self.tensors}
        if len(n) != 1:
            raise LayerwiseError(f"batch source: tensors have different lengths {sorted(n)}; expected one row per example")
        self.n = n.pop()
        if self.n == 0:
            raise LayerwiseError("batch source: no examples")
        self.batch_size, self.seed, self.shuffle, self.oversample = batch_size, seed, shuffle, oversample
        self._epoch: int | None = None
        self._order: torch.Tensor | None = None

    @property
    def labels(self) -> torch.Tensor:
        return self.tensors[-1]

    def _epoch_order(self, epoch: int) -> torch.Tensor:
        if epoch != self._epoch:
            g = _generator(self.seed, epoch, stream=1)
            if self.oversample:
                from layerwise.data import oversample_indices

                self._order = oversample_indices(self.labels, g)
            elif self.shuffle:
                self._order = torch.randperm(self.n, generator=g)
            else:
                self._order = torch.arange(self.n)
            self._epoch = epoch
        return self._order

    @property
    def epoch_size(self) -> int:
        if self.oversample:
            counts = torch.bincount(self.labels)
            return int((counts > 0).sum()) * int(counts.max())
        return self.n

    @property
    def batches_per_epoch(self) -> int:
        return max(1, self.epoch_size // self.batch_size)

    def batch(self, index: int) -> Batch:
        epoch, k = divmod(index, self.batches_per_epoch)
        rows = self._epoch_order(epoch)[k * self.batch_size : (k + 1) * self.batch_size]
        return tuple(t[rows] for t in self.tensors)

    def eval_batches(self, max_batches: int | None = None) -> Iterator[Batch]:
        for i, start in enumerate(range(0, self.n, self.batch_size)):
            if max_batches is not None and i >= max_batches:
                return
            yield tuple(t[start : start + self.batch_size] for t in self.tensors)


class PairBatches(TensorBatches):
    """(src, src_lengths, tgt_in, tgt_out) rows of an encoder–decoder task, batched like
    :class:`TensorBatches`, each batch cut to its own longest source and target (the
    sets are padded to their longest pair; most batches need less)."""

    def __init__(self, tensors: Sequence[torch.Tensor], batch_size: int, pad_id: int, seed: int = 0, shuffle: bool = True) -> None:
        super().__init__(tensors, batch_size, seed, shuffle=shuffle)
        if len(self.tensors) != 4:
            raise LayerwiseError(f"PairBatches: expected 4 tensors (src, src_lengths, tgt_in, tgt_out), got {len(self.tensors)}")
        self.pad_id = pad_id

    def _trim(self, batch: Batch) -> Batch:
        src, lengths, tgt_in, tgt_out = batch
        if src.shape[0] == 0:
            return batch
        s = int(lengths.max())
        t = int((tgt_out != self.pad_id).sum(dim=1).max())
        return src[:, :s], lengths, tgt_in[:, :t], tgt_out[:, :t]

    def batch(self, index: int) -> Batch:
        return self._trim(super().batch(index))

    def eval_batches(self, max_batches: int | None = None) -> Iterator[Batch]:
        for b in super().eval_batches(max_batches):
            yield self._trim(b)


def _to(batch: Batch, device: torch.device) -> Batch:
    non_blocking = device.type == "cuda"
    return tuple(t.to(device, non_blocking=non_blocking) for t in batch)


class Task(ABC):
    """Turns batches into a loss and predictions; builds its batch sources and meters."""

    #: what throughput counts: "tokens" or "examples"
    unit: str = "examples"

    def bind(self, model: nn.Module) -> None:
        """Called once with the (unwrapped) model before training: inspect what it accepts."""

    def configure(self, config, source: BatchSource) -> None:
        """Apply the TrainConfig options that concern the task (class weights, ...)."""

    @abstractmethod
    def make_source(self, data: Any, batch_size: int, seed: int = 0, shuffle: bool = True, oversample: bool = False) -> BatchSource:
        """Wrap ``data`` in a :class:`BatchSource`."""

    @abstractmethod
    def model_inputs(self, batch: Batch) -> tuple[tuple, dict]:
        """(args, kwargs) to call the model with (no targets): also what the FLOP count traces."""

    @abstractmethod
    def loss(self, model: nn.Module, batch: Batch) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(mean loss over the batch, predictions for metrics or None)."""

    @abstractmethod
    def new_meter(self):
        """A fresh metric accumulator with ``update_batch(loss, predictions, batch)`` and ``compute()``."""

    def count(self, batch: Batch) -> int:
        """How many units (tokens or examples) the batch holds."""
        return int(batch[-1].numel()) if self.unit == "tokens" else int(batch[-1].shape[0])

    def to_device(self, batch: Batch, device: torch.device) -> Batch:
        return _to(batch, device)

    def describe(self) -> dict:
        return {"task": type(self).__name__}


class _LMMeter(LanguageModelMeter):
    def update_batch(self, loss: torch.Tensor, predictions, batch: Batch) -> None:
        self.add(loss, batch[-1].numel())


class LanguageModelTask(Task):
    """Next-token prediction: batches (x, y) of token ids (B, T); loss = mean cross-entropy.

    A model that returns an object with ``.loss`` when called as ``model(x, y)`` (layerwise's
    GPT) computes its own loss; any other model's output (or its ``.logits``) is taken as
    logits (B, T, V).
    """

    unit = "tokens"

    def __init__(self, block_size: int) -> None:
        if not isinstance(block_size, int) or block_size < 1:
            raise ConfigError(f"LanguageModelTask.block_size: expected an integer >= 1, got {block_size!r}")
        self.block_size = block_size
        self._own_loss = True

    def bind(self, model: nn.Module) -> None:
        params = inspect.signature(model.forward).parameters
        self._own_loss = "targets" in params

    def configure(self, config, source: BatchSource) -> None:
        if config.class_weights or config.oversample:
            raise ConfigError("TrainConfig.class_weights/oversample: only for classification tasks, not language modelling")

    def make_source(self, data: Any, batch_size: int, seed: int = 0, shuffle: bool = True, oversample: bool = False) -> BatchSource:
        from layerwise.data import TokenStream

        if isinstance(data, torch.Tensor):
            data = data.cpu().numpy()
        if isinstance(data, np.ndarray):
            data = TokenStream(data)
        if not hasattr(data, "get_batch"):
            raise LayerwiseError(
                f"LanguageModelTask: expected a TokenStream (or a 1-D array of token ids), got {type(data).__name__}"
            )
        return TokenBatches(data, batch_size, self.block_size, seed)

    def model_inputs(self, batch: Batch) -> tuple[tuple, dict]:
        return (batch[0],), {}

    def loss(self, model: nn.Module, batch: Batch) -> tuple[torch.Tensor, None]:
        x, y = batch
        if self._own_loss:
            out = model(x, y)
            if getattr(out, "loss", None) is not None:
                return out.loss, None
        else:
            out = model(x)
        logits = getattr(out, "logits", out)  # (B, T, V)
        return F.cross_entropy(logits.float().flatten(0, 1), y.flatten(), ignore_index=-100), None

    def new_meter(self) -> _LMMeter:
        return _LMMeter()

    def describe(self) -> dict:
        return {"task": "language_model", "block_size": self.block_size}


class _ClsMeter(ClassificationMeter):
    def update_batch(self, loss: torch.Tensor, predictions: torch.Tensor, batch: Batch) -> None:
        self.update(loss, predictions, batch[-1])


class ClassificationTask(Task):
    """Supervised classification: batches (inputs..., labels (B,)).

    Inputs: images (B, C, H, W) or features (B, F), reshaped to ``input_shape`` (per
    example) when given -- an MLP on 8x8 digits takes ``input_shape=(64,)``; or token ids
    and an attention mask (B, T), passed to the model as ``attention_mask=`` or as
    ``lengths=`` (the mask's row sums), whichever its ``forward`` accepts.
    Loss: cross-entropy over ``num_classes`` logits, with per-class ``class_weights``
    (set by the TrainConfig option from the training labels); a model with a single output
    is a binary classifier trained with a sigmoid (BCE) on that logit.
    Metrics: loss, accuracy, precision/recall/F1 (binary for ``positive`` -- by default
    class 1 of a two-class problem -- and macro), confusion matrix.
    """

    unit = "examples"

    def __init__(
        self,
        num_classes: int,
        label_names: Sequence[str] | None = None,
        positive: int | None = None,
        class_weights: torch.Tensor | None = None,
        input_shape: Sequence[int] | None = None,
    ) -> None:
        if not isinstance(num_classes, int) or num_classes < 2:
            raise ConfigError(f"ClassificationTask.num_classes: expected an integer >= 2, got {num_classes!r}")
        if positive is not None and not 0 <= positive < num_classes:
            raise ConfigError(f"ClassificationTask.positive: expected a class in 0..{num_classes - 1}, got {positive!r}")
        self.num_classes = num_classes
        self.label_names = list(label_names) if label_names is not None else None
        self.positive = positive
        self.class_weights = class_weights
        self.input_shape = tuple(input_shape) if input_shape is not None else None
        self._mask_arg: str | None = "attention_mask"

    def bind(self, model: nn.Module) -> None:
        params = inspect.signature(model.forward).parameters
        self._mask_arg = next((a for a in ("attention_mask", "lengths") if a in params), None)

    def configure(self, config, source: BatchSource) -> None:
        if config.class_weights:
            from layerwise.data import class_weights

            self.class_weights = class_weights(source.labels, self.num_classes)

    def make_source(self, data: Any, batch_size: int, seed: int = 0, shuffle: bool = True, oversample: bool = False) -> BatchSource:
        from layerwise.data import EncodedText, ImageClassification, TextClassification

        if isinstance(data, ImageClassification):
            tensors: tuple = (data.images, data.labels)
        elif isinstance(data, EncodedText):
            tensors = (data.ids, data.attention_mask, data.labels)
        elif isinstance(data, TextClassification):
            raise LayerwiseError(
                f"{data.name}: texts must be encoded first: layerwise.data.encode_classification(ds, tokenizer, max_len)"
            )
        elif isinstance(data, (tuple, list)) and len(data) >= 2 and all(isinstance(t, torch.Tensor) for t in data):
            tensors = tuple(data)
        else:
            raise LayerwiseError(
                "ClassificationTask: expected an ImageClassification, an EncodedText or a tuple of tensors "
                f"(inputs..., labels), got {type(data).__name__}"
            )
        labels = tensors[-1]
        if labels.dim() != 1 or labels.dtype.is_floating_point:
            raise LayerwiseError(f"ClassificationTask: labels must be a 1-D integer tensor, got {labels.dtype} {tuple(labels.shape)}")
        if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= self.num_classes):
            bad = int(labels.min()) if int(labels.min()) < 0 else int(labels.max())
            raise LayerwiseError(f"ClassificationTask: label {bad} is not a class index in 0..{self.num_classes - 1}")
        return TensorBatches(tensors, batch_size, seed, shuffle=shuffle, oversample=oversample)

    def model_inputs(self, batch: Batch) -> tuple[tuple, dict]:
        inputs = batch[:-1]
        x = inputs[0]
        if self.input_shape is not None:
            x = x.reshape(x.shape[0], *self.input_shape)
        if len(inputs) == 1:
            return (x,), {}
        mask = inputs[1]
        if self._mask_arg == "lengths":
            return (x,), {"lengths": mask.sum(dim=1)}
        if self._mask_arg == "attention_mask":
            return (x,), {"attention_mask": mask}
        return (x,), {}

    def loss(self, model: nn.Module, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        args, kwargs = self.model_inputs(batch)
        y = batch[-1]
        logits = model(*args, **kwargs)
        logits = getattr(logits, "logits", logits).float()  # (B, K) or (B, 1)
        if logits.dim() != 2:
            raise LayerwiseError(f"ClassificationTask: expected logits of shape (batch, classes), got {tuple(logits.shape)}")
        if logits.shape[1] == 1 and self.num_classes == 2:  # one logit: a sigmoid binary classifier
            z = logits[:, 0]
            per = F.binary_cross_entropy_with_logits(z, y.float(), reduction="none")  # (B,)
            if self.class_weights is None:
                loss = per.mean()
            else:  # the weighted mean, as cross_entropy's weight= gives
                wy = self.class_weights.to(z.device)[y]  # (B,)
                loss = (per * wy).sum() / wy.sum()
            return loss, (z > 0).long()
        if logits.shape[1] != self.num_classes:
            raise LayerwiseError(
                f"ClassificationTask: the model outputs {logits.shape[1]} scores per example, "
                f"the data has {self.num_classes} classes"
            )
        w = self.class_weights.to(logits.device) if self.class_weights is not None else None
        return F.cross_entropy(logits, y, weight=w), logits.argmax(dim=1)

    def new_meter(self) -> _ClsMeter:
        return _ClsMeter(self.num_classes, self.positive, self.label_names)

    def describe(self) -> dict:
        return {
            "task": "classification",
            "num_classes": self.num_classes,
            "label_names": self.label_names,
            "positive": self.positive,
            "input_shape": list(self.input_shape) if self.input_shape else None,
        }


class _SequenceMeter(SequenceMeter):
    def update_batch(self, loss: torch.Tensor, predictions: torch.Tensor | None, batch: Batch) -> None:
        self.update(loss, predictions, batch[-1])


SEARCHES = ("greedy", "beam")


class Seq2SeqTask(Task):
    """Encoder–decoder training with teacher forcing: batches (src (B, S), src_lengths (B,),
    tgt_in (B, T), tgt_out (B, T)), tgt_in = [bos] + target and tgt_out = target + [eos],
    right-padded with ``pad_id``; the model is called ``model(src, tgt_in, src_lengths=...)``
    and returns logits (B, T, V) (:class:`~layerwise.models.seq2seq.Seq2Seq`).

    Loss: mean cross-entropy over the real target tokens (padding ignored), with optional
    ``label_smoothing``. In evaluation the task also decodes every source -- ``search``
    "greedy", or "beam" with ``beam_size`` and ``length_penalty`` -- for the meter's
    ``exact_match`` and ``token_accuracy``; training steps never decode.
    """

    unit = "tokens"

    def __init__(self, pad_id: int, search: str = "greedy", beam_size: int = 4, length_penalty: float = 0.0,
                 label_smoothing: float = 0.0) -> None:
        if isinstance(pad_id, bool) or not isinstance(pad_id, int) or pad_id < 0:
            raise ConfigError(f"Seq2SeqTask.pad_id: expected a token id >= 0, got {pad_id!r}")
        if search not in SEARCHES:
            raise ConfigError(f"--search: expected one of {', '.join(SEARCHES)}, got {search!r}")
        if isinstance(beam_size, bool) or not isinstance(beam_size, int) or beam_size < 1:
            raise ConfigError(f"--beam-size: expected an integer >= 1, got {beam_size!r}")
        if isinstance(length_penalty, bool) or not isinstance(length_penalty, (int, float)) or length_penalty < 0:
            raise ConfigError(f"--length-penalty: expected a number >= 0, got {length_penalty!r}")
        if isinstance(label_smoothing, bool) or not isinstance(label_smoothing, (int, float)) or not 0 <= label_smoothing < 1:
            raise ConfigError(f"--label-smoothing: expected a number in [0, 1), got {label_smoothing!r}")
        self.pad_id, self.search, self.beam_size = pad_id, search, beam_size
        self.length_penalty, self.label_smoothing = float(length_penalty), float(label_smoothing)

    def bind(self, model: nn.Module) -> None:
        if not (hasattr(model, "encode") and hasattr(model, "decode")):
            raise LayerwiseError(
                f"Seq2SeqTask: the model ({type(model).__name__}) is not an encoder–decoder (needs encode and decode)"
            )
        cfg = getattr(model, "config", None)
        if cfg is not None and getattr(cfg, "pad_id", self.pad_id) != self.pad_id:
            raise ConfigError(f"Seq2SeqTask.pad_id: {self.pad_id}, but the model's pad_id is {cfg.pad_id}")

    def configure(self, config, source: BatchSource) -> None:
        if config.class_weights or config.oversample:
            raise ConfigError("TrainConfig.class_weights/oversample: only for classification tasks, not seq2seq")

    def make_source(self, data: Any, batch_size: int, seed: int = 0, shuffle: bool = True, oversample: bool = False) -> BatchSource:
        if hasattr(data, "tensors") and hasattr(data, "pad_id"):  # layerwise.data.EncodedPairs
            if data.pad_id != self.pad_id:
                raise LayerwiseError(f"Seq2SeqTask: the data is padded with id {data.pad_id}, the task expects {self.pad_id}")
            tensors = data.tensors()
        elif isinstance(data, (tuple, list)) and len(data) == 4 and all(isinstance(t, torch.Tensor) for t in data):
            tensors = tuple(data)
        else:
            raise LayerwiseError(
                "Seq2SeqTask: expected EncodedPairs (layerwise.data.encode_pairs) or a tuple of 4 tensors "
                f"(src, src_lengths, tgt_in, tgt_out), got {type(data).__name__}"
            )
        return PairBatches(tensors, batch_size, self.pad_id, seed, shuffle=shuffle)

    def model_inputs(self, batch: Batch) -> tuple[tuple, dict]:
        src, lengths, tgt_in, _ = batch
        return (src, tgt_in), {"src_lengths": lengths}

    def decode(self, model: nn.Module, src: torch.Tensor, src_lengths: torch.Tensor, max_len: int) -> torch.Tensor:
        """The decoded ids (B, L <= max_len), pad_id after each row's eos (greedy or best beam)."""
        from layerwise.models.seq2seq import beam_search, greedy_decode

        if self.search == "beam":
            return beam_search(model, src, self.beam_size, max_len, self.length_penalty, src_lengths=src_lengths).tokens[:, 0]
        return greedy_decode(model, src, max_len, src_lengths=src_lengths).tokens

    def loss(self, model: nn.Module, batch: Batch) -> tuple[torch.Tensor, torch.Tensor | None]:
        args, kwargs = self.model_inputs(batch)
        tgt_out = batch[-1]
        logits = model(*args, **kwargs)
        logits = getattr(logits, "logits", logits).float()  # (B, T, V)
        if logits.dim() != 3 or logits.shape[:2] != tgt_out.shape:
            raise LayerwiseError(
                f"Seq2SeqTask: expected logits of shape (batch, tgt_len, vocab) = ({tgt_out.shape[0]}, {tgt_out.shape[1]}, V), "
                f"got {tuple(logits.shape)}"
            )
        loss = F.cross_entropy(logits.flatten(0, 1), tgt_out.flatten(), ignore_index=self.pad_id,
                               label_smoothing=self.label_smoothing)
        if model.training:
            return loss, None
        return loss, self.decode(model, batch[0], batch[1], tgt_out.shape[1])

    def count(self, batch: Batch) -> int:
        return int((batch[-1] != self.pad_id).sum())

    def new_meter(self) -> _SequenceMeter:
        return _SequenceMeter(self.pad_id)

    def describe(self) -> dict:
        return {
            "task": "seq2seq",
            "pad_id": self.pad_id,
            "search": self.search,
            "beam_size": self.beam_size,
            "length_penalty": self.length_penalty,
            "label_smoothing": self.label_smoothing,
        }
