"""Seq2seq family: shapes, attention masking, decoding, parameter formulas, and that it learns."""

import os

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from layerwise.errors import ConfigError, InputShapeError
from layerwise.models import build, get_preset
from layerwise.models.seq2seq import Seq2SeqConfig, beam_search, greedy_decode, length_penalty_factor
from layerwise.roles import declared_kind, is_declared_block

PAD, BOS, EOS = 0, 1, 2


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def rnn_formula(gates: int, in_size: int, hidden: int) -> int:
    # PyTorch's RNN layer: W_ih (gates·h × i), W_hh (gates·h × h), b_ih and b_hh (gates·h each)
    return gates * hidden * (in_size + hidden) + 2 * gates * hidden


def seq2seq_formula(c: Seq2SeqConfig) -> int:
    gates = {"gru": 3, "lstm": 4}[c.cell]
    dirs = 2 if c.bidirectional_encoder else 1
    h, H, E, L = c.hidden_size // dirs, c.hidden_size, c.embed_dim, c.num_layers
    A = c.attention_dim or H
    total = c.src_vocab * E + c.tgt_vocab * E
    total += sum(dirs * rnn_formula(gates, E if l == 0 else H, h) for l in range(L))
    total += sum(rnn_formula(gates, E if l == 0 else H, H) for l in range(L))
    total += {"additive": 2 * H * A + A, "general": H * H, "dot": 0}[c.attention]
    total += 2 * H * H  # combine [context; state] → state
    total += (0 if c.tie_decoder_embeddings else H * c.tgt_vocab) + c.tgt_vocab
    return total


def padded_batch(g: torch.Generator, n: int, vocab: int, lo: int = 2, hi: int = 8):
    lengths = torch.randint(lo, hi + 1, (n,), generator=g)
    src = torch.full((n, int(lengths.max())), PAD, dtype=torch.long)
    for i, length in enumerate(lengths.tolist()):
        src[i, :length] = torch.randint(3, vocab, (length,), generator=g)
    return src, lengths


@pytest.mark.parametrize("device", ["meta", "cpu"])
@pytest.mark.parametrize("cell", ["gru", "lstm"])
@pytest.mark.parametrize("attention", ["additive", "dot", "general"])
@pytest.mark.parametrize("bidirectional", [True, False])
def test_forward_shapes(device, cell, attention, bidirectional):
    model = build(
        "seq2seq-tiny",
        device=device,
        cell=cell,
        attention=attention,
        bidirectional_encoder=bidirectional,
        num_layers=2,
        tgt_vocab=40,
    )
    src, tgt_in = model.example_inputs(batch_size=3, seq_len=7)
    assert src.device.type == device and src.shape == (3, 7) and tgt_in.shape == (3, 7)
    if device == "cpu":
        assert tgt_in[:, 0].eq(BOS).all() and not torch.isin(src, torch.tensor([PAD, BOS, EOS])).any()
    tgt_in = tgt_in[:, :5]
    logits, weights = model(src, tgt_in, return_attention=True)
    assert logits.shape == (3, 5, 40)
    assert weights.shape == (3, 5, 7)
    assert model(src, tgt_in).shape == (3, 5, 40)


