"""CNN family: published parameter counts (meta device), real forwards, conv-type formulas, roles."""

import pytest
import torch
from torch import nn

from layerwise.errors import ConfigError
from layerwise.models import build, get_config, get_preset, list_presets
from layerwise.models.cnn import CNNConfig, parse_layer_spec
from layerwise.roles import declared_kind, is_declared_block


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# Published counts: torchvision.models docs ("num_params" of each weights entry), the
# kuangliu/pytorch-cifar ResNet18 (torchsummary), Keras' MobileNet (trainable params).
PUBLISHED = {
    "resnet18": 11_689_512,
    "resnet34": 21_797_672,
    "resnet50": 25_557_032,
    "resnet101": 44_549_160,
    "resnet152": 60_192_808,
    "resnext50-32x4d": 25_028_904,
    "wide-resnet50-2": 68_883_240,
    "resnet18-cifar": 11_173_962,
    "vgg11": 132_863_336,
    "vgg13": 133_047_848,
    "vgg16": 138_357_544,
    "vgg19": 143_667_240,
    "vgg16-bn": 138_365_992,
    "mobilenet-v1": 4_231_976,
    "seed-cnn-mnist": 121_930,
}


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_published_counts_on_meta(name):
    model = build(name, device="meta")
    assert all(p.is_meta for p in model.parameters())
    assert n_params(model) == PUBLISHED[name]
    assert get_preset(name).reference_params == PUBLISHED[name]


def test_every_preset_with_a_reference_is_checked_here():
    with_ref = {p.name for p in list_presets("cnn") if p.reference_params is not None}
    assert with_ref == set(PUBLISHED)


def test_seed_cnn_counts_per_layer():
    # Keras summary of the seed program: Conv2D 320, Conv2D 18,496, Dense 102,464 (5·5·64 → 64), Dense 650
    model = build("seed-cnn-mnist", device="meta")
    weights = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    assert [n_params(m) for m in weights] == [320, 18_496, 102_464, 650]


@pytest.mark.parametrize("alpha, millions", [(1.0, 4.2), (0.75, 2.6), (0.5, 1.3), (0.25, 0.5)])
def test_mobilenet_width_multiplier_matches_paper_table_6(alpha, millions):
    # Howard et al. 2017 (arXiv:1704.04861), Table 6: params of α-MobileNet-224, in millions.
    model = build("mobilenet-v1", device="meta", width_multiplier=alpha)
    assert round(n_params(model) / 1e6, 1) == millions


def test_mobilenet_standard_conv_matches_paper_table_4():
    # Table 4: "Conv MobileNet" 29.3M params vs "MobileNet" 4.2M.
    assert round(n_params(build("mobilenet-v1-standard", device="meta")) / 1e6, 1) == 29.3
    assert round(n_params(build("mobilenet-v1", device="meta")) / 1e6, 1) == 4.2


def test_resnet50_forward_on_cpu():
    torch.manual_seed(0)
    model = build("resnet50").eval()
    with torch.no_grad():
        y = model(torch.randn(1, 3, 64, 64))
    assert y.shape == (1, 1000)
    assert torch.isfinite(y).all()


# VGG-16 (configuration D of Simonyan & Zisserman 2014, Table 1): the 13 3×3 convs as (C_in, C_out).
VGG16_CONVS = [(3, 64), (64, 64), (64, 128), (128, 128), (128, 256), (256, 256), (256, 256),
               (256, 512), (512, 512), (512, 512), (512, 512), (512, 512), (512, 512)]  # fmt: skip


def test_vgg16_depthwise_separable_saves_what_the_formula_says():
    k = 3
    standard = sum(k * k * ci * co + co for ci, co in VGG16_CONVS[1:])
    separable = sum(k * k * ci + ci + ci * co + co for ci, co in VGG16_CONVS[1:])  # biases on both convs
    assert n_params(build("vgg16", device="meta")) - n_params(build("vgg16-dws", device="meta")) == standard - separable


