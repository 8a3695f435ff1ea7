"""Certificate transfer (``certify --transfer-from``, incremental randomized smoothing).

Statistics on synthetic functions whose disagreement rate and top-class probability are known in closed
form; refusals before anything is written; resumption; the CLI end to end on the smoke profile.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import fast_config, tables_snapshot
from helpers import Killed, dies_after
from scipy.stats import norm
from test_cli import FAST_RUN, assert_user_error, cli

from crt_bench.analysis.select import certifications
from crt_bench.certify import transfer_run as transfer_run_mod
from crt_bench.certify.driver import certify_dataset
from crt_bench.certify.resumable import certify_run
from crt_bench.certify.stats import ABSTAIN, p_lower_from_radius, radius_from_counts, upper_confidence_bound
from crt_bench.certify.transfer import iter_transfer, transfer_one
from crt_bench.certify.transfer_run import TransferConfig, _check_compatible, transfer_run
from crt_bench.config.certify import CertifyConfig
from crt_bench.core.errors import CrtBenchError
from crt_bench.models.files import LoadedModel
from crt_bench.store.store import ResultsStore
from crt_bench.train.trainer import train_run

CCFG = CertifyConfig(n0=20, n=200, alpha=0.01, batch=100, subset="range:0:6")
TCFG = TransferConfig(n_p=60, batch=100, subset="range:0:6")


class Threshold(torch.nn.Module):
    """Class 1 iff the first pixel exceeds ``t`` (else 0): under noise its class probabilities are Phi's."""

    def __init__(self, t: float) -> None:
        super().__init__()
        self.t = t

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        v = x[:, 0, 0, 0] - self.t
        return torch.stack([-v, v], dim=1)


def _rows(pairs) -> pd.DataFrame:
    """The rows of an :func:`iter_transfer` stream (its ``(frame, engine settings)`` pairs) in one frame."""
    return pd.concat(frame for frame, _ in pairs)


