"""Recurrent text classifier: Embedding → a stacked nn.RNN/LSTM/GRU → pooling → Linear head.

The recurrent stack is one torch module with ``num_layers`` layers (kind "recurrent",
declared as ``num_layers`` weight layers: bidirectional directions run in parallel).

Parameter counts per layer l (input width i = embed_dim for l = 0, else D·h with D = 2 if
bidirectional else 1), per direction, in PyTorch's two-bias form (``bias_ih`` and ``bias_hh``):
``G·h·(i + h) + 2·G·h`` with G = 4 gates for LSTM, 3 for GRU, 1 for a plain RNN.
Keras keeps one bias vector per layer (``G·h·(i + h) + G·h``); for GRU it too has two
(``reset_after=True``), so only LSTM and plain RNN differ by G·h per layer and direction.

Padding: pass ``lengths`` (B,) for right-padded batches. The batch is then packed with
``pack_padded_sequence`` so padded steps never reach the recurrence: "last" pooling takes
each sequence's true final state and "mean"/"max" ignore padded positions. Without
``lengths`` every position counts (and the model runs on the meta device).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from layerwise.errors import InputShapeError
from layerwise.models.base import ModelConfig
from layerwise.models.ops import Dropout
from layerwise.models.registry import register_family, register_preset
from layerwise.roles import mark_weight_layer, set_kind

CELLS = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}
POOLINGS = ("last", "mean", "max")


@dataclass
class RNNConfig(ModelConfig):
    """A sequence classifier over token ids.

    vocab_size, embed_dim: the embedding table (vocab_size × embed_dim).
    hidden_size, num_layers, cell: the recurrent stack ("rnn" (tanh), "lstm" or "gru").
    bidirectional: run each layer in both directions (the head sees 2·hidden_size features).
    dropout: between stacked layers (torch's ``dropout`` argument) and before the head.
    num_classes: outputs of the head (raw scores; 1 for a binary sigmoid classifier).
    pooling: "last" (final hidden state of the last layer, both directions concatenated),
        "mean" or "max" over the time steps of the last layer's outputs.
    padding_idx: token id whose embedding stays zero and gets no gradient, or None.
    seq_len: sequence length of :meth:`RNNClassifier.example_inputs` (any length runs).
    """

    family: ClassVar[str] = "rnn"

    vocab_size: int = 10_000
    embed_dim: int = 128
    hidden_size: int = 128
    num_layers: int = 2
    cell: str = "lstm"
    bidirectional: bool = False
    dropout: float = 0.0
    num_classes: int = 2
    pooling: str = "last"
    padding_idx: int | None = None
    seq_len: int = 32

    def __post_init__(self) -> None:
        for name in ("vocab_size", "embed_dim", "hidden_size", "num_layers", "num_classes", "seq_len"):
            v = getattr(self, name)
            self.check(isinstance(v, int) and not isinstance(v, bool) and v > 0, name, "a positive integer")
        self.check(self.cell in CELLS, "cell", f"one of {', '.join(CELLS)}")
        self.check(isinstance(self.bidirectional, bool), "bidirectional", "true or false")
        self.check(
            isinstance(self.dropout, (int, float)) and 0.0 <= self.dropout < 1.0, "dropout", "a number in [0, 1)"
        )
        self.check(self.pooling in POOLINGS, "pooling", f"one of {', '.join(POOLINGS)}")
        self.check(
            self.padding_idx is None or (isinstance(self.padding_idx, int) and 0 <= self.padding_idx < self.vocab_size),
            "padding_idx",
            f"null or a token id in [0, {self.vocab_size})",
        )


class RNNClassifier(nn.Module):
    def __init__(self, config: RNNConfig):
        super().__init__()
        self.config = config
        c = config
        directions = 2 if c.bidirectional else 1
        self.embedding = set_kind(nn.Embedding(c.vocab_size, c.embed_dim, padding_idx=c.padding_idx), "embedding")
        self.rnn = CELLS[c.cell](
            c.embed_dim,
            c.hidden_size,
            num_layers=c.num_layers,
            batch_first=True,
            bidirectional=c.bidirectional,
            dropout=c.dropout if c.num_layers > 1 else 0.0,  # torch applies it between layers only
        )
        set_kind(self.rnn, "recurrent")
        mark_weight_layer(self.rnn, count=c.num_layers)
        self.dropout = Dropout(c.dropout) if c.dropout > 0 else nn.Identity()
        self.head = set_kind(nn.Linear(directions * c.hidden_size, c.num_classes), "head")

    def forward(self, tokens: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """tokens: (B, T) token ids; lengths: optional (B,) true lengths of right-padded rows."""
        if tokens.dim() != 2:
            raise InputShapeError(f"RNNClassifier: expected token ids of shape (B, T), got shape {tuple(tokens.shape)}")
        B, T = tokens.shape
        x = self.embedding(tokens)  # (B, T, E)
        mask = None
        if lengths is None:
            out, state = self.rnn(x)  # out: (B, T, D·H)
        else:
            if lengths.shape != (B,):
                raise InputShapeError(
                    f"RNNClassifier: expected lengths of shape ({B},) for tokens {tuple(tokens.shape)}, "
                    f"got {tuple(lengths.shape)}"
                )
            lengths_cpu = lengths.to("cpu", torch.int64)  # pack_padded_sequence wants them on the CPU
            if int(lengths_cpu.min()) < 1 or int(lengths_cpu.max()) > T:
                raise InputShapeError(f"RNNClassifier: expected lengths in [1, {T}], got {lengths_cpu.tolist()}")
            packed = pack_padded_sequence(x, lengths_cpu, batch_first=True, enforce_sorted=False)
            out_packed, state = self.rnn(packed)
            out, _ = pad_packed_sequence(out_packed, batch_first=True, total_length=T)  # (B, T, D·H)
            mask = torch.arange(T, device=tokens.device)[None, :] < lengths.to(tokens.device)[:, None]  # (B, T)
        h_n = state[0] if isinstance(state, tuple) else state  # (L·D, B, H); LSTM state is (h, c)
        if self.config.pooling == "last":
            d = 2 if self.config.bidirectional else 1
            feats = torch.cat(list(h_n[-d:]), dim=-1)  # (B, D·H): last layer, forward ‖ backward
        elif self.config.pooling == "mean":
            if mask is None:
                feats = out.mean(dim=1)  # (B, D·H)
            else:
                m = mask.unsqueeze(-1).to(out.dtype)  # (B, T, 1)
                feats = (out * m).sum(dim=1) / m.sum(dim=1)  # (B, D·H)
        else:
            if mask is not None:
                out = out.masked_fill(~mask.unsqueeze(-1), float("-inf"))  # (B, T, D·H)
            feats = out.amax(dim=1)  # (B, D·H)
        return self.head(self.dropout(feats))  # (B, num_classes)

    def example_inputs(self, batch_size: int = 1, seq_len: int | None = None) -> tuple[torch.Tensor]:
        """Random token ids of shape (batch_size, seq_len or config.seq_len) on the parameters' device."""
        device = next(self.parameters()).device
        T = seq_len or self.config.seq_len
        return (torch.randint(0, self.config.vocab_size, (batch_size, T), device=device),)


def build_rnn(config: RNNConfig) -> RNNClassifier:
    return RNNClassifier(config)


register_family("rnn", RNNConfig, build_rnn)

register_preset(
    "seed-lstm",
    "rnn",
    description=(
        "The seed article's Keras text classifier: Embedding(10000, 128) → LSTM(128, return_sequences=True) "
        "→ LSTM(128) → Dense(2)"
    ),
    reference_params=1_544_450,
    reference_source=(
        "Keras count_params() 1,543,426 plus PyTorch's second LSTM bias (4·128 per layer, 2 layers = 1,024); "
        "checked in tests/models/test_keras_parity.py"
    ),
    vocab_size=10_000,
    embed_dim=128,
    hidden_size=128,
    num_layers=2,
    cell="lstm",
    num_classes=2,
)
register_preset(
    "seed-lstm-binary",
    "rnn",
    description=(
        "The seed article's Keras sentiment model: Embedding(10000, 64) → LSTM(128) → Dense(1, sigmoid) (logit out)"
    ),
    reference_params=739_457,
    reference_source=(
        "Keras count_params() 738,945 plus PyTorch's second LSTM bias (4·128 = 512); "
        "checked in tests/models/test_keras_parity.py"
    ),
    vocab_size=10_000,
    embed_dim=64,
    hidden_size=128,
    num_layers=1,
    cell="lstm",
    num_classes=1,
)
register_preset(
    "rnn-tiny",
    "rnn",
    description="Tiny bidirectional GRU classifier for tests: vocab 100, embed 16, 2×GRU(16), 3 classes, length 12",
    vocab_size=100,
    embed_dim=16,
    hidden_size=16,
    num_layers=2,
    cell="gru",
    bidirectional=True,
    num_classes=3,
    padding_idx=0,
    seq_len=12,
)
