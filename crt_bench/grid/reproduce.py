"""``make reproduce``: the paper's experiments at the size a profile allows, resumably, then every figure.

Steps (each skips what an earlier, interrupted invocation finished):

1. teachers and students through the grid runner (``crt_bench.grid.runner``): the SmoothMix proxy
   teacher(s); for each new-generation student architecture a Gaussian (standard-noise) model, a
   SmoothMix model and a CRT model distilled from the teacher; each trained and certified;
2. timing probes of every method over the generation registry (``crt_bench.timing.grid``), which
   give the slowdown table and Figure 1 where full runs are out of reach (SmoothAdv, MACER);
3. ``crt-bench plot``: tables, figures and REPORT.md.

Profiles (:data:`PLANS`): ``paper`` on GPUs (CIFAR-10, full recipes), ``cpu`` otherwise (Fashion-MNIST, short
schedules, two student architectures; about 100 minutes on 2 cores), ``cpu-full`` (larger), ``smoke`` (minutes,
synthetic data), ``gpu-smoke`` (the paper's code path on one GPU in minutes).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from pathlib import Path

from crt_bench.config.choices import check_precision
from crt_bench.config.profiles import get_profile
from crt_bench.config.subsets import parse_subset
from crt_bench.core.checks import check_sigma
from crt_bench.core.console import stderr_console
from crt_bench.core.errors import CrtBenchError, JobsFailed
from crt_bench.core.provenance import pick_device
from crt_bench.core.states import DONE_STATES
from crt_bench.data.catalog import dataset_info
from crt_bench.grid.bill import Bill, bill_lines, make_bill
from crt_bench.grid.chain import ChainSpec
from crt_bench.grid.detach import Step, attach, report_step, submit_detached, timing_step
from crt_bench.grid.executors import make_executor
from crt_bench.grid.gpus import submit_single
from crt_bench.grid.jobs import GridSpec, Job, split_certification
from crt_bench.grid.preflight import preflight
from crt_bench.grid.runner import run_grid
from crt_bench.grid.watch import follow
from crt_bench.models.registry import generations, get_arch
from crt_bench.report.build import build_all
from crt_bench.store.chains import save_chain
from crt_bench.timing.grid import run_plan_timing
from crt_bench.train.resolve import describe_scale

log = logging.getLogger(__name__)

STUDENT_METHODS = ["gaussian", "smoothmix", "crt"]


@dataclass(frozen=True)
class Plan:
    profile: str
    grid: GridSpec
    timing_archs: list[str] | None  # None: the whole generation registry plus the teachers
    expected: str  # how long the plan takes, for the banner
    notes: list[str] = field(default_factory=list)
    chain: ChainSpec | None = None  # recursive CRT from the grid's teacher (crt_bench.grid.chain), in the same grid
    timing_teachers: list[str] = field(default_factory=lambda: ["resnet110", "resnet20"])  # CRT probes' teachers
    extra: list[Job] = field(default_factory=list)  # jobs beside the grid: denoised smoothing's classifiers, denoisers
    certify_subset: str | None = None  # every job's certification subset instead of the profile's ("all": whole set)
    certify_precision: str | None = None  # every job's certification precision instead of the profile's
    split_certify: bool = False  # certifications as jobs of their own (crt_bench.grid.jobs.split_certification)
    paper_timing_arch: str | None = None  # the paper protocol's probes; None: Table 1's ResNet-110 where the plan
    # times it, else its first timing architecture

    @property
    def paper_arch(self) -> str:
        """The architecture of the paper protocol's probes (:func:`crt_bench.timing.grid.run_plan_timing`)."""
        if self.paper_timing_arch:
            return self.paper_timing_arch
        return "resnet110" if self.timing_archs is None or "resnet110" in self.timing_archs else self.timing_archs[0]

    def with_certify(self, subset: str | None = None, precision: str | None = None) -> Plan:
        """The same plan certifying ``subset`` of the test set and/or in ``precision``; checked here, before any
        job: a subset beyond a dataset's test set or an unknown precision is one CrtBenchError."""
        if precision is not None:
            precision = check_precision(precision)
        if subset is not None:
            for name in {job.dataset or get_profile(job.profile).dataset for job in self.jobs() if job.certify}:
                size = dataset_info(name).test_images
                if size is not None:
                    parse_subset(subset, size)
        return replace(self, certify_subset=subset, certify_precision=precision)

    def with_sigmas(self, sigmas: list[float]) -> Plan:
        """The same plan at each noise level of ``sigmas`` (grid and denoised smoothing; the chain at the first)."""
        if not sigmas:
            return self
        for sigma in sigmas:
            check_sigma(sigma)
        extra = list({j.key: j for j in (_at_sigma(job, s) for s in sigmas for job in self.extra)}.values())
        chain = self.chain
        if chain is not None:
            root = _at_sigma(chain.root, sigmas[0]) if isinstance(chain.root, Job) else chain.root
            chain = replace(chain, root=root, sigma=sigmas[0])
        return replace(self, grid=replace(self.grid, sigmas=list(sigmas)), extra=extra, chain=chain)

    def bill(self, gpus: int = 8) -> Bill:
        """The projected GPU-hours of every job and of the timing probes (:mod:`crt_bench.grid.bill`)."""
        probes = len(self.timing_archs) if self.timing_archs is not None else len(generations()) + len(
            self.timing_teachers)
        return make_bill(self.jobs(), gpus=gpus, probe_archs=probes)

    def on_device(self, device: str) -> Plan:
        """The same plan with every job (grid, chain) training and certifying on ``device``; probes too."""
        chain = self.chain
        if chain is not None:
            root = replace(chain.root, device=device) if isinstance(chain.root, Job) else chain.root
            chain = replace(chain, root=root, device=device)
        extra = [replace(j, device=device) for j in self.extra]
        return replace(self, grid=replace(self.grid, device=device), chain=chain, extra=extra)

    def on_arch(self, arch: str, train_limit: int) -> Plan:
        """The same plan with ``arch`` everywhere (teacher, students, denoised smoothing, probes) on
        ``train_limit`` images and no chain: the GPU check's CPU mode and the tests run a profile's code
        path this way in minutes."""
        grid = replace(self.grid, archs=[arch], teacher_archs=[arch], train_limit=train_limit)
        extra = denoised_jobs([arch], DENOISED_VARIANTS.get(self.profile, ()), profile=self.profile,
                              train_limit=train_limit, data_dir=self.grid.data_dir) if self.extra else []
        return replace(self, grid=grid, timing_archs=[arch], timing_teachers=[arch], paper_timing_arch=arch, chain=None,
                       extra=extra)

    def jobs(self) -> list[Job]:
        """The grid's jobs, then the chain's links that are not grid jobs already (same key: reused)."""
        jobs = {job.key: job for job in self.grid.jobs()}
        for job in self.chain.links() if self.chain else []:
            jobs.setdefault(job.key, job)
        for job in self.extra:
            jobs.setdefault(job.key, job)
        out = list(jobs.values())
        if self.certify_subset is not None or self.certify_precision is not None:
            out = [replace(j, certify_subset=self.certify_subset, certify_precision=self.certify_precision)
                   for j in out]
        return split_certification(out) if self.split_certify else out

    def epochs_line(self) -> str:
        """The factor and the epochs (and lr decays) it gives each method of the plan."""

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
                + (f"student seeds {', '.join(map(str, g.student_seeds))}"
                   + (f" ({', '.join(g.seeded_methods)}; the others seed {g.student_seeds[0]})" if g.seeded_methods
                      else "") + "; " if g.student_seeds else "")
                + f"timing probes on {'the generation registry' if self.timing_archs is None else ', '.join(self.timing_archs)}"
                + f" (and the paper protocol on {self.paper_arch})"
                + (f"; recursive CRT chain {' -> '.join([g.teacher_archs[0], *self.chain.ordered_archs()])}"
                   if self.chain else "")
                + (f"; denoised smoothing ({', '.join(dict.fromkeys(v for j in self.extra for _, v in j.hparams))}) "
                   f"on {', '.join(dict.fromkeys(j.arch for j in self.extra if j.method == 'denoised'))}"
                   if any(j.method == "denoised" for j in self.extra) else "")
                + f"\nexpected: {self.expected}" + "".join(f"\n- {note}" for note in self.notes))


