"""Ex-situ training: reproducible per seed, learns, and quantises to the documented formats."""
import numpy as np
import pytest

from golden import cnn, model, train
from golden.idx import Dataset, default_data_dir, load_dataset


@pytest.fixture(scope="module")
def small():
    ds = load_dataset(default_data_dir())
    n = 1500
    return Dataset(ds.train_images[:n], ds.train_labels[:n], ds.test_images[:500], ds.test_labels[:500],
                   ds.directory)


def _run(ds, seed):
    cfg = train.TrainConfig(seed=seed, epochs=3, batch=16, qat_epochs=1, n_train=1200, n_calib=500)
    return train.train(ds, cfg, log=lambda s: None)


def test_same_seed_same_weights(small):
    a, b = _run(small, 7), _run(small, 7)
    for k in a[0]:
        np.testing.assert_array_equal(a[0][k], b[0][k])
        np.testing.assert_array_equal(a[1][k], b[1][k])
    assert a[2] == b[2]
    c = _run(small, 8)
    assert any(not np.array_equal(a[0][k], c[0][k]) for k in a[0])


def test_learns_and_quantises(small):
    fw, iw, q, meta = _run(small, 3)
    acc = model.accuracy(fw, small.test_images, small.test_labels.astype(np.int64))
    assert acc > 70, acc  # 10 classes: chance is 10 %
    for L in cnn.weight_layers():
        assert iw[L.name].dtype == np.int8 and iw[L.name].shape == cnn.weight_shape(L)
        assert -7 <= iw[L.name].min() and iw[L.name].max() <= 7
    assert set(q.requant) == {"C1", "C3"}
    for m, sh in q.requant.values():
        assert 0 < m < 1 << 16 and sh >= 1
    assert meta["seed"] == 3 and len(meta["data_hash"]) == 64


def test_bad_split(small):
    with pytest.raises(ValueError, match="n_train"):
        train.train(small, train.TrainConfig(n_train=len(small.train_images)), log=lambda s: None)


def test_random_shift_is_a_shift():
    rng = np.random.default_rng(0)
    x = rng.integers(1, 255, (20, 6, 6)).astype(np.uint8)
    y = train.random_shift(x, np.random.default_rng(1), 2)
    r2 = np.random.default_rng(1)
    dy, dx = r2.integers(0, 5, 20), r2.integers(0, 5, 20)
    for i in range(20):
        ref = np.zeros((10, 10), np.uint8)
        ref[2:8, 2:8] = x[i]
        np.testing.assert_array_equal(y[i], ref[dy[i]:dy[i] + 6, dx[i]:dx[i] + 6])
