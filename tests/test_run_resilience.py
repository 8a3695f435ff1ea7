"""Runs that survive kills, signals, concurrent drivers and hostile inputs.

* a kill before each write of a run (config, run rows, checkpoints, epoch rows, model) followed by
  ``--resume`` leaves every epoch row exactly once and the uninterrupted run's weights;
* SIGTERM to a real ``crt-bench run`` marks it ``interrupted`` and says how to continue; while one
  ``--resume`` runs, a second refuses naming the first; the resumed run ends with the same weights;
* a pickle payload in a CIFAR-10 ``--data-dir`` does not run; ``--sigma inf`` is a one-line error.
"""
from __future__ import annotations

import json
import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import assert_same_weights, fast_config, state_dict_of
from test_cli import assert_user_error, cli, last_line
from test_data import write_cifar

from crt_bench.core import atomic as atomic_mod
from crt_bench.core.errors import CrtBenchError
from crt_bench.models.files import MODEL_FILE
from crt_bench.store.store import ResultsStore
from crt_bench.train.trainer import Trainer, resume_run


class Killed(BaseException):
    """Stands for the process dying: raised by every write from the kill on, caught by nothing."""


def _kill_at(monkeypatch: pytest.MonkeyPatch, position: int | None) -> list[str]:
    """Every atomic write from number ``position`` on fails (None: never); returns the writes that happened."""
    real = atomic_mod.atomic_replace
    done: list[str] = []

    def write(path: Path, writer):
        if position is not None and len(done) >= position:
            raise Killed(f"killed before write {position}")
        real(path, writer)
        if path.name == "_schema.json":
            done.append(f"{path.parent.name} schema")
        elif path.parent.parent.parent.name == "tables":  # tables/<table>/run_id=<id>/<part>
            finished = MODEL_FILE in done and "runs row" in done[done.index(MODEL_FILE):]
            done.append(f"{path.parent.parent.name} {'compaction' if finished else 'row'}")
        else:
            done.append(path.name)
        return path

    monkeypatch.setattr(atomic_mod, "atomic_replace", write)
    return done


def _epochs_of(store: ResultsStore, run_id: str) -> list[int]:
    rows = store.read("epochs", raw=True)
    return sorted(rows[rows["run_id"] == run_id]["epoch"].tolist()) if not rows.empty else []


def _status(store: ResultsStore, run_id: str) -> str:
    match = store.runs(where={"run_id": run_id})
    return "no row" if match.empty else str(match.iloc[0]["status"])


