"""golden/transposed_read.py against a slot-by-slot reference written here (independent of it)."""
import math

import numpy as np
import pytest

from golden.adc import ADC
from golden.analog import IdealArray
from golden.cell import I_Q_UA, V_READ
from golden.crossbar import Crossbar
from golden.mapping import ReadGroup
from golden.transposed_read import BL_ADC, error_code, hidden_error, layer_transposed, transposed_sums


def cell_ua(g_us):
    """The quantised read current of one cell (golden.cell's rule, written out)."""
    return math.floor(g_us * V_READ / I_Q_UA + 0.5) * I_Q_UA


def code(i_ua, adc):
    return min(max(math.floor(i_ua / adc.lsb_ua + 0.5), 0), adc.max_code)


def reference(g_us, g, err, bits, adc, noise=None, rel=0.0):
    """Slot by slot, image by image, BL by BL. g_us: (n_pe, rows, bl) conductances; noise: the
    standard normals the crossbar draws, phase P then N, each (bits * M, n_bl) slot-major."""
    m, n_bl = len(err), len(g.inputs)
    t = np.zeros((m, n_bl), dtype=np.int64)
    for ph, sign in ((0, 1), (1, -1)):
        for k in range(bits):
            for i in range(m):
                for j in range(n_bl):
                    cur, var = 0.0, 0.0
                    for o in range(g.n_out):
                        e = int(err[i][o])
                        on_pos = (max(e, 0) if ph == 0 else max(-e, 0)) >> k & 1
                        on_neg = (max(-e, 0) if ph == 0 else max(e, 0)) >> k & 1
                        for r, on in ((g.row_base + 2 * o, on_pos), (g.row_base + 2 * o + 1, on_neg)):
                            if on:
                                c = cell_ua(float(g_us[g.pe, r, j]))
                                cur += c
                                var += (rel * c) ** 2
                    if noise is not None:
                        cur += math.sqrt(var) * noise[ph][k * m + i, j]
                    t[i, j] += sign * (code(cur, adc) << k)
    return t


def random_err(rng, m, n, bits):
    lim = (1 << bits) - 1
    e = rng.integers(-lim, lim + 1, (m, n))
    e[0] = 0                       # all zero
    e[1] = lim                     # max magnitude, positive
    e[2] = -lim                    # all negative, max magnitude
    e[3, ::2] = 0                  # some zeros
    return e


@pytest.mark.parametrize("bits,n_out,n_in,row_base", [(8, 10, 16, 108), (5, 3, 6, 0), (8, 10, 6, 108)])
def test_ideal_array_matches_slot_reference(bits, n_out, n_in, row_base):
    rng = np.random.default_rng(bits + n_out + n_in)
    levels = rng.integers(0, 8, (2, 128, 16)).astype(np.int8)
    levels[1, row_base:row_base + 2 * n_out, :] = 7          # PE 1: every cell at the window top
    arr = IdealArray(levels)
    for pe in (0, 1):
        g = ReadGroup("O", 0, pe, tuple(range(n_in)), row_base, n_out)
        err = random_err(rng, 9, n_out, bits)
        got = transposed_sums(arr, g, err, bits, BL_ADC)
        assert got.dtype == np.int64 and got.shape == (9, n_in)
        assert np.array_equal(got, reference(arr.g_us, g, err, bits, BL_ADC))
        assert not got[0].any()


def test_saturating_bl_currents():
    levels = np.full((1, 128, 16), 7, dtype=np.int8)            # G+: 4 uA per cell
    levels[0, 1::2] = 0                                          # G-: 0.5 uA per cell
    arr = IdealArray(levels)
    g = ReadGroup("O", 0, 0, tuple(range(16)), 0, 10)
    adc = ADC(4, 16.0)                                           # 1 uA LSB, top code 15: 10 cells = 40 uA
    err = random_err(np.random.default_rng(3), 6, 10, 6)
    got = transposed_sums(arr, g, err, 6, adc)
    assert np.array_equal(got, reference(arr.g_us, g, err, 6, adc))
    # all-positive max error: phase P pulses the 10 G+ rows every slot -> 40 uA, clipped at code
    # 15; phase N the 10 G- rows -> 5 uA, code 5 (unsaturated: (40 - 5) * 63)
    assert np.all(got[1] == (15 - 5) * 63) and np.all(got[2] == -(15 - 5) * 63)


