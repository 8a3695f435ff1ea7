"""The verdict's fixed-radius table: certified accuracy at fixed radii beside the ACR the verdict ranks on."""
from __future__ import annotations

from crt_bench.analysis.verdict import StudentEvidence
from crt_bench.report.markdown import markdown_table

NOTE = ("Certified accuracy at fixed radii (the fraction of the images both models certified that are correct with "
        "a certified radius >= r; mean over seeds), beside ACR: the verdict ranks on ACR, these do not vote. ACR "
        "grows with the sampling budget N and is inflated by easy images (Sun et al., ICML 2025); at a radius "
        "above a certification's largest certifiable radius (sigma x Phi^-1(alpha^(1/N))) its accuracy is 0 by "
        "construction.")


def fixed_radii_markdown(evidence: list[StudentEvidence]) -> str:
    """One row per verdict cell: CRT's and SmoothMix's certified accuracy at each radius, and CRT's minus
    SmoothMix's; empty when no cell carries them."""
    cells = [ev for ev in evidence if ev.certified]
    if not cells:
        return ""
    radii = [r for r, _, _ in cells[0].certified]
    head = ["student", *[f"acc@{r:g} CRT / SmoothMix (CRT - SmoothMix)" for r in radii]]
    rows = [[ev.student, *[f"{a:.3f} / {b:.3f} ({a - b:+.3f})" for _, a, b in ev.certified]] for ev in cells]
    return "\n".join(["### Certified accuracy at fixed radii", "", NOTE, "", *markdown_table(head, rows)]) + "\n"