def test_mobilenet_standard_vs_separable_formula():
    blocks = [(32, 64), (64, 128), (128, 128), (128, 256), (256, 256), (256, 512)] + [(512, 512)] * 5 + [
        (512, 1024), (1024, 1024)]  # fmt: skip
    # no conv biases; a BN (2 params per channel) after every conv, so the depthwise conv adds 2·C_in
    standard = sum(9 * ci * co + 2 * co for ci, co in blocks)
    separable = sum(9 * ci + 2 * ci + ci * co + 2 * co for ci, co in blocks)
    diff = n_params(build("mobilenet-v1-standard", device="meta")) - n_params(build("mobilenet-v1", device="meta"))
    assert diff == standard - separable


@pytest.mark.parametrize("conv_type", ["standard", "depthwise_separable", "grouped"])
def test_each_conv_matches_its_formula(conv_type):
    groups = 4 if conv_type == "grouped" else 1
    model = build("seed-cnn-mnist", conv_type=conv_type, groups=groups)
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            kh, kw = m.kernel_size
            expected = kh * kw * (m.in_channels // m.groups) * m.out_channels + m.out_channels
            assert n_params(m) == expected
    convs = [(declared_kind(m), m.groups, m.in_channels, m.out_channels, m.kernel_size[0])
             for m in model.modules() if isinstance(m, nn.Conv2d)]  # fmt: skip
    stem = ("conv", 1, 1, 32, 3)  # the first conv stays standard
    if conv_type == "standard":
        assert convs == [stem, ("conv", 1, 32, 64, 3)]
    elif conv_type == "depthwise_separable":
        assert convs == [stem, ("depthwise", 32, 32, 32, 3), ("pointwise", 1, 32, 64, 1)]
    else:
        assert convs == [stem, ("grouped", 4, 32, 64, 3)]
    x = torch.randn(2, 1, 28, 28)
    assert model(x).shape == (2, 10)


def test_separable_pair_total_equals_formula_for_plain_net():
    # one K×K conv C_in→C_out vs its depthwise-separable pair, with biases
    k, ci, co = 5, 12, 20
    spec = dict(arch="plain", in_channels=3, image_size=16, num_classes=2)
    layers_std = ("conv:12:k3", f"conv:{co}:k{k}")
    std = n_params(build(CNNConfig(layers=layers_std, **spec), device="meta"))
    dws = n_params(build(CNNConfig(layers=layers_std, conv_type="depthwise_separable", **spec), device="meta"))
    assert std - dws == (k * k * ci * co + co) - (k * k * ci + ci + ci * co + co)


@pytest.mark.parametrize(
    "name, depth, blocks",
    [("resnet18", 18, 8), ("resnet34", 34, 16), ("resnet50", 50, 16), ("resnet152", 152, 50),
     ("vgg11", 11, 5), ("vgg16", 16, 5), ("vgg19", 19, 5), ("mobilenet-v1", 28, 13)],
)  # fmt: skip
def test_weight_layers_on_the_main_path_and_blocks(name, depth, blocks):
    # The naming convention: convs + Linears, shortcut projections not counted (they are parallel).
    # MobileNet-v1 is "28 layers" counting depthwise and pointwise separately (Howard et al. 2017, §3.2).
    model = build(name, device="meta")
    main = [n for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear)) and "downsample" not in n]
    assert len(main) == depth
    assert sum(is_declared_block(m) for m in model.modules()) == blocks


def test_kinds_are_declared():
    model = build("resnet18-dws", device="meta")
    kinds = {}
    for name, m in model.named_modules():
        if isinstance(m, (nn.Conv2d, nn.Linear, nn.BatchNorm2d)):
            kinds.setdefault(declared_kind(m), []).append(name)
    assert set(kinds) == {"conv", "depthwise", "pointwise", "head", "norm"}
    assert kinds["head"] == ["fc"]
    assert "conv1" in kinds["conv"]
    for name in kinds["depthwise"]:
        m = model.get_submodule(name)
        assert m.groups == m.in_channels == m.out_channels
    for name in kinds["pointwise"]:
        assert model.get_submodule(name).kernel_size == (1, 1)
    vgg = build("vgg16", device="meta")
    assert [declared_kind(m) for m in vgg.modules() if isinstance(m, nn.Linear)] == ["mlp", "mlp", "head"]
    rx = build("resnext50-32x4d", device="meta")
    grouped = [m for m in rx.modules() if declared_kind(m) == "grouped"]
    assert len(grouped) == 16 and all(m.groups == 32 for m in grouped)


