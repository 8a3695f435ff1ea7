"""Every certify row keeps the counts it came from; the rows are otherwise those of the code before the counts."""
import importlib.util
from pathlib import Path

import pandas as pd
import pytest

from crt_bench.certify.batching import intra_op_threads
from crt_bench.certify.driver import CERTIFY_COLUMNS
from crt_bench.certify.stats import certificate, lower_confidence_bound, min_certifying_count
from crt_bench.store.schema import COUNT_COLUMNS

GOLDEN = Path(__file__).parent / "data" / "certify_golden"


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny models: one intra-op thread (two threads on two shared cores cost 20x at a high load)."""
    with intra_op_threads(1):
        yield


def _golden_module():
    spec = importlib.util.spec_from_file_location("make_golden", GOLDEN / "make_golden.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_rows_equal_the_code_before_the_counts_column_for_column() -> None:
    """rows.csv was written by f23f402 (make_golden.py); today's rows match it in every old column but seconds."""
    old = pd.read_csv(GOLDEN / "rows.csv")
    new = _golden_module().golden_rows()
    assert tuple(new.columns) == (*CERTIFY_COLUMNS, *COUNT_COLUMNS)
    for column in CERTIFY_COLUMNS:
        if column != "seconds":
            assert new[column].tolist() == old[column].tolist(), column
    assert (old["predict"] == -1).sum() >= 5 and (old["predict"] >= 0).sum() >= 5  # both kinds of row are compared


def test_counts_give_the_row_back() -> None:
    """pA_lower is Clopper-Pearson of n_a of n; radius and predict follow from the counts alone."""
    rows = _golden_module().golden_rows()
    n, alpha, sigma = 400, 0.01, 0.5
    needed = min_certifying_count(n, alpha)
    partial = rows[rows["n_counted"] < n]
    assert len(partial) >= 1 and (partial["predict"] == -1).all()  # early abstention stopped these, nothing else
    assert (partial["n_a"] + n - partial["n_counted"] < needed).all()
    for row in rows.itertuples():
        assert 0 <= row.selection_count <= 20 and 0 <= row.n_a <= row.n_counted <= n
        assert row.p_a_lower == lower_confidence_bound(row.n_a, n, alpha)
        assert (row.predict == -1) == (row.n_a < needed)
        assert row.predict in (-1, row.c_a)
        again = certificate(row.c_a, row.selection_count, row.n_a, row.n_counted, n,
                            alpha, sigma)
        assert (again.radius, again.p_a_lower) == (row.radius, row.p_a_lower)


def test_certificate_refuses_impossible_counts() -> None:
    from crt_bench.core.errors import CrtBenchError

    with pytest.raises(CrtBenchError, match="n_a <= n_counted"):
        certificate(0, 3, 50, 40, 100, 0.01, 0.25)


def test_rows_written_before_the_counts_read_as_nulls_beside_new_ones(tmp_path: Path) -> None:
    import json

    from crt_bench.store.schema import SCHEMA_VERSION
    from crt_bench.store.store import ResultsStore

    store = ResultsStore(tmp_path / "results")
    table = store.table_dir("certify")
    table.mkdir(parents=True)
    (table / "_schema.json").write_text(json.dumps({"schema_version": 3}))  # a store of the previous version
    rows = _golden_module().golden_rows().head(4).assign(run_id="r", cert_id="r@N400-1")
    store.append("certify", rows.drop(columns=list(COUNT_COLUMNS)).head(2))
    store.append("certify", rows.tail(2))
    assert json.loads((table / "_schema.json").read_text())["schema_version"] == SCHEMA_VERSION["certify"] >= 4
    for compacted in (False, True):
        back = store.certification_rows("r@N400-1")
        assert back["idx"].tolist() == [0, 1, 2, 3]
        assert back.loc[:1, list(COUNT_COLUMNS)].isna().all().all()
        assert back.loc[2:, "n_a"].tolist() == rows["n_a"].tail(2).tolist()
        store.compact_run("r", ("certify",))
