"""Training runs end to end on CPU: bookkeeping, files, determinism, resume, failures, CRT teachers."""
from __future__ import annotations

import dataclasses
import json
import math
import random
from pathlib import Path

import pytest
import torch
from conftest import (
    FAST,
    assert_same_weights,
    fast_config,
    patch_loss,
    state_dict_of,
    tree_snapshot,
)

from crt_bench.analysis.training_check import last_accuracies
from crt_bench.config.run import RunConfig
from crt_bench.core.bits import unpack_bits
from crt_bench.core.errors import CrtBenchError
from crt_bench.data.catalog import dataset_info
from crt_bench.methods.registry import get_method
from crt_bench.models.build import build_model
from crt_bench.models.files import CHECKPOINT_FILE, MODEL_FILE, load_model, model_metadata
from crt_bench.store.store import ResultsStore
from crt_bench.train import trainer as train_mod
from crt_bench.train.trainer import resume_run, train_run


def _rows_for(store: ResultsStore, run_id: str, table: str):
    df = store.read(table)
    return df[df["run_id"] == run_id] if not df.empty else df


# -- a finished run: tables, files, provenance ------------------------------------------------------

def test_finished_run_rows_and_files(gaussian_run) -> None:
    store, run_id = gaussian_run
    rows = _rows_for(store, run_id, "runs").sort_values("updated")
    assert rows["status"].tolist() == ["running", "finished"]
    final = store.get_run(run_id)
    assert final["status"] == "finished" and final["error"] == ""
    assert final["epochs_done"] == 2 and final["epochs"] == 2
    assert final["seed"] == 0
    assert final["method"] == "gaussian" and final["arch"] == "tiny_cnn" and final["dataset"] == "synthetic"
    assert final["torch_version"] == torch.__version__
    assert final["git_commit"] and isinstance(final["git_commit"], str)
    assert final["device"].startswith("cpu")
    assert final["train_seconds"] > 0 and final["end_time"]
    cfg = RunConfig.from_json(final["config"])
    assert cfg == fast_config()

    epochs = _rows_for(store, run_id, "epochs").sort_values("epoch")
    assert epochs["epoch"].tolist() == [1, 2]
    assert all(math.isfinite(v) for v in epochs["loss"])
    assert (epochs["samples_per_s"] > 0).all()
    assert (epochs["optimizer_steps"] == 4).all()  # 256 images / batch 64
    assert epochs["noisy_test_acc"].between(0, 1).all()
    # each evaluation keeps its per-image correctness on the first 64 test images (test_limit), its mean the accuracy
    assert (epochs["noisy_test_images"] == 64).all()
    for row in epochs.itertuples():
        assert unpack_bits(row.noisy_test_correct, 64).mean() == pytest.approx(row.noisy_test_acc)
    (last,) = last_accuracies(store.runs(), epochs).values()
    assert last.correct is not None and len(last.correct) == last.images == 64

    run_dir = store.run_dir(run_id)
    assert RunConfig.from_json((run_dir / "config.json").read_text()) == cfg
    model = torch.load(run_dir / MODEL_FILE, map_location="cpu", weights_only=True)
    assert model["arch"] == "tiny_cnn" and model["run_id"] == run_id and model["num_classes"] == 10
    ckpt = torch.load(run_dir / CHECKPOINT_FILE, map_location="cpu", weights_only=True)
    assert ckpt["epoch"] == 2
    assert_same_weights(ckpt["state_dict"], model["state_dict"])
    net = build_model("tiny_cnn", num_classes=10, in_chans=3, mean=model["mean"], std=model["std"])
    net.load_state_dict(model["state_dict"])


def test_same_seed_gives_identical_weights(gaussian_run, tmp_path: Path) -> None:
    store, run_id = gaussian_run
    other = ResultsStore(tmp_path)
    again = train_run(fast_config(), other, progress=False)
    assert again != run_id
    assert_same_weights(state_dict_of(store.run_dir(run_id) / MODEL_FILE),
                        state_dict_of(other.run_dir(again) / MODEL_FILE))
    # ... and a different seed does not.
    third = train_run(fast_config(seed=1, epochs=1), other, progress=False)
    a = state_dict_of(store.run_dir(run_id) / MODEL_FILE)
    b = state_dict_of(other.run_dir(third) / MODEL_FILE)
    assert any(not torch.equal(a[k], b[k]) for k in a)


# -- interrupt, resume, failure ---------------------------------------------------------------------

