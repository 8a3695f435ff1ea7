"""The verdict on the paper's claim, computed from the certifications and hours in the store.

The claim (CRT paper, Figure 2 and Table 1): a CRT student has **equal-or-better certified
robustness than SmoothMix** on the same architecture **for much less training time**. Per student
architecture the evidence is: CRT ACR, SmoothMix ACR and the teacher's ACR with 95% bootstrap
intervals over images; CRT ACR - SmoothMix ACR with its paired interval (same images); SmoothMix hours
/ CRT hours, once with a pretrained teacher (the teacher's hours reported apart) and once in Table 1's
proxy setting (the teacher's hours counted); and whether each model's noisy test accuracy plateaued.

Rules (:class:`Thresholds`), per student and setting:

* robustness is *equal-or-better* when the whole interval of the difference lies above
  ``-margin x SmoothMix ACR`` (non-inferiority, the paper's own "comparable": 0.540 vs 0.550 is a 2%
  gap), *worse* when the whole interval lies below it, *unresolved* otherwise;
* speed is *much faster* when SmoothMix hours / CRT hours >= ``much_faster``;
* **refuted** when CRT is not much faster, or its robustness is worse with every model of the
  comparison trained to a plateau; **holds** when both parts hold with every model plateaued;
  **not resolved** otherwise (an interval too wide, or an under-trained model: the budget, not the
  method, may decide the comparison).

Overall: refuted if any student refutes it; holds if every student holds it; else not resolved.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

HOLDS, REFUTED, NOT_RESOLVED = "holds", "refuted", "not resolved"
EQUAL_OR_BETTER, WORSE, UNRESOLVED = "equal-or-better", "worse", "unresolved"
SETTINGS = ("pretrained teacher", "proxy teacher")


@dataclass(frozen=True)
class Thresholds:
    margin: float = 0.10  # CRT may be this fraction of SmoothMix's ACR below it and still count as equal
    much_faster: float = 1.5  # SmoothMix hours / CRT hours at least this: "much less training time"


@dataclass(frozen=True)
class StudentEvidence:
    """The numbers one student architecture contributes; intervals as (estimate, low, high)."""

    arch: str
    crt_acr: tuple[float, float, float]
    smoothmix_acr: tuple[float, float, float]
    difference: tuple[float, float, float]  # CRT - SmoothMix, paired over the same images
    smoothmix_hours: float
    crt_hours: float  # the student's own training (pretrained teacher)
    teacher_hours: float  # the teacher's training (counted in the proxy setting)
    teacher_acr: tuple[float, float, float] | None = None
    under_trained: tuple[str, ...] = ()  # models of this comparison whose curve has not plateaued
    images: int = 0

    @property
    def teacher_ratio(self) -> float:
        """CRT ACR / teacher ACR: how much of the teacher's robustness the student got."""
        if self.teacher_acr is None or not self.teacher_acr[0] > 0:
            return float("nan")
        return self.crt_acr[0] / self.teacher_acr[0]

    def speedup(self, setting: str) -> float:
        crt = self.crt_hours + (self.teacher_hours if setting == "proxy teacher" else 0.0)
        return self.smoothmix_hours / crt if crt > 0 else float("nan")


@dataclass(frozen=True)
class StudentVerdict:
    arch: str
    setting: str
    robustness: str
    speedup: float
    verdict: str
    reasons: list[str] = field(default_factory=list)


def robustness(ev: StudentEvidence, th: Thresholds = Thresholds()) -> str:
    margin = th.margin * max(ev.smoothmix_acr[0], 0.0)
    _, low, high = ev.difference
    if low >= -margin:
        return EQUAL_OR_BETTER
    if high < -margin:
        return WORSE
    return UNRESOLVED


def judge_student(ev: StudentEvidence, setting: str, th: Thresholds = Thresholds()) -> StudentVerdict:
    rob = robustness(ev, th)
    speed = ev.speedup(setting)
    fast = not math.isnan(speed) and speed >= th.much_faster
    reasons = [f"CRT - SmoothMix ACR {ev.difference[0]:+.3f} [{ev.difference[1]:+.3f}, {ev.difference[2]:+.3f}] "
               f"vs margin -{th.margin * max(ev.smoothmix_acr[0], 0.0):.3f}: {rob}",
               f"SmoothMix h / CRT h = {speed:.2f}x ({'>=' if fast else '<'} {th.much_faster:g}x)"]
    if ev.under_trained:
        reasons.append(f"not plateaued: {', '.join(ev.under_trained)}")
    if not fast:
        verdict = REFUTED
    elif ev.under_trained:
        verdict = NOT_RESOLVED
    elif rob == EQUAL_OR_BETTER:
        verdict = HOLDS
    elif rob == WORSE:
        verdict = REFUTED
    else:
        verdict = NOT_RESOLVED
    return StudentVerdict(ev.arch, setting, rob, speed, verdict, reasons)


def overall(verdicts: list[StudentVerdict]) -> str:
    if not verdicts:
        return NOT_RESOLVED
    kinds = {v.verdict for v in verdicts}
    if REFUTED in kinds:
        return REFUTED
    if kinds == {HOLDS}:
        return HOLDS
    return NOT_RESOLVED


def judge(evidence: list[StudentEvidence], th: Thresholds = Thresholds()) -> dict[str, tuple[str, list[StudentVerdict]]]:
    """Per setting: the overall verdict and each student's."""
    out = {}
    for setting in SETTINGS:
        per = [judge_student(ev, setting, th) for ev in evidence]
        out[setting] = (overall(per), per)
    return out


__all__ = ["EQUAL_OR_BETTER", "HOLDS", "NOT_RESOLVED", "REFUTED", "SETTINGS", "StudentEvidence", "StudentVerdict",
           "Thresholds", "UNRESOLVED", "WORSE", "judge", "judge_student", "overall", "robustness"]
