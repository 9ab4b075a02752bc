"""Issue 19: dataset-relative splits, the hybrid step chosen on the data (choose_step), the divergence
guard, noise-aware ex-situ training, reports naming the dataset."""
import numpy as np
import pytest

from golden import cnn, hybrid, model, train
from golden.idx import Dataset, default_data_dir, load_dataset, split_sizes


# ------------------------------------------------------------------ splits

@pytest.mark.parametrize("n, expect", [(60_000, (55_000, 5_000)),   # MNIST: Yao's split, unchanged
                                       (1_500, (1_375, 125)),       # digits28: 1/12
                                       (1_200, (1_100, 100)), (600, (500, 100)),   # the minimum of 100
                                       (20, (10, 10)), (3, (2, 1)), (1, (1, 0))])  # at most half
def test_split_sizes(n, expect):
    assert split_sizes(n) == expect


def test_split_sizes_random():
    for n in np.random.default_rng(0).integers(1, 200_000, 200):
        a, b = split_sizes(int(n))
        assert a + b == n and b >= n // 12 and b >= min(100, n // 2) and a >= b // 11 - 1


def test_dataset_split_and_name(tmp_path):
    ds = load_dataset(default_data_dir())
    assert ds.split == (55_000, 5_000) and ds.name == "mnist"
    small = Dataset(ds.train_images[:1500], ds.train_labels[:1500], ds.test_images[:5], ds.test_labels[:5],
                    tmp_path / "digits28")
    assert small.split == (1375, 125) and small.name == "digits28"


# ------------------------------------------------------------------ the guard

def _fires(errors, **kw):
    g = hybrid.Guard(**kw)
    return [i for i, e in enumerate(errors) if g.observe(e)], g


def test_guard_rule_hand_made():
    # window 2, margin 5: running means 10, 10, 10, 20 (> best 10 + 5: halve), then the reference is 20
    assert _fires([10, 10, 10, 30])[0] == [3]
    assert _fires([10, 14, 16])[0] == []                 # means 10, 12, 15: not above 10 + 5
    assert _fires([10, 14, 16.5])[0] == [2]              # 15.25 > 15
    # after a halving window and reference restart with the next batch: 30 (best), 30, 35 (not > 35), 37.5
    assert _fires([10, 30, 30, 30, 40])[0] == [1]
    assert _fires([10, 30, 30, 30, 45])[0] == [1, 4]
    assert _fires([10, 30, 10, 21])[0] == [1, 3]         # restarted: 10 is the new best, then 15.5 > 15
    f, g = _fires([0, 100, 100, 100, 200, 300, 400], max_decays=2)   # 350 > 305 but two halvings are the cap
    assert f == [1, 4] and g.as_dict()["decays_at"] == [1, 4]
    assert _fires([50, 40, 30, 20, 10])[0] == []         # improving never fires


def test_guard_halves_step_in_trainer():
    """HybridTrainer with guard: the batch after a divergence is updated with eta_sh + 1 (the step
    halved), exactly golden.update's weight_update at the halved shift."""
    from golden import update, weights
    from golden.crossbar import Crossbar
    from golden.mapping import build_mapping
    from golden.transfer import transfer
    w = weights.load()
    ds = load_dataset(default_data_dir())
    m = build_mapping()
    xb = Crossbar("ideal", seed=0)
    transfer(xb, m, w.int_w)
    v = hybrid.fc_inputs(xb, w.int_w, w.q, m, ds.train_images[:200])
    y = ds.train_labels[:200].astype(np.int64)
    t = hybrid.HybridTrainer(xb, m, w.q, hybrid.HybridConfig(eta=0.3, guard=True))
    sh0 = t.sh
    t.step(v[:100], y[:100])                     # a good batch: few errors
    assert t.sh == sh0
    wrong = (y[100:] + 1) % 10                   # a batch with every label wrong: error ~100 %
    from golden.datapath import delta, softmax_fixed, softmax_params
    logits = hybrid.fc_logits(xb, m.groups["FC"], v[100:])
    acc = update.accumulate(v[100:], delta(softmax_fixed(logits, *softmax_params(w.q.logit_scale)), wrong))
    expect = {sh: len(update.commands(update.threshold(update.weight_update(acc, t.m, sh)), m, "FC"))
              for sh in (sh0, sh0 + 1)}
    n_cmds, _ = t.step(v[100:], wrong)
    assert t.sh == sh0 + 1 and t.guard.decays == [1]
    assert n_cmds == expect[sh0 + 1] and expect[sh0 + 1] != expect[sh0]


