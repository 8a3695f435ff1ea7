"""Small models and checks shared by the method tests."""
import math

import torch
from torch import nn

from crt_bench.certify.resumable import certify_run
from crt_bench.config.certify import CertifyConfig
from crt_bench.config.run import RunConfig
from crt_bench.store.store import ResultsStore
from crt_bench.train.trainer import train_run


class Recorder(nn.Module):
    """A linear model on flattened 3x4x4 images that remembers every batch it was fed."""

    def __init__(self, seed: int = 0, classes: int = 5):
        super().__init__()
        torch.manual_seed(seed)
        self.fc = nn.Linear(3 * 4 * 4, classes)
        self.inputs: list[torch.Tensor] = []

    def forward(self, x):
        self.inputs.append(x.detach().clone())
        return self.fc(x.flatten(1))


def train_and_certify_smoke(cfg: RunConfig, root, steps_per_epoch: int):
    """Train ``cfg`` (one epoch), check its bookkeeping, certify 4 test images; returns the certify rows."""
    store = ResultsStore(root)
    run_id = train_run(cfg, store, progress=False)
    epochs = store.read("epochs")
    assert int(epochs["optimizer_steps"].iloc[-1]) == steps_per_epoch
    assert math.isfinite(float(epochs["loss"].iloc[-1]))
    _, rows = certify_run(run_id, store, CertifyConfig(n0=20, n=100, alpha=0.001, batch=100, subset="range:0:4"),
                          device="cpu", progress=False)
    assert len(rows) == 4
    assert ((rows["predict"] == -1) | rows["predict"].between(0, 9)).all()
    assert (rows["radius"] >= 0).all()
    assert_not_all_abstained(rows)
    return rows


def assert_not_all_abstained(rows) -> None:
    """A smoke certification where every image abstained shows nothing about the method: at least one image
    must get a prediction (and so a radius of its own)."""
    answered = rows[rows["predict"] != -1]
    assert len(answered) > 0, f"every one of the {len(rows)} images abstained"


class Killed(BaseException):
    """Stands for the process dying (not an Exception: nothing may catch it on the way)."""


def dies_after(real, images: int):
    """Wrap a certification stream (``iter_certify``: ``(rows, engine settings)`` pairs) so that it 'dies' once
    ``images`` were yielded."""

    def stream(*args, **kwargs):
        seen = 0
        for frame, engine in real(*args, **kwargs):
            if seen >= images:
                raise Killed()
            seen += len(frame)
            yield frame, engine

    return stream
