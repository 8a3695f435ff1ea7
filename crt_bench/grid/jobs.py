"""Jobs of a grid: one (method, arch, sigma, ...) run and its certification."""
from __future__ import annotations

from dataclasses import dataclass, field, replace

from crt_bench.config.certify import CertifyConfig
from crt_bench.config.profiles import get_profile
from crt_bench.core.checks import check_sigma
from crt_bench.methods.registry import get_method
from crt_bench.models.registry import get_arch


@dataclass(frozen=True)
class Job:
    method: str
    arch: str
    sigma: float = 0.25
    seed: int = 0
    profile: str = "smoke"
    teacher: "Job | None" = None  # CRT: the job whose run becomes --teacher
    teacher_dedicated: bool = False
    dataset: str | None = None
    data_dir: str | None = None
    epochs: int | None = None  # None: the profile's epoch_scale x this method's recipe epochs
    train_limit: int | None = None
    certify: bool = True
    teacher_ref: str | None = None  # a chain's root: an existing run id or model file as teacher (not a job)
    device: str = "auto"  # where the job trains and certifies; not part of its key (a run is a run anywhere)
    transfer: bool = False  # also certify by transfer from the teacher's certification (not part of its key)
    hparams: tuple[tuple[str, str], ...] = ()  # the method's --set KEY=VALUE pairs (part of the key)
    denoiser: "Job | None" = None  # denoised smoothing: the job whose denoiser this run reuses or starts from
    expect_device: str | None = None  # what the grid's preflight announced (device_model); not part of the key
    # Certification settings instead of the profile's (not part of the key: the certification's own key has them)
    certify_subset: str | None = None  # e.g. "all": the whole test set
    certify_precision: str | None = None  # e.g. "fp32": IEEE fp32, uncompiled, no agreement check needed
    # A certification as its own job (split_certification): the training job whose run it certifies, and the
    # certification it waits for besides (a transfer: its teacher's). None: the job trains (and may certify).
    trained: "Job | None" = None
    after: "Job | None" = None

    def certify_config(self, device_type: str) -> CertifyConfig:
        """The profile's certification settings on ``device_type`` with this job's overrides."""
        ccfg = get_profile(self.profile).certify.on(device_type)
        if self.certify_subset is not None:
            ccfg = replace(ccfg, subset=self.certify_subset)
        if self.certify_precision is not None:
            ccfg = replace(ccfg, precision=self.certify_precision, compile=False)
        return ccfg

    @property
    def needs(self) -> list["Job"]:
        """Jobs that must finish before this one starts: its teacher and the denoiser it reuses; a certification
        job: the training it certifies (and, for a transfer, the teacher's certification)."""
        return [job for _, job in self.named_needs]

    @property
    def named_needs(self) -> list[tuple[str, "Job"]]:
        """:attr:`needs` with what each is to this job, for messages ("its teacher X was cancelled")."""
        if self.trained is not None:
            roles = (("training", self.trained), ("teacher's certification", self.after))
        else:
            roles = (("teacher", self.teacher), ("denoiser", self.denoiser))
        return [(role, job) for role, job in roles if job is not None]

    @property
    def key(self) -> str:
        if self.trained is not None:
            return self.trained.key + CERTIFY_SUFFIX
        parts = [self.method, self.arch, self.dataset or get_profile(self.profile).dataset, f"s{self.sigma:g}",
                 f"seed{self.seed}", self.profile]
        if self.epochs is not None:  # an explicit override: the same epochs for every method
            parts.append(f"e{self.epochs}")
        else:  # the profile's factor of each method's recipe: a changed factor is a different run
            parts.append(f"x{get_profile(self.profile).epoch_scale:g}")
        if self.train_limit is not None:
            parts.append(f"n{self.train_limit}")
        parts += [f"{k}={v}" for k, v in self.hparams]
        key = "/".join(parts)
        if self.denoiser is not None:
            key += f"<~[{self.denoiser.key}]"
        if self.teacher_ref is not None:
            key += f"<-[{self.teacher_ref}]"
        return key + (f"<-[{self.teacher.key}]" if self.teacher else "")

    @property
    def label(self) -> str:
        """A short name for console lines: method, arch, sigma, and the teacher's arch for CRT."""
        return ("certify " if self.trained is not None else "") + (
                f"{self.method} {self.arch} s{self.sigma:g}" + "".join(f" {v}" for _, v in self.hparams)
                + (f" seed{self.seed}" if self.seed else "")
                + (f" <- {self.teacher.method} {self.teacher.arch}" if self.teacher else ""))


