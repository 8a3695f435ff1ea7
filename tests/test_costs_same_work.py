"""Costs counted from the same work: denoised smoothing's classifier counted (once) in its model's hours, and
CERTIFY's seconds shown with the share of images that abstained (exact early abstention shortens them)."""
import math

import pandas as pd
import pytest

from crt_bench.analysis.costs import abstained_share, pipeline_hours


def test_a_denoised_model_costs_its_classifier_once():
    denoised = {"method": "denoised", "hours": 0.5, "teacher_dedicated": False, "teacher_train_seconds": 7200.0}
    assert pipeline_hours(denoised) == pytest.approx(2.5)  # 0.5 h denoiser + 2 h classifier
    # a classifier trained only for it is already in the run's total: not counted twice
    assert pipeline_hours({**denoised, "teacher_dedicated": True}) == pytest.approx(0.5)
    # the teacher run's hours when the run did not record its classifier's
    assert pipeline_hours({**denoised, "teacher_train_seconds": float("nan"), "teacher_run_train_seconds": 3600.0}) \
        == pytest.approx(1.5)
    # unknown classifier hours: unknown, never 0 (denoised smoothing is not free to train)
    assert math.isnan(pipeline_hours({**denoised, "teacher_train_seconds": float("nan")}))
    # other methods: a CRT student's pretrained teacher is reported apart, as before
    assert pipeline_hours({**denoised, "method": "crt"}) == pytest.approx(0.5)


def test_abstained_share():
    assert abstained_share(pd.DataFrame({"predict": [-1, 3, -1, 0]})) == pytest.approx(0.5)
    assert abstained_share(pd.DataFrame({"predict": [1, 2]})) == 0.0
    assert math.isnan(abstained_share(pd.DataFrame({"radius": [0.1]})))
