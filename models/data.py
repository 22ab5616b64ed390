"""Fashion-MNIST (or any MNIST-format IDX directory): loading, binarization, resizing. No download, ever.

Where the data comes from: an explicit ``data`` argument (``--data DIR``, or the service's ``data`` setting,
``PARAFEED_DATA``), else the Debian package location /usr/share/datasets/fashion-mnist (``apt-get install
dataset-fashion-mnist``). Files may be gzipped or not.

Invariants: images are uint8 (N, 28, 28) exactly as stored; binarization is the fixed rule pixel > 127, so a
binarized test set is the same everywhere; the validation split is a fixed, seeded slice of the training set.

Reference: Xiao, Rasul, Vollgraf, "Fashion-MNIST" (arXiv 1708.07747); IDX format of LeCun et al.'s MNIST.
"""

from __future__ import annotations

import gzip
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
}


class DataNotFoundError(FileNotFoundError):
    """No IDX files where we looked; the message says how to get them."""


@dataclass(frozen=True)
class Split:
    images: torch.Tensor  # (N, H, W) uint8
    labels: torch.Tensor  # (N,) int64

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def subset(self, index: torch.Tensor | slice) -> Split:
        return Split(self.images[index], self.labels[index])


def read_idx(path: Path) -> np.ndarray:
    """Parse one IDX file (gzipped or not) into an array of its stored dtype and shape."""
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in IDX_DTYPES:
        raise ValueError(f"{path} is not an IDX file (bad magic number)")
    dtype, ndim = IDX_DTYPES[raw[2]], raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    offset = 4 + 4 * ndim
    count = int(np.prod(shape)) if shape else 0
    if len(raw) - offset != count * dtype.itemsize:
        raise ValueError(f"{path}: header says {shape} but the file holds {len(raw) - offset} bytes of data")
    return np.frombuffer(raw, dtype=dtype, offset=offset).reshape(shape)


def _find(directory: Path, stem: str) -> Path | None:
    for name in (stem, stem + ".gz", stem.replace("-idx", ".idx"), stem.replace("-idx", ".idx") + ".gz"):
        if (directory / name).is_file():
            return directory / name
    return None


def data_dir(data: str | Path | None = None) -> Path:
    """``data`` if given (an explicit choice that does not hold the files is an error, not a fallback), else the
    Debian package's directory; it must hold the training and test IDX files."""
    directory = DEBIAN_DIR if data is None else Path(data)
    if all(_find(directory, stem) for pair in FILES.values() for stem in pair):
        return directory
    raise DataNotFoundError(
        f"Fashion-MNIST IDX files not found in {directory}. Install them with "
        f"`sudo apt-get install dataset-fashion-mnist` (files land in {DEBIAN_DIR}), or point --data / "
        "PARAFEED_DATA at a directory holding train-images-idx3-ubyte[.gz] and the other three MNIST-format files."
    )


def load_split(split: str, data: str | Path | None = None) -> Split:
    """The "train" (60k) or "test" (10k) split as uint8 images and int64 labels."""
    if split not in FILES:
        raise ValueError(f"split must be 'train' or 'test'; got {split!r}")
    directory = data_dir(data)
    image_stem, label_stem = FILES[split]
    images, labels = (read_idx(_find(directory, stem)) for stem in (image_stem, label_stem))  # type: ignore[arg-type]
    if images.ndim != 3 or labels.shape != (images.shape[0],):
        raise ValueError(f"{directory}: {split} images {images.shape} and labels {labels.shape} do not match")
    return Split(torch.from_numpy(images.copy()), torch.from_numpy(labels.astype(np.int64)))


def train_validation(data: str | Path | None = None, validation: int = 5000, seed: int = 0) -> tuple[Split, Split]:
    """The training set split into (train, validation) by a fixed seeded permutation."""
    full = load_split("train", data)
    order = torch.randperm(len(full), generator=torch.Generator().manual_seed(seed))
    return full.subset(order[validation:]), full.subset(order[:validation])


def binarize(images: torch.Tensor) -> torch.Tensor:
    """uint8 (N, H, W) -> float32 (N, H*W) of 0/1 by the fixed rule pixel > 127."""
    return (images > 127).flatten(1).to(torch.float32)


def to_unit(images: torch.Tensor) -> torch.Tensor:
    """uint8 (N, H, W) -> float32 (N, 1, H, W) in [-1, 1], the scaling PixelCNN++ and DenseNet use."""
    return images[:, None].to(torch.float32) / 127.5 - 1.0


def resize(images: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 (N, H, W) -> float32 (N, size, size) in [0, 1] by area averaging (the RNN's 10x10 sequences)."""
    return F.adaptive_avg_pool2d(images[:, None].to(torch.float32) / 255.0, size)[:, 0]
