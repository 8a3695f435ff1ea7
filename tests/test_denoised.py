"""Denoised smoothing: the DnCNN denoiser, the mse and stability variants end to end, the frozen
classifier, the shared mse denoiser's hours, and the refusal of a denoiser of another sigma."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from conftest import FAST, tree_snapshot
from test_cli import CERT_ARGS, FAST_RUN, assert_user_error, cli, last_line

from crt_bench.certify.driver import iter_certify
from crt_bench.core.errors import CrtBenchError
from crt_bench.methods.registry import StepContext, get_method, list_methods
from crt_bench.models.bn_fold import fold_batchnorm
from crt_bench.models.denoiser import DenoisedClassifier, DenoiserConfig, DnCNN, denoiser_size
from crt_bench.models.files import load_model
from crt_bench.store.store import ResultsStore
from crt_bench.train.resolve import resolve_run_config
from crt_bench.train.trainer import train_run

SIGMA = 0.25


def images(n: int = 32, seed: int = 0) -> torch.Tensor:
    """Smooth synthetic images (a denoiser can only tell noise from a signal with structure)."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(n, 3, 4, 4, generator=g)
    return F.interpolate(coarse, size=16, mode="bilinear", align_corners=False)


def test_denoiser_reduces_mse_on_noisy_inputs_after_a_few_steps() -> None:
    torch.manual_seed(0)
    denoiser = DnCNN(DenoiserConfig(*denoiser_size("smoke"), in_chans=3, sigma=SIGMA, objective="mse"))
    model = DenoisedClassifier(denoiser, torch.nn.Sequential(torch.nn.Conv2d(3, 2, 1), torch.nn.Flatten()))
    spec = get_method("denoised")
    ctx = StepContext(sigma=SIGMA, hparams=spec.make_hparams({"variant": "mse"}))
    x = images()
    noisy = x + torch.randn(x.shape, generator=torch.Generator().manual_seed(5)) * SIGMA

    def held_out_mse() -> float:
        with torch.no_grad():
            return F.mse_loss(denoiser.eval()(noisy), x).item()

    before = held_out_mse()
    optimizer = torch.optim.Adam(denoiser.parameters(), lr=1e-2)
    denoiser.train()
    for _ in range(40):
        optimizer.zero_grad()
        spec.loss(model, x, torch.zeros(len(x), dtype=torch.long), ctx).backward()
        optimizer.step()
    after = held_out_mse()
    assert after < before and after < 0.8 * F.mse_loss(noisy, x).item()  # it removes noise, not just its own
    assert all(p.grad is None for p in model.classifier.parameters())  # the classifier plays no part


def test_registry_lists_denoised_and_standard_with_their_recipes() -> None:
    names = {m.name for m in list_methods()}
    assert {"denoised", "standard"} <= names
    spec = get_method("denoised")
    assert spec.needs_teacher and spec.compose is not None
    r = spec.recipe
    assert (r.optimizer, r.lr, r.epochs, r.milestones, r.gamma) == ("adam", 1e-3, 90, (30, 60), 0.1)
    code, out, _ = cli("list", "methods")
    assert code == 0 and "denoised" in out and "standard" in out
    with pytest.raises(CrtBenchError, match="variant"):
        spec.make_hparams({"variant": "both"})


def test_profiles_size_the_denoiser() -> None:
    assert denoiser_size("paper") == (17, 64)
    assert denoiser_size("smoke")[0] < 17 and denoiser_size("cpu")[1] < 64


@pytest.fixture(scope="module")
def classifier(tmp_path_factory: pytest.TempPathFactory) -> tuple[ResultsStore, str]:
    """A finished 1-epoch standard (noise-free) tiny_cnn run on the smoke profile."""
    store = ResultsStore(tmp_path_factory.mktemp("denoised-results"))
    cfg = resolve_run_config("standard", "tiny_cnn", **{**FAST, "epochs": 1})
    return store, train_run(cfg, store, progress=False)


@pytest.fixture(scope="module")
def mse_run(classifier: tuple[ResultsStore, str]) -> str:
    """An mse denoiser trained through the CLI (2 epochs, Adam), in front of the standard classifier."""
    store, cls = classifier
    code, out, err = cli("run", "--method", "denoised", "--set", "variant=mse", "--arch", "tiny_cnn",
                         "--teacher", cls, "--sigma", str(SIGMA), *FAST_RUN, "--epochs", "2",
                         "--results", store.root)
    assert code == 0, err
    return last_line(out)


