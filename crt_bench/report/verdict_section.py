"""The verdict section of REPORT.md."""
from __future__ import annotations

import pandas as pd

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
             "model's seeds with replacement (CRT's and SmoothMix's independently: separate trainings) and, once "
             "for both, the images all their seeds certified, so the difference is paired over images and covers "
             "seed-to-seed variation; the estimate is the mean over seeds (a crossed, pigeonhole bootstrap; with 2-3 "
             "seeds the seed part is itself rough). Speed-up = SmoothMix training hours / CRT training hours (means "
             "over seeds): with a pretrained teacher CRT's hours are the student's own (the teacher's reported "
             "apart); in the proxy setting (Table 1) the teacher's are added.")


def _rules(th: Thresholds) -> str:
    return (f"Rules: CRT's robustness is equal-or-better when the whole interval of CRT - SmoothMix ACR lies above "
            f"-{th.margin:g} x SmoothMix's ACR, worse when it lies wholly below; much less training time is a "
            f"speed-up >= {th.much_faster:g}x. Under-training guard: a cell is under-trained when its student "
            "architecture trained with plain Gaussian noise (same data, sigma and budget) has a last-epoch noisy "
            "test accuracy far below the teacher's: the upper end of the 95% interval of the difference (Newcombe "
            "score interval; each accuracy a proportion of the test images it was measured on) lies below "
            f"-{UNDER_TRAINED_MARGIN:g}; or when its teacher is at chance: the upper end of the 95% Wilson interval "
            f"of the teacher's noisy accuracy lies below 1/classes + {UNDER_TRAINED_MARGIN:g}. An under-trained cell "
            "is not resolved; otherwise the claim holds for a cell "
            "when both parts hold, is refuted when CRT is not much faster or is worse, and is not resolved when the "
            "interval straddles the margin. Overall: refuted by any resolved cell that refutes it, holds when every "
            "cell holds. \"not plateaued\" lists curves still rising at the end; it is not evidence (a step-decay "
            "schedule flattens every curve after its last decay).")


def verdict_markdown(evidence: list[StudentEvidence], th: Thresholds = Thresholds()) -> str:
    """The verdict section: the evidence table, then one computed verdict per setting."""
    if not evidence:
        return ("No data: the verdict needs, for some architecture, a certified CRT student and a certified "
                "SmoothMix model of the same sigma, dataset and profile, certified on common images.\n")
    lines = markdown_table(
        ["student", "images", "seeds (CRT / SmoothMix)", "intervals over", "ACR per seed", "CRT ACR [95% CI]",
         "SmoothMix ACR", "teacher ACR", "CRT / teacher ACR", "CRT - SmoothMix ACR (paired)", "SmoothMix h", "CRT h",
         "teacher h", "speed-up, pretrained", "speed-up, proxy", "under-training check", "not plateaued"],
        [[ev.arch, ev.images, f"{ev.seeds[0]} / {ev.seeds[1]}", ev.interval_kind, _per_seed(ev), _iv(ev.crt_acr),
          _iv(ev.smoothmix_acr), _iv(ev.teacher_acr), f"{ev.teacher_ratio:.2f}",
          f"{ev.difference[0]:+.3f} [{ev.difference[1]:+.3f}, {ev.difference[2]:+.3f}]", f"{ev.smoothmix_hours:.3g}",
          f"{ev.crt_hours:.3g}", f"{ev.teacher_hours:.3g}", f"{ev.speedup(SETTINGS[0]):.2f}x",
          f"{ev.speedup(SETTINGS[1]):.2f}x", ("UNDER-TRAINED: " if ev.under_trained else "") + ev.training_check,
          ", ".join(ev.not_plateaued) or "none"] for ev in evidence])
    lines += ["", INTERVALS, "", _rules(th), ""]
    for setting, (verdict, per) in judge(evidence, th).items():
        phrase = {"holds": "HOLDS", "refuted": "is REFUTED"}.get(verdict, "is NOT RESOLVED by this budget")
        lines.append(f"**Verdict, {setting}: the claim {phrase} at this scale.**")
        for v in per:
            lines.append(f"- {v.arch}: {v.label} — " + "; ".join(v.reasons))
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
             "hours are the run's own (a denoised run's classifier is a standard training, listed in its own "
             "row of the ACR table). One model per line: its lowest training seed (the verdict above pools "
             "the seeds).", ""]
    lines += markdown_table(
        ["student", "method", "seed", "images", "ACR [95% CI]", "minus CRT ACR (paired)", "training h", "shared h",
         "certification s/image", "certification h"],
        [[r.arch, r.line, r.seed, r.images, r.acr.format(), "" if r.minus_crt is None else r.minus_crt.format("+.3f"),
          f"{r.train_hours:.3g}", "" if r.shared_hours != r.shared_hours else f"{r.shared_hours:.3g}",
          f"{r.certify_seconds_per_image:.2f}", f"{r.certify_hours:.3g}"] for r in table.itertuples()])
    return "\n".join(lines) + "\n"
