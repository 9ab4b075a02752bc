"""Hybrid training of the FC layer through the device model (golden/hybrid.py)."""
import numpy as np
import pytest

from golden import update, weights
from golden.crossbar import Crossbar
from golden.datapath import delta, softmax_fixed, softmax_params
from golden.hybrid import (HybridConfig, HybridTrainer, PairProgrammer, batch_order, error_pct, fc_inputs, fc_logits,
                           clip_update, nominal_pulses, replicated_batches)
from golden.idx import default_data_dir, load_dataset
from golden.mapping import build_mapping
from golden.transfer import transfer
from golden.update import ProgramCommand


@pytest.fixture(scope="module")
def setup():
    """A transferred yao2020 board whose FC weights had 10 % of their targets replaced by random
    values (Yao 2020, Methods: the subset experiment), and FC inputs of a few images."""
    w = weights.load()
    ds = load_dataset(default_data_dir())
    m = build_mapping()
    rng = np.random.default_rng(0)
    iw = dict(w.int_w)
    fc = np.array(iw["FC"])
    mask = rng.random(fc.shape) < 0.1
    fc[mask] = rng.integers(-7, 8, mask.sum())
    iw["FC"] = fc
    xb = Crossbar("yao2020", seed=0)
    transfer(xb, m, iw)
    ntr, nte = 1500, 500
    v = fc_inputs(xb, w.int_w, w.q, m, np.concatenate([ds.train_images[:ntr], ds.test_images[:nte]]))
    return w, m, xb, (v[:ntr], ds.train_labels[:ntr].astype(np.int64)), (v[ntr:], ds.test_labels[:nte].astype(np.int64))


def test_threshold_rule_no_cell_below_th_is_programmed(setup):
    w, m, xb0, (v, y), _ = setup
    xb = xb0.copy()
    cfg = HybridConfig(eta=0.03)
    t = HybridTrainer(xb, m, w.q, cfg)
    for it in range(3):
        vb, yb = v[it * 100:(it + 1) * 100], y[it * 100:(it + 1) * 100]
        # the golden update, computed independently on the same state
        sm = softmax_params(w.q.logit_scale)
        dl = delta(softmax_fixed(fc_logits(xb, m.groups["FC"], vb), *sm), yb)
        raw = update.weight_update(update.accumulate(vb, dl), *update.eta_params(cfg.eta, w.q))
        assert ((np.abs(raw) > 0) & (np.abs(raw) < update.TH_CODE)).any()   # there are sub-threshold updates
        big = {(c.pe, c.row_pos, c.bl) for c in update.commands(update.threshold(raw), m)}
        small = {(c.pe, c.row_pos, c.bl) for c in update.commands(np.where(np.abs(raw) < update.TH_CODE, raw, 0), m)}
        n0 = len(t.prog.programmed)
        n_cmd, _ = t.step(vb, yb)
        assert n_cmd == len(big) > 0
        touched = {(pe, row - (row % 2), bl) for pe, row, bl in t.prog.programmed[n0:]}
        assert touched <= big and not (touched & small)
        assert len(touched) >= 0.9 * len(big)


def test_pair_rule():
    xb = Crossbar("yao2020", seed=3, n_pe=1, relax_na=0.0, p_stuck_on=0.0, p_stuck_off=0.0)
    pp = PairProgrammer(xb, "closed")
    assert (pp.lo, pp.hi) == (25, 200)

    def setpair(cp, cn):
        xb.g[0, 0, 0] = cp * 20 / 200.0
        xb.g[0, 1, 0] = cn * 20 / 200.0
        xb._cur = None

    setpair(100, 150)                      # d > 0 with G- above the floor: lower G-
    pp.apply(ProgramCommand(0, 0, 0, 0, 0, 40))
    assert abs(xb.verify_read(0, 1, 0) - 110) <= 5 and xb.verify_read(0, 0, 0) == 100
    setpair(100, 25)                       # G- at the floor: raise G+
    pp.apply(ProgramCommand(0, 0, 0, 0, 0, 40))
    assert abs(xb.verify_read(0, 0, 0) - 140) <= 5 and xb.verify_read(0, 1, 0) == 25
    setpair(100, 45)                       # 20 codes of room on G-, the rest on G+
    pp.apply(ProgramCommand(0, 0, 0, 0, 0, 50))
    assert abs(xb.verify_read(0, 1, 0) - 25) <= 5 and abs(xb.verify_read(0, 0, 0) - 130) <= 5
    setpair(60, 190)                       # d < 0: lower G+ (35 codes of room), rest raises G- (10)
    pp.apply(ProgramCommand(0, 0, 0, 0, 0, -45))
    assert abs(xb.verify_read(0, 0, 0) - 25) <= 5 and abs(xb.verify_read(0, 1, 0) - 200) <= 5
    s0 = pp.stats.saturated
    setpair(25, 200)                       # no room at all: nothing programmed, counted
    n0 = len(pp.programmed)
    pp.apply(ProgramCommand(0, 0, 0, 0, 0, -30))
    assert len(pp.programmed) == n0 and pp.stats.saturated == s0 + 1
    setpair(100, 150)                      # a blocked (failed) device is never programmed again
    pp.blocked.add((0, 1, 0))
    pp.apply(ProgramCommand(0, 0, 0, 0, 0, 40))
    assert xb.verify_read(0, 1, 0) == 150 and abs(xb.verify_read(0, 0, 0) - 140) <= 5


