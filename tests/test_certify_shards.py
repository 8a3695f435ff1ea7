"""Sharded certification: K shards (in one process, or K processes launched by the CLI) give exactly
the rows of the unsharded certification, under the same cert id, each image once."""
from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest
from test_cli import cli, last_line

from crt_bench.certify import resumable as certify_run_mod
from crt_bench.certify.shards import ShardSpec, shard_from_env
from crt_bench.config.certify import CertifyConfig
from crt_bench.core.errors import CrtBenchError
from crt_bench.parallel.env import env_from
from crt_bench.store.store import ResultsStore

CCFG = CertifyConfig(n0=10, n=118, alpha=0.01, batch=8, subset="range:0:9")
DETERMINISTIC = ["cert_id", "run_id", "idx", "label", "predict", "radius", "correct", "n0", "n", "alpha", "sigma",
                 "subset", "seed", "precision"]
REPO = Path(__file__).resolve().parents[1]


def _copy(gaussian_run, tmp_path: Path, name: str) -> tuple[ResultsStore, str]:
    shared, run_id = gaussian_run
    store = ResultsStore(tmp_path / name)
    shutil.copytree(shared.root, store.root)
    return store, run_id


def _rows(store: ResultsStore, cert_id: str) -> pd.DataFrame:
    rows = store.read("certify", raw=True)
    return rows[rows["cert_id"] == cert_id].sort_values("idx").reset_index(drop=True)


@pytest.fixture(scope="module")
def unsharded(gaussian_run, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, pd.DataFrame]:
    store, run_id = _copy(gaussian_run, tmp_path_factory.mktemp("one"), "results")
    cert_id, _ = certify_run_mod.certify_run(run_id, store, CCFG, device="cpu", progress=False)
    return cert_id, _rows(store, cert_id)


def test_shards_partition_the_subset_and_refuse_bad_indices() -> None:
    indices = list(range(0, 50, 5))
    parts = [ShardSpec(i, 3).select(indices) for i in range(3)]
    assert sorted(sum(parts, [])) == indices and all(parts)
    assert ShardSpec(1, 4).lock_name("certify-ab12.lock") == "certify-ab12.shard1of4.lock"
    with pytest.raises(CrtBenchError, match="0..1"):
        ShardSpec(2, 2)
    assert shard_from_env(env_from({"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1"})) == ShardSpec(1, 2)
    assert shard_from_env(env_from({})) is None


def test_two_shards_in_process_equal_one(gaussian_run, unsharded, tmp_path: Path) -> None:
    cert_id, reference = unsharded
    store, run_id = _copy(gaussian_run, tmp_path, "results")
    for i in (1, 0):  # any order
        got_id, part = certify_run_mod.certify_run(run_id, store, CCFG, device="cpu", progress=False,
                                                   shard=ShardSpec(i, 2))
        assert got_id == cert_id and sorted(part["idx"]) == list(range(i, 9, 2))
    states = store.read("certifications")
    assert set(states["shard"]) == {"0/2", "1/2"}
    # the unsharded pass finds nothing to do and closes the certification
    _, rows = certify_run_mod.certify_run(run_id, store, CCFG, device="cpu", progress=False)
    states = store.read("certifications")
    assert states["status"].iloc[-1] == "finished" and states["shard"].iloc[-1] == ""
    got = _rows(store, cert_id)
    assert len(got) == 9 and got["idx"].is_unique  # each image once
    pd.testing.assert_frame_equal(got[DETERMINISTIC], reference[DETERMINISTIC])
    assert rows["idx"].tolist() == list(range(9))


def test_cli_two_shard_processes_equal_one(gaussian_run, unsharded, tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    cert_id, reference = unsharded
    store, run_id = _copy(gaussian_run, tmp_path, "results")
    # this process is the launcher (as `crt-bench certify ... --shards 2`); the shards are 2 child processes
    monkeypatch.setenv("PYTHONPATH", str(REPO))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    code, out, err = cli("certify", run_id, "--shards", "2", "--n0", "10", "--n", "118", "--alpha", "0.01", "--batch",
                         "8", "--subset", "range:0:9", "--device", "cpu", "--no-progress", "--results", store.root)
    assert code == 0, err
    assert last_line(out) == cert_id
    got = _rows(store, cert_id)
    pd.testing.assert_frame_equal(got[DETERMINISTIC], reference[DETERMINISTIC])
    states = store.read("certifications")
    assert set(states["shard"]) == {"0/2", "1/2", ""} and states["status"].iloc[-1] == "finished"
