"""The dataset catalogue: name, classes, image shape, normalisation."""
from __future__ import annotations

from dataclasses import dataclass

from crt_bench.core.constants import (
    CIFAR10_MEAN,
    CIFAR10_STD,
    FASHION_MNIST_MEAN,
    FASHION_MNIST_STD,
    IMAGENET_MEAN,
    IMAGENET_STD,
    SYNTHETIC_MEAN,
    SYNTHETIC_STD,
)
from crt_bench.core.checks import check_choice

# --------------------------------------------------------------------------------------------------
# Dataset descriptions


@dataclass(frozen=True)
class DatasetInfo:
    """Static facts about a dataset that models and training loops need.

    ``mean`` / ``std`` are per-channel statistics of the training pixels in ``[0, 1]``, meant for
    the model's normalisation layer. ``augment`` says whether the reference training recipe uses
    random crop (padding 4) + horizontal flip.
    """

    name: str
    num_classes: int
    in_chans: int
    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    augment: bool
    train_images: int | None = None  # images of the full splits (None: a folder dataset, whatever it holds)
    test_images: int | None = None


DATASETS: dict[str, DatasetInfo] = {
    "cifar10": DatasetInfo(
        name="cifar10",
        num_classes=10,
        in_chans=3,
        image_size=32,
        mean=CIFAR10_MEAN,
        std=CIFAR10_STD,
        augment=True,
        train_images=50_000,
        test_images=10_000,
    ),
    "fashion-mnist": DatasetInfo(
        name="fashion-mnist",
        num_classes=10,
        in_chans=1,
        image_size=28,
        mean=FASHION_MNIST_MEAN,
        std=FASHION_MNIST_STD,
        augment=False,
        train_images=60_000,
        test_images=10_000,
    ),
    "synthetic": DatasetInfo(
        name="synthetic",
        num_classes=10,
        in_chans=3,
        image_size=32,
        mean=SYNTHETIC_MEAN,
        std=SYNTHETIC_STD,
        augment=False,
        train_images=2_048,
        test_images=512,
    ),
    # ImageFolder datasets (crt_bench.data.imagenet): read lazily by workers, augmented by their own pipeline.
    "imagenet": DatasetInfo(
        name="imagenet", num_classes=1000, in_chans=3, image_size=224,
        mean=IMAGENET_MEAN, std=IMAGENET_STD, augment=False,
    ),
    "imagenet-small": DatasetInfo(  # the same pipeline at 32 px: tests and CPU runs with the 32x32 registry
        name="imagenet-small", num_classes=1000, in_chans=3, image_size=32,
        mean=IMAGENET_MEAN, std=IMAGENET_STD, augment=False,
    ),
}

SPLITS = ("train", "test")


def dataset_info(name: str) -> DatasetInfo:
    """Return the :class:`DatasetInfo` for ``name`` (case-insensitive; ``_`` may stand for ``-``)."""
    key = name.strip().lower().replace("_", "-")
    if key not in DATASETS:
        check_choice("dataset", name, DATASETS)
    return DATASETS[key]
