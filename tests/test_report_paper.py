"""Figure 2 curves, the ACR table, Table 1 and REPORT.md, from hand-made runs and certify rows."""
import math

import numpy as np
import pandas as pd
import pytest

from crt_bench.analysis.metrics import acr, certified_accuracy
from crt_bench.core.constants import SUMMARY_RADII
from crt_bench.report.curves import certified_curves, plot_curves, radius_grid
from crt_bench.report.document import write_report
from crt_bench.report.paper_tables import PAPER_SPEEDUP, acr_markdown, acr_table, table1, table1_markdown
from crt_bench.store.store import ResultsStore

DEVICE = "test-gpu"
COMMIT = "c0ffee123456"


def run_row(run_id, method, arch, train_s, *, teacher_arch="", teacher_run_id="", dedicated=False, teacher_s=float("nan"),
            total_s=None, sigma=0.25, profile="paper", dataset="cifar10", updated=1.0):
    if total_s is None:
        total_s = train_s + (teacher_s if dedicated and not math.isnan(teacher_s) else 0.0)
    return {"run_id": run_id, "method": method, "arch": arch, "dataset": dataset, "sigma": sigma,
            "teacher": teacher_run_id, "teacher_arch": teacher_arch, "teacher_run_id": teacher_run_id,
            "profile": profile, "device": DEVICE, "git_commit": COMMIT, "train_seconds": float(train_s),
            "teacher_train_seconds": float(teacher_s), "teacher_dedicated": dedicated,
            "total_train_seconds": float(total_s), "status": "finished", "updated": updated}


def cert_rows(run_id, cert_id, pairs, *, sigma=0.25, n=100_000, time="2026-01-02T00:00:00+00:00", device=DEVICE):
    """pairs: (radius, correct) per image; an abstention is (0.0, 0)."""
    return pd.DataFrame([{"run_id": run_id, "cert_id": cert_id, "idx": i, "label": 0, "predict": 0 if c else 1,
                          "radius": float(r), "correct": int(c), "seconds": 0.1, "n0": 100, "n": n, "alpha": 0.001,
                          "sigma": sigma, "device": device, "git_commit": COMMIT if device != "unknown" else "",
                          "time": time} for i, (r, c) in enumerate(pairs)])


# Per-image (radius, correct) of the newest certification of each run; the expected metrics follow.
CERTS = {
    "sm110": [(0.10, 1), (0.30, 1), (0.60, 1), (1.20, 1), (0.00, 0), (0.80, 0)],  # 6 images
    "crt110": [(0.30, 1), (0.50, 1), (0.90, 1), (0.00, 0), (0.26, 0)],            # 5 images
    "smcx": [(0.25, 1), (0.75, 1), (0.00, 0), (0.40, 1)],                         # 4 images
    "crtcx": [(1.00, 1), (0.20, 1), (0.55, 1), (0.00, 0)],                        # 4 images
    "gauss110": [(0.05, 1), (0.00, 0)],
}
PUBLISHED = [(0.2, 1), (0.4, 1), (2.4, 1), (0.0, 0)]  # its max radius 2.4 widens the resnet110 panel's grid


@pytest.fixture
def store(tmp_path):
    s = ResultsStore(tmp_path / "results")
    s.append("runs", [
        run_row("sm110", "smoothmix", "resnet110", 7200),                      # 2 h
        run_row("t20", "smoothmix", "resnet20", 1800),                         # the proxy teacher: 0.5 h
        run_row("crt110", "crt", "resnet110", 3600, teacher_arch="resnet20", teacher_run_id="t20", dedicated=True,
                teacher_s=1800),                                               # 1 h + 0.5 h
        run_row("smcx", "smoothmix", "convnext_atto", 3600),
        run_row("crtcx", "crt", "convnext_atto", 900, teacher_arch="resnet110", teacher_run_id="sm110"),
        run_row("gauss110", "gaussian", "resnet110", 360),
    ])
    # an older certification of sm110 with different values: the newer one must win
    s.append("certify", cert_rows("sm110", "sm110@old", [(2.0, 1)] * 3, time="2026-01-01T00:00:00+00:00"))
    s.append("certify", pd.concat([cert_rows(r, f"{r}@new", pairs) for r, pairs in CERTS.items()]))
    s.append("certify", cert_rows("import:cohen_r110", "cohen_r110", PUBLISHED, device="unknown"))
    s.append("certify", cert_rows("import:cohen_s050", "cohen_s050", PUBLISHED, sigma=0.5, device="unknown"))
    return s


def frame(pairs):
    return pd.DataFrame({"radius": [r for r, _ in pairs], "correct": [c for _, c in pairs]})


