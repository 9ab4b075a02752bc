"""Weights file: round trip, and every kind of bad file named with its field."""
import json

import numpy as np
import pytest

from golden import cnn, weights
from golden.model import QuantConfig
from golden.weights import Weights, WeightsError


def make(seed=0):
    rng = np.random.default_rng(seed)
    fw = {L.name: rng.normal(0, 1, cnn.weight_shape(L)).astype(np.float32) for L in cnn.weight_layers()}
    iw = {k: rng.integers(-7, 8, v.shape).astype(np.int8) for k, v in fw.items()}
    q = QuantConfig({"C1": 0.1, "C3": 0.2, "FC": 0.3}, {"C1": (40000, 20), "C3": (30000, 19)}, 0.005)
    return Weights(fw, iw, q, {"seed": seed})


def test_roundtrip(tmp_path):
    w = make()
    w.save(tmp_path / "w", force=True)
    r = weights.load(tmp_path / "w")
    for k in w.int_w:
        np.testing.assert_array_equal(r.int_w[k], w.int_w[k])
        np.testing.assert_array_equal(r.float_w[k], w.float_w[k])
    assert r.q == w.q and r.meta == {"seed": 0}
    assert weights.load(tmp_path / "w.npz").q == w.q


def test_committed_weights_load():
    w = weights.load()
    assert w.meta["test_float"] >= 98.5 and w.meta["test_quantized"] >= 97.8


def _bad(tmp_path, arrs=None, doc=None):
    w = make()
    w.save(tmp_path / "w", force=True)
    if arrs is not None:
        with np.load(tmp_path / "w.npz") as z:
            a = {k: z[k] for k in z.files}
        arrs(a)
        np.savez(tmp_path / "w.npz", **a)
    if doc is not None:
        d = json.loads((tmp_path / "w.json").read_text())
        doc(d)
        (tmp_path / "w.json").write_text(json.dumps(d))
    with pytest.raises(WeightsError) as e:
        weights.load(tmp_path / "w")
    return str(e.value)


def test_missing_array(tmp_path):
    assert "'int/C3'" in _bad(tmp_path, arrs=lambda a: a.pop("int/C3"))


def test_wrong_shape(tmp_path):
    m = _bad(tmp_path, arrs=lambda a: a.__setitem__("float/FC", np.zeros((10, 192), np.float32)))
    assert "'float/FC'" in m and "(192, 10)" in m


def test_out_of_range(tmp_path):
    def f(a):
        a["int/C1"] = a["int/C1"].copy()
        a["int/C1"][0, 0, 0, 0] = 9
    assert "[-7, 7]" in _bad(tmp_path, arrs=f)


def test_nan(tmp_path):
    def f(a):
        a["float/C1"] = a["float/C1"].copy()
        a["float/C1"][0, 0, 0, 0] = np.nan
    assert "NaN" in _bad(tmp_path, arrs=f)


def test_bad_json_fields(tmp_path):
    assert "'format'" in _bad(tmp_path, doc=lambda d: d.__setitem__("format", "other/9"))
    assert "requant" in _bad(tmp_path, doc=lambda d: d["quant"]["requant"].pop("C3"))
    assert "quant.requant.C1" in _bad(tmp_path, doc=lambda d: d["quant"]["requant"].__setitem__("C1", [0, 5]))


def test_corrupt_files(tmp_path):
    w = make()
    w.save(tmp_path / "w", force=True)
    (tmp_path / "w.npz").write_bytes(b"not a zip")
    with pytest.raises(WeightsError, match="w.npz: not a readable"):
        weights.load(tmp_path / "w")
    w.save(tmp_path / "w", force=True)
    (tmp_path / "w.json").write_text("{")
    with pytest.raises(WeightsError, match="w.json: not valid JSON"):
        weights.load(tmp_path / "w")
    with pytest.raises(WeightsError, match="missing"):
        weights.load(tmp_path / "none")


def _li2018(seed=0):
    from golden import networks
    net = networks.network("li2018")
    rng = np.random.default_rng(seed)
    fw = {L.name: rng.normal(0, 1, cnn.weight_shape(L)).astype(np.float32) for L in net.weight_layers}
    iw = {k: rng.integers(-7, 8, v.shape).astype(np.int8) for k, v in fw.items()}
    return Weights(fw, iw, QuantConfig({"H": 0.1, "O": 0.2}, {"H": (40000, 20)}, 0.005), {}, "li2018")


def test_network_recorded_and_checked(tmp_path):
    _li2018().save(tmp_path / "li", force=True)
    assert json.loads((tmp_path / "li.json").read_text())["network"] == "li2018"
    r = weights.load(tmp_path / "li", "li2018")
    assert r.network == "li2018" and r.q.requant == {"H": (40000, 20)}
    np.testing.assert_array_equal(r.int_w["H"], _li2018().int_w["H"])
    with pytest.raises(WeightsError, match=r"li\.json: weights of network 'li2018', not 'yao2020'"):
        weights.load(tmp_path / "li")
    make().save(tmp_path / "y", force=True)             # yao2020, the default network
    with pytest.raises(WeightsError, match=r"y\.json: weights of network 'yao2020', not 'li2018'"):
        weights.load(tmp_path / "y", "li2018")
    assert weights.default_weights("li2018").name == "li2018"


def test_hidden_dense_layer_needs_its_requant(tmp_path):
    w = _li2018()
    w.q.requant = {}
    w.save(tmp_path / "li", force=True)
    with pytest.raises(WeightsError, match="quant.requant has no entry for layer H"):
        weights.load(tmp_path / "li", "li2018")
