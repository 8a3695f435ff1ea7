"""Recursive CRT chains: nested job keys, resume after a kill without retraining, the per-link table."""
from __future__ import annotations

import pandas as pd
import pytest

from crt_bench.analysis.chains import agreement, chain_table
from crt_bench.core.errors import CrtBenchError
from crt_bench.grid import execute as execute_mod
from crt_bench.grid.chain import ChainSpec, grid_jobs, run_chain
from crt_bench.grid.executors import make_executor
from crt_bench.grid.jobs import Job
from crt_bench.store.chains import saved_chains
from crt_bench.store.store import ResultsStore
from crt_bench.train import trainer as train_mod

TINY = dict(profile="smoke", epochs=1, train_limit=128)


def tiny_chain(links: int = 3) -> ChainSpec:
    root = Job("gaussian", "tiny_cnn", **TINY)
    return ChainSpec(root=root, archs=("tiny_cnn",) * links, order="given", **TINY)


def test_links_nest_their_teachers_and_release_order_sorts_by_year():
    spec = ChainSpec(root="RUN", archs=("mobilenetv4_conv_small", "resnet18", "efficientvit_b0"), profile="cpu")
    assert spec.ordered_archs() == ["resnet18", "efficientvit_b0", "mobilenetv4_conv_small"]
    links = spec.links()
    assert links[0].teacher_ref == "RUN" and links[0].key.endswith("<-[RUN]")
    assert links[1].teacher is links[0] and links[2].key.endswith(f"<-[{links[1].key}]")
    assert spec.direct("mobilenetv4_conv_small").key.endswith("<-[RUN]")
    with pytest.raises(CrtBenchError, match="chain order"):
        ChainSpec(root="RUN", archs=("resnet18",), order="random").links()


def test_first_link_from_a_grid_job_is_that_grid_job():
    from crt_bench.grid.reproduce import plan_for

    plan = plan_for("smoke")
    teacher = next(j for j in plan.grid.jobs() if j.method == "smoothmix" and j.arch == "resnet20")
    student = next(j for j in plan.grid.jobs() if j.method == "crt")
    spec = ChainSpec(root=teacher, archs=(student.arch, "efficientvit_b0"), order="given", profile="smoke",
                     train_limit=plan.grid.train_limit)
    assert spec.links()[0].key == student.key


def test_agreement_counts_shared_images_only():
    root = pd.DataFrame({"idx": [0, 1, 2, 3], "predict": [1, 2, -1, 0], "radius": [0.5, 0.2, 0.0, 1.0]})
    link = pd.DataFrame({"idx": [1, 2, 3, 9], "predict": [2, -1, 1, 1], "radius": [0.4, 0.0, 0.0, 3.0]})
    same, diff, shared = agreement(root, link)
    assert shared == 3 and same == pytest.approx(2 / 3) and diff == pytest.approx((0.2 + 0 + 1.0) / 3)


def test_a_killed_chain_resumes_without_retraining_a_finished_link(tmp_path, monkeypatch):
    spec = tiny_chain(3)
    links = spec.links()
    trained: list[str] = []
    real_train = train_mod.train_run

    def train_or_kill(cfg, store, **kw):
        trained.append(cfg.job_key)
        if cfg.job_key == links[1].key and len(trained) == 3:  # root, link 1, then killed at link 2
            raise KeyboardInterrupt
        return real_train(cfg, store, **kw)

    monkeypatch.setattr(execute_mod, "train_run", train_or_kill)
    ex = make_executor("debug", tmp_path / "submitit")
    with pytest.raises(KeyboardInterrupt):
        run_chain(spec, tmp_path, ex, poll_s=0.01)
    store = ResultsStore(tmp_path)
    assert trained == [spec.root.key, links[0].key, links[1].key]
    first_link_run = store.runs().set_index("job_key").loc[links[0].key, "run_id"]
    certified_before = store.read("certify").groupby("run_id").size()

    trained.clear()
    status = run_chain(spec, tmp_path, ex, poll_s=0.01)
    assert trained == [links[1].key, links[2].key]  # neither the root nor link 1 retrained
    assert list(status["state"]) == ["skipped (finished)", "skipped (finished)", "finished", "finished"]
    runs = store.runs()
    assert runs[runs["job_key"] == links[0].key]["run_id"].tolist() == [first_link_run]
    certified = store.read("certify").groupby("run_id").size()
    for run_id, n in certified_before.items():
        assert certified[run_id] == n  # finished certifications were not repeated

    (chain,) = saved_chains(tmp_path)
    table = chain_table(store, chain)
    assert list(table["generation"]) == [0, 1, 2, 3] and (table["status"].iloc[1:] == "finished").all()
    assert table["images"].eq(20).all() and table["shared_images"].eq(20).all()  # smoke: 20 images each
    assert table["agreement"].iloc[0] == 1.0 and table["mean_abs_radius_diff"].iloc[0] == 0.0
    assert (table["cumulative_hours"].diff().iloc[1:] > 0).all()
    hours = store.runs().set_index("run_id")["train_seconds"] / 3600
    assert table["cumulative_hours"].iloc[-1] == pytest.approx(hours[table["run_id"]].sum())
    # Every link is a tiny_cnn: the direct CRT from the root to it is link 1, the reference of every link.
    assert (table["direct_ACR"].iloc[1:] == table["ACR"].iloc[1]).all()
    assert table["direct_ACR"].iloc[0] != table["direct_ACR"].iloc[0]  # the root has no reference (NaN)


