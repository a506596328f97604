"""Image classification data: the built-in digits against scikit-learn and the published MNIST
subset, IDX files written here byte by byte from the format's description, and .npy arrays."""

import gzip
import struct

import numpy as np
import pytest
import torch

from layerwise.data import ImageClassification, load_dataset, read_idx, split, write_idx
from layerwise.errors import ConfigError, LayerwiseError, LoadError


def idx_bytes(magic: int, dims: tuple[int, ...], data: bytes) -> bytes:
    """IDX as LeCun's MNIST page documents it: big-endian int32 magic, then one big-endian
    int32 per dimension, then the data."""
    return struct.pack(">i", magic) + b"".join(struct.pack(">i", d) for d in dims) + data


@pytest.fixture
def mnist_like(tmp_path):
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, size=(7, 5, 4), dtype=np.uint8)
    labels = np.array([3, 1, 4, 1, 5, 9, 2], dtype=np.uint8)
    images = tmp_path / "train-images-idx3-ubyte"
    images.write_bytes(idx_bytes(0x00000803, pixels.shape, pixels.tobytes()))
    (tmp_path / "train-labels-idx1-ubyte").write_bytes(idx_bytes(0x00000801, labels.shape, labels.tobytes()))
    return images, pixels, labels


# --- built-in sets -----------------------------------------------------------------------------


def test_digits_equal_scikit_learn_load_digits():
    from sklearn.datasets import load_digits

    ds = load_dataset("digits")
    ref = load_digits()
    assert isinstance(ds, ImageClassification)
    assert ds.images.shape == (1_797, 1, 8, 8) and ds.images.dtype == torch.float32
    assert ds.labels.shape == (1_797,) and ds.labels.dtype == torch.int64
    assert torch.equal(ds.images[:, 0] * 16, torch.tensor(ref.images, dtype=torch.float32))
    assert torch.equal(ds.labels, torch.tensor(ref.target))
    assert float(ds.images.min()) == 0.0 and float(ds.images.max()) == 1.0
    assert ds.label_names == [str(d) for d in range(10)]


def test_mnist_5k_published_size():
    ds = load_dataset("mnist-5k")
    assert ds.images.shape == (5_000, 1, 28, 28) and ds.images.dtype == torch.float32
    assert ds.class_counts() == [500] * 10
    assert float(ds.images.min()) == 0.0 and float(ds.images.max()) == 1.0
    # Pixels are k/255 for whole k: the 0..255 bytes of MNIST.
    k = ds.images * 255
    assert torch.allclose(k, k.round(), atol=1e-4)
    # MNIST digits are centred in a 20x20 box of the 28x28 frame: the border is almost empty.
    mean = ds.images.mean(0)[0]
    assert mean[:2].max() < 0.01 and mean[10:18, 10:18].mean() > 0.3
    # A fresh tensor each call: editing one does not change the next.
    ds.images.zero_()
    assert float(load_dataset("mnist-5k").images.max()) == 1.0


def test_image_split_is_stratified_and_seeded():
    ds = load_dataset("digits")
    counts = torch.bincount(ds.labels).tolist()
    a = split(ds, val=0.15, test=0.15, seed=0)
    b = split(ds, val=0.15, test=0.15, seed=0)
    c = split(ds, val=0.15, test=0.15, seed=1)
    assert isinstance(a.train, ImageClassification) and a.train.image_shape == (1, 8, 8)
    assert len(a.train) + len(a.val) + len(a.test) == 1_797
    assert len(a.val) == 270 and len(a.test) == 539 - 270  # round(N * 0.15), round(N * 0.3) - 270
    for part in (a.val, a.test):
        for n, got in zip(counts, part.class_counts()):
            assert abs(got - n * 0.15) <= 1
    assert torch.equal(a.val.images, b.val.images) and torch.equal(a.test.labels, b.test.labels)
    assert not torch.equal(a.val.images, c.val.images)
    # The three parts are disjoint and cover the set: every image appears exactly once.
    flat = {tuple(x.flatten().tolist()) + (int(y),) for x, y in zip(ds.images, ds.labels)}
    joined = [tuple(x.flatten().tolist()) + (int(y),) for p in a for x, y in zip(p.images, p.labels)]
    assert len(joined) == 1_797 and set(joined) == flat


# --- IDX ---------------------------------------------------------------------------------------