# ------------------------------------------------------------------ choose_step

class _FakeTrainer:
    """Stands in for HybridTrainer: records the step and marks the board copy it trained."""

    def __init__(self, b, mapping, q, cfg, layer, dcfg):
        self.b, self.cfg = b, cfg

    def run(self, batches):
        n = sum(1 for _ in batches)
        self.b.trained = (self.cfg.eta, n)


class _Board:
    def __init__(self):
        self.reseeded, self.trained = None, None

    def copy(self):
        return _Board()

    def reseed(self, s):
        self.reseeded = s


def test_choose_step_picks_lowest_validation_error_ties_smaller(monkeypatch):
    table = {0.001: 7.0, 0.002: 5.0, 0.004: 5.0, 0.008: 9.0}     # 0.002 and 0.004 tie: the smaller wins
    seen = []

    def err(b, fcg, v, lab, dcfg=None):
        if b.trained is None:
            return 6.0                                            # the untouched board: before
        seen.append((b.trained, b.reseeded))
        return table[b.trained[0]]
    monkeypatch.setattr(hybrid, "HybridTrainer", _FakeTrainer)
    monkeypatch.setattr(hybrid, "error_pct", err)
    mapping = type("M", (), {"groups": {"FC": None}})()
    board = _Board()
    r = hybrid.choose_step(board, mapping, None, lambda ix: np.zeros((len(ix), 1)), np.zeros(50), np.arange(30),
                           np.arange(30, 50), iterations=4, seed=9, candidates=tuple(table), batch=10, orders=1)
    assert r["eta"] == 0.002 and r["validation_error_before"] == 6.0
    assert r["validation_error"] == {str(k): v for k, v in table.items()}
    assert board.trained is None and board.reseeded is None       # the run's board is never trained
    assert sorted(seen) == sorted(((e, 4), 9 + hybrid.STEP_SEED) for e in table)   # each on a reseeded copy


def test_choose_step_scores_the_worst_trial(monkeypatch):
    """Two trials per step (boards reseeded apart): 0.002 is best on one but diverged on the other, so
    0.001 (worst 6.5) wins over it (worst 30) and over 0.004 (worst 7)."""
    s0 = 5 + hybrid.STEP_SEED
    table = {(0.001, s0): 6.0, (0.001, s0 + 7919): 6.5, (0.002, s0): 4.0, (0.002, s0 + 7919): 30.0,
             (0.004, s0): 7.0, (0.004, s0 + 7919): 5.0}
    monkeypatch.setattr(hybrid, "HybridTrainer", _FakeTrainer)
    monkeypatch.setattr(hybrid, "error_pct",
                        lambda b, *a, **k: 8.0 if b.trained is None else table[(b.trained[0], b.reseeded)])
    mapping = type("M", (), {"groups": {"FC": None}})()
    r = hybrid.choose_step(_Board(), mapping, None, lambda ix: np.zeros((len(ix), 1)), np.zeros(50), np.arange(30),
                           np.arange(30, 50), iterations=3, seed=5, candidates=(0.001, 0.002, 0.004), batch=10)
    assert r["eta"] == 0.001 and r["validation_error"] == {"0.001": 6.5, "0.002": 30.0, "0.004": 7.0}
    assert r["validation_error_trials"]["0.002"] == [4.0, 30.0]


def test_choose_step_grid_follows_threshold_step(monkeypatch):
    monkeypatch.setattr(hybrid, "HybridTrainer", _FakeTrainer)
    monkeypatch.setattr(hybrid, "error_pct", lambda b, *a, **k: 1.0 if b.trained is None else 2.0)
    monkeypatch.setattr(hybrid, "threshold_step", lambda *a, **k: 0.01)
    mapping = type("M", (), {"groups": {"FC": None}})()
    r = hybrid.choose_step(_Board(), mapping, None, lambda ix: np.zeros((len(ix), 1)), np.zeros(50),
                           np.arange(30), np.arange(30, 50), iterations=2, seed=0, batch=10)
    assert r["candidates"] == [0.0025, 0.00354, 0.005, 0.00707, 0.01, 0.0141, 0.02, 0.0283]
    assert r["eta"] == 0.0025 and r["threshold_step"] == 0.01    # all equal: the smallest step


