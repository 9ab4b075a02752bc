"""golden/insitu.py: forward, backward and update against references computed here, a few training
batches on li2018, the CLI's refusals. (The long runs: docs/insitu.md.)"""
import numpy as np
import pytest

from golden import insitu
from golden.crossbar import Crossbar
from golden.datapath import EXP_TABLE, SOFTMAX_FRAC
from golden.hybrid import batch_order
from golden.idx import default_data_dir, load_dataset
from golden.networks import network
from golden.update import commands

NET = network("li2018")


@pytest.fixture(scope="module")
def mnist():
    ds = load_dataset(default_data_dir())
    return insitu.flat_inputs(NET, ds.train_images[:3000]), ds.train_labels[:3000].astype(np.int64)


def linear_board(seed=0, **kw):
    """A noise-free li2018 board whose every cell reads k x 0.25 uA (k in 2..15): every slot of the
    forward (16 BLs) and transposed (10 rows) reads is then exact and unsaturated."""
    xb = Crossbar("li2018", seed=seed, n_pe=4, p_stuck_off=0.0, relax_rel=0.0, **kw)
    k = np.random.default_rng(seed).integers(2, 16, xb.shape)
    xb.set_conductance(k * 1.25)
    return xb, k


def weights(t, k, i):
    """W (fan_in, n_out) of layer i in the units of k (k: per cell), read off through the mapping."""
    L = t.layers[i]
    w = np.zeros((L.n_in, L.n_out), dtype=k.dtype)
    for g in t.groups(i):
        for o in range(g.n_out):
            for j, m in enumerate(g.inputs):
                w[m, o] += k[g.pe, g.row_base + 2 * o, j] - k[g.pe, g.row_base + 2 * o + 1, j]
    return w


def test_forward_backward_match_the_reference(mnist):
    x, y = mnist[0][:64], mnist[1][:64]
    xb, k = linear_board(1)
    t = insitu.InsituTrainer(xb, NET, insitu.InsituConfig(eta=0.05))
    acts, logits = t.forward(x)
    w1, w2 = weights(t, k, 0), weights(t, k, 1)
    a1 = x @ w1
    h = np.clip((a1 + 16) >> 5, 0, 255)                              # HIDDEN_SHIFT 5, round half up
    assert np.array_equal(acts[1], h) and np.array_equal(logits, h @ w2)
    deltas = t.backward(acts, logits, y)
    # softmax written out: 1/510 nat per logit unit (8/255 x 0.25 uA / 4) -> exp-table steps of 1/64 nat
    z = logits
    d_t = np.minimum(np.floor((z.max(1, keepdims=True) - z) * 64 / 510 + 0.5).astype(np.int64), 1023)
    e = EXP_TABLE[d_t]
    p = ((e << 15) + (e.sum(1, keepdims=True) >> 1)) // e.sum(1, keepdims=True)
    do = p.copy()
    do[np.arange(len(y)), y] -= 1 << SOFTMAX_FRAC
    assert np.abs(deltas[1] - do).max() <= 1        # (M, sh) of the softmax rounds the 1/1020 ratio
    # hidden error: per-image block exponent, T = err @ w2^T exact here, times relu'
    dt = deltas[1]
    for i in range(len(y)):
        s = max(int(np.abs(dt[i]).max()).bit_length() - 8, 0)
        err = np.clip((dt[i] + ((1 << s) >> 1)) >> s, -255, 255)
        want = ((w2 @ err) << s) * ((h[i] > 0) & (h[i] < 255))
        assert np.array_equal(deltas[0][i], want)


