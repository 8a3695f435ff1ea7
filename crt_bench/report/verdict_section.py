"""The verdict section of REPORT.md."""
from __future__ import annotations

import pandas as pd

from collections.abc import Sequence

from crt_bench.analysis.costs import CERTIFY_SECONDS_LABEL
from crt_bench.analysis.seeds import METHOD
from crt_bench.analysis.training_check import UNDER_TRAINED_MARGIN
from crt_bench.analysis.verdict import SETTINGS, StudentEvidence, Thresholds, judge
from crt_bench.report.markdown import markdown_table


def _iv(t: tuple[float, float, float] | None) -> str:
    return "—" if t is None else f"{t[0]:.3f} [{t[1]:.3f}, {t[2]:.3f}]"


def _per_seed(ev: StudentEvidence) -> str:
    return "; ".join(f"{name} " + ", ".join(f"{a:.3f}" for a in acrs)
                     for name, acrs in (("CRT", ev.crt_seed_acrs), ("SmoothMix", ev.smoothmix_seed_acrs)) if acrs)


INTERVALS = ("Intervals: 95% percentile bootstrap (2,000 resamples, seed 0). With one seed per model (\"images only "
             "(one seed)\") they resample the certified images; the difference resamples the images both models "
             "certified, so it is paired. With several seeds (\"seeds and images\") each resample draws every "
             "(images all their seeds certified) the interval is the " + METHOD + " (CRT's and SmoothMix's seeds are "
             "separate trainings; a model with one seed borrows the other's seed variance): the difference is "
             "paired over images and covers seed-to-seed variation, with a small-sample correction for 2-3 seeds "
             "(simulated coverage of the nominal 95% >= 0.93 at 2, 3 and 6 seeds); the estimate is the mean over "
             "seeds. All CRT seeds of a cell learn from one teacher: the intervals are conditional on that "
             "teacher, not over teacher trainings. Speed-up = SmoothMix training hours / CRT training hours (means "
             "over seeds), with a 95% interval over the seeds' runs (log ratio, delta method, Welch t) when both "
             "have several, else a point estimate: with a pretrained teacher CRT's hours are the student's own (the "
             "teacher's reported apart); in the proxy setting (Table 1) the teacher's are added per student, and, "
             "shown but not judged, amortised over the CRT students that reuse the teacher (as Figure 1 counts it).")


def _rules(th: Thresholds) -> str:
    return (f"Rules: CRT's robustness is equal-or-better when the whole interval of CRT - SmoothMix ACR lies above "
            f"-{th.margin:g} x SmoothMix's ACR, worse when it lies wholly below; much less training time is a "
            f"speed-up >= {th.much_faster:g}x. Under-training guard: a cell is under-trained when its student "
            "architecture trained with plain Gaussian noise (same data, sigma and budget) has a last-epoch noisy "
            "test accuracy far below the teacher's: the upper end of the 95% interval of the difference (student "
            "seeds and teacher paired on the same test images, counted once: the seed x image interval, the seeds "
            "resampled, where per-image correctness is stored; else the Newcombe score interval) lies below "
            f"-{UNDER_TRAINED_MARGIN:g}; or when its teacher is at chance: the upper end of the 95% Wilson interval "
            f"of the teacher's noisy accuracy lies below 1/classes + {UNDER_TRAINED_MARGIN:g}. Speed is judged on its "
            "own (the speed ratio does not depend on the training budget): a cell whose speed-up (its interval, "
            "else the point) lies below the bar is refuted, whatever the guard. Otherwise an under-trained cell, or "
            "one whose guard lacks its Gaussian student or teacher curve (unchecked), is not resolved; the claim "
            "holds for a cell when both parts hold, is refuted when CRT is worse, and is not resolved when an "
            "interval straddles its bar. Only finished certifications with equal N0, N, alpha, precision, subset "
            "and training seeds are compared (the rest are listed below). Overall: refuted by any cell that "
            "refutes it, holds when every "
            "cell holds. \"not plateaued\" lists curves still rising at the end; it is not evidence (a step-decay "
            "schedule flattens every curve after its last decay).")


def _speed(ev: StudentEvidence, setting: str) -> str:
    iv = ev.speed_interval(setting)
    return f"{ev.speedup(setting):.2f}x" + (" (point)" if iv is None else f" [{iv[1]:.2f}, {iv[2]:.2f}]")


def _missing(missing: Sequence[str]) -> list[str]:
    return ["Missing from the verdict:", *(f"- {why}" for why in missing), ""] if missing else []


