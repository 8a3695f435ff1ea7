"""Certifications as jobs of their own: a student waits for its teacher's training, a transfer for its certificate."""
from __future__ import annotations

import sys
from dataclasses import replace

import pytest

from crt_bench.config import profiles
from crt_bench.config.certify import CertifyConfig
from crt_bench.grid import execute as execute_mod
from crt_bench.grid.bill import make_bill
from crt_bench.grid.executors import make_executor
from crt_bench.grid.jobs import CERTIFY_SUFFIX, GridSpec, split_certification
from crt_bench.grid.reproduce import plan_for
from crt_bench.grid.runner import run_grid
from crt_bench.store.store import ResultsStore


def _grid(**kw):
    return GridSpec(methods=["gaussian", "crt"], archs=["tiny_cnn"], teacher_archs=["tiny_cnn"],
                    teacher_method="smoothmix", transfer_methods=["crt"], epochs=1, train_limit=128, device="cpu",
                    **kw).jobs()


def test_split_keeps_training_keys_and_makes_a_transfer_wait_for_the_teachers_certificate():
    jobs = _grid()
    split = split_certification(jobs)
    trainings, certs = split[:len(jobs)], split[len(jobs):]
    assert [j.key for j in trainings] == [j.key for j in jobs] and not any(j.certify for j in trainings)
    assert [c.key for c in certs] == [j.key + CERTIFY_SUFFIX for j in jobs]
    teacher, gaussian, crt = certs
    def needs(job):
        return [n.key for n in job.needs]

    assert needs(teacher) == [trainings[0].key] and needs(gaussian) == [trainings[1].key]
    assert needs(crt) == [trainings[2].key, teacher.key]  # the transfer needs the teacher's certification
    assert needs(trainings[2]) == [trainings[0].key]  # the student's training needs the teacher's training only


def test_a_split_grid_trains_everything_before_certifying_and_certifies_every_run(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "submitit", None)
    small = CertifyConfig(n0=10, n=50, alpha=0.001, batch=50, subset="range:0:3")
    monkeypatch.setitem(profiles.PROFILES, "smoke", replace(profiles.PROFILES["smoke"], certify=small))
    real, order = execute_mod.execute_job, []

    def recording(job, results):
        order.append(("certify" if job.trained is not None else "train", job.method))
        return real(job, results)

    monkeypatch.setattr(execute_mod, "execute_job", recording)
    jobs = split_certification(_grid())
    status = run_grid(jobs, tmp_path, make_executor("inline", tmp_path), poll_s=0.0)
    assert set(status["state"]) == {"finished"}, status
    assert [stage for stage, _ in order] == ["train"] * 3 + ["certify"] * 3  # the student did not wait
    store = ResultsStore(tmp_path)
    runs = store.runs()
    certs = store.certification_states(transfers=True)
    assert set(certs["run_id"]) == set(runs["run_id"]) and len(certs["cert_id"].unique()) == 4  # 3 + a transfer
    again = run_grid(jobs, tmp_path, make_executor("inline", tmp_path), poll_s=0.0)
    assert set(again["state"]) == {"skipped (finished)"} and len(order) == 6  # nothing runs twice


def test_the_paper_plan_certifies_in_jobs_of_their_own_and_its_bill_says_so():
    plan = plan_for("paper")
    jobs = plan.jobs()
    certs = [j for j in jobs if j.trained is not None]
    assert certs and all(not j.certify for j in jobs if j.trained is None)
    assert len(certs) == sum(1 for j in plan.grid.jobs() if j.certify) + sum(1 for j in plan.extra if j.certify)
    split, whole = make_bill(jobs), make_bill(replace(plan, split_certify=False).jobs())
    assert split.total_hours == pytest.approx(whole.total_hours) and split.wall_hours <= whole.wall_hours
