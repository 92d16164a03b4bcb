"""Tiny data sets written in the real on-disk formats, for tests that must read files.

The CIFAR writers reproduce the python-version archives file for file (same folder,
file names, dictionary keys and pickle string type), so the code under test reads them
with exactly the path it uses for the real data; only the md5 sums cannot match, which
is why tests load them with ``verify_checksums=False``.
"""

from __future__ import annotations

import pickle
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

CIFAR10_LABEL_NAMES = (
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
)


@dataclass(frozen=True)
class CifarFiles:
    """What a CIFAR writer put on disk, in the order a reader returns it."""

    folder: Path
    train_images: np.ndarray  # N x 32 x 32 x 3, uint8
    train_labels: list[int]
    test_images: np.ndarray
    test_labels: list[int]
    label_names: list[str]


class _Py2Pickler(pickle._Pickler):  # the pure-Python pickler: its dispatch table is editable
    """Pickles ``bytes`` as Python 2 ``str`` (the BINSTRING opcodes), as the CIFAR archives do.

    The archives were written by Python 2. Its strings load as ``str`` under
    ``encoding="latin1"`` (how torchvision reads them) and as ``bytes`` under
    ``encoding="bytes"`` (how the CIFAR page tells users to read them); Python 3's own
    pickling of ``bytes`` would load as ``bytes`` either way, and torchvision's
    ``entry["data"]`` would then fail on a file the real archive never produces.
    """

    dispatch = pickle._Pickler.dispatch.copy()

    def _save_py2_str(self, obj: bytes) -> None:
        if len(obj) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(obj)]) + obj)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(obj)) + obj)
        self.memoize(obj)

    dispatch[bytes] = _save_py2_str


def _dump(path: Path, obj: dict[bytes, Any]) -> None:
    with path.open("wb") as f:
        _Py2Pickler(f, protocol=2).dump(obj)


def _images(rng: np.random.Generator, n: int) -> np.ndarray:
    return rng.integers(0, 256, size=(n, 32, 32, 3), dtype=np.uint8)


def _rows(images: np.ndarray) -> np.ndarray:
    # Each row holds the 1024 red, then green, then blue values of one image, row-major.
    return np.ascontiguousarray(images.transpose(0, 3, 1, 2).reshape(len(images), 3072))


def _filenames(prefix: str, n: int) -> list[bytes]:
    return [f"{prefix}_s_{i:06d}.png".encode() for i in range(n)]


def write_cifar10(
    root: str | Path, n_train_per_batch: int = 4, n_test: int = 6, seed: int = 0
) -> CifarFiles:
    """Write ``<root>/cifar-10-batches-py/`` with five training batches, a test batch and meta."""
    rng = np.random.default_rng(seed)
    folder = Path(root) / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    train_images, train_labels = [], []
    for batch in range(1, 6):
        images = _images(rng, n_train_per_batch)
        labels = [int(y) for y in rng.integers(0, 10, size=n_train_per_batch)]
        _dump(
            folder / f"data_batch_{batch}",
            {
                b"batch_label": f"training batch {batch} of 5".encode(),
                b"labels": labels,
                b"data": _rows(images),
                b"filenames": _filenames(f"train{batch}", n_train_per_batch),
            },
        )
        train_images.append(images)
        train_labels += labels
    test_images = _images(rng, n_test)
    test_labels = [int(y) for y in rng.integers(0, 10, size=n_test)]
    _dump(
        folder / "test_batch",
        {
            b"batch_label": b"testing batch 1 of 1",
            b"labels": test_labels,
            b"data": _rows(test_images),
            b"filenames": _filenames("test", n_test),
        },
    )
    _dump(
        folder / "batches.meta",
        {
            b"num_cases_per_batch": n_train_per_batch,
            b"label_names": [name.encode() for name in CIFAR10_LABEL_NAMES],
            b"num_vis": 3072,
        },
    )
    return CifarFiles(
        folder=folder,
        train_images=np.concatenate(train_images),
        train_labels=train_labels,
        test_images=test_images,
        test_labels=test_labels,
        label_names=list(CIFAR10_LABEL_NAMES),
    )