def test_radius_grid_merges_fine_and_standard_radii():
    grid = radius_grid(1.234)
    assert grid[0] == 0.0 and grid[-1] == pytest.approx(2.25) and len(grid) == 226  # fine up to 2.25 at least
    assert set(np.round(SUMMARY_RADII, 6)) <= set(grid) and 1.26 in grid
    assert np.all(np.diff(grid) > 0)
    wide = radius_grid(3.141)
    assert wide[-1] == pytest.approx(3.15) and len(wide) == 316


def test_curves_equal_certified_accuracy_of_the_rows(store, tmp_path):
    data = certified_curves(store)
    assert list(dict.fromkeys(data["panel"])) == ["resnet110, sigma 0.25", "convnext_atto, sigma 0.25"]  # generation order
    r110 = data[data["arch"] == "resnet110"]
    assert list(dict.fromkeys(r110["label"])) == ["SmoothMix", "CRT (teacher resnet20)", "published: cohen_r110"]
    cx = data[data["arch"] == "convnext_atto"]
    assert list(dict.fromkeys(cx["label"])) == ["SmoothMix", "CRT (teacher resnet110)", "published: cohen_r110"]
    assert "gaussian" not in set(data["method"])
    expected_rows = {("resnet110", "SmoothMix"): CERTS["sm110"], ("resnet110", "CRT (teacher resnet20)"): CERTS["crt110"],
                     ("convnext_atto", "SmoothMix"): CERTS["smcx"], ("convnext_atto", "CRT (teacher resnet110)"): CERTS["crtcx"],
                     ("resnet110", "published: cohen_r110"): PUBLISHED}
    for (arch, label), pairs in expected_rows.items():
        line = data[(data["arch"] == arch) & (data["label"] == label)]
        grid = line["radius"].to_numpy()
        assert line["certified_accuracy"].tolist() == certified_accuracy(frame(pairs), grid).tolist()
        assert line["acr"].iloc[0] == pytest.approx(acr(frame(pairs)))
        assert line.loc[line["standard"], "radius"].tolist() == pytest.approx(list(SUMMARY_RADII))
    # known values on the standard grid: SmoothMix ResNet-110 (newest certification, 6 images)
    sm = r110[(r110["label"] == "SmoothMix") & r110["standard"]].set_index("radius")["certified_accuracy"]
    assert sm.loc[0.0] == pytest.approx(4 / 6) and sm.loc[0.25] == pytest.approx(3 / 6)
    assert sm.loc[0.5] == pytest.approx(2 / 6) and sm.loc[1.0] == pytest.approx(1 / 6) and sm.loc[1.25] == 0.0
    assert r110["radius"].max() == pytest.approx(2.4)  # the published log's largest radius
    assert cx["radius"].max() == pytest.approx(2.4)   # the reference curve is on every CIFAR-10 sigma-0.25 panel
    ours = certified_curves(store, include_published=False)
    assert ours["radius"].max() == pytest.approx(2.25)  # largest certified radius 1.2: the standard grid still covered
    assert set(ours["origin"]) == {"ours"}
    assert certified_curves(store, sigma=0.5).empty    # only the sigma-0.5 published log: no panel

    paths, drawn = plot_curves(data, tmp_path / "plots")
    assert {p.suffix for p in paths} == {".png", ".pdf"}
    assert all(p.is_file() and p.stat().st_size > 1000 for p in paths)
    assert paths[0].read_bytes()[:4] == b"\x89PNG" and paths[1].read_bytes()[:4] == b"%PDF"
    assert set(drawn) == {(p, lab) for p, lab in data[["panel", "label"]].drop_duplicates().itertuples(index=False)}
    for (panel, label), part in data.groupby(["panel", "label"]):
        assert drawn[(panel, label)] == pytest.approx(part.sort_values("radius")["certified_accuracy"].tolist())


def test_acr_table_numbers(store):
    t = acr_table(store).set_index(["method", "arch"])
    assert len(t) == 5  # every certified run; t20 (the proxy teacher) has no certification
    sm = t.loc[("smoothmix", "resnet110")]
    assert sm["ACR"] == pytest.approx((0.1 + 0.3 + 0.6 + 1.2) / 6)
    assert sm["acc@0.25"] == pytest.approx(3 / 6) and sm["acc@0.50"] == pytest.approx(2 / 6)
    assert sm["acc@0.75"] == pytest.approx(1 / 6) and sm["acc@1.00"] == pytest.approx(1 / 6)
    assert sm["images"] == 6 and sm["N"] == 100_000 and sm["train_hours"] == pytest.approx(2.0)
    assert sm["cert_id"] == "sm110@new" and sm["profile"] == "paper" and sm["device"] == DEVICE
    crt = t.loc[("crt", "resnet110")]
    assert crt["teacher"] == "resnet20" and crt["teacher_method"] == "smoothmix"
    assert crt["ACR"] == pytest.approx((0.3 + 0.5 + 0.9) / 5)
    assert crt["acc@0.25"] == pytest.approx(3 / 5) and crt["acc@0.50"] == pytest.approx(2 / 5)
    assert crt["train_hours"] == pytest.approx(1.5)  # student 1 h + dedicated proxy teacher 0.5 h
    assert t.loc[("crt", "convnext_atto"), "train_hours"] == pytest.approx(0.25)  # pretrained teacher: not counted
    assert ("imported", "") not in t.index
    md = acr_markdown(acr_table(store))
    assert "CRT (teacher resnet20)" in md and f"{(0.1 + 0.3 + 0.6 + 1.2) / 6:.3f}" in md and "| 1.5 |" in md


