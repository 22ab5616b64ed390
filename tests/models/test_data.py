"""Data loading: the IDX format, where data is looked for, the fixed binarization rule."""

import gzip
from pathlib import Path

import numpy as np
import pytest
import torch

from models import data


def write_idx(path: Path, array: np.ndarray, gz: bool) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    raw = header + array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(raw) if gz else raw)


@pytest.fixture
def tiny_dir(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    for split, n in (("train", 12), ("t10k", 5)):
        write_idx(tmp_path / f"{split}-images-idx3-ubyte", rng.integers(0, 256, (n, 28, 28)), gz=False)
        write_idx(tmp_path / f"{split}-labels-idx1-ubyte.gz", rng.integers(0, 10, (n,)), gz=True)
    return tmp_path


def test_reads_plain_and_gzipped_idx(tiny_dir: Path) -> None:
    test = data.load_split("test", tiny_dir)
    assert test.images.shape == (5, 28, 28)
    assert test.images.dtype == torch.uint8
    assert test.labels.shape == (5,)
    assert test.labels.dtype == torch.int64


def test_the_data_setting_reaches_the_loader(tiny_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from app.settings import Settings

    assert data.data_dir(tiny_dir) == tiny_dir
    monkeypatch.setenv("PARAFEED_DATA", str(tiny_dir))
    assert data.data_dir(Settings().data) == tiny_dir
    assert Settings().engine().test_split().images.shape == (5, 28, 28)


def test_missing_data_says_how_to_get_it(tmp_path: Path) -> None:
    with pytest.raises(data.DataNotFoundError, match="apt-get install dataset-fashion-mnist"):
        data.data_dir(tmp_path)


def test_corrupt_file_is_named(tiny_dir: Path) -> None:
    (tiny_dir / "t10k-images-idx3-ubyte").write_bytes(b"\x00\x00\x08\x03" + (5).to_bytes(4, "big"))
    with pytest.raises(ValueError, match="t10k-images"):
        data.load_split("test", tiny_dir)


def test_real_fashion_mnist_shapes_and_binarization() -> None:
    test = data.load_split("test")
    assert test.images.shape == (10000, 28, 28)
    assert int(test.labels.max()) == 9
    binary = data.binarize(test.images[:100])
    assert set(binary.unique().tolist()) <= {0.0, 1.0}
    assert torch.equal(binary, (test.images[:100] > 127).flatten(1).float())


def test_validation_split_is_fixed_and_disjoint() -> None:
    train_a, val_a = data.train_validation(validation=5000, seed=0)
    _, val_b = data.train_validation(validation=5000, seed=0)
    assert torch.equal(val_a.images, val_b.images)
    assert len(train_a) == 55000
    assert len(val_a) == 5000


def test_resize_for_the_rnn() -> None:
    images = data.load_split("test").images[:3]
    small = data.resize(images, 10)
    assert small.shape == (3, 10, 10)
    assert small.min() >= 0.0
    assert small.max() <= 1.0