def write_cifar100(
    root: str | Path, n_train: int = 12, n_test: int = 6, seed: int = 0
) -> CifarFiles:
    """Write ``<root>/cifar-100-python/`` with ``train``, ``test`` and ``meta``.

    Class names are placeholders (``fine_00`` ...); each coarse label is ``fine // 5``.
    """
    rng = np.random.default_rng(seed)
    folder = Path(root) / "cifar-100-python"
    folder.mkdir(parents=True, exist_ok=True)
    fine_names = [f"fine_{i:02d}" for i in range(100)]
    written: dict[str, tuple[np.ndarray, list[int]]] = {}
    for split, n, batch_label in (
        ("train", n_train, b"training batch 1 of 1"),
        ("test", n_test, b"testing batch 1 of 1"),
    ):
        images = _images(rng, n)
        fine = [int(y) for y in rng.integers(0, 100, size=n)]
        _dump(
            folder / split,
            {
                b"filenames": _filenames(split, n),
                b"batch_label": batch_label,
                b"fine_labels": fine,
                b"coarse_labels": [y // 5 for y in fine],
                b"data": _rows(images),
            },
        )
        written[split] = (images, fine)
    _dump(
        folder / "meta",
        {
            b"fine_label_names": [name.encode() for name in fine_names],
            b"coarse_label_names": [f"coarse_{i:02d}".encode() for i in range(20)],
        },
    )
    return CifarFiles(
        folder=folder,
        train_images=written["train"][0],
        train_labels=written["train"][1],
        test_images=written["test"][0],
        test_labels=written["test"][1],
        label_names=fine_names,
    )


def write_image(path: str | Path, width: int, height: int, seed: int = 0) -> Path:
    """Write one RGB noise image; the format follows the suffix (.JPEG, .png, ...)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, size=(height, width, 3), dtype=np.uint8)
    image_format = "JPEG" if path.suffix.lower() in (".jpeg", ".jpg") else None
    Image.fromarray(pixels).save(path, format=image_format)
    return path


def write_imagenet(
    root: str | Path, classes: int = 3, per_class: int = 2, size: int = 40, nested: bool = True
) -> Path:
    """Write ImageNet-style ``train/<wnid>/*.JPEG`` and ``val/<wnid>/*.JPEG`` folders.

    With ``nested`` they go under ``<root>/imagenet/``, else directly under ``<root>``.
    Images are ``size`` high and a quarter wider, like most ImageNet photos, so that
    resizing and cropping have something to do. Returns the folder holding train/ and val/.
    """
    base = Path(root) / "imagenet" if nested else Path(root)
    seed = 0
    for split in ("train", "val"):
        for c in range(classes):
            wnid = f"n{c:08d}"
            for i in range(per_class):
                name = f"{wnid}_{i}.JPEG" if split == "train" else f"ILSVRC2012_val_{seed:08d}.JPEG"
                write_image(base / split / wnid / name, size * 5 // 4, size, seed=seed)
                seed += 1
    return base


# DARTS V2 (second-order DARTS, CIFAR-10), as published in DARTS's genotypes.py.
DARTS_V2_JSON = {
    "normal": [
        ["sep_conv_3x3", 0],
        ["sep_conv_3x3", 1],
        ["sep_conv_3x3", 0],
        ["sep_conv_3x3", 1],
        ["sep_conv_3x3", 1],
        ["skip_connect", 0],
        ["skip_connect", 0],
        ["dil_conv_3x3", 2],
    ],
    "normal_concat": [2, 3, 4, 5],
    "reduce": [
        ["max_pool_3x3", 0],
        ["max_pool_3x3", 1],
        ["skip_connect", 2],
        ["max_pool_3x3", 1],
        ["max_pool_3x3", 0],
        ["skip_connect", 2],
        ["skip_connect", 2],
        ["max_pool_3x3", 1],
    ],
    "reduce_concat": [2, 3, 4, 5],
}


# DARTS V2 as NNI 3.0 exports it from its DARTS space: the architecture dict in
# nni.nas.hub.pytorch.DARTS.load_searched_model("darts-v2").
NNI_DARTS_V2_SAMPLE = {
    "normal/op_2_0": "sep_conv_3x3",
    "normal/op_2_1": "sep_conv_3x3",
    "normal/input_2_0": [0],
    "normal/input_2_1": [1],
    "normal/op_3_0": "sep_conv_3x3",
    "normal/op_3_1": "sep_conv_3x3",
    "normal/input_3_0": [0],
    "normal/input_3_1": [1],
    "normal/op_4_0": "sep_conv_3x3",
    "normal/op_4_1": "skip_connect",
    "normal/input_4_0": [1],
    "normal/input_4_1": [0],
    "normal/op_5_0": "skip_connect",
    "normal/op_5_1": "dil_conv_3x3",
    "normal/input_5_0": [0],
    "normal/input_5_1": [2],
    "reduce/op_2_0": "max_pool_3x3",
    "reduce/op_2_1": "max_pool_3x3",
    "reduce/input_2_0": [0],
    "reduce/input_2_1": [1],
    "reduce/op_3_0": "skip_connect",
    "reduce/op_3_1": "max_pool_3x3",
    "reduce/input_3_0": [2],
    "reduce/input_3_1": [1],
    "reduce/op_4_0": "max_pool_3x3",
    "reduce/op_4_1": "skip_connect",
    "reduce/input_4_0": [0],
    "reduce/input_4_1": [2],
    "reduce/op_5_0": "skip_connect",
    "reduce/op_5_1": "max_pool_3x3",
    "reduce/input_5_0": [2],
    "reduce/input_5_1": [1],
}
