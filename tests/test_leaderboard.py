"""The cost-robustness leaderboard: frontier, ties, comparability, JSON round trip, files."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from crt_bench.analysis.leaderboard import Entry, board, group_entries, pareto_frontier
from crt_bench.analysis.leaderboard_entries import from_json, merge, read_entries, to_json
from crt_bench.core.errors import CrtBenchError


def rows_with(radii: list[float], correct: list[int] | None = None, start: int = 0) -> pd.DataFrame:
    n = len(radii)
    correct = correct if correct is not None else [1] * n
    return pd.DataFrame({"idx": np.arange(start, start + n), "label": np.zeros(n, dtype=int),
                         "predict": [0 if c else 1 for c in correct], "radius": radii, "correct": correct})


def entry(name: str, hours: float | None, acr: float, *, spread: float = 0.0, n: int = 40, **overrides) -> Entry:
    """An entry with ACR ``acr``: half the images at acr - spread, half at acr + spread (all correct)."""
    radii = [acr - spread] * (n // 2) + [acr + spread] * (n // 2)
    fields = dict(entry_id=name, method=name.split("-")[0], arch=name.split("-")[-1], teacher="", dataset="fmnist",
                  sigma=0.25, device="cpu", N=10_000, N0=100, alpha=0.001, hours=hours, hours_basis="measured",
                  commit="abc", origin="test", rows=rows_with(radii))
    fields.update(overrides)
    return Entry(**fields)


def test_frontier_of_a_hand_built_table_is_exactly_the_expected_rows():
    table = [entry("a", 1.0, 0.30), entry("b", 2.0, 0.50), entry("c", 3.0, 0.40),  # c: dominated by b
             entry("d", 0.5, 0.10), entry("e", 1.0, 0.25),  # e: same hours as a, lower ACR
             entry("f", 4.0, 0.60), entry("g", 4.0, 0.60)]  # exact duplicates both stay
    front = pareto_frontier(table)
    assert [e.entry_id for e in front] == ["f", "g", "b", "a", "d"]
    b = board(table)
    assert b.set_index("entry_id").loc["c", "status"] == "dominated by #3"  # b is rank 3
    assert b.set_index("entry_id").loc["e", "status"] == "dominated by #4"
    assert list(b["rank"]) == ["1", "2", "3", "4", "5", "-", "-"]


def test_overlapping_intervals_are_marked_tied_and_separate_ones_are_not():
    wide_a, wide_b = entry("a", 1.0, 0.40, spread=0.3), entry("b", 2.0, 0.45, spread=0.3)
    far = entry("c", 3.0, 2.0)
    b = board([wide_a, wide_b, far]).set_index("entry_id")
    assert b.loc["a", "ACR_low"] < b.loc["b", "ACR_high"]
    assert b.loc["a", "tied_with"] == "#2" and b.loc["b", "tied_with"] == "#3"
    assert b.loc["c", "tied_with"] == ""


@pytest.mark.parametrize("field, value, word", [("device", "NVIDIA H100", "device"), ("dataset", "cifar10", "dataset"),
                                                ("N", 100_000, "N"), ("sigma", 0.5, "sigma")])
def test_incomparable_entries_are_refused_with_a_message(field, value, word):
    with pytest.raises(CrtBenchError, match=rf"not comparable \({word} .* never ranked together"):
        pareto_frontier([entry("a", 1.0, 0.3), entry("b", 2.0, 0.5, **{field: value})])


def test_different_certified_images_are_refused_and_grouped_apart():
    other = entry("b", 2.0, 0.5)
    other = Entry(**{**other.__dict__, "rows": rows_with([0.5] * 40, start=1000)})
    with pytest.raises(CrtBenchError, match="subset"):
        board([entry("a", 1.0, 0.3), other])
    assert len(group_entries([entry("a", 1.0, 0.3), other]).groups) == 2


def test_unknown_hours_are_unranked_with_the_reason():
    lb = group_entries([entry("a", 1.0, 0.3), entry("import:cohen", None, 0.5, device="")])
    (e, reason), = lb.unranked
    assert e.entry_id == "import:cohen" and "training hours" in reason and "device" in reason and "--hours" in reason
    with pytest.raises(CrtBenchError, match="cannot be ranked"):
        pareto_frontier([entry("a", 1.0, 0.3), e])


def test_json_entries_round_trip_and_numbers_come_from_rows(tmp_path):
    original = entry("crt-mobilenet", 0.02, 0.4, spread=0.1, teacher="smoothmix resnet20")
    again = from_json(to_json(original))
    for name in ("entry_id", "method", "arch", "teacher", "dataset", "sigma", "device", "N", "N0", "alpha", "hours",
                 "hours_basis", "commit", "origin", "subset"):
        assert getattr(again, name) == getattr(original, name), name
    pd.testing.assert_frame_equal(again.rows, original.rows, check_dtype=False)
    assert again.acr == original.acr and again.certified == original.certified
    doc = json.loads(to_json(original))
    doc["summary"]["acr"] = 0.9  # an edited number is refused
    with pytest.raises(CrtBenchError, match="does not follow from its per-image rows"):
        from_json(json.dumps(doc))
    doc = json.loads(to_json(original))
    doc["schema"] = "something/else"
    with pytest.raises(CrtBenchError, match="schema"):
        from_json(json.dumps(doc))


def test_merge_reads_a_folder_and_keeps_one_entry_per_id(tmp_path):
    from crt_bench.analysis.leaderboard_entries import write_entries

    write_entries([entry("a", 1.0, 0.3), entry("b", 2.0, 0.5)], tmp_path)
    merged = merge([entry("a", 9.0, 0.1)], read_entries(tmp_path))
    assert sorted(e.entry_id for e in merged) == ["a", "b"]
    assert next(e for e in merged if e.entry_id == "a").hours == 9.0


def test_leaderboard_files(tmp_path):
    from crt_bench.report.leaderboard import write_leaderboard

    entries = [entry("a", 1.0, 0.3), entry("b", 2.0, 0.5), entry("c", 3.0, 0.4),
               entry("d", 1.0, 0.3, device="NVIDIA H100"), entry("import:x", None, 0.2)]
    written = write_leaderboard(entries, tmp_path)
    md = (tmp_path / "LEADERBOARD.md").read_text()
    assert md.count("### fmnist") == 2 and "device NVIDIA H100" in md
    assert "dominated by #1" in md and "unknown training hours" in md and "never ranked together" in md
    assert len(written["entries"]) == 5 and all(p.suffix in (".png", ".pdf") for p in written["figures"])
    assert len(written["figures"]) == 4


def test_cli_import_log_with_hours_and_leaderboard_with_merge(tmp_path):
    from conftest import REFERENCE_LOGS
    from test_cli import cli

    results, other = tmp_path / "results", tmp_path / "other"
    common = ["--sigma", "0.25", "--dataset", "cifar10", "--device", "Tesla V100", "--arch", "resnet110"]
    assert cli("import-log", REFERENCE_LOGS / "jeong_smoothmix_resnet110_sigma0.25.tsv", "--name", "smoothmix",
               "--hours", "18.98", "--method", "smoothmix", *common, "--results", results)[0] == 0
    assert cli("import-log", REFERENCE_LOGS / "cohen_resnet110_sigma0.25_skip20.tsv", "--name", "cohen",
               "--method", "gaussian", *common, "--results", results)[0] == 0  # no --hours: unranked
    code, _, stderr = cli("import-log", REFERENCE_LOGS / "jeong_macer_resnet110_sigma0.25.tsv", "--name", "m",
                          "--hours", "-1", "--results", results)
    assert code == 2 and "--hours (training hours) must be > 0" in stderr
    # Another machine's entries, merged from their JSON files.
    assert cli("import-log", REFERENCE_LOGS / "jeong_macer_resnet110_sigma0.25.tsv", "--name", "macer",
               "--hours", "79.9", "--method", "macer", *common, "--results", other)[0] == 0
    assert cli("leaderboard", other, "--out", other / "board")[0] == 0
    code, stdout, _ = cli("leaderboard", results, "--out", tmp_path / "board", "--merge", other / "board" / "entries")
    assert code == 0, stdout
    board_md = (tmp_path / "board" / "LEADERBOARD.md").read_text()
    assert "| 1 | smoothmix | resnet110 |" in board_md and "dominated by #1" in board_md  # MACER: slower, lower ACR
    assert "unknown training hours" in board_md and "import:cohen" in board_md
    assert len(list((tmp_path / "board" / "entries").glob("*.json"))) == 3


def test_runs_without_a_certification_are_listed_as_missing_with_the_reason(tmp_path):
    import time

    from crt_bench.analysis.leaderboard_entries import missing_from_store
    from crt_bench.report.leaderboard import write_leaderboard
    from crt_bench.store.store import ResultsStore

    store = ResultsStore(tmp_path)
    store.append("runs", [{"run_id": "g1", "method": "gaussian", "arch": "mobilenetv4_conv_small",
                           "status": "finished", "updated": time.time()},
                          {"run_id": "s1", "method": "smoothmix", "arch": "resnet20", "status": "interrupted",
                           "updated": time.time()}])
    missing = missing_from_store(store)
    assert [m[0] for m in missing] == ["gaussian mobilenetv4_conv_small (g1)", "smoothmix resnet20 (s1)"]
    assert "trained but not certified" in missing[0][1] and "interrupted" in missing[1][1]
    write_leaderboard([entry("a", 1.0, 0.3)], tmp_path / "board", missing)
    assert "| gaussian mobilenetv4_conv_small (g1) | trained but not certified" in (
        tmp_path / "board" / "LEADERBOARD.md").read_text()


def test_a_run_certified_only_by_transfer_is_listed_as_missing_and_one_with_certify_is_not(tmp_path):
    import time

    from crt_bench.analysis.leaderboard_entries import missing_from_store
    from crt_bench.store.store import ResultsStore

    store = ResultsStore(tmp_path)
    store.append("runs", [{"run_id": run, "method": "crt", "arch": "efficientvit_b0", "status": "finished",
                           "updated": time.time()} for run in ("t1", "c1")])
    rows = rows_with([0.2, 0.4])
    store.append("certify", [dict(r, run_id="t1", cert_id="x", procedure="transfer") for r in rows.to_dict("records")]
                 + [dict(r, run_id="c1", cert_id="y", procedure="transfer") for r in rows.to_dict("records")]
                 + [dict(r, run_id="c1", cert_id="z", procedure="certify") for r in rows.to_dict("records")])
    missing = dict(missing_from_store(store))
    assert list(missing) == ["crt efficientvit_b0 (t1)"]  # c1 has CERTIFY rows: an entry, not missing
    assert "only by transfer" in missing["crt efficientvit_b0 (t1)"]
