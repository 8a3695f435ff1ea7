"""Recursive CRT: generation k+1 is distilled from generation k's student, link after link.

The paper claims CRT "demonstrates recursive effectiveness, allowing continuous reuse for model
redeployments"; a chain measures it. From a root teacher (a grid job, a run id, or a released
checkpoint) each architecture in turn (release order by default: the registry's generation year) is
trained with CRT from the previous link and certified on the profile's images; the root is certified on
the same images so every link can be compared with it.

Links are :class:`crt_bench.launch.Job` objects whose ``teacher`` is the previous link's job, so their
keys nest (``crt/B/...<-[crt/A/...<-[root]]``) and :func:`crt_bench.launch.run_grid` skips a finished
link: a killed chain resumes without retraining. A link that equals a grid job (the same CRT from the
same teacher, e.g. ``make reproduce``'s CRT student) *is* that job and is reused.

Per link (:func:`chain_table`, all from per-image rows): the link's training hours and the chain's
cumulative hours (root included where known), ACR with its 95% bootstrap interval, certified accuracy at
:data:`crt_bench.report.paper_tables.TABLE_RADII`, and agreement with the root teacher on the images
both certified: the fraction whose smoothed predictions agree (an abstention is a prediction, -1) and the
mean |radius difference|. Where the direct CRT from the root to the same architecture has been
certified, its ACR is the link's reference.

Each chain run leaves ``RESULTS/chains/<name>.json`` (root, links' job keys) so ``crt-bench plot`` can
find the chain again.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from crt_bench.errors import CrtBenchError
from crt_bench.launch import Job, finished_run
from crt_bench.results import ResultsStore, atomic_write_bytes

CHAINS_DIR = "chains"
ORDERS = ("release", "given")


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
        from crt_bench.archs import get_arch

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
                      data_dir=self.data_dir, epochs=self.epochs, train_limit=self.train_limit, device=self.device)
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
    from crt_bench.launch import run_grid

    results = Path(results)
    save_chain(spec, results)
    if not isinstance(spec.root, Job):
        certify_root(spec, results)
    return run_grid(grid_jobs(spec), results, executor, poll_s=poll_s)


def certify_root(spec: ChainSpec, results: Path) -> str:
    """Certify a run-id or model-file root with the profile's settings (resumable: a no-op when done)."""
    from crt_bench.certify_run import certify_run
    from crt_bench.config import get_profile

    cert_id, _ = certify_run(str(spec.root), ResultsStore(results), get_profile(spec.profile).certify,
                             data_dir=spec.data_dir, seed=spec.seed, device=spec.device, progress=False)
    return cert_id


def save_chain(spec: ChainSpec, results: str | Path) -> Path:
    return atomic_write_bytes(Path(results) / CHAINS_DIR / f"{spec.chain_name}.json",
                              json.dumps(spec.to_dict(), indent=1).encode())


def saved_chains(results: str | Path) -> list[dict[str, Any]]:
    folder = Path(results) / CHAINS_DIR
    return [json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))] if folder.is_dir() else []


# -- the per-link table -------------------------------------------------------------------------------
@dataclass
class _Certified:
    run_id: str
    rows: pd.DataFrame | None
    hours: float
    arch: str = ""
    method: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def _lookup(store: ResultsStore, meta: pd.DataFrame, rows: dict[str, pd.DataFrame], run_id: str | None) -> _Certified:
    """A run's newest certification and its own training hours (NaN when unknown)."""
    if run_id is None:
        return _Certified("", None, float("nan"))
    match = meta[meta["run_id"] == run_id] if not meta.empty else meta
    if match.empty:
        return _Certified(run_id, None, _run_hours(store, run_id))
    m = match.iloc[-1]
    return _Certified(run_id, rows[m["cert_id"]], _run_hours(store, run_id), str(m.get("arch", "")),
                      str(m.get("method", "")))


def _run_hours(store: ResultsStore, run_id: str) -> float:
    runs = store.runs()
    match = runs[runs["run_id"] == run_id] if not runs.empty else runs
    if match.empty or "train_seconds" not in match:
        return float("nan")
    return float(match["train_seconds"].iloc[0]) / 3600


