"""Slowdown table and cumulative-time figure, from hand-made timing rows with known answers."""
import pandas as pd
import pytest

from crt_bench.report.figures import LINES, cumulative_hours, plot_costs, plot_cumulative
from crt_bench.report.slowdown import slowdown_markdown, slowdown_table
from crt_bench.store.store import ResultsStore

DEVICE = "test-device"
# seconds per epoch for each (method, teacher) relative to Gaussian = 10 s; epochs per recipe
COST = {("gaussian", ""): (10.0, 150), ("smoothadv", ""): (440.0, 150), ("macer", ""): (30.0, 440),
        ("smoothmix", ""): (50.0, 150), ("crt", "resnet110"): (20.0, 200), ("crt", "resnet20"): (12.0, 200)}
ARCHS = {"resnet18": 1.0, "convnext_atto": 2.0, "resnet20": 0.5}  # per-arch cost multiplier


def timing_row(method, teacher, arch, when="2026-01-01T00:00:00+00:00"):
    epoch_s, epochs = COST[(method, teacher)]
    epoch_s *= ARCHS[arch]
    return {"method": method, "arch": arch, "teacher_arch": teacher, "sigma": 0.25, "device": DEVICE,
            "batch_size": 16, "fwd_bwd_passes": 1.0, "fwd_only_passes": 0.0, "epoch_seconds": epoch_s,
            "recipe_epochs": epochs, "recipe_hours": epoch_s * epochs / 3600, "precision": "fp32", "time": when,
            "hours_basis": "projected", "profile": "cpu"}


@pytest.fixture
def store(tmp_path):
    s = ResultsStore(tmp_path)
    s.append("timing", [timing_row(m, t, a) for (m, t) in COST for a in ARCHS])
    return s


def test_slowdown_ratios(store):
    t = slowdown_table(store)
    r18 = t[t["arch"] == "resnet18"].set_index(["method", "teacher"])
    assert r18.loc[("smoothadv", ""), "epoch_ratio"] == pytest.approx(44.0)
    assert r18.loc[("macer", ""), "recipe_ratio"] == pytest.approx(3.0 * 440 / 150)
    assert r18.loc[("crt", "resnet110"), "recipe_ratio"] == pytest.approx(2.0 * 200 / 150)
    assert r18.loc[("smoothadv", ""), "paper_ratio_resnet110"] == 46.20
    assert (t["hours_basis"] == "projected").all()
    assert t["method"].tolist()[:2] == ["gaussian", "crt"]  # baseline first
    md = slowdown_markdown(t)
    assert "| smoothadv |" in md and "46.20" in md and "projected" in md


def test_newest_probe_wins_and_measured_hours_replace_projections(store):
    newer = timing_row("smoothadv", "", "resnet18", when="2026-06-01T00:00:00+00:00")
    newer["epoch_seconds"] *= 2
    newer["recipe_hours"] *= 2
    store.append("timing", [newer])
    run = {"run_id": "r1", "method": "gaussian", "arch": "resnet18", "sigma": 0.25, "teacher_arch": "",
           "status": "finished", "profile": "paper", "train_seconds": 3600.0, "updated": 1.0, "device": DEVICE}
    # a run on another device: its hours never stand beside this device's probes
    store.append("runs", [run, {**run, "run_id": "r2", "arch": "convnext_atto", "device": "other-device"}])
    t = slowdown_table(store)
    r18 = t[t["arch"] == "resnet18"].set_index(["method", "teacher"])
    assert r18.loc[("smoothadv", ""), "epoch_ratio"] == pytest.approx(88.0)
    assert r18.loc[("gaussian", ""), "hours_basis"] == "measured" and r18.loc[("gaussian", ""), "hours"] == 1.0
    # SmoothAdv's hours are projected: its recipe ratio is projected over projected (88 x 150 / 150 epochs), not
    # its projected hours over Gaussian's measured hour (2 x 440 x 150 / 3600 = 36.7)
    assert r18.loc[("smoothadv", ""), "hours_basis"] == "projected"
    assert r18.loc[("smoothadv", ""), "recipe_ratio"] == pytest.approx(88.0)
    atto = t[t["arch"] == "convnext_atto"].set_index(["method", "teacher"])
    assert (atto["hours_basis"] == "projected").all()