@pytest.mark.parametrize(
    "name, overrides",
    [("cnn-tiny", {}), ("cnn-tiny", {"conv_type": "depthwise_separable"}), ("resnet-tiny", {}),
     ("resnet-tiny", {"conv_type": "depthwise_separable"}), ("resnet-tiny", {"conv_type": "grouped", "groups": 4}),
     ("resnet-tiny", {"blocks": (1, 1), "block": "bottleneck"}),
     ("vgg11", {"width_multiplier": 0.125, "classifier_width": 32, "image_size": 32, "num_classes": 10}),
     ("mobilenet-v1", {"width_multiplier": 0.125, "image_size": 32, "num_classes": 10})],
)  # fmt: skip
def test_small_networks_train_one_step_on_cpu(name, overrides):
    torch.manual_seed(0)
    model = build(name, **overrides)
    (x,) = model.example_inputs(batch_size=2)
    logits = model(x)
    assert logits.shape == (2, model.config.num_classes)
    nn.functional.cross_entropy(logits, torch.tensor([0, 1])).backward()
    assert all(p.grad is not None for p in model.parameters())


def test_example_inputs_on_meta():
    model = build("resnet50", device="meta")
    (x,) = model.example_inputs(batch_size=4)
    assert x.is_meta and x.shape == (4, 3, 224, 224)
    assert model(x).shape == (4, 1000)


def test_string_and_dict_specs_build_the_same_network():
    as_dicts = (
        {"type": "conv", "out": 32, "kernel": 3},
        {"type": "maxpool", "kernel": 2},
        {"type": "conv", "out": 64, "kernel": 3},
        {"type": "maxpool", "kernel": 2},
        {"type": "flatten"},
        {"type": "dense", "out": 64},
    )
    a = build("seed-cnn-mnist", device="meta")
    b = build("seed-cnn-mnist", device="meta", layers=as_dicts)
    assert [(n, p.shape) for n, p in a.named_parameters()] == [(n, p.shape) for n, p in b.named_parameters()]
    assert parse_layer_spec("conv:16:k5:s2:p2:nobias:grouped:g4") == {
        "type": "conv", "out": 16, "kernel": 5, "stride": 2, "padding": 2,
        "bias": False, "conv_type": "grouped", "groups": 4,
    }  # fmt: skip


@pytest.mark.parametrize("name", ["seed-cnn-mnist", "resnet-tiny", "vgg16-dws"])
def test_config_roundtrip(tmp_path, name):
    cfg = get_config(name)
    for suffix in (".json", ".toml"):
        assert get_config(str(cfg.save(tmp_path / f"c{suffix}"))) == cfg


@pytest.mark.parametrize(
    "fields, match",
    [
        ({"arch": "alexnet"}, r"CNNConfig\.arch: expected one of"),
        ({"arch": "vgg", "depth": 12}, r"CNNConfig\.depth: expected one of 11, 13, 16, 19"),
        ({"arch": "resnet", "depth": 20}, r"CNNConfig\.depth: expected one of 18, 34"),
        ({"arch": "resnet", "blocks": (2, 2), "block": "basic", "depth": 18}, r"CNNConfig\.depth: expected 0 or 10"),
        ({"arch": "plain", "layers": ()}, r"CNNConfig\.layers: expected a non-empty list"),
        ({"arch": "plain", "layers": ("conv:8:k3", "pool:2")}, r"CNNConfig\.layers\[1\]: .*unknown layer type 'pool'"),
        ({"arch": "plain", "layers": ("conv:8:x3",)}, r"CNNConfig\.layers\[0\]: .*unknown conv option 'x3'"),
        ({"arch": "plain", "layers": ("dense:8", "conv:8")}, r"CNNConfig\.layers\[1\]: expected only dense"),
        ({"arch": "plain", "image_size": 4, "layers": ("conv:8:k5",)}, r"CNNConfig\.layers\[0\]: .*leaves nothing"),
        ({"arch": "resnet", "depth": 18, "conv_type": "grouped"}, r"CNNConfig\.groups: expected > 1"),
        ({"arch": "resnet", "depth": 18, "groups": 2}, r"CNNConfig\.groups: expected 1 unless"),
        ({"arch": "mobilenet_v1", "conv_type": "winograd"}, r"CNNConfig\.conv_type: expected null or one of"),
        ({"arch": "vgg", "depth": 11, "layers": ("gap",)}, r"CNNConfig\.layers: expected empty unless"),
        ({"arch": "plain", "layers": ("conv:8", "conv:8:grouped")}, r"CNNConfig\.layers\[1\]: expected groups > 1"),
        (
            {"arch": "plain", "layers": ("conv:8:k3:s2:same",)},
            r"CNNConfig\.layers\[0\]: .*'same' padding needs stride 1",
        ),
    ],
)
def test_validation_errors_name_the_field(fields, match):
    with pytest.raises(ConfigError, match=match):
        CNNConfig(**fields)


