"""Shared fixtures: small, fast training runs on the synthetic dataset (CPU, ``tiny_cnn``).

The session-scoped ``gaussian_run`` is trained once and reused; tests that write must work on a
copy of it (``store_copy``), never on the shared store itself.
"""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
import torch

from slurm_cluster import slurm_cluster  # noqa: F401 - the session's one SLURM cluster, for every module

from crt_bench.config.run import RunConfig
from crt_bench.methods.registry import get_method
from crt_bench.store.store import ResultsStore
from crt_bench.train import trainer as train_mod
from crt_bench.train.resolve import resolve_run_config
from crt_bench.train.trainer import train_run

REFERENCE_LOGS = Path(__file__).resolve().parent / "data" / "certify_logs"  # shipped copies; provenance in its README

# Small enough for seconds on 2 CPU cores, big enough for 4 optimizer steps per epoch.
FAST = {"profile": "smoke", "epochs": 2, "train_limit": 256, "test_limit": 64, "device": "cpu", "seed": 0}


def fast_config(method: str = "gaussian", arch: str = "tiny_cnn", **overrides: Any) -> RunConfig:
    """A smoke-profile config for ``method``/``arch``; ``overrides`` win over :data:`FAST`."""
    return resolve_run_config(method, arch, **{**FAST, **overrides})


def tree_snapshot(root: Path) -> dict[str, tuple[int, int]]:
    """Every file under ``root`` -> (size, mtime_ns): equal snapshots mean nothing was written."""
    root = Path(root)
    if not root.exists():
        return {}
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(root.rglob("*")) if p.is_file()}


def tables_snapshot(root: Path) -> dict[str, tuple[int, int]]:
    return tree_snapshot(Path(root) / "tables")


def state_dict_of(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)["state_dict"]


def assert_same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for key, value in a.items():
        assert torch.equal(value, b[key]), f"weights differ at {key}"


def patch_loss(monkeypatch: pytest.MonkeyPatch, fail_at_epoch: int, exc: BaseException) -> None:
    """Make every method's loss raise ``exc`` from epoch ``fail_at_epoch`` (0-based) on."""

    def patched_get_method(name: str):
        spec = get_method(name)

        def loss(model, x, y, ctx):
            if ctx.epoch >= fail_at_epoch:
                raise exc
            return spec.loss(model, x, y, ctx)

        return spec.with_loss(loss)

    monkeypatch.setattr(train_mod, "get_method", patched_get_method)


@pytest.fixture(scope="session")
def gaussian_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[ResultsStore, str]:
    """A finished 2-epoch Gaussian ``tiny_cnn`` run (seed 0, :data:`FAST`); read-only for tests."""
    store = ResultsStore(tmp_path_factory.mktemp("shared-results"))
    run_id = train_run(fast_config(), store, progress=False)
    return store, run_id


@pytest.fixture
def store_copy(gaussian_run: tuple[ResultsStore, str], tmp_path: Path) -> tuple[ResultsStore, str]:
    """A private copy of the ``gaussian_run`` store that a test may write to."""
    store, run_id = gaussian_run
    dest = tmp_path / "results"
    shutil.copytree(store.root, dest)
    return ResultsStore(dest), run_id
