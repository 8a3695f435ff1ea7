"""Recursive CRT: generation k+1 is distilled from generation k's student, link after link.

The paper claims CRT "demonstrates recursive effectiveness, allowing continuous reuse for model
redeployments"; a chain measures it. From a root teacher (a grid job, a run id, or a released
checkpoint) each architecture in turn (release order by default: the registry's generation year) is
trained with CRT from the previous link and certified on the profile's images; the root is certified on
the same images so every link can be compared with it.

Links are :class:`crt_bench.grid.jobs.Job` objects whose ``teacher`` is the previous link's job, so their
keys nest (``crt/B/...<-[crt/A/...<-[root]]``) and :func:`crt_bench.grid.runner.run_grid` skips a finished
link: a killed chain resumes without retraining. A link that equals a grid job (the same CRT from the
same teacher, e.g. ``make reproduce``'s CRT student) *is* that job and is reused.

Per link (:func:`chain_table`, all from per-image rows): the link's training hours and the chain's
cumulative hours (root included where known), ACR with its 95% bootstrap interval, certified accuracy at
:data:`crt_bench.core.constants.TABLE_RADII`, and agreement with the root teacher on the images
both certified: the fraction whose smoothed predictions agree (an abstention is a prediction, -1) and the
mean |radius difference|. Where the direct CRT from the root to the same architecture has been
certified, its ACR is the link's reference.

Each chain run leaves ``RESULTS/chains/<name>.json`` (root, links' job keys) so ``crt-bench plot`` can
find the chain again.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pandas as pd

from crt_bench.certify.resumable import certify_run
from crt_bench.config.choices import ChainOrder, values
from crt_bench.config.profiles import get_profile
from crt_bench.core.errors import CrtBenchError
from crt_bench.grid.jobs import Job
from crt_bench.grid.runner import run_grid
from crt_bench.models.registry import get_arch
from crt_bench.store.chains import save_chain
from crt_bench.store.store import ResultsStore

ORDERS = values(ChainOrder)


@dataclass(frozen=True)
class ChainSpec:
    """A chain: a root teacher and the architectures of its generations."""

    root: Job | str  # a grid job (trained and certified first if needed), or a run id / model file
    archs: tuple[str, ...]
    profile: str = "smoke"
    sigma: float = 0.25
    seed: int = 0
    order: str = "release"
    dataset: str | None = None
    data_dir: str | None = None
    epochs: int | None = None
    train_limit: int | None = None
    name: str = ""
    device: str = "auto"  # where the links train and certify (not part of their keys)
    transfer: bool = False  # each link also certified by transfer from the previous link's certification

    @property
    def chain_name(self) -> str:
        """``chain-<root arch>-<archs>-<digest of the root and the links' keys>``: two roots never share a file."""
        if self.name:
            return self.name
        import hashlib

        root = self.root.key if isinstance(self.root, Job) else str(self.root)
        stem = Path(root).name if not isinstance(self.root, Job) else ""
        root_arch = self.root.arch if isinstance(self.root, Job) else (stem.split("-")[1] if stem.count("-") else "root")
        digest = hashlib.blake2b("|".join([root, *(j.key for j in self.links())]).encode(), digest_size=3).hexdigest()
        return "-".join(["chain", root_arch, *self.ordered_archs(), digest])

    def ordered_archs(self) -> list[str]:
        """Canonical names; in release order (generation year, stable) unless ``order == "given"``."""

        if self.order not in ORDERS:
            raise CrtBenchError(f"unknown chain order {self.order!r}; valid: {', '.join(ORDERS)}")
        if not self.archs:
            raise CrtBenchError("a chain needs at least one --arch")
        specs = [get_arch(a) for a in self.archs]
        if self.order == "release":
            specs = sorted(specs, key=lambda s: s.generation)
        return [s.name for s in specs]

    def links(self) -> list[Job]:
        """One CRT job per generation, each the teacher of the next."""
        common = dict(sigma=self.sigma, seed=self.seed, profile=self.profile, dataset=self.dataset,
                      data_dir=self.data_dir, epochs=self.epochs, train_limit=self.train_limit, device=self.device,
                      transfer=self.transfer)
        jobs: list[Job] = []
        for arch in self.ordered_archs():
            if jobs:
                jobs.append(Job("crt", arch, teacher=jobs[-1], **common))
            elif isinstance(self.root, Job):
                jobs.append(Job("crt", arch, teacher=self.root, **common))
            else:
                jobs.append(Job("crt", arch, teacher_ref=str(self.root), **common))
        return jobs

    def direct(self, arch: str) -> Job:
        """The reference: CRT from the root teacher straight to ``arch``."""
        first = self.links()[0]
        return replace(first, arch=arch)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.chain_name, "root": self.root.key if isinstance(self.root, Job) else str(self.root),
                "root_is_job": isinstance(self.root, Job), "links": [j.key for j in self.links()],
                "direct": {j.arch: self.direct(j.arch).key for j in self.links()}, "profile": self.profile}


def grid_jobs(spec: ChainSpec) -> list[Job]:
    """What run_grid gets: the root job (when the root is one), then the links in order."""
    return ([spec.root] if isinstance(spec.root, Job) else []) + spec.links()


def run_chain(spec: ChainSpec, results: str | Path, executor: Any, *, poll_s: float = 1.0) -> pd.DataFrame:
    """Train and certify every link (skipping finished ones), certify the root on the same images; returns
    the grid status. The chain's definition is saved first, so ``crt-bench plot`` draws a partial chain too.
    """

    results = Path(results)
    save_chain(spec.to_dict(), results)
    if not isinstance(spec.root, Job):
        certify_root(spec, results)
    return run_grid(grid_jobs(spec), results, executor, poll_s=poll_s)


def certify_root(spec: ChainSpec, results: Path) -> str:
    """Certify a run-id or model-file root with the profile's settings (resumable: a no-op when done)."""

    cert_id, _ = certify_run(str(spec.root), ResultsStore(results), get_profile(spec.profile).certify,
                             data_dir=spec.data_dir, seed=spec.seed, device=spec.device, progress=False)
    return cert_id
