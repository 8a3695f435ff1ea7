"""Tests for crt_bench.data.datasets: real on-disk formats (CIFAR-10 pickles, IDX), synthetic data, batching."""

from __future__ import annotations

import gzip
import pickle
import struct
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch

from crt_bench.core.errors import CrtBenchError
from crt_bench.data import fashion_mnist
from crt_bench.data.batches import ResidentBatches, augment_batch
from crt_bench.data.catalog import DATASETS, DatasetInfo, dataset_info
from crt_bench.data.datasets import load_split
from crt_bench.data.split import Split

# --------------------------------------------------------------------------------------------------
# CIFAR-10 in its real on-disk format


class _Py2StylePickler(pickle._Pickler):  # type: ignore[name-defined]
    """Pickles ``bytes`` as Python 2 ``str`` (opcodes U / T), as the CIFAR python files were written.

    Loaded with ``encoding="latin1"`` (torchvision) those become ``str`` keys such as ``"data"``;
    loaded with ``encoding="bytes"`` (the CIFAR website's snippet) they are ``b"data"``.
    """

    dispatch = pickle._Pickler.dispatch.copy()  # type: ignore[attr-defined]

    def _save_py2_str(self, obj: bytes) -> None:
        if len(obj) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(obj)]) + obj)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(obj)) + obj)
        self.memoize(obj)

    dispatch[bytes] = _save_py2_str


def _dump_py2(obj: object, path: Path) -> None:
    with open(path, "wb") as f:
        _Py2StylePickler(f, protocol=2).dump(obj)


def write_cifar(
    root: Path, per_batch: int = 4, n_test: int = 6, seed: int = 0
) -> dict[str, tuple[np.ndarray, list[int]]]:
    """Write a tiny CIFAR-10 ``cifar-10-batches-py/`` under ``root``; return the arrays written."""
    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    written: dict[str, tuple[np.ndarray, list[int]]] = {}
    batches = [(f"data_batch_{i}", per_batch, f"training batch {i} of 5") for i in range(1, 6)]
    batches.append(("test_batch", n_test, "testing batch 1 of 1"))
    for fname, n, label in batches:
        pixels = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)  # rows: R plane, G plane, B plane
        labels = [int(v) for v in rng.integers(0, 10, size=n)]
        _dump_py2(
            {
                b"batch_label": label.encode(),
                b"labels": labels,
                b"data": pixels,
                b"filenames": [f"img_{fname}_{i}.png".encode() for i in range(n)],
            },
            folder / fname,
        )
        written[fname] = (pixels, labels)
    names = [b"airplane", b"automobile", b"bird", b"cat", b"deer", b"dog", b"frog", b"horse", b"ship", b"truck"]
    _dump_py2({b"num_cases_per_batch": 10000, b"label_names": names, b"num_vis": 3072}, folder / "batches.meta")
    return written


def _load_cifar(split: str, root: Path, **kw: object) -> Split:
    with pytest.warns(UserWarning, match="not the official CIFAR-10"):
        return load_split("cifar10", split, data_dir=root, download=False, **kw)


def test_cifar_fixture_matches_official_pickle_layout(tmp_path: Path) -> None:
    write_cifar(tmp_path)
    with open(tmp_path / "cifar-10-batches-py" / "data_batch_1", "rb") as f:
        entry = pickle.load(f, encoding="bytes")  # how the CIFAR website says to read them
    assert set(entry) == {b"batch_label", b"labels", b"data", b"filenames"}
    assert entry[b"data"].dtype == np.uint8 and entry[b"data"].shape == (4, 3072)


