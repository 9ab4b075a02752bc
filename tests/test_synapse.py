"""golden/synapse.py: vectorised pulses equal the scalar devices.step; differential pair updates."""
import numpy as np
import pytest

from golden import devices as D
from golden.synapse import DiffArray, encode, step_array


@pytest.mark.parametrize("name", ["yao2020", "bennett2019", "bennett2019-linear"])
def test_step_array_equals_step(name):
    """Element by element equal to devices.step, states in and outside the bounds (clipping both
    ways), c2c factors including negative ones. Caught: np.exp/np.power instead of libm (last-bit
    differences on the nonlinear and yao2020 models), the clip dropped, zeta dropped from RESET."""
    p = D.preset(name, zeta=1.3) if name != "yao2020" else D.preset(name)
    rng = np.random.default_rng(7)
    n = 4000
    cells = D.draw_cells(p, (n,), rng)
    g = cells.lo + (cells.hi - cells.lo) * rng.uniform(-0.2, 1.2, n)
    g[:4] = [cells.lo[0], cells.hi[1], cells.lo[2], cells.hi[3]]      # exactly at a bound
    d = rng.integers(0, 2, n)
    d[:4] = [D.RESET, D.SET, D.SET, D.RESET]
    c = 1 + 2.0 * rng.standard_normal(n)
    out = step_array(p, g, d, cells.lo, cells.hi, cells.k, c)
    ref = np.array([D.step(p, float(g[i]), int(d[i]), float(cells.lo[i]), float(cells.hi[i]),
                           float(cells.k[i]), float(c[i])) for i in range(n)])
    assert np.array_equal(out, ref)
    assert np.any(out == cells.lo) and np.any(out == cells.hi)       # both clips exercised


def _pair_device(**kw):
    # linear, dG_L = (22.5 - 0.5) / 11 = 2.0 uS, RESET 1.5 x 2.0 = 3.0 uS, no noise, no spread
    return D.preset("bennett2019-linear", levels=12, zeta=1.5, c2c_sigma=0.0, d2d_bounds_sigma=0.0,
                    d2d_levels_sigma=0.0, **kw)


def test_program_push_pull_hand_made():
    """dW > 0: SET G+ (+2) and RESET G- (-3); dW < 0 the reverse; 0: untouched; clipped at
    0.5 / 22.5. Caught: pair directions swapped, zeta on SET, pulses on zero signs, column subset
    written to the wrong columns."""
    arr = DiffArray(_pair_device(), (2, 3), np.random.default_rng(0))
    arr.g[0] = [[10.0, 10.0, 10.0], [22.0, 1.0, 5.0]]
    arr.g[1] = [[10.0, 10.0, 10.0], [2.0, 21.0, 5.0]]
    n = arr.program(np.array([[1, -1, 0], [1, -1, 1]]))
    assert n == 10
    assert arr.g[0].tolist() == [[12.0, 7.0, 10.0], [22.5, 0.5, 7.0]]
    assert arr.g[1].tolist() == [[7.0, 12.0, 10.0], [0.5, 22.5, 2.0]]
    n = arr.program(np.array([[-1], [1]]), cols=[2])
    assert n == 4
    assert arr.g[0].tolist() == [[12.0, 7.0, 7.0], [22.5, 0.5, 9.0]]
    assert arr.g[1].tolist() == [[7.0, 12.0, 12.0], [0.5, 22.5, 0.5]]
    assert arr.pulses == 14


def test_program_alternate_one_device_per_pair_hand_made():
    """pulse="alternate": one device per pair and cycle; the 1st cycle is the RESET phase (dW > 0:
    RESET G- by 3, dW < 0: RESET G+ by 3), the 2nd the SET phase (dW > 0: SET G+ by 2, dW < 0: SET
    G- by 2); one pulse per nonzero sign. Caught: SET phase first, both devices pulsed (push-pull),
    two pulses counted per pair, the phase's device swapped (dW of the wrong sign)."""
    arr = DiffArray(_pair_device(), (1, 3), np.random.default_rng(0), pulse="alternate")
    arr.g[:] = 10.0
    assert arr.program(np.array([[1, -1, 0]])) == 2
    assert arr.g[0].tolist() == [[10.0, 7.0, 10.0]] and arr.g[1].tolist() == [[7.0, 10.0, 10.0]]
    assert arr.program(np.array([[1, -1, 1]])) == 3
    assert arr.g[0].tolist() == [[12.0, 7.0, 12.0]] and arr.g[1].tolist() == [[7.0, 12.0, 10.0]]
    assert arr.program(np.array([[-1]]), cols=[2]) == 1                  # 3rd cycle: RESET G+
    assert arr.g[0].tolist() == [[12.0, 7.0, 9.0]] and arr.pulses == 6 and arr.cycles == 3
    with pytest.raises(ValueError, match="pulse scheme"):
        DiffArray(_pair_device(), (1, 1), np.random.default_rng(0), pulse="both")


def test_program_scale_multiplies_step():
    """The L1/L2 scale multiplies each pulse (c): 0.5 x SET 2.0 = 1.0, 0.5 x RESET 3.0 = 1.5."""
    arr = DiffArray(_pair_device(), (1, 2), np.random.default_rng(0))
    arr.g[:] = 10.0
    arr.program(np.array([[1, -1]]), scale=np.array([[0.5, 2.0]]))
    assert arr.g[0].tolist() == [[11.0, 4.0]] and arr.g[1].tolist() == [[8.5, 14.0]]


def test_initial_state_between_extrema_and_encode():
    p = D.preset("bennett2019", levels=32)
    arr = DiffArray(p, (50, 40), np.random.default_rng(3))
    assert np.all(arr.g >= arr.lo) and np.all(arr.g <= arr.hi) and arr.g.std() > 3
    x = encode(np.array([[[0, 255], [51, 102]]], np.uint8))
    assert x.dtype == np.float32
    assert np.allclose(x, [[-1.0, 1.0, -0.6, -0.2, 1.0]], atol=1e-6)
