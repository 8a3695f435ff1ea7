"""Recertification at another alpha from the stored counts equals a fresh certification with the same noise."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import torch
from test_cli import assert_user_error, cli
from test_certify_counts import _golden_module

from crt_bench.analysis.recertify import recertify, recertify_rows
from crt_bench.certify.batching import intra_op_threads
from crt_bench.certify.driver import certify_dataset
from crt_bench.store.schema import COUNT_COLUMNS
from crt_bench.store.store import ResultsStore

ROW = ["idx", "predict", "radius", "correct"]


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny models: one intra-op thread (two threads on two shared cores cost 20x at a high load)."""
    with intra_op_threads(1):
        yield


def certified(alpha: float, n: int = 1000) -> pd.DataFrame:
    """The fixed golden model on 48 images, keyed noise (seed 5): rows at ``alpha``."""
    model, _, _ = _golden_module().fixed_model_and_data()
    g = torch.Generator().manual_seed(9)
    x, y = torch.rand(48, 1, 4, 4, generator=g), torch.randint(0, 3, (48,), generator=g)
    return certify_dataset(model, x, y, sigma=0.5, num_classes=3, n0=20, n=n, alpha=alpha, batch_size=64,
                           indices=list(range(48)), seed=5, progress=False)


@pytest.fixture(scope="module")
def pair() -> tuple[pd.DataFrame, pd.DataFrame]:
    return certified(0.01), certified(0.001)


def test_recertifying_at_a_stricter_alpha_is_the_fresh_certification(pair) -> None:
    loose, strict = pair
    done = recertify_rows(loose, 0.001, "c")
    assert done.undecided == [] and done.alpha == 0.001 and done.source_alpha == 0.01
    pd.testing.assert_frame_equal(done.rows[ROW], strict[ROW])
    complete = strict["n_counted"] == strict["n"]  # a fresh run stops its images at its own point
    assert done.rows.loc[complete, "p_a_lower"].tolist() == strict.loc[complete, "p_a_lower"].tolist()
    assert (strict["radius"] < loose["radius"]).sum() >= 10  # the alphas give other radii: a real check
    assert (loose["n_counted"] < loose["n"]).sum() >= 3  # partial counts were recertified too


def test_recertifying_at_a_looser_alpha_names_the_images_with_partial_counts(pair) -> None:
    loose, strict = pair
    done = recertify_rows(strict, 0.01, "c")
    partial = strict.loc[strict["n_counted"] < strict["n"], "idx"].tolist()
    assert done.undecided == partial and len(partial) >= 3
    fresh = loose[~loose["idx"].isin(partial)].reset_index(drop=True)
    pd.testing.assert_frame_equal(done.rows[ROW], fresh[ROW])
    assert len(done.rows) + len(partial) == len(strict)
    same = recertify_rows(strict, 0.001, "c")  # the same alpha: the rows themselves
    pd.testing.assert_frame_equal(same.rows[ROW + ["p_a_lower"]], strict[ROW + ["p_a_lower"]])


def _store(root: Path, rows: pd.DataFrame, status: str = "finished") -> tuple[ResultsStore, str]:
    store, run_id = ResultsStore(root), "r1"
    cert_id = f"{run_id}@N1000-abcd1234"
    store.append("certify", rows.assign(run_id=run_id, cert_id=cert_id))
    store.append("certifications", [{"cert_id": cert_id, "run_id": run_id, "shard": "", "status": status,
                                     "images": len(rows), "images_done": len(rows), "updated": 1.0}])
    return store, cert_id


def test_recertify_command_prints_and_names(pair, tmp_path: Path) -> None:
    loose, strict = pair
    store, cert_id = _store(tmp_path / "a", strict)
    assert recertify(store, cert_id, 0.01).undecided == strict.loc[strict["n_counted"] < 1000, "idx"].tolist()
    code, out, err = cli("recertify", cert_id, "--alpha", "0.01", "--results", tmp_path / "a")
    assert code == 0, err
    assert "recertified at alpha=0.01 (certified at alpha=0.001)" in out and "acr" in out
    assert "left out" in err and str(recertify(store, cert_id, 0.01).undecided[0]) in err
    code, out, err = cli("recertify", cert_id, "--alpha", "0.001", "--json", "--results", tmp_path / "a")
    assert code == 0 and out.count('"radius"') == len(strict) and "left out" not in err


def test_recertify_bad_input_is_one_line(pair, tmp_path: Path) -> None:
    _, strict = pair
    _, cert_id = _store(tmp_path / "a", strict)
    root = tmp_path / "a"
    assert_user_error(*cli("recertify", "r1@N1000-ffff0000", "--alpha", "0.01", "--results", root)[::2],
                      "no certification")
    for alpha in ("0", "1", "1.5", "-0.1"):
        assert_user_error(*cli("recertify", cert_id, "--alpha", alpha, "--results", root)[::2], "(0, 1)")
    _, running = _store(tmp_path / "b", strict, status="running")  # its lock is free: it reads interrupted
    assert_user_error(*cli("recertify", running, "--alpha", "0.01", "--results", tmp_path / "b")[::2],
                      "not finished")
    _, old = _store(tmp_path / "c", strict.drop(columns=list(COUNT_COLUMNS)))  # written before counts were kept
    assert_user_error(*cli("recertify", old, "--alpha", "0.01", "--results", tmp_path / "c")[::2],
                      "has no stored counts", "before certify rows kept their counts")


def test_recertify_a_stored_certification_of_a_trained_run(store_copy) -> None:
    """The production path end to end: certify_run at alpha 0.01 and at 0.001 (same seed, keyed noise, early
    abstention); recertifying the stored first at 0.001 gives the stored second, row for row."""
    from crt_bench.certify.resumable import certify_run
    from crt_bench.config.certify import CertifyConfig

    store, run_id = store_copy
    ids = {}
    for alpha in (0.01, 0.001):
        ccfg = CertifyConfig(n0=20, n=300, alpha=alpha, batch=128, subset="range:0:16")
        ids[alpha], _ = certify_run(run_id, store, ccfg, device="cpu", progress=False)
    fresh = store.certification_rows(ids[0.001]).sort_values("idx").reset_index(drop=True)
    done = recertify(store, ids[0.01], 0.001)
    assert done.undecided == [] and len(done.rows) == 16
    pd.testing.assert_frame_equal(done.rows.sort_values("idx").reset_index(drop=True)[ROW], fresh[ROW])
    back = recertify(store, ids[0.001], 0.01)
    assert back.undecided == fresh.loc[fresh["n_counted"] < 300, "idx"].tolist()


def test_an_imported_log_has_no_counts(pair, tmp_path: Path) -> None:
    _, strict = pair
    store = ResultsStore(tmp_path / "r")
    store.append("certify", strict.drop(columns=list(COUNT_COLUMNS)).assign(run_id="import:pub", cert_id="pub"))
    assert_user_error(*cli("recertify", "pub", "--alpha", "0.01", "--results", tmp_path / "r")[::2],
                      "has no stored counts", "imported log")
