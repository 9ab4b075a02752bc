"""IDX file reader (the MNIST container format), gzipped or raw.

Every check names the file and what was expected, so a truncated download or a
wrong file is caught at load time rather than as a shape error deep in training.
"""
from __future__ import annotations

import gzip
import zlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .fileio import InputError

# IDX type codes -> big-endian numpy dtypes (LeCun's format description).
_DTYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}

# The four standard names; each may also carry a ".gz" suffix.
STANDARD_NAMES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}


class IDXError(InputError):
    """A file is not a valid IDX file (or not the one expected)."""


def _read_bytes(path: Path) -> bytes:
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise IDXError(f"{path}: cannot read: {e.strerror or e}") from e
    if raw[:2] == b"\x1f\x8b":
        try:
            return gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as e:
            raise IDXError(f"{path}: corrupt gzip stream: {e}") from e
    return raw


def read_idx(path: str | os.PathLike, ndim: int | None = None, dtype: int | None = None) -> np.ndarray:
    """Read one IDX file; optionally require its number of dimensions and type code."""
    path = Path(path)
    data = _read_bytes(path)
    if len(data) < 4:
        raise IDXError(f"{path}: {len(data)} bytes, expected at least a 4-byte IDX magic number")
    if data[0] != 0 or data[1] != 0:
        raise IDXError(
            f"{path}: bad magic number {data[:4].hex()}: expected 0000<type><ndim> (is this an IDX file?)"
        )
    tcode, nd = data[2], data[3]
    if tcode not in _DTYPES:
        raise IDXError(f"{path}: unknown IDX type code 0x{tcode:02x}, expected one of "
                       + ", ".join(f"0x{k:02x}" for k in _DTYPES))
    if dtype is not None and tcode != dtype:
        raise IDXError(f"{path}: type code 0x{tcode:02x}, expected 0x{dtype:02x}")
    if ndim is not None and nd != ndim:
        raise IDXError(f"{path}: {nd} dimensions, expected {ndim}")
    if nd == 0:
        raise IDXError(f"{path}: 0 dimensions, expected at least 1")
    header = 4 + 4 * nd
    if len(data) < header:
        raise IDXError(f"{path}: truncated header: {len(data)} bytes, expected {header}")
    dims = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=nd, offset=4))
    dt = _DTYPES[tcode]
    expected = header + int(np.prod(dims, dtype=np.int64)) * dt.itemsize
    if len(data) != expected:
        raise IDXError(
            f"{path}: {len(data)} bytes, expected {expected} for dimensions {dims} of {dt.name}"
            + (" (truncated)" if len(data) < expected else " (trailing data)")
        )
    arr = np.frombuffer(data, dtype=dt, offset=header).reshape(dims)
    return arr.astype(dt.newbyteorder("="))


def _find(directory: Path, stem: str) -> Path:
    for name in (stem, stem + ".gz"):
        p = directory / name
        if p.exists():
            return p
    raise IDXError(f"{directory}: no file {stem} or {stem}.gz (expected the four standard IDX names: "
                   + ", ".join(STANDARD_NAMES.values()) + ")")


@dataclass(frozen=True)
class Dataset:
    train_images: np.ndarray  # (N, H, W) uint8
    train_labels: np.ndarray  # (N,) uint8
    test_images: np.ndarray
    test_labels: np.ndarray
    directory: Path

    @property
    def n_classes(self) -> int:
        return int(max(self.train_labels.max(), self.test_labels.max())) + 1

    @property
    def split(self) -> tuple[int, int]:
        """(images that train, images that validate) of the training file: `split_sizes`."""
        return split_sizes(len(self.train_images))

    @property
    def name(self) -> str:
        """The dataset's name in reports: its directory's name (data/mnist -> "mnist")."""
        return self.directory.resolve().name or str(self.directory)


VAL_DIVISOR = 12    # the last 1/12 of the training file validates: MNIST 60,000 -> 55,000 + 5,000 (Yao 2020)
VAL_MIN = 100       # ... but at least 100 images (at most half the file) on a small dataset


def split_sizes(n: int) -> tuple[int, int]:
    """Training file of n images -> (n_train, n_val): images [0, n_train) train, the rest validate
    (every choice: scale search, best epoch, the hybrid step); the test set is never used to choose."""
    n_val = max(n // VAL_DIVISOR, min(VAL_MIN, n // 2))
    return n - n_val, n_val


def load_dataset(directory: str | os.PathLike, image_shape: tuple | None = None,
                 n_classes: int | None = None) -> Dataset:
    """Load a directory holding the four standard IDX files (MNIST layout). With image_shape
    (H, W) and n_classes, the data must fit the network: images of that size, labels in
    0..n_classes-1, at least one image per split."""
    directory = Path(directory)
    if not directory.is_dir():
        raise IDXError(f"{directory}: not a directory (expected a directory with the four IDX files)")
    arrs = {}
    for key, stem in STANDARD_NAMES.items():
        p = _find(directory, stem)
        nd = 3 if key.endswith("images") else 1
        arrs[key] = read_idx(p, ndim=nd, dtype=0x08)
        arrs[key + "_path"] = p
    for split in ("train", "test"):
        ni, nl = len(arrs[f"{split}_images"]), len(arrs[f"{split}_labels"])
        if ni != nl:
            raise IDXError(f"{arrs[f'{split}_labels_path']}: {nl} labels, expected {ni} "
                           f"(one per image of {arrs[f'{split}_images_path']})")
    if arrs["train_images"].shape[1:] != arrs["test_images"].shape[1:]:
        raise IDXError(f"{arrs['test_images_path']}: images of {arrs['test_images'].shape[1:]}, "
                       f"expected {arrs['train_images'].shape[1:]} as in the training set")
    if image_shape is not None or n_classes is not None:
        _check_fits(arrs, image_shape, n_classes)
    return Dataset(arrs["train_images"], arrs["train_labels"], arrs["test_images"],
                   arrs["test_labels"], directory)


def _check_fits(arrs: dict, image_shape, n_classes):
    for split in ("train", "test"):
        x, y = arrs[f"{split}_images"], arrs[f"{split}_labels"]
        if not len(x):
            raise IDXError(f"{arrs[f'{split}_images_path']}: 0 images, expected at least 1")
        if image_shape is not None and x.shape[1:] != tuple(image_shape):
            raise IDXError(f"{arrs[f'{split}_images_path']}: images of {x.shape[1]}x{x.shape[2]} pixels, "
                           f"the network takes {image_shape[0]}x{image_shape[1]}")
        if n_classes is not None and int(y.max()) >= n_classes:
            i = int(np.argmax(y >= n_classes))
            raise IDXError(f"{arrs[f'{split}_labels_path']}: label {int(y[i])} at index {i}, "
                           f"expected labels 0..{n_classes - 1}")


def default_data_dir() -> Path:
    """The repository's vendored MNIST (data/mnist), or $MCNN_DATA if set."""
    env = os.environ.get("MCNN_DATA")
    if env:
        return Path(env)
    return Path(__file__).resolve().parent.parent / "data" / "mnist"