@pytest.mark.parametrize("attention", ["additive", "dot", "general"])
def test_attention_weights_sum_to_one_and_ignore_padding(attention):
    torch.manual_seed(0)
    model = build("seq2seq-tiny", attention=attention).eval()
    src, lengths = padded_batch(torch.Generator().manual_seed(0), 6, 32)
    tgt_in = torch.randint(3, 32, (6, 5))
    logits, weights = model(src, tgt_in, src_lengths=lengths, return_attention=True)
    torch.testing.assert_close(weights.sum(-1), torch.ones(6, 5))
    padded = torch.arange(src.size(1)) >= lengths[:, None]  # (B, S)
    assert padded.any()
    assert (weights.masked_select(padded[:, None, :].expand_as(weights)) == 0).all()
    assert (weights.masked_select(~padded[:, None, :].expand_as(weights)) > 0).all()

    # What sits in the padded positions cannot matter: packing and the mask hide it.
    noisy = src.masked_fill(padded, 7)
    torch.testing.assert_close(model(noisy, tgt_in, src_lengths=lengths), logits)
    # And a sentence decoded alone equals the same sentence in a padded batch.
    i = int(lengths.argmin())
    alone = model(src[i : i + 1, : lengths[i]], tgt_in[i : i + 1])
    torch.testing.assert_close(alone[0], logits[i], atol=1e-5, rtol=1e-5)
    # The default mask is src != pad_id, the same as explicit lengths or an explicit mask.
    torch.testing.assert_close(model(src, tgt_in), logits)
    torch.testing.assert_close(model(src, tgt_in, src_mask=~padded), logits)


def test_greedy_decode_follows_teacher_forcing():
    """Each greedy token is the argmax of the teacher-forced logits on the greedy prefix."""
    torch.manual_seed(1)
    model = build("seq2seq-tiny", cell="lstm", num_layers=2, dropout=0.3)
    model.train()
    src, lengths = padded_batch(torch.Generator().manual_seed(1), 5, 32)
    out = greedy_decode(model, src, max_len=9, src_lengths=lengths)
    assert model.training  # mode restored
    assert out.tokens.shape[0] == 5 and out.tokens.shape[1] <= 9
    model.eval()
    tgt_in = torch.cat([torch.full((5, 1), BOS), out.tokens[:, :-1]], dim=1)
    logp = F.log_softmax(model(src, tgt_in, src_lengths=lengths).double(), dim=-1)
    for b in range(5):
        row = out.tokens[b].tolist()
        n = row.index(EOS) + 1 if EOS in row else len(row)
        assert all(t not in (PAD, BOS) for t in row[:n])
        assert all(t == PAD for t in row[n:])
        masked = logp[b, :n].clone()
        masked[:, [PAD, BOS]] = -float("inf")
        assert masked.argmax(-1).tolist() == row[:n]
        assert out.scores[b].item() == pytest.approx(logp[b, torch.arange(n), row[:n]].sum().item(), abs=1e-6)


@pytest.mark.parametrize("cell", ["gru", "lstm"])
@pytest.mark.parametrize("length_penalty", [0.0, 1.0])
def test_beam_size_one_is_greedy(cell, length_penalty):
    torch.manual_seed(2)
    model = build("seq2seq-tiny", cell=cell, num_layers=2)
    src, lengths = padded_batch(torch.Generator().manual_seed(2), 8, 32)
    greedy = greedy_decode(model, src, max_len=12, src_lengths=lengths)
    beam = beam_search(model, src, beam_size=1, max_len=12, length_penalty=length_penalty, src_lengths=lengths)
    assert beam.tokens.shape == (8, 1, greedy.tokens.size(1))
    assert torch.equal(beam.tokens[:, 0], greedy.tokens)
    n = (greedy.tokens != PAD).sum(1)
    torch.testing.assert_close(beam.scores[:, 0], greedy.scores / length_penalty_factor(n, length_penalty))


@pytest.mark.parametrize("length_penalty", [0.0, 0.6])
def test_beam_search_sorted_and_scores_are_model_log_probs(length_penalty):
    torch.manual_seed(3)
    model = build("seq2seq-tiny", tgt_vocab=10).eval()
    src, lengths = padded_batch(torch.Generator().manual_seed(3), 4, 10)
    k = 5
    beam = beam_search(model, src, beam_size=k, max_len=6, length_penalty=length_penalty, src_lengths=lengths)
    assert beam.tokens.shape[:2] == (4, k) and beam.scores.shape == (4, k)
    assert (beam.scores[:, :-1] >= beam.scores[:, 1:]).all()
    for b in range(4):
        hyps = [tuple(t for t in row.tolist() if t != PAD) for row in beam.tokens[b]]
        assert len(set(hyps)) == k  # distinct hypotheses
        for hyp, score in zip(hyps, beam.scores[b].tolist()):
            tgt_in = torch.tensor([[BOS, *hyp[:-1]]])
            logp = F.log_softmax(model(src[b : b + 1], tgt_in, src_lengths=lengths[b : b + 1]).double(), -1)[0]
            total = logp[torch.arange(len(hyp)), list(hyp)].sum().item()
            lp = length_penalty_factor(torch.tensor(len(hyp)), length_penalty).item()
            assert score == pytest.approx(total / lp, abs=1e-6)