def _at_sigma(job: Job, sigma: float) -> Job:
    """``job`` and the jobs it needs (its classifier, its denoiser) at noise level ``sigma``."""
    return replace(job, sigma=sigma, teacher=job.teacher and _at_sigma(job.teacher, sigma),
                   denoiser=job.denoiser and _at_sigma(job.denoiser, sigma))


PLANS = ("smoke", "gpu-smoke", "cpu", "cpu-full", "paper")  # the profiles reproduce runs; "auto" picks one


def auto_profile(device: str = "auto") -> str:
    """``paper`` when ``device`` is (or, for ``auto``, would be) a GPU, else ``cpu``."""

    return "paper" if pick_device(device).type == "cuda" else "cpu"


# gpu-smoke: the paper's teacher (SmoothMix ResNet-110) and one 2022 timm student, each method once.
GPU_SMOKE_STUDENTS = ["convnext_atto"]


# The paper profile's students: every generation after the teachers' ResNet family, 2018-2024. The registry's
# three ResNet-era entries are timed by the probes (slowdown table, Figure 1) but not trained: they are the
# teacher's own family or its direct successors, and the costliest on 32x32 inputs (GFLOPs per image
# 1.11 / 1.78 / 1.04 against 0.01-0.73 for the others): with them the plan projected 163.6 H200-hours, without
# them under 100 (``reproduce --profile paper --dry-run``). ``--student all`` (or ``--student NAME``) trains them.
PAPER_NOT_TRAINED = ("resnet18", "densenet121", "resnext26ts")


