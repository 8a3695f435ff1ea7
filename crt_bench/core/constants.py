"""Constants shared across layers: normalisation statistics, radius grids, name prefixes, interval level."""
from __future__ import annotations

# -- normalisation statistics: per-channel mean / std of the training pixels in [0, 1] -------------
CIFAR10_MEAN: tuple[float, ...] = (0.4914, 0.4822, 0.4465)
CIFAR10_STD: tuple[float, ...] = (0.2023, 0.1994, 0.2010)
IMAGENET_MEAN: tuple[float, ...] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, ...] = (0.229, 0.224, 0.225)
# published statistics of the 60000 training images (checked in tests on the real files)
FASHION_MNIST_MEAN: tuple[float, ...] = (0.2860,)
FASHION_MNIST_STD: tuple[float, ...] = (0.3530,)
# statistics of the default (seed 0) synthetic training split, rounded
SYNTHETIC_MEAN: tuple[float, ...] = (0.5346, 0.5332, 0.5291)
SYNTHETIC_STD: tuple[float, ...] = (0.2125, 0.2148, 0.2110)

# -- radius grids -----------------------------------------------------------------------------------
SUMMARY_RADII: tuple[float, ...] = tuple(0.25 * k for k in range(10))
"""The radius grid of the published CIFAR-10 tables and of ``crt-bench summary``: 0, 0.25, ..., 2.25."""
TABLE_RADII: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75, 1.0)
"""The radii of the report's paper tables and of the chain table."""
LEADERBOARD_RADII: tuple[float, ...] = (0.25, 0.5, 0.75, 1.0)
"""The radii a leaderboard entry records and ranks on."""
IMAGENET_RADII: tuple[float, ...] = (0.5, 1.0, 1.5, 2.0, 2.5, 3.0)
"""The radii of the ImageNet tables."""

# -- names and levels -------------------------------------------------------------------------------
IMPORT_PREFIX = "import:"  # run id of a certification imported from a published log: import:<name>
TRANSFER_PROCEDURE = "transfer"  # ``procedure`` of certify rows transferred from a teacher's certification (else CERTIFY)
INTERVAL_LEVEL = 0.95
"""Coverage of every interval the package reports (bootstrap intervals, timing ratio intervals)."""