def verdict_markdown(evidence: list[StudentEvidence], th: Thresholds = Thresholds(),
                     missing: Sequence[str] = ()) -> str:
    """The verdict section: the evidence table, then one computed verdict per setting; ``missing``: the
    certifications left out (:func:`crt_bench.analysis.evidence.student_evidence`), each with its reason."""
    if not evidence:
        return "\n".join(["No data: the verdict needs, for some architecture, a certified CRT student and a certified "
                          "SmoothMix model of the same sigma, dataset and profile, certified alike on common images.",
                          "", *_missing(missing)]).rstrip() + "\n"
    lines = markdown_table(
        ["student", "images", "seeds (CRT / SmoothMix)", "intervals over", "ACR per seed", "CRT ACR [95% CI]",
         "SmoothMix ACR", "teacher ACR", "CRT / teacher ACR", "CRT - SmoothMix ACR (paired)", "SmoothMix h", "CRT h",
         "teacher h", "speed-up, pretrained", "speed-up, proxy (per student)", "speed-up, proxy (amortised)",
         "certification", "under-training check", "not plateaued"],
        [[ev.student, ev.images, f"{ev.seeds[0]} / {ev.seeds[1]}", ev.intervals_over, _per_seed(ev), _iv(ev.crt_acr),
          _iv(ev.smoothmix_acr), _iv(ev.teacher_acr), f"{ev.teacher_ratio:.2f}",
          f"{ev.difference[0]:+.3f} [{ev.difference[1]:+.3f}, {ev.difference[2]:+.3f}]", f"{ev.smoothmix_hours:.3g}",
          f"{ev.crt_hours:.3g}", f"{ev.teacher_hours:.3g}", _speed(ev, SETTINGS[0]), _speed(ev, SETTINGS[1]),
          f"{ev.amortised_speedup:.2f}x over {ev.teacher_students} student(s)", ev.certification or "not recorded",
          ("UNDER-TRAINED: " if ev.under_trained else "UNCHECKED: " if ev.guard_missing else "") + ev.training_check,
          ", ".join(ev.not_plateaued) or "none"] for ev in evidence])
    lines += ["", *_missing(missing), INTERVALS, "", _rules(th), ""]
    for setting, (verdict, per) in judge(evidence, th).items():
        phrase = {"holds": "HOLDS", "refuted": "is REFUTED"}.get(verdict, "is NOT RESOLVED by this budget")
        lines.append(f"**Verdict, {setting}: the claim {phrase} at this scale.**")
        for v in per:
            lines.append(f"- {v.student}: {v.label} — " + "; ".join(v.reasons))
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def competitors_markdown(table: pd.DataFrame) -> str:
    """The reuse competitors beside CRT per student: robustness and cost on both axes."""
    if table.empty:
        return ""
    lines = ["### Beside CRT: denoised smoothing, the reuse competitor", "",
             "Denoised smoothing never trains the new architecture for robustness: a denoiser trained once per "
             "noise level (mse; its hours are its first run's, counted once: \"shared h\") or fine-tuned through "
             "the frozen classifier (stability: per architecture) is put in front of a standard-trained classifier, "
             "and every noisy sample of CERTIFY pays the denoiser's forward too. ACR intervals: 95% bootstrap over "
             "the certified images; the difference to CRT is paired over the images both certified. Training "
             "hours are the run's own; \"with classifier\" adds a denoised run's standard-trained classifier, "
             "counted once per model (as in the cost figure and the leaderboard). One model per line: its lowest training seed (the verdict above pools "
             "the seeds).", ""]
    lines += markdown_table(
        ["student", "method", "seed", "images", "ACR [95% CI]", "minus CRT ACR (paired)", "training h", "shared h",
         "training h with classifier", f"certification s/image ({CERTIFY_SECONDS_LABEL})", "abstained",
         "certification h", "certification"],
        [[r.arch, r.line, r.seed, r.images, r.acr.format(), "" if r.minus_crt is None else r.minus_crt.format("+.3f"),
          f"{r.train_hours:.3g}", "" if r.shared_hours != r.shared_hours else f"{r.shared_hours:.3g}",
          f"{r.pipeline_hours:.3g}", f"{r.certify_seconds_per_image:.2f}", f"{r.abstained:.0%}",
          f"{r.certify_hours:.3g}", r.certification] for r in table.itertuples()])
    crt = table[table["line"].str.startswith("CRT")].drop_duplicates("arch").set_index("arch")["certification"]
    unlike = [f"- {r.arch}, {r.line}: certified with {r.certification}, CRT with {crt[r.arch]}: its difference to CRT "
              "is not like for like" for r in table.itertuples() if r.arch in crt and r.certification != crt[r.arch]]
    lines += ["", "Missing (certifications that differ from CRT's):", *unlike] if unlike else []
    return "\n".join(lines) + "\n"