def _images(k: int, value: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.full((k, 1, 2, 2), value), torch.ones(k, dtype=torch.long)


# -- (a) the disagreement bound covers the true rate --------------------------------------------------


@pytest.mark.parametrize("n_p", [40, 300])
@pytest.mark.parametrize("rate", [0.0, 0.02, 0.15, 0.5])
def test_zeta_covers_the_true_disagreement_rate(n_p: int, rate: float) -> None:
    """Clopper-Pearson's upper bound >= the true rate in at least 1 - alpha_zeta of binomial repetitions,
    where the plug-in estimate d / n_p (the bound's natural wrong answer) falls well short of that."""
    alpha_zeta, reps = 0.05, 20_000
    d = np.random.default_rng(int(rate * 1000) + n_p).binomial(n_p, rate, size=reps)
    bound = np.array([upper_confidence_bound(k, n_p, alpha_zeta) for k in range(n_p + 1)])
    covered = float(np.mean(bound[d] >= rate))
    slack = 3 * np.sqrt(alpha_zeta * (1 - alpha_zeta) / reps)
    assert covered >= 1 - alpha_zeta - slack
    if 0 < rate:
        assert float(np.mean(d / n_p >= rate)) < 1 - alpha_zeta - slack, "the check must be able to fail"


def test_upper_bound_edges_mirror_the_lower_bound() -> None:
    assert upper_confidence_bound(10, 10, 0.01) == 1.0
    assert upper_confidence_bound(0, 100, 0.01) == pytest.approx(1 - 0.01 ** (1 / 100))
    with pytest.raises(CrtBenchError):
        upper_confidence_bound(5, 4, 0.01)


def test_end_to_end_disagreements_are_counted_on_the_same_noisy_inputs() -> None:
    """Teacher x0 > 0, student x0 > sigma/2 at x0 = 0: they disagree with probability Phi(1/2) - 1/2 = 0.19 on
    the same noise (0.5 if each model saw its own draw); zeta covers it in >= 1 - alpha_zeta of the images."""
    sigma, n_p, alpha_zeta, k = 0.4, 100, 0.1, 120
    x, y = _images(k)
    rows = pd.DataFrame({"idx": range(k), "predict": 1, "radius": 0.5})
    frame = _rows(iter_transfer(Threshold(0.0), Threshold(sigma / 2), x, y, rows, sigma=sigma, n_p=n_p,
                                alpha_zeta=alpha_zeta, batch_size=256, indices=list(range(k)), seed=5,
                                progress=False))
    rate = norm.cdf(0.5) - 0.5
    d = frame["disagreements"].to_numpy()
    assert abs(d.mean() / n_p - rate) < 4 * np.sqrt(rate * (1 - rate) / (n_p * k))
    covered = np.mean([upper_confidence_bound(int(v), n_p, alpha_zeta) >= rate for v in d])
    assert covered >= 1 - alpha_zeta - 3 * np.sqrt(alpha_zeta * (1 - alpha_zeta) / k)
    again = _rows(iter_transfer(Threshold(0.0), Threshold(sigma / 2), x, y, rows.iloc[::-1], sigma=sigma,
                                n_p=n_p, alpha_zeta=alpha_zeta, batch_size=37, indices=list(range(k))[::-1],
                                seed=5, progress=False)).sort_values("idx")
    assert again["disagreements"].tolist() == d.tolist(), "keyed noise: batching and order change nothing"


class AutocastProbe(Threshold):
    """:class:`Threshold` that records whether autocast was on in each of its forward passes."""

    def __init__(self) -> None:
        super().__init__(0.0)
        self.autocast: set[bool] = set()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.autocast.add(torch.is_autocast_enabled(x.device.type))
        return super().forward(x)


def test_each_model_runs_at_its_own_precision() -> None:
    """A bf16 student of an fp32 teacher: the teacher is evaluated as certified (no autocast), the student in bf16."""
    x, y = _images(3)
    teacher, student = AutocastProbe(), AutocastProbe()
    rows = pd.DataFrame({"idx": range(3), "predict": 1, "radius": 0.5})
    list(iter_transfer(teacher, student, x, y, rows, sigma=0.3, n_p=20, alpha_zeta=0.01, batch_size=16,
                       indices=[0, 1, 2], seed=0, progress=False, precision="bf16", teacher_precision="fp32"))
    assert teacher.autocast == {False} and student.autocast == {True}
    with pytest.raises(CrtBenchError, match="TF32"):
        next(iter_transfer(teacher, student, x, y, rows, sigma=0.3, n_p=20, alpha_zeta=0.01, batch_size=16,
                           indices=[0], seed=0, progress=False, precision="fp32", teacher_precision="tf32"))


# -- (b) transferred radii are no larger than the student's own ---------------------------------------


def test_transfer_one_keeps_abstentions_and_never_grows_the_radius() -> None:
    assert transfer_one(ABSTAIN, 0.0, 0.25, 0, 100, 0.001) == (ABSTAIN, 0.0)
    for radius in (0.0, 0.1, 0.6):
        c, r = transfer_one(3, radius, 0.25, 0, 1000, 0.001)
        assert (c == ABSTAIN and r == 0.0) or (c == 3 and r < radius)
    assert transfer_one(3, 0.6, 0.25, 1000, 1000, 0.001) == (ABSTAIN, 0.0)
    p = p_lower_from_radius(0.3, 0.25)
    assert 0.25 * norm.ppf(p) == pytest.approx(0.3)


def test_identical_student_keeps_the_class_and_a_smaller_radius() -> None:
    sigma, k = 0.5, 8
    x, y = _images(k, 0.1)
    teacher = Threshold(-0.3)
    plain = certify_dataset(teacher, x, y, sigma=sigma, num_classes=2, n0=20, n=2000, alpha=0.001, batch_size=512,
                            indices=list(range(k)), seed=1, progress=False)
    moved = _rows(iter_transfer(teacher, teacher, x, y, plain, sigma=sigma, n_p=200, alpha_zeta=0.001,
                                batch_size=512, indices=list(range(k)), seed=1, progress=False))
    assert (moved["disagreements"] == 0).all()
    assert (moved["predict"] == plain["predict"]).all() and (plain["predict"] == 1).all()
    assert (moved["radius"].to_numpy() < plain["radius"].to_numpy()).all()


def test_transferred_radius_stays_below_the_students_true_radius() -> None:
    """Teacher x0 > -a, student x0 > -a + delta at x0 = 0: the student's true pA is Phi((a - delta)/sigma), so its
    exact radius is a - delta; transferred radii stay below it and close to its plain CERTIFY radii."""
    sigma, a, delta, k = 0.5, 0.5, 0.1, 10
    x, y = _images(k)
    teacher, student = Threshold(-a), Threshold(-a + delta)
    kw = dict(sigma=sigma, num_classes=2, n0=20, n=4000, alpha=0.001, batch_size=1024, indices=list(range(k)),
              seed=2, progress=False)
    plain_teacher = certify_dataset(teacher, x, y, **kw)
    plain_student = certify_dataset(student, x, y, **kw)
    moved = _rows(iter_transfer(teacher, student, x, y, plain_teacher, sigma=sigma, n_p=1000, alpha_zeta=0.001,
                                batch_size=1024, indices=list(range(k)), seed=2, progress=False))
    assert (moved["predict"] == 1).all()
    assert (moved["radius"] <= a - delta).all()
    assert (plain_student["radius"] <= a - delta).all()
    assert moved["radius"].mean() > 0.5 * plain_student["radius"].mean(), "a useful, not a vacuous, certificate"
    assert radius_from_counts(4000, 4000, 0.001, sigma) > a - delta  # the bound could have exceeded it


# -- (c) refusals, resumption (a trained teacher and CRT student) -------------------------------------


@pytest.fixture(scope="module")
def pair(gaussian_run, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, str, str]:
    """(store root, teacher run, CRT student run, the teacher's finished certification of CCFG)."""
    shared, teacher = gaussian_run
    store = ResultsStore(tmp_path_factory.mktemp("transfer") / "results")
    shutil.copytree(shared.root, store.root)
    student = train_run(fast_config("crt", teacher=teacher), store, progress=False)
    cert_id, _ = certify_run(teacher, store, CCFG, device="cpu", progress=False)
    return store.root, teacher, student, cert_id


@pytest.fixture
def pair_copy(pair, tmp_path: Path) -> tuple[ResultsStore, str, str, str]:
    root, teacher, student, cert_id = pair
    shutil.copytree(root, tmp_path / "results")
    return ResultsStore(tmp_path / "results"), teacher, student, cert_id


def test_refusals_write_nothing(pair_copy, tmp_path: Path) -> None:
    store, teacher, student, cert_id = pair_copy
    cases = {
        "not finished": (student, f"{teacher}@N9-unfinished", TCFG, {}),
        "no certification": (student, "nope@N3-x", TCFG, {}),
        "subset": (student, cert_id, TransferConfig(n_p=60, subset="range:0:7"), {}),
        "sigma": (student, cert_id, TCFG, {"sigma": 0.5}),
        "noise seed": (student, cert_id, TCFG, {"seed": 1}),
        "must be >= 1": (student, cert_id, TransferConfig(n_p=0, subset="range:0:6"), {}),
        "dataset": (str(_with_meta(store, student, tmp_path, dataset="fashion_mnist")), cert_id, TCFG, {}),
    }
    store.append("certifications", [{"cert_id": f"{teacher}@N9-unfinished", "run_id": teacher, "shard": "",
                                     "status": "failed", "updated": 1.0}])
    before = tables_snapshot(store.root)
    for words, (source, cert, tcfg, kw) in cases.items():
        with pytest.raises(CrtBenchError, match=words):
            transfer_run(source, store, cert, tcfg, device="cpu", progress=False, **kw)
    assert tables_snapshot(store.root) == before


def _with_meta(store: ResultsStore, run_id: str, tmp_path: Path, **meta: object) -> Path:
    obj = torch.load(store.run_dir(run_id) / "model.pt", map_location="cpu", weights_only=True)
    path = tmp_path / "other" / "model.pt"
    path.parent.mkdir()
    torch.save({**obj, **meta}, path)
    return path


def test_another_number_of_classes_or_input_shape_is_refused() -> None:
    base = {"dataset": "synthetic", "num_classes": 10, "in_chans": 3, "image_size": 32}
    teacher = LoadedModel(torch.nn.Identity(), base, Path("t.pt"))
    state = {"key_sigma": 0.25, "key_seed": 0}
    _check_compatible(LoadedModel(torch.nn.Identity(), dict(base), Path("s.pt")), teacher, "c", sigma=0.25, seed=0,
                      state=state)
    for name, value in (("num_classes", 5), ("in_chans", 1), ("image_size", 28)):
        student = LoadedModel(torch.nn.Identity(), {**base, name: value}, Path("s.pt"))
        with pytest.raises(CrtBenchError, match=name):
            _check_compatible(student, teacher, "c", sigma=0.25, seed=0, state=state)


def test_a_killed_transfer_resumes_to_the_uninterrupted_rows(pair_copy, monkeypatch: pytest.MonkeyPatch) -> None:
    store, teacher, student, cert_id = pair_copy
    other = ResultsStore(store.root.parent / "again")
    shutil.copytree(store.root, other.root)
    whole_id, whole = transfer_run(student, store, cert_id, TCFG, device="cpu", progress=False)
    real = transfer_run_mod.iter_transfer
    monkeypatch.setattr(transfer_run_mod, "iter_transfer", dies_after(real, 2))
    tiny = TransferConfig(n_p=60, batch=3, subset="range:0:6")  # one image per group: the kill falls mid-way
    with pytest.raises(Killed):
        transfer_run(student, other, cert_id, tiny, device="cpu", progress=False, flush_images=1)
    kept = other.certification_rows(whole_id)
    assert 0 < len(kept) < 6
    monkeypatch.setattr(transfer_run_mod, "iter_transfer", real)
    again_id, again = transfer_run(student, other, cert_id, tiny, device="cpu", progress=False)
    assert again_id == whole_id
    columns = ["idx", "predict", "radius", "disagreements", "n_p", "alpha_zeta", "transfer_from", "procedure", "alpha"]
    pd.testing.assert_frame_equal(whole[columns], again[columns])
    assert (whole["procedure"] == "transfer").all() and (whole["alpha"] == CCFG.alpha).all()
    teacher_rows = store.certification_rows(cert_id).set_index("idx")  # the teacher's counts, row by row
    for column in ("c_a", "selection_count", "n_a", "n_counted", "p_a_lower"):
        assert whole[column].tolist() == teacher_rows.loc[whole["idx"], column].tolist(), column


# -- (d) the command line, smoke profile --------------------------------------------------------------


def test_cli_trains_certifies_and_transfers(tmp_path: Path) -> None:
    root = tmp_path / "results"
    code, out, err = cli("run", "--method", "gaussian", "--arch", "tiny_cnn", *FAST_RUN, "--results", root)
    assert code == 0, err
    teacher = out.splitlines()[-1]
    code, out, err = cli("run", "--method", "crt", "--arch", "tiny_cnn", "--teacher", teacher, *FAST_RUN,
                         "--results", root)
    assert code == 0, err
    student = out.splitlines()[-1]
    args = ["--subset", "range:0:5", "--device", "cpu", "--no-progress", "--results", root]
    code, out, err = cli("certify", teacher, *args)
    assert code == 0, err
    cert_id = out.splitlines()[-1]
    code, out, err = cli("certify", student, "--transfer-from", cert_id, "--transfer-n", "80", *args)
    assert code == 0, err
    moved_id = out.splitlines()[-1]
    store = ResultsStore(root)
    rows = store.certification_rows(moved_id)
    teacher_rows = store.certification_rows(cert_id).set_index("idx")
    assert sorted(rows["idx"]) == list(range(5)) and (rows["transfer_from"] == cert_id).all()
    assert (rows["n_p"] == 80).all() and (rows["n"] == teacher_rows["n"].iloc[0]).all()
    mine = rows.set_index("idx")
    kept = mine["predict"] != ABSTAIN
    assert (mine.loc[kept, "predict"] == teacher_rows.loc[mine.index[kept], "predict"]).all()
    assert (mine.loc[kept, "radius"] < teacher_rows.loc[mine.index[kept], "radius"]).all()
    before = tables_snapshot(root)
    code, out, err = cli("certify", student, "--transfer-from", cert_id, "--transfer-n", "80", *args)
    assert code == 0 and out.splitlines()[-1] == moved_id, err
    assert len(ResultsStore(root).certification_rows(moved_id)) == 5
    code, _, err = cli("certify", student, "--transfer-from", cert_id, "--transfer-n", "-3", *args)
    assert_user_error(code, err, "--transfer-n")
    code, _, err = cli("certify", student, "--transfer-from", cert_id, "--n", "50", *args)
    assert_user_error(code, err, "--n")
    code, _, err = cli("certify", student, "--transfer-from", cert_id, "--seed", "4", *args)
    assert_user_error(code, err, "seed")
    assert tables_snapshot(root) == before


def test_a_transfer_is_not_the_runs_certification(pair_copy) -> None:
    """The grid's "is this run certified?" and the report's choice of a run's certification mean CERTIFY."""
    store, teacher, student, cert_id = pair_copy
    plain_id, _ = certify_run(student, store, CCFG, device="cpu", progress=False)
    moved_id, _ = transfer_run(student, store, cert_id, TCFG, device="cpu", progress=False)  # the newer one
    assert store.certification_states(run_id=student)["cert_id"].tolist() == [plain_id]
    assert set(store.certification_states(run_id=student, transfers=True)["cert_id"]) == {plain_id, moved_id}
    meta, _ = certifications(store)
    assert meta.set_index("run_id").loc[student, "cert_id"] == plain_id
