"""Settings of one certification (Cohen et al.'s CERTIFY: n0, n, alpha, batch, precision)."""
from __future__ import annotations

from dataclasses import dataclass, replace

from crt_bench.config.choices import check_precision
from crt_bench.core.checks import check_alpha, check_count


@dataclass
class CertifyConfig:
    """Cohen et al.'s CERTIFY settings; the defaults are the papers' (N0=100, N=100,000, alpha=0.001)."""

    n0: int = 100
    n: int = 100_000
    alpha: float = 0.001
    batch: int | None = None  # noisy samples per forward; None: the engine chooses (memory on GPU, 128 on CPU)
    precision: str = "fp32"  # forward precision: fp32 | tf32 | bf16 | fp16 | fastest (noise is always float32)
    compile: bool = False  # torch.compile the base classifier
    subset: str = "all"  # "all", "skip:K", "range:A:B" (see crt_bench.config.subsets.parse_subset)
    # On CUDA, the forward precision and torch.compile instead of ``precision`` / ``compile`` (None: the same).
    cuda_precision: str | None = None
    cuda_compile: bool | None = None
    # Images of each certified model certified again in fp32 beside a lower-precision certification
    # (the first ones of ``subset``, same noise): crt_bench.certify.agreement. 0: no agreement check.
    agreement_images: int = 0

    @property
    def checks_agreement(self) -> bool:
        """A certification with these settings gets an fp32 agreement check (a sample, a forward not fp32)."""
        return self.agreement_images > 0 and (self.precision != "fp32" or self.compile)

    def on(self, device_type: str) -> CertifyConfig:
        """The settings a certification on ``device_type`` ("cuda", "cpu", ...) uses."""
        if device_type != "cuda":
            return self
        return replace(self, precision=self.cuda_precision or self.precision,
                       compile=self.compile if self.cuda_compile is None else self.cuda_compile)

    def validate(self) -> None:
        check_count("n0", self.n0)
        check_count("n", self.n)
        check_alpha(self.alpha)
        if self.batch is not None:
            check_count("batch", self.batch)

        check_precision(self.precision)
        if self.cuda_precision is not None:
            check_precision(self.cuda_precision)
        if self.agreement_images:
            check_count("agreement_images", self.agreement_images)
