"""Fashion-MNIST from the IDX files (the Debian package's folder, or a data root)."""
from __future__ import annotations

import gzip
import math
from pathlib import Path

import numpy as np

from crt_bench.core.errors import CrtBenchError, one_line
from crt_bench.data.split import default_data_root


# --------------------------------------------------------------------------------------------------
# Fashion-MNIST

DEBIAN_FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
_IDX_IMAGES_MAGIC = 2051
_IDX_LABELS_MAGIC = 2049


def _fashion_candidates(data_dir: Path | None) -> list[Path]:
    """Directories searched for the IDX files, in order."""
    if data_dir is not None:
        return [data_dir, data_dir / "FashionMNIST" / "raw", data_dir / "fashion-mnist"]
    return [DEBIAN_FASHION_MNIST_DIR, default_data_root() / "FashionMNIST" / "raw"]


def _find_idx(folder: Path, stem: str) -> Path | None:
    """``folder/stem.gz`` or ``folder/stem``, whichever exists first."""
    for candidate in (folder / f"{stem}.gz", folder / stem):
        if candidate.is_file():
            return candidate
    return None


def _find_fashion_pair(folders: list[Path], prefix: str) -> tuple[Path, Path] | None:
    for folder in folders:
        images = _find_idx(folder, f"{prefix}-images-idx3-ubyte")
        labels = _find_idx(folder, f"{prefix}-labels-idx1-ubyte")
        if images is not None and labels is not None:
            return images, labels
    return None


def _load_fashion_mnist(data_dir: Path | None, *, train: bool, download: bool) -> tuple[np.ndarray, np.ndarray]:
    """Find and parse the Fashion-MNIST IDX files; return (uint8 ``[N, 28, 28]``, uint8 labels)."""
    prefix = "train" if train else "t10k"
    folders = _fashion_candidates(data_dir)
    pair = _find_fashion_pair(folders, prefix)
    download_error: Exception | None = None
    if pair is None and download:
        from torchvision.datasets import FashionMNIST

        root = data_dir if data_dir is not None else default_data_root()
        try:
            FashionMNIST(str(root), train=train, download=True)
        except (OSError, RuntimeError, ValueError) as err:
            download_error = err
        pair = _find_fashion_pair([root / "FashionMNIST" / "raw"], prefix)
    if pair is None:
        searched = ", ".join(str(f) for f in folders)
        how = f"download failed: {one_line(download_error)}" if download_error else "download disabled"
        raise CrtBenchError(
            f"Fashion-MNIST {prefix}-images-idx3-ubyte / {prefix}-labels-idx1-ubyte (.gz or not) not found in "
            f"{searched} ({how}). Install them with `apt-get install "
            "dataset-fashion-mnist` (puts them in /usr/share/datasets/fashion-mnist), pass --data-dir DIR "
            "holding the four IDX files, or run with internet access so torchvision can download them."
        )
    images = _read_idx(pair[0], _IDX_IMAGES_MAGIC)
    labels = _read_idx(pair[1], _IDX_LABELS_MAGIC)
    if images.shape[1:] != (28, 28):
        raise CrtBenchError(f"{pair[0]} holds images of shape {images.shape[1:]}, expected 28x28")
    if len(images) != len(labels):
        raise CrtBenchError(f"{pair[0]} holds {len(images)} images but {pair[1]} holds {len(labels)} labels")
    return images, labels


def _read_idx(path: Path, expected_magic: int) -> np.ndarray:
    """Parse an uint8 IDX file (optionally gzip-compressed) into a numpy array.

    Header: big-endian int32 magic (``0x0000 08 ND``: unsigned byte data, ``ND`` dimensions), then
    ``ND`` big-endian int32 sizes, then the data. ``expected_magic`` is 2051 for images
    (3 dims) and 2049 for labels (1 dim).
    """
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                raw = f.read()
        else:
            raw = path.read_bytes()
    except (OSError, EOFError) as err:  # gzip.BadGzipFile is an OSError
        raise CrtBenchError(f"cannot read IDX file {path}: {err}") from err
    if len(raw) < 4:
        raise CrtBenchError(f"IDX file {path} is truncated ({len(raw)} bytes, no header)")
    magic = int.from_bytes(raw[:4], "big")
    if magic != expected_magic:
        raise CrtBenchError(
            f"IDX file {path} has magic number {magic}, expected {expected_magic}; not an IDX file of this kind"
        )
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise CrtBenchError(f"IDX file {path} is truncated (header incomplete)")
    dims = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    size = math.prod(dims)
    if len(raw) - header < size:
        found = len(raw) - header
        raise CrtBenchError(f"IDX file {path} is truncated: header says {dims} = {size} bytes, found {found}")
    # copy: frombuffer views the read-only bytes, which torch.from_numpy would warn about
    return np.frombuffer(raw, dtype=np.uint8, count=size, offset=header).reshape(dims).copy()
