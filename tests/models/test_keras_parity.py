"""Our models against Keras 3's count_params() for the same networks (Keras runs on its torch backend).

Keras and PyTorch count differently in two documented places, both asserted explicitly here:
- LSTM (and SimpleRNN) layers: PyTorch keeps two bias vectors (``bias_ih`` and ``bias_hh``),
  Keras one, so an LSTM layer is 4·h·(i + h) + 8h parameters in PyTorch and 4·h·(i + h) + 4h
  in Keras: 4h more per layer and direction in PyTorch. Keras 3's GRU (``reset_after=True``)
  has two bias vectors too, so GRUs agree.
- BatchNorm: Keras counts the moving mean and variance as (non-trainable) parameters; PyTorch
  keeps them as buffers (``running_mean``, ``running_var``), not parameters.
"""

import os

os.environ["KERAS_BACKEND"] = "torch"  # before keras is imported: no TensorFlow needed

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from keras import layers  # noqa: E402
from torch import nn  # noqa: E402

from layerwise.models import build  # noqa: E402


@pytest.fixture(autouse=True, scope="module")
def _torch_backend():
    if keras.backend.backend() != "torch":
        pytest.fail(f"keras was imported with backend {keras.backend.backend()!r} before this module set 'torch'")


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def bn_running_stats(model: nn.Module) -> int:
    return sum(b.numel() for name, b in model.named_buffers() if name.endswith(("running_mean", "running_var")))


def keras_trainable(model) -> int:
    return sum(int(np.prod(w.shape)) for w in model.trainable_weights)


def test_seed_mlp():
    # The seed article's program: Dense(10, input_shape=(10,), relu), Dense(20, relu), Dense(1, sigmoid)
    k = keras.Sequential([keras.Input((10,)), layers.Dense(10, activation="relu"),
                          layers.Dense(20, activation="relu"), layers.Dense(1, activation="sigmoid")])  # fmt: skip
    assert k.count_params() == 351
    assert n_params(build("seed-mlp", device="meta")) == k.count_params()


def test_mnist_mlp():
    k = keras.Sequential([keras.Input((784,)), layers.Dense(64, activation="relu"),
                          layers.Dense(64, activation="relu"), layers.Dense(10, activation="softmax")])  # fmt: skip
    assert k.count_params() == 55_050
    assert n_params(build("mlp-784-64-64-10", device="meta")) == k.count_params()


