"""Settings of one certification (Cohen et al.'s CERTIFY: n0, n, alpha, batch, precision)."""
from __future__ import annotations

from dataclasses import dataclass

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

    def validate(self) -> None:
        check_count("n0", self.n0)
        check_count("n", self.n)
        check_alpha(self.alpha)
        if self.batch is not None:
            check_count("batch", self.batch)

        check_precision(self.precision)
