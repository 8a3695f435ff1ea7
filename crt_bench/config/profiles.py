"""Profiles: named sizes of an experiment (`crt-bench list profiles`)."""
from __future__ import annotations

from dataclasses import dataclass, field

from crt_bench.config.certify import CertifyConfig
from crt_bench.core.checks import check_choice


@dataclass(frozen=True)
class Profile:
    """How much of the real experiment to run. ``None`` means: the method's paper recipe.

    ``epoch_scale`` multiplies every method's recipe epochs (and lr milestones) by the same factor, so
    that a shortened profile still compares recipe against recipe (CRT 200 : SmoothMix 150 : MACER 440).
    """

    name: str
    dataset: str
    description: str
    epoch_scale: float = 1.0
    batch_size: int | None = None
    train_limit: int | None = None
    test_limit: int | None = None
    certify: CertifyConfig = field(default_factory=CertifyConfig)


PROFILES: dict[str, Profile] = {
    p.name: p
    for p in (
        Profile(
            "smoke", "synthetic", "synthetic data, a few epochs, N=500: seconds on a CPU; the test suite's path",
            epoch_scale=0.02, batch_size=64, train_limit=1024, test_limit=256,
            certify=CertifyConfig(n0=50, n=500, alpha=0.001, subset="range:0:20"),
        ),
        Profile(
            # The paper profile's code path (each recipe's batch size and settings, CIFAR-10's 32x32x3 and 10
            # classes, the CUDA engine defaults: bf16 autocast, channels-last, folded bf16 teacher) at the
            # smallest size that runs all of it: one epoch per method (any factor below 1/880 rounds every
            # recipe to 1) on 512 synthetic images, CERTIFY at the paper's N0 and alpha with N=1,000 on 8 images.
            "gpu-smoke", "synthetic", "the paper profile's code path on synthetic CIFAR-10-shaped data: each "
            "recipe's batch size, one epoch per method on 512 images, N=1,000 on 8 images: minutes on one GPU",
            epoch_scale=0.001, train_limit=512,
            certify=CertifyConfig(n0=100, n=1_000, alpha=0.001, subset="range:0:8", cuda_precision="bf16",
                                  cuda_compile=True, agreement_images=2),
        ),
        Profile(
            # Sized by measurement (2 cores, see crt_bench.grid.reproduce.CPU_BUDGETS): at most 90 minutes of
            # make reproduce with everything it runs (grid, denoised smoothing, transfers, chain, probes). It
            # cannot buy 500 certified images per model (1.4-2.6 s per image at N=10,000 on this CPU, 11 certified
            # models with two student seeds: 100 images took 37.8 minutes of the measured 89.6) nor 12,000
            # training images (SmoothMix ~10 ms per image-step); the rest of the evidence bar is cpu-full's.
            "cpu", "fashion-mnist", "Fashion-MNIST, 0.055 x each recipe on 4,000 images, 100 test images at "
            "N=10,000 (fastest forward precision): at most 90 minutes on 2 cores",
            epoch_scale=0.055, batch_size=128, train_limit=4000, test_limit=None,
            certify=CertifyConfig(n0=100, n=10_000, alpha=0.001, precision="fastest", subset="skip:100"),
        ),
        Profile(
            # Meets the evidence targets: 500 test images at N=10,000; 12,000 training images
            # at 0.1 x each recipe (SmoothMix 15 epochs, CRT 20), enough for the step schedule's plateau.
            "cpu-full", "fashion-mnist", "Fashion-MNIST, 0.1 x each recipe on 12,000 images, 500 test images at "
            "N=10,000 (fastest forward precision), and a 3-link recursive-CRT chain: about 5.5 hours on 2 cores",
            epoch_scale=0.1, batch_size=128, train_limit=12_000, test_limit=None,
            certify=CertifyConfig(n0=100, n=10_000, alpha=0.001, precision="fastest", subset="skip:20"),
        ),
        Profile(
            # The papers' protocol (Cohen et al.'s --skip 20, the published logs): 500 test images at N=100,000;
            # `reproduce --certify-subset all` certifies the whole test set. On CUDA bf16 autocast + torch.compile
            # (5.1x fp32 on an H200), each model's first 20 images again in fp32 as its agreement check;
            # `reproduce --certify-precision fp32` certifies in IEEE fp32 throughout.
            "paper", "cifar10", "CIFAR-10 at the papers' recipes, CERTIFY of 500 test images (every 20th) at "
            "N=100,000, bf16 + torch.compile on CUDA with an fp32 agreement check (a GPU's work)",
            certify=CertifyConfig(n0=100, n=100_000, alpha=0.001, subset="skip:20", cuda_precision="bf16",
                                  cuda_compile=True, agreement_images=20),
        ),
        Profile(
            # The CRT ImageNet config (official configs/imagenet/xfer.yml): ResNet-18 teacher -> ResNet-50
            # student, 90 epochs, batch 400, SGD lr 0.1, momentum 0.9, wd 1e-4 (= the CRT recipe's optimizer),
            # so 0.45 x CRT's 200 epochs; its lr milestones are not in the shipped config: the recipe's
            # proportions (45, 67) stand in. Certification: 500 validation images, every 100th (crt_bench.data.imagenet).
            "imagenet", "imagenet", "ImageNet (--data-dir with train/ val/): the CRT paper's ResNet-18 -> ResNet-50 "
            "config, 90 CRT epochs, batch 400, 500 val images at N=100,000 (GPU-days; use torchrun)",
            epoch_scale=0.45, batch_size=400,
            certify=CertifyConfig(n0=100, n=100_000, alpha=0.001, subset="skip:100"),
        ),
    )
}


def get_profile(name: str) -> Profile:
    return PROFILES[check_choice("profile", name, PROFILES)]


GPU_PROFILES = frozenset({"gpu-smoke", "paper", "imagenet"})
"""Profiles sized for a GPU: on a machine without one, a grid of them runs only with an explicit ``--device cpu``."""