def test_update_scale_sign_and_commands(mnist):
    x, y = mnist[0][:100], mnist[1][:100]
    xb, k = linear_board(2)
    t = insitu.InsituTrainer(xb, NET, insitu.InsituConfig(eta=0.05, mode="open"))
    acts, logits = t.forward(x)
    deltas = t.backward(acts, logits, y)
    dis = t.updates(acts, deltas)
    for i, d in enumerate(dis):
        acc = acts[i].T @ deltas[i]
        # float step: eta * (input scale) * (delta scale) * 50 codes/uA
        s_v = [1 / 255, 32 / 1020][i]
        s_d = [2.0 ** -15 / 4 * 0.25, 2.0 ** -15 / 4][i]
        want = -0.05 * s_v * s_d * 50 * acc
        big = np.abs(want) >= t.th + 1
        assert big.any()
        assert np.all(np.abs(d[big] - want[big]) <= 1 + 1e-3 * np.abs(want[big]))
        assert not d[np.abs(want) < t.th - 1].any()
    n0 = sum(len(commands(d, t.mapping, L.name)) for d, L in zip(dis, t.layers))
    n, pulses, err = t.step(x, y)
    assert n == n0 == t.prog.stats.commands and pulses > 0
    # a pair moved the way its update says: G+ - G- up for dI > 0
    for i, d in enumerate(dis):
        moved = weights(t, xb.g, i) - weights(t, k * 1.25, i)          # uS
        assert np.all(moved[d > 3 * t.th] > 0) and np.all(moved[d < -3 * t.th] < 0)


def test_thresholds_follow_the_verify_margin():
    assert insitu.default_threshold(Crossbar("yao2020", seed=0, n_pe=4), "closed") == 15
    assert insitu.default_threshold(Crossbar("li2018", seed=0, n_pe=4), "closed") == 6
    assert insitu.default_threshold(Crossbar("li2018", seed=0, n_pe=4), "open") == 2   # half of a 2.8-code pulse
    with pytest.raises(ValueError, match="no step given"):
        insitu.InsituTrainer(Crossbar("li2018", seed=0, n_pe=4), NET, insitu.InsituConfig())


@pytest.mark.parametrize("mode", ["open", "closed"])
def test_a_few_batches_learn_from_the_fresh_board(mnist, mode):
    x, y = mnist
    xb = Crossbar("li2018", seed=3, n_pe=4)
    t = insitu.InsituTrainer(xb, NET, insitu.InsituConfig(eta=0.08, mode=mode))
    e0 = t.error(x[2000:], y[2000:])
    tr = insitu.train(t, x, y, batch_order(2000, 100, 20, seed=0))
    assert len(tr.batch_error) == 20 and tr.test_error == []
    assert e0 > 70 and t.error(x[2000:], y[2000:]) < e0 - 20
    assert t.prog.stats.commands == sum(tr.commands) and t.prog.stats.pulses == sum(tr.pulses)
    if mode == "closed":       # stuck-OFF cells fail write-verify once and are blocked
        assert t.prog.stats.failed == len(t.prog.blocked) and all(xb.stuck[c] for c in t.prog.blocked)


def test_cli_refusals(tmp_path, capsys):
    from sw.cli import main
    assert main(["train-insitu", "--network", "yao2020", "--out", str(tmp_path)]) == 2
    assert "dense layers only" in capsys.readouterr().err
    (tmp_path / "insitu.json").write_text("{}")
    assert main(["train-insitu", "--out", str(tmp_path)]) == 2
    assert "exists" in capsys.readouterr().err and (tmp_path / "insitu.json").read_text() == "{}"
    assert main(["train-insitu", "--stuck-grid", "1.5", "--out", str(tmp_path)]) == 2


def test_float_picture_is_the_integer_network(mnist):
    """The ex-situ float MLP (golden/insitu_run.py) computes the function the in-situ integers stand
    for: on a linear board its logits are the integer logits x 1/510 nat, up to the hidden rounding."""
    from golden.insitu_run import _float_forward
    x = mnist[0][:500]
    xb, k = linear_board(4)
    t = insitu.InsituTrainer(xb, NET, insitu.InsituConfig(eta=0.05))
    ws = [weights(t, k * 0.25, i) for i in range(2)]                 # uA
    z = _float_forward(ws, x, t)[1]
    zi = t.forward(x)[1] / 510.0
    assert np.abs(z - zi).max() < 0.02 * np.abs(zi).max()
    assert np.mean(z.argmax(1) == zi.argmax(1)) > 0.97