def test_threshold_step_reaches_threshold():
    """At eta = threshold_step of one batch, that batch's largest |dI| is Th (+/- rounding); at 0.9 x
    below it; computed here from golden.update directly."""
    from golden import update, weights
    from golden.crossbar import Crossbar
    from golden.datapath import delta, softmax_fixed, softmax_params
    from golden.mapping import build_mapping
    from golden.transfer import transfer
    w = weights.load()
    ds = load_dataset(default_data_dir())
    m = build_mapping()
    xb = Crossbar("ideal", seed=0)
    transfer(xb, m, w.int_w)
    v = hybrid.fc_inputs(xb, w.int_w, w.q, m, ds.train_images[300:400])
    y = ds.train_labels[300:400].astype(np.int64)
    eta = hybrid.threshold_step(xb, m.groups["FC"], w.q, [(v, y)])
    acc = update.accumulate(v, delta(softmax_fixed(hybrid.fc_logits(xb, m.groups["FC"], v),
                                                   *softmax_params(w.q.logit_scale)), y))
    top = np.abs(update.weight_update(acc, *update.eta_params(eta, w.q))).max()
    assert abs(top - update.TH_CODE) <= 1
    assert np.abs(update.weight_update(acc, *update.eta_params(0.9 * eta, w.q))).max() < update.TH_CODE


# ------------------------------------------------------------------ noise-aware training

def test_programming_sigma_of_the_preset():
    """yao2020: write-verify leaves ~N(0, 108 nA) per device (golden/devices.py); a weight is a pair
    of 500 nA steps, so sigma ~ sqrt(2) x 108 / 500 = 0.31 steps. The ideal preset: no error."""
    r = train.programming_sigma("yao2020")
    assert 90 < r["sd_na"] < 125 and r["cells"] > 480
    assert r["sigma_weight"] == pytest.approx(np.sqrt(2) * r["sd_na"] / 500)
    assert train.programming_sigma("ideal")["sigma_weight"] < 0.02


def test_forward_noise_statistics():
    """A dense layer with noise sigma: logits move by N(0, sigma^2 sum v^2) x logit_scale per output."""
    layers = (cnn.Dense("FC", 16, 3),)
    rng = np.random.default_rng(1)
    params = {"FC": rng.normal(0, 1, (16, 3)).astype(np.float32)}
    q = model.QuantConfig({"FC": 0.25}, {}, 1.0)
    x = rng.integers(0, 256, (400, 4, 4)).astype(np.uint8)
    clean, _ = model.forward(params, x, layers, q, dtype=np.float64)
    noisy, _ = model.forward(params, x, layers, q, dtype=np.float64, noise=(0.5, np.random.default_rng(2)))
    z = (noisy - clean) / np.sqrt((x.reshape(400, -1).astype(np.float64) ** 2).sum(1))[:, None]
    assert abs(z.std() - 0.5) < 0.05                 # one draw per call, shared by the batch: 48 weights
    again, _ = model.forward(params, x, layers, q, dtype=np.float64, noise=(0.0, None))
    np.testing.assert_array_equal(again, clean)


def test_noise_aware_training_records_and_differs(monkeypatch):
    """`device` with the Gaussian model makes QAT draw N(0, sigma^2) of the preset's error (the weights'
    meta says which training was used)."""
    ds = load_dataset(default_data_dir())
    small = Dataset(ds.train_images[:700], ds.train_labels[:700], ds.test_images[:5], ds.test_labels[:5],
                    ds.directory)
    layers = (cnn.Pool("P", 4), cnn.Dense("FC", 49, 10))
    cfg = train.TrainConfig(seed=1, epochs=1, batch=32, qat_epochs=1, n_calib=200, shift=0)
    fw0, iw0, q0, m0 = train.train(small, cfg, layers, log=lambda s: None)
    import dataclasses
    calls = []
    fwd = model.forward

    def spy(*a, **k):
        if k.get("train"):
            calls.append((a[3] is not None, k.get("noise") and k["noise"][0]))
        return fwd(*a, **k)
    monkeypatch.setattr(model, "forward", spy)
    fw1, iw1, q1, m1 = train.train(small, dataclasses.replace(cfg, device="yao2020", noise_model="gaussian"), layers,
                                   log=lambda s: None)
    sigma = m1["noise_aware"]["sigma_weight"]
    assert 0.25 < sigma < 0.36
    # float epochs without noise, every QAT training step with the preset's sigma
    assert {c for c in calls if not c[0]} == {(False, None)} and {c for c in calls if c[0]} == {(True, sigma)}
    assert m0["ex_situ"] == "plain" and m0["noise_aware"] is None and small.split == (600, 100)
    assert m1["ex_situ"] == "noise-aware" and m1["noise_aware"]["device"] == "yao2020"
    np.testing.assert_array_equal(fw0["FC"], fw1["FC"])          # same float training
    assert m1["val_qat"] != m0["val_qat"] or not np.array_equal(iw0["FC"], iw1["FC"])


