"""MLP family: counts against the Keras figures of the seed programs, shapes, roles, validation."""

import pytest
import torch
from torch import nn

from layerwise.errors import ConfigError
from layerwise.models import build, get_config, get_preset
from layerwise.models.mlp import MLPConfig
from layerwise.roles import declared_kind, is_declared_block


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize(
    "name, expected",
    [
        # Keras model.summary() of the seed programs: Dense(10,in 10)=110, Dense(20)=220, Dense(1)=21
        ("seed-mlp", 351),
        # Dense(64, in 784)=50,240, Dense(64)=4,160, Dense(10)=650
        ("mlp-784-64-64-10", 55_050),
        # 64·128+128 + 128·64+64 + 64·10+10, by the Linear formula
        ("mlp-digits", 8_320 + 8_256 + 650),
    ],
)
def test_preset_counts(name, expected):
    model = build(name, device="meta")
    assert n_params(model) == expected
    ref = get_preset(name).reference_params
    assert ref is None or ref == expected


def test_linear_formula_for_any_sizes():
    sizes = (7, 13, 5, 11, 3)
    model = build(MLPConfig(sizes=sizes), device="meta")
    assert n_params(model) == sum(i * o + o for i, o in zip(sizes, sizes[1:]))
    no_bias = build(MLPConfig(sizes=sizes, bias=False), device="meta")
    assert n_params(no_bias) == sum(i * o for i, o in zip(sizes, sizes[1:]))


@pytest.mark.parametrize("norm, extra", [("layernorm", 2 * (64 + 64)), ("batchnorm", 2 * (64 + 64))])
def test_norm_adds_scale_and_shift(norm, extra):
    base = n_params(build("mlp-784-64-64-10", device="meta"))
    assert n_params(build("mlp-784-64-64-10", device="meta", norm=norm)) == base + extra


def test_roles_and_forward():
    model = build("seed-mlp")
    kinds = {name: declared_kind(m) for name, m in model.named_modules() if isinstance(m, nn.Linear)}
    assert kinds == {"hidden.0.linear": "mlp", "hidden.1.linear": "mlp", "head": "head"}
    assert sum(is_declared_block(m) for m in model.modules()) == 2
    (x,) = model.example_inputs(batch_size=4)
    assert x.shape == (4, 10)
    y = model(x)
    assert y.shape == (4, 1)
    assert ((y > 0) & (y < 1)).all()  # sigmoid output as in the seed program


def test_example_inputs_follow_meta_device_and_dtype():
    model = build("mlp-digits", device="meta", dtype=torch.bfloat16)
    (x,) = model.example_inputs(batch_size=3)
    assert x.device.type == "meta" and x.dtype == torch.bfloat16 and x.shape == (3, 64)
    assert model(x).shape == (3, 10)


def test_dropout_and_activation_choices_change_modules_not_counts():
    a = build("mlp-digits", activation="gelu", dropout=0.1)
    assert any(isinstance(m, nn.GELU) for m in a.modules())
    assert any(isinstance(m, nn.Dropout) for m in a.modules())
    assert n_params(a) == n_params(build("mlp-digits"))


def test_config_roundtrip(tmp_path):
    cfg = get_config("seed-mlp")
    for suffix in (".json", ".toml"):
        path = cfg.save(tmp_path / f"c{suffix}")
        assert get_config(str(path)) == cfg


@pytest.mark.parametrize(
    "field, value",
    [
        ("sizes", (10,)),
        ("sizes", (10, 0, 1)),
        ("activation", "swish"),
        ("output_activation", "bogus"),
        ("dropout", 1.0),
        ("norm", "groupnorm"),
        ("bias", "yes"),
    ],
)
def test_validation_names_field(field, value):
    with pytest.raises(ConfigError, match=rf"MLPConfig\.{field}: expected"):
        MLPConfig(**{field: value})


# ---- residual connections and initialisation (the depth study's axes)


def test_residual_adds_the_input_where_widths_match():
    import torch

    from layerwise.models import build

    torch.manual_seed(0)
    plain = build("mlp-digits", sizes=(6, 5, 5, 5, 3))
    torch.manual_seed(0)
    res = build("mlp-digits", sizes=(6, 5, 5, 5, 3), residual=True)
    assert sum(p.numel() for p in res.parameters()) == sum(p.numel() for p in plain.parameters())  # no parameters added
    x = torch.randn(4, 6)
    h = res.hidden[0](x)  # 6 -> 5: no shortcut possible
    h = h + res.hidden[1](h)
    h = h + res.hidden[2](h)
    assert torch.allclose(res(x), res.head(h))
    assert not torch.allclose(res(x), plain(x))


def test_residual_needs_equal_widths():
    import pytest

    from layerwise.errors import ConfigError
    from layerwise.models import build

    with pytest.raises(ConfigError, match="MLPConfig.residual: expected false unless some hidden layer has equal"):
        build("mlp-digits", sizes=(64, 32, 10), residual=True)
    with pytest.raises(ConfigError, match="MLPConfig.init: expected one of default, xavier, kaiming"):
        build("mlp-digits", init="he")


def test_initialisations_follow_their_papers():
    import math

    import torch
    from torch import nn

    from layerwise.models import build

    torch.manual_seed(0)
    default = build("mlp-digits", sizes=(400, 300, 10))
    torch.manual_seed(0)
    ref = nn.Linear(400, 300)  # PyTorch's own Linear with the same seed draws the same numbers
    assert torch.equal(default.hidden[0].linear.weight, ref.weight)
    xavier = build("mlp-digits", sizes=(400, 300, 10), init="xavier")
    w = xavier.hidden[0].linear.weight.detach()
    bound = math.sqrt(6 / (400 + 300))  # Glorot & Bengio 2010, eq. 16
    assert float(w.abs().max()) <= bound and float(w.abs().max()) > 0.99 * bound
    assert float(xavier.hidden[0].linear.bias.detach().abs().max()) == 0.0
    kaiming = build("mlp-digits", sizes=(400, 300, 10), init="kaiming")
    std = float(kaiming.hidden[0].linear.weight.detach().std())
    assert std == pytest.approx(math.sqrt(2 / 400), rel=0.02)  # He et al. 2015: Var = 2 / fan_in
