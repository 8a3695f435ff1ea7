"""Figure 2 says what it shows (dataset, images, N, epochs; axis capped by N), the convergence figure,
and the verdict section computed end to end from a hand-made store."""
import pandas as pd
import pytest
from scipy.stats import beta, norm

from crt_bench.analysis.evidence import student_evidence
from crt_bench.report.convergence import plot_training_curves, training_curves
from crt_bench.report.curves import _axis_end, _panel_caption, certified_curves, max_certifiable_radius, plot_curves
from crt_bench.report.document import write_report
from crt_bench.store.store import ResultsStore


def run(run_id, method, arch, epochs, train_s, teacher_run_id="", teacher_arch=""):
    return {"run_id": run_id, "method": method, "arch": arch, "dataset": "fashion-mnist", "sigma": 0.25,
            "teacher": teacher_run_id, "teacher_arch": teacher_arch, "teacher_run_id": teacher_run_id,
            "profile": "cpu", "device": "cpu-x", "git_commit": "abc", "epochs": epochs, "train_seconds": train_s,
            "teacher_train_seconds": float("nan") if not teacher_run_id else 3600.0, "teacher_dedicated": False,
            "total_train_seconds": train_s, "status": "finished", "updated": 1.0}


def certs(run_id, radii_correct, n=10_000):
    return pd.DataFrame([{"run_id": run_id, "cert_id": f"{run_id}@c", "idx": i, "label": 0, "predict": 0,
                          "radius": r, "correct": c, "seconds": 1.0, "n0": 100, "n": n, "alpha": 0.001, "sigma": 0.25,
                          "device": "cpu-x", "time": "2026-01-01T00:00:00"} for i, (r, c) in enumerate(radii_correct)])


def epochs(run_id, accs):
    return [{"run_id": run_id, "epoch": e + 1, "lr": 0.1, "loss": 2.0 / (e + 1), "seconds": 1.0,
             "noisy_test_acc": a} for e, a in enumerate(accs)]


PLATEAU = [0.3, 0.6, 0.7, 0.75, 0.76, 0.76, 0.765, 0.76]
RISING = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8]


@pytest.fixture
def store(tmp_path):
    s = ResultsStore(tmp_path / "r")
    s.append("runs", [run("t", "smoothmix", "resnet20", 15, 3600.0), run("sm", "smoothmix", "convnext_atto", 15, 7200.0),
                      run("crt", "crt", "convnext_atto", 20, 1200.0, "t", "resnet20")])
    s.append("epochs", epochs("t", PLATEAU) + epochs("sm", PLATEAU) + epochs("crt", RISING))
    s.append("certify", pd.concat([certs("t", [(0.5, 1), (0.7, 1), (0.0, 0)] * 40),
                                   certs("sm", [(0.4, 1), (0.6, 1), (0.0, 0)] * 40),
                                   certs("crt", [(0.45, 1), (0.6, 1), (0.0, 0)] * 40)]))
    return s


def test_max_certifiable_radius_is_the_clopper_pearson_cap():
    for n, alpha, sigma in ((10_000, 0.001, 0.25), (100_000, 0.001, 0.5), (2_000, 0.01, 1.0)):
        expected = sigma * norm.ppf(beta.ppf(alpha, n, 1))  # lower bound when all n samples vote for the class
        assert max_certifiable_radius(n, alpha, sigma) == pytest.approx(expected)
    assert max_certifiable_radius(10_000, 0.001, 0.25) == pytest.approx(0.80, abs=0.01)


def test_figure2_names_dataset_images_n_and_epochs_and_ends_at_the_cap(store, tmp_path):
    data = certified_curves(store)
    caption = _panel_caption("convnext_atto, sigma 0.25", data)
    assert "Fashion-MNIST, 120 test images, N=10,000" in caption
    assert "epochs: SmoothMix 15, CRT 20" in caption
    cap = max_certifiable_radius(10_000, 0.001, 0.25)
    assert _axis_end(data) == pytest.approx(cap * 1.05)  # not 2.25: no empty two-thirds of the plot
    paths, drawn = plot_curves(data, tmp_path / "p")
    assert paths[0].is_file() and ("convnext_atto, sigma 0.25", "SmoothMix") in drawn


def test_training_curves_show_which_run_has_not_plateaued(store, tmp_path):
    data = training_curves(store)
    status = data.groupby("label")["status"].first()
    assert status["teacher SmoothMix resnet20"] == "plateaued"
    assert status["CRT convnext_atto <- resnet20"] == "rising"
    assert data["label"].iloc[0].startswith("teacher")  # the teacher's column comes first
    paths = plot_training_curves(data, tmp_path / "p")
    assert [p.suffix for p in paths] == [".png", ".pdf"] and paths[0].stat().st_size > 1000


def test_report_states_the_computed_verdict(store, tmp_path):
    # a recursive-CRT link (teacher: the CRT student) is not evidence for the direct-teacher claim
    store.append("runs", [run("link", "crt", "convnext_atto", 20, 600.0, "crt", "convnext_atto")])
    store.append("certify", certs("link", [(0.0, 0)] * 120))
    (ev,) = student_evidence(store)
    assert ev.crt_acr[0] == pytest.approx((0.45 + 0.6) / 3) and ev.difference[0] == pytest.approx(0.05 / 3)
    assert ev.speedup("pretrained teacher") == pytest.approx(6.0) and ev.speedup("proxy teacher") == pytest.approx(1.5)
    # the rising curve is shown but no longer decides; no Gaussian student: the guard says it did not check
    assert ev.not_plateaued == ("CRT convnext_atto (rising)",) and ev.under_trained == ()
    assert ev.training_check.startswith("not checked (no Gaussian-trained convnext_atto); teacher resnet20 noisy acc 0.760")
    assert ev.training_check.endswith(">= chance 0.1 + 0.05")  # the teacher side is checked: far above chance
    text = write_report(store, tmp_path / "out", figures={}, profile_note="").read_text()
    assert "CRT convnext_atto (rising)" in text and "images only (one seed)" in text


def test_acr_table_gives_certified_accuracy_and_acr_with_intervals(store):
    import re

    from crt_bench.report.paper_tables import acr_markdown, acr_table

    t = acr_table(store).set_index(["method", "arch"])
    sm = t.loc[("smoothmix", "convnext_atto")]
    assert sm["acc@0.00"] == pytest.approx(2 / 3) and sm["acc@0.00_low"] < sm["acc@0.00"] < sm["acc@0.00_high"]
    assert sm["ACR_low"] < sm["ACR"] < sm["ACR_high"]
    assert re.search(r"\| 0\.67 \[0\.\d\d, 0\.\d\d\] \|", acr_markdown(acr_table(store)))
