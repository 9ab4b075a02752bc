"""Crossbar model: the IdealArray read interface, stuck cells, determinism, noise and drift."""
import numpy as np
import pytest

from golden import weights
from golden.analog import IdealArray
from golden.crossbar import Crossbar
from golden.datapath import Datapath
from golden.cell import level_conductance_us
from golden.devices import RESET, SET
from golden.idx import default_data_dir, load_dataset
from golden.mapping import build_mapping, conductance_levels
from golden.transfer import transfer


@pytest.fixture(scope="module")
def w():
    return weights.load()


@pytest.fixture(scope="module")
def mnist():
    return load_dataset(default_data_dir())


def test_read_equals_ideal_array_for_ideal_device():
    rng = np.random.default_rng(0)
    levels = rng.integers(0, 8, (8, 128, 16)).astype(np.int8)
    xb = Crossbar("ideal", seed=0)
    xb.set_conductance(level_conductance_us(levels.astype(np.float64)))
    ia = IdealArray(levels)
    for pe, n, rows in ((0, 9, slice(0, 16)), (2, 9, slice(16, 112)), (4, 16, slice(0, 120)), (7, 3, np.arange(5))):
        bits = rng.integers(0, 2, (300, n)).astype(np.uint8)
        assert np.array_equal(xb.read(pe, bits, rows), ia.read(pe, bits, rows))


def test_ideal_transfer_gives_the_ideal_datapath_exactly(w, mnist):
    m = build_mapping()
    xb = Crossbar("ideal", seed=0)
    rep = transfer(xb, m, w.int_w)
    assert rep.ok.all() and not rep.failures
    assert np.all(rep.device_error_na == 0)
    lv = conductance_levels(Datapath(w.int_w, w.q).layers, w.int_w, m)
    used = np.zeros(xb.shape, bool)
    used[rep.plan.pe, rep.plan.row, rep.plan.bl] = True
    assert np.array_equal(xb.g[used], level_conductance_us(lv[used].astype(np.float64)))
    x = mnist.test_images[:40]
    r0 = Datapath(w.int_w, w.q).run(x)
    r1 = Datapath(w.int_w, w.q, array=xb).run(x)
    assert np.array_equal(r0.logits, r1.logits)


def test_unused_cells_keep_their_initial_state(w):
    xb = Crossbar("yao2020", seed=4)
    rep = transfer(xb, build_mapping(), w.int_w)
    used = np.zeros(xb.shape, bool)
    used[rep.plan.pe, rep.plan.row, rep.plan.bl] = True
    assert used.sum() == 16 * 9 + 192 * 9 + 240 * 16
    assert np.array_equal(xb.g[~used], xb.g_init[~used])
    assert not used[1].any() and not used[3].any()   # PE2, PE4 of the paper are free


def test_stuck_cells_unchanged_by_programming():
    xb = Crossbar("yao2020", seed=0, n_pe=1, p_stuck_on=0.05, p_stuck_off=0.05, p_stuck_mid=0.05)
    st = np.argwhere(xb.stuck[0] > 0)
    assert len(st) > 100
    g0 = xb.g.copy()
    for r, b in st[:60]:
        res = xb.program_cell(0, int(r), int(b), 100, max_pulses=40)
        xb.open_loop(0, int(r), int(b), SET, 5)
        xb.open_loop(0, int(r), int(b), RESET, 5)
        if abs(res.final_code - 100) > 5:
            assert not res.ok and res.pulses == 40
    xb.age(86400.0)
    stuck = xb.stuck > 0
    assert np.array_equal(xb.g[stuck], g0[stuck])
    assert set(np.unique(xb.stuck)) == {0, 1, 2, 3}
    assert np.allclose(xb.g[xb.stuck == 1], xb.hi[xb.stuck == 1])
    assert np.allclose(xb.g[xb.stuck == 2], xb.lo[xb.stuck == 2])


