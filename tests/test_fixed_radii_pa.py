"""Certified accuracy at fixed radii beside ACR (verdict), and the ECDF of p_A per model (report)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from crt_bench.analysis.fixed_radii import fixed_radii, seeded_certified_accuracy
from crt_bench.analysis.verdict import StudentEvidence
from crt_bench.report.fixed_radii import fixed_radii_markdown
from crt_bench.report.pa_distribution import ecdf, pa_distribution, plot_pa_ecdf
from crt_bench.store.store import ResultsStore


def rows(idx, radius, correct, p_a_lower=None) -> pd.DataFrame:
    frame = pd.DataFrame({"idx": idx, "radius": radius, "correct": correct})
    if p_a_lower is not None:
        frame["p_a_lower"] = p_a_lower
    return frame


def test_certified_accuracy_at_fixed_radii_on_the_images_both_models_certified() -> None:
    crt = [rows([0, 1, 2, 3], [0.6, 0.3, 0.0, 0.9], [1, 1, 0, 1]),
           rows([1, 2, 3], [0.1, 0.4, 0.2], [1, 1, 0])]  # two seeds; image 0 only in the first
    smoothmix = [rows([1, 2, 3, 4], [0.5, 0.5, 0.5, 0.5], [1, 0, 1, 1])]
    got = fixed_radii(crt, smoothmix, radii=(0.0, 0.25, 0.5))
    # common images 1, 2, 3: CRT seed 0 -> correct radii (0.3, -, 0.9), seed 1 -> (0.1, 0.4, -)
    assert [r for r, _, _ in got] == [0.0, 0.25, 0.5]
    assert [a for _, a, _ in got] == pytest.approx([(2 / 3 + 2 / 3) / 2, (2 / 3 + 1 / 3) / 2, (1 / 3 + 0) / 2])
    assert [b for _, _, b in got] == pytest.approx([2 / 3, 2 / 3, 2 / 3])
    assert np.isnan(seeded_certified_accuracy([rows([0], [1.0], [1]), rows([1], [1.0], [1])])).all()


def test_the_verdict_table_shows_them_beside_acr_and_says_acr_ranks() -> None:
    ev = StudentEvidence(arch="resnet20", crt_acr=(0.4, 0.3, 0.5), smoothmix_acr=(0.5, 0.4, 0.6),
                         difference=(-0.1, -0.2, 0.0), smoothmix_hours=2.0, crt_hours=1.0, teacher_hours=2.0,
                         certified=((0.25, 0.6, 0.55), (0.5, 0.4, 0.45)))
    text = fixed_radii_markdown([ev])
    assert "the verdict ranks on ACR, these do not vote" in text
    assert "| resnet20 | 0.600 / 0.550 (+0.050) | 0.400 / 0.450 (-0.050) |" in text
    assert "acc@0.25" in text and "acc@0.5" in text
    assert fixed_radii_markdown([StudentEvidence("x", (0, 0, 0), (0, 0, 0), (0, 0, 0), 1.0, 1.0, 1.0)]) == ""


def test_ecdf_steps() -> None:
    x, y = ecdf(np.array([0.9, 0.2, 0.6, 0.6]))
    assert x.tolist() == [0.2, 0.6, 0.6, 0.9] and y.tolist() == [0.25, 0.5, 0.75, 1.0]


def test_pa_distribution_per_model_from_the_store(tmp_path: Path) -> None:
    store = ResultsStore(tmp_path / "results")
    base = dict(arch="tiny_cnn", dataset="synthetic", sigma=0.25, profile="smoke", status="finished", epochs=1)
    store.append("runs", [{"run_id": "a", "method": "crt", "teacher": "resnet20", **base},
                          {"run_id": "b", "method": "smoothmix", **base},
                          {"run_id": "c", "method": "gaussian", **base}])
    cert = dict(n0=10, n=100, alpha=0.001, sigma=0.25, label=0, predict=0, seconds=0.1)
    store.append("certify", rows([0, 1, 2], [0.1, 0.0, 0.3], [1, 0, 1], [0.6, 0.3, 0.8])
                 .assign(run_id="a", cert_id="a@N100-1", **cert))
    store.append("certify", rows([0, 1], [0.2, 0.2], [1, 1], [0.7, 0.7]).assign(run_id="b", cert_id="b@N100-1", **cert))
    store.append("certify", rows([0, 1], [0.2, 0.2], [1, 1]).assign(run_id="c", cert_id="c@N100-1", **cert))  # old
    data = pa_distribution(store)
    assert sorted(data["cert_id"].unique()) == ["a@N100-1", "b@N100-1"]  # the one without bounds is left out
    assert data.loc[data["cert_id"] == "a@N100-1", "p_a_lower"].tolist() == [0.6, 0.3, 0.8]
    assert data["panel"].nunique() == 1 and data["label"].nunique() == 2
    paths = plot_pa_ecdf(data, tmp_path / "plots")
    assert [p.suffix for p in paths] == [".png", ".pdf"] and all(p.stat().st_size > 1000 for p in paths)
    assert plot_pa_ecdf(data.iloc[0:0], tmp_path / "none") == []


def test_the_report_shows_both(tmp_path: Path) -> None:
    from crt_bench.report.build import build_all

    store = ResultsStore(tmp_path / "results")
    base = dict(arch="tiny_cnn", dataset="synthetic", sigma=0.25, profile="smoke", status="finished", epochs=1,
                train_seconds=60.0, seed=0, device="cpu")
    store.append("runs", [{"run_id": "a", "method": "crt", "teacher": "resnet20", "teacher_train_seconds": 100.0,
                           **base}, {"run_id": "b", "method": "smoothmix", **base}])
    cert = dict(n0=10, n=100, alpha=0.001, sigma=0.25, label=0, predict=0, seconds=0.1)
    store.append("certify", rows([0, 1, 2], [0.1, 0.0, 0.3], [1, 0, 1], [0.6, 0.3, 0.8])
                 .assign(run_id="a", cert_id="a@N100-1", **cert))
    store.append("certify", rows([0, 1], [0.2, 0.2], [1, 1], [0.7, 0.7]).assign(run_id="b", cert_id="b@N100-1", **cert))
    written = build_all(tmp_path / "results", tmp_path / "plots")
    report = (tmp_path / "plots" / "REPORT.md").read_text()
    assert [p.name for p in written["pa_ecdf"]] == ["pa_ecdf.png", "pa_ecdf.pdf"] and "](pa_ecdf.png)" in report
    assert "| tiny_cnn | 0.500 / 1.000 (-0.500) | 0.000 / 0.000 (+0.000) |" in report  # images 0, 1 in common
