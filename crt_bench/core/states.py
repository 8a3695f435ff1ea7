"""The states of a training run, a certification and a grid job, as str Enums.

The values are the strings stored in the ``runs``/``certifications`` tables and in ``grid_status.json``,
so stored rows written before these Enums read the same; a member compares equal to its value, and
``str()``/f-strings give the value (on every Python version), so rows and messages hold plain text.
"""
from __future__ import annotations

from enum import Enum


class _StrEnum(str, Enum):
    __str__ = str.__str__  # Python >= 3.11 formats a mixed-in Enum as "Class.MEMBER" otherwise
    __format__ = str.__format__


class RunStatus(_StrEnum):
    """The ``status`` of a training run (``runs``) or of a certification (``certifications``)."""

    RUNNING = "running"
    FINISHED = "finished"
    FAILED = "failed"
    INTERRUPTED = "interrupted"


class JobState(_StrEnum):
    """The ``state`` of one job of a grid (``sweep``, ``chain``, ``reproduce``; ``grid_status.json``)."""

    PENDING = "pending"
    RUNNING = "running"
    FINISHED = "finished"
    SKIPPED = "skipped (finished)"  # its work was already in the results folder
    FAILED = "failed"
    BLOCKED = "blocked (teacher failed)"
    INTERRUPTED = "interrupted"
    MISSING = "missing"  # a teacher the grid did not run and the store does not hold
    NOT_FINISHED = "not finished"
    SUBMITTED = "submitted"  # a detached grid's job, the scheduler's now (crt-bench status tells how it goes)

    @property
    def done(self) -> bool:
        """Its work is in the results folder (finished now or before)."""
        return self in DONE_STATES

    @property
    def failed(self) -> bool:
        """It ended without its work: its dependants are blocked and the command exits non-zero."""
        return self in FAILED_STATES


DONE_STATES: tuple[JobState, ...] = (JobState.FINISHED, JobState.SKIPPED)
FAILED_STATES: tuple[JobState, ...] = (JobState.FAILED, JobState.BLOCKED, JobState.INTERRUPTED, JobState.MISSING,
                                       JobState.NOT_FINISHED)

__all__ = ["DONE_STATES", "FAILED_STATES", "JobState", "RunStatus"]
