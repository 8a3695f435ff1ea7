"""The verdict on the paper's claim, computed from the certifications and hours in the store.

The claim (CRT paper, Figure 2 and Table 1): a CRT student has **equal-or-better certified
robustness than SmoothMix** on the same architecture **for much less training time**. Per student
architecture the evidence is: CRT ACR, SmoothMix ACR and the teacher's ACR with 95% bootstrap
intervals (over images, and over seeds too when both students have several: :mod:`crt_bench.analysis.seeds`);
CRT ACR - SmoothMix ACR with its interval paired over the same images; SmoothMix hours / CRT hours, once
with a pretrained teacher (the teacher's hours reported apart) and once in Table 1's proxy setting (the
teacher's hours counted); and the under-training guard (:mod:`crt_bench.analysis.training_check`).

Rules (:class:`Thresholds`), per student and setting:

* robustness is *equal-or-better* when the whole interval of the difference lies above
  ``-margin x SmoothMix ACR`` (non-inferiority, the paper's own "comparable": 0.540 vs 0.550 is a 2%
  gap), *worse* when the whole interval lies below it, *unresolved* otherwise;
* speed is *much faster* when SmoothMix hours / CRT hours >= ``much_faster``;
* a cell whose Gaussian-trained student is far below the teacher is **under-trained**: the budget, not
  the method, may decide the comparison, so the cell is **not resolved** whatever its numbers;
* otherwise **refuted** when CRT is not much faster or its robustness is worse; **holds** when both parts
  hold; **not resolved** when the interval is too wide to say.

Whether a curve plateaued is reported (``not_plateaued``) but is not evidence: a step-decay schedule makes
every curve flat after its last decay.

Overall: refuted if any resolved student refutes it; holds if every student holds it; else not resolved.
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
    under_trained: tuple[str, ...] = ()  # the guard's finding when the cell is under-trained (else empty)
    images: int = 0
    training_check: str = "not checked"  # the guard's rule applied, with its numbers
    not_plateaued: tuple[str, ...] = ()  # models whose curve still rose at the end (shown, not evidence)
    crt_seed_acrs: tuple[float, ...] = ()  # each CRT seed's ACR
    smoothmix_seed_acrs: tuple[float, ...] = ()
    certified: tuple[tuple[float, float, float], ...] = ()  # (radius, CRT, SmoothMix) certified accuracy: shown

    @property
    def seeds(self) -> tuple[int, int]:
        """(CRT seeds, SmoothMix seeds); one each when not given."""
        return (max(1, len(self.crt_seed_acrs)), max(1, len(self.smoothmix_seed_acrs)))

    @property
    def interval_kind(self) -> str:
        """What the intervals resample: seeds and images, or images only."""
        crt, sm = self.seeds
        if crt >= 2 and sm >= 2:
            return "seeds and images"
        if crt == 1 and sm == 1:
            return "images only (one seed)"
        return f"seeds and images (CRT {crt} seed(s), SmoothMix {sm})"

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
    under_trained: tuple[str, ...] = ()

    @property
    def label(self) -> str:
        """The verdict as the report words it: ``not resolved (under-trained: ...)`` for an under-trained cell."""
        return f"{self.verdict} (under-trained: {'; '.join(self.under_trained)})" if self.under_trained else self.verdict


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
    if not ev.under_trained:  # an under-trained cell's label gives the guard's numbers
        reasons.append(f"under-training check: {ev.training_check}")
    if ev.under_trained:
        verdict = NOT_RESOLVED
    elif not fast:
        verdict = REFUTED
    elif rob == EQUAL_OR_BETTER:
        verdict = HOLDS
    elif rob == WORSE:
        verdict = REFUTED
    else:
        verdict = NOT_RESOLVED
    return StudentVerdict(ev.arch, setting, rob, speed, verdict, reasons, ev.under_trained)


def overall(verdicts: list[StudentVerdict]) -> str:
    """Refuted only by a resolved cell (an under-trained cell is never refuted), holds only if every cell holds."""
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