def test_cifar_round_trips_pixels_and_labels(tmp_path: Path) -> None:
    written = write_cifar(tmp_path)
    train = _load_cifar("train", tmp_path)
    test = _load_cifar("test", tmp_path)

    train_pixels = np.concatenate([written[f"data_batch_{i}"][0] for i in range(1, 6)])
    train_labels = sum((written[f"data_batch_{i}"][1] for i in range(1, 6)), [])
    for split, pixels, labels in ((train, train_pixels, train_labels), (test, *written["test_batch"])):
        assert split.info is DATASETS["cifar10"]
        assert split.x.dtype == torch.float32 and split.y.dtype == torch.int64
        assert split.x.shape == (len(labels), 3, 32, 32) and len(split) == len(labels)
        expected = torch.from_numpy(pixels.reshape(-1, 3, 32, 32)).float() / 255
        assert torch.equal(split.x, expected)
        assert split.y.tolist() == labels
    # row-major channel planes: value k of a row is channel k // 1024, row (k % 1024) // 32, col k % 32
    i, c, h, w = 3, 2, 17, 5
    assert test.x[i, c, h, w].item() == pytest.approx(written["test_batch"][0][i, c * 1024 + h * 32 + w] / 255)


def test_cifar_limit_and_data_dir_pointing_at_batches_folder(tmp_path: Path) -> None:
    write_cifar(tmp_path, per_batch=6, n_test=8)
    full = _load_cifar("test", tmp_path)
    first = _load_cifar("test", tmp_path / "cifar-10-batches-py", limit=3)
    assert torch.equal(first.x, full.x[:3]) and torch.equal(first.y, full.y[:3])

    train = _load_cifar("train", tmp_path)
    sub_a = _load_cifar("train", tmp_path, limit=7, seed=1)
    sub_b = _load_cifar("train", tmp_path, limit=7, seed=1)
    assert len(sub_a) == 7 and torch.equal(sub_a.x, sub_b.x)
    rows = {tuple(r.flatten()[:16].tolist()) for r in train.x}
    assert all(tuple(r.flatten()[:16].tolist()) in rows for r in sub_a.x)


def test_cifar_missing_without_download_names_both_options(tmp_path: Path) -> None:
    with pytest.raises(CrtBenchError) as info:
        load_split("cifar10", "test", data_dir=tmp_path, download=False)
    msg = str(info.value)
    assert "--data-dir" in msg and "cifar-10-batches-py" in msg
    assert "download" in msg and "internet" in msg
    assert str(tmp_path) in msg


