"""The paper protocol of a timing probe: each method's step inside the loop its official script ran.

The engine probes (:mod:`crt_bench.timing.probe`) time the training step alone, on one batch of random
data already on the device. The CRT paper's Table 1 timed whole runs of the official scripts instead
(torch 1.9, fp32, no autocast): per epoch, a torchvision ``DataLoader`` over CIFAR-10's uint8 images with
``RandomCrop(32, 4)``, ``RandomHorizontalFlip`` and ``ToTensor`` (4 workers; MACER's ``main.py`` 1), a
``loss.item()`` per step for the running averages they log, and the script's test pass after every epoch:

================  =========================================  =============
script            per-epoch test pass (:data:`TEST_PASS`)    loader workers
================  =========================================  =============
Cohen (gaussian)  noisy: the model on x + N(0, sigma^2)      4
Salman smoothadv  attacked: the PGD attack, then the forward 4
SmoothMix         noisy                                      4
MACER             none (it certifies every 20 epochs from    1
                  epoch 200, not training time)
CRT (200 x 128)   clean and noisy                            4
================  =========================================  =============

Here the images are synthetic (CIFAR-shaped uint8 arrays in memory, PIL images per item as
``torchvision.datasets.CIFAR10`` serves them): decoding and augmentation cost what CIFAR-10's do. A probe
times K loader batches; where K reaches an epoch (``ceil(50,000 / B)``) it times whole epochs with their
whole test pass (loader start-up included, as every epoch of the official scripts); below that the test
pass is timed on its share of batches and both are projected to an epoch. Rows say which (``measure``).
"""
from __future__ import annotations

import math
import time
import warnings
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np
import torch

from crt_bench.core.provenance import synchronize
from crt_bench.timing.probe import PreparedProbe, ProbeConfig, prepare

TEST_PASS: dict[str, str] = {"gaussian": "noisy", "standard": "clean", "smoothadv": "attacked",
                             "smoothmix": "noisy", "macer": "", "crt": "clean+noisy", "consistency": "noisy"}
"""Each official script's per-epoch test pass (a method not listed: noisy, Cohen's)."""
LOADER_WORKERS: dict[str, int] = {"macer": 1}
"""The official scripts' ``num_workers`` where it is not 4."""
DEFAULT_WORKERS = 4
RECIPE_TEST_PASS = {"200x128": "clean+noisy"}  # standard training at the CRT authors' recipe: their loop's test


class Uint8Images(torch.utils.data.Dataset):
    """CIFAR-shaped uint8 HWC images in memory, served as ``torchvision.datasets.CIFAR10`` serves them
    (a PIL image per item through ``transform``)."""

    def __init__(self, count: int, *, size: int = 32, chans: int = 3, classes: int = 10, train: bool = True,
                 seed: int = 0) -> None:
        from torchvision import transforms

        rng = np.random.default_rng(seed)
        self.data = rng.integers(0, 256, (count, size, size, chans), dtype=np.uint8)
        self.targets = rng.integers(0, classes, count).tolist()
        steps = [transforms.RandomCrop(size, padding=4), transforms.RandomHorizontalFlip()] if train else []
        self.transform = transforms.Compose([*steps, transforms.ToTensor()])

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        from PIL import Image

        image = self.data[i]
        return self.transform(Image.fromarray(image if image.shape[2] > 1 else image[:, :, 0])), self.targets[i]


def loader(dataset: Uint8Images, batch: int, workers: int, *, shuffle: bool, persistent: bool,
           pin: bool) -> torch.utils.data.DataLoader:
    with warnings.catch_warnings():  # the scripts' worker counts, also on a machine with fewer cores
        warnings.filterwarnings("ignore", message="This DataLoader will create")
        return torch.utils.data.DataLoader(dataset, batch_size=batch, shuffle=shuffle, num_workers=workers,
                                           pin_memory=pin, persistent_workers=persistent and workers > 0)


def _autocast(step):
    """The step's own autocast (bf16 where it runs in bf16), for the test pass."""
    return torch.autocast(step.device.type, dtype=torch.bfloat16) if step.amp else nullcontext()


