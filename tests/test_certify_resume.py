"""Resumable certification: keyed noise, parts written as images finish, kills, locks, readers.

A certification killed mid-way (an injected exception, or a real ``crt-bench certify`` killed with
SIGKILL) and run again must end with exactly the rows of an uninterrupted one, each image once.
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest
import torch
from helpers import Killed, dies_after

from crt_bench.analysis.summary import summary_table
from crt_bench.certify import resumable as certify_run_mod
from crt_bench.certify.driver import certify_dataset
from crt_bench.config.certify import CertifyConfig
from crt_bench.core.errors import CrtBenchError
from crt_bench.store.locks import ProcessLock
from crt_bench.store.store import ResultsStore

# One image per group (batch 8 fills 16 batches with n0 + n = 128 samples): a kill can fall between any two.
CCFG = CertifyConfig(n0=10, n=118, alpha=0.01, batch=8, subset="range:0:12")
DETERMINISTIC = ["cert_id", "run_id", "idx", "label", "predict", "radius", "correct", "n0", "n", "alpha", "sigma",
                 "subset", "seed", "precision"]


def _rows(store: ResultsStore, cert_id: str, raw: bool = False) -> pd.DataFrame:
    rows = store.read("certify", raw=raw)
    return rows[rows["cert_id"] == cert_id].sort_values("idx").reset_index(drop=True)


@pytest.fixture(scope="module")
def uninterrupted(gaussian_run, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, pd.DataFrame]:
    """The reference: CCFG certified in one go, on a private copy of the shared run."""
    shared, run_id = gaussian_run
    store = ResultsStore(tmp_path_factory.mktemp("uninterrupted") / "results")
    shutil.copytree(shared.root, store.root)
    return certify_run_mod.certify_run(run_id, store, CCFG, device="cpu", progress=False)


# -- keyed noise ------------------------------------------------------------------------------------


class Wobbly(torch.nn.Module):
    """Logits that depend on the noise, so that counts (and radii) differ from image to image."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(1)
        self.conv = torch.nn.Conv2d(3, 4, 3)
        self.fc = torch.nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.conv(x).mean(dim=(2, 3)) * 20)


def test_keyed_noise_rows_do_not_depend_on_batching_or_splitting() -> None:
    """Per-image noise from (seed, index): batch size, grouping and how the index list is cut change nothing."""
    torch.manual_seed(0)
    x, y = torch.rand(9, 3, 8, 8), torch.randint(0, 3, (9,))
    kw = dict(sigma=0.5, num_classes=3, n0=37, n=700, alpha=0.01, progress=False)
    model = Wobbly().eval()
    whole = certify_dataset(model, x, y, batch_size=64, indices=list(range(9)), seed=3, **kw)
    assert whole["radius"].nunique() > 3, "the check needs images whose results differ"
    other_batch = certify_dataset(model, x, y, batch_size=500, indices=list(range(9)), seed=3, **kw)
    split = pd.concat([certify_dataset(model, x, y, batch_size=29, indices=[5, 6, 7, 8], seed=3, **kw),
                       certify_dataset(model, x, y, batch_size=17, indices=[0, 1, 2, 3, 4], seed=3, **kw)])
    split = split.sort_values("idx").reset_index(drop=True)
    columns = ["idx", "predict", "radius"]
    pd.testing.assert_frame_equal(whole[columns], other_batch[columns])
    pd.testing.assert_frame_equal(whole[columns], split[columns])
    reseeded = certify_dataset(model, x, y, batch_size=64, indices=list(range(9)), seed=4, **kw)
    assert not reseeded["radius"].equals(whole["radius"]), "another seed must give other noise"


# -- interrupted and resumed ------------------------------------------------------------------------