def test_device_noise_follows_the_measured_levels():
    """DeviceNoise: a weight w reads e(G+ at level max(w, 0)) - e(G- at level max(-w, 0)), each device
    drawn from its level's measured pool (yao2020: ~108 nA s.d., in 500 nA steps); w = 0 pairs two
    level-0 devices (their bias cancels, their spread does not)."""
    dn = train.DeviceNoise("yao2020", per_level=96)
    assert dn.cells == 768 and 760 <= sum(len(e) for e in dn.pool) <= 768    # stuck cells (1e-4) left out
    for e in dn.pool:                                          # the device model: N(0, 108 nA), in steps
        assert 0.17 < e.std() < 0.25 and abs(e.mean()) < 0.08
    rng = np.random.default_rng(5)
    n = 40_000
    for w in (-7, -3, 0, 2, 7):
        wq = np.full(n, float(w))
        err = dn.perturb(wq, rng) - wq
        err = err[np.abs(err) < 3]                  # stuck devices (1e-4 each, ~8 steps off): next test
        lp, ln = max(w, 0), max(-w, 0)
        mean = dn.pool[lp].mean() - dn.pool[ln].mean()
        var = dn.pool[lp].var() + dn.pool[ln].var()
        assert abs(err.mean() - mean) < 4 * np.sqrt(var / n)
        assert abs(err.var() / var - 1) < 0.04
        # every error is a difference of two measured values of those levels
        pairs = np.subtract.outer(dn.pool[lp], dn.pool[ln]).ravel()
        assert len(err) > 0.999 * n and np.isin(np.round(err[:50], 9), np.round(pairs, 9)).all()
    s = dn.summary()
    assert s["device"] == "yao2020" and len(s["sd_na_per_level"]) == 8 and 0.25 < s["sigma_weight"] < 0.36


def test_device_noise_stuck_cells_at_the_preset_rate():
    """Stuck devices are left out of the measured pool and drawn at the preset's rates, reading the
    stuck conductance: stuck-ON 24 uS = 4.8 uA = 9.6 steps, stuck-OFF 1 uS = 0.4 steps, whatever the target."""
    dn = train.DeviceNoise("yao2020", per_level=64, p_stuck_on=0.02, p_stuck_off=0.05)
    assert sum(len(e) for e in dn.pool) < 8 * 64 - 20               # ~36 stuck cells not in the pools
    lv = np.random.default_rng(1).integers(0, 8, 200_000)
    e = dn.device_errors(lv, np.random.default_rng(2))
    target = lv + 1.0                                                 # level k reads (k + 1) x 500 nA
    on, off = np.isclose(e + target, 9.6), np.isclose(e + target, 0.4)
    assert abs(on.mean() - 0.02) < 0.002 and abs(off.mean() - 0.05) < 0.003
    assert np.abs(e[~on & ~off]).max() < 1.5                          # the rest: programmed devices
    plain = train.DeviceNoise("yao2020", per_level=64)
    assert not np.isclose(plain.device_errors(lv[:20_000], np.random.default_rng(2)) + target[:20_000],
                          9.6).mean() > 0.001                         # 5e-5: ~1 in 20,000


def test_plain_training_unchanged_and_noise_model_recorded(monkeypatch):
    """Plain training gives the weights it gave before noise-aware training existed (figures from the
    code before issue 19's second noise model); --device trains with a DeviceNoise on every QAT step."""
    import hashlib
    ds = load_dataset(default_data_dir())
    small = Dataset(ds.train_images[:700], ds.train_labels[:700], ds.test_images[:5], ds.test_labels[:5],
                    ds.directory)
    layers = (cnn.Pool("P", 4), cnn.Dense("FC", 49, 10))
    cfg = train.TrainConfig(seed=1, epochs=1, batch=32, qat_epochs=1, n_calib=200, shift=0)
    fw, iw, q, m = train.train(small, cfg, layers, log=lambda s: None)
    assert (m["val_ptq"], m["val_qat"]) == (12.0, 16.0) and q.w_scale["FC"] == pytest.approx(0.0864142403)
    assert hashlib.sha256(iw["FC"].tobytes()).hexdigest()[:16] == "aa1da973e1648b35"
    seen = []
    perturb = train.DeviceNoise.perturb
    monkeypatch.setattr(train.DeviceNoise, "perturb", lambda self, wq, rng: seen.append(1) or perturb(self, wq, rng))
    import dataclasses
    _, _, _, m1 = train.train(small, dataclasses.replace(cfg, device="yao2020", qat_epochs=1), layers,
                              log=lambda s: None)
    assert len(seen) >= 600 // 32 and m1["ex_situ"] == "noise-aware" and m1["noise_aware"]["model"] == "levels"
    assert len(m1["noise_aware"]["mean_na_per_level"]) == 8