@dataclass
class PaperProbe(PreparedProbe):
    """A prepared probe whose loader batches come through the official loop (see the module docstring)."""

    train_loader: torch.utils.data.DataLoader | None = None
    test_loader: torch.utils.data.DataLoader | None = None
    test_pass: str = "noisy"
    workers: int = DEFAULT_WORKERS
    _train_iter: Iterator | None = None
    _test_iter: Iterator | None = None

    @property
    def train_batches_per_epoch(self) -> int:
        return math.ceil(self.cfg.train_images / self.batch)

    @property
    def test_batches_per_epoch(self) -> int:
        return math.ceil(self.cfg.test_images / self.batch) if self.test_pass else 0

    def whole_epochs(self, batches: int) -> bool:
        return batches >= self.train_batches_per_epoch

    def measure(self, batches: int) -> str:
        test = f"{self.test_pass} test pass" if self.test_pass else "no test pass"
        if self.whole_epochs(batches):
            return f"whole epochs ({test}; {self.workers} loader workers)"
        return (f"{batches} loader batches and the {test}'s share, projected to an epoch "
                f"({self.workers} loader workers)")

    def _next(self, which: str) -> tuple[torch.Tensor, torch.Tensor]:
        source = self.train_loader if which == "train" else self.test_loader
        it = getattr(self, f"_{which}_iter")
        batch = next(it, None) if it is not None else None
        if batch is None:  # a new epoch of this loader (workers start again unless persistent)
            with warnings.catch_warnings():  # the scripts' worker counts, also on a machine with fewer cores
                warnings.filterwarnings("ignore", message="This DataLoader will create")
                it = iter(source)
            setattr(self, f"_{which}_iter", it)
            batch = next(it)
        x, y = batch
        return x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)

    def _test_batch(self) -> float:
        """One test batch as the method's script evaluates it; its logged number (``.item()``)."""
        x, y = self._next("test")
        model, ctx, step = self.step.model, self.step.ctx, self.step
        if step.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        model.eval()
        try:
            if self.test_pass == "attacked":  # Salman's test(): the attack, then the forward (no update)
                with _autocast(step):
                    return float(step.spec.loss(step.forward, x, y, ctx).item())
            with torch.no_grad(), _autocast(step):
                total = 0.0
                for inputs_used in self.test_pass.split("+"):
                    inputs = x + torch.randn_like(x) * self.sigma if inputs_used == "noisy" else x
                    total += float((step.forward(inputs).argmax(1) == y).sum().item())
                return total
        finally:
            model.train()

    def time_batches(self, batches: int, clock: Callable[[], float] = time.perf_counter) -> float:
        """Seconds per loader batch: ``batches`` training batches from the loader (``.item()`` per step) plus
        the test pass's share (all of it per whole epoch), per training batch."""
        if self.whole_epochs(batches):
            self._train_iter = self._test_iter = None  # each epoch starts its loaders, as the scripts do
        synchronize(self.device)
        start = clock()
        for _ in range(batches):
            x, y = self._next("train")
            self.step(x, y).item()  # the scripts' per-step logging
        synchronize(self.device)
        train = clock() - start
        share = batches * self.test_batches_per_epoch / self.train_batches_per_epoch
        runs = 0 if not self.test_pass else (self.test_batches_per_epoch if self.whole_epochs(batches)
                                             else max(1, round(share)))
        start = clock()
        for _ in range(runs):
            self._test_batch()
        synchronize(self.device)
        test = (clock() - start) * (share / runs if runs else 0.0)
        return (train + test) / batches


def prepare_paper(method: str, arch: str, *, sigma: float = 0.25, teacher_arch: str | None = "resnet110",
                  cfg: ProbeConfig | None = None, device: torch.device | str = "cpu", recipe: str = "") -> PaperProbe:
    """:func:`crt_bench.timing.probe.prepare` (the step, its passes, its warm-up), then the official loop's
    loaders: as many synthetic images as the timed batches read (an epoch's at most) and a warm-up batch."""
    cfg = cfg or ProbeConfig(protocol="paper")
    base = prepare(method, arch, sigma=sigma, teacher_arch=teacher_arch, cfg=cfg, device=device, recipe=recipe)
    workers = LOADER_WORKERS.get(method, DEFAULT_WORKERS) if cfg.loader_workers is None else cfg.loader_workers
    test_pass = RECIPE_TEST_PASS.get(recipe, TEST_PASS.get(method, "noisy"))
    shape = dict(size=cfg.image_size, chans=cfg.in_chans, classes=cfg.num_classes)
    train_n = min(cfg.train_images, base.batch * cfg.batches)
    whole = cfg.batches >= math.ceil(cfg.train_images / base.batch)
    pin = base.device.type == "cuda"
    probe = PaperProbe(**{k: getattr(base, k) for k in PreparedProbe.__dataclass_fields__},
                       train_loader=loader(Uint8Images(train_n, **shape), base.batch, workers, shuffle=True,
                                           persistent=not whole, pin=pin),
                       test_pass=test_pass, workers=workers)
    if test_pass:
        test_n = min(cfg.test_images, base.batch * max(1, math.ceil(
            cfg.batches * probe.test_batches_per_epoch / probe.train_batches_per_epoch)))
        probe.test_loader = loader(Uint8Images(test_n, train=False, seed=1, **shape), base.batch, workers,
                                   shuffle=False, persistent=not whole, pin=pin)
    probe.time_batches(1)  # warm-up through the loop: workers started, the test path's first call
    return probe
