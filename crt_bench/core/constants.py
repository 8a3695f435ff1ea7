"""Constants shared across layers: normalisation statistics, radius grids, name prefixes."""
from __future__ import annotations

# normalisation statistics
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
IMAGENET_RADII = (0.5, 1.0, 1.5, 2.0, 2.5, 3.0)
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2023, 0.1994, 0.2010)

IMPORT_PREFIX = "import:"  # run id of a certification imported from a published log: import:<name>
# radii of the paper tables
TABLE_RADII: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75, 1.0)