def test_noisy_crossbar_matches_reference_with_its_draws():
    xb = Crossbar("yao2020", seed=5, n_pe=2, read_noise_rel=0.05)
    rng = np.random.default_rng(7)
    xb.set_conductance(rng.uniform(1.0, 22.0, xb.shape))
    g = ReadGroup("O", 1, 1, tuple(range(16)), 108, 10)
    err = random_err(rng, 7, 10, 8)
    probe = xb.copy()
    noise = [probe._read_rng.standard_normal((8 * 7, 16), dtype=np.float32) for _ in range(2)]
    got = transposed_sums(xb, g, err, 8, BL_ADC)
    want = reference(xb.g, g, err, 8, BL_ADC, noise, 0.05)
    # float32 sums in the model vs float64 here: a code may differ only where a current lies on a
    # rounding edge; demand equality almost everywhere and closeness everywhere
    assert np.mean(got == want) > 0.95
    assert np.abs(got - want).max() <= 2 * 255
    noiseless = Crossbar("yao2020", seed=5, n_pe=2)
    noiseless.set_conductance(xb.g)
    assert np.array_equal(transposed_sums(noiseless, g, err, 8, BL_ADC), reference(xb.g, g, err, 8, BL_ADC))


def test_read_t_is_the_transpose_of_read():
    rng = np.random.default_rng(11)
    arr = IdealArray(rng.integers(0, 8, (1, 128, 16)).astype(np.int8))
    xb = Crossbar("ideal", seed=0, n_pe=1)
    xb.set_conductance(arr.g_us)
    sl = rng.integers(0, 2, (40, 20)).astype(np.uint8)
    want = np.array([[sum(cell_ua(arr.g_us[0, 100 + r, j]) for r in range(20) if sl[i, r]) for j in range(12)]
                     for i in range(40)])
    for a in (arr, xb):
        assert np.allclose(a.read_t(0, sl, slice(100, 120), 12), want, rtol=0, atol=1e-6)


def test_layer_transposed_places_groups():
    rng = np.random.default_rng(2)
    arr = IdealArray(rng.integers(0, 8, (2, 128, 16)).astype(np.int8))
    gs = [ReadGroup("O", 0, 0, tuple(range(16)), 108, 10), ReadGroup("O", 1, 1, tuple(range(16, 22)), 108, 10)]
    err = random_err(rng, 5, 10, 8)
    t = layer_transposed(arr, gs, err, 8, 22)
    assert np.array_equal(t[:, :16], reference(arr.g_us, gs[0], err, 8, BL_ADC))
    assert np.array_equal(t[:, 16:], reference(arr.g_us, gs[1], err, 8, BL_ADC))


def test_error_code_rule():
    d = np.array([[0, 0, 0], [255, -255, 3], [256, -1, 0], [32768, -32768, 1000], [-32767, 100, 0], [383, 0, 0]])
    e, s = error_code(d, 8)
    assert s.tolist() == [0, 0, 1, 8, 7, 1]
    want = [[0, 0, 0], [255, -255, 3], [128, 0, 0], [128, -128, 4], [-255, 1, 0], [192, 0, 0]]
    assert e.tolist() == want
    rng = np.random.default_rng(0)
    d = rng.integers(-(1 << 20), 1 << 20, (500, 10)) >> rng.integers(0, 20, (500, 1))
    e, s = error_code(d, 8)
    assert np.abs(e).max() < 256
    for i in range(500):   # reference: shift from Python's bit_length, round half up, clip
        sh = max(int(np.abs(d[i]).max()).bit_length() - 8, 0)
        ref = [min(max((int(v) + ((1 << sh) >> 1)) >> sh, -255), 255) for v in d[i]]
        assert s[i] == sh and e[i].tolist() == ref
    assert np.array_equal(hidden_error(e[:, :3], s), e[:, :3] * (2 ** s)[:, None])


def test_bad_err_refused():
    arr = IdealArray(np.zeros((1, 128, 16), np.int8))
    g = ReadGroup("O", 0, 0, tuple(range(4)), 0, 3)
    with pytest.raises(ValueError, match=r"\|err\| < 2\*\*4"):
        transposed_sums(arr, g, np.array([[16, 0, 0]]), 4)
    with pytest.raises(ValueError, match=r"\(M, 3\)"):
        transposed_sums(arr, g, np.zeros((2, 4), np.int64), 4)
