"""Built-in data sets: scikit-learn's digits (the offline default), CIFAR-10/100 and ImageNet.

torchvision and scikit-learn are imported inside the functions that use them: every
command imports the plugins to list components, and those two imports cost seconds.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch.nn import functional as F
from torch.utils.data import Dataset as TorchDataset

from mgas_bench.components import (
    DataBundle,
    DataIntegrityError,
    DataNotFoundError,
    DataRequest,
    Dataset,
    DatasetInfo,
)
from mgas_bench.hookspecs import hookimpl

if TYPE_CHECKING:
    from torchvision.datasets import CIFAR10

__all__ = [
    "Cifar10",
    "Cifar100",
    "DataIntegrityError",
    "Digits",
    "ImageNet",
    "ShiftedTensorDataset",
    "register_datasets",
]


def _check_options(dataset: str, options: Mapping[str, Any], known: tuple[str, ...]) -> None:
    # A misspelt option would otherwise be ignored silently and the run would use the default.
    unknown = sorted(set(options) - set(known))
    if unknown:
        listing = ", ".join(known) if known else "(none)"
        raise ValueError(
            f"data set {dataset!r}: unknown option(s) {', '.join(map(repr, unknown))}; "
            f"known options: {listing}"
        )


def _int_option(
    dataset: str, options: Mapping[str, Any], key: str, default: int, minimum: int
) -> int:
    value = options.get(key, default)
    # bool is an int subclass; `input_size = true` is a config mistake, not 1.
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(
            f"data set {dataset!r}: option {key!r} must be an integer >= {minimum}, got {value!r}"
        )
    return value


# ------------------------------------------------------------------------ digits


class ShiftedTensorDataset(TorchDataset):
    """Images held in memory, each optionally moved by up to ``shift`` pixels per access.

    The offset is drawn from torch's global RNG, which the DataLoader seeds from its
    generator in the main process and in every worker, so a seeded loader gives the
    same augmented batches on every run.
    """

    def __init__(
        self, images: torch.Tensor, labels: list[int], shift: int = 0, fill: float = 0.0
    ) -> None:
        if images.ndim != 4 or images.shape[0] != len(labels):
            raise ValueError(
                f"expected images N x C x H x W with N = {len(labels)} labels, "
                f"got shape {tuple(images.shape)}"
            )
        self.images = images
        self.labels = labels
        self.shift = shift
        self.fill = fill

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image = self.images[index]
        if self.shift:
            s = self.shift
            height, width = image.shape[-2:]
            padded = F.pad(image, (s, s, s, s), value=self.fill)
            top, left = torch.randint(0, 2 * s + 1, (2,)).tolist()
            image = padded[:, top : top + height, left : left + width]
        return image, self.labels[index]


class Digits(Dataset):
    name = "digits"
    description = (
        "scikit-learn's bundled handwritten digits (1797 8x8 grey images, 10 classes); "
        "offline, fixed 80/20 stratified split; option input_size upsamples"
    )
    OPTIONS: ClassVar[tuple[str, ...]] = ("input_size",)
    NATIVE_SIZE: ClassVar[int] = 8
    TEST_FRACTION: ClassVar[float] = 0.2
    # Fixed, not the run seed: every run and every method must be scored on the same test set.
    SPLIT_SEED: ClassVar[int] = 0

    def _input_size(self, options: Mapping[str, Any]) -> int:
        _check_options(self.name, options, self.OPTIONS)
        return _int_option(self.name, options, "input_size", self.NATIVE_SIZE, self.NATIVE_SIZE)

    def info(self, options: Mapping[str, Any]) -> DatasetInfo:
        size = self._input_size(options)
        return DatasetInfo(num_classes=10, input_shape=(1, size, size), network_style="cifar")

    def load(self, request: DataRequest) -> DataBundle:
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split

        info = self.info(request.options)
        size = info.input_shape[-1]
        digits = load_digits()
        images = torch.from_numpy(digits.images).float().div_(16.0).unsqueeze(1)
        labels = [int(y) for y in digits.target]
        train_idx, test_idx = train_test_split(
            list(range(len(labels))),
            test_size=self.TEST_FRACTION,
            stratify=labels,
            random_state=self.SPLIT_SEED,
        )
        # Sorted so that the test set's order does not depend on how the splitter shuffles.
        train_idx, test_idx = sorted(train_idx), sorted(test_idx)
        if size != self.NATIVE_SIZE:
            images = F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False)
        # Statistics after upsampling, so the network's inputs really are standardised.
        train_images = images[train_idx]
        mean, std = train_images.mean().item(), train_images.std().item()
        images = (images - mean) / std
        return DataBundle(
            info=info,
            train=ShiftedTensorDataset(
                images[train_idx],
                [labels[i] for i in train_idx],
                # One source pixel at any input size; padding with the (normalised) blank
                # background so a shifted digit looks like a digit written off-centre.
                shift=size // self.NATIVE_SIZE,
                fill=-mean / std,
            ),
            test=ShiftedTensorDataset(images[test_idx], [labels[i] for i in test_idx]),
        )


# ------------------------------------------------------------------------- CIFAR

CIFAR_PAGE = "https://www.cs.toronto.edu/~kriz/cifar.html"


@functools.cache
def _without_md5(base: type[CIFAR10]) -> type[CIFAR10]:
    """``base`` with its md5 sums removed, so that files are only checked for existence.

    torchvision compares every batch file and the meta file with the md5 of the official
    archive (``_check_integrity`` and ``_load_meta`` both go through ``check_integrity``,
    which skips the hash when the expected sum is None). Tests write tiny CIFAR-format
    folders that cannot match those sums; they set ``verify_checksums = False`` to read
    through this subclass, and users' data always goes through the unmodified class.
    """
    return type(
        f"Unverified{base.__name__}",
        (base,),
        {
            "train_list": [[name, None] for name, _ in base.train_list],
            "test_list": [[name, None] for name, _ in base.test_list],
            "meta": {**base.meta, "md5": None},
        },
    )


class _Cifar(Dataset):
    """CIFAR in torchvision's on-disk layout, read with torchvision's own class."""

    title: ClassVar[str]
    num_classes: ClassVar[int]
    folder: ClassVar[str]
    archive: ClassVar[str]
    mean: ClassVar[tuple[float, float, float]]
    std: ClassVar[tuple[float, float, float]]

    torchvision_name: ClassVar[str]  # the class in torchvision.datasets that reads it

    def _torchvision_class(self) -> type[CIFAR10]:
        import torchvision.datasets

        return getattr(torchvision.datasets, self.torchvision_name)

    def info(self, options: Mapping[str, Any]) -> DatasetInfo:
        _check_options(self.name, options, ())
        return DatasetInfo(
            num_classes=self.num_classes, input_shape=(3, 32, 32), network_style="cifar"
        )

    def _how_to_provide(self, root: Path) -> str:
        return (
            f"mgas_bench does not download data sets unless --download is passed (and the "
            f"machine has network access). To provide {self.title} by hand, download "
            f"{self.archive} from {CIFAR_PAGE} and extract it into {root} so that "
            f"{root / self.folder}/ exists."
        )

    def _require_files(self, root: Path, tv_class: type[CIFAR10]) -> None:
        folder = root / self.folder
        if not folder.is_dir():
            raise DataNotFoundError(
                f"{self.title} not found: looked in {folder} (no such directory). "
                + self._how_to_provide(root)
            )
        expected = [name for name, _ in tv_class.train_list + tv_class.test_list]
        expected.append(tv_class.meta["filename"])
        missing = [name for name in expected if not (folder / name).is_file()]
        if missing:
            raise DataNotFoundError(
                f"{self.title} is incomplete: {folder} lacks {', '.join(missing)}. "
                + self._how_to_provide(root)
            )

    def _integrity_error(self, root: Path, tv_class: type[CIFAR10]) -> DataIntegrityError:
        from torchvision.datasets.utils import check_integrity

        folder = root / self.folder
        files = [*tv_class.train_list, *tv_class.test_list]
        files.append([tv_class.meta["filename"], tv_class.meta["md5"]])
        bad = [name for name, md5 in files if not check_integrity(str(folder / name), md5)]
        return DataIntegrityError(
            f"{self.title} files in {folder} do not match the checksums of the official "
            f"archive ({', '.join(bad) or 'see the cause below'}): the data is corrupted, "
            f"incomplete or not {self.title}. Extract {self.archive} from {CIFAR_PAGE} into "
            f"{root} again, or pass --download to fetch it again. The data option "
            f"`verify_checksums = false` exists only for test fixtures that write tiny "
            f"{self.title}-format folders; do not use it for real data."
        )

    def load(self, request: DataRequest) -> DataBundle:
        from torchvision import transforms as T

        info = self.info(request.options)
        root = Path(request.root)
        tv_class = self._torchvision_class()
        if not request.download:
            self._require_files(root, tv_class)
        reader = tv_class if request.verify_checksums else _without_md5(tv_class)
        normalize = T.Normalize(self.mean, self.std)
        train_tf = T.Compose(
            [T.RandomCrop(32, padding=4), T.RandomHorizontalFlip(), T.ToTensor(), normalize]
        )
        test_tf = T.Compose([T.ToTensor(), normalize])
        try:
            train = reader(str(root), train=True, transform=train_tf, download=request.download)
            test = reader(str(root), train=False, transform=test_tf)
        except RuntimeError as err:
            # Once the files are known to exist, torchvision's only RuntimeError is an md5
            # mismatch ("Dataset not found or corrupted").
            raise self._integrity_error(root, tv_class) from err
        except OSError as err:
            if not request.download or isinstance(err, DataNotFoundError):
                raise
            raise DataNotFoundError(
                f"could not download {self.title} into {root}: {err}. " + self._how_to_provide(root)
            ) from err
        return DataBundle(info=info, train=train, test=test)


class Cifar10(_Cifar):
    name = "cifar10"
    description = "CIFAR-10 (50k/10k 32x32 colour images, 10 classes) in torchvision's layout"
    title = "CIFAR-10"
    num_classes = 10
    folder = "cifar-10-batches-py"
    archive = "cifar-10-python.tar.gz"
    mean = (0.4914, 0.4822, 0.4465)
    std = (0.2470, 0.2435, 0.2616)
    torchvision_name = "CIFAR10"


class Cifar100(_Cifar):
    name = "cifar100"
    description = "CIFAR-100 (50k/10k 32x32 colour images, 100 classes) in torchvision's layout"
    title = "CIFAR-100"
    num_classes = 100
    folder = "cifar-100-python"
    archive = "cifar-100-python.tar.gz"
    mean = (0.5071, 0.4865, 0.4409)
    std = (0.2673, 0.2564, 0.2762)
    torchvision_name = "CIFAR100"


# ---------------------------------------------------------------------- ImageNet

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class ImageNet(Dataset):
    name = "imagenet"
    description = (
        "ImageNet (ILSVRC-2012) as train/ and val/ class folders, obtained manually; "
        "options input_size (default 224) and num_classes (default 1000)"
    )
    OPTIONS: ClassVar[tuple[str, ...]] = ("input_size", "num_classes")
    DEFAULT_SIZE: ClassVar[int] = 224
    DEFAULT_CLASSES: ClassVar[int] = 1000

    def info(self, options: Mapping[str, Any]) -> DatasetInfo:
        _check_options(self.name, options, self.OPTIONS)
        size = _int_option(self.name, options, "input_size", self.DEFAULT_SIZE, 1)
        classes = _int_option(self.name, options, "num_classes", self.DEFAULT_CLASSES, 1)
        return DatasetInfo(
            num_classes=classes, input_shape=(3, size, size), network_style="imagenet"
        )

    @staticmethod
    def _layout(root: Path) -> str:
        return (
            f"Expected layout: {root}/imagenet/train/<class>/*.JPEG and "
            f"{root}/imagenet/val/<class>/*.JPEG (or {root}/train/ and {root}/val/ directly), "
            f"with the same class folder names (for example n01440764) in train/ and val/."
        )

    def _locate(self, root: Path) -> Path:
        for base in (root / "imagenet", root):
            if (base / "train").is_dir():
                if not (base / "val").is_dir():
                    raise DataNotFoundError(
                        f"ImageNet is incomplete: found {base / 'train'} but no "
                        f"{base / 'val'}. " + self._layout(root)
                    )
                return base
        raise DataNotFoundError(
            f"ImageNet not found: looked for {root / 'imagenet' / 'train'} and "
            f"{root / 'train'}. ImageNet is never downloaded; obtain it from "
            f"https://image-net.org and lay it out as described. " + self._layout(root)
        )

    def load(self, request: DataRequest) -> DataBundle:
        from torchvision import transforms as T
        from torchvision.datasets import ImageFolder

        root = Path(request.root)
        if request.download:
            # The ImageNet licence requires each user to register and download it themselves.
            raise ValueError(
                "ImageNet cannot be downloaded by mgas_bench (--download works for CIFAR "
                "only): obtain it manually from https://image-net.org and lay it out under "
                f"{root}. " + self._layout(root)
            )
        requested = self.info(request.options)
        size = requested.input_shape[-1]
        base = self._locate(root)
        normalize = T.Normalize(IMAGENET_MEAN, IMAGENET_STD)
        train_tf = T.Compose(
            [T.RandomResizedCrop(size), T.RandomHorizontalFlip(), T.ToTensor(), normalize]
        )
        test_tf = T.Compose(
            [T.Resize(int(size * 256 / 224)), T.CenterCrop(size), T.ToTensor(), normalize]
        )
        train = ImageFolder(str(base / "train"), transform=train_tf)
        test = ImageFolder(str(base / "val"), transform=test_tf)
        # Labels are indices into the sorted class list; different lists would silently
        # score the network against the wrong classes.
        if train.classes != test.classes:
            only_train = sorted(set(train.classes) - set(test.classes))
            only_val = sorted(set(test.classes) - set(train.classes))
            raise ValueError(
                f"ImageNet class folders differ between {base / 'train'} ({len(train.classes)}) "
                f"and {base / 'val'} ({len(test.classes)}): only in train: "
                f"{_preview(only_train)}; only in val: {_preview(only_val)}"
            )
        found = len(train.classes)
        if "num_classes" in request.options and request.options["num_classes"] != found:
            raise ValueError(
                f"ImageNet option num_classes = {request.options['num_classes']} but "
                f"{base / 'train'} has {found} class folders"
            )
        info = DatasetInfo(
            num_classes=found, input_shape=requested.input_shape, network_style="imagenet"
        )
        return DataBundle(info=info, train=train, test=test)


def _preview(names: list[str], limit: int = 5) -> str:
    if not names:
        return "none"
    more = f" and {len(names) - limit} more" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


# ------------------------------------------------------------------------- hooks


@hookimpl
def register_datasets() -> list[Dataset]:
    return [Digits(), Cifar10(), Cifar100(), ImageNet()]
