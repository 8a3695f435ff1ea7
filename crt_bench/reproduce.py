"""``make reproduce``: the paper's experiments at the size a profile allows, resumably, then every figure.

Steps (each skips what an earlier, interrupted invocation finished):

1. teachers and students through the grid runner (``crt_bench.launch``): the SmoothMix proxy
   teacher(s); for each new-generation student architecture a Gaussian (standard-noise) model, a
   SmoothMix model and a CRT model distilled from the teacher; each trained and certified;
2. timing probes of every method over the generation registry (``crt_bench.timing_grid``), which
   give the slowdown table and Figure 1 where full runs are out of reach (SmoothAdv, MACER);
3. ``crt-bench plot``: tables, figures and REPORT.md.

Profiles: ``paper`` on a GPU (CIFAR-10, full recipes, the whole registry), ``cpu`` otherwise
(Fashion-MNIST from Debian's package, short schedules on a subset of images, one new-generation
student architecture; about 25 minutes on 2 cores), ``smoke`` for a minutes-long demonstration on synthetic data.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from crt_bench.errors import CrtBenchError
from crt_bench.launch import GridSpec

STUDENT_METHODS = ["gaussian", "smoothmix", "crt"]


@dataclass(frozen=True)
class Plan:
    profile: str
    grid: GridSpec
    timing_archs: list[str] | None  # None: the whole generation registry plus the teachers
    expected: str  # how long the plan takes, for the banner
    notes: list[str] = field(default_factory=list)

    def epochs_line(self) -> str:
        """The factor and the epochs (and lr decays) it gives each method of the plan."""
        from crt_bench.config import describe_scale, get_profile

        g = self.grid
        if g.epochs is not None:
            return f"epochs {g.epochs} for every method (explicit override)"
        methods = list(dict.fromkeys([g.teacher_method, *g.methods]))
        return describe_scale(get_profile(g.profile).epoch_scale, methods)

    def describe(self) -> str:
        g = self.grid
        return (f"students {', '.join(g.methods)} on {', '.join(g.archs)}; CRT teachers: {g.teacher_method} "
                f"{', '.join(g.teacher_archs)}; sigma {', '.join(map(str, g.sigmas))}; "
                f"{self.epochs_line()}; training images {g.train_limit or 'all'}; "
                f"timing probes on {'the generation registry' if self.timing_archs is None else ', '.join(self.timing_archs)}"
                f"\nexpected: {self.expected}")


def auto_profile() -> str:
    return "paper" if torch.cuda.is_available() else "cpu"


def plan_for(profile: str, data_dir: str | None = None) -> Plan:
    if profile == "auto":
        profile = auto_profile()
    if profile == "smoke":
        grid = GridSpec(methods=STUDENT_METHODS, archs=["convnext_atto"], profile="smoke",
                        teacher_method="smoothmix", teacher_archs=["resnet20"], train_limit=512,
                        data_dir=data_dir)
        return Plan("smoke", grid, ["resnet20", "resnet110", "convnext_atto", "mobilenetv4_conv_small"],
                    "a few minutes on a CPU")
    if profile == "cpu":
        grid = GridSpec(methods=STUDENT_METHODS, archs=["convnext_atto"], profile="cpu",
                        teacher_method="smoothmix", teacher_archs=["resnet20"], train_limit=3000,
                        data_dir=data_dir)
        return Plan("cpu", grid, None, "about 25 minutes on 2 CPU cores (10 of them timing probes)")
    if profile == "paper":
        from crt_bench.archs import generations

        grid = GridSpec(methods=STUDENT_METHODS, archs=[s.name for s in generations()], profile="paper",
                        teacher_method="smoothmix", teacher_archs=["resnet110", "resnet20"], data_dir=data_dir)
        return Plan("paper", grid, None, "GPU-days (the projected hours are in the timing table after step 2)",
                    ["the certification of the full CIFAR-10 test set at N=100,000 dominates"])
    raise CrtBenchError(f"unknown profile {profile!r}; valid names: auto, smoke, cpu, paper")


def run_reproduce(plan: Plan, results: str | Path, out_dir: str | Path, *, executor: str = "local",
                  max_parallel: int = 1) -> dict:
    """Run the plan's three steps; returns what the plot step wrote."""
    from crt_bench.launch import make_executor, run_grid
    from crt_bench.report.build import build_all
    from crt_bench.timing_grid import run_timing_grid

    results = Path(results)
    ex = make_executor(executor, results / "submitit")
    jobs = plan.grid.jobs()
    status = run_grid(jobs, results, ex, max_parallel=len(jobs) if executor == "slurm" else max_parallel)
    failed = status[status["state"].str.startswith(("failed", "blocked"))]
    # The timing probes run as one more job, so that on a cluster they run on a compute node too.
    ex.submit(run_timing_grid, str(results), profile=plan.profile, archs=plan.timing_archs,
              teachers=["resnet110", "resnet20"]).result()
    written = build_all(results, Path(out_dir), profile_note=f"profile {plan.profile}: {plan.describe()}")
    if not failed.empty:
        raise CrtBenchError(f"{len(failed)} jobs failed ({'; '.join(failed['key'])}); their logs: "
                            f"{'; '.join(failed['log'])}. Re-run to retry them; finished work is kept.")
    return written