def _root_run_id(store: ResultsStore, chain: dict[str, Any]) -> str | None:
    if chain["root_is_job"]:
        return finished_run(store, chain["root"])
    root = str(chain["root"])
    runs = store.runs()
    if not runs.empty and (runs["run_id"] == root).any():
        return root
    from crt_bench.checkpoint import load_model

    try:  # a model file: certify_run names its certification after the model's recorded run id, else the path
        return load_model(root, store.root).meta.get("run_id") or root
    except (CrtBenchError, OSError):
        return root


def agreement(root: pd.DataFrame, link: pd.DataFrame) -> tuple[float, float, int]:
    """(fraction of shared images with the same smoothed prediction, mean |radius difference|, images shared)."""
    both = root[["idx", "predict", "radius"]].merge(link[["idx", "predict", "radius"]], on="idx",
                                                   suffixes=("_root", "_link"))
    if both.empty:
        return float("nan"), float("nan"), 0
    same = float((both["predict_root"] == both["predict_link"]).mean())
    diff = float(np.abs(both["radius_root"] - both["radius_link"]).mean())
    return same, diff, len(both)


CHAIN_COLUMNS = ["chain", "generation", "arch", "teacher", "run_id", "status", "hours", "cumulative_hours", "images",
                 "N", "ACR", "ACR_low", "ACR_high", "acc@0.00", "acc@0.25", "acc@0.50", "acc@0.75", "acc@1.00",
                 "agreement", "mean_abs_radius_diff", "shared_images", "direct_ACR", "direct_ACR_low",
                 "direct_ACR_high", "direct_run_id"]


def chain_table(store: ResultsStore, chain: dict[str, Any]) -> pd.DataFrame:
    """Generation 0 (the root) then one row per link; a link not yet finished or certified has NaNs."""
    from crt_bench.metrics import certified_accuracy
    from crt_bench.report.paper_tables import TABLE_RADII, certifications
    from crt_bench.uncertainty import acr_interval

    meta, rows = certifications(store)
    root = _lookup(store, meta, rows, _root_run_id(store, chain))
    records = []
    cumulative = root.hours if not math.isnan(root.hours) else 0.0
    previous = "root"
    for gen, key in enumerate([None, *chain["links"]]):
        if key is None:
            cert, status, hours, arch = root, "root", root.hours, root.arch
        else:
            run_id = finished_run(store, key)
            cert = _lookup(store, meta, rows, run_id)
            status = "finished" if run_id else "not finished"
            hours = cert.hours
            arch = key.split("/")[1]
            if not math.isnan(hours):
                cumulative += hours
        record: dict[str, Any] = {"chain": chain["name"], "generation": gen, "arch": arch or "root",
                                  "teacher": "" if key is None else previous, "run_id": cert.run_id,
                                  "status": status, "hours": hours,
                                  "cumulative_hours": cumulative if key is None or not math.isnan(hours) else float("nan")}
        if cert.rows is not None:
            ci = acr_interval(cert.rows)
            acc = certified_accuracy(cert.rows, TABLE_RADII)
            same, diff, shared = agreement(root.rows, cert.rows) if root.rows is not None else (float("nan"),) * 2 + (0,)
            record.update({"images": len(cert.rows), "N": int(cert.rows["n"].iloc[0]) if "n" in cert.rows else -1,
                           "ACR": ci.estimate, "ACR_low": ci.low, "ACR_high": ci.high,
                           **{f"acc@{r:.2f}": float(v) for r, v in acc.items()},
                           "agreement": same, "mean_abs_radius_diff": diff, "shared_images": shared})
        if key is not None:
            direct_key = chain["direct"].get(arch)
            direct = _lookup(store, meta, rows, finished_run(store, direct_key)) if direct_key else None
            if direct is not None and direct.rows is not None:
                dci = acr_interval(direct.rows)
                record.update({"direct_ACR": dci.estimate, "direct_ACR_low": dci.low, "direct_ACR_high": dci.high,
                               "direct_run_id": direct.run_id})
        records.append(record)
        previous = arch or "root"
    return pd.DataFrame(records).reindex(columns=CHAIN_COLUMNS)


__all__ = ["CHAINS_DIR", "CHAIN_COLUMNS", "ChainSpec", "agreement", "chain_table", "grid_jobs", "run_chain",
           "save_chain", "saved_chains"]