def test_a_kill_before_any_write_then_resume_leaves_no_duplicate_or_orphan(
        gaussian_run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    shared, reference_id = gaussian_run
    reference = state_dict_of(shared.run_dir(reference_id) / MODEL_FILE)
    writes = _kill_at(monkeypatch, None)
    Trainer(fast_config(), ResultsStore(tmp_path / "count"), progress=False).run()
    monkeypatch.undo()
    assert writes == ["config.json", "runs schema", "runs row", "checkpoint.pt", "epochs schema", "epochs row",
                      "checkpoint.pt", "epochs row", "model.pt", "runs row", "runs compaction", "epochs compaction"]
    matrix = []
    for position, write in enumerate(writes):
        store = ResultsStore(tmp_path / f"kill{position}")
        _kill_at(monkeypatch, position)
        trainer = Trainer(fast_config(), store, progress=False)
        with pytest.raises(Killed):
            trainer.run()
        monkeypatch.undo()
        run_id = trainer.run_id
        left = (sorted(p.name for p in store.run_dir(run_id).iterdir()), _epochs_of(store, run_id),
                _status(store, run_id))
        if position == 0:  # killed before its config was written: there is no run, and no row of it
            with pytest.raises(CrtBenchError, match="no run"):
                resume_run(run_id, store, progress=False)
            assert left[1:] == ([], "no row")
            verdict = "nothing to resume, no rows"
        elif write.endswith("compaction"):  # the run had finished: its parts stay as they were, all readable
            assert left[1:] == ([1, 2], "finished")
            with pytest.raises(CrtBenchError, match="already finished"):
                resume_run(run_id, store, progress=False)
            verdict = "finished already; its parts are kept"
        else:
            assert resume_run(run_id, store, progress=False) == run_id
            assert _epochs_of(store, run_id) == [1, 2], f"kill before {write}: epoch rows {_epochs_of(store, run_id)}"
            assert _status(store, run_id) == "finished"
            assert_same_weights(state_dict_of(store.run_dir(run_id) / MODEL_FILE), reference)
            runs = store.read("runs")
            assert (runs[runs["run_id"] == run_id]["status"] == "finished").sum() == 1
            verdict = "resumed: epochs [1, 2] once, finished once, same weights"
        matrix.append(f"kill before {write:<22} left {left[0]}, epoch rows {left[1]}, status {left[2]} -> {verdict}")
    with capsys.disabled():
        print("\n" + "\n".join(matrix))


def _cli_cmd(*args: str | Path) -> list[str]:
    return [sys.executable, "-c", "from crt_bench.cli import main; main()", *map(str, args)]


def _wait_for(predicate, what: str, proc: subprocess.Popen, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        if proc.poll() is not None:
            raise AssertionError(f"process ended (rc {proc.returncode}) before {what}: {proc.stderr.read()}")
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def test_sigterm_interrupts_one_resume_at_a_time_and_weights_match(tmp_path: Path) -> None:
    results = tmp_path / "results"
    store = ResultsStore(results)
    run_args = ["run", "--profile", "smoke", "--arch", "tiny_cnn", "--epochs", "4", "--train-limit", "256",
                "--device", "cpu", "--no-progress", "--results", results]
    env = {**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads())}
    popen = dict(stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)

    first = subprocess.Popen(_cli_cmd(*run_args), **popen)
    _wait_for(lambda: len(store.read("epochs")) >= 1, "the first epoch row", first)
    first.send_signal(signal.SIGTERM)
    _, stderr = first.communicate(timeout=60)
    run_id = store.read("runs")["run_id"].iloc[0]
    assert first.returncode == 128 + signal.SIGTERM, stderr
    assert "Traceback" not in stderr
    assert f"crt-bench run --resume {run_id}" in " ".join(stderr.split())
    assert _status(store, run_id) == "interrupted"
    assert 1 <= len(_epochs_of(store, run_id)) < 4

    lock_file = store.run_dir(run_id) / "run.lock"
    second = subprocess.Popen(_cli_cmd("run", "--resume", run_id, "--no-progress", "--results", results), **popen)

    def holds_lock() -> bool:
        text = lock_file.read_text() if lock_file.is_file() else ""
        return bool(text) and json.loads(text).get("pid") == second.pid

    _wait_for(holds_lock, "the resume to take the run's lock", second)
    second.send_signal(signal.SIGSTOP)  # keep it holding the lock, however fast the machine
    try:
        third = subprocess.run(_cli_cmd("run", "--resume", run_id, "--no-progress", "--results", results),
                               capture_output=True, text=True, env=env, timeout=120)
    finally:
        second.send_signal(signal.SIGCONT)
    assert_user_error(third.returncode, third.stderr, f"run {run_id}", f"pid {second.pid}", "another process")
    out, stderr = second.communicate(timeout=300)
    assert second.returncode == 0, stderr
    assert last_line(out) == run_id
    assert _epochs_of(store, run_id) == [1, 2, 3, 4]
    assert _status(store, run_id) == "finished"

    code, out, stderr = cli(*run_args)  # the same run, uninterrupted
    assert code == 0, stderr
    assert_same_weights(state_dict_of(store.run_dir(run_id) / MODEL_FILE),
                        state_dict_of(store.run_dir(last_line(out)) / MODEL_FILE))


class _Payload:
    """Unpickling this calls ``open(marker, "w")``: code execution, visible as a file."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_pickle_payload_in_cifar_data_dir_does_not_run(tmp_path: Path) -> None:
    proof = tmp_path / "proof"
    pickle.loads(pickle.dumps(_Payload(proof)))  # the payload is real: plain pickle runs it
    assert proof.exists()

    write_cifar(tmp_path / "data")
    marker = tmp_path / "pwned"
    for name in ("data_batch_1", "test_batch", "batches.meta"):
        (tmp_path / "data" / "cifar-10-batches-py" / name).write_bytes(
            pickle.dumps({"data": _Payload(marker), "labels": [0]}, protocol=2))
    code, _, err = cli("run", "--dataset", "cifar10", "--data-dir", tmp_path / "data", "--arch", "tiny_cnn",
                       "--epochs", "1", "--device", "cpu", "--no-progress", "--results", tmp_path / "results")
    assert_user_error(code, err, "refused without running it", "open", only_line=False)
    assert not marker.exists()


@pytest.mark.parametrize("command", [
    ["run", "--arch", "tiny_cnn"],
    ["certify", "some-run"],
    ["proxy"],
    ["time", "--method", "gaussian", "--arch", "tiny_cnn"],
])
@pytest.mark.parametrize("value", ["inf", "nan", "-inf", "0"])
def test_sigma_must_be_finite_and_positive(command: list[str], value: str, tmp_path: Path) -> None:
    code, _, err = cli(*command, "--sigma", value, "--results", tmp_path / "results")
    assert_user_error(code, err, "sigma must be > 0 and finite")
    assert not (tmp_path / "results").exists()
