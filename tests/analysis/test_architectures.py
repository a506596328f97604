"""The analysis on more than fifty architectures, each against references we did not write.

For every case:

- parameters: total and trainable equal Hugging Face's ``num_parameters()`` (or, for
  plain torch modules, the unique-tensor count ``sum(p.numel() for p in m.parameters())``);
- forward FLOPs equal torch's ``FlopCounterMode`` on a real forward where it sees every
  op (``"counter"``; the math SDPA kernel, so it sees attention), or, where it does not,
  FlopCounterMode on an equivalent layout it does see (``"counter:<layout>"``: the same
  experts run as transformers' eager loop), or a closed form written in the case;
- weight_depth and block_depth equal the hand counts written beside each case (DESIGN.md:
  weight layers on the longest input→output path, parallel branches once; blocks are
  applications of a repeated block);
- built on the meta device, the analysis gives the same numbers (unless the case says why
  it cannot run there).

The models are tiny configs built on CPU; no architecture in the set may crash the analysis.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Any, Callable

import pytest
import torch
import torch.nn.functional as F
import transformers as T
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from layerwise.analysis import analyze
from layerwise.analysis.inputs import example_inputs
from layerwise.models import build


@dataclass
class Case:
    build: Callable[[], nn.Module]
    weight_depth: int
    block_depth: int
    why: str  # the hand count of both depths
    flops: str | Callable[[nn.Module], int] = "counter"  # or a closed form of the model
    inputs: Callable[[nn.Module], Any] | None = None  # default: example_inputs(batch 2, seq 8)
    meta: str | None = None  # why the case cannot run on meta, if it cannot
    parts: dict[str, tuple[int, int]] | None = None  # encoder/decoder: (weight depth, block depth)
    blocks: int | None = None  # block applications in the forward, when not block_depth
    active: Callable[[nn.Module], int] | None = None  # parameters used per token (mixtures of experts)


def hf(cls, cfg, **kw) -> Callable[[], nn.Module]:
    def make():
        torch.manual_seed(0)
        return cls(copy.deepcopy(cfg), **kw).eval()  # a test may change its model's config
    return make


H = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64, vocab_size=100)
DEC = "embedding 1 + 4 per layer (q∥k∥v, o, the MLP's two steps) × 2 + the LM head 1"
PAR = "embedding 1 + 2 per layer (attention and MLP read the same input in parallel: qkv→dense ∥ fc1→fc2) × 2 + head 1"
ENCDEC_PARTS = {"encoder": (9, 2), "decoder": (13, 2)}
ENCDEC = ("encoder: embedding 1 + 4 per layer × 2 = 9; decoder: embedding 1 + 6 per layer (self q∥k∥v, o, cross q, o, "
          "fc1, fc2) × 2 = 13; on the whole path the cross-attention's k/v read the encoder's output: 9 + k/v 1 + o 1 "
          "+ fc 2 + 6 (second layer) + LM head 1 = 20; blocks 2 + 2")


def _experts_params(m: nn.Module) -> int:
    return sum(p.numel() for n, mod in m.named_modules() if type(mod).__name__.endswith("Experts")
               for p in mod.parameters(recurse=False))


def moe_active(k: int, e: int) -> Callable[[nn.Module], int]:
    """All parameters but (1 - k/E) of the routed experts', counted from transformers' own modules."""
    return lambda m: m.num_parameters() - _experts_params(m) * (e - k) // e


# ------------------------------------------------------------------ plain torch modules


class BareMLP(nn.Module):
    """An MLP of bare nn.Parameters: each ``x @ w`` is a weight layer."""

    def __init__(self):
        super().__init__()
        self.w1, self.b1 = nn.Parameter(torch.randn(20, 16)), nn.Parameter(torch.zeros(16))
        self.w2, self.b2 = nn.Parameter(torch.randn(16, 16)), nn.Parameter(torch.zeros(16))
        self.w3 = nn.Parameter(torch.randn(16, 4))

    def forward(self, x):
        x = torch.relu(x @ self.w1 + self.b1)
        x = torch.relu(torch.matmul(x, self.w2) + self.b2)
        return x @ self.w3


class KeywordOperands(nn.Module):
    """Every product spelled with keyword operands (BLOOM's baddbmm(batch1=, batch2=) among them)."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(12, 12)
        self.w = nn.Parameter(torch.randn(12, 12))
        self.b = nn.Parameter(torch.zeros(12))

    def forward(self, x):  # x (B, T, 12)
        h = F.linear(input=x, weight=self.lin.weight, bias=self.lin.bias)  # weight layer 1
        h = torch.matmul(h, other=self.w)  # 2
        flat = torch.addmm(self.b, mat1=h.reshape(-1, 12), mat2=self.w.t())  # 3
        h = flat.view_as(h)
        scores = torch.baddbmm(input=torch.zeros(h.shape[0], h.shape[1], h.shape[1]), batch1=h,
                               batch2=h.transpose(1, 2), alpha=0.5)  # activations only: no weight
        return torch.bmm(input=scores.softmax(-1), mat2=h)


class Contractions(nn.Module):
    """einsum with a list of operands, tensordot, and the products FlopCounterMode does not count."""

    def __init__(self):
        super().__init__()
        self.proj = nn.Parameter(torch.randn(8, 6))
        self.bil = nn.Bilinear(6, 5, 7)
        self.v = nn.Parameter(torch.randn(7))

    def forward(self, x, y):  # x (4, 3, 8), y (4, 5)
        h = torch.einsum("btd,de->bte", [x, self.proj])  # weight layer, list operands
        h = torch.tensordot(h, torch.ones(3, device=h.device), dims=([1], [0]))  # (4, 6): contraction of data
        z = self.bil(h, y)  # (4, 7): bilinear weight layer
        s = torch.mv(z, self.v)  # (4,): weight layer (matrix-vector)
        return torch.dot(s, s)  # () activations only


def contractions_flops(m: Contractions) -> int:
    einsum = 2 * 4 * 3 * 8 * 6  # FlopCounterMode sees this (a bmm inside einsum)
    tensordot = 2 * 4 * 6 * 3  # and this (an mm)
    # not seen by FlopCounterMode (aten._trilinear, mv, dot have no formula there):
    bilinear = 2 * 4 * 7 * 6 * 5 + 2 * 4 * 7 * 5  # contract x1 with W (N·o·i1·i2), then with x2 (N·o·i2)
    mv = 2 * 4 * 7
    dot = 2 * 4
    return einsum + tensordot + bilinear + mv + dot


class TiedAutoencoder(nn.Module):
    """The decoder is the encoder's weight used through a view: F.linear(h, enc.weight.t())."""

    def __init__(self):
        super().__init__()
        self.enc = nn.Linear(30, 10)
        self.dec_bias = nn.Parameter(torch.zeros(30))

    def forward(self, x):
        return F.linear(torch.relu(self.enc(x)), self.enc.weight.t(), self.dec_bias)


class MHAExtras(nn.Module):
    def __init__(self):
        super().__init__()
        self.attn = nn.MultiheadAttention(16, 4, batch_first=True, add_bias_kv=True, add_zero_attn=True)
        self.fc = nn.Linear(16, 3)

    def forward(self, x):
        return self.fc(self.attn(x, x, x, need_weights=False)[0])


def mha_extras_flops(m: MHAExtras) -> int:
    B, L, E = 2, 5, 16
    S = L + 2  # bias_k/bias_v append one key position, add_zero_attn another
    proj = 3 * 2 * B * L * E * E + 2 * B * L * E * E  # q, k, v in-projections and the out-projection
    attention = 2 * (2 * B * L * S * E)  # scores and values over S keys
    return proj + attention + 2 * B * L * E * 3


class EmbRNN(nn.Module):
    def __init__(self, cell="lstm", bidirectional=False):
        super().__init__()
        self.emb = nn.Embedding(50, 8)
        rnn = nn.LSTM if cell == "lstm" else nn.GRU
        self.rnn = rnn(8, 16, num_layers=2, batch_first=True, bidirectional=bidirectional)
        self.fc = nn.Linear(16 * (2 if bidirectional else 1), 3)

    def forward(self, x):
        out, _ = self.rnn(self.emb(x))
        return self.fc(out[:, -1])


def rnn_flops(gates: int, dirs: int) -> Callable[[nn.Module], int]:
    # per layer and direction: 2·tokens·G·h·(i + h); tokens = 2·7; h = 16; i = 8, then 16·dirs
    def f(m):
        return sum(2 * 2 * 7 * gates * 16 * (i + 16) * dirs for i in (8, 16 * dirs)) + 2 * 2 * 16 * dirs * 3
    return f


class EncoderClassifier(nn.Module):
    """Linear in, a TransformerEncoder, Linear out; ``shared`` applies one layer ``n`` times."""

    def __init__(self, n=2, shared=False):
        super().__init__()
        self.inp = nn.Linear(10, 16)
        layer = nn.TransformerEncoderLayer(16, 4, dim_feedforward=32, batch_first=True, dropout=0.0)
        self.encoder = nn.TransformerEncoder(layer, n, enable_nested_tensor=False)
        if shared:
            self.encoder.layers = nn.ModuleList([layer] * n)
        self.out = nn.Linear(16, 3)

    def forward(self, x):
        return self.out(self.encoder(self.inp(x)))


class Seq2SeqTransformer(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(40, 16)
        self.transformer = nn.Transformer(16, 4, num_encoder_layers=2, num_decoder_layers=2, dim_feedforward=32,
                                          dropout=0.0, batch_first=True)
        self.head = nn.Linear(16, 40)

    def forward(self, src, tgt):
        return self.head(self.transformer(self.emb(src), self.emb(tgt)))


class BasicBlock(nn.Module):
    def __init__(self, c_in, c_out, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.short = nn.Sequential() if stride == 1 and c_in == c_out else nn.Sequential(
            nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x):
        y = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(y)) + self.short(x))


class TinyResNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.blocks = nn.Sequential(BasicBlock(8, 8, 1), BasicBlock(8, 16, 2), BasicBlock(16, 16, 1))
        self.fc = nn.Linear(16, 5)

    def forward(self, x):
        return self.fc(self.blocks(torch.relu(self.stem(x))).mean((2, 3)))


class TinyUNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.down1 = nn.Conv2d(3, 8, 3, padding=1)
        self.down2 = nn.Conv2d(8, 16, 3, stride=2, padding=1)
        self.up = nn.ConvTranspose2d(16, 8, 2, stride=2)
        self.out = nn.Conv2d(16, 2, 1)

    def forward(self, x):
        s = torch.relu(self.down1(x))
        u = self.up(torch.relu(self.down2(s)))
        return self.out(torch.cat([u, s], dim=1))  # the skip joins a shorter path


class Siamese(nn.Module):
    """One encoder applied to two inputs, side by side."""

    def __init__(self):
        super().__init__()
        self.encoder = nn.Sequential(nn.Linear(12, 16), nn.ReLU(), nn.Linear(16, 8))
        self.head = nn.Linear(8, 1)

    def forward(self, a, b):
        return self.head((self.encoder(a) - self.encoder(b)).abs())


def moe_nano_flops(m) -> int:
    """layerwise's own experts run a custom grouped matmul FlopCounterMode cannot see: the closed form."""
    c = m.config
    T_, d, kv = 2 * 8, c.n_embd, c.kv_heads * c.head_size
    attn = 2 * T_ * d * (d + 2 * kv + d) + 2 * (2 * 2 * c.n_head * 8 * 8 * c.head_size)
    router = 2 * T_ * d * c.n_experts
    experts = 2 * T_ * c.n_experts_per_token * 3 * d * c.expert_size
    shared = 2 * T_ * 3 * d * c.shared_expert_size + 2 * T_ * d  # the shared expert and its sigmoid gate
    return c.n_layer * (attn + router + experts + shared) + 2 * T_ * d * c.vocab_size


def tok(n: int = 8, batch: int = 2, vocab: int = 50):
    return lambda m: (torch.randint(0, vocab, (batch, n)),)


CASES: dict[str, Case] = {
    # ---- decoder-only language models (transformers)
    "gpt2": Case(hf(T.GPT2LMHeadModel, T.GPT2Config(n_embd=32, n_layer=2, n_head=4, vocab_size=100, n_positions=64)),
                 10, 2, "wte∥wpe 1 + 4 per layer (fused c_attn, c_proj, c_fc, c_proj) × 2 + tied head 1"),
    "llama": Case(hf(T.LlamaForCausalLM, T.LlamaConfig(**H, num_key_value_heads=2)), 10, 2, DEC + " (gate∥up, down)"),
    "mistral": Case(hf(T.MistralForCausalLM, T.MistralConfig(**H, num_key_value_heads=2)), 10, 2, DEC),
    "qwen2": Case(hf(T.Qwen2ForCausalLM, T.Qwen2Config(**H, num_key_value_heads=2)), 10, 2, DEC),
    "gemma": Case(hf(T.GemmaForCausalLM, T.GemmaConfig(**H, num_key_value_heads=2, head_dim=8)), 10, 2,
                  DEC + " (tied to the embedding)"),
    "phi3": Case(hf(T.Phi3ForCausalLM, T.Phi3Config(**H, pad_token_id=0)), 10, 2, DEC + " (fused qkv_proj, gate_up_proj)"),
    "stablelm": Case(hf(T.StableLmForCausalLM, T.StableLmConfig(**H, num_key_value_heads=4)), 10, 2, DEC),
    "starcoder2": Case(hf(T.Starcoder2ForCausalLM, T.Starcoder2Config(**H, num_key_value_heads=2)), 10, 2,
                       DEC + " (c_fc, c_proj)"),
    "gpt-neo": Case(hf(T.GPTNeoForCausalLM, T.GPTNeoConfig(hidden_size=32, num_layers=2, num_heads=4, vocab_size=100,
                                                          attention_types=[[["global", "local"], 1]],
                                                          max_position_embeddings=64)),
                    10, 2, "wte∥wpe 1 + 4 per layer × 2 + head 1 (global and local attention alike)"),
    "opt": Case(hf(T.OPTForCausalLM, T.OPTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, ffn_dim=64,
                                                vocab_size=100, max_position_embeddings=64, word_embed_proj_dim=32)),
                10, 2, "embed_tokens∥embed_positions 1 + 4 per layer × 2 + head 1"),
    "bloom": Case(hf(T.BloomForCausalLM, T.BloomConfig(hidden_size=32, n_layer=2, n_head=4, vocab_size=100)),
                  10, 2, "word embeddings 1 + 4 per layer (query_key_value, dense, h_to_4h, 4h_to_h) × 2 + tied head 1; "
                  "its attention is baddbmm(batch1=…, batch2=…) with keyword operands"),
    "phi": Case(hf(T.PhiForCausalLM, T.PhiConfig(**H)), 6, 2, PAR),
    "gpt-neox": Case(hf(T.GPTNeoXForCausalLM, T.GPTNeoXConfig(**H)), 6, 2, PAR + " (use_parallel_residual)"),
    "gptj": Case(hf(T.GPTJForCausalLM, T.GPTJConfig(n_embd=32, n_layer=2, n_head=4, vocab_size=100, n_positions=64,
                                                   rotary_dim=4)), 6, 2, PAR),
    "codegen": Case(hf(T.CodeGenForCausalLM, T.CodeGenConfig(n_embd=32, n_layer=2, n_head=4, vocab_size=100,
                                                            n_positions=64, rotary_dim=4)), 6, 2, PAR),
    "falcon": Case(hf(T.FalconForCausalLM, T.FalconConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                                         vocab_size=100)), 6, 2, PAR + " (parallel_attn)"),
    "xlnet": Case(hf(T.XLNetLMHeadModel, T.XLNetConfig(d_model=32, n_layer=2, n_head=4, d_inner=64, vocab_size=100)),
                  10, 2, "word embedding 1 + 4 per layer (q∥k∥v∥r: einsum with bare 3-D nn.Parameters, o: einsum with a "
                  "bare parameter, layer_1, layer_2) × 2 + tied head 1"),
    # ---- mixtures of experts (transformers' 3-D expert weights, three layouts)
    "mixtral-grouped-mm": Case(
        hf(T.MixtralForCausalLM, T.MixtralConfig(**H, num_key_value_heads=2, num_local_experts=4, num_experts_per_tok=2)),
        10, 2, DEC + "; the experts: gate_up then down, two grouped matmuls (the router runs beside them)",
        flops="counter:eager", active=moe_active(2, 4)),
    "mixtral-batched-mm": Case(
        hf(T.MixtralForCausalLM, T.MixtralConfig(**H, num_key_value_heads=2, num_local_experts=4, num_experts_per_tok=2,
                                                 experts_implementation="batched_mm")),
        10, 2, DEC + "; experts as bmm on gathered 3-D weights", active=moe_active(2, 4)),
    "mixtral-eager": Case(
        hf(T.MixtralForCausalLM, T.MixtralConfig(**H, num_key_value_heads=2, num_local_experts=4, num_experts_per_tok=2,
                                                 experts_implementation="eager")),
        10, 2, DEC + "; experts as a loop of F.linear on slices of the 3-D weights", active=moe_active(2, 4),
        meta="the eager loop picks the experts a token was routed to from the router's values"),
    "qwen2-moe": Case(
        hf(T.Qwen2MoeForCausalLM, T.Qwen2MoeConfig(**H, num_key_value_heads=2, moe_intermediate_size=16,
                                                   shared_expert_intermediate_size=48, num_experts=6,
                                                   num_experts_per_tok=2)),
        10, 2, DEC + "; the routed experts (2 of 6) and the always-on shared expert run in parallel",
        flops="counter:eager", active=moe_active(2, 6)),
    "olmoe": Case(hf(T.OlmoeForCausalLM, T.OlmoeConfig(**H, num_experts=4, num_experts_per_tok=2)), 10, 2, DEC,
                  flops="counter:eager", active=moe_active(2, 4)),
    # ---- encoders (transformers)
    "bert": Case(hf(T.BertForSequenceClassification, T.BertConfig(**H, num_labels=3)), 11, 2,
                 "word∥position∥type embeddings 1 + 4 per layer (q∥k∥v, attention.output.dense, intermediate, "
                 "output) × 2 + pooler 1 + classifier 1"),
    "roberta": Case(hf(T.RobertaForMaskedLM, T.RobertaConfig(**H, max_position_embeddings=64)), 11, 2,
                    "embeddings 1 + 4 × 2 + lm_head.dense 1 + lm_head.decoder 1"),
    "albert": Case(hf(T.AlbertForSequenceClassification,
                      T.AlbertConfig(hidden_size=32, num_hidden_layers=6, num_attention_heads=4, intermediate_size=64,
                                     embedding_size=16, vocab_size=100)),
                   28, 6, "embeddings 1 + embedding_hidden_mapping_in 1 + one shared layer applied 6 times × 4 "
                   "(q∥k∥v, dense, ffn, ffn_output) + pooler 1 + classifier 1; 6 blocks (applications)"),
    "distilbert": Case(hf(T.DistilBertForSequenceClassification, T.DistilBertConfig(dim=32, n_layers=2, n_heads=4,
                                                                                   hidden_dim=64, vocab_size=100)),
                       11, 2, "embeddings 1 + 4 × 2 + pre_classifier 1 + classifier 1"),
    "electra": Case(hf(T.ElectraForSequenceClassification, T.ElectraConfig(embedding_size=16, **H)), 12, 2,
                    "embeddings 1 + embeddings_project 1 + 4 × 2 + classifier dense 1 + out_proj 1"),
    "deberta-v2": Case(hf(T.DebertaV2ForSequenceClassification, T.DebertaV2Config(**H)), 11, 2,
                       "embeddings 1 + 4 × 2 + pooler 1 + classifier 1"),
    "longformer": Case(hf(T.LongformerModel, T.LongformerConfig(**H, attention_window=4, max_position_embeddings=64)),
                       10, 2, "embeddings 1 + 4 × 2 (sliding-window scores and values by einsum) + pooler 1"),
    "mobilebert": Case(hf(T.MobileBertForSequenceClassification,
                          T.MobileBertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                             intermediate_size=32, embedding_size=16, intra_bottleneck_size=16,
                                             true_hidden_size=16, vocab_size=100, num_feedforward_networks=2)),
                       20, 2, "word embedding 1 + embedding_transformation 1 + 8 per layer (bottleneck input∥attention "
                       "1, q∥k∥v 1, attention output 1, the extra FFN 2, intermediate 1, output 1, output bottleneck 1) "
                       "× 2 + pooler 1 + classifier 1"),
    # ---- encoder-decoders (transformers)
    "t5": Case(hf(T.T5ForConditionalGeneration, T.T5Config(d_model=32, d_ff=64, num_layers=2, num_decoder_layers=2,
                                                           num_heads=4, d_kv=8, vocab_size=100)),
               20, 4, ENCDEC + " (the relative position bias is a lookup beside the scores)", parts=ENCDEC_PARTS),
    "bart": Case(hf(T.BartForConditionalGeneration,
                    T.BartConfig(d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
                                 decoder_attention_heads=4, encoder_ffn_dim=64, decoder_ffn_dim=64, vocab_size=100,
                                 max_position_embeddings=64)),
                 20, 4, ENCDEC + "; the position embedding reads the token embeddings only for their shape, so it "
                 "runs beside them, not after", parts=ENCDEC_PARTS),
    "marian": Case(hf(T.MarianMTModel, T.MarianConfig(d_model=32, encoder_layers=2, decoder_layers=2,
                                                       encoder_attention_heads=4, decoder_attention_heads=4,
                                                       encoder_ffn_dim=64, decoder_ffn_dim=64, vocab_size=100,
                                                       max_position_embeddings=64, decoder_start_token_id=0,
                                                       pad_token_id=0)),
                   20, 4, ENCDEC, parts=ENCDEC_PARTS),
    "whisper": Case(hf(T.WhisperForConditionalGeneration,
                       T.WhisperConfig(d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
                                       decoder_attention_heads=4, encoder_ffn_dim=64, decoder_ffn_dim=64, vocab_size=100,
                                       num_mel_bins=16, max_source_positions=30, max_target_positions=32, pad_token_id=0,
                                       bos_token_id=1, eos_token_id=2, decoder_start_token_id=1,
                                       begin_suppress_tokens=None, suppress_tokens=None)),
                    21, 4, "encoder: conv1, conv2, 4 per layer × 2 = 10 (its position embedding is a parameter added, "
                    "not a layer); decoder: 1 + 6 × 2 = 13; whole path 10 + k/v 1 + o 1 + fc 2 + 6 + head 1 = 21",
                    parts={"encoder": (10, 2), "decoder": (13, 2)}),
    "switch-transformers": Case(
        hf(T.SwitchTransformersForConditionalGeneration,
           T.SwitchTransformersConfig(d_model=32, d_ff=64, d_kv=8, num_layers=2, num_decoder_layers=2, num_heads=4,
                                      num_experts=4, encoder_sparse_step=1, decoder_sparse_step=1, vocab_size=100,
                                      expert_capacity=64)),
        20, 4, ENCDEC + "; each feed-forward is a top-1 of 4 experts (wi, wo) beside its router",
        parts=ENCDEC_PARTS, active=lambda m: m.num_parameters() - 3 * sum(
            p.numel() for n, mod in m.named_modules() if n.endswith("mlp.experts") for p in mod.parameters()) // 4,
        meta="the experts are a ModuleDict run on the tokens routed to each, chosen from the router's values"),
    # ---- vision and audio (transformers)
    "vit": Case(hf(T.ViTForImageClassification, T.ViTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                                            intermediate_size=64, image_size=32, patch_size=8,
                                                            num_labels=5)),
                10, 2, "patch conv 1 + 4 per layer × 2 + classifier 1 (the class token and position embedding are "
                "parameters joined to the data, not layers)"),
    "convnext": Case(hf(T.ConvNextForImageClassification, T.ConvNextConfig(hidden_sizes=[8, 16], depths=[1, 2],
                                                                            num_stages=2, image_size=32, num_labels=5)),
                     12, 3, "patchify conv 1 + stage 0: 1 block × 3 (dwconv, pwconv1, pwconv2) + stage 1: downsampling "
                     "conv 1 + 2 blocks × 3 + classifier 1; 3 blocks"),
    "resnet-hf": Case(hf(T.ResNetForImageClassification, T.ResNetConfig(layer_type="basic", depths=[1, 1],
                                                                         hidden_sizes=[8, 16], embedding_size=8,
                                                                         num_labels=5)),
                      6, 2, "stem conv 1 + 2 per basic block × 2 (the projection shortcut runs beside) + classifier 1"),
    "wav2vec2": Case(hf(T.Wav2Vec2ForSequenceClassification,
                        T.Wav2Vec2Config(**H, conv_dim=(8, 8), conv_stride=(5, 2), conv_kernel=(10, 3),
                                         num_conv_pos_embeddings=4, num_conv_pos_embedding_groups=2)),
                     14, 2, "feature convs 2 + feature projection 1 + positional conv 1 (added back: x + conv(x)) "
                     "+ 4 per layer × 2 + projector 1 + classifier 1",
                     inputs=lambda m: example_inputs(m, batch_size=2, seq_len=400)),
    # ---- plain torch modules
    "mlp": Case(lambda: nn.Sequential(nn.Linear(784, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10)),
                3, 0, "three Linear layers in sequence", inputs=lambda m: (torch.randn(2, 784),)),
    "bare-parameter-mlp": Case(BareMLP, 3, 0, "x @ w1, matmul(·, w2), · @ w3: three products with the module's own "
                               "parameters", inputs=lambda m: (torch.randn(2, 20),)),
    "cnn": Case(lambda: nn.Sequential(nn.Conv2d(1, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
                                      nn.Conv2d(8, 16, 3), nn.ReLU(), nn.Flatten(), nn.Linear(16 * 11 * 11, 10)),
                3, 0, "conv, conv, linear (norms and pooling are not weight layers)",
                inputs=lambda m: (torch.randn(2, 1, 28, 28),)),
    "depthwise-separable": Case(lambda: nn.Sequential(nn.Conv2d(3, 16, 3, stride=2), nn.Conv2d(16, 16, 3, groups=16),
                                                      nn.Conv2d(16, 32, 1)),
                                3, 0, "conv, depthwise, pointwise", inputs=lambda m: (torch.randn(2, 3, 32, 32),)),
    "tiny-resnet": Case(TinyResNet, 8, 3, "stem 1 + 2 convs per block × 3 (shortcuts run beside) + fc 1",
                        inputs=lambda m: (torch.randn(2, 3, 16, 16),)),
    "unet": Case(TinyUNet, 4, 0, "down1, down2, up (transposed conv), out: the skip from down1 joins a shorter path",
                 inputs=lambda m: (torch.randn(2, 3, 16, 16),)),
    "lstm-classifier": Case(lambda: EmbRNN("lstm"), 4, 2, "embedding 1 + 2 LSTM layers + linear 1; the 2 stacked "
                            "layers are the blocks", flops=rnn_flops(4, 1), inputs=tok(7)),
    "gru-bidirectional": Case(lambda: EmbRNN("gru", True), 4, 2, "embedding 1 + 2 GRU layers (directions in parallel) "
                              "+ linear 1", flops=rnn_flops(3, 2), inputs=tok(7)),
    "transformer-encoder": Case(EncoderClassifier, 10, 2, "inp 1 + 4 per layer (MHA in-projection, out-projection, "
                                "linear1, linear2) × 2 + out 1", inputs=lambda m: (torch.randn(2, 6, 10),)),
    "transformer-encoder-shared-layer": Case(
        lambda: EncoderClassifier(4, shared=True), 18, 4, "inp 1 + one layer applied 4 times × 4 + out 1; 4 blocks "
        "(applications of one module)", inputs=lambda m: (torch.randn(2, 6, 10),)),
    "nn-transformer": Case(Seq2SeqTransformer, 20, 4,
                           "encoder: 4 per layer (MHA in, out, linear1, linear2) × 2 = 8 from its input; decoder: 6 "
                           "per layer (self MHA 2, cross MHA 2, linear1, linear2) × 2 = 12; whole path: embedding 1 + "
                           "encoder 8, then the first cross-attention reads the memory (9) + 2, ffn 2, layer 2 + 6, "
                           "head 1 = 20",
                           inputs=lambda m: (torch.randint(0, 40, (2, 6)), torch.randint(0, 40, (2, 5))),
                           parts={"encoder": (8, 2), "decoder": (12, 2)}),
    "mha-bias-kv-zero-attn": Case(MHAExtras, 3, 0, "MHA in-projection, out-projection, fc",
                                  flops=mha_extras_flops, inputs=lambda m: (torch.randn(2, 5, 16),)),
    "tied-weight-through-view": Case(TiedAutoencoder, 2, 0, "enc, then F.linear(h, enc.weight.t()): the transposed "
                                     "weight is still the encoder's weight layer",
                                     inputs=lambda m: (torch.randn(2, 30),)),
    "keyword-operands": Case(KeywordOperands, 3, 0, "linear(input=, weight=), matmul(other=w), addmm(mat1=, mat2=w.t()) "
                             "with weights; baddbmm(batch1=, batch2=) and bmm(input=, mat2=) of activations only",
                             inputs=lambda m: (torch.randn(2, 4, 12),)),
    "contractions": Case(Contractions, 3, 0, "einsum with a parameter 1, tensordot with a constant (not a weight), "
                         "bilinear 1, mv with a parameter 1, dot of activations", flops=contractions_flops,
                         inputs=lambda m: (torch.randn(4, 3, 8), torch.randn(4, 5))),
    "siamese": Case(Siamese, 3, 1, "one encoder (2 linears) applied to each input side by side, then the head 1; "
                    "its two applications are blocks on parallel paths (block_depth 1)", blocks=2,
                    inputs=lambda m: (torch.randn(2, 12), torch.randn(2, 12))),
    # ---- layerwise's own mixture of experts
    "moe-nano": Case(lambda: build("moe-nano").eval(), 10, 2, "embedding 1 + per layer q∥k∥v, o, then the experts' "
                     "gate_up and down (router and shared expert beside them) × 2 + head 1",
                     flops=moe_nano_flops, inputs=lambda m: (torch.randint(0, 256, (2, 8)),),
                     active=lambda m: sum(p.numel() for p in m.parameters()) - sum(
                         b.mlp.experts.gate_up_proj.numel() + b.mlp.experts.down_proj.numel() for b in m.transformer.h) // 2),
}


def _call(m, x):
    return m(**x) if isinstance(x, dict) else m(*x)


def _counter_flops(m, x) -> int:
    with FlopCounterMode(display=False) as fc, sdpa_kernel(SDPBackend.MATH):
        _call(m, x)
    return fc.get_total_flops()


def _meta_inputs(x):
    return torch.utils._pytree.tree_map(lambda t: torch.zeros_like(t, device="meta") if isinstance(t, torch.Tensor) else t, x)


@pytest.mark.parametrize("name", sorted(CASES))
def test_architecture(name):
    case = CASES[name]
    m = case.build()
    x = case.inputs(m) if case.inputs else example_inputs(m, batch_size=2, seq_len=8)
    a = analyze(m, inputs=x, name=name)

    # parameters against the reference
    if isinstance(m, T.PreTrainedModel):
        assert a.totals.params == m.num_parameters()
        assert a.totals.trainable == m.num_parameters(only_trainable=True)
    else:
        assert a.totals.params == sum(p.numel() for p in m.parameters())
        assert a.totals.trainable == sum(p.numel() for p in m.parameters() if p.requires_grad)
    assert sum(r.params for r in a.rows) == a.totals.params
    assert sum(k.params for k in a.by_kind) == a.totals.params
    expected_active = case.active(m) if case.active else a.totals.params
    assert a.totals.active_params == expected_active

    # forward FLOPs against FlopCounterMode or the closed form
    if case.flops == "counter":
        assert a.totals.flops_forward == _counter_flops(m, x)
    elif isinstance(case.flops, str) and case.flops.startswith("counter:"):
        # FlopCounterMode has no formula for grouped_mm: the same weights through the
        # experts layout it sees (transformers' eager loop) must cost the same
        assert _counter_flops(m, x) < a.totals.flops_forward
        m.config._experts_implementation = case.flops.split(":", 1)[1]
        assert a.totals.flops_forward == _counter_flops(m, x)
    else:
        assert a.totals.flops_forward == case.flops(m)
    if case.active:
        assert a.totals.dense_flops_forward > a.totals.flops_forward
        assert a.kind("expert").params > 0 and a.kind("router").params > 0

    # the hand-counted depths
    assert (a.depth.weight_depth, a.depth.block_depth) == (case.weight_depth, case.block_depth), case.why
    assert a.depth.blocks == (case.blocks if case.blocks is not None else case.block_depth)
    if case.parts:
        assert {p.part: (p.weight_depth, p.block_depth) for p in a.depth.parts} == case.parts
    else:
        assert a.depth.parts == []

    # the same model on the meta device
    if case.meta is None:
        with torch.device("meta"):
            mm = case.build()
        mm = mm.to("meta")  # tensors made by legacy constructors (torch.Tensor(n)) ignore the device context
        b = analyze(mm, inputs=_meta_inputs(x), name=name)
        assert (b.totals.params, b.totals.flops_forward, b.totals.flops_train, b.totals.active_params) == (
            a.totals.params, a.totals.flops_forward, a.totals.flops_train, a.totals.active_params)
        assert b.depth == a.depth


def test_the_set_is_large_and_covers_every_fixed_case():
    assert len(CASES) >= 40
    for name in ("mixtral-grouped-mm", "mixtral-batched-mm", "mixtral-eager", "qwen2-moe", "bare-parameter-mlp",
                 "bloom", "keyword-operands", "contractions", "mha-bias-kv-zero-attn", "longformer", "albert",
                 "transformer-encoder-shared-layer", "bart", "tied-weight-through-view", "t5", "marian", "whisper"):
        assert name in CASES


def test_moe_that_needs_values_fails_on_meta_with_a_clear_error():
    """Experts run as a loop over the experts a token was routed to need the router's values."""
    from layerwise.errors import ForwardFailure, InputShapeError

    for name in ("mixtral-eager", "switch-transformers"):
        with torch.device("meta"):
            mm = CASES[name].build()
        x = _meta_inputs(example_inputs(mm, batch_size=2, seq_len=8))
        with pytest.raises(ForwardFailure, match="needs tensor values, which the meta device does not have") as e:
            analyze(mm, inputs=x)
        assert not isinstance(e.value, InputShapeError)  # not blamed on the input
        assert "experts" in e.value.module and e.value.partial is not None


def test_mixtral_8x7b_on_16_tokens_reports_the_true_flops():
    """The preset and transformers' Mixtral on meta, against the closed form (grouped_mm is invisible to
    FlopCounterMode; on a tiny config above, its count equals the eager layout's)."""
    a = analyze(build("mixtral-8x7b", device="meta"), seq_len=16)
    T_, d, kv, ffn, V = 16, 4096, 1024, 14336, 32000
    per_layer = (2 * T_ * d * (d + 2 * kv + d)  # q, k, v, o
                 + 2 * 2 * 32 * T_ * T_ * 128  # scores and values, 32 heads of 128
                 + 2 * T_ * d * 8  # router
                 + 2 * T_ * 2 * 3 * d * ffn)  # each token through 2 of 8 SwiGLU experts
    assert a.totals.flops_forward == 32 * per_layer + 2 * T_ * d * V == 408_089_001_984
    assert a.totals.params == 46_702_792_704 and a.totals.active_params == 12_879_925_248
    assert a.totals.dense_flops_forward == a.totals.flops_forward + 32 * 2 * T_ * 6 * 3 * d * ffn
    with torch.device("meta"):
        ref = T.MixtralForCausalLM(T.MixtralConfig(vocab_size=V, hidden_size=d, intermediate_size=ffn,
                                                   num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=8,
                                                   num_local_experts=8, num_experts_per_tok=2,
                                                   max_position_embeddings=32768, rope_theta=1e6))
    b = analyze(ref, inputs={"input_ids": torch.zeros(1, 16, dtype=torch.long, device="meta")})
    assert ref.num_parameters() == a.totals.params
    assert (b.totals.flops_forward, b.totals.active_params) == (a.totals.flops_forward, a.totals.active_params)
    assert b.depth.weight_depth == a.depth.weight_depth == 1 + 4 * 32 + 1


def test_fine_grained_moe_with_shared_experts_preset():
    """Qwen1.5-MoE-A2.7B: 60 experts of 1408 (top-4) and a gated shared expert; published 14.3B total, 2.7B active."""
    a = analyze(build("qwen1.5-moe-a2.7b", device="meta"), seq_len=16)
    with torch.device("meta"):
        ref = T.Qwen2MoeForCausalLM(T.Qwen2MoeConfig(
            vocab_size=151936, hidden_size=2048, intermediate_size=5632, moe_intermediate_size=1408,
            shared_expert_intermediate_size=5632, num_hidden_layers=24, num_attention_heads=16, num_key_value_heads=16,
            num_experts=60, num_experts_per_tok=4, max_position_embeddings=8192, rope_theta=1e6,
            norm_topk_prob=False, tie_word_embeddings=False))
    b = analyze(ref, inputs={"input_ids": torch.zeros(1, 16, dtype=torch.long, device="meta")})
    assert a.totals.params == ref.num_parameters() == 14_315_784_192
    assert a.totals.active_params == b.totals.active_params == 2_689_173_504
    assert round(a.totals.params / 1e9, 1) == 14.3 and round(a.totals.active_params / 1e9, 1) == 2.7
    assert a.totals.flops_forward == b.totals.flops_forward
    assert math.isclose(a.kind("router").params, 24 * (2048 * 60 + 2048), rel_tol=0)
