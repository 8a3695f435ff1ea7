"""The verdict section of REPORT.md."""
from __future__ import annotations

from crt_bench.analysis.verdict import SETTINGS, StudentEvidence, Thresholds, judge
from crt_bench.report.markdown import markdown_table


def _iv(t: tuple[float, float, float] | None) -> str:
    return "—" if t is None else f"{t[0]:.3f} [{t[1]:.3f}, {t[2]:.3f}]"


def verdict_markdown(evidence: list[StudentEvidence], th: Thresholds = Thresholds()) -> str:
    """The verdict section: the evidence table, then one computed verdict per setting."""
    if not evidence:
        return ("No data: the verdict needs, for some architecture, a certified CRT student and a certified "
                "SmoothMix model of the same sigma, dataset and profile, certified on common images.\n")
    lines = markdown_table(
        ["student", "images", "CRT ACR [95% CI]", "SmoothMix ACR", "teacher ACR", "CRT / teacher ACR",
         "CRT - SmoothMix ACR (paired)", "SmoothMix h", "CRT h", "teacher h", "speed-up, pretrained",
         "speed-up, proxy", "not plateaued"],
        [[ev.arch, ev.images, _iv(ev.crt_acr), _iv(ev.smoothmix_acr), _iv(ev.teacher_acr), f"{ev.teacher_ratio:.2f}",
          f"{ev.difference[0]:+.3f} [{ev.difference[1]:+.3f}, {ev.difference[2]:+.3f}]", f"{ev.smoothmix_hours:.3g}",
          f"{ev.crt_hours:.3g}", f"{ev.teacher_hours:.3g}", f"{ev.speedup(SETTINGS[0]):.2f}x",
          f"{ev.speedup(SETTINGS[1]):.2f}x", ", ".join(ev.under_trained) or "none"] for ev in evidence])
    lines += ["", ("Intervals: 95% percentile bootstrap over the certified images (2,000 resamples, seed 0); the "
                   "difference resamples the images both models certified, so it is paired. Speed-up = SmoothMix "
                   "training hours / CRT training hours: with a pretrained teacher CRT's hours are the student's "
                   "own (the teacher's reported apart); in the proxy setting (Table 1) the teacher's are added."),
              "", (f"Rules: CRT's robustness is equal-or-better when the whole interval of CRT - SmoothMix ACR lies "
                   f"above -{th.margin:g} x SmoothMix's ACR, worse when it lies wholly below; much less training "
                   f"time is a speed-up >= {th.much_faster:g}x. The claim holds when both hold with every model's "
                   "noisy test accuracy plateaued; it is refuted when CRT is not much faster, or is worse with every "
                   "model plateaued; otherwise this budget does not resolve it."), ""]
    for setting, (verdict, per) in judge(evidence, th).items():
        phrase = {"holds": "HOLDS", "refuted": "is REFUTED"}.get(verdict, "is NOT RESOLVED by this budget")
        lines.append(f"**Verdict, {setting}: the claim {phrase} at this scale.**")
        for v in per:
            lines.append(f"- {v.arch}: {v.verdict} — " + "; ".join(v.reasons))
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"
