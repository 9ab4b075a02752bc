"""The board ELM (golden): network elm-board, the sign rule of golden/update.py, golden/pair_pulser.py
and InsituTrainer's per-layer rules, against references written out here."""
import numpy as np
import pytest

from golden import cnn, devices, insitu, update
from golden.crossbar import Crossbar
from golden.devices import RESET, SET
from golden.mapping import build_mapping
from golden.networks import BIAS_PIXEL, Network, network
from golden.pair_pulser import PairPulser, pulse_plan

NET = network("elm-board")


def test_elm_board_is_the_largest_that_maps():
    m = NET.mapping()
    assert [(g.pe, g.row_base, len(g.inputs), g.n_out) for g in m.groups["H"]] == [(p, 0, 16, 64) for p in range(4)]
    assert [(g.pe, g.row_base) for g in m.groups["O"]] == [(4, 0), (4, 20), (4, 40), (4, 60)]
    assert [m.rows_used(p) for p in range(8)] == [128] * 4 + [80, 0, 0, 0]
    assert NET.devices == 9472
    wider = (cnn.Dense("H", 64, 65), cnn.Dense("O", 65, 10))     # one more hidden unit: 130 rows per group
    with pytest.raises(ValueError, match="130 rows"):
        build_mapping(wider, {"H": tuple(range(8)), "O": tuple(range(8))})
    with pytest.raises(ValueError, match="learning rules"):
        Network("x", NET.layers, (8, 8, 1), NET.placement, rules={"O": "hebb"})


def test_bias_pixel_is_constant():
    x = np.random.default_rng(0).integers(0, 256, (3, 28, 28), dtype=np.uint8)
    y, ref = NET.prepare(x), network("li2018").prepare(x)
    assert y[:, BIAS_PIXEL[0], BIAS_PIXEL[1]].tolist() == [255] * 3
    y[:, BIAS_PIXEL[0], BIAS_PIXEL[1]] = ref[:, BIAS_PIXEL[0], BIAS_PIXEL[1]]
    assert np.array_equal(y, ref)


def test_sign_error_and_rule_against_a_loop():
    rng = np.random.default_rng(1)
    a = rng.integers(-3, 4, (50, 10))
    a[0] = 0                                     # A = 0 counts as O = -1
    lab = rng.integers(0, 10, 50)
    e = update.sign_error(a, lab)
    for n in range(50):
        for k in range(10):
            o, t = (1 if a[n, k] > 0 else -1), (1 if k == lab[n] else -1)
            assert e[n, k] == (o - t) // 2
    v = rng.integers(0, 2, (50, 64)) * 255
    acc = update.accumulate(v, e)
    d = update.sign_rule(acc)
    for j in range(64):
        for k in range(10):
            s = sum(int(v[n, j]) * ((1 if k == lab[n] else -1) - (1 if a[n, k] > 0 else -1)) for n in range(50))
            assert d[j, k] == (s > 0) - (s < 0)


def test_pulse_plan_lowers_first():
    c = update.ProgramCommand(2, 10, 3, 0, 0, 1)
    assert pulse_plan(c) == [(2, 11, 3, RESET), (2, 10, 3, SET)]
    assert pulse_plan(update.ProgramCommand(2, 10, 3, 0, 0, -1)) == [(2, 10, 3, RESET), (2, 11, 3, SET)]
    with pytest.raises(ValueError, match="d_code 0"):
        PairPulser(Crossbar("li2018", n_pe=1)).apply(update.ProgramCommand(0, 0, 0, 0, 0, 0))


def test_a_sign_step_moves_only_the_output_pairs_it_should():
    """Forward h = 255 [x W1 > 0] and logits from the cells' read currents; one step pulses each O pair
    with sign(sum h (T - O)) != 0 once per device, in that direction, and nothing else."""
    xb = Crossbar("li2018", seed=4, p_stuck_off=0.0, relax_rel=0.0)
    k = np.random.default_rng(4).integers(2, 16, xb.shape)     # every cell k x 0.25 uA: exact reads
    xb.set_conductance(k * 1.25)
    t = insitu.InsituTrainer(xb, NET, insitu.InsituConfig(batch=8))
    assert t.rules == ["frozen", "sign"] and t.hidden_rq == (510, 1)
    w = [np.zeros((L.n_in, L.n_out), np.int64) for L in t.layers]
    for i in range(2):
        for g in t.groups(i):
            for o in range(g.n_out):
                for j, m in enumerate(g.inputs):
                    w[i][m, o] += k[g.pe, g.row_base + 2 * o, j] - k[g.pe, g.row_base + 2 * o + 1, j]
    rng = np.random.default_rng(5)
    x = rng.integers(0, 256, (8, 64)) * (rng.random((8, 64)) < 0.4)
    x[:, 0] = 255
    y = rng.integers(0, 10, 8)
    acts, logits = t.forward(x)
    h = np.where(x @ w[0] > 0, 255, 0)
    assert np.array_equal(acts[1], h) and np.array_equal(logits, h @ w[1])
    assert 0 < (h > 0).mean() < 1
    tt = np.where(np.arange(10) == y[:, None], 1, -1)
    d = np.sign(h.T @ (tt - np.where(logits > 0, 1, -1)))
    g0 = xb.g.copy()
    n, pulses, _ = t.step(x, y)
    assert n == np.count_nonzero(d) > 0 and pulses == 2 * n
    moved = xb.g != g0
    assert not moved[:4].any() and not moved[5:].any()          # H (PEs 0-3) frozen, unused PEs untouched
    for g in t.groups(1):
        for o in range(g.n_out):
            for j, m in enumerate(g.inputs):
                for row, up in ((g.row_base + 2 * o, d[m, o] > 0), (g.row_base + 2 * o + 1, d[m, o] < 0)):
                    c = (4, row, j)
                    want = g0[c] if d[m, o] == 0 else devices.step(xb.p, g0[c], SET if up else RESET, xb.lo[c],
                                                                 xb.hi[c], xb.k[c], 1.0)
                    assert xb.g[c] == want, (m, o, row)


