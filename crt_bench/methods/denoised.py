"""Denoised smoothing (Salman, Sun, Yang, Kapoor, Kolter, NeurIPS 2020): a denoiser D in front of an
off-the-shelf classifier f, certified as the smoothed classifier of f(D(x + eta)); f is never retrained.

The classifier is the run's ``--teacher`` (a run id, e.g. of ``--method standard``, or a checkpoint); the
run trains only the denoiser (:mod:`crt_bench.models.denoiser`) and saves classifier(denoiser(x)).

Variants (``--set variant=...``), after the paper's objectives:

* ``mse``: ``|| D(x + eta) - x ||^2``, independent of the classifier: trained once per (dataset, sigma).
  A run of another architecture reuses it with ``--set denoiser=RUN_ID`` (that mse run): nothing is
  trained (0 epochs), the run assembles denoiser and classifier, and its row names the denoiser run in
  ``init_run_id`` (the denoiser's hours are that run's, counted once).
* ``stability``: cross-entropy of f(D(x + eta)) against f's prediction on the clean x, through the frozen
  f: one fine-tune per classifier, counted per architecture. ``--set denoiser=RUN_ID`` starts it from
  that run's denoiser (the paper fine-tunes the MSE denoiser), else from a fresh one.

``depth``/``width`` (0: the profile's, :func:`crt_bench.models.denoiser.denoiser_size`) size a fresh
denoiser. Recipe (microsoft/denoised-smoothing ``train_denoiser.py``, CIFAR-10): Adam, lr 1e-3, 90 epochs,
lr x0.1 every 30 epochs, batch 256, no weight decay.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from crt_bench.core.checks import check_choice
from crt_bench.core.errors import CrtBenchError
from crt_bench.core.lazy import lazy_module
from crt_bench.methods.common import gaussian_noise
from crt_bench.methods.registry import Recipe, StepContext, register_method

if TYPE_CHECKING:  # the real modules for type checkers; at run time imported on first use (torch-free import)
    import torch
    import torch.nn.functional as F
    from torch import Tensor, nn

    from crt_bench.models import denoiser as models_denoiser
    from crt_bench.models import files as models_files
else:
    torch = lazy_module("torch")
    F = lazy_module("torch.nn.functional")
    nn = lazy_module("torch.nn")
    models_denoiser = lazy_module("crt_bench.models.denoiser")
    models_files = lazy_module("crt_bench.models.files")

VARIANTS = ("mse", "stability")


@dataclass
class DenoisedHParams:
    variant: str = "mse"
    denoiser: str = ""  # a finished denoised run (or its model file): mse reuses it, stability starts from it
    depth: int = 0  # layers of a fresh denoiser (0: the profile's)
    width: int = 0  # channels of a fresh denoiser (0: the profile's)

    def validate(self) -> None:
        check_choice("variant", self.variant, VARIANTS)
        if self.depth < 0 or self.width < 0 or self.depth == 1:
            raise CrtBenchError(f"depth must be 0 (the profile's) or >= 2 and width >= 0, got {self.depth}, {self.width}")

    @property
    def reuses_denoiser(self) -> bool:
        """An mse run given a finished mse denoiser has nothing to train."""
        return self.variant == "mse" and bool(self.denoiser)


def load_denoiser(source: str, results_root: str | Path, sigma: float,
                  dataset: str) -> tuple[models_denoiser.DnCNN, str]:
    """The denoiser of the finished denoised run (or model file) ``source``, checked against the run; its run id."""
    loaded = models_files.load_model(source, results_root)
    if not isinstance(loaded.model, models_denoiser.DenoisedClassifier):
        raise CrtBenchError(f"--set denoiser={source}: {loaded.path} holds no denoiser (method "
                            f"{loaded.meta.get('method')!r}); name a finished run of --method denoised")
    denoiser = loaded.model.denoiser
    models_denoiser.check_denoiser_sigma(denoiser.config, sigma, f"--set denoiser={source}")
    if loaded.meta.get("dataset") != dataset:
        raise CrtBenchError(f"--set denoiser={source}: its denoiser was trained on {loaded.meta.get('dataset')}, "
                            f"this run uses {dataset}")
    return denoiser, str(loaded.meta.get("run_id") or source)


def compose_denoised(classifier: nn.Module, hp: Any, *, sigma: float, profile: str, dataset: str,
                     results_root: str | Path) -> tuple[nn.Module, str]:
    """The ``compose`` of ``denoised``: ``DenoisedClassifier(denoiser, classifier)`` for a run with hyper-parameters
    ``hp``; the training loop calls it with the run's loaded teacher (the classifier).

    A given ``hp.denoiser`` must be a denoiser of the run's sigma and dataset; an mse run reuses only an
    mse denoiser. The denoiser's recorded objective becomes the variant this run trains.
    """
    in_chans = next(m for m in classifier.modules() if isinstance(m, nn.Conv2d)).in_channels
    if hp.denoiser:
        given, init_run_id = load_denoiser(hp.denoiser, results_root, sigma, dataset)
        if hp.variant == "mse" and given.config.objective != "mse":
            raise CrtBenchError(f"--set denoiser={hp.denoiser}: an mse run reuses an mse denoiser, this one was "
                                f"trained with {given.config.objective!r}")
        config = models_denoiser.DenoiserConfig(given.config.depth, given.config.width, given.config.in_chans, sigma,
                                                hp.variant)
        denoiser = models_denoiser.DnCNN(config)
        denoiser.load_state_dict(given.state_dict())
    else:
        default_depth, default_width = models_denoiser.denoiser_size(profile)
        config = models_denoiser.DenoiserConfig(hp.depth or default_depth, hp.width or default_width, in_chans, sigma,
                                                hp.variant)
        denoiser, init_run_id = models_denoiser.DnCNN(config), ""
    return models_denoiser.DenoisedClassifier(denoiser, classifier), init_run_id


def denoiser_of(model: nn.Module) -> nn.Module:
    """The denoiser of a denoised classifier, also under torch.compile (``_orig_mod``)."""
    inner = getattr(model, "_orig_mod", model)
    inner = getattr(inner, "module", inner)  # DistributedDataParallel
    denoiser = getattr(inner, "denoiser", None)
    if not isinstance(denoiser, nn.Module):
        raise CrtBenchError(f"method 'denoised' trains a denoiser in front of a classifier, got a {type(inner).__name__}")
    return denoiser


def mse_loss(model: nn.Module, noisy: Tensor, clean: Tensor) -> Tensor:
    """Mean over pixels of (D(x + eta) - x)^2: the denoiser alone, the classifier unused."""
    return F.mse_loss(denoiser_of(model)(noisy).float(), clean.float())


def stability_loss(model: nn.Module, x: Tensor, ctx: StepContext) -> Tensor:
    """CE(f(D(x + eta)), argmax f(x)): the denoised noisy input must keep the classifier's clean prediction."""
    if ctx.teacher is None:
        raise CrtBenchError("method 'denoised' needs its classifier: pass --teacher RUN_ID (e.g. a standard run)")
    with torch.no_grad():
        target = ctx.teacher(x).argmax(dim=1)
    return F.cross_entropy(model(gaussian_noise(x, ctx.sigma)).float(), target)


@register_method(
    "denoised",
    hparams=DenoisedHParams,
    recipe=Recipe(epochs=90, batch_size=256, lr=1e-3, milestones=(30, 60), gamma=0.1, weight_decay=0.0,
                  optimizer="adam", source="microsoft/denoised-smoothing train_denoiser.py (cifar_dncnn)"),
    reference="Salman, Sun, Yang, Kapoor, Kolter. Denoised Smoothing: A Provable Defense for Pretrained "
    "Classifiers. NeurIPS 2020",
    needs_teacher=True,
    compose=compose_denoised,
    trains=lambda hp: not hp.reuses_denoiser,
)
def denoised_loss(model: nn.Module, x: Tensor, y: Tensor, ctx: StepContext) -> Tensor:
    hp: DenoisedHParams = ctx.hparams
    if hp.variant == "stability":
        return stability_loss(model, x, ctx)
    return mse_loss(model, gaussian_noise(x, ctx.sigma), x)
