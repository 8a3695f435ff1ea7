"""Run and job states are str Enums whose values are the strings already stored in rows and grid_status.json."""
from __future__ import annotations

import json

import pandas as pd

from crt_bench.core.states import DONE_STATES, FAILED_STATES, JobState, RunStatus


def test_values_are_the_stored_strings_and_read_back() -> None:
    assert [s.value for s in RunStatus] == ["running", "finished", "failed", "interrupted"]
    assert JobState("skipped (finished)") is JobState.SKIPPED
    assert JobState("blocked (teacher failed)") is JobState.BLOCKED
    assert JobState("not finished") is JobState.NOT_FINISHED


def test_members_read_as_their_value_in_text_json_and_frames() -> None:
    assert f"{JobState.BLOCKED}" == str(JobState.BLOCKED) == "blocked (teacher failed)"
    assert json.loads(json.dumps({"state": JobState.SKIPPED})) == {"state": "skipped (finished)"}
    states = pd.Series(["finished", "skipped (finished)", "failed", "pending", "blocked (teacher failed)"])
    assert states.isin(DONE_STATES).tolist() == [True, True, False, False, False]
    assert states.isin(FAILED_STATES).tolist() == [False, False, True, False, True]
    assert "finished" == RunStatus.FINISHED and {"finished": 1}[RunStatus.FINISHED] == 1


def test_every_job_state_is_done_failed_or_still_open() -> None:
    open_states = {s for s in JobState if not s.done and not s.failed}
    assert open_states == {JobState.PENDING, JobState.RUNNING, JobState.SUBMITTED}  # submitted: the scheduler's now
    assert not any(s.done and s.failed for s in JobState)