def test_seed_cnn_mnist():
    k = keras.Sequential([
        keras.Input((28, 28, 1)),
        layers.Conv2D(32, (3, 3), activation="relu"),
        layers.MaxPooling2D((2, 2)),
        layers.Conv2D(64, (3, 3), activation="relu"),
        layers.MaxPooling2D((2, 2)),
        layers.Flatten(),
        layers.Dense(64, activation="relu"),
        layers.Dense(10, activation="softmax"),
    ])  # fmt: skip
    assert k.count_params() == 121_930
    ours = build("seed-cnn-mnist", device="meta")
    assert n_params(ours) == k.count_params()
    # layer by layer, in order: Conv2D, Conv2D, Dense, Dense
    k_layers = [lyr.count_params() for lyr in k.layers if lyr.count_params()]
    ours_layers = [n_params(m) for m in ours.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    assert ours_layers == k_layers


def _keras_lstm_classifier(vocab, embed, hidden, stacked, classes):
    stack = [layers.LSTM(hidden, return_sequences=i < stacked - 1) for i in range(stacked)]
    return keras.Sequential([keras.Input((None,), dtype="int32"), layers.Embedding(vocab, embed), *stack,
                             layers.Dense(classes, activation="softmax" if classes > 1 else "sigmoid")])  # fmt: skip


def test_seed_lstm_differs_by_the_second_bias():
    # Seed program: Embedding(10000,128), LSTM(128, return_sequences=True), LSTM(128), Dense(num_classes)
    k = _keras_lstm_classifier(10_000, 128, 128, stacked=2, classes=2)
    h, n_layers = 128, 2
    assert k.count_params() == 1_280_000 + 2 * (4 * h * (h + h) + 4 * h) + 258 == 1_543_426  # Keras: one bias
    ours = build("seed-lstm", device="meta")
    assert n_params(ours) == 1_280_000 + 2 * (4 * h * (h + h) + 8 * h) + 258 == 1_544_450  # PyTorch: two biases
    assert n_params(ours) == k.count_params() + n_layers * 4 * h  # the extra bias, 4h per layer
    assert n_params(ours.rnn) - n_layers * 4 * h == sum(lyr.count_params() for lyr in k.layers[1:3])


def test_seed_lstm_binary():
    # Second seed program: Embedding(10000, 64), LSTM(128), Dense(1, sigmoid)
    k = _keras_lstm_classifier(10_000, 64, 128, stacked=1, classes=1)
    assert k.count_params() == 738_945
    assert n_params(build("seed-lstm-binary", device="meta")) == k.count_params() + 4 * 128


def test_gru_agrees_and_simple_rnn_differs_by_one_bias():
    h, e = 16, 12
    gru = keras.Sequential([keras.Input((None, e)), layers.GRU(h)])  # reset_after=True: two biases
    assert gru.count_params() == 3 * h * (e + h) + 6 * h
    ours_gru = build("rnn-tiny", cell="gru", embed_dim=e, hidden_size=h, num_layers=1, bidirectional=False)
    assert n_params(ours_gru.rnn) == gru.count_params()
    srnn = keras.Sequential([keras.Input((None, e)), layers.SimpleRNN(h)])
    ours_rnn = build("rnn-tiny", cell="rnn", embed_dim=e, hidden_size=h, num_layers=1, bidirectional=False)
    assert n_params(ours_rnn.rnn) == srnn.count_params() + h


def test_batchnorm_keras_counts_running_stats():
    # cnn-tiny: conv 3→8 (same) + BN + ReLU, max pool 2, conv 8→16 (same) + BN + ReLU, global avg pool, Dense 10
    k = keras.Sequential([
        keras.Input((16, 16, 3)),
        layers.Conv2D(8, 3, padding="same"), layers.BatchNormalization(), layers.ReLU(),
        layers.MaxPooling2D(2),
        layers.Conv2D(16, 3, padding="same"), layers.BatchNormalization(), layers.ReLU(),
        layers.GlobalAveragePooling2D(),
        layers.Dense(10),
    ])  # fmt: skip
    ours = build("cnn-tiny")
    stats = bn_running_stats(ours)
    assert stats == 2 * (8 + 16)  # running_mean + running_var of both BatchNorms
    assert keras_trainable(k) == n_params(ours) == 1_610
    assert k.count_params() == n_params(ours) + stats == 1_658


def test_mobilenet_v1_against_keras_applications():
    # keras.applications.MobileNet (Howard et al. 2017): 4,253,864 params in Keras' count, of which
    # 21,888 are BatchNorm moving statistics; the trainable 4,231,976 are our parameter count.
    k = keras.applications.MobileNet(weights=None, alpha=1.0, input_shape=(224, 224, 3))
    ours = build("mobilenet-v1", device="meta")
    assert keras_trainable(k) == n_params(ours) == 4_231_976
    assert k.count_params() == n_params(ours) + bn_running_stats(ours) == 4_253_864


@pytest.mark.parametrize("alpha", [0.5, 0.25])
def test_mobilenet_v1_width_multiplier_against_keras(alpha):
    k = keras.applications.MobileNet(weights=None, alpha=alpha, input_shape=(224, 224, 3))
    ours = build("mobilenet-v1", device="meta", width_multiplier=alpha)
    assert keras_trainable(k) == n_params(ours)
    assert k.count_params() == n_params(ours) + bn_running_stats(ours)


@pytest.mark.slow
def test_vgg16_against_keras_applications():
    # keras.applications.VGG16 allocates its 138M weights (about 0.55 GB), hence slow.
    k = keras.applications.VGG16(weights=None)
    assert k.count_params() == n_params(build("vgg16", device="meta")) == 138_357_544


def _keras_footer(k) -> list[str]:
    lines: list[str] = []
    k.summary(print_fn=lambda text, line_break=True: lines.extend(text.splitlines()))
    return [" ".join(line.split()) for line in lines if "params:" in line]


@pytest.mark.parametrize("preset,keras_model", [
    ("seed-mlp", lambda: keras.Sequential([keras.Input((10,)), layers.Dense(10, activation="relu"),
                                           layers.Dense(20, activation="relu"), layers.Dense(1, activation="sigmoid")])),
    ("cnn-tiny", lambda: keras.Sequential([
        keras.Input((16, 16, 3)),
        layers.Conv2D(8, 3, padding="same"), layers.BatchNormalization(), layers.ReLU(), layers.MaxPooling2D(2),
        layers.Conv2D(16, 3, padding="same"), layers.BatchNormalization(), layers.ReLU(),
        layers.GlobalAveragePooling2D(), layers.Dense(10)])),
])  # fmt: skip
def test_keras_view_footer_equals_keras_summary(preset, keras_model):
    """`summary --keras` ends with the three lines Keras' model.summary() prints, sizes included
    ("Total params: 351 (1.37 KB)"): BatchNorm statistics as non-trainable params."""
    from layerwise.analysis import analyze
    from layerwise.report.table import render_keras

    ours = [" ".join(line.split()) for line in render_keras(analyze(build(preset, device="meta"))).splitlines()
            if "params:" in line]
    assert ours == _keras_footer(keras_model())
