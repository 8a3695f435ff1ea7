"""The dataset catalogue: name, classes, image shape, normalisation."""
from __future__ import annotations

from dataclasses import dataclass

from crt_bench.core.errors import CrtBenchError

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


DATASETS: dict[str, DatasetInfo] = {
    "cifar10": DatasetInfo(
        name="cifar10",
        num_classes=10,
        in_chans=3,
        image_size=32,
        mean=(0.4914, 0.4822, 0.4465),
        std=(0.2023, 0.1994, 0.2010),
        augment=True,
    ),
    "fashion-mnist": DatasetInfo(
        name="fashion-mnist",
        num_classes=10,
        in_chans=1,
        image_size=28,
        # Published statistics of the 60000 training images (checked in tests on the real files).
        mean=(0.2860,),
        std=(0.3530,),
        augment=False,
    ),
    "synthetic": DatasetInfo(
        name="synthetic",
        num_classes=10,
        in_chans=3,
        image_size=32,
        # Statistics of the default (seed 0) synthetic training split, rounded.
        mean=(0.5346, 0.5332, 0.5291),
        std=(0.2125, 0.2148, 0.2110),
        augment=False,
    ),
    # ImageFolder datasets (crt_bench.data.imagenet): read lazily by workers, augmented by their own pipeline.
    "imagenet": DatasetInfo(
        name="imagenet", num_classes=1000, in_chans=3, image_size=224,
        mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225), augment=False,
    ),
    "imagenet-small": DatasetInfo(  # the same pipeline at 32 px: tests and CPU runs with the 32x32 registry
        name="imagenet-small", num_classes=1000, in_chans=3, image_size=32,
        mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225), augment=False,
    ),
}

SPLITS = ("train", "test")


def dataset_info(name: str) -> DatasetInfo:
    """Return the :class:`DatasetInfo` for ``name`` (case-insensitive; ``_`` may stand for ``-``)."""
    key = name.strip().lower().replace("_", "-")
    if key not in DATASETS:
        valid = ", ".join(DATASETS)
        raise CrtBenchError(f"unknown dataset {name!r}; valid names: {valid}")
    return DATASETS[key]