def reverse_batch(g: torch.Generator, n: int, vocab: int):
    src, lengths = padded_batch(g, n, vocab, lo=3, hi=8)
    tgt = torch.full((n, src.size(1) + 1), PAD, dtype=torch.long)
    for i, length in enumerate(lengths.tolist()):
        tgt[i, :length] = src[i, :length].flip(0)
        tgt[i, length] = EOS
    tgt_in = torch.cat([torch.full((n, 1), BOS), tgt[:, :-1]], dim=1)  # inputs after eos are never scored
    return src, lengths, tgt_in, tgt


def train_reverse(cell: str, attention: str, steps: int) -> float:
    """Train on reversing random sequences (lengths 3–8); greedy token accuracy on new ones."""
    torch.manual_seed(0)
    vocab = 12
    model = build(
        "seq2seq-tiny", src_vocab=vocab, tgt_vocab=vocab, embed_dim=32, hidden_size=64, cell=cell, attention=attention
    )
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    g = torch.Generator().manual_seed(0)
    for _ in range(steps):
        src, lengths, tgt_in, tgt = reverse_batch(g, 64, vocab)
        logits = model(src, tgt_in, src_lengths=lengths)
        loss = F.cross_entropy(logits.reshape(-1, vocab), tgt.reshape(-1), ignore_index=PAD)
        opt.zero_grad()
        loss.backward()
        opt.step()
    src, lengths, _, tgt = reverse_batch(torch.Generator().manual_seed(123), 256, vocab)
    out = greedy_decode(model, src, max_len=tgt.size(1), src_lengths=lengths).tokens
    pred = torch.full_like(tgt, PAD)
    pred[:, : out.size(1)] = out
    real = tgt != PAD  # every target token, eos included
    return ((pred == tgt) & real).sum().item() / real.sum().item()


def test_learns_to_reverse():
    assert train_reverse("gru", "additive", steps=250) >= 0.9  # about 2 s on 2 idle cores


@pytest.mark.slow
@pytest.mark.parametrize("cell, attention", [("lstm", "dot"), ("lstm", "general")])
def test_learns_to_reverse_luong_scores(cell, attention):
    assert train_reverse(cell, attention, steps=300) >= 0.9


@pytest.mark.parametrize("cell, gates", [("gru", 3), ("lstm", 4)])
@pytest.mark.parametrize("bidirectional", [True, False])
def test_rnn_layer_counts_match_pytorch_formula(cell, gates, bidirectional):
    cfg = Seq2SeqConfig(
        src_vocab=50,
        tgt_vocab=60,
        embed_dim=12,
        hidden_size=20,
        num_layers=3,
        cell=cell,
        bidirectional_encoder=bidirectional,
    )
    model = build(cfg, device="meta")
    dirs = 2 if bidirectional else 1
    for side, rnn, h in (("encoder", model.encoder.rnn, 20 // dirs), ("decoder", model.decoder.rnn, 20)):
        n_dirs = dirs if side == "encoder" else 1
        for layer in range(3):
            for suffix in ("", "_reverse")[:n_dirs]:
                got = sum(
                    getattr(rnn, f"{kind}_l{layer}{suffix}").numel()
                    for kind in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
                )
                assert got == rnn_formula(gates, 12 if layer == 0 else 20, h), (side, layer, suffix)
    assert n_params(model) == seq2seq_formula(cfg)


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_rnn_layer_counts_against_keras(cell):
    """Keras' GRU (reset_after=True) has PyTorch's two biases; its LSTM has one bias (4h fewer)."""
    os.environ.setdefault("KERAS_BACKEND", "torch")
    import keras

    i, h = 16, 24
    layer = keras.layers.GRU(h) if cell == "gru" else keras.layers.LSTM(h)
    layer.build((None, 5, i))
    ours = build(
        "seq2seq-tiny", device="meta", embed_dim=i, hidden_size=h, cell=cell, bidirectional_encoder=False
    ).encoder.rnn
    expected = layer.count_params() + (4 * h if cell == "lstm" else 0)
    assert n_params(ours) == expected


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"attention": "dot", "cell": "lstm"},
        {"attention": "general", "bidirectional_encoder": False, "num_layers": 2},
        {"attention_dim": 7},
        {"tie_decoder_embeddings": True, "embed_dim": 32},
    ],
)
def test_total_count_formula(overrides):
    model = build("seq2seq-tiny", device="meta", **overrides)
    assert n_params(model) == seq2seq_formula(model.config)


