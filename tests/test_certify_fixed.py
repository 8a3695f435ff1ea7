"""Certification of fixed models on fixed images does not change, row for row, whatever the engine's layout.

A seeded conv net with a batch norm (folded by the engine, so its noisy batches are NHWC) and a seeded
``tiny_cnn`` model file are certified with keyed noise through (a) :class:`~crt_bench.certify.smooth.Smooth`
(``certify_counts``, ``certify_many``, ``predict``, ``sample_counts``; one and the default CPU workers;
generator noise too), (b) :func:`~crt_bench.certify.resumable.certify_run` on a model file, as
``crt-bench certify`` does, and (c) the transfer (:func:`~crt_bench.certify.transfer.iter_transfer` and
:func:`~crt_bench.certify.transfer_run.transfer_run`).  Every deterministic column (not timings, paths,
the device or the commit) is compared exactly with ``tests/golden/certify_fixed_*.csv``, written by the
code before the engine was flattened (issue 31).  Regenerate only on purpose, never to make a refactor
pass: ``PYTHONPATH=. python tests/test_certify_fixed.py --regenerate``.
"""
from __future__ import annotations

import io
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

from crt_bench.certify.resumable import certify_run
from crt_bench.certify.smooth import Smooth
from crt_bench.certify.transfer import iter_transfer
from crt_bench.certify.transfer_run import TransferConfig, transfer_run
from crt_bench.config.certify import CertifyConfig
from crt_bench.data.catalog import dataset_info
from crt_bench.data.datasets import load_split
from crt_bench.models.build import build_model
from crt_bench.models.files import model_metadata
from crt_bench.store.store import ResultsStore

GOLDEN = Path(__file__).parent / "golden"
N0, N, ALPHA, SIGMA, SEED = 10, 500, 0.01, 0.25, 7
KEYS = [10, 11, 12, 13, 14, 15]
VOLATILE = ("seconds", "time", "device", "git_commit", "source")
"""Columns that differ from run to run (wall time, when, where, which commit, the temporary path)."""


class ConvBN(torch.nn.Module):
    """Conv, batch norm (non-trivial running statistics), ReLU, pooling, linear: 4 classes on 3x8x8 images."""

    def __init__(self) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(31)
        self.conv = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.bn = torch.nn.BatchNorm2d(8)
        self.fc = torch.nn.Linear(8, 4)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.8)
            self.bn.running_mean.copy_(torch.randn(8, generator=g) * 0.2)
            self.bn.running_var.copy_(torch.rand(8, generator=g) + 0.5)
            self.eval()
            self.fc.bias.copy_(-self.fc.weight @ self.features(_images()).mean(dim=0))  # near ties: some abstain

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.bn(self.conv(x))).mean(dim=(2, 3)) * 6

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x))


def _images() -> torch.Tensor:
    return torch.rand(6, 3, 8, 8, generator=torch.Generator().manual_seed(32))


def _certificates(smooth: Smooth, images: torch.Tensor, **kw) -> pd.DataFrame:
    return pd.DataFrame([vars(c) for c in smooth.certify_counts(images, N0, N, ALPHA, **kw)])


def smooth_rows(sigma: float = SIGMA, seed: int = SEED) -> pd.DataFrame:
    """(a) The engine itself: every public sampling call, keyed noise (and a generator's)."""
    model, x = ConvBN().eval(), _images()
    keys = KEYS
    parts = {
        "workers1": _certificates(Smooth(model, 4, sigma, noise_seed=seed, cpu_workers=1), x, batch_size=64, keys=keys),
        "workers_auto": _certificates(Smooth(model, 4, sigma, noise_seed=seed), x, batch_size=64, keys=keys),
        "batch_auto": _certificates(Smooth(model, 4, sigma, noise_seed=seed, cpu_workers=1), x, keys=keys),
        "no_early_stop": _certificates(Smooth(model, 4, sigma, noise_seed=seed, cpu_workers=1, early_stop=False),
                                       x, batch_size=37, keys=keys),
        "unfolded": _certificates(Smooth(model, 4, sigma, noise_seed=seed, cpu_workers=1, fold_batchnorm=False),
                                  x, batch_size=64),
        "generator": _certificates(Smooth(model, 4, sigma, cpu_workers=1,
                                          generator=torch.Generator().manual_seed(seed)), x, batch_size=64,
                                   keys=keys),
    }
    frames = [frame.assign(call=name) for name, frame in parts.items()]
    smooth = Smooth(model, 4, sigma, noise_seed=seed, cpu_workers=1)
    many = smooth.certify_many(x, N0, N, ALPHA, batch_size=50, keys=keys)
    frames.append(pd.DataFrame(many, columns=["predict", "radius"]).assign(call="certify_many"))
    single = [smooth.certify(image, N0, N, ALPHA, batch_size=50) for image in x]
    frames.append(pd.DataFrame(single, columns=["predict", "radius"]).assign(call="certify"))
    predicted = [smooth.predict(image, 300, ALPHA, batch_size=64) for image in x]
    frames.append(pd.DataFrame({"predict": predicted}).assign(call="predict"))
    counts = smooth.sample_counts(x, 300, batch_size=64, keys=keys)
    frames.append(pd.DataFrame(counts, columns=[f"count_{c}" for c in range(4)]).assign(call="sample_counts"))
    return pd.concat(frames, ignore_index=True)