def paper_students() -> list[str]:
    return [s.name for s in generations() if s.name not in PAPER_NOT_TRAINED]


def plan_for(profile: str, data_dir: str | None = None, students: list[str] | None = None) -> Plan:
    """The plan of ``profile``; ``students``: its student architectures instead of the profile's (``["all"]``: the
    whole generation registry)."""
    if profile == "auto":
        profile = auto_profile()
    if students:
        students = [s.name for s in generations()] if students == ["all"] else [get_arch(a).name for a in students]
        plan = plan_for(profile, data_dir)
        extra = denoised_jobs(students, DENOISED_VARIANTS[plan.profile], profile=plan.profile,
                              train_limit=plan.grid.train_limit, data_dir=data_dir)
        return replace(plan, grid=replace(plan.grid, archs=students), extra=extra)
    if profile == "smoke":
        grid = GridSpec(methods=STUDENT_METHODS, archs=["convnext_atto"], profile="smoke",
                        teacher_method="smoothmix", teacher_archs=["resnet20"], train_limit=512,
                        data_dir=data_dir, transfer_methods=["crt"])
        return Plan("smoke", grid, ["resnet20", "resnet110", "convnext_atto", "mobilenetv4_conv_small"],
                    "a few minutes on a CPU", paper_timing_arch="resnet20",
                    extra=denoised_jobs(["convnext_atto"], DENOISED_VARIANTS["smoke"], profile="smoke",
                                        train_limit=512, data_dir=data_dir))
    if profile == "gpu-smoke":
        limit = get_profile("gpu-smoke").train_limit
        grid = GridSpec(methods=STUDENT_METHODS, archs=list(GPU_SMOKE_STUDENTS), profile="gpu-smoke",
                        teacher_method="smoothmix", teacher_archs=["resnet110"], train_limit=limit,
                        data_dir=data_dir, transfer_methods=["crt"])
        return Plan("gpu-smoke", grid, ["resnet110", *GPU_SMOKE_STUDENTS],
                    "a few minutes on one GPU (the paper profile's code path at the smallest size)",
                    ["synthetic CIFAR-10-shaped data without augmentation; each recipe's batch size; CUDA engine "
                     "defaults (bf16 autocast, channels-last, folded bf16 teacher); timing probes at recipe batch"],
                    timing_teachers=["resnet110"],
                    extra=denoised_jobs(list(GPU_SMOKE_STUDENTS), DENOISED_VARIANTS["gpu-smoke"], profile="gpu-smoke",
                                        train_limit=limit, data_dir=data_dir))
    if profile in ("cpu", "cpu-full"):
        return _cpu_plan(profile, data_dir)
    if profile == "paper":
        archs = paper_students()
        grid = GridSpec(methods=STUDENT_METHODS, archs=archs, profile="paper", teacher_method="smoothmix",
                        teacher_archs=["resnet110", "resnet20"], data_dir=data_dir, transfer_methods=["crt"],
                        certify_methods=["smoothmix", "crt"], student_seeds=list(STUDENT_SEEDS["paper"]),
                        seeded_methods=["smoothmix", "crt"])
        return Plan("paper", grid, None,
                    "the projected bill (printed before any job starts; crt-bench reproduce --profile paper --dry-run)",
                    ["500 test images (every 20th) at N=100,000, bf16 + torch.compile on CUDA, each model's first 20 "
                     "images again in fp32 (agreement); --certify-subset all: the whole test set",
                     "Gaussian students trained (one seed), not certified (the verdict does not use their "
                     "certificates); SmoothMix and CRT students two seeds each",
                     f"students: the generations after the teachers' ResNet family; {', '.join(PAPER_NOT_TRAINED)} "
                     "(ResNet-era, the costliest per image) are timed by the probes, not trained: --student all "
                     "trains them too (its bill: --dry-run)"],
                    extra=denoised_jobs(archs, DENOISED_VARIANTS["paper"], profile="paper", data_dir=data_dir),
                    split_certify=True)
    raise CrtBenchError(f"unknown profile {profile!r} for reproduce; valid names: auto, {', '.join(PLANS)}")


