"""IDX reader on good files (raw and gzipped, written here byte by byte) and on corrupt ones."""
import gzip
import struct

import numpy as np
import pytest

from golden.idx import IDXError, STANDARD_NAMES, load_dataset, read_idx


def idx_bytes(arr: np.ndarray, code=0x08, fmt="B"):
    """Independent IDX writer: magic 00 00 <type> <ndim>, big-endian u32 dims, big-endian data."""
    head = bytes([0, 0, code, arr.ndim]) + b"".join(struct.pack(">I", d) for d in arr.shape)
    return head + b"".join(struct.pack(">" + fmt, v) for v in arr.ravel().tolist())


def write_set(d, n_train=6, n_test=4, h=5, w=7, gz=True, seed=0):
    rng = np.random.default_rng(seed)
    arrs = {"train_images": rng.integers(0, 256, (n_train, h, w)), "train_labels": rng.integers(0, 10, n_train),
            "test_images": rng.integers(0, 256, (n_test, h, w)), "test_labels": rng.integers(0, 10, n_test)}
    for k, a in arrs.items():
        data = idx_bytes(a)
        name = STANDARD_NAMES[k] + (".gz" if gz else "")
        (d / name).write_bytes(gzip.compress(data) if gz else data)
    return arrs


@pytest.mark.parametrize("gz", [True, False])
def test_roundtrip(tmp_path, gz):
    arrs = write_set(tmp_path, gz=gz)
    ds = load_dataset(tmp_path)
    for k, a in arrs.items():
        got = getattr(ds, k)
        assert got.dtype == np.uint8
        np.testing.assert_array_equal(got, a)


@pytest.mark.parametrize("code,fmt,dtype", [(0x09, "b", np.int8), (0x0B, "h", np.int16), (0x0C, "i", np.int32),
                                            (0x0D, "f", np.float32), (0x0E, "d", np.float64)])
def test_other_types(tmp_path, code, fmt, dtype):
    a = np.array([[1, -2, 3], [4, 5, -6]], dtype=dtype)
    p = tmp_path / "x.idx"
    p.write_bytes(idx_bytes(a, code, fmt))
    np.testing.assert_array_equal(read_idx(p), a)


def test_vendored_mnist():
    from golden.idx import default_data_dir
    ds = load_dataset(default_data_dir())
    assert ds.train_images.shape == (60000, 28, 28) and ds.test_images.shape == (10000, 28, 28)
    assert ds.train_labels.shape == (60000,) and ds.test_labels.shape == (10000,)
    assert ds.n_classes == 10
    assert np.bincount(ds.test_labels).min() > 800  # every class present


def _corrupt(tmp_path, mutate):
    write_set(tmp_path, gz=False)
    p = tmp_path / STANDARD_NAMES["train_images"]
    p.write_bytes(mutate(p.read_bytes()))
    return p


@pytest.mark.parametrize("mutate,msg", [
    (lambda b: b"\x01" + b[1:], "bad magic"),
    (lambda b: b[:2] + b"\x07" + b[3:], "unknown IDX type"),
    (lambda b: b[:2] + b"\x0c" + b[3:], "type code 0x0c, expected 0x08"),
    (lambda b: b[:3] + b"\x02" + b[4:], "2 dimensions, expected 3"),
    (lambda b: b[:-1], "truncated"),
    (lambda b: b + b"\x00", "trailing"),
    (lambda b: b[:2], "expected at least"),
    (lambda b: b[:10], "truncated header"),
    (lambda b: b"\x1f\x8b" + b[2:], "corrupt gzip"),
])
def test_corrupt_files(tmp_path, mutate, msg):
    p = _corrupt(tmp_path, mutate)
    with pytest.raises(IDXError) as e:
        load_dataset(tmp_path)
    assert str(p) in str(e.value) and msg in str(e.value)


def test_label_count_mismatch(tmp_path):
    write_set(tmp_path, gz=False)
    (tmp_path / STANDARD_NAMES["test_labels"]).write_bytes(idx_bytes(np.zeros(3, dtype=np.uint8)))
    with pytest.raises(IDXError, match="3 labels, expected 4"):
        load_dataset(tmp_path)


def test_image_size_mismatch(tmp_path):
    write_set(tmp_path, gz=False)
    (tmp_path / STANDARD_NAMES["test_images"]).write_bytes(idx_bytes(np.zeros((4, 6, 6), dtype=np.uint8)))
    with pytest.raises(IDXError, match="expected \\(5, 7\\)"):
        load_dataset(tmp_path)


def test_missing_file_and_dir(tmp_path):
    write_set(tmp_path)
    (tmp_path / (STANDARD_NAMES["test_labels"] + ".gz")).unlink()
    with pytest.raises(IDXError, match="t10k-labels-idx1-ubyte"):
        load_dataset(tmp_path)
    with pytest.raises(IDXError, match="not a directory"):
        load_dataset(tmp_path / "nope")
