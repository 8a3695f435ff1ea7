"""CIFAR-10 from the official python pickles."""
from __future__ import annotations

import hashlib
import os
import pickle
import warnings
from pathlib import Path

import numpy as np

from crt_bench.core.errors import CrtBenchError, one_line
from crt_bench.data.safe_pickle import load_cifar_pickle
from crt_bench.data.split import default_data_root

# --------------------------------------------------------------------------------------------------
# CIFAR-10

CIFAR_FOLDER = "cifar-10-batches-py"


def _cifar_class() -> type:
    """``torchvision.datasets.CIFAR10`` with file *presence* checks instead of per-file md5s.

    torchvision's ``CIFAR10`` refuses to open ``cifar-10-batches-py/`` unless all six batch files
    and ``batches.meta`` match hard-coded md5 sums. Those sums cannot be met by any file other than
    the official ones, so with them nothing but the 170 MB download could ever go through the real
    loading code (tests included). This subclass keeps torchvision's download (which checks the md5
    of the downloaded archive) and its directory layout; it sets the per-file md5 to ``None``, which
    torchvision's own ``check_integrity`` treats as "the file exists". The md5s of the extracted files
    are still compared, by :func:`_warn_if_not_official`, which warns (instead of refusing) when they
    differ. Because such files may come from anyone, they are never given to ``pickle.load``: they are
    read with :func:`crt_bench.data.safe_pickle.load_cifar_pickle`, which admits only the numpy arrays,
    lists, bytes and dicts of the real format and refuses any other global before calling it.
    """
    from torchvision.datasets import CIFAR10, VisionDataset


    class _CIFAR10Files(CIFAR10):
        train_list = [[fname, None] for fname, _ in CIFAR10.train_list]
        test_list = [[fname, None] for fname, _ in CIFAR10.test_list]
        meta = {**CIFAR10.meta, "md5": None}

        def __init__(self, root: str, train: bool = True, download: bool = False) -> None:
            """torchvision's ``CIFAR10.__init__`` with its ``pickle.load`` replaced by the restricted reader."""
            VisionDataset.__init__(self, root)
            self.train = train
            if download:
                self.download()
            if not self._check_integrity():
                raise RuntimeError("Dataset not found or corrupted. You can use download=True to download it")
            data, self.targets = [], []
            for fname, _ in self.train_list if train else self.test_list:
                entry = load_cifar_pickle(os.path.join(self.root, self.base_folder, fname))
                data.append(entry["data"])
                self.targets.extend(entry["labels"] if "labels" in entry else entry["fine_labels"])
            self.data = np.vstack(data).reshape(-1, 3, 32, 32).transpose((0, 2, 3, 1))  # HWC
            self._load_meta()

        def _load_meta(self) -> None:
            meta = load_cifar_pickle(os.path.join(self.root, self.base_folder, self.meta["filename"]))
            self.classes = meta[self.meta["key"]]
            self.class_to_idx = {name: i for i, name in enumerate(self.classes)}

    return _CIFAR10Files


def _cifar_root(data_dir: Path | None) -> Path:
    """The directory that holds (or will hold) ``cifar-10-batches-py/``.

    A ``--data-dir`` that points at ``cifar-10-batches-py/`` itself is accepted too.
    """
    if data_dir is None:
        return default_data_root()
    if not (data_dir / CIFAR_FOLDER).exists() and (data_dir / "data_batch_1").is_file():
        return data_dir.parent
    return data_dir


def _cifar_missing_message(root: Path, reason: str) -> str:
    return (
        f"CIFAR-10 not found in {root / CIFAR_FOLDER} ({reason}). "
        "Pass --data-dir DIR holding cifar-10-batches-py/ (the standard python version from the "
        "CIFAR website) or run with internet access so torchvision can download it."
    )


def _load_cifar10(data_dir: Path | None, *, train: bool, download: bool) -> tuple[np.ndarray, np.ndarray]:
    """Load CIFAR-10 through torchvision; return (uint8 ``[N, 32, 32, 3]``, labels).

    Uses :func:`_cifar_class` (torchvision's ``CIFAR10`` checking file presence, not per-file
    md5s -- see there). Missing files with ``download=False`` or a failed download give one
    :class:`CrtBenchError` naming the directory and both ways to get the data.
    """
    cls = _cifar_class()
    root = _cifar_root(data_dir)
    folder = root / CIFAR_FOLDER
    # torchvision wants both splits' batches and the meta file before it opens either split.
    names = [f for f, _ in cls.train_list + cls.test_list] + [cls.meta["filename"]]
    missing = [f for f in names if not (folder / f).is_file()]
    if missing and not download:
        what = "no CIFAR-10 files there" if len(missing) == len(names) else f"missing {', '.join(missing)}"
        raise CrtBenchError(_cifar_missing_message(root, f"{what}; download disabled"))
    try:
        dataset = cls(str(root), train=train, download=download)
    except (OSError, RuntimeError, ValueError) as err:
        if missing:
            raise CrtBenchError(_cifar_missing_message(root, f"download failed: {one_line(err)}")) from err
        raise CrtBenchError(f"could not read CIFAR-10 from {folder}: {err}") from err
    except (pickle.UnpicklingError, EOFError, KeyError, TypeError, AttributeError) as err:
        raise CrtBenchError(
            f"CIFAR-10 files in {folder} are corrupt or not the python version ({type(err).__name__}: {err}); "
            "delete the folder and download again, or pass --data-dir with intact files"
        ) from err
    _warn_if_not_official(folder, train=train)
    data = np.asarray(dataset.data)
    if data.dtype != np.uint8 or data.ndim != 4 or data.shape[1:] != (32, 32, 3):
        raise CrtBenchError(f"CIFAR-10 images in {folder} have shape {data.shape}, expected [N, 32, 32, 3] uint8")
    if len(dataset.targets) != len(data):
        raise CrtBenchError(f"CIFAR-10 files in {folder} hold {len(data)} images but {len(dataset.targets)} labels")
    return data, np.asarray(dataset.targets, dtype=np.int64)


def _warn_if_not_official(folder: Path, *, train: bool) -> None:
    """Warn when the split's batch files differ from the official CIFAR-10 release (md5)."""
    from torchvision.datasets import CIFAR10

    for fname, md5 in CIFAR10.train_list if train else CIFAR10.test_list:
        digest = hashlib.md5(usedforsecurity=False)
        with open(folder / fname, "rb") as f:
            while chunk := f.read(1 << 20):
                digest.update(chunk)
        if digest.hexdigest() != md5:
            warnings.warn(
                f"{folder / fname} is not the official CIFAR-10 file (md5 differs); using it as it is",
                stacklevel=3,
            )
