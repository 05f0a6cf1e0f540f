"""Image datasets read with numpy from the files their authors publish; no torchvision.

- ``digits``: the 8x8 handwritten digits scikit-learn ships (1,797 images, no download),
  upsampled bilinearly to 16x16. For tests and the CPU demo.
- ``mnist``: ``<root>/mnist/{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]`` (idx format).
- ``cifar10``: ``<root>/cifar-10-batches-py/{data_batch_1..5,test_batch}`` (python pickles).
- ``stl10``: ``<root>/stl10_binary/{train,test}_{X,y}.bin`` (raw uint8, column-major images).

Every loader returns float32 images in [0, 1] shaped (N, C, H, W) and int64 labels. A missing
file is one DataError naming the expected path and where to get the data.
"""

from __future__ import annotations

import gzip
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from arcdiff.errors import DataError

IMAGE_DATASETS: tuple[str, ...] = ("digits", "mnist", "cifar10", "stl10")
SPLITS: tuple[str, ...] = ("train", "test")
SOURCES = {
    "mnist": "https://ossci-datasets.s3.amazonaws.com/mnist/ (the four *-ubyte.gz files; "
    "gunzipping is optional)",
    "cifar10": "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz (extract it there)",
    "stl10": "https://ai.stanford.edu/~acoates/stl10/stl10_binary.tar.gz (extract it there)",
}
CLASS_NAMES = {
    "digits": [str(i) for i in range(10)],
    "mnist": [str(i) for i in range(10)],
    "cifar10": [
        "airplane",
        "automobile",
        "bird",
        "cat",
        "deer",
        "dog",
        "frog",
        "horse",
        "ship",
        "truck",
    ],
    "stl10": ["airplane", "bird", "car", "cat", "deer", "dog", "horse", "monkey", "ship", "truck"],
}
DIGITS_TRAIN = 1500  # digits has no official split: the first 1,500 train, 297 test
IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


@dataclass(frozen=True)
class ImageSet:
    """Images in [0, 1] (N, C, H, W) float32, labels (N,) int64 in 0..num_classes-1."""

    name: str
    images: np.ndarray
    labels: np.ndarray
    class_names: list[str]

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def channels(self) -> int:
        return self.images.shape[1]

    @property
    def image_size(self) -> int:
        return self.images.shape[2]


def _missing(name: str, path: Path) -> DataError:
    return DataError(f"{name} not found: expected {path}; download {SOURCES[name]}")


def read_idx(path: Path) -> np.ndarray:
    """An idx file (LeCun's MNIST format), gzipped or not: magic 0 0 dtype ndim, then dims."""
    raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in IDX_DTYPES:
        raise DataError(f"{path}: not an idx file (bad magic number {raw[:4].hex() or 'empty'})")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if ndim == 0 or len(raw) < header:
        raise DataError(f"{path}: idx header is truncated ({len(raw)} bytes)")
    dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    dtype = np.dtype(IDX_DTYPES[raw[2]])
    expected = header + int(np.prod(dims)) * dtype.itemsize
    if len(raw) != expected:
        raise DataError(
            f"{path}: idx header says shape {tuple(dims)} ({expected} bytes) but the file has "
            f"{len(raw)} bytes"
        )
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(dims)


def _find(path: Path) -> Path | None:
    """``path`` or ``path.gz``, whichever exists."""
    for candidate in (path, path.with_name(path.name + ".gz")):
        if candidate.is_file():
            return candidate
    return None


def load_digits() -> tuple[np.ndarray, np.ndarray]:
    try:
        from sklearn.datasets import load_digits as sklearn_digits
    except ImportError:
        raise DataError(
            "the digits dataset comes with scikit-learn: pip install scikit-learn"
        ) from None
    bunch = sklearn_digits()
    images = bunch.images.astype(np.float32)[:, None] / 16.0  # (N, 1, 8, 8), values 0..16
    return images, bunch.target.astype(np.int64)


def load_mnist(root: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    folder = root / "mnist"
    prefix = "train" if split == "train" else "t10k"
    found = []
    for kind in ("images-idx3", "labels-idx1"):
        path = folder / f"{prefix}-{kind}-ubyte"
        hit = _find(path)
        if hit is None:
            raise _missing("mnist", path)
        found.append(read_idx(hit))
    images, labels = found
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise DataError(
            f"{folder}: images {images.shape} and labels {labels.shape} do not match up"
        )
    return images.astype(np.float32)[:, None] / 255.0, labels.astype(np.int64)


def load_cifar10(root: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    folder = root / "cifar-10-batches-py"
    names = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
    images, labels = [], []
    for name in names:
        path = folder / name
        if not path.is_file():
            raise _missing("cifar10", path)
        try:
            with path.open("rb") as f:
                batch = pickle.load(f, encoding="bytes")
            data = np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
            labels.append(np.asarray(batch[b"labels"], dtype=np.int64))
        except (pickle.UnpicklingError, KeyError, ValueError, EOFError, TypeError) as e:
            raise DataError(f"{path}: not a CIFAR-10 python batch ({type(e).__name__})") from None
        images.append(data)
    return np.concatenate(images).astype(np.float32) / 255.0, np.concatenate(labels)


def load_stl10(root: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    folder = root / "stl10_binary"
    x_path, y_path = folder / f"{split}_X.bin", folder / f"{split}_y.bin"
    for path in (x_path, y_path):
        if not path.is_file():
            raise _missing("stl10", path)
    raw = np.fromfile(x_path, dtype=np.uint8)
    if raw.size % (3 * 96 * 96):
        raise DataError(f"{x_path}: {raw.size} bytes is not a whole number of 3x96x96 images")
    images = raw.reshape(-1, 3, 96, 96).transpose(0, 1, 3, 2)  # stored column-major
    labels = np.fromfile(y_path, dtype=np.uint8).astype(np.int64) - 1  # 1..10 on disk
    if len(labels) != len(images):
        raise DataError(f"{folder}: {len(images)} images but {len(labels)} labels")
    return images.astype(np.float32) / 255.0, labels


def resize(images: np.ndarray, size: int) -> np.ndarray:
    """(N, C, H, W) to (N, C, size, size): bilinear going up, area averaging going down."""
    if images.shape[2] == size:
        return images
    x = torch.from_numpy(images)
    if size > images.shape[2]:
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    else:
        x = F.interpolate(x, size=(size, size), mode="area")
    return x.clamp(0, 1).numpy()


def load_images(
    name: str,
    *,
    root: str | Path = "data",
    split: str = "train",
    image_size: int | None = None,
    limit: int | None = None,
) -> ImageSet:
    """One split of an image dataset as float32 in [0, 1]; ``digits`` is 16x16 by default.

    ``digits`` has no official split: ``train`` is the first 1,500 images, ``test`` the rest.
    """
    if name not in IMAGE_DATASETS:
        expected = ", ".join(IMAGE_DATASETS)
        raise DataError(f"unknown image dataset {name!r}; expected one of {expected}")
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
    root = Path(root)
    if name == "digits":
        images, labels = load_digits()
        part = slice(None, DIGITS_TRAIN) if split == "train" else slice(DIGITS_TRAIN, None)
        images, labels = images[part], labels[part]
        image_size = image_size or 16
    elif name == "mnist":
        images, labels = load_mnist(root, split)
    elif name == "cifar10":
        images, labels = load_cifar10(root, split)
    else:
        images, labels = load_stl10(root, split)
    if limit is not None:
        images, labels = images[:limit], labels[:limit]
    if image_size is not None:
        images = resize(images, image_size)
    return ImageSet(name, np.ascontiguousarray(images), labels, CLASS_NAMES[name])
