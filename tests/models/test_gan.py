"""GAN family: counts against Keras and the layer formulas, shapes, ranges, and a few training steps."""

import functools
import math
import os

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from layerwise.errors import ConfigError, InputShapeError
from layerwise.models import build, get_preset
from layerwise.models.gan import GANConfig
from layerwise.roles import declared_kind, is_declared_block


def n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def keras():
    os.environ.setdefault("KERAS_BACKEND", "torch")
    import keras

    return keras


def keras_trainable(model) -> int:
    return sum(math.prod(w.shape) for w in model.trainable_weights)


def linear(i: int, o: int, bias: bool = True) -> int:
    return i * o + (o if bias else 0)


def conv(k: int, c_in: int, c_out: int, bias: bool = True) -> int:
    # Conv2d and ConvTranspose2d alike: K²·C_in·C_out (+ C_out)
    return k * k * c_in * c_out + (c_out if bias else 0)


def formula(c: GANConfig) -> tuple[int, int]:
    """(generator, discriminator) parameter counts from the per-layer formulas."""
    bn = c.batch_norm
    pixels = c.channels * c.image_size**2
    if c.arch == "mlp":
        g_w = (c.latent_dim, *c.g_hidden)
        g = sum(linear(i, o, not bn) + (2 * o if bn else 0) for i, o in zip(g_w, g_w[1:]))
        g += linear(g_w[-1], pixels)
        d_w = (pixels, *c.d_hidden)
        d = sum(
            linear(i, o, not (bn and n > 0)) + (2 * o if bn and n > 0 else 0)
            for n, (i, o) in enumerate(zip(d_w, d_w[1:]))
        )
        d += linear(d_w[-1], 1)
        return g, d
    start = c.image_size // 2 ** len(c.g_hidden)
    g = linear(c.latent_dim, c.g_hidden[0] * start**2, not bn) + (2 * c.g_hidden[0] if bn else 0)
    for c_in, c_out in zip(c.g_hidden, c.g_hidden[1:]):
        g += conv(4, c_in, c_out, not bn) + (2 * c_out if bn else 0)
    g += conv(4, c.g_hidden[-1], c.channels)
    maps = (c.channels, *c.d_hidden)
    d = sum(
        conv(4, i, o, not (bn and n > 0)) + (2 * o if bn and n > 0 else 0)
        for n, (i, o) in enumerate(zip(maps, maps[1:]))
    )
    end = c.image_size // 2 ** len(c.d_hidden)
    d += linear(c.d_hidden[-1] * end**2, 1)
    return g, d


def test_seed_gan_counts_match_keras():
    """The seed article's Keras GAN, built by Keras, has the preset's counts network by network."""
    k = keras()
    L = k.layers
    generator = k.Sequential(
        [k.Input((100,)), L.Dense(128, "relu"), L.Dense(128, "relu"), L.Dense(128, "relu"), L.Dense(784, "tanh")]
    )
    discriminator = k.Sequential([k.Input((784,)), L.Dense(128, "relu"), L.Dense(128, "relu"), L.Dense(1, "sigmoid")])
    model = build("gan-mlp-mnist", device="meta")
    assert n_params(model.generator) == generator.count_params() == 147_088
    assert n_params(model.discriminator) == discriminator.count_params() == 117_121
    assert n_params(model) == get_preset("gan-mlp-mnist").reference_params == 264_209


def test_dcgan_mnist_matches_keras_equivalent():
    """The same DCGAN written in Keras ('same' padding, stride 2): trainable counts, BN state, output size."""
    k = keras()
    L = k.layers
    generator = k.Sequential(
        [
            k.Input((100,)),
            L.Dense(7 * 7 * 128, use_bias=False),
            L.Reshape((7, 7, 128)),
            L.BatchNormalization(),
            L.ReLU(),
            L.Conv2DTranspose(64, 4, strides=2, padding="same", use_bias=False),
            L.BatchNormalization(),
            L.ReLU(),
            L.Conv2DTranspose(1, 4, strides=2, padding="same", activation="tanh"),
        ]
    )
    discriminator = k.Sequential(
        [
            k.Input((28, 28, 1)),
            L.Conv2D(64, 4, strides=2, padding="same"),
            L.LeakyReLU(0.2),
            L.Conv2D(128, 4, strides=2, padding="same", use_bias=False),
            L.BatchNormalization(),
            L.LeakyReLU(0.2),
            L.Flatten(),
            L.Dense(1),
        ]
    )
    model = build("dcgan-mnist", device="meta")
    assert generator.output_shape == (None, 28, 28, 1)
    assert n_params(model.generator) == keras_trainable(generator) == 759_681
    assert n_params(model.discriminator) == keras_trainable(discriminator) == 138_689
    # Keras keeps BatchNorm's moving mean and variance as non-trainable weights; torch as buffers.
    ours_state = sum(b.numel() for name, b in model.named_buffers() if not name.endswith("num_batches_tracked"))
    keras_state = sum(math.prod(w.shape) for w in generator.non_trainable_weights + discriminator.non_trainable_weights)
    assert ours_state == keras_state == 2 * (128 + 64) + 2 * 128