def test_certification_killed_after_k_images_resumes_to_the_same_rows(store_copy, uninterrupted,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    store, run_id = store_copy
    cert_id, reference = uninterrupted
    monkeypatch.setattr(certify_run_mod, "iter_certify", dies_after(certify_run_mod.iter_certify, 5))
    with pytest.raises(Killed):
        certify_run_mod.certify_run(run_id, store, CCFG, device="cpu", progress=False, flush_images=2)
    partial = _rows(store, cert_id)
    assert len(partial) in (4, 5) and partial["idx"].tolist() == list(range(len(partial)))
    states = store.read("certifications")
    assert states["status"].tolist() == ["running", "failed"]
    monkeypatch.undo()

    again_id, rows = certify_run_mod.certify_run(run_id, store, CCFG, device="cpu", progress=False)
    assert again_id == cert_id  # same key, same certification
    raw = _rows(store, cert_id, raw=True)
    assert raw["idx"].tolist() == list(range(12)), "each image certified and stored exactly once"
    pd.testing.assert_frame_equal(raw[DETERMINISTIC], reference.sort_values("idx").reset_index(drop=True)[DETERMINISTIC])
    assert rows["idx"].tolist() == list(range(12))
    assert store.read("certifications")["status"].tolist()[-1] == "finished"
    # A third run has nothing to do and writes nothing to the certify table.
    before = sorted((store.root / "tables" / "certify").rglob("*"))
    certify_run_mod.certify_run(run_id, store, CCFG, device="cpu", progress=False)
    assert sorted((store.root / "tables" / "certify").rglob("*")) == before


def test_readers_see_each_image_once(store_copy, uninterrupted) -> None:
    """A row written twice (a kill between part and bookkeeping, or an old store) counts once."""
    store, run_id = store_copy
    cert_id, reference = uninterrupted
    store.append("certify", reference)
    store.append("certify", reference.iloc[:3])
    assert len(store.read("certify", raw=True).query("cert_id == @cert_id")) == 12 + 3  # the store copy had none of these rows
    assert len(store.read("certify").query("cert_id == @cert_id")) == 12
    table = summary_table(store)
    assert table["cert_id"].tolist().count(cert_id) == 1


def test_second_driver_of_a_certification_is_refused_naming_the_holder(store_copy) -> None:
    store, run_id = store_copy
    key = certify_run_mod.CertKey(run_id, CCFG.n0, CCFG.n, CCFG.alpha, 0.25, CCFG.subset, "fp32", 0)
    with ProcessLock(store.run_dir(run_id) / key.lock_name, "held by the test"):
        with pytest.raises(CrtBenchError, match=rf"certification .* another process \(pid {os.getpid()} on host"):
            certify_run_mod.certify_run(run_id, store, CCFG, device="cpu", progress=False)
    assert store.read("certify").empty


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-c", "from crt_bench.cli import main; main()", *args]


def test_sigkilled_certify_subprocess_resumes_to_the_same_rows(store_copy, uninterrupted) -> None:
    store, run_id = store_copy
    cert_id, reference = uninterrupted
    args = ["certify", run_id, "--n0", str(CCFG.n0), "--n", str(CCFG.n), "--alpha", str(CCFG.alpha), "--batch",
            str(CCFG.batch), "--subset", CCFG.subset, "--device", "cpu", "--no-progress", "--flush-every", "1",
            "--results", str(store.root)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(_cli(*args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    parts = store.root / "tables" / "certify"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if parts.is_dir() and len(list(parts.rglob("*.parquet"))) >= 2:
            break
        time.sleep(0.02)
    assert proc.poll() is None, "the certification finished before it could be killed: " + proc.stderr.read().decode()
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    partial = _rows(store, cert_id, raw=True)
    assert 2 <= len(partial) < 12
    assert store.read("certifications")["status"].tolist() == ["running"]  # SIGKILL: no chance to say more

    done = subprocess.run(_cli(*args), capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == cert_id
    assert f"{len(partial)} of 12 images already certified" in " ".join(done.stderr.split())
    raw = _rows(store, cert_id, raw=True)
    assert raw["idx"].tolist() == list(range(12))
    pd.testing.assert_frame_equal(raw[DETERMINISTIC], reference.sort_values("idx").reset_index(drop=True)[DETERMINISTIC])


def test_resumed_fastest_certification_keeps_the_precision_it_chose(store_copy, uninterrupted,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """``fastest`` times fp32 against bf16 each run; a resumed run must not mix precisions in one certification."""
    from crt_bench.certify import engine as engine_mod

    store, run_id = store_copy
    ccfg = CertifyConfig(**{**CCFG.__dict__, "precision": "fastest"})
    monkeypatch.setattr(engine_mod, "fastest_precision", lambda timings: "bf16")
    monkeypatch.setattr(certify_run_mod, "iter_certify", dies_after(certify_run_mod.iter_certify, 5))
    with pytest.raises(Killed):
        certify_run_mod.certify_run(run_id, store, ccfg, device="cpu", progress=False, flush_images=2)
    monkeypatch.undo()
    monkeypatch.setattr(engine_mod, "fastest_precision", lambda timings: "fp32")  # the resumed run would choose fp32
    cert_id, rows = certify_run_mod.certify_run(run_id, store, ccfg, device="cpu", progress=False)
    assert rows["idx"].tolist() == list(range(12))
    assert set(rows["precision"]) == {"bf16"}
