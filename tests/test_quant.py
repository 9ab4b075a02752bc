"""The quantiser: 15 weight levels, requantisation constants, float vs integer requant."""
import math

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from golden import datapath, model


def test_quantize_weights_loop_reference():
    rng = np.random.default_rng(0)
    w = rng.normal(0, 1, 2000)
    s = 0.2
    q = model.quantize_weights(w, s)
    for wi, qi in zip(w, q):
        ref = math.floor(wi / s + 0.5)
        ref = max(-7, min(7, ref))
        assert qi == ref
    assert set(np.unique(q)) <= set(range(-7, 8))
    # ties round half up; saturation at both ends
    np.testing.assert_array_equal(model.quantize_weights(np.array([0.5, -0.5, 1.5, 100, -100]), 1.0),
                                  [1, 0, 2, 7, -7])


@settings(max_examples=200, deadline=None)
@given(st.floats(min_value=1e-6, max_value=1e3, allow_nan=False))
def test_requant_params(r):
    m, sh = model.requant_params(r)
    assert 0 < m < 1 << 16
    assert abs(m / 2 ** sh - r) <= 2.0 ** -(sh + 1) + 1e-18  # nearest representable
    assert m >= 1 << 14 or sh > 40  # at least 15 significant bits unless the ratio is tiny


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(-(1 << 21), 1 << 21), min_size=1, max_size=50),
       st.integers(1, (1 << 16) - 1), st.integers(1, 30))
def test_float_requant_equals_integer_requant(z, m, sh):
    """The quantised float model's requantisation equals the datapath's integer one exactly."""
    z = np.array(z, dtype=np.int64)
    a = model.requantize(z.astype(np.float64), m, sh)
    b = datapath.relu_requant(z, m, sh)
    np.testing.assert_array_equal(a, b)
    for zi, bi in zip(z.tolist(), b.tolist()):
        assert bi == min(255, (max(zi, 0) * m + (1 << (sh - 1))) >> sh)


def test_weight_to_levels():
    from golden.cell import weight_to_levels
    w = np.arange(-7, 8)
    lp, ln = weight_to_levels(w)
    np.testing.assert_array_equal(lp.astype(int) - ln.astype(int), w)
    assert lp.min() >= 0 and ln.min() >= 0 and lp.max() <= 7 and ln.max() <= 7
    assert np.all((lp == 0) | (ln == 0))  # one device of the pair stays at the lowest level
    import pytest
    with pytest.raises(ValueError, match="-7, 7"):
        weight_to_levels(np.array([8]))
