"""The fp32 agreement check of a lower-precision certification: compared, recorded once, reported.

On CPU, the stored bf16-autocast certification against fp32 on the tiny trained model, under the same noise (keyed by seed and
image): at most one prediction of 8 changes and the radii differ by less than a tenth of the largest
certifiable radius; the control, a perturbed copy of the classifier, must fail the same thresholds.
"""
from __future__ import annotations

import copy
from dataclasses import replace

import pandas as pd
import pytest
import torch

from crt_bench.certify.agreement import check_agreement, compare
from crt_bench.certify.driver import certify_dataset
from crt_bench.certify.resumable import certify_run
from crt_bench.config.certify import CertifyConfig
from crt_bench.core.errors import CrtBenchError
from crt_bench.data.datasets import load_split
from crt_bench.models.files import load_model
from crt_bench.report.agreement import agreement_section

SAMPLE = CertifyConfig(n0=20, n=200, alpha=0.001, subset="range:0:64:8", precision="bf16", agreement_images=8)


def _rows(predict, radius):
    return pd.DataFrame({"idx": range(len(predict)), "predict": predict, "radius": radius})


def test_compare_counts_changed_predictions_and_radius_differences():
    ref = _rows([0, 1, 2, -1], [0.5, 0.25, 0.1, 0.0])
    assert compare(ref, ref) == dict(images=4, same_predict=1.0, radius_diff_mean=0.0, radius_diff_max=0.0,
                                     certified_both=3)
    low = _rows([0, 3, 2, -1], [0.4, 0.25, 0.1, 0.0])  # one changed prediction, one radius 0.1 smaller
    got = compare(low, ref)
    assert got["same_predict"] == 0.75 and got["certified_both"] == 2
    assert got["radius_diff_mean"] == pytest.approx(0.025) and got["radius_diff_max"] == pytest.approx(0.1)
    with pytest.raises(CrtBenchError, match="different images"):
        compare(low.iloc[:3], ref)


def test_only_a_lower_precision_with_a_sample_is_checked():
    assert SAMPLE.checks_agreement
    assert not CertifyConfig(precision="fp32", agreement_images=5).checks_agreement
    assert CertifyConfig(precision="fp32", compile=True, agreement_images=5).checks_agreement
    assert not CertifyConfig(precision="bf16").checks_agreement  # no sample asked for


def test_bf16_agrees_with_fp32_under_the_same_noise_is_recorded_once_and_reported(store_copy):
    store, run_id = store_copy
    assert agreement_section(store)[2].startswith("Trained but not certified (1")  # nothing certified yet
    with pytest.raises(CrtBenchError, match="certify the run first"):
        check_agreement(run_id, store, SAMPLE, device="cpu")
    certify_run(run_id, store, replace(SAMPLE, subset="range:0:32:4"), device="cpu", progress=False)
    with pytest.raises(CrtBenchError, match="certify the run first"):  # another subset: not this certification
        check_agreement(run_id, store, SAMPLE, device="cpu")
    certify_run(run_id, store, SAMPLE, device="cpu", progress=False)  # bf16, the 8 images of the sample
    row = check_agreement(run_id, store, SAMPLE, device="cpu")
    assert row["images"] == 8 and row["precision"] == "bf16" and row["reference"] == "fp32"
    stored = store.read("agreement", raw=True)
    assert len(stored) == 1 and stored["schema_version"].tolist() == [2]
    assert row["same_predict"] >= 7 / 8 and row["radius_diff_mean"] < 0.05

    # Control: the same thresholds reject a different classifier (the weights perturbed) under the same noise.
    loaded = load_model(run_id, store.root)
    other = copy.deepcopy(loaded.model).eval()
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in other.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * p.std())
    test = load_split("synthetic", "test")
    kw = dict(sigma=float(loaded.meta["sigma"]), num_classes=10, n0=SAMPLE.n0, n=SAMPLE.n, alpha=SAMPLE.alpha,
              batch_size=None, indices=list(range(0, 64, 8)), progress=False, seed=0)
    control = compare(certify_dataset(other, test.x, test.y, precision="bf16", **kw),
                      certify_dataset(loaded.model.eval(), test.x, test.y, **kw))
    assert not (control["same_predict"] >= 7 / 8 and control["radius_diff_mean"] < 0.05), control

    again = check_agreement(run_id, store, SAMPLE, device="cpu")  # found, nothing certified again
    assert len(store.read("agreement")) == 1 and again["same_predict"] == row["same_predict"]
    text = "\n".join(agreement_section(store))
    assert "| gaussian tiny_cnn seed 0 | bf16 | 200 | 8 |" in text and "same prediction" in text
    assert "Trained but not certified" not in text


def test_a_grid_job_certifies_then_checks_agreement(tmp_path, monkeypatch):
    from crt_bench.config import profiles
    from crt_bench.grid.execute import execute_job
    from crt_bench.grid.jobs import Job
    from crt_bench.store.store import ResultsStore

    sized = CertifyConfig(n0=10, n=50, alpha=0.001, subset="range:0:24:8", precision="bf16", agreement_images=2)
    monkeypatch.setitem(profiles.PROFILES, "smoke", replace(profiles.PROFILES["smoke"], certify=sized))
    job = Job("gaussian", "tiny_cnn", profile="smoke", epochs=1, train_limit=128, device="cpu")
    run_id = execute_job(job, str(tmp_path))
    store = ResultsStore(tmp_path)
    rows = store.read("certify")
    assert sorted(rows["idx"]) == [0, 8, 16] and set(rows["precision"]) == {"bf16"}
    agreement = store.read("agreement")
    assert agreement[["run_id", "images", "precision"]].values.tolist() == [[run_id, 2, "bf16"]]
    assert execute_job(job, str(tmp_path)) == run_id and len(store.read("agreement")) == 1  # done: not again
    fp32 = replace(job, certify_precision="fp32")  # fp32 selected: no agreement check to make
    assert fp32.certify_config("cpu").checks_agreement is False
