"""ImageNet the way the CRT paper scales up (its section 5.3): a torchvision ImageFolder read by workers.

``--dataset imagenet --data-dir DIR`` with ``DIR/train/<class>/*.JPEG`` and ``DIR/val/<class>/*.JPEG``
(torchvision's ImageFolder layout; 1000 classes).  ImageNet does not fit the resident-tensor design of
:mod:`crt_bench.data.datasets` (150 GB as float32), so here:

* a split's ``x`` is :class:`FolderImages`, a lazy ``[N, 3, S, S]`` "tensor": indexing it decodes
  those images with the *test* pipeline (resize 256, center crop 224, pixels in [0, 1]).  The
  certification driver, the per-epoch noisy accuracy and the teacher check index ``x`` exactly as they
  index a resident tensor, so they work unchanged; image indices are those of the sorted ImageFolder;
* training batches come from :class:`FolderBatches`: a DataLoader with worker processes and pinned
  memory (on CUDA) applying the *training* pipeline (RandomResizedCrop 224 + horizontal flip).  The
  epoch's order is drawn with the run's checkpointed sampler generator and cut into global batches of
  which a rank takes its block (the same contract as :class:`crt_bench.data.batches.RankBatches`), and
  every image's augmentation is seeded by (epoch key, image index): the batches, and so the run, do
  not depend on the number of workers or ranks;
* normalisation (ImageNet mean/std) is the model's first layer, as for every dataset here.

``imagenet-small`` is the same pipeline at 32 px (resize 36, center crop 32; RandomResizedCrop 32):
the path exercised end to end by the tests and on a CPU with the 32x32 architectures.

The paper's certification: 500 validation images, every 100th (``skip:100``, the ``imagenet``
profile), radii 0.5 .. 3.0 in its tables (:data:`IMAGENET_RADII`, :func:`imagenet_table`).
"""
from __future__ import annotations

import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from crt_bench.core.errors import CrtBenchError
from crt_bench.core.seeding import mix_seed
from crt_bench.data.split import Split, subset_indices
from crt_bench.parallel.noise import RankSlice, rank_slice

IMAGENET_CERTIFY_SUBSET = "skip:100"  # 500 of the 50,000 validation images, as the paper certifies
SPLIT_FOLDERS = {"train": "train", "test": "val"}


@dataclass(frozen=True)
class FolderPipeline:
    """Input size and the test pipeline's resize (the standard 256 -> 224, scaled)."""

    image_size: int
    resize: int

    def test_transform(self):
        from torchvision import transforms as T

        return T.Compose([T.Resize(self.resize), T.CenterCrop(self.image_size), T.ToTensor()])

    def train_transform(self):
        from torchvision import transforms as T

        return T.Compose([T.RandomResizedCrop(self.image_size), T.RandomHorizontalFlip(), T.ToTensor()])


PIPELINES = {"imagenet": FolderPipeline(224, 256), "imagenet-small": FolderPipeline(32, 36)}


def is_folder_dataset(name: str) -> bool:
    return name in PIPELINES


def folder_of(data_dir: str | Path | None, split: str) -> Path:
    """``DIR/train`` or ``DIR/val``; a one-line error naming the layout when absent."""
    if data_dir is None:
        raise CrtBenchError("ImageNet needs --data-dir DIR holding train/ and val/ in torchvision's ImageFolder "
                            "layout (DIR/train/<class>/<image>, DIR/val/<class>/<image>)")
    folder = Path(data_dir).expanduser() / SPLIT_FOLDERS[split]
    if not folder.is_dir():
        raise CrtBenchError(f"no {folder}: --data-dir must hold train/ and val/ in torchvision's ImageFolder layout "
                            f"(DIR/{SPLIT_FOLDERS[split]}/<class>/<image>)")
    return folder


class FolderImages:
    """A lazy ``[N, 3, S, S]`` float tensor of ImageFolder images: ``x[i]``, ``x[a:b]``, ``x[[i, j]]`` decode them."""

    def __init__(self, samples: Sequence[tuple[str, int]], pipeline: FolderPipeline,
                 device: torch.device | str = "cpu") -> None:
        self.samples, self.pipeline, self.device = list(samples), pipeline, torch.device(device)
        self._transform = pipeline.test_transform()

    @property
    def shape(self) -> torch.Size:
        return torch.Size((len(self.samples), 3, self.pipeline.image_size, self.pipeline.image_size))

    def dim(self) -> int:
        return 4

    def __len__(self) -> int:
        return len(self.samples)

    def to(self, device: torch.device | str) -> FolderImages:
        return FolderImages(self.samples, self.pipeline, device)

    def load(self, index: int) -> Tensor:
        from PIL import Image

        with Image.open(self.samples[index][0]) as image:
            return self._transform(image.convert("RGB"))

    def __getitem__(self, key: int | slice | Sequence[int] | Tensor) -> Tensor:
        if isinstance(key, int):
            return self.load(key).to(self.device)
        if isinstance(key, slice):
            chosen = range(*key.indices(len(self)))
        else:
            chosen = [int(i) for i in (key.tolist() if isinstance(key, Tensor) else key)]
        if not len(chosen):
            return torch.empty((0, *self.shape[1:]), device=self.device)
        return torch.stack([self.load(i) for i in chosen]).to(self.device)