def test_idx_round_trip_with_sibling_labels(mnist_like):
    images, pixels, labels = mnist_like
    ds = load_dataset(images)
    assert ds.name == "train"
    assert ds.images.shape == (7, 1, 5, 4)
    assert torch.equal(ds.images[:, 0], torch.tensor(pixels, dtype=torch.float32) / 255)
    assert ds.labels.tolist() == labels.tolist()
    assert ds.label_names == [str(i) for i in range(10)]
    same = load_dataset(
        images=images, labels=images.with_name("train-labels-idx1-ubyte"), label_names=list("abcdefghij")
    )
    assert torch.equal(same.images, ds.images) and same.label_names[9] == "j"


def test_write_idx_matches_the_format(tmp_path, mnist_like):
    _, pixels, labels = mnist_like
    path = write_idx(tmp_path / "mine-images-idx3-ubyte", pixels)
    assert path.read_bytes() == idx_bytes(0x00000803, pixels.shape, pixels.tobytes())
    write_idx(tmp_path / "mine-labels-idx1-ubyte", labels)
    assert (tmp_path / "mine-labels-idx1-ubyte").read_bytes()[:8] == b"\x00\x00\x08\x01\x00\x00\x00\x07"
    floats = np.linspace(-1, 1, 24, dtype=np.float32).reshape(2, 3, 4)
    write_idx(tmp_path / "f.idx", floats)
    raw = (tmp_path / "f.idx").read_bytes()
    assert raw[:4] == b"\x00\x00\x0d\x03" and raw[16:20] == struct.pack(">f", -1.0)
    assert np.array_equal(read_idx(tmp_path / "f.idx"), floats)
    gz = write_idx(tmp_path / "g-images-idx3-ubyte.gz", pixels)
    write_idx(tmp_path / "g-labels-idx1-ubyte.gz", labels)
    assert gzip.decompress(gz.read_bytes()) == idx_bytes(0x00000803, pixels.shape, pixels.tobytes())
    assert load_dataset(gz).labels.tolist() == labels.tolist()
    with pytest.raises(LayerwiseError, match=r"write_idx: arrays of type int64"):
        write_idx(tmp_path / "bad.idx", np.zeros(3, dtype=np.int64))


def test_idx_errors(tmp_path, mnist_like):
    images, pixels, labels = mnist_like
    bad_magic = tmp_path / "bad-images-idx3-ubyte"
    bad_magic.write_bytes(idx_bytes(0x00000903 + 0x01000000, pixels.shape, pixels.tobytes()))
    with pytest.raises(
        LoadError, match=r"bad-images-idx3-ubyte: not an IDX file \(magic number 0x01000903\); expected"
    ):
        load_dataset(bad_magic, labels=tmp_path / "train-labels-idx1-ubyte")
    short = tmp_path / "short-images-idx3-ubyte"
    short.write_bytes(idx_bytes(0x00000803, (7, 5, 4), pixels.tobytes()[:-3]))
    with pytest.raises(
        LoadError,
        match=r"short-images-idx3-ubyte: IDX header declares 7 x 5 x 4 values .* = 140 bytes of data, "
        r"the file holds 137",
    ):
        load_dataset(short, labels=tmp_path / "train-labels-idx1-ubyte")
    mismatch = tmp_path / "few-labels-idx1-ubyte"
    mismatch.write_bytes(idx_bytes(0x00000801, (6,), labels[:6].tobytes()))
    with pytest.raises(LoadError, match=r"few-labels-idx1-ubyte: 6 labels for 7 images"):
        load_dataset(images, labels=mismatch)
    swapped = tmp_path / "swapped-images-idx3-ubyte"
    swapped.write_bytes(idx_bytes(0x00000801, labels.shape, labels.tobytes()))
    with pytest.raises(
        LoadError,
        match=r"swapped-images-idx3-ubyte: IDX array of type uint8 with shape \(7,\); "
        r"expected unsigned-byte images .*0x00000803",
    ):
        load_dataset(swapped, labels=tmp_path / "train-labels-idx1-ubyte")
    lonely = tmp_path / "lonely-images-idx3-ubyte"
    lonely.write_bytes(idx_bytes(0x00000803, pixels.shape, pixels.tobytes()))
    with pytest.raises(LoadError, match=r"lonely-labels-idx1-ubyte: no such file"):
        load_dataset(lonely)
    with pytest.raises(LoadError, match=r"label 9 but only 3 label_names"):
        load_dataset(images, label_names=["a", "b", "c"])


