"""The bill before the spend: every job's projected GPU-hours, the total, the critical path, the wall-clock.

Projected from the measured figures of :mod:`crt_bench.timing.measured` (one H200), never from guesses:

* training: epochs x training images x seconds per image of one step of the job's method on its
  architecture at the recipe batch. Measured for ResNet-110 and ConvNeXt-Atto; for another architecture,
  per method, affine in forward GFLOPs through those two measured points (a fixed cost per image plus a cost
  per GFLOP: small models do not get faster in proportion to their FLOPs, and the two measurements say by how
  much). A job that trains nothing (a denoised run reusing a denoiser) costs no training.
* certification: (N0 + N) noisy forwards per image of the plan's subset, at the forwards/s measured on
  ResNet-110 in the job's certification precision, scaled to the job's architecture by the same FLOPs model
  (the Gaussian step's, ResNet-110 = 1); a denoised model's forward is its denoiser's plus its classifier's
  GFLOPs. Plus the fp32 agreement check's images (again in fp32), and a transfer's n_p forwards per image.
* the timing probes: the check's measured seconds per probed architecture, as one job after the grid.

The wall-clock simulates the grid as :func:`crt_bench.grid.runner.run_grid` runs it: a job starts when the jobs
it needs have finished (teacher and denoiser, with their certification unless the plan makes certifications jobs
of their own, :func:`crt_bench.grid.jobs.split_certification`), in plan order, at most G at once; the timing
probes run after the grid.
"""
from __future__ import annotations

import heapq
from dataclasses import dataclass

from crt_bench.certify.transfer_run import default_n_p
from crt_bench.config.certify import CertifyConfig
from crt_bench.config.profiles import get_profile
from crt_bench.config.subsets import parse_subset
from crt_bench.core.errors import CrtBenchError
from crt_bench.data.catalog import dataset_info
from crt_bench.grid.jobs import Job
from crt_bench.methods.registry import get_method
from crt_bench.models.registry import get_arch
from crt_bench.timing import measured as M
from crt_bench.train.resolve import scaled_recipe

MEASURED, PROJECTED = "measured", "FLOPs-projected"
SOURCES = {
    MEASURED: f"measured on one {M.GPU}: {M.CHECK}",
    PROJECTED: (f"projected from the {M.GPU} measurements of {' and '.join(M.STEP_ARCHS)} (training) or "
                f"{M.FORWARD_ARCH} (forwards/s), affine in GFLOPs per image ({M.SIZES}; "
                "crt_bench.timing.measured)"),
}


@dataclass(frozen=True)
class JobCost:
    job: Job
    train_hours: float
    certify_hours: float
    train_source: str  # MEASURED / PROJECTED / "" (nothing trained)
    certify_source: str  # MEASURED / PROJECTED / "" (not certified)

    @property
    def hours(self) -> float:
        return self.train_hours + self.certify_hours


@dataclass(frozen=True)
class Bill:
    costs: list[JobCost]
    probe_hours: float
    critical_path: list[Job]
    critical_hours: float
    gpus: int
    wall_hours: float  # on ``gpus`` GPUs
    serial_hours: float  # on one GPU

    @property
    def total_hours(self) -> float:
        return sum(c.hours for c in self.costs) + self.probe_hours


def step_seconds_per_image(method: str, arch: str) -> tuple[float, str]:
    """One training step's seconds per image of ``method`` on ``arch`` (bf16, recipe batch) and its source."""
    if (method, arch) in M.STEP_SECONDS:
        seconds, batch = M.STEP_SECONDS[(method, arch)]
        return seconds / batch, MEASURED
    points = [(M.GFLOPS[a], M.STEP_SECONDS[(method, a)][0] / M.STEP_SECONDS[(method, a)][1])
              for a in M.STEP_ARCHS if (method, a) in M.STEP_SECONDS]
    if len(points) < 2:
        raise CrtBenchError(f"no measured training step of method {method!r} to project from (measured: "
                            f"{', '.join(sorted({m for m, _ in M.STEP_SECONDS}))}; crt_bench.timing.measured)")
    return _affine(points, _gflops(arch)), PROJECTED