def test_stuck_device_fails_once_then_is_blocked():
    xb = Crossbar("yao2020", seed=0, n_pe=1, p_stuck_on=0.0, p_stuck_off=1.0, max_pulses=20)
    pp = PairProgrammer(xb, "closed")
    pp.apply(ProgramCommand(0, 0, 0, 0, 0, 40), iteration=7)
    assert pp.stats.failed == 1 and pp.failures[0]["iteration"] == 7 and (0, 0, 0) in pp.blocked
    g = xb.g.copy()
    pp.apply(ProgramCommand(0, 0, 0, 0, 0, 40), iteration=8)
    assert pp.stats.failed == 1 and np.array_equal(g, xb.g)


def test_open_loop_mode():
    p = Crossbar("yao2020", seed=0).p
    assert nominal_pulses(p, 10.0, 10.0, 500) == 0
    n = nominal_pulses(p, 5.0, 10.0, 500)
    assert n >= 1
    xb = Crossbar("yao2020", seed=4, n_pe=1, p_stuck_on=0.0, p_stuck_off=0.0)
    pp = PairProgrammer(xb, "open")
    moved = []
    for r in range(0, 64, 2):
        xb.g[0, r, 0], xb.g[0, r + 1, 0] = 10.0, 12.5
        xb._cur = None
        pp.apply(ProgramCommand(0, r, 0, 0, 0, 50))
        moved.append(xb.current_na(0, r + 1, 0) - 2500.0)
    assert pp.stats.pulses > 0 and pp.stats.commands == 32
    assert -1400 < np.mean(moved) < -600            # about -1000 nA wanted, open loop is noisy


def test_short_hybrid_training_improves_accuracy(setup):
    w, m, xb0, (v, y), (vt, yt) = setup
    xb = xb0.copy()
    before_test, before_train = error_pct(xb, m.groups["FC"], vt, yt), error_pct(xb, m.groups["FC"], v, y)
    t = HybridTrainer(xb, m, w.q, HybridConfig(eta=0.01, record_every=10))
    order = batch_order(len(v), 100, 40, seed=0)
    tr = t.run(((v[ix], y[ix]) for ix in order), record=lambda t: (t.error(vt, yt), t.error(v, y)))
    assert tr.iterations == [0, 10, 20, 30, 40] and tr.test_error[0] == before_test
    assert tr.train_error[-1] < before_train - 1.0
    assert tr.test_error[-1] < before_test - 1.0
    assert sum(tr.commands) > 0 and t.prog.stats.cells > 0


def test_hybrid_training_is_deterministic(setup):
    w, m, xb0, (v, y), _ = setup

    def run():
        xb = xb0.copy()
        t = HybridTrainer(xb, m, w.q, HybridConfig(eta=0.02))
        tr = t.run((v[ix], y[ix]) for ix in batch_order(len(v), 100, 5, seed=1))
        return xb.g, tr.commands, tr.pulses

    a, b = run(), run()
    assert np.array_equal(a[0], b[0]) and a[1:] == b[1:] and sum(a[1]) > 0


def test_round_update_sums_equation_1_over_the_groups(setup):
    w, m, xb0, (v, y), _ = setup
    xb = xb0.copy()
    cfg = HybridConfig(eta=0.01)
    t = HybridTrainer(xb, m, w.q, cfg)
    parts = [(v[i * 100:(i + 1) * 100], y[i * 100:(i + 1) * 100]) for i in range(3)]
    sm = softmax_params(w.q.logit_scale)
    acc = sum(update.accumulate(vb, delta(softmax_fixed(fc_logits(xb, m.groups["FC"], vb), *sm), yb))
              for vb, yb in parts)
    d = update.threshold(update.weight_update(acc, *update.eta_params(cfg.eta, w.q)))
    n, _ = t.step(parts)
    assert n == len(update.commands(d, m)) > 0


def test_replicated_batches_schedule():
    order = np.arange(12).reshape(6, 2)
    labels = np.arange(12) * 10
    src = {g: (lambda ix, g=g: [(g, int(i)) for i in ix]) for g in ("G1", "G2", "G3")}
    per_batch = list(replicated_batches(src, labels, order, ("G1", "G2", "G3"), "batch"))
    assert [b[0][0][0] for b in per_batch] == ["G1", "G2", "G3", "G1", "G2", "G3"]
    assert per_batch[4][0] == [("G2", 8), ("G2", 9)] and list(per_batch[4][1]) == [80, 90]
    rounds = list(replicated_batches(src, labels, order, ("G1", "G2", "G3"), "round"))
    assert len(rounds) == 2 and [p[0][0][0] for p in rounds[1]] == ["G1", "G2", "G3"]
    with pytest.raises(ValueError):
        list(replicated_batches(src, labels, order, ("G1",), "nope"))


def test_clip_update():
    d = np.array([[0, 14, -15, 60], [-120, 30, 1, -7]])
    c = clip_update(d, 30)
    assert np.abs(c).max() == 30 and c[1, 0] == -30 and c[0, 3] == 15
    assert np.all(np.sign(c) * np.sign(d) >= 0) and np.all(np.abs(c) <= np.abs(d))
    assert np.array_equal(update.threshold(c), [[0, 0, 0, 15], [-30, 0, 0, 0]])   # small entries drop out
    small = np.array([[3, -29, 30]])
    assert np.array_equal(clip_update(small, 30), small)