def test_table1_proxy_teacher_hours_and_paper_values(store):
    t = table1(store)
    assert t["row"].tolist() == ["SmoothMix resnet110", "CRT resnet110 with resnet20 proxy teacher"]
    sm, crt = t.iloc[0], t.iloc[1]
    assert sm["hours"] == pytest.approx(2.0) and sm["ACR"] == pytest.approx(2.2 / 6)
    assert crt["student_hours"] == pytest.approx(1.0) and crt["teacher_hours"] == pytest.approx(0.5)
    assert crt["hours"] == pytest.approx(1.5) and crt["ACR"] == pytest.approx(1.7 / 5)
    assert crt["speedup"] == pytest.approx(2.0 / 1.5)
    assert (sm["paper_hours"], sm["paper_ACR"]) == (18.98, 0.550)
    assert (crt["paper_hours"], crt["paper_ACR"]) == (10.07, 0.540)
    assert crt["paper_speedup"] == pytest.approx(18.98 / 10.07) == PAPER_SPEEDUP
    md = table1_markdown(t)
    for text in ("18.98", "10.07", "0.550", "0.540", "1.88x", "1.33x", "SmoothMix resnet110", "| 1.5 |"):
        assert text in md

    # another arch: the teacher is a SmoothMix run of the store (not dedicated): its hours are added too
    cx = table1(store, arch="convnext_atto").iloc[1]
    assert cx["row"] == "CRT convnext_atto with resnet110 proxy teacher"
    assert cx["teacher_hours"] == pytest.approx(2.0) and cx["hours"] == pytest.approx(2.25)
    assert "differs from the paper" in table1_markdown(table1(store, arch="convnext_atto"))


def test_table1_teacher_hours_from_the_store_and_arch_fallback(tmp_path):
    s = ResultsStore(tmp_path / "r")
    s.append("runs", [run_row("sm18", "smoothmix", "resnet18", 3600),
                      run_row("t20", "smoothmix", "resnet20", 720),
                      # dedicated, but the row lacks the teacher's seconds: looked up from the teacher run
                      run_row("crt18", "crt", "resnet18", 1800, teacher_arch="resnet20", teacher_run_id="t20",
                              dedicated=True, total_s=1800),
                      # a Gaussian-trained, non-dedicated teacher does not qualify
                      run_row("g20", "gaussian", "resnet20", 60),
                      run_row("crt18g", "crt", "resnet18", 100, teacher_arch="resnet20", teacher_run_id="g20")])
    s.append("certify", pd.concat([cert_rows(r, f"{r}@c", [(0.5, 1), (0.0, 0)]) for r in ("sm18", "crt18", "crt18g")]))
    t = table1(s)
    assert t["arch"].tolist() == ["resnet18", "resnet18"] and t.iloc[1]["run_id"] == "crt18"
    assert t.iloc[1]["teacher_hours"] == pytest.approx(0.2) and t.iloc[1]["hours"] == pytest.approx(0.7)
    assert table1(s, sigma=0.5).empty


def test_curves_never_mix_profiles_and_keep_cifar10_references_off_other_datasets(store):
    # smoke-profile runs of resnet110 on synthetic data: a panel of their own, without the CIFAR-10 log
    store.append("runs", [run_row("sm110s", "smoothmix", "resnet110", 10, profile="smoke", dataset="synthetic"),
                          run_row("crt110s", "crt", "resnet110", 5, profile="smoke", dataset="synthetic",
                                  teacher_arch="resnet20", teacher_run_id="t20", dedicated=True, teacher_s=1800)])
    store.append("certify", pd.concat([cert_rows(r, f"{r}@c", [(0.3, 1), (0.0, 0)]) for r in ("sm110s", "crt110s")]))
    data = certified_curves(store)
    panels = list(dict.fromkeys(data["panel"]))
    assert panels == ["resnet110, sigma 0.25, paper, cifar10", "resnet110, sigma 0.25, smoke, synthetic",
                      "convnext_atto, sigma 0.25, paper, cifar10"]
    smoke = data[data["profile"] == "smoke"]
    assert set(smoke["label"]) == {"SmoothMix", "CRT (teacher resnet20)"}
    assert set(smoke["run_id"]) == {"sm110s", "crt110s"}
    assert list(dict.fromkeys(certified_curves(store, profile="smoke")["panel"])) == ["resnet110, sigma 0.25"]
    # the ACR table keeps both profiles apart too
    assert len(acr_table(store)) == 7


