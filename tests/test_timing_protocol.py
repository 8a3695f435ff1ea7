"""`crt-bench time --protocol paper --precision --set`: the official scripts' loop, its rows, its bad inputs,
and the slowdown table that names its baseline."""
from __future__ import annotations

import ast
import itertools

import pytest
import torch

from crt_bench.report.slowdown import slowdown_markdown, slowdown_table
from crt_bench.store.store import ResultsStore
from crt_bench.timing.paper import prepare_paper
from crt_bench.timing.probe import ProbeConfig
from test_cli import cli

TINY = ("--profile", "smoke", "--arch", "tiny_cnn", "--device", "cpu", "--repeats", "1")


def test_paper_protocol_rows_say_protocol_precision_and_hyper_parameters(tmp_path):
    code, _, err = cli("time", *TINY, "--protocol", "paper", "--precision", "fp32", "--set", "smoothadv.m=2",
                       "--set", "smoothadv.T=1", "--method", "smoothadv", "--results", tmp_path)  # T=1: seconds
    assert code == 0, err
    rows = ResultsStore(tmp_path).read("timing").set_index(["method", "recipe"])
    assert sorted(rows.index) == [("gaussian", "150x256"), ("smoothadv", "150x256"), ("standard", "150x256"),
                                  ("standard", "200x128")], "the baselines are timed beside"
    assert set(rows["protocol"]) == {"paper"} and set(rows["precision"]) == {"fp32"}
    smoothadv = rows.loc[("smoothadv", "150x256")]
    hparams = ast.literal_eval(smoothadv["hparams"])
    assert (hparams["num_noise_vec"], hparams["num_steps"], smoothadv["optimizer_steps_per_batch"]) == (2, 1, 2)
    assert smoothadv["config"].startswith("m=2 T=1 ") and "ACR" not in smoothadv["config"]
    assert "attacked test pass" in smoothadv["measure"] and "projected to an epoch" in smoothadv["measure"]
    assert "clean+noisy test pass" in rows.loc[("standard", "200x128"), "measure"]
    md = slowdown_markdown(slowdown_table(ResultsStore(tmp_path)))
    assert "paper protocol, fp32" in md and "x standard 200x128" in md and "Baseline: Gaussian training" in md
    table = slowdown_table(ResultsStore(tmp_path)).set_index(["method", "recipe"])
    assert table.loc[("standard", "200x128"), "ratio_standard_200x128"] == pytest.approx(1.0)
    assert table.loc[("smoothadv", "150x256"), "expected_ratio"] == pytest.approx(2 * (1 + 1)), "m(T+1) passes"


@pytest.mark.parametrize("args, says", [
    (("--protocol", "official"), "unknown timing protocol 'official'"),
    (("--set", "smoothadv.k=4"), "has no hyper-parameter 'k'"),
    (("--set", "smoothadv=4"), "METHOD.KEY=VALUE"),
    (("--set", "macer.m=4"), "not timed here"),
    (("--precision", "tf32"), "--precision tf32 needs an NVIDIA GPU"),
    (("--precision", "bf16"), "--precision bf16 needs a GPU"),
    (("--precision", "fp64"), "unknown precision 'fp64'"),
])
def test_bad_input_is_one_clear_line_before_any_timing(tmp_path, args, says):
    code, _, err = cli("time", *TINY, "--method", "smoothadv", *args, "--results", tmp_path)
    lines = [line for line in err.splitlines() if line.strip() and not line.startswith(("─", "synthetic", "epochs",
                                                                                         "device", "timing"))]
    assert code == 2 and len(lines) == 1 and says in lines[0], err
    assert ResultsStore(tmp_path).read("timing").empty, "nothing was timed"


def _probe(train_images: int, test_images: int, batches: int, method: str = "gaussian"):
    cfg = ProbeConfig(batches=batches, warmup=1, repeats=1, batch_size=8, train_images=train_images,
                      test_images=test_images, protocol="paper", amp=False)
    probe = prepare_paper(method, "tiny_cnn", cfg=cfg, device="cpu")
    calls = {"train": 0, "test": 0}
    step = probe.step

    def counted_step(x, y):
        calls["train"] += 1
        assert x.dtype == torch.float32 and x.shape[1:] == (3, 32, 32) and 0 <= x.min() and x.max() <= 1
        return step(x, y)

    def counted_test():
        calls["test"] += 1
        return 0.0

    probe.step, probe._test_batch = counted_step, counted_test
    return probe, calls


def test_whole_epochs_run_the_whole_test_pass():
    probe, calls = _probe(train_images=16, test_images=24, batches=2)
    assert probe.measure(2).startswith("whole epochs (noisy test pass; 4 loader workers)")
    probe.time_batches(2)
    assert calls == {"train": 2, "test": 3}, "an epoch's 2 training batches and all 3 test batches"


def test_k_batches_project_the_test_pass_by_its_share():
    probe, calls = _probe(train_images=80, test_images=24, batches=2)  # 10 train, 3 test batches an epoch
    clock = itertools.count().__next__  # every reading one second later: train 1 s, the test batch 1 s
    assert probe.time_batches(2, clock) == pytest.approx((1 + 1 * 0.6) / 2), "the test pass's share: 2 x 3 / 10"
    assert calls == {"train": 2, "test": 1}
    assert "2 loader batches" in probe.measure(2) and "projected" in probe.measure(2)


def test_macer_loads_with_one_worker_and_has_no_test_pass():
    probe, calls = _probe(train_images=16, test_images=24, batches=2, method="macer")
    probe.time_batches(2)
    assert calls["test"] == 0 and "no test pass; 1 loader workers" in probe.measure(2)