def test_interrupted_run_resumes_to_the_uninterrupted_weights(gaussian_run, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    store = ResultsStore(tmp_path)
    with monkeypatch.context() as m:
        patch_loss(m, fail_at_epoch=1, exc=KeyboardInterrupt())
        trainer = train_mod.Trainer(fast_config(), store, progress=False)
        with pytest.raises(KeyboardInterrupt):
            trainer.run()
    run_id = trainer.run_id
    state = store.get_run(run_id)
    assert state["status"] == "interrupted" and state["epochs_done"] == 1
    assert "KeyboardInterrupt" in state["error"]
    ckpt = torch.load(store.run_dir(run_id) / CHECKPOINT_FILE, map_location="cpu", weights_only=True)
    assert ckpt["epoch"] == 1
    assert not (store.run_dir(run_id) / MODEL_FILE).exists()
    assert _rows_for(store, run_id, "epochs")["epoch"].tolist() == [1]

    assert resume_run(run_id, store, progress=False) == run_id
    final = store.get_run(run_id)
    assert final["status"] == "finished" and final["epochs_done"] == 2
    assert sorted(_rows_for(store, run_id, "epochs")["epoch"]) == [1, 2]
    statuses = _rows_for(store, run_id, "runs").sort_values("updated")["status"].tolist()
    assert statuses == ["running", "interrupted", "running", "finished"]

    ref_store, ref_id = gaussian_run  # the same config, trained without interruption
    assert_same_weights(state_dict_of(ref_store.run_dir(ref_id) / MODEL_FILE),
                        state_dict_of(store.run_dir(run_id) / MODEL_FILE))
    # The optimizer state continued too (momentum buffers), not only the weights.
    ref_ckpt = torch.load(ref_store.run_dir(ref_id) / CHECKPOINT_FILE, map_location="cpu", weights_only=True)
    new_ckpt = torch.load(store.run_dir(run_id) / CHECKPOINT_FILE, map_location="cpu", weights_only=True)
    for key, st in ref_ckpt["optimizer"]["state"].items():
        assert torch.equal(st["momentum_buffer"], new_ckpt["optimizer"]["state"][key]["momentum_buffer"])


def test_failing_run_records_the_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = ResultsStore(tmp_path)
    patch_loss(monkeypatch, fail_at_epoch=0, exc=RuntimeError("loss exploded on purpose"))
    trainer = train_mod.Trainer(fast_config(epochs=1), store, progress=False)
    with pytest.raises(RuntimeError, match="on purpose"):
        trainer.run()
    state = store.get_run(trainer.run_id)
    assert state["status"] == "failed"
    assert "RuntimeError" in state["error"] and "loss exploded on purpose" in state["error"]
    assert state["end_time"]
    assert _rows_for(store, trainer.run_id, "epochs").empty
    # No checkpoint was ever written: --resume starts the run over (rather than leaving it failed forever).
    monkeypatch.undo()
    assert resume_run(trainer.run_id, store, progress=False) == trainer.run_id
    assert store.get_run(trainer.run_id)["status"] == "finished"
    assert _rows_for(store, trainer.run_id, "epochs")["epoch"].tolist() == [1]


def test_resuming_a_finished_run_is_an_error(store_copy) -> None:
    store, run_id = store_copy
    before = tree_snapshot(store.root)
    with pytest.raises(CrtBenchError, match="already finished"):
        resume_run(run_id, store, progress=False)
    with pytest.raises(CrtBenchError, match="no run 'nope'"):
        resume_run("nope", store, progress=False)
    assert tree_snapshot(store.root) == before


def test_diverging_loss_fails_the_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = ResultsStore(tmp_path)

    def patched_get_method(name: str):
        spec = get_method(name)
        return spec.with_loss(lambda model, x, y, ctx: spec.loss(model, x, y, ctx) * float("nan"))

    monkeypatch.setattr(train_mod, "get_method", patched_get_method)
    trainer = train_mod.Trainer(fast_config(epochs=1), store, progress=False)
    with pytest.raises(CrtBenchError, match="diverged"):
        trainer.run()
    assert store.get_run(trainer.run_id)["status"] == "failed"


# -- CRT: teachers -----------------------------------------------------------------------------------

def test_crt_student_with_teacher_run_id(store_copy) -> None:
    store, teacher_id = store_copy
    cfg = fast_config("crt", teacher=teacher_id, epochs=1, train_limit=128)
    run_id = train_run(cfg, store, progress=False)
    row = store.get_run(run_id)
    assert row["status"] == "finished" and row["method"] == "crt"
    assert row["teacher"] == teacher_id
    assert row["teacher_arch"] == "tiny_cnn" and row["teacher_run_id"] == teacher_id
    loss = _rows_for(store, run_id, "epochs")["loss"].iloc[0]
    assert math.isfinite(loss) and loss > 0
    # The teacher was not modified by distillation.
    assert store.get_run(teacher_id)["status"] == "finished"


def test_crt_teacher_given_as_checkpoint_path(store_copy, tmp_path: Path) -> None:
    store, teacher_id = store_copy
    elsewhere = tmp_path / "models" / "teacher.pt"
    elsewhere.parent.mkdir()
    elsewhere.write_bytes((store.run_dir(teacher_id) / MODEL_FILE).read_bytes())
    fresh = ResultsStore(tmp_path / "fresh")  # the teacher's run is not in this store
    run_id = train_run(fast_config("crt", teacher=str(elsewhere), epochs=1, train_limit=128), fresh, progress=False)
    row = fresh.get_run(run_id)
    assert row["status"] == "finished"
    assert row["teacher_arch"] == "tiny_cnn" and row["teacher_run_id"] == teacher_id
    # A training checkpoint (checkpoint.pt, with optimizer state) is a valid teacher file too.
    ckpt = store.run_dir(teacher_id) / CHECKPOINT_FILE
    run2 = train_run(fast_config("crt", teacher=str(ckpt), epochs=1, train_limit=64), fresh, progress=False)
    assert fresh.get_run(run2)["teacher_arch"] == "tiny_cnn"


def _write_teacher(path: Path, *, dataset: str, num_classes: int | None = None) -> Path:
    info = dataset_info(dataset)
    if num_classes is not None:
        info = dataclasses.replace(info, num_classes=num_classes)
    model = build_model("tiny_cnn", num_classes=info.num_classes, in_chans=info.in_chans, mean=info.mean, std=info.std)
    obj = model_metadata("tiny_cnn", info, sigma=0.25, method="gaussian", run_id="handmade")
    obj["state_dict"] = model.state_dict()
    torch.save(obj, path)
    return path


@pytest.mark.parametrize("kind, expected", [
    ("fashion", ["1x28x28", "3x32x32", "fashion-mnist"]),
    ("classes", ["5 classes", "10"]),
])
def test_mismatched_teacher_is_one_clear_error(store_copy, tmp_path: Path, kind: str,
                                               expected: list[str]) -> None:
    store, _ = store_copy
    if kind == "fashion":
        teacher = _write_teacher(tmp_path / "fmnist_teacher.pt", dataset="fashion-mnist")
    else:
        teacher = _write_teacher(tmp_path / "five_class_teacher.pt", dataset="synthetic", num_classes=5)
    before = tree_snapshot(store.root)
    with pytest.raises(CrtBenchError) as info:
        train_run(fast_config("crt", teacher=str(teacher), epochs=1, train_limit=64), store, progress=False)
    message = str(info.value)
    assert "\n" not in message
    for word in expected:
        assert word in message
    assert tree_snapshot(store.root) == before, "a rejected teacher must not touch the results store"


@pytest.mark.parametrize("kind", ["random", "truncated", "empty", "not_a_dict", "foreign_dict"])
def test_corrupt_teacher_checkpoint_is_a_clear_error(store_copy, tmp_path: Path, kind: str) -> None:
    store, teacher_id = store_copy
    bad = tmp_path / f"teacher_{kind}.pt"
    good = (store.run_dir(teacher_id) / MODEL_FILE).read_bytes()
    if kind == "random":
        bad.write_bytes(random.Random(7).randbytes(4096))
    elif kind == "truncated":
        bad.write_bytes(good[: len(good) // 2])
    elif kind == "empty":
        bad.write_bytes(b"")
    elif kind == "not_a_dict":
        torch.save(torch.zeros(3), bad)
    else:
        torch.save({"model": torch.zeros(3)}, bad)
    before = tree_snapshot(store.root)
    with pytest.raises(CrtBenchError) as info:
        train_run(fast_config("crt", teacher=str(bad), epochs=1, train_limit=64), store, progress=False)
    assert str(bad) in str(info.value)
    assert tree_snapshot(store.root) == before


def test_random_bytes_are_always_a_clean_error(tmp_path: Path) -> None:
    """Whatever garbage a model file holds, loading it is a CrtBenchError naming it, never a crash.

    (torch's weights-only unpickler fails on random input with IndexError, KeyError, ... as well as
    UnpicklingError; a few hundred seeded blobs hit those paths.)"""
    for i in range(300):
        rng = random.Random(i)
        prefix = (b"", b"\x80\x02", b"PK\x03\x04")[i % 3]  # plain, pickle-looking, zip-looking
        path = tmp_path / f"blob{i}.pt"
        path.write_bytes(prefix + rng.randbytes(rng.randint(0, 2048)))
        with pytest.raises(CrtBenchError) as info:
            load_model(str(path), tmp_path)
        assert str(path) in str(info.value)


def test_missing_teacher_is_a_clear_error(store_copy) -> None:
    store, _ = store_copy
    before = tree_snapshot(store.root)
    with pytest.raises(CrtBenchError, match="'no-such-run' is neither a run id"):
        train_run(fast_config("crt", teacher="no-such-run", epochs=1), store, progress=False)
    with pytest.raises(CrtBenchError, match="needs a certifiably robust teacher"):
        fast_config("crt")
    assert tree_snapshot(store.root) == before


def test_config_json_round_trip_matches_fast_profile() -> None:
    cfg = fast_config(epochs=3)
    again = RunConfig.from_json(cfg.to_json())
    assert again == cfg
    assert json.loads(cfg.to_json())["train_limit"] == FAST["train_limit"]