def forwards_per_s(arch: str, precision: str, gflops: float | None = None) -> tuple[float, str]:
    """CERTIFY's noisy forwards per second for ``arch`` (or a model of ``gflops``) in ``precision``."""
    if (M.FORWARD_ARCH, precision) not in M.FORWARDS_PER_S:
        raise CrtBenchError(f"no measured certification rate in precision {precision!r} (measured: "
                            f"{', '.join(p for _, p in M.FORWARDS_PER_S)}; crt_bench.timing.measured)")
    rate = M.FORWARDS_PER_S[(M.FORWARD_ARCH, precision)]
    if gflops is None and arch == M.FORWARD_ARCH:
        return rate, MEASURED
    gauss = [(M.GFLOPS[a], M.STEP_SECONDS[("gaussian", a)][0] / M.STEP_SECONDS[("gaussian", a)][1])
             for a in M.STEP_ARCHS]
    relative = _affine(gauss, _gflops(arch) if gflops is None else gflops) / _affine(gauss, M.GFLOPS[M.FORWARD_ARCH])
    return rate / relative, PROJECTED


def precision_label(ccfg: CertifyConfig) -> str:
    """The :data:`~crt_bench.timing.measured.FORWARDS_PER_S` key of a certification's engine settings."""
    return ccfg.precision + ("+compile" if ccfg.compile else "")


def job_cost(job: Job, device_type: str = "cuda") -> JobCost:
    """The projected GPU-hours of one job (its training and its certification on ``device_type``)."""
    spec = get_method(job.method)
    hparams = {**dict(job.hparams), **({"denoiser": "planned"} if job.denoiser is not None else {})}
    train_h, train_src = 0.0, ""
    if job.trained is None and spec.trains(spec.make_hparams(hparams, sigma=job.sigma)):
        epochs = job.epochs if job.epochs is not None else scaled_recipe(job.method, get_profile(job.profile).epoch_scale).epochs
        per_image, train_src = step_seconds_per_image(job.method, job.arch)
        train_h = epochs * _train_images(job) * per_image / 3600
    cert_h, cert_src = 0.0, ""
    if job.certify:
        ccfg = job.certify_config(device_type)
        images = len(parse_subset(ccfg.subset, _test_images(job)))
        gflops = M.DENOISER_GFLOPS + _gflops(job.arch) if job.method == "denoised" else None
        rate, cert_src = forwards_per_s(job.arch, precision_label(ccfg), gflops)
        forwards = images * (ccfg.n0 + ccfg.n)
        if job.transfer and job.teacher is not None:
            forwards += images * default_n_p(ccfg.n)  # the transfer's disagreement samples
        seconds = forwards / rate
        sample = min(ccfg.agreement_images, images) if ccfg.checks_agreement else 0
        if sample:
            fp32, _ = forwards_per_s(job.arch, "fp32", gflops)
            seconds += sample * (ccfg.n0 + ccfg.n) / fp32
        cert_h = seconds / 3600
    return JobCost(job, train_h, cert_h, train_src, cert_src)


def make_bill(jobs: list[Job], *, gpus: int = 8, device_type: str = "cuda",
              probe_archs: int = 0) -> Bill:
    """The bill of ``jobs`` (and of the timing probes of ``probe_archs`` architectures, plus the paper protocol's
    probes at their budget) on ``gpus`` GPUs."""
    if gpus < 1:
        raise CrtBenchError(f"--bill-gpus must be >= 1, got {gpus}")
    costs = [job_cost(j, device_type) for j in jobs]
    probe_h = probe_archs * M.TIMING_PROBE_SECONDS[0] / M.TIMING_PROBE_SECONDS[1] / 3600
    probe_h += M.PAPER_PROBE_BUDGET_S / 3600 if probe_archs else 0.0
    path, path_h = _critical_path(costs)
    return Bill(costs, probe_h, path, path_h + probe_h, gpus, _makespan(costs, gpus) + probe_h,
                sum(c.hours for c in costs) + probe_h)


