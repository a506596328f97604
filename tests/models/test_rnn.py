"""RNN family: per-layer count formulas, padding via lengths, roles, meta device, validation."""

import pytest
import torch
from torch import nn

from layerwise.errors import ConfigError, InputShapeError
from layerwise.models import build, get_config
from layerwise.models.rnn import RNNConfig
from layerwise.roles import WEIGHT_LAYER_ATTR, declared_kind


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


GATES = {"rnn": 1, "gru": 3, "lstm": 4}


def expected_count(vocab, embed, hidden, layers, cell, bidirectional, classes):
    """Embedding V·E + per layer and direction G·h·(i + h) + 2·G·h (PyTorch's two biases) + head."""
    d = 2 if bidirectional else 1
    g = GATES[cell]
    total = vocab * embed
    for layer in range(layers):
        i = embed if layer == 0 else d * hidden
        total += d * (g * hidden * (i + hidden) + 2 * g * hidden)
    return total + d * hidden * classes + classes


def test_seed_lstm_count():
    # 1,280,000 (embedding) + 2 × 132,096 (LSTM 128→128: 4·128·256 + 8·128) + 258 (Dense 128→2)
    model = build("seed-lstm", device="meta")
    assert n_params(model) == 1_280_000 + 2 * 132_096 + 258 == 1_544_450
    assert n_params(model.rnn) == 2 * (4 * 128 * (128 + 128) + 8 * 128)


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("layers", [1, 3])
def test_count_formula(cell, bidirectional, layers):
    cfg = RNNConfig(vocab_size=50, embed_dim=7, hidden_size=5, num_layers=layers, cell=cell,
                    bidirectional=bidirectional, num_classes=4)  # fmt: skip
    model = build(cfg, device="meta")
    assert n_params(model) == expected_count(50, 7, 5, layers, cell, bidirectional, 4)


def test_roles():
    model = build("seed-lstm", device="meta")
    assert declared_kind(model.embedding) == "embedding"
    assert declared_kind(model.rnn) == "recurrent"
    assert declared_kind(model.head) == "head"
    assert getattr(model.rnn, WEIGHT_LAYER_ATTR) == 2  # two stacked LSTM layers


def test_meta_forward_with_example_inputs():
    model = build("seed-lstm", device="meta")
    (tokens,) = model.example_inputs(batch_size=3)
    assert tokens.is_meta and tokens.shape == (3, 32) and tokens.dtype == torch.long
    assert model(tokens).shape == (3, 2)
    (tokens,) = model.example_inputs(batch_size=2, seq_len=7)
    assert tokens.shape == (2, 7)


def test_last_pooling_is_final_output_step():
    torch.manual_seed(0)
    model = build("seed-lstm", vocab_size=30).eval()
    tokens = torch.randint(0, 30, (2, 9))
    out, _ = model.rnn(model.embedding(tokens))
    assert torch.allclose(model(tokens), model.head(out[:, -1]), atol=1e-6)


@pytest.mark.parametrize("pooling", ["last", "mean", "max"])
@pytest.mark.parametrize("cell, bidirectional", [("lstm", False), ("gru", True), ("rnn", True)])
def test_lengths_ignore_padding(pooling, cell, bidirectional):
    # A right-padded batch with lengths gives each row the same output as that row alone, unpadded.
    torch.manual_seed(0)
    model = build("rnn-tiny", pooling=pooling, cell=cell, bidirectional=bidirectional).eval()
    lengths = torch.tensor([12, 5, 1, 8])
    tokens = torch.randint(1, 100, (4, 12))
    for row, n in enumerate(lengths.tolist()):
        tokens[row, n:] = 0
    with torch.no_grad():
        batched = model(tokens, lengths)
        alone = torch.cat([model(tokens[r : r + 1, :n]) for r, n in enumerate(lengths.tolist())])
        unmasked = model(tokens)
    assert torch.allclose(batched, alone, atol=1e-5)
    assert not torch.allclose(batched[1:], unmasked[1:], atol=1e-5)  # padding would change them


def test_padding_idx_row_is_zero_and_gets_no_gradient():
    model = build("rnn-tiny")
    assert torch.all(model.embedding.weight[0] == 0)
    tokens = torch.tensor([[0, 3, 4, 0]])
    model(tokens).sum().backward()
    assert torch.all(model.embedding.weight.grad[0] == 0)
    assert model.embedding.weight.grad[3].abs().sum() > 0


def test_bad_inputs_raise_one_line_errors():
    model = build("rnn-tiny")
    with pytest.raises(InputShapeError, match=r"expected token ids of shape \(B, T\)"):
        model(torch.zeros(2, 3, 4, dtype=torch.long))
    with pytest.raises(InputShapeError, match=r"expected lengths of shape \(2,\)"):
        model(torch.zeros(2, 5, dtype=torch.long), torch.tensor([5]))
    with pytest.raises(InputShapeError, match=r"expected lengths in \[1, 5\]"):
        model(torch.zeros(2, 5, dtype=torch.long), torch.tensor([5, 0]))


def test_dropout_goes_between_layers_and_before_head():
    model = build("rnn-tiny", dropout=0.3)
    assert model.rnn.dropout == 0.3
    assert isinstance(model.dropout, nn.Dropout)
    one_layer = build("rnn-tiny", dropout=0.3, num_layers=1)  # torch warns on dropout with one layer
    assert one_layer.rnn.dropout == 0.0


def test_train_step():
    torch.manual_seed(0)
    model = build("rnn-tiny")
    (tokens,) = model.example_inputs(batch_size=4)
    loss = nn.functional.cross_entropy(model(tokens, torch.tensor([12, 3, 7, 1])), torch.tensor([0, 1, 2, 0]))
    loss.backward()
    assert all(p.grad is not None for p in model.parameters())


def test_config_roundtrip(tmp_path):
    cfg = get_config("rnn-tiny")
    for suffix in (".json", ".toml"):
        assert get_config(str(cfg.save(tmp_path / f"c{suffix}"))) == cfg
    seed = get_config("seed-lstm")
    assert get_config(str(seed.save(tmp_path / "s.toml"))) == seed  # padding_idx None survives TOML


@pytest.mark.parametrize(
    "field, value",
    [("cell", "transformer"), ("pooling", "attention"), ("num_layers", 0), ("dropout", -0.1),
     ("padding_idx", 10_000), ("bidirectional", 1), ("vocab_size", 0)],
)  # fmt: skip
def test_validation_names_field(field, value):
    with pytest.raises(ConfigError, match=rf"RNNConfig\.{field}: expected"):
        RNNConfig(**{field: value})