@pytest.mark.parametrize(
    "name_or_overrides",
    [
        "gan-mlp-mnist",
        "gan-mlp-digits",
        "dcgan-mnist",
        {"arch": "mlp", "image_size": 8, "batch_norm": True, "g_hidden": (32, 48), "d_hidden": (40, 24, 16)},
        {"arch": "dcgan", "image_size": 8, "channels": 3, "g_hidden": (64, 32, 16), "d_hidden": (16, 32)},
        {"arch": "dcgan", "image_size": 28, "batch_norm": False, "g_hidden": (32, 16), "d_hidden": (8, 16)},
    ],
)
def test_counts_are_formula_sums(name_or_overrides):
    if isinstance(name_or_overrides, str):
        model = build(name_or_overrides, device="meta")
    else:
        model = build(GANConfig(**name_or_overrides), device="meta")
    g, d = formula(model.config)
    assert n_params(model.generator) == g
    assert n_params(model.discriminator) == d
    assert n_params(model) == g + d


@pytest.mark.parametrize("name", ["gan-mlp-mnist", "gan-mlp-digits", "dcgan-mnist"])
@pytest.mark.parametrize("device", ["meta", "cpu"])
def test_shapes_and_output_range(name, device):
    torch.manual_seed(0)
    model = build(name, device=device).eval()
    c = model.config
    (z,) = model.example_inputs(batch_size=5)
    assert z.shape == (5, c.latent_dim) and z.device.type == device
    images = model(z)
    assert images.shape == (5, c.channels, c.image_size, c.image_size)
    logits = model.discriminate(images)
    assert logits.shape == (5, 1)
    if device == "cpu":
        huge = model(z * 1e4)  # saturates the tanh, never beyond it
        assert images.abs().max() <= 1 and huge.abs().max() <= 1
        assert huge.abs().max() > 0.99
        torch.testing.assert_close(model.discriminate(images.flatten(1)), logits)


def test_dcgan_28_upsamples_7_14_28_with_conv_transpose():
    model = build("dcgan-mnist")
    sizes = []
    hooks = [
        m.register_forward_hook(
            lambda m, i, o: sizes.append((type(m).__name__, tuple(i[0].shape[-2:]), tuple(o.shape[-2:])))
        )
        for m in model.modules()
        if isinstance(m, (nn.ConvTranspose2d, nn.Conv2d))
    ]
    try:
        model.discriminate(model(torch.randn(2, 100)))
    finally:
        for h in hooks:
            h.remove()
    assert sizes == [
        ("ConvTranspose2d", (7, 7), (14, 14)),
        ("ConvTranspose2d", (14, 14), (28, 28)),
        ("Conv2d", (28, 28), (14, 14)),
        ("Conv2d", (14, 14), (7, 7)),
    ]
    deconvs = [m for m in model.generator if isinstance(m, nn.ConvTranspose2d)]
    assert all(m.stride == (2, 2) and m.kernel_size == (4, 4) and m.padding == (1, 1) for m in deconvs)


@functools.cache
def all_digits() -> torch.Tensor:
    from sklearn.datasets import load_digits

    return torch.tensor(load_digits().images, dtype=torch.float32) / 8.0 - 1.0  # (1797, 8, 8), 0..16 → [-1, 1]


def real_digits(n: int, generator: torch.Generator) -> torch.Tensor:
    x = all_digits()
    idx = torch.randint(0, x.size(0), (n,), generator=generator)
    return x[idx].unsqueeze(1)  # (n, 1, 8, 8)


def bce(logits: torch.Tensor, target: float) -> torch.Tensor:
    return F.binary_cross_entropy_with_logits(logits, torch.full_like(logits, target))


