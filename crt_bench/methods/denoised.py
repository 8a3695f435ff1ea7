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

from crt_bench.core.checks import check_choice
from crt_bench.core.errors import CrtBenchError
from crt_bench.methods.registry import Recipe, register_method

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


register_method(
    "denoised",
    loss="crt_bench.methods.losses.denoised:denoised_loss",
    hparams=DenoisedHParams,
    recipe=Recipe(epochs=90, batch_size=256, lr=1e-3, milestones=(30, 60), gamma=0.1, weight_decay=0.0,
                  optimizer="adam", source="microsoft/denoised-smoothing train_denoiser.py (cifar_dncnn)"),
    reference="Salman, Sun, Yang, Kapoor, Kolter. Denoised Smoothing: A Provable Defense for Pretrained "
    "Classifiers. NeurIPS 2020",
    needs_teacher=True,
    compose="crt_bench.models.compose:compose_denoised",
    trains=lambda hp: not hp.reuses_denoiser,
)