def _model_file(path: Path, seed: int, run_id: str) -> str:
    """A crt-bench model file of a seeded ``tiny_cnn`` for the synthetic dataset, its last bias centring the
    logits of the first six test images (so that their classes differ: some certify, some abstain)."""
    info = dataset_info("synthetic")
    torch.manual_seed(seed)
    model = build_model("tiny_cnn", num_classes=info.num_classes, in_chans=info.in_chans, mean=info.mean,
                        std=info.std).eval()
    fc = [m for m in model.modules() if isinstance(m, torch.nn.Linear)][-1]
    seen: dict[str, torch.Tensor] = {}
    hook = fc.register_forward_hook(lambda module, inputs, out: seen.update(features=inputs[0]))
    with torch.no_grad():
        model(load_split("synthetic", "test", seed=SEED).x[:6])
        fc.bias.copy_(-fc.weight @ seen["features"].mean(dim=0))
    hook.remove()
    meta = model_metadata("tiny_cnn", info, sigma=SIGMA, method="gaussian", run_id=run_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({**meta, "state_dict": model.state_dict()}, path)
    return str(path)


def _deterministic(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.drop(columns=[c for c in VOLATILE if c in frame]).sort_values("idx").reset_index(drop=True)


def run_rows(root: Path, sigma: float = SIGMA, seed: int = SEED) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(b) ``crt-bench certify``'s path (certify_run on a model file) and (c) a transfer of it to a student."""
    store = ResultsStore(root / "results")
    teacher = _model_file(root / "teacher" / "model.pt", 41, "fixed-teacher")
    student = _model_file(root / "student" / "model.pt", 41, "fixed-student")
    moved = torch.load(student, weights_only=True)
    moved["state_dict"] = {k: v + 0.002 * torch.randn(v.shape, generator=torch.Generator().manual_seed(43))
                           if v.is_floating_point() else v for k, v in moved["state_dict"].items()}
    torch.save(moved, student)
    ccfg = CertifyConfig(n0=N0, n=N, alpha=ALPHA, batch=64, subset="range:0:6")
    cert_id, rows = certify_run(teacher, store, ccfg, sigma=sigma, device="cpu", seed=seed, progress=False)
    _, moved_rows = transfer_run(student, store, cert_id, TransferConfig(n_p=200, batch=64, subset="range:0:6"),
                                 sigma=sigma, seed=seed, device="cpu", progress=False)
    return _deterministic(rows), _deterministic(moved_rows)


def transfer_rows(sigma: float = SIGMA, seed: int = SEED, settings=((200, 64), (50, 33))) -> pd.DataFrame:
    """(c) iter_transfer itself: ConvBN teacher (folded on its own) to a perturbed copy, from the teacher's rows."""
    teacher, x = ConvBN().eval(), _images()
    student = ConvBN().eval()
    with torch.no_grad():
        student.fc.weight.add_(0.02 * torch.randn(student.fc.weight.shape, generator=torch.Generator().manual_seed(44)))
    y = torch.tensor([0, 1, 2, 3, 0, 1])
    teacher_rows = _certificates(Smooth(teacher, 4, sigma, noise_seed=seed), x, batch_size=64)
    teacher_rows["idx"] = range(len(x))
    frames = [pd.concat(frame for frame, _ in iter_transfer(teacher, student, x, y, teacher_rows, sigma=sigma,
                                                            n_p=n_p, alpha_zeta=ALPHA, batch_size=batch,
                                                            indices=list(range(len(x))), seed=seed, progress=False))
              .assign(n_p=n_p, batch=batch) for n_p, batch in settings]
    return _deterministic(pd.concat(frames, ignore_index=True))


def all_tables(root: Path, sigma: float = SIGMA, seed: int = SEED) -> dict[str, pd.DataFrame]:
    certified, transferred = run_rows(root, sigma, seed)
    return {"smooth": smooth_rows(sigma, seed), "run": certified, "run_transfer": transferred,
            "transfer": transfer_rows(sigma, seed)}


def _as_csv(frame: pd.DataFrame) -> pd.DataFrame:
    """The frame as the golden file holds it (through CSV: the same dtypes on both sides)."""
    return pd.read_csv(io.StringIO(frame.to_csv(index=False)))


def _golden(name: str) -> pd.DataFrame:
    return pd.read_csv(GOLDEN / f"certify_fixed_{name}.csv")


def _assert_golden(frame: pd.DataFrame, name: str) -> None:
    pd.testing.assert_frame_equal(_as_csv(frame), _golden(name), check_exact=True, obj=name)


def test_engine_rows_equal_the_golden_ones() -> None:
    _assert_golden(smooth_rows(), "smooth")


def test_certify_run_and_its_transfer_equal_the_golden_rows(tmp_path: Path) -> None:
    certified, transferred = run_rows(tmp_path)
    _assert_golden(certified, "run")
    _assert_golden(transferred, "run_transfer")


def test_transfer_rows_equal_the_golden_ones() -> None:
    _assert_golden(transfer_rows(), "transfer")


def test_the_golden_rows_are_not_trivial() -> None:
    """Some images certify and some abstain, with counts that vary: a change of noise would show."""
    for name in ("smooth", "run_transfer"):
        rows = _golden(name)
        assert (rows["predict"] == -1).any() and (rows["predict"] >= 0).any(), name
    run = _golden("run")
    assert run["predict"].nunique() > 2 and (run["n_a"] < N).any()
    for name in ("transfer", "run_transfer"):
        assert _golden(name)["disagreements"].nunique() > 2, name
    assert (_golden("smooth").query("call == 'workers1'")["n_counted"] < N).any(), "early stop must show"


@pytest.mark.parametrize("change", ["sigma", "seed"])
def test_a_perturbed_certification_differs_from_the_golden_rows(tmp_path: Path, change: str) -> None:
    """The control: another sigma or noise seed must fail the comparison (so it compares something), where the
    same comparison of an unperturbed certification passes."""
    sigma, seed = (0.26, SEED) if change == "sigma" else (SIGMA, SEED + 1)
    golden = _golden("smooth").query("call == 'workers1'").dropna(axis=1).reset_index(drop=True)
    transfer = _golden("transfer").query("n_p == 50").reset_index(drop=True)
    for s, k, differs in ((SIGMA, SEED, False), (sigma, seed, True)):
        got = _as_csv(_certificates(Smooth(ConvBN().eval(), 4, s, noise_seed=k, cpu_workers=1), _images(),
                                    batch_size=64, keys=KEYS).assign(call="workers1"))
        moved = _as_csv(transfer_rows(s, k, settings=((50, 33),)))
        for frame, expected in ((got, golden), (moved, transfer)):
            if differs:
                with pytest.raises(AssertionError):
                    pd.testing.assert_frame_equal(frame, expected, check_dtype=False)
            else:
                pd.testing.assert_frame_equal(frame, expected, check_dtype=False)
    if change == "seed":  # the run's path (slower) against another seed only
        certified, transferred = run_rows(tmp_path, sigma, seed)
        for got, name in ((certified, "run"), (transferred, "run_transfer")):
            with pytest.raises(AssertionError):
                pd.testing.assert_frame_equal(_as_csv(got), _golden(name), check_exact=True)


if __name__ == "__main__" and "--regenerate" in sys.argv:
    import tempfile

    GOLDEN.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        for table, frame in all_tables(Path(tmp)).items():
            frame.to_csv(GOLDEN / f"certify_fixed_{table}.csv", index=False)
            print(f"wrote {GOLDEN / f'certify_fixed_{table}.csv'} ({len(frame)} rows)")