def test_determinism_per_seed(w):
    def board(seed):
        xb = Crossbar("yao2020", seed=seed)
        rep = transfer(xb, build_mapping(), w.int_w)
        for i in range(50):
            xb.program_cell(4, i, 3, 60 + i)
        return xb, rep
    a, ra = board(7)
    b, rb = board(7)
    c, _ = board(8)
    assert np.array_equal(a.g, b.g) and np.array_equal(ra.pulses, rb.pulses)
    assert not np.array_equal(a.g, c.g)
    d = a.copy()
    a.program_cell(6, 0, 0, 150)
    d.program_cell(6, 0, 0, 150)
    assert np.array_equal(a.g, d.g)


def test_read_noise_statistics():
    xb = Crossbar("ideal", seed=1, n_pe=1, read_noise_rel=0.05)
    xb.set_conductance(np.full(xb.shape, 10.0))   # 2 uA per cell
    bits = np.ones((20000, 9), np.uint8)
    cur = xb.read(0, bits, slice(0, 4))
    assert cur.mean() == pytest.approx(18.0, rel=1e-3)
    assert cur.std() == pytest.approx(0.05 * 2.0 * 3.0, rel=0.05)  # sqrt(9) cells x 5 % of 2 uA
    assert not np.array_equal(cur, xb.read(0, bits, slice(0, 4)))  # a new draw every read


def test_drift_tail_cells():
    xb = Crossbar("yao2020", seed=2, n_pe=2, p_stuck_on=0.0, p_stuck_off=0.0, drift_tail_frac=0.1)
    xb.set_conductance(np.full(xb.shape, 10.0))
    xb.age(7200.0)
    di = (xb.g - 10.0) * 200.0
    decades = np.log10(1 + 7200.0)
    tail = xb.tail
    assert np.std(di[~tail]) == pytest.approx(5.0 * decades, rel=0.1)
    assert np.std(di[tail]) == pytest.approx(100.0 * decades, rel=0.15)


class SlotBySlot:
    """A board seen only through `read`: the datapath reads it slot by slot."""

    def __init__(self, xb):
        self.xb = xb

    def read(self, pe, bl_bits, rows):
        return self.xb.read(pe, bl_bits, rows)


def test_exact_tables_follow_the_board_state():
    """A noise-free board's slot tables (and linear product) are cached per state: after
    programming, drift or set_conductance the datapath reads the new state, as slot-by-slot does."""
    from golden import datapath as dp
    from golden.adc import ADC
    from golden.mapping import ReadGroup
    xb = Crossbar("yao2020", seed=4)
    g = ReadGroup("T", 0, 0, tuple(range(9)), 0, 4)
    cols = np.random.default_rng(1).integers(0, 256, (600, 9))      # 4800 slot reads: table built
    cols[0] = 255

    def check():
        got = dp.read_group_sums(xb, g, cols, 8, ADC())
        assert np.array_equal(got, dp.read_group_sums(SlotBySlot(xb), g, cols, 8, ADC()))
        assert np.array_equal(got, dp.layer_accumulate(xb, [g], cols, 8, ADC()))   # (+ linear shortcut)
        return got

    before = check()
    assert any(k[0] == "slots" for k in xb.linear_cache)          # the slot table was used
    xb.program_cell(0, 0, 3, 400)                    # G+ of output 0, BL 3: to ~8 uA
    after = check()
    assert after[0, 0] != before[0, 0]
    xb.age(3600.0 * 24)
    check()
    assert np.array_equal(xb.copy().exact_units, xb.exact_units)
    levels = np.random.default_rng(2).integers(0, 8, (8, 128, 16))
    xb.set_conductance(level_conductance_us(levels.astype(np.float64)))
    check()
    assert dp.linear_weights(xb, [g], ADC(), 9) is not None    # ideal levels: the layer is linear
    assert xb.exact_units is not None
    noisy = Crossbar("yao2020", seed=4, read_noise_rel=0.01)
    assert noisy.exact_units is None                 # a noisy read is drawn: never tabulated