def test_report_contains_sections_and_numbers(store, tmp_path):
    out = tmp_path / "plots"
    paths, _ = plot_curves(certified_curves(store), out)
    fig1 = [out / "cumulative_training_time.png", out / "cumulative_training_time.pdf"]
    csv = out / "acr.csv"
    report = write_report(store, out, figures={"figure1": fig1, "figure2": paths, "files": [csv]},
                          profile_note="Profile: paper.")
    text = report.read_text()
    assert report == out / "REPORT.md"
    for heading in ("# crt-bench report", "## Slowdown vs Gaussian training", "## Figure 1", "## Figure 2",
                    "## Certified robustness per method and architecture", "## Table 1",
                    "## Published certification logs"):
        assert heading in text
    assert "Profile: paper." in text and DEVICE in text and COMMIT in text and "Profiles: paper" in text
    assert "](certified_accuracy.png)" in text and "](cumulative_training_time.png)" in text
    assert "No data: no timing probes" in text  # this store has none
    assert "18.98" in text and "10.07" in text and f"{2.2 / 6:.3f}" in text and "1.33x" in text
    assert "| cohen_r110 | 0.25 |" in text and "| cohen_s050 | 0.5 |" in text
    assert "Measured vs projected" in text
    assert "## Data files" in text and "- [acr.csv](acr.csv)" in text and "## files" not in text


def timing_row(method, epoch_s, epochs):
    return {"method": method, "arch": "resnet110", "teacher_arch": "", "sigma": 0.25, "device": DEVICE,
            "batch_size": 16, "fwd_bwd_passes": 1.0, "fwd_only_passes": 0.0, "epoch_seconds": epoch_s,
            "recipe_epochs": epochs, "recipe_hours": epoch_s * epochs / 3600, "precision": "fp32",
            "time": "2026-01-01T00:00:00+00:00", "hours_basis": "projected", "profile": "cpu", "git_commit": "t1m1ng"}


def test_report_slowdown_section(store, tmp_path):
    store.append("timing", [timing_row("smoothmix", 50.0, 150)])
    text = write_report(store, tmp_path / "a", figures={}, profile_note="").read_text()
    assert "No data: timing probes exist but none has a Gaussian baseline" in text
    store.append("timing", [timing_row("gaussian", 10.0, 150)])
    text = write_report(store, tmp_path / "b", figures={}, profile_note="").read_text()
    assert "### resnet110, sigma 0.25" in text and "| smoothmix |" in text and "4.97" in text
    assert "Profiles: paper, cpu" in text and "t1m1ng" in text
    # both probes have finished paper-profile runs (sm110, gauss110): their hours count as measured
    assert "2 row(s) measured, 0 projected" in text


def test_empty_store_says_no_data(tmp_path):
    s = ResultsStore(tmp_path / "empty")
    assert certified_curves(s).empty and acr_table(s).empty and table1(s).empty
    assert plot_curves(certified_curves(s), tmp_path / "p") == ([], {})
    text = write_report(s, tmp_path / "out", figures={}, profile_note="").read_text()
    # one per section: verdict, slowdown, figure 1, figure 2, p_A distribution, training curves, ACR, Table 1,
    # chains, leaderboard, published logs
    sections = [part for part in text.split("\n## ")[1:]]
    assert len(sections) == text.count("No data") == 11
    assert all(part.count("No data") == 1 for part in sections)
    assert "none recorded" in text and "18.98" in text  # Table 1's line still quotes the paper


def test_table1_states_each_certification_and_what_does_not_match(store):
    md = table1_markdown(table1(store))
    assert "N0=100, N=100000, alpha=0.001" in md and "radius cap 0.9529" in md  # each row's N, alpha and cap
    assert "Missing" not in md  # the fixture's pair is certified alike, finished, seeds not recorded alike
    # CRT re-certified at N=10,000, interrupted: both named under Missing
    store.append("certify", cert_rows("crt110", "crt110@N10k", CERTS["crt110"], n=10_000,
                                      time="2026-02-01T00:00:00+00:00"))
    store.append("certifications", [{"cert_id": "crt110@N10k", "run_id": "crt110", "shard": "",
                                     "status": "interrupted", "updated": 2.0}])
    md = table1_markdown(table1(store))
    assert "Missing: a like-for-like ACR comparison" in md and "radius cap 0.7996" in md
    assert "Missing: finished certifications: CRT resnet110 with resnet20 proxy teacher is interrupted." in md