# Two new-generation students that certify cheaply on a CPU (bf16 forward): per image at N=10,000
# measured 2.2 s (MobileNetV4-Conv-Small, 2024) and 2.8 s (EfficientViT-B0, 2023) against 9.7 s for
# ConvNeXt-Atto, whose bf16 forward is slower than its fp32 one (7.7 s) on this CPU.
CPU_STUDENTS = ["mobilenetv4_conv_small", "efficientvit_b0"]
CPU_TIMING_ARCHS = ["resnet20", "resnet110", "convnext_atto", *CPU_STUDENTS]  # teachers + 2022, 2023, 2024

# Measured on the project's 2-core CPU (shared with other sessions while measuring: ratios are
# interleaved, absolute seconds may be pessimistic), Fashion-MNIST shape, batch 128, per image:
# training step Gaussian 1.2 ms, CRT (ResNet-20 teacher) 1.3-1.4 ms, SmoothMix 10.5-12.3 ms
# (ResNet-20 12.3, MobileNetV4 10.5, EfficientViT 11.1); CERTIFY at N=10,000 with a bf16 forward
# 2.2-2.8 s (ResNet-20 2.5). Minutes below follow from these and each profile's sizes.
CPU_BUDGETS = {
    "cpu": ("about 100 minutes on 2 CPU cores from a bare clone, install included (99 min measured on 2026-12-07): "
            "training (teacher, 12 students "
            "= 2 architectures x 3 methods x 2 seeds, 2 standard classifiers, 1 denoiser), CERTIFY of 11 models x 100 "
            "images at N = 10,000, 4 transferred certificates, timing probes (5 architectures, 6-12 adaptive "
            "rounds; the paper protocol on ResNet-110, 6 rounds), the report",
            ["meets: Fashion-MNIST; one SmoothMix ResNet-20 teacher reused by every CRT student, pretrained and "
             "proxy accounting; two new-generation students each trained with Gaussian, SmoothMix and CRT, two seeds "
             "each (the verdict's intervals cover seed-to-seed variation); "
             "denoised smoothing (mse) beside them; certificate transfer beside CERTIFY; N = 10,000; the "
             "under-training guard",
             "does not meet (budget): 4,000 training images at 0.055 x each recipe (SmoothMix 8 epochs, CRT 11), "
             "100 certified images instead of 500, no recursive-CRT chain; PROFILE=cpu-full "
             "meets every number"]),
    "cpu-full": ("about 8 hours on 2 CPU cores (projected from measured steps): training 3 h (two seeds of every "
                 "student), CERTIFY of 16 models x 500 images 5 h, timing probes over the whole registry 25 min",
                 ["meets every number of the evidence bar: 12,000 training images at 0.1 x each recipe "
                  "(SmoothMix teacher and students 15 epochs, lr decays at 5 and 10; CRT 20), 500 test images at "
                  "N = 10,000, two seeds per student, teacher reused (pretrained and proxy accounting), two "
                  "new-generation students with Gaussian, SmoothMix and CRT, denoised smoothing (mse and stability), "
                  "the chain",
                  "cheaper choices: a training subset (12,000 of 60,000 images), the faster certification forward "
                  "(noise float32), Gaussian students trained but not certified (the verdict does not use them)"]),
}


