"""Datasets as resident tensors, plus on-device minibatching and CIFAR-style augmentation.

Every split is loaded whole into one float32 tensor ``x`` of shape ``[N, C, H, W]`` with pixels in
``[0, 1]`` and an int64 label tensor ``y``. Normalisation is *not* applied here: as in Cohen et al.'s
``NormalizeLayer`` it is the model's first layer (``DatasetInfo.mean`` / ``std`` say what
to use), and smoothing noise is added in ``[0, 1]`` pixel space.

Datasets (``DATASETS``):

* ``cifar10`` -- read through ``torchvision.datasets.CIFAR10`` (the standard python pickles in
  ``cifar-10-batches-py/``), downloaded by torchvision when allowed. See :func:`_load_cifar10` for
  how file checking works.
* ``fashion-mnist`` -- the four IDX files, parsed here with numpy, found in ``--data-dir``, the
  Debian package ``dataset-fashion-mnist`` (``/usr/share/datasets/fashion-mnist``) or
  torchvision's ``FashionMNIST/raw/`` layout (downloaded by torchvision when allowed).
* ``synthetic`` -- generated in memory; see :func:`_make_synthetic`.

A training batch is drawn by :class:`ResidentBatches`, which slices the resident tensors with a
per-epoch permutation (no ``DataLoader`` workers); :func:`augment_batch` applies the CIFAR training
augmentation (random crop with zero padding 4 + horizontal flip) to a whole batch at once, on
whatever device the batch lives on.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from crt_bench.core.checks import check_choice, check_count
from crt_bench.core.errors import CrtBenchError
from crt_bench.data.catalog import SPLITS, dataset_info
from crt_bench.data.cifar10 import _load_cifar10
from crt_bench.data.fashion_mnist import _load_fashion_mnist
from crt_bench.data.imagenet import load_folder_split
from crt_bench.data.split import Split, subset_indices
from crt_bench.data.synthetic import _make_synthetic


def load_split(
    name: str,
    split: str,
    *,
    data_dir: str | Path | None = None,
    download: bool = True,
    limit: int | None = None,
    seed: int = 0,
) -> Split:
    """Load split ``"train"`` or ``"test"`` of dataset ``name`` as a CPU :class:`Split`.

    ``data_dir`` overrides where files are searched (see the module docstring); ``download`` lets
    torchvision fetch missing CIFAR-10 / Fashion-MNIST files. ``limit`` keeps at most that many
    images: the *first* ``limit`` of the test split (so image indices stay those of the full test
    set, as certification subsets expect) or a random subset of the training split drawn with
    ``seed`` (kept in dataset order). ``seed`` also seeds the synthetic dataset's per-image noise.
    """
    info = dataset_info(name)
    check_choice("split", split, SPLITS)
    if limit is not None:
        check_count("limit (images)", limit)
    root = Path(data_dir).expanduser() if data_dir is not None else None
    train = split == "train"

    if info.name in ("imagenet", "imagenet-small"):  # lazy: x decodes images when indexed

        return load_folder_split(info.name, split, info, data_dir=root, limit=limit, seed=seed)
    if info.name == "cifar10":
        images, labels = _load_cifar10(root, train=train, download=download)  # uint8 NHWC
        keep = subset_indices(len(labels), train=train, limit=limit, seed=seed)
        if keep is not None:
            images, labels = images[keep], labels[keep]
        x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2)
    elif info.name == "fashion-mnist":
        images, labels = _load_fashion_mnist(root, train=train, download=download)  # uint8 NHW
        keep = subset_indices(len(labels), train=train, limit=limit, seed=seed)
        if keep is not None:
            images, labels = images[keep], labels[keep]
        x = torch.from_numpy(np.ascontiguousarray(images)).unsqueeze(1)
    else:
        xs, ys = _make_synthetic(split, seed=seed)
        keep = subset_indices(len(ys), train=train, limit=limit, seed=seed)
        if keep is not None:
            xs, ys = xs[torch.from_numpy(keep)], ys[torch.from_numpy(keep)]
        return Split(xs.contiguous(), ys, info)

    x = x.contiguous().to(torch.float32).div_(255.0)
    y = torch.from_numpy(np.asarray(labels, dtype=np.int64))
    if y.numel() and (int(y.min()) < 0 or int(y.max()) >= info.num_classes):
        raise CrtBenchError(
            f"{info.name} {split} labels must lie in 0..{info.num_classes - 1}, "
            f"found {int(y.min())}..{int(y.max())}; the data files are not {info.name}"
        )
    return Split(x, y, info)