def test_rules_are_checked():
    xb = Crossbar("li2018", n_pe=8)
    with pytest.raises(ValueError, match="output layer only"):
        insitu.InsituTrainer(xb, NET, insitu.InsituConfig(rules={"H": "sign", "O": "sign"}))
    with pytest.raises(ValueError, match="nothing to train"):
        insitu.InsituTrainer(xb, NET, insitu.InsituConfig(rules={"H": "frozen", "O": "frozen"}))
    with pytest.raises(ValueError, match="eta"):
        insitu.InsituTrainer(xb, NET, insitu.InsituConfig(rules={"H": "frozen", "O": "threshold"}))


def test_sign_experiment_learns_on_a_small_split():
    """train-insitu's path for elm-board (golden.insitu_run.sign_experiment) on 3,000 training images:
    well above chance in situ, the ridge comparison beside it."""
    from types import SimpleNamespace

    from golden.idx import default_data_dir, load_dataset, split_sizes
    from golden.insitu_run import sign_experiment
    ds = load_dataset(default_data_dir())
    small = SimpleNamespace(train_images=ds.train_images[:3000], train_labels=ds.train_labels[:3000],
                            test_images=ds.test_images[:1000], test_labels=ds.test_labels[:1000])
    r = sign_experiment(small, "elm-board", seeds=(0,), log=lambda s: None)
    acc = r["fig4a"]["sign"]["accuracy"]["values"][0]
    assert 30 < acc < 100 and 30 < r["ridge"]["values"][0] < 100
    run = r["fig4a"]["sign"]["runs"][0]
    assert run["pulses"] > 0 and run["iterations"] == split_sizes(3000)[0] // 10 and r["rules"] == ["frozen", "sign"]


def test_sim_refuses_other_devices(capsys):
    from sw.cli import main
    assert main(["sim", "--network", "elm-board", "--device", "ideal", "--n", "5"]) == 2
    assert "li2018 board" in capsys.readouterr().err


def test_signbp_pulses_both_layers_by_the_sign_of_the_gradient():
    """li2018 with rules signbp in both layers (Bennett's sign-backprop MLP on the board): every pair
    of H and O moves one pulse per device in the direction -sign(V^T delta), the deltas those of the
    threshold rule; nothing else moves."""
    net = network("li2018")
    xb = Crossbar("li2018", seed=6, p_stuck_off=0.0, relax_rel=0.0)
    k = np.random.default_rng(6).integers(2, 16, xb.shape)
    xb.set_conductance(k * 1.25)
    t = insitu.InsituTrainer(xb, net, insitu.InsituConfig(batch=8, rules={"H": "signbp", "O": "signbp"}))
    ref = insitu.InsituTrainer(xb.copy(), net, insitu.InsituConfig(eta=0.05, batch=8))    # threshold: its deltas
    rng = np.random.default_rng(7)
    x = rng.integers(0, 256, (8, 64)) * (rng.random((8, 64)) < 0.5)
    y = rng.integers(0, 10, 8)
    acts, logits = ref.forward(x)
    deltas = ref.backward(acts, logits, y)
    want = [-np.sign(acts[i].T @ deltas[i]) for i in range(2)]
    assert all(np.count_nonzero(w) for w in want)
    g0 = xb.g.copy()
    n, pulses, _ = t.step(x, y)
    assert n == sum(np.count_nonzero(w) for w in want) and pulses == 2 * n
    moved = np.zeros(xb.shape, bool)
    for i, name in enumerate(("H", "O")):
        for g in t.groups(i):
            for o in range(g.n_out):
                for j, m in enumerate(g.inputs):
                    d = want[i][m, o]
                    for row, up in ((g.row_base + 2 * o, d > 0), (g.row_base + 2 * o + 1, d < 0)):
                        c = (g.pe, row, j)
                        exp = g0[c] if d == 0 else devices.step(xb.p, g0[c], SET if up else RESET, xb.lo[c],
                                                                xb.hi[c], xb.k[c], 1.0)
                        assert xb.g[c] == exp, (name, m, o, row)
                        moved[c] = d != 0
    assert np.array_equal(xb.g != g0, moved & (xb.g != g0)) and not (xb.g != g0)[4:].any()
    with pytest.raises(ValueError, match="output layer alone"):
        insitu.InsituTrainer(xb, net, insitu.InsituConfig(rules={"H": "signbp", "O": "sign"}))


@pytest.mark.parametrize("cmd", [["train", "--out", "/nonexistent/elm"], ["eval", "--n", "5"], ["bench", "--n", "5"]])
def test_no_exsitu_commands(cmd, capsys):
    from sw.cli import main
    assert main([cmd[0], "--network", "elm-board", *cmd[1:]]) == 2
    assert "no ex-situ weights" in capsys.readouterr().err