# The recursive-CRT chain (crt_bench.grid.chain): three generations in release order from the grid's SmoothMix
# ResNet-20 teacher; the grid's direct CRT students of the last two are the chain's reference lines.
# RegNetX-200MF (2020) opens it: interleaved probes on the project's CPU (Fashion-MNIST shape, relative to
# CRT MobileNetV4 <- ResNet-20 at 1.35 ms/image and CERTIFY of ResNet-20 at 2.5 s/image) put its CRT step
# at 1.7 ms/image and its CERTIFY at ~3.8 s/image, against 3.7 ms and 4.8 s for MobileNetV2 (2018).
# Links 2 and 3 (EfficientViT-B0 <- RegNetX, MobileNetV4 <- EfficientViT) measured 1.2-1.5 and 2.2 ms/image.
CHAIN_ARCHS = ["regnetx_002", "efficientvit_b0", "mobilenetv4_conv_small"]
# Added minutes, projected from those numbers: cpu (44,000 image-steps per link, 100 images) ~4 training
# + ~15 certification = ~19; cpu-full (240,000 image-steps, 500 images) ~21 + ~73 = ~1.5 h. The cpu
# profile without the chain then measured 40 min from a bare clone (projected 55): with the chain it
# stays under the hour, so both profiles run it.
CHAIN_PROFILES = ("cpu-full",)  # cpu: out since denoised smoothing and transfers joined it (its 90 minutes)


# Training seeds of every student (Gaussian, SmoothMix, CRT) per profile; the one teacher (seed 0) serves them
# all. Two or more seeds of CRT and SmoothMix make the verdict's intervals cover seed-to-seed variation.
STUDENT_SEEDS = {"cpu": [0, 1], "cpu-full": [0, 1], "paper": [0, 1]}


def denoised_jobs(archs: list[str], variants: tuple[str, ...], **common) -> list[Job]:
    """Denoised smoothing for each student architecture: a standard (noise-free) classifier, then per variant a
    denoised run in front of it. ``mse``: the first architecture's run trains the denoiser, the others reuse it
    (its hours counted once); ``stability``: fine-tuned per architecture from that mse denoiser."""
    out: list[Job] = []
    mse: Job | None = None
    for arch in archs:
        classifier = Job("standard", arch, **dict(common, certify=False))
        out.append(classifier)
        if "mse" in variants:
            job = Job("denoised", arch, teacher=classifier, hparams=(("variant", "mse"),), denoiser=mse, **common)
            mse = mse or job
            out.append(job)
        if "stability" in variants:
            out.append(Job("denoised", arch, teacher=classifier, hparams=(("variant", "stability"),), denoiser=mse,
                           **common))
    return out


# Denoised smoothing's variants per profile (the reuse competitor CRT must beat, crt_bench.methods.denoised).
DENOISED_VARIANTS = {"smoke": ("mse",), "gpu-smoke": ("mse", "stability"), "cpu": ("mse",),
                     "cpu-full": ("mse", "stability"), "paper": ("mse", "stability")}


def _cpu_plan(profile: str, data_dir: str | None) -> Plan:

    grid = GridSpec(methods=STUDENT_METHODS, archs=list(CPU_STUDENTS), profile=profile, teacher_method="smoothmix",
                    teacher_archs=["resnet20"], train_limit=get_profile(profile).train_limit,
                    certify_methods=["smoothmix", "crt"], data_dir=data_dir,
                    student_seeds=list(STUDENT_SEEDS[profile]), transfer_methods=["crt"])
    expected, notes = CPU_BUDGETS[profile]
    chain = None
    if profile in CHAIN_PROFILES:
        root = next(j for j in grid.jobs() if j.teacher is None and j.arch == grid.teacher_archs[0]
                    and j.method == grid.teacher_method)
        chain = ChainSpec(root=root, archs=tuple(CHAIN_ARCHS), profile=profile, train_limit=grid.train_limit,
                          data_dir=data_dir, name=f"chain-{root.method}-{root.arch}-{profile}", transfer=True)
    extra = denoised_jobs(list(CPU_STUDENTS), DENOISED_VARIANTS[profile], profile=profile,
                          train_limit=grid.train_limit, data_dir=data_dir)
    return Plan(profile, grid, CPU_TIMING_ARCHS if profile == "cpu" else None, expected, list(notes), chain,
                extra=extra)


