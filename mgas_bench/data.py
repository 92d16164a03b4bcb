"""Data plumbing shared by every method: the search split, loaders and cutout."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.utils.data import DataLoader, Subset, default_collate
from torch.utils.data import Dataset as TorchDataset

from mgas_bench.components import DataBundle, SearchData


def search_split(train: TorchDataset, fraction: float, split_seed: int) -> tuple[Subset, Subset]:
    """Split the training set into a weight half and an architecture half.

    The permutation depends only on ``split_seed``, never on the run seed, so
    every method and seed searches on the same two halves.
    """
    n = len(train)  # type: ignore[arg-type]
    n_weights = round(n * fraction)
    if not 0 < n_weights < n:
        raise ValueError(f"search_fraction {fraction} leaves an empty split of {n} images")
    order = torch.randperm(n, generator=torch.Generator().manual_seed(split_seed)).tolist()
    return Subset(train, order[:n_weights]), Subset(train, order[n_weights:])


@dataclass(frozen=True)
class LoaderOptions:
    """How batches reach the device (from the run's runtime config)."""

    workers: int = 0
    pin_memory: bool = False
    channels_last: bool = False


class _ChannelsLastBatches:
    """Collates as usual, then lays the images out NHWC (picklable, for worker processes)."""

    def __call__(self, items: list) -> list:
        images, labels = default_collate(items)
        return [images.contiguous(memory_format=torch.channels_last), labels]


def loader(
    dataset: TorchDataset,
    batch_size: int,
    shuffle: bool,
    seed: int,
    options: LoaderOptions = LoaderOptions(),
    drop_last: bool = False,
) -> DataLoader:
    # A generator of its own makes the batch order depend on the run seed alone, not
    # on how much of the global RNG the model's initialisation used. Worker processes
    # are seeded from it too, so their augmentations depend on the run seed alone.
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        drop_last=drop_last,
        generator=torch.Generator().manual_seed(seed),
        num_workers=options.workers,
        persistent_workers=False,
        pin_memory=options.pin_memory,
        collate_fn=_ChannelsLastBatches() if options.channels_last else None,
    )


def search_data(
    bundle: DataBundle,
    fraction: float,
    split_seed: int,
    batch_size: int,
    seed: int,
    options: LoaderOptions = LoaderOptions(),
) -> SearchData:
    weights, arch = search_split(bundle.train, fraction, split_seed)
    return SearchData(
        info=bundle.info,
        weights=loader(weights, batch_size, True, seed, options),
        arch=loader(arch, batch_size, True, seed + 1, options),
    )


def cutout(
    images: torch.Tensor, size: int, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Zero one ``size`` x ``size`` square per image, centred anywhere (DeVries & Taylor 2017).

    Vectorised over the batch; the square is clipped at the borders as in the
    reference implementation.
    """
    if size <= 0:
        return images
    n, _, h, w = images.shape
    cy = torch.randint(0, h, (n,), generator=generator)
    cx = torch.randint(0, w, (n,), generator=generator)
    ys = torch.arange(h).view(1, h, 1)
    xs = torch.arange(w).view(1, 1, w)
    half = size // 2
    inside = (
        (ys >= (cy - half).clamp(min=0).view(n, 1, 1))
        & (ys < (cy + half).clamp(max=h).view(n, 1, 1))
        & (xs >= (cx - half).clamp(min=0).view(n, 1, 1))
        & (xs < (cx + half).clamp(max=w).view(n, 1, 1))
    )
    return images * (~inside).unsqueeze(1).to(images.device, images.dtype)