def test_mse_run_trains_the_denoiser_only_and_certifies(classifier: tuple[ResultsStore, str], mse_run: str) -> None:
    store, cls = classifier
    row = store.get_run(mse_run)
    assert row["status"] == "finished" and row["teacher_run_id"] == cls and row["train_seconds"] > 0
    assert '"optimizer": "adam"' in row["config"]
    loaded = load_model(mse_run, store.root)
    assert isinstance(loaded.model, DenoisedClassifier)
    assert loaded.meta["denoiser"]["objective"] == "mse" and loaded.meta["denoiser"]["sigma"] == SIGMA
    base = load_model(cls, store.root).model.state_dict()
    for key, value in loaded.model.classifier.state_dict().items():
        assert torch.equal(value, base[key]), key  # the classifier is saved as it was given
    epochs = store.read("epochs", where={"run_id": mse_run})
    assert len(epochs) == 2 and epochs["loss"].iloc[-1] < epochs["loss"].iloc[0]

    code, _, err = cli("certify", mse_run, *CERT_ARGS, "--device", "cpu", "--no-progress", "--results", store.root)
    assert code == 0, err
    rows = store.read("certify", where={"run_id": mse_run})
    assert len(rows) == 5 and (rows["seconds"] > 0).all()
    assert store.certification_seconds(mse_run) == pytest.approx(rows["seconds"].sum())


def test_the_denoised_model_folds_and_certifies_unchanged(classifier: tuple[ResultsStore, str], mse_run: str) -> None:
    store, _ = classifier
    model = load_model(mse_run, store.root).model
    folded, count = fold_batchnorm(model, (3, 32, 32))
    assert folded is not None and count >= model.denoiser.config.depth - 2  # the denoiser's batch norms too
    x = torch.rand(3, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(folded(x), model(x), rtol=1e-3, atol=1e-4)
    [(frame, engine)] = iter_certify(model, x, torch.zeros(3, dtype=torch.long), sigma=SIGMA, num_classes=10, n0=10,
                                     n=50, alpha=0.01, batch_size=32, indices=[0, 1, 2], seed=0, progress=False)
    assert len(frame) == 3 and engine.folded_batchnorms > 0


def test_mse_denoiser_is_reused_by_another_run_without_training(classifier: tuple[ResultsStore, str],
                                                                mse_run: str) -> None:
    store, cls = classifier
    cfg = resolve_run_config("denoised", "tiny_cnn", **FAST, teacher=cls, sigma=SIGMA,
                             hparams={"variant": "mse", "denoiser": mse_run})
    assert cfg.epochs == 0
    reuse = train_run(cfg, store, progress=False)
    row = store.get_run(reuse)
    assert row["train_seconds"] == 0 and row["init_run_id"] == mse_run
    assert row["init_train_seconds"] == pytest.approx(store.get_run(mse_run)["train_seconds"])
    assert row["total_train_seconds"] == 0  # the shared denoiser's hours are counted once, in its own run
    a, b = load_model(reuse, store.root).model, load_model(mse_run, store.root).model
    for key, value in a.denoiser.state_dict().items():
        assert torch.equal(value, b.denoiser.state_dict()[key])


def test_stability_run_fine_tunes_the_denoiser_through_a_frozen_classifier(classifier: tuple[ResultsStore, str],
                                                                          mse_run: str) -> None:
    store, cls = classifier
    code, out, err = cli("run", "--method", "denoised", "--set", "variant=stability", "--set", f"denoiser={mse_run}",
                         "--arch", "tiny_cnn", "--teacher", cls, "--sigma", str(SIGMA), *FAST_RUN,
                         "--results", store.root)
    assert code == 0, err
    run_id = last_line(out)
    row = store.get_run(run_id)
    assert row["init_run_id"] == mse_run and row["train_seconds"] > 0
    tuned, start = load_model(run_id, store.root), load_model(mse_run, store.root)
    assert tuned.meta["denoiser"]["objective"] == "stability"
    base = load_model(cls, store.root).model.state_dict()
    for key, value in tuned.model.classifier.state_dict().items():
        assert torch.equal(value, base[key]), key  # weights and batch-norm statistics unchanged
    moved = [not torch.equal(v, start.model.denoiser.state_dict()[k])
             for k, v in tuned.model.denoiser.state_dict().items() if v.is_floating_point()]
    assert any(moved)
    code, _, err = cli("certify", run_id, *CERT_ARGS, "--device", "cpu", "--no-progress", "--results", store.root)
    assert code == 0, err


def test_a_denoiser_of_another_sigma_is_refused(classifier: tuple[ResultsStore, str], mse_run: str) -> None:
    store, cls = classifier
    before = tree_snapshot(store.root)
    code, _, err = cli("run", "--method", "denoised", "--set", f"denoiser={mse_run}", "--arch", "tiny_cnn",
                       "--teacher", cls, "--sigma", "0.5", *FAST_RUN, "--results", store.root)
    assert_user_error(code, err, "sigma 0.25", "0.5", only_line=False)  # after the run's banner
    code, _, err = cli("certify", mse_run, *CERT_ARGS, "--sigma", "0.5", "--device", "cpu", "--no-progress",
                       "--results", store.root)
    assert_user_error(code, err, "sigma 0.25", "0.5", only_line=False)  # after the certification's header
    assert tree_snapshot(store.root) == before


def test_denoised_needs_its_classifier() -> None:
    with pytest.raises(CrtBenchError, match="needs"):
        resolve_run_config("denoised", "tiny_cnn", **FAST)
