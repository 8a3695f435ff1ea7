"""The ImageNet path on a tiny ImageFolder written here (3 classes, JPEG and PNG of odd sizes): lazy splits,
the DataLoader batches' rank contract, and `run` (Gaussian, then CRT with that teacher) and `certify` end
to end through the CLI, at 32 px (``imagenet-small``) and once at the real 224 pipeline with ResNet-18."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from test_cli import cli, last_line

from crt_bench.analysis.imagenet import imagenet_table
from crt_bench.config.profiles import get_profile
from crt_bench.core.constants import IMAGENET_RADII
from crt_bench.core.errors import CrtBenchError
from crt_bench.data.catalog import dataset_info
from crt_bench.data.datasets import load_split
from crt_bench.data.imagenet import FolderBatches
from crt_bench.models.build import build_model
from crt_bench.store.store import ResultsStore

COLOURS = {"apple": (200, 40, 40), "leaf": (40, 180, 60), "sky": (60, 90, 220)}


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """DIR/train/<class>/ 4 images each, DIR/val/<class>/ 2 each: a class colour plus noise, odd sizes."""
    root = tmp_path_factory.mktemp("imagefolder")
    rng = np.random.default_rng(0)
    for split, count in (("train", 4), ("val", 2)):
        for name, colour in COLOURS.items():
            (root / split / name).mkdir(parents=True)
            for i in range(count):
                h, w = 40 + 8 * i, 56 - 4 * i
                pixels = np.clip(np.array(colour) + rng.normal(0, 25, (h, w, 3)), 0, 255).astype(np.uint8)
                suffix = "JPEG" if i % 2 == 0 else "png"
                Image.fromarray(pixels).save(root / split / name / f"{name}_{i}.{suffix}")
    return root


def test_lazy_splits_use_the_test_pipeline_and_folder_labels(folder: Path) -> None:
    val = load_split("imagenet", "test", data_dir=folder)
    assert len(val) == 6 and val.x.shape == (6, 3, 224, 224) and val.y.tolist() == [0, 0, 1, 1, 2, 2]
    batch = val.x[[0, 5]]
    assert batch.shape == (2, 3, 224, 224) and 0.0 <= float(batch.min()) and float(batch.max()) <= 1.0
    assert torch.equal(val.x[5], batch[1])  # decoding is deterministic (resize 256, center crop 224)
    red, blue = batch[0].mean((1, 2)), batch[1].mean((1, 2))
    assert red[0] > red[2] and blue[2] > blue[0]
    small = load_split("imagenet-small", "train", data_dir=folder, limit=5, seed=1)
    assert len(small) == 5 and small.x[0:2].shape == (2, 3, 32, 32)
    with pytest.raises(CrtBenchError, match="ImageFolder"):
        load_split("imagenet", "test", data_dir=folder / "nowhere")
    profile = get_profile("imagenet")
    assert profile.batch_size == 400 and profile.certify.subset == "skip:100" and profile.certify.n == 100_000
    assert dataset_info("imagenet").mean == (0.485, 0.456, 0.406)


def test_folder_batches_split_the_global_batch_by_rank(folder: Path) -> None:
    """Every rank draws the same order and keyed augmentation; its block of each batch is the single process's."""
    train = load_split("imagenet-small", "train", data_dir=folder)

    def epoch(rank: int, world: int, workers: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        gen = torch.Generator().manual_seed(7)
        return list(FolderBatches(train, 5, generator=gen, device=torch.device("cpu"), rank=rank,
                                  world_size=world, workers=workers))

    whole, r0, r1 = epoch(0, 1, 1), epoch(0, 2, 0), epoch(1, 2, 0)
    assert [len(y) for _, y in whole] == [5, 5, 2]
    for (x, y), (x0, y0), (x1, y1) in zip(whole, r0, r1):
        assert torch.equal(torch.cat([y0, y1]), y)
        assert torch.equal(torch.cat([x0, x1]), x)  # same crops and flips: keyed by (epoch key, image)


def test_run_gaussian_then_crt_then_certify_on_an_image_folder(folder: Path, tmp_path: Path) -> None:
    common = ["--arch", "tiny_cnn", "--dataset", "imagenet-small", "--data-dir", folder, "--profile", "smoke",
              "--epochs", "2", "--batch-size", "4", "--device", "cpu", "--no-progress", "--results", tmp_path]
    code, out, err = cli("run", "--method", "gaussian", *common)
    assert code == 0, err
    teacher = last_line(out)
    code, out, err = cli("run", "--method", "crt", "--teacher", teacher, *common)
    assert code == 0, err
    student = last_line(out)
    store = ResultsStore(tmp_path)
    row = store.get_run(student)
    assert row["status"] == "finished" and row["dataset"] == "imagenet-small" and row["teacher_run_id"] == teacher
    epochs = store.read("epochs")
    assert (epochs[epochs["run_id"] == student]["optimizer_steps"] == 3).all()  # 12 images / batch 4
    code, out, err = cli("certify", student, "--n0", "10", "--n", "40", "--batch", "25", "--subset", "all",
                         "--device", "cpu", "--no-progress", "--results", tmp_path)
    assert code == 0, err
    rows = store.read("certify")
    rows = rows[rows["cert_id"] == last_line(out)]
    assert sorted(rows["idx"]) == list(range(6)) and rows["label"].tolist() == [0, 0, 1, 1, 2, 2]
    table = imagenet_table(rows)
    assert list(table.columns) == ["cert_id", "images", *[f"r={r:g}" for r in IMAGENET_RADII], "acr"]
    assert table["images"].iloc[0] == 6
    code, out, err = cli("plot", tmp_path, "--out", tmp_path / "plots")
    assert code == 0, err
    report = (tmp_path / "plots" / "REPORT.md").read_text()
    section = report[report.index("## ImageNet: certified accuracy at the paper's radii"):]
    assert "| r=0.5 |" in section and "| r=3 |" in section and "| crt | tiny_cnn |" in section


def test_the_real_224_pipeline_with_resnet18_224(folder: Path, tmp_path: Path) -> None:
    """A couple of images through RandomResizedCrop 224 / resize 256 + crop 224 and torchvision ResNets."""
    student = build_model("resnet50_224", num_classes=1000, in_chans=3, mean=[0.5] * 3, std=[0.25] * 3).eval()
    with torch.no_grad():
        assert student(torch.rand(1, 3, 224, 224)).shape == (1, 1000)
    code, out, err = cli("run", "--method", "gaussian", "--arch", "resnet18_224", "--dataset", "imagenet",
                         "--data-dir", folder, "--profile", "smoke", "--epochs", "1", "--train-limit", "2",
                         "--batch-size", "2", "--device", "cpu", "--no-progress", "--results", tmp_path)
    assert code == 0, err
    run_id = last_line(out)
    code, out, err = cli("certify", run_id, "--n0", "4", "--n", "8", "--batch", "12", "--subset", "range:0:6:5",
                         "--device", "cpu", "--no-progress", "--results", tmp_path)
    assert code == 0, err
    rows = ResultsStore(tmp_path).read("certify")
    assert sorted(rows["idx"]) == [0, 5]