def bill_lines(bill: Bill, *, title: str = "") -> list[str]:
    """The bill as console lines: a table of jobs, the totals, the critical path, the wall-clock, the sources."""
    out = [f"projected bill{': ' + title if title else ''} (GPU-hours on one {M.GPU} per GPU)",
           f"{'job':<78} {'train h':>8} {'cert h':>7} {'total h':>8}  sources (train / certify)"]
    for c in bill.costs:
        out.append(f"{c.job.label:<78} {c.train_hours:8.2f} {c.certify_hours:7.2f} {c.hours:8.2f}  "
                   f"{c.train_source or '-'} / {c.certify_source or '-'}")
    if bill.probe_hours:
        out.append(f"{'timing probes (after the grid)':<78} {bill.probe_hours:8.2f} {0:7.2f} {bill.probe_hours:8.2f}  "
                   f"{MEASURED} / -")
    train = sum(c.train_hours for c in bill.costs)
    cert = sum(c.certify_hours for c in bill.costs)
    out += [f"total: {bill.total_hours:.1f} GPU-hours ({len(bill.costs)} jobs: training {train:.1f}, "
            f"certification {cert:.1f}, timing probes {bill.probe_hours:.1f})",
            f"critical path: {bill.critical_hours:.1f} hours: "
            + " -> ".join(j.label for j in bill.critical_path) + (" -> timing probes" if bill.probe_hours else ""),
            f"wall-clock: {bill.serial_hours:.1f} hours on 1 GPU, {bill.wall_hours:.1f} hours on {bill.gpus} GPUs "
            + ("(certifications are jobs of their own: a student waits for its teacher's training, a transfer for "
               "the teacher's certificate)" if any(c.job.trained is not None for c in bill.costs) else
               "(a job waits for its teacher's training and certification)"),
            "sources:", *(f"- {name}: {text}" for name, text in SOURCES.items())]
    if bill.probe_hours:
        out.append(f"- timing probes: the engine protocol's {MEASURED} seconds per architecture, plus the paper "
                   f"protocol's probes at their budget ({M.PAPER_PROBE_BUDGET_S:.0f} s; not yet measured on a GPU)")
    return out


def _gflops(arch: str) -> float:
    name = get_arch(arch).name
    if name not in M.GFLOPS:
        raise CrtBenchError(f"no GFLOPs recorded for architecture {name!r} in crt_bench.timing.measured.GFLOPS "
                            f"(add it from `crt-bench list archs --sizes`)")
    return M.GFLOPS[name]


def _affine(points: list[tuple[float, float]], x: float) -> float:
    """The line through the first two ``points`` (x, y) at ``x``."""
    (x0, y0), (x1, y1) = points[:2]
    return y0 + (y1 - y0) * (x - x0) / (x1 - x0)


def _train_images(job: Job) -> int:
    full = dataset_info(job.dataset or get_profile(job.profile).dataset).train_images
    if full is None:
        raise CrtBenchError(f"no training-set size known for {job.label}'s dataset: a folder dataset has no bill")
    return min(full, job.train_limit) if job.train_limit else full


def _test_images(job: Job) -> int:
    size = dataset_info(job.dataset or get_profile(job.profile).dataset).test_images
    if size is None:
        raise CrtBenchError(f"no test-set size known for {job.label}'s dataset: a folder dataset has no bill")
    return size


def _critical_path(costs: list[JobCost]) -> tuple[list[Job], float]:
    """The longest chain of jobs through their needs (each job's whole hours) and its hours."""
    by_key = {c.job.key: c for c in costs}
    best: dict[str, tuple[float, list[Job]]] = {}
    for c in costs:  # plan order puts a job after what it needs
        prior = max((best[n.key] for n in c.job.needs if n.key in best), key=lambda b: b[0], default=(0.0, []))
        best[c.job.key] = (prior[0] + by_key[c.job.key].hours, [*prior[1], c.job])
    hours, path = max(best.values(), key=lambda b: b[0], default=(0.0, []))
    return path, hours


def _makespan(costs: list[JobCost], gpus: int) -> float:
    """Hours until the last job ends when jobs start in plan order once their needs ended, ``gpus`` at once."""
    keys = {c.job.key for c in costs}
    pending = list(costs)
    ended: dict[str, float] = {}
    running: list[tuple[float, str]] = []
    now = 0.0
    while pending or running:
        for c in list(pending):
            if len(running) >= gpus:
                break
            if all(n.key in ended for n in c.job.needs if n.key in keys):
                heapq.heappush(running, (now + c.hours, c.job.key))
                pending.remove(c)
        if not running:
            raise CrtBenchError("the plan's jobs wait on each other in a circle")
        now, key = heapq.heappop(running)
        ended[key] = now
    return now