def test_plot_draws_the_chain_and_the_report_has_its_section(tmp_path, monkeypatch):
    spec = tiny_chain(1)
    run_chain(spec, tmp_path, make_executor("debug", tmp_path / "submitit"), poll_s=0.01)
    from crt_bench.report.build import build_all

    written = build_all(tmp_path, tmp_path / "plots")
    assert any(p.suffix == ".png" for p in written["chains"])
    report = (tmp_path / "plots" / "REPORT.md").read_text()
    assert "## Recursive CRT: chains of generations" in report and "agreement with root" in report
    assert "## Cost-robustness leaderboard" in report
    assert (tmp_path / "plots" / "leaderboard" / "LEADERBOARD.md").is_file()
    assert len(grid_jobs(spec)) == 2


def test_cli_chain_from_a_run_id_certifies_the_root_and_prints_the_table(tmp_path):
    from test_cli import FAST_RUN, cli, last_line

    code, stdout, stderr = cli("run", "--method", "gaussian", "--arch", "tiny_cnn", *FAST_RUN, "--results", tmp_path)
    assert code == 0, stderr
    root = last_line(stdout)
    code, stdout, stderr = cli("chain", "--teacher", root, "--arch", "tiny_cnn", "--profile", "smoke", "--epochs",
                               "1", "--train-limit", "128", "--executor", "debug", "--results", tmp_path)
    assert code == 0, stderr
    assert "| 0 | tiny_cnn | – | root |" in stdout and "| 1 | tiny_cnn | tiny_cnn | finished |" in stdout
    certified = ResultsStore(tmp_path).read("certify")
    assert set(certified.groupby("run_id").size()) == {20}  # root and link on the same 20 images
    code, _, stderr = cli("chain", "--teacher", root, "--arch", "tiny_cnn", "--order", "random", "--results", tmp_path)
    assert code == 2 and "'--order'" in stderr and "'random' is not one of" in stderr


def test_cpu_full_runs_a_three_link_chain_from_the_grid_teacher_in_the_same_grid():
    from crt_bench.grid.reproduce import plan_for

    plan = plan_for("cpu-full")
    grid_keys = [j.key for j in plan.grid.jobs()]
    links = plan.chain.links()
    assert len(links) == 3 and plan.chain.root.key in grid_keys  # the grid's SmoothMix ResNet-20 teacher
    assert [j.arch for j in links] == ["regnetx_002", "efficientvit_b0", "mobilenetv4_conv_small"]
    assert [j.key for j in plan.jobs()] == [*grid_keys, *[j.key for j in links], *[j.key for j in plan.extra]]
    assert all(link.transfer for link in links)  # each link is also certified by transfer from the previous one
    # The grid's direct CRT students are the chain's reference lines.
    assert {plan.chain.direct(a).key for a in ("efficientvit_b0", "mobilenetv4_conv_small")} <= set(grid_keys)
    assert "recursive CRT chain resnet20 -> regnetx_002" in plan.describe()
    assert plan_for("cpu").chain is None and plan_for("smoke").chain is None  # the default's 90 minutes