@pytest.mark.parametrize(
    "overrides",
    [{}, {"arch": "dcgan", "g_hidden": (32, 16), "d_hidden": (16, 32), "batch_norm": True}],
    ids=["mlp", "dcgan"],
)
def test_optimisation_steps(overrides):
    """Alternating D and G steps on real 8×8 digits run with finite losses and move both networks.

    Then D alone, against a fixed G, learns to tell real from fake (a check that gradients
    reach the discriminator), and G alone, against a fixed D, learns to fool it.
    """
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    model = build("gan-mlp-digits", **overrides)
    opt_d = torch.optim.Adam(model.discriminator.parameters(), lr=2e-3, betas=(0.5, 0.999))
    opt_g = torch.optim.Adam(model.generator.parameters(), lr=2e-3, betas=(0.5, 0.999))
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    for _ in range(5):
        real = real_digits(32, g)
        fake = model(torch.randn(32, model.config.latent_dim))
        d_loss = 0.5 * (bce(model.discriminate(real), 1.0) + bce(model.discriminate(fake.detach()), 0.0))
        opt_d.zero_grad()
        d_loss.backward()
        opt_d.step()
        g_loss = bce(model.discriminate(model(torch.randn(32, model.config.latent_dim))), 1.0)  # non-saturating
        opt_g.zero_grad()
        g_loss.backward()
        opt_g.step()
        assert torch.isfinite(d_loss) and torch.isfinite(g_loss)
    assert all(not torch.equal(before[n], p) for n, p in model.named_parameters())

    z = torch.randn(64, model.config.latent_dim)
    for _ in range(60):
        with torch.no_grad():
            fake = model(z)
        d_loss = 0.5 * (bce(model.discriminate(real_digits(64, g)), 1.0) + bce(model.discriminate(fake), 0.0))
        opt_d.zero_grad()
        d_loss.backward()
        opt_d.step()
    model.eval()
    with torch.no_grad():
        real_right = (model.discriminate(real_digits(256, g)) > 0).float().mean()
        fake_right = (model.discriminate(model(z)) < 0).float().mean()
    assert real_right > 0.9 and fake_right > 0.9

    model.train()
    fooled_before = bce(model.discriminate(model(z)), 1.0).item()
    for _ in range(30):
        g_loss = bce(model.discriminate(model(z)), 1.0)
        opt_g.zero_grad()
        g_loss.backward()
        opt_g.step()
    assert g_loss.item() < 0.5 * fooled_before


def test_roles_and_blocks():
    mlp = build("gan-mlp-mnist", device="meta")
    kinds = {n: declared_kind(m) for n, m in mlp.named_modules() if isinstance(m, nn.Linear)}
    assert kinds == {
        "generator.fc1": "mlp",
        "generator.fc2": "mlp",
        "generator.fc3": "mlp",
        "generator.out": "head",
        "discriminator.fc1": "mlp",
        "discriminator.fc2": "mlp",
        "discriminator.out": "head",
    }
    dc = build("dcgan-mnist", device="meta")
    kinds = {n: declared_kind(m) for n, m in dc.named_modules() if any(True for _ in m.parameters(recurse=False))}
    assert kinds == {
        "generator.project": "mlp",
        "generator.bn0": "norm",
        "generator.deconv1": "conv",
        "generator.bn1": "norm",
        "generator.out": "head",
        "discriminator.conv1": "conv",
        "discriminator.conv2": "conv",
        "discriminator.bn2": "norm",
        "discriminator.out": "head",
    }
    for model in (mlp, dc):
        assert [n for n, m in model.named_modules() if is_declared_block(m)] == ["generator", "discriminator"]


@pytest.mark.parametrize(
    "fields, field",
    [
        ({"arch": "vae"}, "arch"),
        ({"arch": "dcgan", "image_size": 30, "g_hidden": (64, 32)}, "image_size"),
        ({"arch": "dcgan", "image_size": 28, "d_hidden": (16, 32, 64)}, "image_size"),
        ({"g_hidden": ()}, "g_hidden"),
        ({"d_activation": "swish"}, "d_activation"),
        ({"latent_dim": 0}, "latent_dim"),
        ({"leaky_slope": 1.5}, "leaky_slope"),
    ],
)
def test_config_validation(fields, field):
    with pytest.raises(ConfigError, match=f"GANConfig.{field}:"):
        GANConfig(**fields)


def test_bad_inputs_are_named():
    model = build("gan-mlp-digits")
    with pytest.raises(InputShapeError, match=r"z has shape \(2, 15\), expected \(batch, 16\)"):
        model(torch.randn(2, 15))
    with pytest.raises(InputShapeError, match="x has shape"):
        model.discriminate(torch.randn(2, 1, 28, 28))


def test_config_round_trip(tmp_path):
    cfg = build("dcgan-mnist", device="meta").config
    path = cfg.save(tmp_path / "gan.json")
    from layerwise.models import get_config

    assert get_config(str(path)) == cfg
