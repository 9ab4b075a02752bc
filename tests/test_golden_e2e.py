"""The committed weights through every level, on the same images (FINN-style): the integer datapath
with ideal cells reproduces the quantised model exactly, and the stages meet their targets."""
import numpy as np
import pytest

from golden import model, weights
from golden.datapath import Datapath, DatapathConfig, delta
from golden.idx import default_data_dir, load_dataset


@pytest.fixture(scope="module")
def setup():
    return weights.load(), load_dataset(default_data_dir())


def test_integer_equals_quantised(setup):
    w, ds = setup
    x, y = ds.test_images[:400], ds.test_labels[:400]
    lq = model.predict(weights.dequantized(w), x, q=w.q) / w.q.logit_scale
    assert np.all(np.abs(lq - np.round(lq)) < 1e-6)  # quantised logits are integers in FC units
    res = Datapath(w.int_w, w.q).run(x, keep=True)
    np.testing.assert_array_equal(res.logits, np.round(lq).astype(np.int64))
    assert res.activations["S2"].shape == (400, 8, 8, 8) and res.activations["S4"].shape == (400, 4, 4, 12)
    for k in ("C1", "S2", "C3", "S4"):
        a = res.activations[k]
        assert a.min() >= 0 and a.max() <= 255
    d = delta(res.p, y)
    assert np.all(np.abs(d.sum(axis=1)) <= 10)  # p sums to 1 up to rounding, onehot removes 1


def test_narrow_adc_degrades_gracefully(setup):
    """A 6-bit ADC with a layer full scale that clips changes codes, yet stays a valid datapath."""
    w, ds = setup
    x, y = ds.test_images[:300], ds.test_labels[:300]
    cfg = DatapathConfig(adc_bits=6, adc_full_scale_ua={"C1": 24.0, "C3": 24.0, "FC": 32.0})
    full = Datapath(w.int_w, w.q).run(x)
    narrow = Datapath(w.int_w, w.q, cfg=cfg).run(x)
    assert not np.array_equal(full.logits, narrow.logits)
    assert (narrow.classes == y).mean() > 0.5