BILLED_PROFILES = ("paper", "gpu-smoke")
"""The plans whose bill ``reproduce`` prints before it submits (the GPU profiles; ``--dry-run`` prints any)."""


def run_reproduce(plan: Plan, results: str | Path, out_dir: str | Path, *, executor: str = "local",
                  max_parallel: int | None = None, install_data: bool = True, nproc: int = 1,
                  slurm: dict | None = None, bill_gpus: int = 8, detach: bool = False) -> dict | list[dict]:
    """Check, then run the plan's three steps; returns what the plot step wrote (``detach``, SLURM only: submits
    the grid, then the timing and report jobs after it, and returns the submitted rows: :mod:`crt_bench.grid.detach`).

    Before any job starts, :func:`crt_bench.grid.preflight.preflight` checks (and where it can, obtains) the
    data, the device and the results folder, so a grid that could only fail stops in seconds. A failed
    job does not stop the others; its students are not started; the report lists the missing cells, and
    the call ends with :class:`~crt_bench.core.errors.JobsFailed` naming every job that did not finish.
    """
    results = Path(results)
    jobs = plan.jobs()
    if plan.profile in BILLED_PROFILES:
        for line in bill_lines(plan.bill(bill_gpus), title=f"profile {plan.profile}"):
            log.info(line)
    if plan.chain is not None:
        save_chain(plan.chain.to_dict(), results)
    datasets = {job.dataset or get_profile(job.profile).dataset for job in jobs}
    checks = preflight(datasets=datasets, results=results, data_dir=plan.grid.data_dir, device=plan.grid.device,
                       install_data=install_data)
    for line in checks.lines:
        log.info(f"preflight: {line}")
    ex = make_executor(executor, results / "submitit", nproc=nproc, device=plan.grid.device, profile=plan.profile,
                       max_parallel=max_parallel,
                       **(slurm or {}))  # slurm: make_executor's SLURM keywords (crt_bench.cli.options.slurm_options)
    timing = dict(profile=plan.profile, archs=plan.timing_archs, teachers=plan.timing_teachers,
                  paper_arch=plan.paper_arch, device=plan.grid.device)
    note = f"profile {plan.profile}: {plan.describe()}"
    if detach:
        return submit_detached(jobs, results, ex, steps=(Step("timing", timing_step, timing), Step(
            "report", report_step, dict(out_dir=str(out_dir), profile_note=note))))
    attached = attach(jobs, results, results / "submitit", steps=("timing", "report")) if executor == "slurm" else {}
    status = run_grid(jobs, results, ex, max_parallel=len(jobs) if executor == "slurm" else max_parallel,
                      expect_device=None if executor == "slurm" else checks.device, attached=attached)
    failed = status[~status["state"].isin(DONE_STATES)]
    if len(failed) < len(status):
        # The timing probes run as one more job, so that on a cluster they run on a compute node too; one
        # process on one GPU (under --nproc K, K copies would time each other's contention).
        log.info("timing probes: every method on every architecture of the plan")
        follow(submit_single(ex, run_plan_timing, str(results), **timing), "timing", stderr_console())
    else:
        log.warning("every training job failed: the timing probes are skipped (fix the cause above, then re-run)")
    written = build_all(results, Path(out_dir), profile_note=note)
    if not failed.empty:
        lines = "; ".join(f"{r.key}: {r.state}" + (f" - {r.error}" if r.error else "")
                          + (f" (log: {r.log})" if r.log else "") for r in failed.itertuples())
        raise JobsFailed(f"{len(failed)} of {len(status)} jobs did not finish: {lines}. The report lists the "
                            "missing cells; re-run the same command to retry them (finished work is kept).")
    return written