def test_noise_scale_picks_the_best_common_factor(monkeypatch):
    """noise_scale scores every m of the grid under the noise (the accuracy stubbed here: best at
    m = 0.8 for the FC scale it is given) and calibrates with the factors times the winner."""
    layers = (cnn.Pool("P", 4), cnn.Dense("FC", 49, 10))
    params = {"FC": np.random.default_rng(0).normal(0, 1, (49, 10)).astype(np.float32)}
    x = np.random.default_rng(1).integers(0, 256, (20, 28, 28)).astype(np.uint8)
    base = float(np.abs(params["FC"]).max() / model.W_LEVELS)
    seen = []

    def acc(p, xv, yv, lay, q, noise=None):
        seen.append(noise[0])
        m = q.w_scale["FC"] / (0.9 * base)
        return 90 - 100 * (m - 0.8) ** 2
    monkeypatch.setattr(model, "accuracy", acc)
    q, fac, scores = train.noise_scale(params, x, x, None, layers, {"FC": 0.9}, 99.99, "N", draws=2)
    assert list(scores) == list(train.NOISE_SCALE_GRID) and len(seen) == 2 * len(scores) and set(seen) == {"N"}
    assert fac["FC"] == pytest.approx(0.72) and q.w_scale["FC"] == pytest.approx(0.72 * base)


def test_committed_noise_aware_weights_say_so():
    """weights/yao2020-na (docs/devices.md, issue 19): the noise-aware fine-tune of weights/yao2020,
    its meta naming the noise model; its integer weights use more of the 15 levels (scale x 0.7)."""
    from golden import weights
    w, base = weights.load("weights/yao2020-na"), weights.load("weights/yao2020")
    m = w.meta
    assert m["ex_situ"] == "noise-aware" and m["init"] == "weights/yao2020" and m["noise_aware"]["model"] == "levels"
    assert m["noise_aware"]["device"] == "yao2020" and m["weight_scale_factors"]["FC"] == pytest.approx(0.7)
    assert np.abs(w.int_w["FC"]).mean() > 1.2 * np.abs(base.int_w["FC"]).mean()
    np.testing.assert_array_equal(w.float_w["FC"], base.float_w["FC"])     # --epochs 0: the float weights kept


# ------------------------------------------------------------------ reports name the dataset

def _write_idx(path, a):
    hdr = bytes([0, 0, 8, a.ndim]) + b"".join(int(n).to_bytes(4, "big") for n in a.shape)
    path.write_bytes(hdr + np.asarray(a, np.uint8).tobytes())


def _small_set(d):
    ds = load_dataset(default_data_dir())
    d.mkdir()
    for name, a in (("train-images-idx3-ubyte", ds.train_images[:40]),
                    ("train-labels-idx1-ubyte", ds.train_labels[:40]),
                    ("t10k-images-idx3-ubyte", ds.test_images[:20]), ("t10k-labels-idx1-ubyte", ds.test_labels[:20])):
        _write_idx(d / name, a)
    return d


def test_eval_names_the_dataset(tmp_path, capsys):
    from sw.cli import main
    d = _small_set(tmp_path / "my_digits")
    assert main(["eval", "--data", str(d), "--energy-iterations", "0"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("my_digits test images: 20 ") and "MNIST" not in out
    assert main(["eval", "--data", str(d), "--energy-iterations", "0", "--name", "Digits v2"]) == 0
    assert capsys.readouterr().out.startswith("Digits v2 test images: 20 ")
    assert main(["eval", "--n", "10", "--energy-iterations", "0"]) == 0
    assert capsys.readouterr().out.startswith("mnist test images: 10 ")
