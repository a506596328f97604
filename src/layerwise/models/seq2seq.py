"""Encoder–decoder RNN with attention, for translation-like tasks.

Encoder: Embedding → GRU/LSTM stack (bidirectional by default; each direction gets
``hidden_size // 2`` units so its outputs and final states have ``hidden_size``
features, the OpenNMT "brnn" convention, and initialise the decoder directly).

Decoder (Luong et al. 2015, "Effective Approaches to Attention-based NMT", without
input feeding): Embedding → GRU/LSTM stack → attention of each decoder state over the
encoder outputs → attentional state ``tanh(W_c [context; h_t])`` → Linear to the
target vocabulary. Because attention follows the RNN, teacher forcing runs the whole
target in one RNN call; decoding runs the same code one token at a time.

Attention scores (``attention``):
- "additive": ``v·tanh(W_q h_t + W_k h_s)`` (Bahdanau et al. 2015),
- "dot": ``h_t·h_s`` (Luong),
- "general": ``h_t·W h_s`` (Luong).
Padded source positions get weight exactly 0.

Roles: embeddings "embedding", RNN stacks "recurrent", the attention module (score and
``W_c``) "attention", the output Linear "head"; the encoder and the decoder are the two
blocks. Sequences are right-padded with ``pad_id``; the decoder input starts with
``bos_id`` and generation stops at ``eos_id``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from layerwise.errors import InputShapeError
from layerwise.models.base import ModelConfig
from layerwise.models.ops import Dropout
from layerwise.models.registry import register_family, register_preset
from layerwise.roles import mark_block, set_kind

CELLS = {"gru": nn.GRU, "lstm": nn.LSTM}
SCORES = ("additive", "dot", "general")

# An RNN state: (num_layers, B, hidden_size) for a GRU, a pair of those for an LSTM.
State = torch.Tensor | tuple[torch.Tensor, torch.Tensor]


@dataclass
class Seq2SeqConfig(ModelConfig):
    """An attentional encoder–decoder.

    src_vocab, tgt_vocab: vocabulary sizes (they include the special ids).
    embed_dim: embedding width of both sides.
    hidden_size: decoder state width and encoder output width (even if the encoder is
        bidirectional: each direction then has hidden_size // 2 units).
    num_layers: RNN layers in the encoder and in the decoder.
    cell: "gru" or "lstm".
    bidirectional_encoder: read the source both ways.
    attention: score function, "additive", "dot" or "general".
    attention_dim: width of the additive score's hidden layer (default hidden_size).
    dropout: on embeddings, between RNN layers and before the output Linear.
    pad_id, bos_id, eos_id: special token ids (distinct, inside both vocabularies).
    tie_decoder_embeddings: share the decoder embedding with the output Linear
        (Press & Wolf 2017); needs embed_dim == hidden_size.
    """

    family: ClassVar[str] = "seq2seq"

    src_vocab: int = 1000
    tgt_vocab: int = 1000
    embed_dim: int = 64
    hidden_size: int = 128
    num_layers: int = 1
    cell: str = "gru"
    bidirectional_encoder: bool = True
    attention: str = "additive"
    attention_dim: int | None = None
    dropout: float = 0.0
    pad_id: int = 0
    bos_id: int = 1
    eos_id: int = 2
    tie_decoder_embeddings: bool = False

    def __post_init__(self) -> None:
        for name in ("src_vocab", "tgt_vocab", "embed_dim", "hidden_size", "num_layers"):
            v = getattr(self, name)
            self.check(isinstance(v, int) and not isinstance(v, bool) and v > 0, name, "a positive integer")
        self.check(self.cell in CELLS, "cell", f"one of {', '.join(CELLS)}")
        self.check(isinstance(self.bidirectional_encoder, bool), "bidirectional_encoder", "true or false")
        self.check(
            not self.bidirectional_encoder or self.hidden_size % 2 == 0,
            "hidden_size",
            "an even number when bidirectional_encoder is true (each direction gets half)",
        )
        self.check(self.attention in SCORES, "attention", f"one of {', '.join(SCORES)}")
        self.check(
            self.attention_dim is None
            or (
                isinstance(self.attention_dim, int)
                and not isinstance(self.attention_dim, bool)
                and self.attention_dim > 0
            ),
            "attention_dim",
            "null or a positive integer",
        )
        self.check(
            isinstance(self.dropout, (int, float)) and 0.0 <= self.dropout < 1.0, "dropout", "a number in [0, 1)"
        )
        specials = (self.pad_id, self.bos_id, self.eos_id)
        for name in ("pad_id", "bos_id", "eos_id"):
            v = getattr(self, name)
            self.check(
                isinstance(v, int) and 0 <= v < min(self.src_vocab, self.tgt_vocab),
                name,
                f"an id in [0, {min(self.src_vocab, self.tgt_vocab)}) (inside both vocabularies)",
            )
        self.check(len(set(specials)) == 3, "eos_id", "pad_id, bos_id and eos_id to be three different ids")
        self.check(
            min(self.src_vocab, self.tgt_vocab) > 3, "src_vocab", "both vocabularies larger than the 3 special ids"
        )
        self.check(isinstance(self.tie_decoder_embeddings, bool), "tie_decoder_embeddings", "true or false")
        self.check(
            not self.tie_decoder_embeddings or self.embed_dim == self.hidden_size,
            "tie_decoder_embeddings",
            f"embed_dim == hidden_size to tie (embed_dim={self.embed_dim}, hidden_size={self.hidden_size})",
        )


class Attention(nn.Module):
    """Scores each query against every memory position, masks padding, mixes the memory.

    forward(query (B, T, H), memory (B, S, H), mask (B, S) bool, True = real token)
    → (attentional state (B, T, H), weights (B, T, S)); weights sum to 1 over S.
    """

    def __init__(self, score: str, hidden_size: int, attention_dim: int):
        super().__init__()
        self.score = score
        if score == "additive":
            self.query_proj = nn.Linear(hidden_size, attention_dim, bias=False)
            self.key_proj = nn.Linear(hidden_size, attention_dim, bias=False)
            self.energy = nn.Linear(attention_dim, 1, bias=False)
        elif score == "general":
            self.key_proj = nn.Linear(hidden_size, hidden_size, bias=False)
        # Luong's eq. 5: the attentional state from [context; decoder state].
        self.combine = nn.Linear(2 * hidden_size, hidden_size, bias=False)

    def forward(
        self, query: torch.Tensor, memory: torch.Tensor, mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if self.score == "additive":
            q = self.query_proj(query)  # (B, T, A)
            k = self.key_proj(memory)  # (B, S, A)
            scores = self.energy(torch.tanh(q.unsqueeze(2) + k.unsqueeze(1))).squeeze(-1)  # (B, T, S)
        elif self.score == "general":
            scores = query @ self.key_proj(memory).transpose(1, 2)  # (B, T, S)
        else:
            scores = query @ memory.transpose(1, 2)  # (B, T, S)
        # The most negative finite value, not -inf: exp underflows to exactly 0 and a
        # fully masked row gives uniform weights instead of NaN.
        scores = scores.masked_fill(~mask.unsqueeze(1), torch.finfo(scores.dtype).min)  # (B, T, S)
        weights = scores.softmax(dim=-1)  # (B, T, S)
        context = weights @ memory  # (B, T, H)
        attended = torch.tanh(self.combine(torch.cat([context, query], dim=-1)))  # (B, T, H)
        return attended, weights


class Encoder(nn.Module):
    def __init__(self, config: Seq2SeqConfig):
        super().__init__()
        self.bidirectional = config.bidirectional_encoder
        directions = 2 if self.bidirectional else 1
        self.embed = set_kind(nn.Embedding(config.src_vocab, config.embed_dim, padding_idx=config.pad_id), "embedding")
        self.dropout = Dropout(config.dropout)
        self.rnn = set_kind(
            CELLS[config.cell](
                config.embed_dim,
                config.hidden_size // directions,
                num_layers=config.num_layers,
                batch_first=True,
                dropout=config.dropout if config.num_layers > 1 else 0.0,
                bidirectional=self.bidirectional,
            ),
            "recurrent",
        )

    def forward(self, src: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, State]:
        x = self.dropout(self.embed(src))  # (B, S, E)
        if src.device.type == "meta":  # no values to pack by; shapes are the same
            memory, state = self.rnn(x)  # (B, S, H)
        else:
            packed = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
            memory, state = self.rnn(packed)
            memory, _ = pad_packed_sequence(memory, batch_first=True, total_length=src.size(1))  # (B, S, H)
        if self.bidirectional:
            state = _map_state(state, _join_directions)
        return memory, state


def _join_directions(h: torch.Tensor) -> torch.Tensor:
    # (L*2, B, H/2), ordered layer-major then direction → (L, B, H): [forward; backward]
    layers2, batch, half = h.shape
    h = h.view(layers2 // 2, 2, batch, half)  # (L, 2, B, H/2)
    return torch.cat([h[:, 0], h[:, 1]], dim=-1)  # (L, B, H)


def _map_state(state: State, fn) -> State:
    if isinstance(state, tuple):
        return tuple(fn(s) for s in state)
    return fn(state)


class Decoder(nn.Module):
    def __init__(self, config: Seq2SeqConfig):
        super().__init__()
        self.embed = set_kind(nn.Embedding(config.tgt_vocab, config.embed_dim, padding_idx=config.pad_id), "embedding")
        self.dropout = Dropout(config.dropout)
        self.rnn = set_kind(
            CELLS[config.cell](
                config.embed_dim,
                config.hidden_size,
                num_layers=config.num_layers,
                batch_first=True,
                dropout=config.dropout if config.num_layers > 1 else 0.0,
            ),
            "recurrent",
        )
        self.attention = set_kind(
            Attention(config.attention, config.hidden_size, config.attention_dim or config.hidden_size), "attention"
        )
        self.out = set_kind(nn.Linear(config.hidden_size, config.tgt_vocab), "head")
        if config.tie_decoder_embeddings:
            self.out.weight = self.embed.weight

    def forward(
        self, tgt_in: torch.Tensor, state: State, memory: torch.Tensor, mask: torch.Tensor
    ) -> tuple[torch.Tensor, State, torch.Tensor]:
        x = self.dropout(self.embed(tgt_in))  # (B, T, E)
        h, state = self.rnn(x, state)  # (B, T, H)
        attended, weights = self.attention(h, memory, mask)  # (B, T, H), (B, T, S)
        logits = self.out(self.dropout(attended))  # (B, T, V)
        return logits, state, weights


class Encoded(NamedTuple):
    memory: torch.Tensor  # (B, S, H) encoder outputs
    mask: torch.Tensor  # (B, S) bool, True at real source tokens
    state: State  # initial decoder state


class Seq2Seq(nn.Module):
    def __init__(self, config: Seq2SeqConfig):
        super().__init__()
        self.config = config
        self.encoder = mark_block(Encoder(config))
        self.decoder = mark_block(Decoder(config))

    def source_mask(
        self, src: torch.Tensor, src_lengths: torch.Tensor | None = None, src_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """(B, S) bool, True at real tokens: from src_lengths, else src_mask, else src != pad_id."""
        if src_lengths is not None:
            if src_lengths.shape != src.shape[:1]:
                raise InputShapeError(
                    f"seq2seq: src_lengths has shape {tuple(src_lengths.shape)}, "
                    f"expected ({src.size(0)},) for src {tuple(src.shape)}"
                )
            return torch.arange(src.size(1), device=src.device) < src_lengths.to(src.device).unsqueeze(1)
        if src_mask is not None:
            if src_mask.shape != src.shape:
                raise InputShapeError(
                    f"seq2seq: src_mask has shape {tuple(src_mask.shape)}, expected the shape of src {tuple(src.shape)}"
                )
            return src_mask.to(device=src.device, dtype=torch.bool)
        return src != self.config.pad_id

    def encode(
        self, src: torch.Tensor, src_lengths: torch.Tensor | None = None, src_mask: torch.Tensor | None = None
    ) -> Encoded:
        """Run the encoder on right-padded src (B, S) → memory, mask and the decoder's first state."""
        if src.dim() != 2:
            raise InputShapeError(f"seq2seq: src has shape {tuple(src.shape)}, expected (batch, src_len) token ids")
        mask = self.source_mask(src, src_lengths, src_mask)  # (B, S)
        lengths = mask.sum(dim=1)  # (B,)
        if src.device.type != "meta" and bool((lengths < 1).any()):
            raise InputShapeError("seq2seq: a source sequence has no real tokens; expected at least one per row")
        memory, state = self.encoder(src, lengths)  # (B, S, H)
        return Encoded(memory, mask, state)

    def decode(
        self, tgt_in: torch.Tensor, encoded: Encoded, state: State | None = None
    ) -> tuple[torch.Tensor, State, torch.Tensor]:
        """Decoder over tgt_in (B, T) from ``state`` (default: the encoder's).

        Returns logits (B, T, V), the state after the last position, attention weights (B, T, S).
        """
        if tgt_in.dim() != 2 or tgt_in.size(0) != encoded.memory.size(0):
            raise InputShapeError(
                f"seq2seq: tgt_in has shape {tuple(tgt_in.shape)}, "
                f"expected ({encoded.memory.size(0)}, tgt_len) token ids"
            )
        return self.decoder(tgt_in, encoded.state if state is None else state, encoded.memory, encoded.mask)

    def forward(
        self,
        src: torch.Tensor,
        tgt_in: torch.Tensor,
        src_lengths: torch.Tensor | None = None,
        src_mask: torch.Tensor | None = None,
        return_attention: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Teacher-forced logits.

        src: (B, S) right-padded source ids; tgt_in: (B, T) target ids starting with bos_id;
        src_lengths (B,) or src_mask (B, S) mark the real source tokens (default: src != pad_id).
        Returns logits (B, T, tgt_vocab), and the attention weights (B, T, S) if return_attention.
        """
        logits, _, weights = self.decode(tgt_in, self.encode(src, src_lengths, src_mask))  # (B, T, V)
        return (logits, weights) if return_attention else logits

    def example_inputs(self, batch_size: int = 1, seq_len: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(src, tgt_in), both (batch_size, seq_len or 16), of an ordinary (non-special) token id."""
        cfg = self.config
        device = next(self.parameters()).device
        n = seq_len or 16
        token = min({0, 1, 2, 3} - {cfg.pad_id, cfg.bos_id, cfg.eos_id})
        src = torch.full((batch_size, n), token, dtype=torch.long, device=device)  # (B, S)
        tgt_in = torch.full((batch_size, n), token, dtype=torch.long, device=device)  # (B, T)
        tgt_in[:, 0] = cfg.bos_id
        return src, tgt_in


class Decoded(NamedTuple):
    tokens: torch.Tensor  # greedy: (B, L); beam: (B, K, L); pad_id after eos_id
    scores: torch.Tensor  # greedy: (B,) sum of log-probabilities; beam: (B, K), best first


def _never_generate(logp: torch.Tensor, cfg: Seq2SeqConfig) -> torch.Tensor:
    """Forbid pad_id and bos_id as outputs; scores stay log-probabilities under the full softmax."""
    logp = logp.clone()  # (N, V)
    logp[:, [cfg.pad_id, cfg.bos_id]] = -math.inf
    return logp


@torch.no_grad()
def greedy_decode(
    model: Seq2Seq,
    src: torch.Tensor,
    max_len: int = 50,
    src_lengths: torch.Tensor | None = None,
    src_mask: torch.Tensor | None = None,
) -> Decoded:
    """Pick the most likely token at each step, in eval mode.

    src: (B, S). Returns tokens (B, L ≤ max_len), not including bos_id, each row ending
    at its eos_id (then pad_id), and scores (B,): the summed log-probabilities (float64)
    of the tokens up to and including eos_id. pad_id and bos_id are never generated.
    """
    cfg = model.config
    was_training = model.training
    model.eval()
    try:
        encoded = model.encode(src, src_lengths, src_mask)
        batch = src.size(0)
        token = torch.full((batch, 1), cfg.bos_id, dtype=torch.long, device=src.device)  # (B, 1)
        state = encoded.state
        finished = torch.zeros(batch, dtype=torch.bool, device=src.device)  # (B,)
        scores = torch.zeros(batch, dtype=torch.float64, device=src.device)  # (B,)
        out = []
        for _ in range(max_len):
            logits, state, _ = model.decode(token, encoded, state)  # (B, 1, V)
            logp = _never_generate(F.log_softmax(logits[:, -1].double(), dim=-1), cfg)  # (B, V)
            best, nxt = logp.max(dim=-1)  # (B,)
            scores += torch.where(finished, 0.0, best)
            nxt = torch.where(finished, cfg.pad_id, nxt)
            out.append(nxt)
            finished |= nxt == cfg.eos_id
            token = nxt.unsqueeze(1)  # (B, 1)
            if bool(finished.all()):
                break
        tokens = torch.stack(out, dim=1) if out else torch.empty(batch, 0, dtype=torch.long, device=src.device)
        return Decoded(tokens, scores)
    finally:
        model.train(was_training)


def length_penalty_factor(length: torch.Tensor, alpha: float) -> torch.Tensor:
    """GNMT's length penalty ((5 + |Y|) / 6) ** alpha (Wu et al. 2016, eq. 14); 1 when alpha = 0."""
    return ((5.0 + length.double()) / 6.0) ** alpha


@torch.no_grad()
def beam_search(
    model: Seq2Seq,
    src: torch.Tensor,
    beam_size: int = 4,
    max_len: int = 50,
    length_penalty: float = 0.0,
    src_lengths: torch.Tensor | None = None,
    src_mask: torch.Tensor | None = None,
) -> Decoded:
    """Keep the beam_size best hypotheses per source sentence, in eval mode.

    A hypothesis that emits eos_id is finished: it stays in the beam with its score
    and competes with the live ones. Hypotheses are ranked by
    sum(log p) / length_penalty_factor(length, length_penalty), length counting eos_id.
    With beam_size=1 this is exactly greedy decoding.

    src: (B, S). Returns tokens (B, beam_size, L ≤ max_len) and scores (B, beam_size),
    sorted best first.
    """
    cfg = model.config
    if beam_size < 1:
        raise ValueError(f"beam_size must be >= 1, got {beam_size}")
    was_training = model.training
    model.eval()
    try:
        encoded = model.encode(src, src_lengths, src_mask)
        batch, k, device = src.size(0), beam_size, src.device
        encoded = Encoded(
            encoded.memory.repeat_interleave(k, dim=0),  # (B*K, S, H)
            encoded.mask.repeat_interleave(k, dim=0),  # (B*K, S)
            _map_state(encoded.state, lambda s: s.repeat_interleave(k, dim=1)),  # (L, B*K, H)
        )
        state = encoded.state
        scores = torch.zeros(batch, k, dtype=torch.float64, device=device)  # (B, K)
        scores[:, 1:] = -math.inf  # all beams start identical: expand only the first
        lengths = torch.zeros(batch, k, dtype=torch.long, device=device)  # (B, K)
        finished = torch.zeros(batch, k, dtype=torch.bool, device=device)  # (B, K)
        tokens = torch.empty(batch, k, 0, dtype=torch.long, device=device)  # (B, K, t)
        token = torch.full((batch * k, 1), cfg.bos_id, dtype=torch.long, device=device)  # (B*K, 1)
        vocab = cfg.tgt_vocab
        # A finished hypothesis has one continuation: pad_id at no cost.
        finished_row = torch.full((vocab,), -math.inf, dtype=torch.float64, device=device)  # (V,)
        finished_row[cfg.pad_id] = 0.0
        for _ in range(max_len):
            logits, state, _ = model.decode(token, encoded, state)  # (B*K, 1, V)
            logp = _never_generate(F.log_softmax(logits[:, -1].double(), dim=-1), cfg).view(
                batch, k, vocab
            )  # (B, K, V)
            logp = torch.where(finished.unsqueeze(-1), finished_row, logp)
            cand = scores.unsqueeze(-1) + logp  # (B, K, V)
            cand_len = torch.where(finished, lengths, lengths + 1).unsqueeze(-1).expand(batch, k, vocab)  # (B, K, V)
            key = cand / length_penalty_factor(cand_len, length_penalty)  # (B, K, V)
            _, idx = key.reshape(batch, k * vocab).topk(k, dim=-1)  # (B, K)
            origin, nxt = idx // vocab, idx % vocab  # (B, K)
            scores = cand.reshape(batch, -1).gather(1, idx)
            lengths = cand_len.reshape(batch, -1).gather(1, idx)
            finished = finished.gather(1, origin) | (nxt == cfg.eos_id)
            tokens = torch.cat(
                [tokens.gather(1, origin.unsqueeze(-1).expand(-1, -1, tokens.size(2))), nxt.unsqueeze(-1)], dim=-1
            )  # (B, K, t+1)
            flat = (origin + torch.arange(batch, device=device).unsqueeze(1) * k).view(-1)  # (B*K,)
            state = _map_state(state, lambda s: s.index_select(1, flat))
            token = nxt.view(batch * k, 1)
            if bool(finished.all()):
                break
        final = scores / length_penalty_factor(lengths, length_penalty)  # (B, K)
        final, order = final.sort(dim=-1, descending=True)
        tokens = tokens.gather(1, order.unsqueeze(-1).expand(-1, -1, tokens.size(2)))
        return Decoded(tokens, final)
    finally:
        model.train(was_training)


def build_seq2seq(config: Seq2SeqConfig) -> Seq2Seq:
    return Seq2Seq(config)


register_family("seq2seq", Seq2SeqConfig, build_seq2seq)

register_preset(
    "seq2seq-tiny",
    "seq2seq",
    description=(
        "Tiny attentional GRU encoder–decoder for tests: vocab 32, embed 16, hidden 32, "
        "bidirectional encoder, additive attention"
    ),
    src_vocab=32,
    tgt_vocab=32,
    embed_dim=16,
    hidden_size=32,
    num_layers=1,
    cell="gru",
    bidirectional_encoder=True,
    attention="additive",
)
register_preset(
    "seq2seq-gru-attn",
    "seq2seq",
    description=(
        "Small translation model (the seed article's 'Seq2Seq with attention'): 8k/8k BPE vocab, "
        "embed 256, 2-layer GRU of 512 (bidirectional encoder), additive attention, dropout 0.2"
    ),
    src_vocab=8000,
    tgt_vocab=8000,
    embed_dim=256,
    hidden_size=512,
    num_layers=2,
    cell="gru",
    bidirectional_encoder=True,
    attention="additive",
    dropout=0.2,
)
register_preset(
    "seq2seq-char",
    "seq2seq",
    description=(
        "Character-level translator for the generated tasks (number words → digits, dates → ISO): "
        "one shared 40-character vocabulary (set from the data), embed 32, bidirectional GRU encoder "
        "and GRU decoder of 128, additive attention"
    ),
    src_vocab=40,
    tgt_vocab=40,
    embed_dim=32,
    hidden_size=128,
    num_layers=1,
    cell="gru",
    bidirectional_encoder=True,
    attention="additive",
)
