"""The verdict on the paper's claim, computed from the certifications and hours in the store.

The claim (CRT paper, Figure 2 and Table 1): a CRT student has **equal-or-better certified
robustness than SmoothMix** on the same architecture **for much less training time**. Per student
architecture the evidence is: CRT ACR, SmoothMix ACR and the teacher's ACR with 95% bootstrap
intervals (over images, and over seeds too when both students have several: :mod:`crt_bench.analysis.seeds`);
CRT ACR - SmoothMix ACR with its interval paired over the same images; SmoothMix hours / CRT hours, once
with a pretrained teacher (the teacher's hours reported apart) and once in Table 1's proxy setting (the
teacher's hours counted per student; amortised over the students that reuse the teacher too, shown, not
judged), with a 95% interval from the repeated runs (the seeds: :func:`speed_interval`) where both have
several, else a point estimate; and the under-training guard (:mod:`crt_bench.analysis.training_check`).

Rules (:class:`Thresholds`), per student and setting:

* robustness is *equal-or-better* when the whole interval of the difference lies above
  ``-margin x SmoothMix ACR`` (non-inferiority, the paper's own "comparable": 0.540 vs 0.550 is a 2%
  gap), *worse* when the whole interval lies below it, *unresolved* otherwise;
* speed is *much faster* when the speed-up's interval lies wholly at or above ``much_faster``, *not much
  faster* when it lies wholly below, *unresolved* otherwise (a point estimate: decided by the point);
* speed is judged on its own: the ratio does not depend on the training budget, so a cell whose CRT is
  not much faster is **refuted** whatever the guard says;
* a cell whose Gaussian-trained student is far below the teacher is **under-trained**, and one whose guard
  could not be checked (no Gaussian student or no teacher curve) is **unchecked**: the budget, not the
  method, may decide the robustness comparison, so either is **not resolved** unless speed refutes it;
* otherwise **refuted** when its robustness is worse; **holds** when both parts hold; **not resolved**
  when an interval is too wide to say.

Whether a curve plateaued is reported (``not_plateaued``) but is not evidence: a step-decay schedule makes
every curve flat after its last decay.

Overall: refuted if any student refutes it; holds if every student holds it; else not resolved.
"""
from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field

from scipy import stats

from crt_bench.core.constants import INTERVAL_LEVEL

HOLDS, REFUTED, NOT_RESOLVED = "holds", "refuted", "not resolved"
EQUAL_OR_BETTER, WORSE, UNRESOLVED = "equal-or-better", "worse", "unresolved"
FAST, SLOW = "much faster", "not much faster"
SETTINGS = ("pretrained teacher", "proxy teacher")


@dataclass(frozen=True)
class Thresholds:
    margin: float = 0.10  # CRT may be this fraction of SmoothMix's ACR below it and still count as equal
    much_faster: float = 1.5  # SmoothMix hours / CRT hours at least this: "much less training time"


@dataclass(frozen=True)
class StudentEvidence:
    """The numbers one student architecture contributes; intervals as (estimate, low, high)."""

    arch: str  # the student's architecture
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
    guard_missing: str = ""  # why the under-training guard could not be checked ("": it was)
    crt_seed_hours: tuple[float, ...] = ()  # each seed's training hours: the repeated runs of the speed interval
    smoothmix_seed_hours: tuple[float, ...] = ()
    teacher_students: int = 1  # CRT students (runs) that reuse this teacher: the amortised proxy speed-up
    certification: str = ""  # what every compared certification shares: N0, N, alpha, precision, subset, cap
    teacher: str = ""  # the teacher, named where several teachers taught this architecture ("": one did)

    @property
    def student(self) -> str:
        """The student as the report names it: its architecture, and its teacher where several taught it."""
        return f"{self.arch} <- {self.teacher}" if self.teacher else self.arch

    @property
    def seeds(self) -> tuple[int, int]:
        """(CRT seeds, SmoothMix seeds); one each when not given."""
        return (max(1, len(self.crt_seed_acrs)), max(1, len(self.smoothmix_seed_acrs)))

    @property
    def intervals_over(self) -> str:
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

    @property
    def amortised_speedup(self) -> float:
        """Proxy setting with the teacher's hours shared by the ``teacher_students`` students that reuse it."""
        crt = self.crt_hours + self.teacher_hours / max(self.teacher_students, 1)
        return self.smoothmix_hours / crt if crt > 0 else float("nan")

    def speed_interval(self, setting: str) -> tuple[float, float, float] | None:
        """The speed-up with its 95% interval from the repeated runs (:func:`speed_interval`); None: a point."""
        extra = self.teacher_hours if setting == "proxy teacher" else 0.0
        return speed_interval(self.smoothmix_seed_hours, self.crt_seed_hours, 0.0 if math.isnan(extra) else extra)