def test_presets_build_on_meta_and_count():
    big = build("seq2seq-gru-attn", device="meta")
    # Hand sum: embeddings 2·8000·256; encoder GRU (2 directions × 256) 789,504 + 1,182,720;
    # decoder GRU 1,182,720 + 1,575,936; additive attention 524,800; combine 524,288; head 4,104,000.
    assert n_params(big) == 13_979_968 == seq2seq_formula(big.config)
    assert get_preset("seq2seq-gru-attn").reference_params in (None, 13_979_968)
    logits = big(*big.example_inputs(batch_size=2, seq_len=11))
    assert logits.shape == (2, 11, 8000) and logits.device.type == "meta"


def test_tied_embeddings_share_one_tensor():
    model = build("seq2seq-tiny", embed_dim=32, tie_decoder_embeddings=True)
    assert model.decoder.out.weight is model.decoder.embed.weight
    untied = build("seq2seq-tiny", embed_dim=32)
    assert n_params(untied) - n_params(model) == 32 * 32


def test_roles():
    model = build("seq2seq-tiny", device="meta")
    assert is_declared_block(model.encoder) and is_declared_block(model.decoder)
    assert sum(is_declared_block(m) for m in model.modules()) == 2
    assert declared_kind(model.encoder.embed) == declared_kind(model.decoder.embed) == "embedding"
    assert declared_kind(model.encoder.rnn) == declared_kind(model.decoder.rnn) == "recurrent"
    assert declared_kind(model.decoder.attention) == "attention"
    assert declared_kind(model.decoder.out) == "head"


@pytest.mark.parametrize(
    "overrides, field",
    [
        ({"hidden_size": 33}, "hidden_size"),
        ({"cell": "rnn"}, "cell"),
        ({"attention": "multihead"}, "attention"),
        ({"tie_decoder_embeddings": True}, "tie_decoder_embeddings"),
        ({"bos_id": 0}, "eos_id"),
        ({"eos_id": 32}, "eos_id"),
        ({"dropout": 1.0}, "dropout"),
    ],
)
def test_config_validation(overrides, field):
    with pytest.raises(ConfigError, match=f"Seq2SeqConfig.{field}:"):
        build("seq2seq-tiny", device="meta", **overrides)


def test_bad_inputs_are_named():
    model = build("seq2seq-tiny")
    src, tgt_in = model.example_inputs(2, 5)
    with pytest.raises(InputShapeError, match="src"):
        model(src[0], tgt_in)
    with pytest.raises(InputShapeError, match="tgt_in"):
        model(src, tgt_in[:1])
    with pytest.raises(InputShapeError, match="src_lengths"):
        model(src, tgt_in, src_lengths=torch.tensor([5]))
    with pytest.raises(InputShapeError, match="no real tokens"):
        model(torch.zeros_like(src), tgt_in)
