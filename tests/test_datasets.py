"""The built-in data sets read the real on-disk formats and fail with actionable messages."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from datafiles import write_cifar10, write_cifar100, write_image, write_imagenet
from torch.utils.data import DataLoader

from mgas_bench.components import DataBundle, DataNotFoundError, DataRequest, Dataset
from plugins.datasets import (
    Cifar10,
    Cifar100,
    DataIntegrityError,
    Digits,
    ImageNet,
    register_datasets,
)


def request(root: Path, **kwargs: Any) -> DataRequest:
    return DataRequest(root=root, **kwargs)


def stack(dataset: Any) -> tuple[torch.Tensor, list[int]]:
    items = [dataset[i] for i in range(len(dataset))]
    return torch.stack([x for x, _ in items]), [y for _, y in items]


def test_hook_registers_the_four_datasets() -> None:
    datasets = register_datasets()
    assert [d.name for d in datasets] == ["digits", "cifar10", "cifar100", "imagenet"]
    for d in datasets:
        assert isinstance(d, Dataset)
        for member in Dataset.REQUIRED:
            assert getattr(d, member), (d.name, member)


# ------------------------------------------------------------------------ digits


@pytest.fixture(scope="module")
def digits() -> DataBundle:
    return Digits().load(DataRequest(root=Path("unused")))


def test_digits_items_and_split(digits: DataBundle) -> None:
    assert digits.info.num_classes == 10
    assert digits.info.input_shape == (1, 8, 8)
    assert digits.info.network_style == "cifar"
    assert (len(digits.train), len(digits.test)) == (1437, 360)
    image, label = digits.train[0]
    assert image.dtype == torch.float32 and image.shape == (1, 8, 8)
    assert isinstance(label, int)
    _, test_labels = stack(digits.test)
    assert set(test_labels) == set(range(10))
    # Stratified: each class holds about a fifth of its ~180 images out for testing.
    counts = np.bincount(test_labels, minlength=10)
    assert counts.min() >= 34 and counts.max() <= 38, counts


def test_digits_test_split_is_fixed(digits: DataBundle) -> None:
    torch.manual_seed(123)  # the run seed must not move the split
    again = Digits().load(DataRequest(root=Path("elsewhere")))
    first_images, first_labels = stack(digits.test)
    second_images, second_labels = stack(again.test)
    assert torch.equal(first_images, second_images)
    assert first_labels == second_labels


def test_digits_train_is_standardised(digits: DataBundle) -> None:
    images = digits.train.images
    assert abs(images.mean().item()) < 1e-4
    assert abs(images.std().item() - 1) < 1e-4


def test_digits_augments_train_only_by_small_shifts(digits: DataBundle) -> None:
    train = digits.train
    original = train.images[5]
    background = float(train.fill)
    # Padding must look like blank paper: the darkest (all-zero) pixel after normalising.
    assert background == pytest.approx(train.images.min().item())
    torch.manual_seed(0)
    draws = [train[5][0] for _ in range(30)]
    assert any(not torch.equal(d, original) for d in draws), "no augmentation happened"
    padded = torch.nn.functional.pad(original, (1, 1, 1, 1), value=background)
    shifts = [padded[:, y : y + 8, x : x + 8] for y in range(3) for x in range(3)]
    for d in draws:
        assert any(torch.equal(d, s) for s in shifts), "augmentation is not a <=1 pixel shift"
    # No flips: a flipped digit would not match any shift above, and the test set is untouched.
    assert torch.equal(digits.test[5][0], digits.test[5][0])


def first_batch(dataset: Any, seed: int, workers: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    loader = DataLoader(
        dataset, batch_size=64, shuffle=True, generator=generator, num_workers=workers
    )
    return next(iter(loader))[0]


def test_digits_augmentation_follows_the_global_rng_in_process(digits: DataBundle) -> None:
    batches = []
    for seed in (7, 7, 8):
        torch.manual_seed(seed)  # what a run does once at start
        batches.append(first_batch(digits.train, seed, workers=0))
    assert torch.equal(batches[0], batches[1])
    assert not torch.equal(batches[0], batches[2])


def test_digits_augmentation_follows_the_loader_generator_in_workers(digits: DataBundle) -> None:
    # Workers seed their RNG from the loader's generator, not from the parent's global RNG.
    torch.manual_seed(1)
    first = first_batch(digits.train, 7, workers=1)
    torch.manual_seed(2)
    assert torch.equal(first, first_batch(digits.train, 7, workers=1))


def test_digits_input_size_upsamples() -> None:
    options = {"input_size": 16}
    assert Digits().info(options).input_shape == (1, 16, 16)
    bundle = Digits().load(DataRequest(root=Path("unused"), options=options))
    assert bundle.info.input_shape == (1, 16, 16)
    assert bundle.train[0][0].shape == (1, 16, 16)
    assert bundle.test[0][0].shape == (1, 16, 16)
    assert abs(bundle.train.images.mean().item()) < 1e-4
    assert abs(bundle.train.images.std().item() - 1) < 1e-4


@pytest.mark.parametrize(
    "options", [{"input_size": 4}, {"input_size": "32"}, {"input_size": True}, {"inpt_size": 16}]
)
def test_digits_rejects_bad_options(options: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="digits"):
        Digits().info(options)


# ------------------------------------------------------------------------- CIFAR


def expected_test_item(
    image: np.ndarray, mean: tuple[float, ...], std: tuple[float, ...]
) -> torch.Tensor:
    # ToTensor + Normalize, written out independently of torchvision.
    x = torch.from_numpy(image).permute(2, 0, 1).float() / 255
    return (x - torch.tensor(mean)[:, None, None]) / torch.tensor(std)[:, None, None]


@pytest.mark.parametrize(
    ("dataset", "writer", "classes"),
    [(Cifar10(), write_cifar10, 10), (Cifar100(), write_cifar100, 100)],
)
def test_cifar_reads_the_torchvision_layout(
    tmp_path: Path, dataset: Cifar10 | Cifar100, writer: Any, classes: int
) -> None:
    written = writer(tmp_path)
    bundle = dataset.load(request(tmp_path, verify_checksums=False))
    assert bundle.info.num_classes == classes == len(written.label_names)
    assert bundle.info.input_shape == (3, 32, 32)
    assert bundle.train.classes == written.label_names
    assert len(bundle.train) == len(written.train_labels)
    assert len(bundle.test) == len(written.test_labels)
    train_images, train_labels = stack(bundle.train)
    test_images, test_labels = stack(bundle.test)
    assert train_labels == written.train_labels
    assert test_labels == written.test_labels
    assert train_images.shape == (len(written.train_labels), 3, 32, 32)
    for i, image in enumerate(written.test_images):
        torch.testing.assert_close(
            test_images[i], expected_test_item(image, dataset.mean, dataset.std)
        )


def test_cifar_files_are_python2_pickles(tmp_path: Path) -> None:
    folder = write_cifar10(tmp_path, n_train_per_batch=3).folder
    # How the CIFAR page says to read them: keys come back as bytes.
    with (folder / "data_batch_2").open("rb") as f:
        batch = pickle.load(f, encoding="bytes")
    assert set(batch) == {b"batch_label", b"labels", b"data", b"filenames"}
    assert batch[b"data"].dtype == np.uint8 and batch[b"data"].shape == (3, 3072)
    with (folder / "batches.meta").open("rb") as f:
        assert pickle.load(f, encoding="latin1")["label_names"][0] == "airplane"
    folder100 = write_cifar100(tmp_path, n_train=5).folder
    with (folder100 / "train").open("rb") as f:
        train = pickle.load(f, encoding="bytes")
    assert all(
        c * 5 <= f < c * 5 + 5
        for f, c in zip(train[b"fine_labels"], train[b"coarse_labels"], strict=True)
    )
    assert train[b"data"].shape == (5, 3072)


@pytest.mark.parametrize(
    ("dataset", "writer"), [(Cifar10(), write_cifar10), (Cifar100(), write_cifar100)]
)
def test_cifar_checksums_reject_a_tiny_folder(
    tmp_path: Path, dataset: Cifar10 | Cifar100, writer: Any
) -> None:
    folder = writer(tmp_path).folder
    with pytest.raises(DataIntegrityError) as caught:
        dataset.load(request(tmp_path))
    message = str(caught.value)
    assert str(folder) in message
    assert "checksum" in message
    assert "verify_checksums = false" in message and "test fixtures" in message


@pytest.mark.parametrize(
    ("dataset", "folder", "archive"),
    [
        (Cifar10(), "cifar-10-batches-py", "cifar-10-python.tar.gz"),
        (Cifar100(), "cifar-100-python", "cifar-100-python.tar.gz"),
    ],
)
def test_missing_cifar_says_where_and_how(
    tmp_path: Path, dataset: Cifar10 | Cifar100, folder: str, archive: str
) -> None:
    with pytest.raises(DataNotFoundError) as caught:
        dataset.load(request(tmp_path))
    message = str(caught.value)
    assert str(tmp_path / folder) in message
    assert "--download" in message
    assert archive in message


def test_incomplete_cifar_names_the_missing_file(tmp_path: Path) -> None:
    folder = write_cifar10(tmp_path).folder
    (folder / "data_batch_3").unlink()
    with pytest.raises(DataNotFoundError, match="data_batch_3"):
        Cifar10().load(request(tmp_path, verify_checksums=False))


def test_cifar_download_keeps_files_already_there(tmp_path: Path) -> None:
    # No network here: this passes only if nothing is fetched when the folder is complete.
    write_cifar10(tmp_path)
    bundle = Cifar10().load(request(tmp_path, download=True, verify_checksums=False))
    assert len(bundle.test) == 6


def test_cifar_takes_no_options() -> None:
    with pytest.raises(ValueError, match="input_size"):
        Cifar10().info({"input_size": 16})


# ---------------------------------------------------------------------- ImageNet


@pytest.mark.parametrize("nested", [True, False])
def test_imagenet_reads_class_folders(tmp_path: Path, nested: bool) -> None:
    write_imagenet(tmp_path, classes=3, per_class=2, size=40, nested=nested)
    bundle = ImageNet().load(request(tmp_path, options={"input_size": 32}))
    assert bundle.info.num_classes == 3
    assert bundle.info.input_shape == (3, 32, 32)
    assert bundle.info.network_style == "imagenet"
    assert (len(bundle.train), len(bundle.test)) == (6, 6)
    for split in (bundle.train, bundle.test):
        images, labels = stack(split)
        assert images.shape == (6, 3, 32, 32) and images.dtype == torch.float32
        assert sorted(labels) == [0, 0, 1, 1, 2, 2]


def test_imagenet_info_defaults() -> None:
    info = ImageNet().info({})
    assert (info.num_classes, info.input_shape, info.network_style) == (
        1000,
        (3, 224, 224),
        "imagenet",
    )
    assert ImageNet().info({"num_classes": 100, "input_size": 64}).input_shape == (3, 64, 64)


def test_missing_imagenet_says_both_places(tmp_path: Path) -> None:
    with pytest.raises(DataNotFoundError) as caught:
        ImageNet().load(request(tmp_path))
    message = str(caught.value)
    assert str(tmp_path / "imagenet" / "train") in message
    assert str(tmp_path / "train") in message
    assert "image-net.org" in message


def test_imagenet_without_val_is_reported(tmp_path: Path) -> None:
    write_image(tmp_path / "imagenet" / "train" / "n0" / "a.JPEG", 20, 20)
    with pytest.raises(DataNotFoundError, match="val"):
        ImageNet().load(request(tmp_path))


def test_imagenet_cannot_be_downloaded(tmp_path: Path) -> None:
    write_imagenet(tmp_path)
    with pytest.raises(ValueError, match=r"image-net\.org"):
        ImageNet().load(request(tmp_path, download=True))


def test_imagenet_class_lists_must_agree(tmp_path: Path) -> None:
    base = write_imagenet(tmp_path)
    write_image(base / "val" / "n_extra" / "x.JPEG", 20, 20)
    with pytest.raises(ValueError, match="n_extra"):
        ImageNet().load(request(tmp_path, options={"input_size": 32}))


def test_imagenet_num_classes_must_match_the_folders(tmp_path: Path) -> None:
    write_imagenet(tmp_path, classes=3)
    with pytest.raises(ValueError, match="3 class folders"):
        ImageNet().load(request(tmp_path, options={"input_size": 32, "num_classes": 1000}))