def test_groups_must_divide_channels_at_build():
    with pytest.raises(ConfigError, match=r"CNNConfig\.groups: expected a divisor .* 8→8"):
        build("resnet-tiny", device="meta", conv_type="grouped", groups=3)


# ---- residual connections and initialisation (the depth study's axes)

_LAYERS = ["conv:8:k3:same", "maxpool:2", "conv:8:k3:same", "conv:8:k3:same", "gap"]


def test_plain_cnn_residual_units_add_their_input():
    from layerwise.analysis import analyze

    torch.manual_seed(0)
    plain = build("cnn-tiny", layers=_LAYERS, batchnorm=False, in_channels=1, image_size=12)
    torch.manual_seed(0)
    res = build("cnn-tiny", layers=_LAYERS, batchnorm=False, in_channels=1, image_size=12, residual=True)
    assert sum(p.numel() for p in res.parameters()) == sum(p.numel() for p in plain.parameters())
    x = torch.randn(2, 1, 12, 12)
    h = res.body[2](res.body[1](res.body[0](x)))  # stem conv → act → pool: 1 → 8 channels, no shortcut
    h = h + res.body[3][1](res.body[3][0](h))  # conv → act, plus its input
    h = h + res.body[4][1](res.body[4][0](h))
    assert torch.allclose(res(x), res.head(res.body[6](res.body[5](h))), atol=1e-6)
    assert not torch.allclose(res(x), plain(x))
    assert analyze(res).depth.block_depth == 2 and analyze(res).depth.weight_depth == 4


def test_residual_and_init_validation():
    with pytest.raises(ConfigError, match="CNNConfig.residual: expected false unless some conv keeps its input's shape"):
        build("cnn-tiny", layers=["conv:8:k3", "gap"], residual=True)
    with pytest.raises(ConfigError, match="CNNConfig.residual: expected false unless arch is 'plain'"):
        build("resnet-tiny", residual=True, device="meta")
    with pytest.raises(ConfigError, match="CNNConfig.init: expected one of default, xavier, kaiming"):
        build("cnn-tiny", init="orthogonal", device="meta")


def test_cnn_initialisations():
    import math

    torch.manual_seed(0)
    default = build("cnn-tiny", layers=["conv:64:k3:same", "conv:64:k3:same", "gap"])
    w = default.body[3].weight.detach()  # conv → BN → act, then the second conv
    assert float(w.std()) == pytest.approx(math.sqrt(2 / (64 * 9)), rel=0.03)  # torchvision's fan-out normal
    xavier = build("cnn-tiny", layers=["conv:64:k3:same", "conv:64:k3:same", "gap"], init="xavier")
    w = xavier.body[3].weight.detach()
    bound = math.sqrt(6 / (64 * 9 + 64 * 9))  # Glorot & Bengio 2010 with fan = channels × kernel area
    assert bound * 0.99 < float(w.abs().max()) <= bound
    assert float(xavier.head.bias.detach().abs().max()) == 0.0
    assert torch.equal(xavier.body[1].weight.detach(), torch.ones(64))  # BatchNorm starts at γ = 1