def test_cifar_failed_download_names_both_options(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import torchvision.datasets.cifar as tv_cifar

    def offline(*args: object, **kwargs: object) -> None:
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(tv_cifar, "download_and_extract_archive", offline)
    monkeypatch.setenv("CRT_BENCH_DATA", str(tmp_path / "cache"))
    with pytest.raises(CrtBenchError) as info:
        load_split("cifar10", "train")  # default root from $CRT_BENCH_DATA, download=True
    msg = str(info.value)
    assert "download failed" in msg and "--data-dir" in msg and "internet" in msg
    assert str(tmp_path / "cache") in msg


def test_cifar_corrupt_batch_is_one_clear_error(tmp_path: Path) -> None:
    write_cifar(tmp_path)
    (tmp_path / "cifar-10-batches-py" / "test_batch").write_bytes(b"\x80\x02garbage")
    with pytest.raises(CrtBenchError, match="cifar-10-batches-py"):
        load_split("cifar10", "test", data_dir=tmp_path, download=False)


# --------------------------------------------------------------------------------------------------
# Fashion-MNIST (IDX files)


def _idx_bytes(array: np.ndarray, magic: int) -> bytes:
    header = struct.pack(">I", magic) + b"".join(struct.pack(">I", d) for d in array.shape)
    return header + array.astype(np.uint8).tobytes()


def write_idx(folder: Path, prefix: str, n: int, *, gz: bool, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, size=n, dtype=np.uint8)
    for stem, payload in (
        (f"{prefix}-images-idx3-ubyte", _idx_bytes(images, 2051)),
        (f"{prefix}-labels-idx1-ubyte", _idx_bytes(labels, 2049)),
    ):
        if gz:
            (folder / f"{stem}.gz").write_bytes(gzip.compress(payload))
        else:
            (folder / stem).write_bytes(payload)
    return images, labels


def test_fashion_mnist_idx_round_trip_gz_and_plain(tmp_path: Path) -> None:
    train_images, train_labels = write_idx(tmp_path, "train", 7, gz=True, seed=1)
    test_images, test_labels = write_idx(tmp_path, "t10k", 5, gz=False, seed=2)
    train = load_split("fashion-mnist", "train", data_dir=tmp_path, download=False)
    test = load_split("fashion-mnist", "test", data_dir=tmp_path, download=False)
    assert train.x.shape == (7, 1, 28, 28) and test.x.shape == (5, 1, 28, 28)
    assert torch.equal(train.x[:, 0], torch.from_numpy(train_images).float() / 255)
    assert torch.equal(test.x[:, 0], torch.from_numpy(test_images).float() / 255)
    assert train.y.tolist() == train_labels.tolist() and test.y.dtype == torch.int64
    assert test.y.tolist() == test_labels.tolist()
    assert train.info is DATASETS["fashion-mnist"]


def test_fashion_mnist_torchvision_layout_under_data_dir(tmp_path: Path) -> None:
    raw = tmp_path / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    images, _ = write_idx(raw, "t10k", 3, gz=False)
    split = load_split("fashion-mnist", "test", data_dir=tmp_path, download=False)
    assert torch.equal(split.x[:, 0], torch.from_numpy(images).float() / 255)


def test_idx_wrong_magic_and_truncation_name_the_file(tmp_path: Path) -> None:
    write_idx(tmp_path, "train", 4, gz=True)
    bad = tmp_path / "train-images-idx3-ubyte.gz"
    payload = gzip.decompress(bad.read_bytes())
    bad.write_bytes(gzip.compress(struct.pack(">I", 2049) + payload[4:]))
    with pytest.raises(CrtBenchError, match="magic number 2049, expected 2051") as info:
        load_split("fashion-mnist", "train", data_dir=tmp_path, download=False)
    assert str(bad) in str(info.value)

    bad.write_bytes(gzip.compress(payload[:-100]))
    with pytest.raises(CrtBenchError, match="truncated") as info:
        load_split("fashion-mnist", "train", data_dir=tmp_path, download=False)
    assert str(bad) in str(info.value)

    bad.write_bytes(b"not gzip at all")
    with pytest.raises(CrtBenchError, match="train-images-idx3-ubyte.gz"):
        load_split("fashion-mnist", "train", data_dir=tmp_path, download=False)


def test_fashion_mnist_missing_names_places_and_remedies(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fashion_mnist, "DEBIAN_FASHION_MNIST_DIR", tmp_path / "no-debian")
    monkeypatch.setenv("CRT_BENCH_DATA", str(tmp_path / "cache"))
    with pytest.raises(CrtBenchError) as info:
        load_split("fashion-mnist", "test", download=False)
    msg = str(info.value)
    assert "apt-get install dataset-fashion-mnist" in msg and "--data-dir" in msg
    assert str(tmp_path / "no-debian") in msg and str(tmp_path / "cache") in msg


@pytest.mark.skipif(
    not (fashion_mnist.DEBIAN_FASHION_MNIST_DIR / "train-images-idx3-ubyte.gz").is_file(),
    reason="Debian package dataset-fashion-mnist not installed (/usr/share/datasets/fashion-mnist)",
)
def test_real_fashion_mnist_from_debian_package() -> None:
    train = load_split("fashion-mnist", "train", download=False)
    test = load_split("fashion-mnist", "test", download=False)
    assert train.x.shape == (60000, 1, 28, 28) and test.x.shape == (10000, 1, 28, 28)
    for split in (train, test):
        assert sorted(split.y.unique().tolist()) == list(range(10))
        assert 0.0 <= split.x.min().item() and split.x.max().item() <= 1.0
    info = DATASETS["fashion-mnist"]
    assert train.x.mean().item() == pytest.approx(info.mean[0], abs=1e-3)
    assert train.x.std().item() == pytest.approx(info.std[0], abs=1e-3)


# --------------------------------------------------------------------------------------------------
# Synthetic


def test_synthetic_is_deterministic_and_shaped_like_cifar() -> None:
    a = load_split("synthetic", "train", seed=3)
    b = load_split("synthetic", "train", seed=3)
    c = load_split("synthetic", "train", seed=4)
    test = load_split("synthetic", "test", seed=3)
    assert torch.equal(a.x, b.x) and torch.equal(a.y, b.y)
    assert not torch.equal(a.x, c.x)
    assert not torch.equal(a.x[: len(test)], test.x)
    assert a.x.shape[1:] == (3, 32, 32) and a.x.dtype == torch.float32 and a.y.dtype == torch.int64
    assert 0.0 <= a.x.min().item() and a.x.max().item() <= 1.0
    assert torch.bincount(a.y, minlength=10).min().item() > 0 and a.y.max().item() == 9
    info = dataset_info("synthetic")
    d = load_split("synthetic", "train", seed=0)
    assert torch.allclose(d.x.mean(dim=(0, 2, 3)), torch.tensor(info.mean), atol=1e-3)
    assert torch.allclose(d.x.std(dim=(0, 2, 3)), torch.tensor(info.std), atol=1e-3)


def test_synthetic_is_class_dependent_and_noise_robust() -> None:
    train = load_split("synthetic", "train")
    test = load_split("synthetic", "test")
    means = torch.stack([train.x[train.y == k].mean(0) for k in range(10)]).flatten(1)

    def nearest_mean_accuracy(x: torch.Tensor) -> float:
        return (torch.cdist(x.flatten(1), means).argmin(1) == test.y).float().mean().item()

    gen = torch.Generator().manual_seed(0)
    assert nearest_mean_accuracy(test.x) > 0.9
    assert nearest_mean_accuracy(test.x + 0.25 * torch.randn(test.x.shape, generator=gen)) > 0.7


def test_limit_keeps_test_prefix_and_seeded_train_subset() -> None:
    full_test = load_split("synthetic", "test")
    head = load_split("synthetic", "test", limit=10)
    assert torch.equal(head.x, full_test.x[:10]) and head.y.tolist() == list(range(10))
    s1 = load_split("synthetic", "train", limit=50, seed=1)
    s2 = load_split("synthetic", "train", limit=50, seed=1)
    assert len(s1) == 50 and torch.equal(s1.x, s2.x)
    assert len(load_split("synthetic", "test", limit=10**6)) == len(full_test)
    with pytest.raises(CrtBenchError, match="limit"):
        load_split("synthetic", "test", limit=0)


def test_names_and_splits_are_validated() -> None:
    with pytest.raises(CrtBenchError) as info:
        dataset_info("svhn")  # (imagenet is a dataset now: crt_bench.data.imagenet)
    assert all(name in str(info.value) for name in ("cifar10", "fashion-mnist", "synthetic"))
    assert dataset_info("Fashion_MNIST") is DATASETS["fashion-mnist"]
    with pytest.raises(CrtBenchError, match="train, test"):
        load_split("synthetic", "val")
    assert isinstance(DATASETS["cifar10"], DatasetInfo) and DATASETS["cifar10"].augment
    assert not DATASETS["synthetic"].augment and not DATASETS["fashion-mnist"].augment


# --------------------------------------------------------------------------------------------------
# Augmentation and batching


def _matches_some_crop(out: torch.Tensor, padded: torch.Tensor, pad: int, size: int) -> bool:
    for dy in range(2 * pad + 1):
        for dx in range(2 * pad + 1):
            crop = padded[:, dy : dy + size, dx : dx + size]
            if torch.equal(out, crop) or torch.equal(out, crop.flip(-1)):
                return True
    return False


def test_augment_batch_outputs_are_shifted_possibly_flipped_crops() -> None:
    x = torch.rand(32, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    out = augment_batch(x, generator=torch.Generator().manual_seed(1))
    assert out.shape == x.shape and out.dtype == x.dtype
    padded = torch.nn.functional.pad(x, (4, 4, 4, 4))
    assert all(_matches_some_crop(out[i], padded[i], 4, 32) for i in range(len(x)))
    assert sum(torch.equal(out[i], x[i]) for i in range(len(x))) < len(x) // 2  # it does move things


def test_augment_batch_reproducible_and_degenerate_cases() -> None:
    x = torch.rand(8, 1, 12, 12)
    a = augment_batch(x, pad=2, generator=torch.Generator().manual_seed(7))
    b = augment_batch(x, pad=2, generator=torch.Generator().manual_seed(7))
    c = augment_batch(x, pad=2, generator=torch.Generator().manual_seed(8))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.equal(augment_batch(x, pad=0, flip=False), x)
    flipped_only = augment_batch(x, pad=0, generator=torch.Generator().manual_seed(0))
    assert all(torch.equal(f, o) or torch.equal(f, o.flip(-1)) for f, o in zip(flipped_only, x))
    with pytest.raises(ValueError):
        augment_batch(x[0])


def _indexed_split(n: int) -> Split:
    x = torch.arange(n, dtype=torch.float32).view(n, 1, 1, 1).expand(n, 1, 4, 4).contiguous()
    return Split(x, torch.arange(n), DATASETS["synthetic"])


def test_batch_sampler_covers_each_index_once_per_epoch() -> None:
    split = _indexed_split(103)
    sampler = ResidentBatches(split, 10, generator=torch.Generator().manual_seed(0))
    assert len(sampler) == 11
    epochs = []
    for _ in range(2):
        batches = list(sampler)
        assert len(batches) == 11 and [len(yb) for _, yb in batches] == [10] * 10 + [3]
        for xb, yb in batches:
            assert torch.equal(xb[:, 0, 0, 0].long(), yb)  # images stay with their labels
        seen = torch.cat([yb for _, yb in batches])
        assert sorted(seen.tolist()) == list(range(103))
        epochs.append(seen)
    assert not torch.equal(epochs[0], epochs[1])  # a new permutation each epoch


def test_batch_sampler_order_drop_last_and_augment() -> None:
    split = _indexed_split(25)
    ordered = list(ResidentBatches(split, 10, shuffle=False))
    assert torch.cat([yb for _, yb in ordered]).tolist() == list(range(25))
    dropped = ResidentBatches(split, 10, drop_last=True, generator=torch.Generator().manual_seed(0))
    assert len(dropped) == 2 and [len(yb) for _, yb in dropped] == [10, 10]
    aug = ResidentBatches(split, 8, augment=True, generator=torch.Generator().manual_seed(0))
    for xb, yb in aug:
        assert xb.shape[1:] == (1, 4, 4)
        assert bool(((xb == 0) | (xb == yb.view(-1, 1, 1, 1).float())).all())  # image or zero padding
    with pytest.raises(CrtBenchError, match="batch size"):
        ResidentBatches(split, 0)
    moved = split.to("cpu")
    assert len(moved) == 25 and moved.info is split.info


@pytest.mark.gpu
def test_cuda_batches_without_host_sync() -> None:
    x = torch.rand(64, 3, 32, 32)
    cpu = augment_batch(x, generator=torch.Generator().manual_seed(3))
    gpu = augment_batch(x.cuda(), generator=torch.Generator().manual_seed(3))
    assert torch.equal(gpu.cpu(), cpu)  # CPU generator: same draws, moved to the device

    split = load_split("synthetic", "train", limit=256).to("cuda")
    gen = torch.Generator(device="cuda").manual_seed(0)
    sampler = ResidentBatches(split, 64, augment=True, generator=gen)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        batches = list(sampler)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert all(xb.is_cuda and yb.is_cuda for xb, yb in batches)
    assert sorted(torch.cat([yb for _, yb in batches]).cpu().tolist()) == sorted(split.y.cpu().tolist())
