"""Evaluation metrics: loss, perplexity, accuracy, precision, recall, F1, confusion matrix.

Conventions follow scikit-learn (and are tested against it): the confusion matrix has
true classes in rows and predictions in columns; a precision or recall with a zero
denominator is 0; "macro" averages over the classes that occur in the labels or the
predictions; "binary" reports the ``positive`` class alone.

The meters accumulate sums only (loss·count, count, a confusion matrix), so
distributed evaluation adds the meters of every process with one all-reduce.
"""

from __future__ import annotations

import math

import torch


def confusion_matrix(y_true: torch.Tensor, y_pred: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(num_classes, num_classes) int64 counts: row = true class, column = predicted class."""
    y_true = torch.as_tensor(y_true).reshape(-1).long().cpu()
    y_pred = torch.as_tensor(y_pred).reshape(-1).long().cpu()
    if y_true.shape != y_pred.shape:
        raise ValueError(f"confusion_matrix: {y_true.numel()} labels but {y_pred.numel()} predictions")
    flat = y_true * num_classes + y_pred
    return torch.bincount(flat, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def accuracy(cm: torch.Tensor) -> float:
    total = int(cm.sum())
    return float(cm.diagonal().sum()) / total if total else 0.0


def _div(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.where(b > 0, a / b.clamp(min=1), torch.zeros_like(a))


def per_class(cm: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-class (precision, recall, f1, support), each (num_classes,) float64 (support int64)."""
    cm = cm.double()
    tp = cm.diagonal()
    predicted = cm.sum(dim=0)
    support = cm.sum(dim=1)
    precision = _div(tp, predicted)
    recall = _div(tp, support)
    f1 = _div(2 * tp, predicted + support)  # = 2PR/(P+R), and 0 when tp = 0
    return precision, recall, f1, support.long()


def precision_recall_f1(cm: torch.Tensor, average: str = "macro", positive: int = 1) -> tuple[float, float, float]:
    """(precision, recall, f1) from a confusion matrix; ``average`` "macro" or "binary"."""
    p, r, f, support = per_class(cm)
    if average == "binary":
        if not 0 <= positive < cm.shape[0]:
            raise ValueError(f"precision_recall_f1: positive class {positive} not in 0..{cm.shape[0] - 1}")
        return float(p[positive]), float(r[positive]), float(f[positive])
    if average != "macro":
        raise ValueError(f"precision_recall_f1: average must be 'macro' or 'binary', got {average!r}")
    present = (support > 0) | (cm.sum(dim=0) > 0)
    if not bool(present.any()):
        return 0.0, 0.0, 0.0
    return float(p[present].mean()), float(r[present].mean()), float(f[present].mean())


def perplexity(loss: float) -> float:
    """exp(mean cross-entropy in nats); inf when it overflows."""
    try:
        return math.exp(loss)
    except OverflowError:
        return float("inf")


def classification_metrics(
    cm: torch.Tensor,
    positive: int | None = None,
    label_names: list[str] | None = None,
) -> dict:
    """accuracy; precision, recall, f1 (binary for ``positive``, or for class 1 of a
    two-class problem; macro otherwise); the macro averages as ``*_macro``; per-class
    values and the confusion matrix as nested lists."""
    n = cm.shape[0]
    out: dict = {"accuracy": accuracy(cm)}
    pm, rm, fm = precision_recall_f1(cm, "macro")
    out.update(precision_macro=pm, recall_macro=rm, f1_macro=fm)
    if positive is None and n == 2:
        positive = 1
    if positive is not None:
        pb, rb, fb = precision_recall_f1(cm, "binary", positive)
        out.update(precision=pb, recall=rb, f1=fb, positive_class=positive)
        if label_names is not None:
            out["positive_label"] = label_names[positive]
    else:
        out.update(precision=pm, recall=rm, f1=fm)
    p, r, f, s = per_class(cm)
    names = label_names or [str(i) for i in range(n)]
    out["per_class"] = {
        names[i]: {"precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]), "support": int(s[i])}
        for i in range(n)
    }
    out["confusion_matrix"] = cm.tolist()
    return out


class LossMeter:
    """Mean of a loss over items (tokens or examples): add(mean_loss, count)."""

    def __init__(self) -> None:
        self.total = torch.zeros((), dtype=torch.float64)
        self.count = torch.zeros((), dtype=torch.float64)

    def add(self, loss: torch.Tensor | float, count: int) -> None:
        self.total += float(loss) * count
        self.count += count

    def tensors(self) -> list[torch.Tensor]:
        """The sums, for an all-reduce across processes."""
        return [self.total, self.count]

    @property
    def mean(self) -> float:
        return float(self.total / self.count) if float(self.count) else float("nan")


class LanguageModelMeter(LossMeter):
    def compute(self) -> dict:
        loss = self.mean
        return {"loss": loss, "perplexity": perplexity(loss), "tokens": int(self.count)}


class ClassificationMeter(LossMeter):
    """Loss plus a running confusion matrix; compute() gives :func:`classification_metrics`."""

    def __init__(self, num_classes: int, positive: int | None = None, label_names: list[str] | None = None) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.positive = positive
        self.label_names = label_names
        self.cm = torch.zeros(num_classes, num_classes, dtype=torch.int64)

    def update(self, loss: torch.Tensor | float, predictions: torch.Tensor, labels: torch.Tensor) -> None:
        self.add(loss, labels.numel())
        self.cm += confusion_matrix(labels, predictions, self.num_classes)

    def tensors(self) -> list[torch.Tensor]:
        return [self.total, self.count, self.cm]

    def compute(self) -> dict:
        return {"loss": self.mean, **classification_metrics(self.cm, self.positive, self.label_names)}


def sequence_matches(predictions: torch.Tensor, targets: torch.Tensor, pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per row of right-padded id sequences (B, T): whether the prediction equals the target
    exactly (every position, its end marker and padding included), and how many of the
    target's real (non-pad) positions it gets right. A prediction of another width is cut or
    padded with ``pad_id`` to T first (longer than T can only be wrong: T holds the target's end)."""
    targets = torch.as_tensor(targets)
    predictions = torch.as_tensor(predictions).to(targets.device)
    b, t = targets.shape
    if predictions.shape[0] != b:
        raise ValueError(f"sequence_matches: {predictions.shape[0]} predictions for {b} targets")
    extra_real = torch.zeros(b, dtype=torch.bool, device=targets.device)
    if predictions.shape[1] > t:
        extra_real = (predictions[:, t:] != pad_id).any(dim=1)
        predictions = predictions[:, :t]
    elif predictions.shape[1] < t:
        predictions = torch.cat([predictions, predictions.new_full((b, t - predictions.shape[1]), pad_id)], dim=1)
    same = predictions == targets  # (B, T)
    exact = same.all(dim=1) & ~extra_real
    real = targets != pad_id
    return exact, (same & real).sum(dim=1)


class SequenceMeter(LossMeter):
    """Loss per target token, and for decoded outputs: ``exact_match`` (the share of sequences
    decoded exactly) and ``token_accuracy`` (the share of target tokens, end marker included,
    that the decoded output has at the same position)."""

    def __init__(self, pad_id: int) -> None:
        super().__init__()
        self.pad_id = pad_id
        self.exact = torch.zeros((), dtype=torch.float64)
        self.sequences = torch.zeros((), dtype=torch.float64)
        self.token_correct = torch.zeros((), dtype=torch.float64)
        self.token_total = torch.zeros((), dtype=torch.float64)

    def update(self, loss: torch.Tensor | float, predictions: torch.Tensor | None, targets: torch.Tensor) -> None:
        real = targets != self.pad_id
        self.add(loss, int(real.sum()))
        if predictions is None:
            return
        exact, correct = sequence_matches(predictions, targets, self.pad_id)
        self.exact += float(exact.sum())
        self.sequences += targets.shape[0]
        self.token_correct += float(correct.sum())
        self.token_total += float(real.sum())

    def tensors(self) -> list[torch.Tensor]:
        return [self.total, self.count, self.exact, self.sequences, self.token_correct, self.token_total]

    def compute(self) -> dict:
        loss = self.mean
        out = {"loss": loss, "perplexity": perplexity(loss), "tokens": int(self.count)}
        if float(self.sequences):
            out["exact_match"] = float(self.exact / self.sequences)
            out["token_accuracy"] = float(self.token_correct / self.token_total)
            out["sequences"] = int(self.sequences)
        return out
