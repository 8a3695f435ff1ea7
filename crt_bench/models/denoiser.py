"""Denoised smoothing's models (Salman et al., NeurIPS 2020): a DnCNN denoiser in front of a classifier.

``DnCNN`` is the ``cifar_dncnn`` of microsoft/denoised-smoothing: a conv + ReLU, ``depth - 2`` blocks of
conv + batch norm + ReLU, and a last conv predicting the noise residual, subtracted from the input
(``D(x) = x - net(x)``). It works in [0, 1] pixel space, without a normalization layer (the classifier
keeps its own). The full model is 17 layers of 64 channels; shortened profiles use a slim one
(:data:`PROFILE_SIZES`).

``DenoisedClassifier`` is ``classifier(denoiser(x))``: the base classifier of the smoothed classifier
``f(D(x + eta))``, certified by the ordinary engine (the denoiser's forward runs inside each batch). The
classifier is frozen: no parameter gradients, and eval mode whatever mode the whole is put in.

A model file of a denoised run records ``"denoiser": {depth, width, objective, sigma}`` next to the
classifier's ``arch`` (:mod:`crt_bench.models.files` rebuilds the pair from it).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from torch import Tensor, nn

from crt_bench.core.errors import CrtBenchError

OBJECTIVES = ("mse", "stability")

FULL_SIZE = (17, 64)
"""(depth, width) of microsoft/denoised-smoothing's ``cifar_dncnn``."""
PROFILE_SIZES: dict[str, tuple[int, int]] = {"smoke": (5, 16), "cpu": (5, 16), "cpu-full": (7, 32)}
"""Slim denoisers for the CPU profiles; every other profile (paper, gpu-smoke, imagenet) gets :data:`FULL_SIZE`.

Sized by what certification pays: every noisy sample goes through the denoiser too. On Fashion-MNIST
(28x28) a 5 x 16 DnCNN is ~6M multiply-adds per image, about half of MobileNetV4-Conv-Small's and a fifth of
ResNet-20's; 7 x 32 is ~48M, four times MobileNetV4's (which is why the default profile takes the slimmer)."""


def denoiser_size(profile: str) -> tuple[int, int]:
    """(depth, width) of the denoiser a run of ``profile`` trains."""
    return PROFILE_SIZES.get(profile, FULL_SIZE)


@dataclass(frozen=True)
class DenoiserConfig:
    """What rebuilds a denoiser from a model file, and what it was trained for."""

    depth: int
    width: int
    in_chans: int
    sigma: float
    objective: str  # "mse" or "stability": the objective of its last training

    def validate(self) -> None:
        if self.depth < 2 or self.width < 1 or self.in_chans < 1:
            raise CrtBenchError(f"a denoiser needs depth >= 2 and width >= 1, got depth {self.depth}, width {self.width}")
        if self.objective not in OBJECTIVES:
            raise CrtBenchError(f"denoiser objective must be one of {', '.join(OBJECTIVES)}, got {self.objective!r}")

    @classmethod
    def from_meta(cls, meta: dict[str, Any]) -> DenoiserConfig:
        try:
            cfg = cls(int(meta["depth"]), int(meta["width"]), int(meta["in_chans"]), float(meta["sigma"]),
                      str(meta["objective"]))
        except (KeyError, TypeError, ValueError) as err:
            raise CrtBenchError(f"a model file's denoiser record is incomplete ({err!r}): {meta}") from None
        cfg.validate()
        return cfg

    def to_meta(self) -> dict[str, Any]:
        return asdict(self)


class DnCNN(nn.Module):
    """DnCNN (Zhang et al. 2017) as denoised smoothing uses it: predicts the noise, returns ``x - noise``."""

    def __init__(self, config: DenoiserConfig) -> None:
        super().__init__()
        config.validate()
        self.config = config
        c, w = config.in_chans, config.width
        layers: list[nn.Module] = [nn.Conv2d(c, w, 3, padding=1, bias=True), nn.ReLU(inplace=True)]
        for _ in range(config.depth - 2):
            layers += [nn.Conv2d(w, w, 3, padding=1, bias=False), nn.BatchNorm2d(w, eps=1e-4, momentum=0.95),
                       nn.ReLU(inplace=True)]
        layers.append(nn.Conv2d(w, c, 3, padding=1, bias=False))
        self.net = nn.Sequential(*layers)
        for m in self.modules():  # the reference initialisation: orthogonal convolutions, unit batch norms
            if isinstance(m, nn.Conv2d):
                nn.init.orthogonal_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> Tensor:
        return x - self.net(x)


class DenoisedClassifier(nn.Module):
    """``classifier(denoiser(x))`` with the classifier frozen (eval mode, no gradients) for good."""

    def __init__(self, denoiser: DnCNN, classifier: nn.Module) -> None:
        super().__init__()
        self.denoiser = denoiser
        self.classifier = classifier.eval().requires_grad_(False)

    def train(self, mode: bool = True) -> DenoisedClassifier:
        super().train(mode)
        self.classifier.eval()  # its batch-norm statistics are the off-the-shelf classifier's
        return self

    @property
    def trained_part(self) -> nn.Module:
        """The network a training step updates (what the timing probes count passes of): the denoiser."""
        return self.denoiser

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.denoiser(x))


def check_denoiser_sigma(config: DenoiserConfig, sigma: float, what: str) -> None:
    """One clear error when a denoiser trained for one noise level is used at another."""
    if abs(config.sigma - float(sigma)) > 1e-9:
        raise CrtBenchError(f"{what}: its denoiser was trained at sigma {config.sigma:g}, not {float(sigma):g}; "
                            f"a denoiser removes the noise it was trained on: use one trained at sigma {float(sigma):g}")
