"""Fixed-seed training runs give the rows they gave when ``tests/golden/train_fixed.json`` was written.

A safety net for reshaping the training loop (issue 31): short CPU runs (smoke profile, synthetic data,
``tiny_cnn``, 128 images, 2 epochs) of Gaussian, CRT (distilled from the Gaussian run), SmoothAdv and
SmoothMix (several minibatches, so several optimizer steps, per loader batch), MACER, Consistency, and
a Gaussian run interrupted after epoch 1 and resumed. Every deterministic column of every epoch row
(epoch, lr, loss, optimizer steps, noisy test accuracy and its per-image bits, ...) and of the run rows
(status sequence, epochs done, engine settings, ...) must match, floats to ``rel=1e-6``; wall times,
ids, hosts and provenance are left out. The column sets must match too (no column appears or vanishes).

The golden was written by the code before the refactoring; regenerate only on purpose
(``PYTHONPATH=. python tests/test_train_fixed.py --regenerate``), never to make a change pass.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))  # conftest's helpers, also when run as a script

from conftest import fast_config, patch_loss  # noqa: E402

from crt_bench.store.store import ResultsStore  # noqa: E402
from crt_bench.train import trainer as train_mod  # noqa: E402
from crt_bench.train.trainer import resume_run, train_run  # noqa: E402

GOLDEN = Path(__file__).resolve().parent / "golden" / "train_fixed.json"
SMALL = {"epochs": 2, "train_limit": 128, "test_limit": 64}

# Columns that differ from run to run of the same code (wall times, ids, hosts, provenance).
EPOCH_SKIP = {"run_id", "seconds", "samples_per_s", "time"}
RUN_SKIP = {"run_id", "job_key", "teacher", "teacher_run_id", "init_run_id", "device", "torch_version", "git_commit",
            "config", "env", "train_seconds", "teacher_train_seconds", "train_device_seconds", "total_train_seconds",
            "init_train_seconds", "warmup_seconds", "start_time", "end_time", "updated", "error"}


def _plain(value: Any) -> Any:
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).hex()
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    return value


def _rows(store: ResultsStore, run_id: str) -> dict[str, Any]:
    epochs = store.read("epochs", where={"run_id": run_id}).sort_values("epoch")
    runs = store.read("runs", where={"run_id": run_id}).sort_values("updated")
    return {
        "epoch_columns": sorted(epochs.columns),
        "run_columns": sorted(runs.columns),
        "epochs": [{k: _plain(v) for k, v in row.items() if k not in EPOCH_SKIP} for row in epochs.to_dict("records")],
        "runs": [{k: _plain(v) for k, v in row.items() if k not in RUN_SKIP} for row in runs.to_dict("records")],
    }


def _interrupted_then_resumed(store: ResultsStore) -> str:
    mp = pytest.MonkeyPatch()
    try:
        patch_loss(mp, fail_at_epoch=1, exc=KeyboardInterrupt())
        trainer = train_mod.Trainer(fast_config(**SMALL), store, progress=False)
        try:
            trainer.run()
        except KeyboardInterrupt:
            pass
        else:
            raise AssertionError("the patched loss should have interrupted epoch 2")
    finally:
        mp.undo()
    return resume_run(trainer.run_id, store, progress=False)


def train_all(root: Path) -> dict[str, dict[str, Any]]:
    store = ResultsStore(root)
    ids = {"gaussian": train_run(fast_config(**SMALL), store, progress=False)}
    ids["crt"] = train_run(fast_config("crt", teacher=ids["gaussian"], **SMALL), store, progress=False)
    ids["smoothadv"] = train_run(fast_config("smoothadv", hparams={"m": "2", "num_steps": "2"}, **SMALL), store,
                                 progress=False)  # 2 minibatches per batch, 2 attack steps: seconds, not minutes
    ids["smoothmix"] = train_run(fast_config("smoothmix", sigma=0.5, **SMALL), store, progress=False)
    ids["macer"] = train_run(fast_config("macer", **SMALL), store, progress=False)
    ids["consistency"] = train_run(fast_config("consistency", **SMALL), store, progress=False)
    ids["resumed"] = _interrupted_then_resumed(store)
    return {name: _rows(store, run_id) for name, run_id in ids.items()}


def assert_same_rows(got: dict[str, Any], expected: dict[str, Any], name: str) -> None:
    assert got["epoch_columns"] == expected["epoch_columns"], f"{name}: epoch columns changed"
    assert got["run_columns"] == expected["run_columns"], f"{name}: run columns changed"
    for table in ("epochs", "runs"):
        assert len(got[table]) == len(expected[table]), f"{name}: {len(got[table])} {table} rows"
        for i, (g, e) in enumerate(zip(got[table], expected[table])):
            assert sorted(g) == sorted(e), f"{name}: {table} row {i} columns"
            for key, value in e.items():
                if isinstance(value, float):
                    assert g[key] == pytest.approx(value, rel=1e-6, nan_ok=True), f"{name}: {table} row {i} {key}"
                else:
                    assert g[key] == value, f"{name}: {table} row {i} {key}"


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    return train_all(tmp_path_factory.mktemp("train-fixed"))


@pytest.fixture(scope="module")
def golden() -> dict[str, dict[str, Any]]:
    return json.loads(GOLDEN.read_text())


NAMES = ["gaussian", "crt", "smoothadv", "smoothmix", "macer", "consistency", "resumed"]


@pytest.mark.parametrize("name", NAMES)
def test_rows_match_the_golden(trained, golden, name: str) -> None:
    assert sorted(trained) == sorted(golden) == sorted(NAMES)
    assert_same_rows(trained[name], golden[name], name)


def test_several_minibatches_per_batch_are_covered(golden) -> None:
    """SmoothAdv and SmoothMix take several optimizer steps per loader batch: the golden must show it."""
    per_batch = {name: golden[name]["epochs"][0]["optimizer_steps"] for name in NAMES}
    assert per_batch["smoothadv"] > per_batch["gaussian"] and per_batch["smoothmix"] > per_batch["gaussian"]


def test_the_resumed_run_matches_the_uninterrupted_one(golden) -> None:
    assert [r["status"] for r in golden["resumed"]["runs"]] == ["running", "interrupted", "running", "finished"]
    assert_same_rows({**golden["resumed"], "runs": golden["gaussian"]["runs"]}, golden["gaussian"], "resumed")


def test_the_comparison_catches_a_changed_run(tmp_path: Path, golden) -> None:
    """Controls that must fail: another seed, or another lr, trains to other losses than the golden's."""
    store = ResultsStore(tmp_path)
    for overrides in ({"seed": 1}, {"lr": 0.05}):
        run_id = train_run(fast_config(**{**SMALL, **overrides}), store, progress=False)
        other = _rows(store, run_id)
        assert [r["loss"] for r in other["epochs"]] != pytest.approx([r["loss"] for r in golden["gaussian"]["epochs"]],
                                                                      rel=1e-6)
        with pytest.raises(AssertionError):
            assert_same_rows(other, golden["gaussian"], f"gaussian {overrides}")


if __name__ == "__main__" and sys.argv[1:] == ["--regenerate"]:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        rows = train_all(Path(tmp))
    GOLDEN.parent.mkdir(parents=True, exist_ok=True)
    GOLDEN.write_text(json.dumps(rows, indent=1, sort_keys=True) + "\n")
    print(f"{len(rows)} runs written to {GOLDEN}")