def load_folder_split(name: str, split: str, info, *, data_dir: str | Path | None, limit: int | None,
                      seed: int):
    """A :class:`crt_bench.data.split.Split` whose ``x`` is :class:`FolderImages` (labels resident).

    ``limit`` keeps the first ``limit`` test images (indices stay the full split's) or a seeded random
    subset of the training images, as :func:`crt_bench.data.datasets.load_split` does for the other datasets.
    """
    from torchvision.datasets.folder import IMG_EXTENSIONS, make_dataset


    folder = folder_of(data_dir, split)
    classes = sorted(entry.name for entry in os.scandir(folder) if entry.is_dir())
    if not classes:
        raise CrtBenchError(f"{folder} holds no class folders (ImageFolder layout: {folder}/<class>/<image>)")
    if len(classes) > info.num_classes:
        raise CrtBenchError(f"{folder} holds {len(classes)} classes; {info.name} has {info.num_classes}")
    samples = make_dataset(str(folder), {c: i for i, c in enumerate(classes)}, extensions=IMG_EXTENSIONS)
    if not samples:
        raise CrtBenchError(f"no images ({', '.join(IMG_EXTENSIONS)}) under {folder}")
    keep = subset_indices(len(samples), train=split == "train", limit=limit, seed=seed)
    if keep is not None:
        samples = [samples[i] for i in keep]
    y = torch.tensor([label for _, label in samples], dtype=torch.int64)
    return Split(FolderImages(samples, PIPELINES[name]), y, info)  # type: ignore[arg-type]


class _AugmentedImages(torch.utils.data.Dataset):
    """``dataset[(index, key)]`` = (training view of image ``index``, label), its randomness seeded by (key, index)."""

    def __init__(self, images: FolderImages) -> None:
        self.samples, self.transform = images.samples, images.pipeline.train_transform()

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, item: tuple[int, int]) -> tuple[Tensor, int]:
        from PIL import Image

        index, key = item
        path, label = self.samples[index]
        with Image.open(path) as image, torch.random.fork_rng(devices=[]):
            torch.manual_seed(mix_seed(key, index))
            return self.transform(image.convert("RGB")), label


class FolderBatches:
    """Training batches of an ImageFolder split on DataLoader workers, this rank's block of each global batch.

    ``len`` and ``split`` are the global sampler's (steps per epoch, images per epoch), as for
    :class:`crt_bench.data.batches.ResidentBatches`; ``generator`` (checkpointed by the trainer) draws each epoch's
    order and augmentation key, so a resumed run continues with the batches it would have had.
    """

    def __init__(self, split, batch_size: int, *, generator: torch.Generator, device: torch.device,
                 rank: int = 0, world_size: int = 1, workers: int | None = None) -> None:
        if batch_size < world_size:
            raise CrtBenchError(f"batch size {batch_size} is smaller than the {world_size} processes")
        self.split, self.batch_size, self.generator, self.device = split, batch_size, generator, device
        self.rank, self.world_size = rank, world_size
        cores = os.cpu_count() or 1
        self.workers = min(8, max(0, cores // world_size - 1)) if workers is None else workers
        self.dataset = _AugmentedImages(split.x)

    def __len__(self) -> int:
        return math.ceil(len(self.split) / self.batch_size)

    def _plan(self) -> tuple[list[list[tuple[int, int]]], list[tuple[int, ...]]]:
        n = len(self.split)
        order = torch.randperm(n, generator=self.generator).tolist()
        key = int(torch.randint(0, 2**62, (1,), generator=self.generator))
        mine, sizes = [], []
        for start in range(0, n, self.batch_size):
            batch = order[start:start + self.batch_size]
            parts = torch.arange(len(batch)).tensor_split(self.world_size)
            sizes.append(tuple(len(p) for p in parts))
            lo = sum(sizes[-1][: self.rank])
            mine.append([(i, key) for i in batch[lo:lo + sizes[-1][self.rank]]])
        return mine, sizes

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        batches, sizes = self._plan()
        loader = torch.utils.data.DataLoader(self.dataset, batch_sampler=batches, num_workers=self.workers,
                                             pin_memory=self.device.type == "cuda")
        for (x, y), part in zip(loader, sizes):
            x, y = x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
            if self.world_size > 1:
                with rank_slice(RankSlice(self.rank, part)):
                    yield x, y
            else:
                yield x, y