# --- .npy --------------------------------------------------------------------------------------


def test_npy_round_trips(tmp_path):
    rng = np.random.default_rng(1)
    labels = np.array([0, 2, 1, 2, 0], dtype=np.int64)
    np.save(tmp_path / "y.npy", labels)
    nchw = rng.integers(0, 256, size=(5, 3, 6, 7), dtype=np.uint8)
    np.save(tmp_path / "rgb.npy", nchw)
    ds = load_dataset(tmp_path / "rgb.npy", labels=tmp_path / "y.npy", label_names=["cat", "dog", "eel"])
    assert ds.name == "rgb" and ds.images.shape == (5, 3, 6, 7)
    assert torch.equal(ds.images, torch.tensor(nchw, dtype=torch.float32) / 255)
    assert ds.labels.tolist() == [0, 2, 1, 2, 0] and ds.label_names == ["cat", "dog", "eel"]
    np.save(tmp_path / "nhwc.npy", nchw.transpose(0, 2, 3, 1))
    assert torch.equal(load_dataset(tmp_path / "nhwc.npy", labels=tmp_path / "y.npy").images, ds.images)
    gray = rng.random((5, 6, 7), dtype=np.float32)
    np.save(tmp_path / "gray.npy", gray)
    g = load_dataset(tmp_path / "gray.npy", labels=tmp_path / "y.npy")
    assert g.images.shape == (5, 1, 6, 7) and torch.equal(g.images[:, 0], torch.from_numpy(gray))
    assert g.label_names == ["0", "1", "2"]


def test_npy_errors(tmp_path):
    np.save(tmp_path / "y.npy", np.array([0, 1]))
    np.save(tmp_path / "x.npy", np.zeros((2, 4, 4), dtype=np.uint8))
    with pytest.raises(LoadError, match=r"x\.npy: a \.npy image array needs its labels: pass --labels FILE\.npy"):
        load_dataset(tmp_path / "x.npy")
    np.save(tmp_path / "hot.npy", np.full((2, 4, 4), 2.5, dtype=np.float32))
    with pytest.raises(LoadError, match=r"hot\.npy: float pixels range 2.5..2.5; expected values in \[0, 1\]"):
        load_dataset(tmp_path / "hot.npy", labels=tmp_path / "y.npy")
    np.save(tmp_path / "flat.npy", np.zeros((2, 16), dtype=np.uint8))
    with pytest.raises(LoadError, match=r"flat\.npy: image array of shape \(2, 16\); expected \(N, H, W\)"):
        load_dataset(tmp_path / "flat.npy", labels=tmp_path / "y.npy")
    np.save(tmp_path / "three.npy", np.array([0, 1, 1]))
    with pytest.raises(LoadError, match=r"three\.npy: 3 labels for 2 images"):
        load_dataset(tmp_path / "x.npy", labels=tmp_path / "three.npy")
    np.save(tmp_path / "objects.npy", np.array([{"a": 1}, None], dtype=object), allow_pickle=True)
    with pytest.raises(LoadError, match=r"objects\.npy: not a readable \.npy array"):
        load_dataset(tmp_path / "objects.npy", labels=tmp_path / "y.npy")
    with pytest.raises(ConfigError, match=r"give the images file either as the first argument or as images="):
        load_dataset(tmp_path / "x.npy", images=tmp_path / "x.npy", labels=tmp_path / "y.npy")


def test_dataclass_validation():
    with pytest.raises(LayerwiseError, match=r"images must be a float32 tensor \(N, C, H, W\), got torch.uint8"):
        ImageClassification("x", torch.zeros(2, 1, 3, 3, dtype=torch.uint8), torch.zeros(2, dtype=torch.long), ["a"])
    with pytest.raises(LayerwiseError, match=r"2 images but 3 labels"):
        ImageClassification("x", torch.zeros(2, 1, 3, 3), torch.zeros(3, dtype=torch.long), ["a"])
    with pytest.raises(LayerwiseError, match=r"label 1 is not a class index in 0..0"):
        ImageClassification("x", torch.zeros(2, 1, 3, 3), torch.tensor([0, 1]), ["a"])
