"""Ex-situ training: reproducible per seed, learns, and quantises to the documented formats."""
import numpy as np
import pytest

from golden import cnn, model, train
from golden.idx import Dataset, default_data_dir, load_dataset
from golden.mapping import build_mapping


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


MLP = (cnn.Dense("H1", 36, 9), cnn.Dense("H2", 9, 7), cnn.Dense("O", 7, 4))
CONVMLP = (cnn.Conv("A", 1, 3, 3, 0), cnn.Pool("P", 2), cnn.Dense("H", 27, 8), cnn.Dense("D", 8, 3))


@pytest.mark.parametrize("layers, hw", [(MLP, (6, 6)), (CONVMLP, (8, 8))])
def test_backward_matches_finite_differences(layers, hw):
    """Float model with hidden dense layers: every weight gradient against central differences."""
    rng = np.random.default_rng(5)
    params = {k: v.astype(np.float64) for k, v in model.init_params(layers, 1).items()}
    x = rng.integers(0, 256, (6,) + hw).astype(np.uint8)
    y = rng.integers(0, cnn.weight_layers(layers)[-1].n_out, 6)

    def loss(p):
        return model.cross_entropy(model.forward(p, x, layers, dtype=np.float64)[0], y)[0]

    logits, cache = model.forward(params, x, layers, train=True, dtype=np.float64)
    grads = model.backward(model.cross_entropy(logits, y)[1], cache)
    assert set(grads) == {L.name for L in cnn.weight_layers(layers)}
    for name, w in params.items():
        for idx in list(zip(*[rng.integers(0, s, 6) for s in w.shape])):
            old, eps = w[idx], 1e-6
            w[idx] = old + eps
            up = loss(params)
            w[idx] = old - eps
            dn = loss(params)
            w[idx] = old
            assert abs((up - dn) / (2 * eps) - grads[name][idx]) < 1e-6, (name, idx)


def test_quantised_hidden_dense_by_hand():
    """Quantised forward of a hidden dense layer: requantised by hand, gradient straight-through
    (zero where the requantised output is clipped at 0 or 255)."""
    layers = (cnn.Dense("H", 4, 3), cnn.Dense("O", 3, 2))
    params = {"H": np.array([[1, -2, 7], [0, 3, -1], [2, 2, 2], [-7, 1, 0]], np.float32),
              "O": np.array([[1, -1], [2, 0], [0, 3]], np.float32)}
    q = model.QuantConfig({"H": 1.0, "O": 1.0}, {"H": (3, 4)}, 0.5)      # ratio 3/16
    x = np.array([[[10, 20], [30, 40]]], np.uint8)                         # v = 10, 20, 30, 40
    z = [10 * 1 + 20 * 0 + 30 * 2 + 40 * -7, 10 * -2 + 20 * 3 + 30 * 2 + 40 * 1, 10 * 7 + 20 * -1 + 30 * 2]
    h = [max(0, min(255, (a * 3 + 8) // 16)) for a in z]                   # -210 -> 0, 140 -> 26, 110 -> 21
    logits, cache = model.forward(params, x, layers, q, train=True, dtype=np.float64)
    assert logits.tolist() == [[0.5 * (h[0] + 2 * h[1]), 0.5 * (-h[0] + 3 * h[2])]]
    g = model.backward(np.array([[1.0, 0.0]]), cache, q)
    dh = [0.5 * 1, 0.5 * 2, 0.0]                                           # d logit0 / d h
    gate = [0.0 if a <= 0 else 3 / 16 for a in z]
    want = [[v * dh[j] * gate[j] for j in range(3)] for v in (10, 20, 30, 40)]
    np.testing.assert_allclose(g["H"], want)
    np.testing.assert_allclose(g["O"], [[0.5 * h[0], 0], [0.5 * h[1], 0], [0.5 * h[2], 0]])


def test_li2018_trains_on_8x8(small):
    """The 64-54-10 MLP trains on crop-area8 images; its hidden layer gets a requant entry and
    the quantised model with it is what the integer datapath computes."""
    from golden import networks
    from golden.datapath import Datapath
    net = networks.network("li2018")
    ds = Dataset(net.prepare(small.train_images), small.train_labels, net.prepare(small.test_images),
                 small.test_labels, small.directory)
    cfg = train.TrainConfig(seed=1, epochs=4, batch=16, shift=0, qat_epochs=1, n_train=1200, n_calib=500)
    fw, iw, q, meta = train.train(ds, cfg, net.layers, log=lambda s: None)
    assert set(q.requant) == {"H"} and {k: v.shape for k, v in iw.items()} == {"H": (64, 54), "O": (54, 10)}
    y = ds.test_labels.astype(np.int64)
    assert model.accuracy(fw, ds.test_images, y, net.layers) > 70
    dq = {k: v.astype(np.float64) * q.w_scale[k] for k, v in iw.items()}
    acc_q = model.accuracy(dq, ds.test_images, y, net.layers, q)
    assert acc_q > 70
    res = Datapath(iw, q, net.layers, build_mapping(net.layers, net.placement)).run(ds.test_images)
    assert float((res.classes == y).mean() * 100) == acc_q
