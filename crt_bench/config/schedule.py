"""Recipe scaling arithmetic: epochs and learning-rate milestones scaled to a profile."""
from __future__ import annotations

import math
from dataclasses import dataclass

from crt_bench.core.errors import CrtBenchError


def scaled_epochs(recipe_epochs: int, scale: float) -> int:
    """A recipe's epochs times a profile's factor, rounded half up, at least 1."""
    if not scale > 0:
        raise CrtBenchError(f"epoch scale must be > 0, got {scale}")
    return max(1, math.floor(recipe_epochs * scale + 0.5))


@dataclass(frozen=True)
class ScaledRecipe:
    """One method's schedule under a profile's factor: what the banner prints and the run records."""

    method: str
    scale: float
    recipe_epochs: int
    recipe_milestones: tuple[int, ...]
    epochs: int
    milestones: tuple[int, ...]

    def describe(self) -> str:
        decays = f"lr decays at {', '.join(map(str, self.milestones))}" if self.milestones else "no lr decay"
        return f"{self.method} {self.epochs} ({decays})"


def scaled_milestones(milestones: tuple[int, ...], recipe_epochs: int, epochs: int) -> tuple[int, ...]:
    """Keep the schedule's shape when a profile shortens training (e.g. 100/200 -> 2/4)."""
    if epochs == recipe_epochs:
        return tuple(milestones)
    scaled: list[int] = []
    for m in milestones:
        epoch = max(round(m * epochs / recipe_epochs), scaled[-1] + 1 if scaled else 1)
        if epoch < epochs:  # a decay must leave at least one epoch to act on; too short runs drop it
            scaled.append(epoch)
    return tuple(scaled)


def lr_at_epoch(lr: float, milestones: tuple[int, ...], gamma: float, epoch: int) -> float:
    """Step schedule: lr * gamma^(number of milestones <= epoch), epochs counted from 0."""
    return lr * gamma ** sum(1 for m in milestones if epoch >= m)
