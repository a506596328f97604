"""BERT: a bidirectional transformer encoder with post-LN blocks (Devlin et al., 2019).

Embeddings (token + position + token type, LayerNorm, dropout) feed ``n_layer``
blocks; each block is self-attention → add & LayerNorm → GELU MLP → add &
LayerNorm. A pooler (dense + tanh on the first token) and one optional task head
sit on top. The layout follows Hugging Face's ``BertModel`` closely enough that
:mod:`layerwise.models.bert_convert` loads its checkpoints with a key rename.

``Bert.forward(input_ids, attention_mask=None, token_type_ids=None)`` returns

- head "none": ``(last_hidden_state (B, T, C), pooled (B, C) or None without a pooler)``;
- head "sequence_classification": logits ``(B, num_labels)``;
- head "token_classification": logits ``(B, T, num_labels)``;
- head "masked_lm": logits ``(B, T, vocab_size)``.

Roles for the analysis: the embeddings container is "embedding", each block's
self-attention container "attention" and its feed-forward container "mlp", every
encoder LayerNorm "norm", the task head "head"; each encoder layer is a block.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from layerwise.errors import InputShapeError
from layerwise.models.base import ModelConfig
from layerwise.models.ops import Dropout, Tokens, attention, attention_with_probs, has_values
from layerwise.models.registry import register_family, register_preset
from layerwise.roles import mark_block, set_kind

HEADS = ("none", "sequence_classification", "token_classification", "masked_lm")
CLASSIFIER_POOLINGS = ("cls", "mean")
# "gelu" is the exact erf form BERT was trained with; "gelu_tanh" is the tanh
# approximation (Hugging Face's "gelu_new" / "gelu_pytorch_tanh").
BERT_ACTIVATIONS = ("gelu", "gelu_tanh", "relu", "silu")


def make_bert_activation(name: str) -> nn.Module:
    if name == "gelu":
        return nn.GELU()
    if name == "gelu_tanh":
        return nn.GELU(approximate="tanh")
    if name == "relu":
        return nn.ReLU()
    return nn.SiLU()


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_prob(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and 0.0 <= v < 1.0


@dataclass
class BertConfig(ModelConfig):
    """A BERT encoder and its optional task head.

    vocab_size, max_position, type_vocab_size: sizes of the token, position and
        token-type (segment) embedding tables.
    hidden: model width C; n_layer: encoder blocks; n_head: attention heads (C % n_head == 0);
    intermediate: width of each block's MLP.
    dropout: on embeddings and after each attention / MLP output (Hugging Face's hidden_dropout_prob);
    attention_dropout: on attention probabilities; classifier_dropout: before a
        classification head (``None``: same as ``dropout``).
    layer_norm_eps, activation (gelu, gelu_tanh, relu, silu), pad_token_id (its
        embedding row starts at zero and gets no gradient; ``None`` for none), init_std.
    pooler: whether the model has the dense + tanh pooler on the first token.
    head: "none", "sequence_classification", "token_classification" or "masked_lm".
    num_labels: outputs of a classification head.
    classifier_pooling: how sequence classification summarises the sequence:
        "cls" (the pooler's output, as in BERT; needs ``pooler``) or "mean"
        (mean of the unpadded tokens' hidden states, as sentence-transformers; no pooler).

    A pooler that nothing reads would hold parameters that never get a gradient,
    so ``pooler`` must be true for head "sequence_classification" with "cls"
    pooling and false for the other heads (as in Hugging Face's task models).
    """

    family: ClassVar[str] = "bert"

    vocab_size: int = 30522
    max_position: int = 512
    type_vocab_size: int = 2
    hidden: int = 768
    n_layer: int = 12
    n_head: int = 12
    intermediate: int = 3072
    dropout: float = 0.1
    attention_dropout: float = 0.1
    classifier_dropout: float | None = None
    layer_norm_eps: float = 1e-12
    activation: str = "gelu"
    pad_token_id: int | None = 0
    init_std: float = 0.02
    pooler: bool = True
    head: str = "none"
    num_labels: int = 2
    classifier_pooling: str = "cls"

    def __post_init__(self) -> None:
        for name in ("vocab_size", "max_position", "type_vocab_size", "hidden", "n_layer", "n_head", "intermediate"):
            v = getattr(self, name)
            self.check(_is_int(v) and v >= 1, name, "a positive integer")
        self.check(self.hidden % self.n_head == 0, "hidden", f"a multiple of n_head ({self.n_head})")
        self.check(_is_prob(self.dropout), "dropout", "a number in [0, 1)")
        self.check(_is_prob(self.attention_dropout), "attention_dropout", "a number in [0, 1)")
        self.check(
            self.classifier_dropout is None or _is_prob(self.classifier_dropout),
            "classifier_dropout",
            "null or a number in [0, 1)",
        )
        self.check(
            isinstance(self.layer_norm_eps, (int, float)) and self.layer_norm_eps > 0,
            "layer_norm_eps",
            "a positive number",
        )
        self.check(self.activation in BERT_ACTIVATIONS, "activation", f"one of {', '.join(BERT_ACTIVATIONS)}")
        self.check(
            self.pad_token_id is None or (_is_int(self.pad_token_id) and 0 <= self.pad_token_id < self.vocab_size),
            "pad_token_id",
            f"null or an integer in [0, vocab_size={self.vocab_size})",
        )
        self.check(isinstance(self.init_std, (int, float)) and self.init_std > 0, "init_std", "a positive number")
        self.check(isinstance(self.pooler, bool), "pooler", "true or false")
        self.check(self.head in HEADS, "head", f"one of {', '.join(HEADS)}")
        self.check(_is_int(self.num_labels) and self.num_labels >= 1, "num_labels", "a positive integer")
        self.check(
            self.classifier_pooling in CLASSIFIER_POOLINGS,
            "classifier_pooling",
            f"one of {', '.join(CLASSIFIER_POOLINGS)}",
        )
        if self.head == "sequence_classification":
            needs = self.classifier_pooling == "cls"
            self.check(
                self.pooler == needs,
                "pooler",
                f"{str(needs).lower()} for head 'sequence_classification' with classifier_pooling "
                f"{self.classifier_pooling!r} (the {'cls' if needs else 'mean'} pooling "
                f"{'reads' if needs else 'does not read'} the pooler)",
            )
        elif self.head != "none":
            self.check(
                not self.pooler,
                "pooler",
                f"false for head {self.head!r} (the head does not read the pooler; set pooler=false)",
            )

    @property
    def head_dim(self) -> int:
        return self.hidden // self.n_head


def mean_pool(hidden: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean of the hidden states of the unpadded tokens.

    hidden: (B, T, C); attention_mask: (B, T) with 1 (or True) for real tokens, or
    ``None`` for no padding. Returns (B, C). A row with no real token gives zeros.
    """
    if attention_mask is None:
        return hidden.mean(dim=1)  # (B, C)
    m = attention_mask.to(hidden.dtype).unsqueeze(-1)  # (B, T, 1)
    total = (hidden * m).sum(dim=1)  # (B, C)
    # The clamp matches sentence-transformers' pooling and keeps all-padding rows finite.
    return total / m.sum(dim=1).clamp(min=1e-9)  # (B, C)


def _key_mask(attention_mask: torch.Tensor | None) -> torch.Tensor | None:
    """(B, T) 1/0 attention mask → (B, 1, 1, T) bool key mask, or None when nothing is padded.

    Without a mask, attention can take the fused kernel; on CPU the check is a cheap
    reduction (on an accelerator it would be a host sync, so the mask is kept there).
    """
    if attention_mask is None:
        return None
    keep = attention_mask.bool()
    if keep.device.type == "cpu" and has_values(keep) and bool(keep.all()):
        return None
    return keep[:, None, None, :]


class BertEmbeddings(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.word = nn.Embedding(config.vocab_size, config.hidden, padding_idx=config.pad_token_id)
        self.position = nn.Embedding(config.max_position, config.hidden)
        self.token_type = nn.Embedding(config.type_vocab_size, config.hidden)
        self.norm = set_kind(nn.LayerNorm(config.hidden, eps=config.layer_norm_eps), "norm")
        self.drop = Dropout(config.dropout)

    def forward(
        self, input_ids: torch.Tensor, token_type_ids: torch.Tensor, positions: torch.Tensor | None = None
    ) -> torch.Tensor:
        # input_ids, token_type_ids: (B, T), or (N,) real tokens with their ``positions`` (N,)
        if positions is None:
            positions = torch.arange(input_ids.shape[1], device=input_ids.device)  # (T,)
        x = self.word(input_ids) + self.token_type(token_type_ids) + self.position(positions)  # (B, T, C) / (N, C)
        return self.drop(self.norm(x))


class BertSelfAttention(nn.Module):
    """Multi-head self-attention with separate query, key and value projections, and the output dense.

    Inside :class:`layerwise.models.ops.record_attention` it forms the probabilities
    explicitly and keeps them in ``attention_probs`` (B, n_head, T, T); otherwise it runs
    SDPA's fused kernel."""

    keep_attention = False  # set per instance by record_attention only
    attention_probs: torch.Tensor | None = None

    def __init__(self, config: BertConfig):
        super().__init__()
        C = config.hidden
        self.n_head = config.n_head
        self.query = nn.Linear(C, C)
        self.key = nn.Linear(C, C)
        self.value = nn.Linear(C, C)
        self.out = nn.Linear(C, C)
        self.attention_dropout = config.attention_dropout
        self.drop = Dropout(config.dropout)

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor | None, tokens: Tokens | None = None) -> torch.Tensor:
        # x: (B, T, C), or (N, C) real tokens only when ``tokens`` says where they sit;
        # key_mask: (B, 1, 1, T) bool, True where a key may be attended to.
        C = x.shape[-1]
        B, T = (x.shape[0], x.shape[1]) if tokens is None else (tokens.batch, tokens.seq_len)
        hs = C // self.n_head

        def heads(t: torch.Tensor) -> torch.Tensor:  # (B, T, C) or (N, C) → (B, nh, T, hs)
            if tokens is not None:  # back to the padded layout, zeros at the padding
                t = tokens.pad(t)
            return t.view(B, T, self.n_head, hs).transpose(1, 2)

        q, k, v = heads(self.query(x)), heads(self.key(x)), heads(self.value(x))  # (B, nh, T, hs)
        p = self.attention_dropout if self.training else 0.0
        if self.keep_attention:
            y, self.attention_probs = attention_with_probs(q, k, v, key_mask, dropout_p=p)
        else:
            y = attention(q, k, v, key_mask, dropout_p=p)  # (B, nh, T, hs)
        y = y.transpose(1, 2).reshape(B, T, C)  # (B, T, C)
        if tokens is not None:
            y = tokens.unpad(y)  # (N, C)
        return self.drop(self.out(y))  # (B, T, C) or (N, C)


class BertMLP(nn.Module):
    """The block's feed-forward part: up to ``intermediate``, activation, back down to ``hidden``."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.up = nn.Linear(config.hidden, config.intermediate)
        self.act = make_bert_activation(config.activation)
        self.down = nn.Linear(config.intermediate, config.hidden)
        self.drop = Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: (B, T, C)
        h = self.act(self.up(x))  # (B, T, intermediate)
        return self.drop(self.down(h))  # (B, T, C)


class BertLayer(nn.Module):
    """Post-LN block: x = LN(x + attention(x)); x = LN(x + mlp(x))."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.attention = set_kind(BertSelfAttention(config), "attention")
        self.attention_norm = set_kind(nn.LayerNorm(config.hidden, eps=config.layer_norm_eps), "norm")
        self.mlp = set_kind(BertMLP(config), "mlp")
        self.mlp_norm = set_kind(nn.LayerNorm(config.hidden, eps=config.layer_norm_eps), "norm")

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor | None, tokens: Tokens | None = None) -> torch.Tensor:
        # x: (B, T, C), or (N, C) with ``tokens`` (see BertSelfAttention)
        x = self.attention_norm(x + self.attention(x, key_mask, tokens))
        return self.mlp_norm(x + self.mlp(x))


class BertPooler(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden, config.hidden)
        self.act = nn.Tanh()

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.act(self.dense(hidden[:, 0]))  # (B, C)


class ClassifierHead(nn.Module):
    """Dropout then a Linear to ``num_labels``, on a pooled (B, C) or per-token (B, T, C) input."""

    def __init__(self, config: BertConfig):
        super().__init__()
        p = config.dropout if config.classifier_dropout is None else config.classifier_dropout
        self.drop = Dropout(p)
        self.classifier = nn.Linear(config.hidden, config.num_labels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.drop(x))  # (..., num_labels)


class MaskedLMHead(nn.Module):
    """Transform (dense, activation, LayerNorm), then the decoder to the vocabulary.

    The decoder's weight is the word-embedding matrix itself (the same Parameter,
    tied by :class:`Bert`), so it is counted once; its bias is the head's own.
    """

    def __init__(self, config: BertConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden, config.hidden)
        self.act = make_bert_activation(config.activation)
        self.norm = nn.LayerNorm(config.hidden, eps=config.layer_norm_eps)
        self.decoder = nn.Linear(config.hidden, config.vocab_size)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        h = self.norm(self.act(self.dense(hidden)))  # (B, T, C)
        return self.decoder(h)  # (B, T, V)


class Bert(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.config = config
        self.embeddings = set_kind(BertEmbeddings(config), "embedding")
        self.layers = nn.ModuleList(mark_block(BertLayer(config)) for _ in range(config.n_layer))
        # The pooler is pretrained with the encoder (BERT's next-sentence objective) and
        # ships in bare-encoder checkpoints, so it is body, not task head: a linear
        # probe or head-only fine-tune leaves it frozen. It is a dense layer with a
        # nonlinearity, i.e. a one-layer feed-forward transform, hence kind "mlp".
        self.pooler = set_kind(BertPooler(config), "mlp") if config.pooler else None
        self.head: nn.Module | None = None
        if config.head in ("sequence_classification", "token_classification"):
            self.head = set_kind(ClassifierHead(config), "head")
        elif config.head == "masked_lm":
            self.head = set_kind(MaskedLMHead(config), "head")
        self.apply(self._init_weights)
        if config.head == "masked_lm":
            # Tie after initialising, so the decoder's init cannot overwrite the embedding.
            self.head.decoder.weight = self.embeddings.word.weight
            nn.init.zeros_(self.head.decoder.bias)

    def _init_weights(self, module: nn.Module) -> None:
        # BERT's initialisation: N(0, 0.02) weights, zero biases, zero padding embedding.
        std = self.config.init_std
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=std)
            if module.padding_idx is not None:
                with torch.no_grad():
                    module.weight[module.padding_idx].zero_()

    def _check_inputs(self, input_ids, attention_mask, token_type_ids) -> None:
        cfg = self.config
        if not isinstance(input_ids, torch.Tensor) or input_ids.dim() != 2:
            got = tuple(input_ids.shape) if isinstance(input_ids, torch.Tensor) else type(input_ids).__name__
            raise InputShapeError(f"Bert.forward: input_ids must be a (batch, seq_len) tensor of token ids, got {got}")
        if input_ids.dtype not in (torch.long, torch.int32):
            raise InputShapeError(f"Bert.forward: input_ids must be integer token ids, got dtype {input_ids.dtype}")
        T = input_ids.shape[1]
        if T > cfg.max_position:
            raise InputShapeError(
                f"Bert.forward: sequence length {T} exceeds max_position={cfg.max_position} "
                f"(position embedding table); truncate the input"
            )
        for name, t in (("attention_mask", attention_mask), ("token_type_ids", token_type_ids)):
            if t is not None and tuple(t.shape) != tuple(input_ids.shape):
                raise InputShapeError(
                    f"Bert.forward: {name} shape {tuple(t.shape)} does not match "
                    f"input_ids shape {tuple(input_ids.shape)}"
                )

    def encode(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The encoder's last hidden state (B, T, C), whatever the head.

        input_ids: (B, T) token ids; attention_mask: (B, T), 1/True for real tokens
        and 0/False for padding (padding keys are not attended to); token_type_ids:
        (B, T) segment ids, zeros when omitted.
        """
        self._check_inputs(input_ids, attention_mask, token_type_ids)
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)  # (B, T)
        key_mask = _key_mask(attention_mask)  # (B, 1, 1, T) or None
        x = self.embeddings(input_ids, token_type_ids)  # (B, T, C)
        for layer in self.layers:
            x = layer(x, key_mask)  # (B, T, C)
        return x

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
    ):
        """See the module docstring for what each head returns; arguments as :meth:`encode`."""
        head = self.config.head
        if head == "sequence_classification" and attention_mask is not None:
            # through the stages, which skip the padding
            state = self.initial_state(input_ids, attention_mask, token_type_ids)
            return self.run_stages(state, 0, self.config.n_layer + 3)[0]  # (B, num_labels)
        hidden = self.encode(input_ids, attention_mask, token_type_ids)  # (B, T, C)
        if head == "none":
            pooled = self.pooler(hidden) if self.pooler is not None else None  # (B, C)
            return hidden, pooled
        if head == "sequence_classification":
            if self.config.classifier_pooling == "cls":
                summary = self.pooler(hidden)  # (B, C)
            else:
                summary = mean_pool(hidden, attention_mask)  # (B, C)
            return self.head(summary)  # (B, num_labels)
        return self.head(hidden)  # (B, T, num_labels) or (B, T, V)

    # A padded batch skips its padding: every Linear, norm, activation and dropout runs
    # on the N real tokens only (attention goes back to the padded layout, keys masked),
    # as in "unpadded" BERT training. The pooled summary, and so the logits and every
    # gradient, are those of the padded computation (tested); only the hidden states at
    # padding positions, which no pooling reads, are never computed. Sequence
    # classification only, since ``encode`` returns every position.
    def _tokens(self, attention_mask: torch.Tensor) -> Tokens | None:
        """Where the real tokens are, or None to run padded (no padding, meta or fake tensors, or
        CLS pooling of a batch whose position 0 is padding: the pooler reads it anyway)."""
        if not has_values(attention_mask):
            return None
        keep = attention_mask.bool()  # (B, T)
        if bool(keep.all()):
            return None
        if self.config.classifier_pooling == "cls" and not bool(keep[:, 0].all()):
            return None
        B, T = keep.shape
        return Tokens(keep.flatten().nonzero().squeeze(1), B, T)

    # Stages, for caching the output of a frozen prefix (layerwise.finetune.cache): the
    # sequence classifier as a chain of stages, each mapping a tuple of tensors to the next.
    def stage_names(self) -> list[str]:
        if self.config.head != "sequence_classification":
            raise InputShapeError("Bert: stages are defined for the sequence classification head only")
        return ["embeddings", *[f"layers.{i}" for i in range(self.config.n_layer)], "pool", "head"]

    def stage_modules(self, i: int) -> list[nn.Module]:
        n = self.config.n_layer
        if i == 0:
            return [self.embeddings]
        if i <= n:
            return [self.layers[i - 1]]
        if i == n + 1:
            return [self.pooler] if (self.config.classifier_pooling == "cls" and self.pooler is not None) else []
        return [self.head]

    def initial_state(self, input_ids, attention_mask=None, token_type_ids=None) -> tuple:
        self._check_inputs(input_ids, attention_mask, token_type_ids)
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        return (input_ids, attention_mask, token_type_ids)

    def run_stages(self, state: tuple, start: int, stop: int) -> tuple:
        """Stages ``start:stop``. States between stages: (ids, mask, types) → (hidden (B, T, C),
        mask) after each of embeddings and layers → (pooled (B, C),) → (logits,). Inside one
        call a padded batch runs unpadded (see :meth:`_tokens`) and comes back padded."""
        n = self.config.n_layer
        tokens: Tokens | None = None  # set while the hidden state holds the real tokens only, (N, C)
        key_mask: torch.Tensor | None = None
        for i in range(start, stop):
            if i == 0:
                ids, mask, types = state
                tokens = self._tokens(mask)
                if tokens is None:
                    x = self.embeddings(ids, types)  # (B, T, C)
                else:
                    pick = tokens.index
                    x = self.embeddings(ids.flatten()[pick], types.flatten()[pick], pick % tokens.seq_len)  # (N, C)
                state = (x, mask)
            elif i <= n:
                x, mask = state
                if i == start and (tokens := self._tokens(mask)) is not None:  # resuming inside the encoder
                    x = tokens.unpad(x)  # (N, C)
                if i == start or i == 1:  # the padding is checked once per call
                    key_mask = _key_mask(mask) if tokens is None else mask.bool()[:, None, None, :]
                state = (self.layers[i - 1](x, key_mask, tokens), mask)
            elif i == n + 1:
                x, mask = state
                if tokens is None:
                    pooled = self.pooler(x) if self.config.classifier_pooling == "cls" else mean_pool(x, mask)
                elif self.config.classifier_pooling == "cls":
                    counts = mask.bool().sum(dim=1)  # (B,)
                    first = counts.cumsum(0) - counts  # (B,) row of each sequence's position 0
                    pooled = self.pooler(x.index_select(0, first).unsqueeze(1))
                else:
                    counts = mask.bool().sum(dim=1, keepdim=True).to(x.dtype)  # (B, 1)
                    total = x.new_zeros(tokens.batch, x.shape[-1]).index_add(0, tokens.index // tokens.seq_len, x)
                    pooled = total / counts.clamp(min=1e-9)
                state, tokens = (pooled,), None  # (B, C)
            else:
                state = (self.head(state[0]),)  # (B, num_labels)
        if tokens is not None:  # stopped inside the encoder: back to (B, T, C), zeros at padding
            x, mask = state
            state = (tokens.pad(x), mask)
        return state

    def example_inputs(self, batch_size: int = 1, seq_len: int | None = None) -> tuple[torch.Tensor]:
        """Random token ids (batch_size, seq_len) on the parameters' device.

        seq_len defaults to min(max_position, 128).
        """
        T = min(self.config.max_position, 128) if seq_len is None else seq_len
        device = next(self.parameters()).device
        return (torch.randint(0, self.config.vocab_size, (batch_size, T), device=device),)


def build_bert(config: BertConfig) -> Bert:
    return Bert(config)


register_family("bert", BertConfig, build_bert)

_HF_COUNT = (
    "transformers BertModel(config).num_parameters() built on the meta device; checked in tests/models/test_bert.py"
)

register_preset(
    "bert-base",
    "bert",
    description="BERT-Base (uncased vocabulary): 12 layers, hidden 768, 12 heads, MLP 3072, with pooler",
    reference_params=109_482_240,
    reference_source=f"BERT-Base 110M (Devlin et al., 2019, Table 1); exact count from {_HF_COUNT}",
    hidden=768,
    n_layer=12,
    n_head=12,
    intermediate=3072,
)
register_preset(
    "bert-large",
    "bert",
    description="BERT-Large (uncased vocabulary): 24 layers, hidden 1024, 16 heads, MLP 4096, with pooler",
    reference_params=335_141_888,
    reference_source=f"BERT-Large 340M (Devlin et al., 2019, Table 1); exact count from {_HF_COUNT}",
    hidden=1024,
    n_layer=24,
    n_head=16,
    intermediate=4096,
)
register_preset(
    "minilm-l6",
    "bert",
    description=(
        "all-MiniLM-L6-v2 shape: 6 layers, hidden 384, 12 heads, MLP 1536, with pooler "
        "(weights: layerwise.pretrained.load_minilm_l6)"
    ),
    reference_params=22_713_216,
    reference_source=(
        "sentence-transformers/all-MiniLM-L6-v2 model card (22.7M); exact count = its model.safetensors "
        f"(22,713,728 values less the 512-entry position_ids buffer) and {_HF_COUNT}"
    ),
    hidden=384,
    n_layer=6,
    n_head=12,
    intermediate=1536,
)
register_preset(
    "bert-tiny",
    "bert",
    description="BERT-Tiny (Turc et al., 2019, L=2 H=128 A=2), uncased vocabulary, with pooler: fast for tests",
    reference_params=4_385_920,
    reference_source=f"google/bert_uncased_L-2_H-128_A-2 (4.4M); exact count from {_HF_COUNT}",
    hidden=128,
    n_layer=2,
    n_head=2,
    intermediate=512,
)