def speed_interval(slow: Sequence[float], fast: Sequence[float], fixed: float = 0.0,
                   level: float = INTERVAL_LEVEL) -> tuple[float, float, float] | None:
    """mean(slow) / (mean(fast) + fixed) with a ``level`` interval, or None with fewer than 2 runs of either.

    The runs of each are repeated measurements (one training per seed, the same recipe): the log of the ratio
    has the delta-method variance ``var(slow)/(k mean^2)`` + ``var(fast)/(k (mean + fixed)^2)`` (``fixed``: the
    teacher's hours in the proxy setting, one run, not resampled), with a Student t quantile at
    Welch-Satterthwaite degrees of freedom.
    """
    if len(slow) < 2 or len(fast) < 2:
        return None
    ms, mf = sum(slow) / len(slow), sum(fast) / len(fast) + fixed
    if not (ms > 0 and mf > 0):
        return None
    terms = [(statistics.variance(xs) / len(xs) / m ** 2, len(xs) - 1) for xs, m in ((slow, ms), (fast, mf))]
    variance = sum(v for v, _ in terms)
    ratio = ms / mf
    if not variance > 0:
        return (ratio, ratio, ratio)
    df = variance ** 2 / sum(v * v / d for v, d in terms)
    half = float(stats.t.ppf(1 - (1 - level) / 2, df)) * math.sqrt(variance)
    return (ratio, ratio * math.exp(-half), ratio * math.exp(half))


@dataclass(frozen=True)
class StudentVerdict:
    student: str  # StudentEvidence.student
    setting: str
    robustness: str
    speedup: float
    verdict: str
    reasons: list[str] = field(default_factory=list)
    under_trained: tuple[str, ...] = ()
    speed: str = ""  # FAST, SLOW or UNRESOLVED
    guard_missing: str = ""

    @property
    def label(self) -> str:
        """The verdict as the report words it: ``not resolved (under-trained: ...)`` for an under-trained cell,
        ``not resolved (unchecked: ...)`` for one whose guard lacked evidence (unless speed refuted it)."""
        if self.verdict != NOT_RESOLVED:
            return self.verdict
        if self.under_trained:
            return f"{self.verdict} (under-trained: {'; '.join(self.under_trained)})"
        if self.guard_missing:
            return f"{self.verdict} (unchecked: {self.guard_missing})"
        return self.verdict


def robustness(ev: StudentEvidence, th: Thresholds = Thresholds()) -> str:
    margin = th.margin * max(ev.smoothmix_acr[0], 0.0)
    _, low, high = ev.difference
    if low >= -margin:
        return EQUAL_OR_BETTER
    if high < -margin:
        return WORSE
    return UNRESOLVED


def speed_status(ev: StudentEvidence, setting: str, th: Thresholds = Thresholds()) -> tuple[str, str]:
    """(FAST, SLOW or UNRESOLVED, the reason with its numbers)."""
    point = ev.speedup(setting)
    iv = ev.speed_interval(setting)
    text = f"SmoothMix h / CRT h = {point:.2f}x"
    if iv is None:
        if math.isnan(point):
            return UNRESOLVED, text + " (no hours)"
        status = FAST if point >= th.much_faster else SLOW
        return status, text + f" (point estimate: {'>=' if status == FAST else '<'} {th.much_faster:g}x)"
    _, low, high = iv
    status = FAST if low >= th.much_faster else SLOW if high < th.much_faster else UNRESOLVED
    return status, text + f" [{low:.2f}, {high:.2f}] over the seeds' runs vs {th.much_faster:g}x: {status}"


def judge_student(ev: StudentEvidence, setting: str, th: Thresholds = Thresholds()) -> StudentVerdict:
    rob = robustness(ev, th)
    speed, speed_text = speed_status(ev, setting, th)
    reasons = [f"CRT - SmoothMix ACR {ev.difference[0]:+.3f} [{ev.difference[1]:+.3f}, {ev.difference[2]:+.3f}] "
               f"vs margin -{th.margin * max(ev.smoothmix_acr[0], 0.0):.3f}: {rob}", speed_text]
    if speed == SLOW or not (ev.under_trained or ev.guard_missing):  # else the label gives the guard's numbers
        reasons.append(f"under-training check: {ev.training_check}")
    if speed == SLOW:  # the speed ratio does not depend on the training budget: the guard does not override it
        verdict = REFUTED
    elif ev.under_trained or ev.guard_missing:
        verdict = NOT_RESOLVED
    elif rob == WORSE:
        verdict = REFUTED
    elif rob == EQUAL_OR_BETTER and speed == FAST:
        verdict = HOLDS
    else:
        verdict = NOT_RESOLVED
    return StudentVerdict(ev.student, setting, rob, ev.speedup(setting), verdict, reasons, ev.under_trained, speed,
                          ev.guard_missing)


def overall(verdicts: list[StudentVerdict]) -> str:
    """Refuted by any refuting cell (an under-trained or unchecked cell only on speed), holds only if every cell
    holds."""
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


__all__ = ["EQUAL_OR_BETTER", "FAST", "HOLDS", "SLOW", "NOT_RESOLVED", "REFUTED", "SETTINGS", "StudentEvidence", "StudentVerdict",
           "Thresholds", "UNRESOLVED", "WORSE", "judge", "judge_student", "overall", "robustness", "speed_interval",
           "speed_status"]