def test_cumulative_hours_and_figure(store, tmp_path):
    t = slowdown_table(store)
    data = cumulative_hours(t)
    archs = data[data["position"] > 0].drop_duplicates("position").sort_values("position")["arch"].tolist()
    assert archs == ["resnet18", "convnext_atto"]  # generation order; the teacher resnet20 is not a generation
    smoothadv = data[data["line"] == "SmoothAdv"].sort_values("position")
    per_arch = [440.0 * 150 / 3600 * ARCHS[a] for a in archs]
    assert smoothadv["cumulative_hours"].tolist() == pytest.approx([per_arch[0], per_arch[0] + per_arch[1]])
    proxy = data[data["line"] == LINES[4][0]].sort_values("position")
    teacher_cost = 50.0 * 150 / 3600 * ARCHS["resnet20"]  # SmoothMix ResNet-20, counted once
    crt20 = [12.0 * 200 / 3600 * ARCHS[a] for a in archs]
    assert proxy["cumulative_hours"].tolist() == pytest.approx(
        [teacher_cost, teacher_cost + crt20[0], teacher_cost + crt20[0] + crt20[1]])

    paths, drawn = plot_cumulative(data, tmp_path / "plots")
    assert all(p.is_file() and p.stat().st_size > 1000 for p in paths)
    assert {p.suffix for p in paths} == {".png", ".pdf"}
    for label, part in data.groupby("line"):
        assert drawn[label] == pytest.approx(part.sort_values("position")["cumulative_hours"].tolist())

    # With measured costs, a second panel stacks each certified model's certification hours on its training
    # hours: a transfer's bar is shorter than CERTIFY's by exactly the certification hours it saved.
    costs = pd.DataFrame({"arch": ["convnext_atto"] * 2, "line": ["CRT (teacher resnet20)"] * 2,
                          "method": ["crt"] * 2, "seed": [0.0, 0.0], "certification": ["CERTIFY", "transfer (n_p=1000)"],
                          "train_hours": [0.5, 0.5], "certify_hours": [2.0, 0.25], "images": [500, 500],
                          "seconds_per_image": [14.4, 1.8], "N": [10_000, 10_000]})
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    plot_costs(costs, ax)
    ends = sorted(round(p.get_x() + p.get_width(), 6) for p in ax.patches)
    assert ends == [0.5, 0.5, 0.75, 2.5]
    plt.close(fig)
    two = plot_cumulative(data, tmp_path / "two", costs=costs)[0]
    assert all(p.is_file() and p.stat().st_size > 1000 for p in two)


def test_plot_command_writes_table_and_figure(store, tmp_path, capsys):
    from crt_bench.cli.app import main

    out = tmp_path / "plots"
    with pytest.raises(SystemExit) as info:
        main(["plot", str(store.root), "--out", str(out)])
    assert info.value.code in (0, None)
    table = pd.read_csv(out / "slowdown.csv")
    assert set(table["method"]) == {"gaussian", "smoothadv", "macer", "smoothmix", "crt"}
    assert (out / "cumulative_training_time.png").stat().st_size > 1000
    assert "smoothadv" in (out / "slowdown.md").read_text()


def test_larger_probe_profile_wins_over_a_newer_smaller_one(store):
    smoke = timing_row("smoothadv", "", "resnet18", when="2027-01-01T00:00:00+00:00")
    smoke.update(profile="smoke", epoch_seconds=1.0, recipe_hours=1.0 * 150 / 3600)
    store.append("timing", [smoke])
    r18 = slowdown_table(store).query("arch == 'resnet18'").set_index(["method", "teacher"])
    assert r18.loc[("smoothadv", ""), "epoch_ratio"] == pytest.approx(44.0)  # the cpu probe, not the smoke one
