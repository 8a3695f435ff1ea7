"""Assembling a denoised run's model: a denoiser (fresh, or a finished run's) in front of the frozen classifier.

``compose_denoised`` is the ``compose`` of method ``denoised`` (:mod:`crt_bench.methods.denoised`); the
training loop calls it through the method registry with the run's loaded teacher (the classifier).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from crt_bench.core.errors import CrtBenchError
from crt_bench.models.denoiser import (DenoisedClassifier, DenoiserConfig, DnCNN, check_denoiser_sigma,
                                       denoiser_size)
from crt_bench.models.files import load_model


def load_denoiser(source: str, results_root: str | Path, sigma: float, dataset: str) -> tuple[DnCNN, str]:
    """The denoiser of the finished denoised run (or model file) ``source``, checked against the run; its run id."""
    loaded = load_model(source, results_root)
    if not isinstance(loaded.model, DenoisedClassifier):
        raise CrtBenchError(f"--set denoiser={source}: {loaded.path} holds no denoiser (method "
                            f"{loaded.meta.get('method')!r}); name a finished run of --method denoised")
    denoiser = loaded.model.denoiser
    check_denoiser_sigma(denoiser.config, sigma, f"--set denoiser={source}")
    if loaded.meta.get("dataset") != dataset:
        raise CrtBenchError(f"--set denoiser={source}: its denoiser was trained on {loaded.meta.get('dataset')}, "
                            f"this run uses {dataset}")
    return denoiser, str(loaded.meta.get("run_id") or source)


def compose_denoised(classifier: nn.Module, hp: Any, *, sigma: float, profile: str, dataset: str,
                     results_root: str | Path) -> tuple[nn.Module, str]:
    """``DenoisedClassifier(denoiser, classifier)`` for a run of ``denoised`` with hyper-parameters ``hp``.

    A given ``hp.denoiser`` must be a denoiser of the run's sigma and dataset; an mse run reuses only an
    mse denoiser. The denoiser's recorded objective becomes the variant this run trains.
    """
    in_chans = next(m for m in classifier.modules() if isinstance(m, nn.Conv2d)).in_channels
    if hp.denoiser:
        given, init_run_id = load_denoiser(hp.denoiser, results_root, sigma, dataset)
        if hp.variant == "mse" and given.config.objective != "mse":
            raise CrtBenchError(f"--set denoiser={hp.denoiser}: an mse run reuses an mse denoiser, this one was "
                                f"trained with {given.config.objective!r}")
        config = DenoiserConfig(given.config.depth, given.config.width, given.config.in_chans, sigma, hp.variant)
        denoiser = DnCNN(config)
        denoiser.load_state_dict(given.state_dict())
    else:
        default_depth, default_width = denoiser_size(profile)
        config = DenoiserConfig(hp.depth or default_depth, hp.width or default_width, in_chans, sigma, hp.variant)
        denoiser, init_run_id = DnCNN(config), ""
    return DenoisedClassifier(denoiser, classifier), init_run_id