CERTIFY_SUFFIX = "#certify"
"""The key of a certification job: its training job's key and this."""


def job_work(job: Job) -> tuple[str, str, bool]:
    """What makes ``job`` finished in the store (:func:`crt_bench.store.grid_status.finished_jobs`): its key, the
    job key of the run it trains (a certification job: the run it certifies), and whether it certifies."""
    return job.key, job.trained.key if job.trained is not None else job.key, job.certify


def split_certification(jobs: list[Job]) -> list[Job]:
    """Each certified job as its training (same key, certify off) and, after every training, its certification
    as a job of its own: a student then waits for its teacher's training only, and a transfer for the teacher's
    certification."""
    trainings = [replace(j, certify=False, transfer=False) if j.certify and j.trained is None else j for j in jobs]
    certs: dict[str, Job] = {}
    for job, train in zip(jobs, trainings):
        if job.certify and job.trained is None:
            after = certs.get(job.teacher.key) if job.transfer and job.teacher is not None else None
            certs[job.key] = replace(job, trained=train, after=after)
    return trainings + list(certs.values())


@dataclass
class GridSpec:
    methods: list[str]
    archs: list[str]
    sigmas: list[float] = field(default_factory=lambda: [0.25])
    seeds: list[int] = field(default_factory=lambda: [0])
    # None: each seed of ``seeds`` trains its teachers and its students. A list: every student method trains
    # these seeds, each CRT student distilled from the teacher of each seed in ``seeds`` (one teacher reused by
    # several student seeds); seed 0 keeps the job keys it had without the setting.
    student_seeds: list[int] | None = None
    seeded_methods: list[str] | None = None  # None: every method trains every student seed; else only these do
    profile: str = "smoke"
    teacher_method: str = "smoothmix"
    teacher_archs: list[str] = field(default_factory=lambda: ["resnet110"])
    dataset: str | None = None
    data_dir: str | None = None
    epochs: int | None = None
    train_limit: int | None = None
    certify: bool = True
    certify_methods: list[str] | None = None  # None: certify every job; else only the teachers and these methods
    device: str = "auto"
    transfer_methods: list[str] = field(default_factory=list)  # students also certified by transfer from the teacher

    def _certified(self, method: str, common: dict) -> dict:
        certify = self.certify and (self.certify_methods is None or method in self.certify_methods)
        return dict(common, certify=certify, transfer=certify and method in self.transfer_methods)

    def jobs(self) -> list[Job]:
        """Teachers first, then every (method, arch, sigma, seed); CRT once per teacher architecture."""
        for name in self.methods:
            get_method(name)

        for sigma in self.sigmas:
            check_sigma(sigma)  # inf / nan / <= 0: one clear error before any job is submitted

        # Aliases (convnext) become canonical names (convnext_atto): one model, one name, one job key.
        archs = list(dict.fromkeys(get_arch(a).name for a in self.archs))
        teacher_archs = list(dict.fromkeys(get_arch(a).name for a in self.teacher_archs))
        common = dict(profile=self.profile, dataset=self.dataset, data_dir=self.data_dir, epochs=self.epochs,
                      train_limit=self.train_limit, certify=self.certify, device=self.device)
        out: dict[str, Job] = {}
        for sigma in self.sigmas:
            for seed in self.seeds:
                teachers = [Job(self.teacher_method, t, sigma, seed, **common) for t in teacher_archs]
                if "crt" in self.methods:
                    for t in teachers:
                        out.setdefault(t.key, t)
                student_seeds = self.student_seeds if self.student_seeds is not None else [seed]
                for student_seed in student_seeds:
                    for method in self.methods:
                        if (student_seed != student_seeds[0] and self.seeded_methods is not None
                                and method not in self.seeded_methods):
                            continue  # one seed of this method is enough (not certified, e.g.)
                        for arch in archs:
                            kw = self._certified(method, common)
                            for t in teachers if get_method(method).needs_teacher else [None]:
                                job = Job(method, arch, sigma, student_seed, teacher=t, **kw)
                                out.setdefault(job.key, job)
        return list(out.values())
