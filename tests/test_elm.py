"""golden/elm.py (NoProp/ELM, sign-WH, ridge) and golden/signmlp.py (sign-backprop MLP)."""
import json

import numpy as np
import pytest

from golden import devices as D
from golden import elm, signmlp
from golden.synapse import DiffArray


def _dev(**kw):
    # linear, dG_L = 2.0 uS, RESET 1.5 x 2.0 = 3.0 uS, no noise, no spread
    base = dict(levels=12, zeta=1.5, c2c_sigma=0.0, d2d_bounds_sigma=0.0, d2d_levels_sigma=0.0)
    return D.preset("bennett2019-linear", **{**base, **kw})


def test_sign_wh_hand_made():
    """h = (+1, -1, +1), T = (+1, -1, -1). Y = h W: column 0 -> -3 (wrong sign: e = +2), column 1
    -> -3 (right), column 2 -> +3 (wrong: e = -2). Column 0 moves by sign(h) (+2 / -3 on G+ / G-),
    column 2 by -sign(h); column 1 is not touched. Caught: error sign flipped, updates on right
    columns, O_k = sign taken as >= 0 vs > 0 irrelevant here but the magnitude (one dG per device,
    not |e| = 2) is checked too."""
    arr = DiffArray(_dev(), (3, 3), np.random.default_rng(0))
    arr.g[0] = [[10.0, 10.0, 12.0], [12.0, 12.0, 10.0], [9.0, 9.0, 11.0]]
    arr.g[1] = [[10.0, 10.0, 10.0], [10.0, 10.0, 10.0], [10.0, 10.0, 10.0]]
    h = np.array([1, -1, 1], np.int8)
    t = np.array([1, -1, -1], np.int8)
    assert (h @ arr.w).tolist() == [-3.0, -3.0, 3.0]
    n = elm.train_example(arr, h, t)
    assert n == 12
    assert arr.g[0].tolist() == [[12.0, 10.0, 9.0], [9.0, 12.0, 12.0], [11.0, 9.0, 8.0]]
    assert arr.g[1].tolist() == [[7.0, 10.0, 12.0], [12.0, 10.0, 7.0], [7.0, 10.0, 12.0]]
    assert elm.train_example(arr, h, np.array([1, -1, -1], np.int8)) == 0   # now all signs right


def _margin_array():
    """4 x 3 pairs, G- = 10, h = (+1, -1, +1, +1): Y = (5, -11, -8); s = w_max sqrt(4) = 44."""
    arr = DiffArray(_dev(), (4, 3), np.random.default_rng(0))
    arr.g[0] = [[15.0, 7.25, 8.0], [10.0, 12.75, 12.0], [10.0, 7.25, 8.0], [10.0, 7.25, 8.0]]
    arr.g[1] = 10.0
    return arr


def test_sign_wh_margin_hand_made():
    """Margin 0.25: O_k = clip(Y_k / 11, -1, 1), T = (+1, -1, -1). Column 0 (Y = 5, right sign, inside
    the amplifier's linear range: O = 5/11 != T) moves by +sign(h); column 1 (Y = -11: O = -1 = T)
    is not touched; column 2 (Y = -8) moves by -sign(h). With margin 0 (sign comparator) every sign
    is right and nothing moves. train_batch on this one example programs the same. Caught: the
    margin ignored (0 pulses), T Y <= margin s (column 1 moved), the direction -O_k instead of T_k
    (column 0 moved down)."""
    h = np.array([1, -1, 1, 1], np.int8)
    t = np.array([1, -1, -1], np.int8)
    arr = _margin_array()
    assert (h @ arr.w).tolist() == [5.0, -11.0, -8.0] and elm.out_norm(arr) == 44.0
    assert elm.train_example(arr, h, t) == 0 and elm.train_example(arr, h, t, margin=0.0) == 0
    assert elm.train_example(arr, h, t, margin=0.25) == 16
    assert arr.g[0].tolist() == [[17.0, 7.25, 5.0], [7.0, 12.75, 14.0], [12.0, 7.25, 5.0], [12.0, 7.25, 5.0]]
    assert arr.g[1].tolist() == [[7.0, 10.0, 12.0], [12.0, 10.0, 7.0], [7.0, 10.0, 12.0], [7.0, 10.0, 12.0]]
    arr2 = _margin_array()
    assert elm.train_batch(arr2, h[None], t[None], margin=0.25) == 16 and np.array_equal(arr2.g, arr.g)
    with pytest.raises(ValueError, match="margin"):
        elm.train_insitu(arr, h[None], t[None], np.random.default_rng(0), 1, "l1", margin=0.25)


def test_l1_l2_scale_by_error():
    """L1 scales each pulse by |T - O|, L2 by (T - O)^2 with O = Y / (w_max sqrt(rows)).
    Caught: L1 and L2 swapped, the scale ignored."""
    for rule, expect in (("l1", 0.5), ("l2", 0.25)):
        arr = DiffArray(_dev(), (1, 1), np.random.default_rng(0))
        arr.g[0], arr.g[1] = 10.0 + 11.0, 10.0            # Y = 11 -> O = 11 / 22 = 0.5, T = 1
        elm.train_example(arr, np.array([1], np.int8), np.array([1], np.int8), rule)
        assert arr.g[0, 0, 0] == pytest.approx(21.0 + 2.0 * expect)
        assert arr.g[1, 0, 0] == pytest.approx(10.0 - 3.0 * expect)


def _blobs(rng, n, d=30, k=3):
    centres = rng.uniform(-1, 1, (k, d))
    y = rng.integers(0, k, n)
    x = np.clip(centres[y] + 0.35 * rng.standard_normal((n, d)), -1, 1)
    return np.hstack([x, np.ones((n, 1))]).astype(np.float32), y


def test_elm_learns_tiny_problem():
    """3 Gaussian blobs, M = 150 sign units from device spread, 3 epochs of sign-WH: test accuracy
    far above chance and near the ridge solution. Caught: error sign flipped (accuracy ~ chance),
    projection without spread (all-equal hidden units)."""
    rng = np.random.default_rng(1)
    x, y = _blobs(rng, 900)
    p = D.preset("bennett2019-linear", levels=64, c2c_sigma=0.1)
    w = elm.projection(p, x.shape[1], 150, rng)
    h = elm.hidden(x, w)
    assert set(np.unique(h)) == {-1, 1} and np.all(h[:, -1] == 1)
    t = elm.targets(y, 3)
    arr = DiffArray(p, (151, 3), rng)
    before = elm.accuracy(h[600:], arr.w, y[600:])
    pulses = elm.train_insitu(arr, h[:600], t[:600], rng, 3)
    acc = elm.accuracy(h[600:], arr.w, y[600:])
    acc_ridge = elm.accuracy(h[600:], elm.ridge(h[:600], t[:600], 1.0), y[600:])
    assert pulses > 0 and before < 0.7
    assert acc > 0.9 and acc_ridge > 0.9


def test_projection_is_device_spread():
    p = D.preset("bennett2019-linear")
    w = elm.projection(p, 200, 300, np.random.default_rng(2), sigma=0.05)
    # G_off+ - G_off- with G_off = 0.5 (1 + 0.05 z): s.d. 0.5 * 0.05 * sqrt(2)
    assert abs(w.mean()) < 2e-3 and w.std() == pytest.approx(0.5 * 0.05 * np.sqrt(2), rel=0.03)
    with pytest.raises(ValueError, match="spread"):
        elm.projection(p, 2, 2, np.random.default_rng(0), sigma=0.0)


def test_ridge_equals_lstsq():
    """Ridge = least squares of the augmented system [H; sqrt(lam) I] W = [T; 0].
    Caught: lam added twice / missing, H^T T transposed."""
    rng = np.random.default_rng(4)
    h = np.where(rng.random((60, 9)) < 0.5, -1, 1).astype(np.int8)
    t = elm.targets(rng.integers(0, 4, 60), 4)
    lam = 3.7
    a = np.vstack([h.astype(np.float64), np.sqrt(lam) * np.eye(9)])
    b = np.vstack([t.astype(np.float64), np.zeros((9, 4))])
    ref = np.linalg.lstsq(a, b, rcond=None)[0]
    assert np.allclose(elm.ridge(h, t, lam), ref, atol=1e-10)


@pytest.mark.parametrize("kind", ["tanh", "relu"])
def test_mlp_grads_finite_differences(kind):
    """Batch-summed cross-entropy gradients against central differences. Caught: derivative of
    tanh as 1 - a, softmax error T - P, the output bias row fed back."""
    rng = np.random.default_rng(5)
    x = rng.uniform(-1, 1, (7, 5))
    y = np.eye(3)[rng.integers(0, 3, 7)]
    w1, w2 = 0.7 * rng.standard_normal((5, 4)), 0.7 * rng.standard_normal((5, 3))
    alpha, beta = 1.5, 0.1

    def loss(a, b):
        return -np.sum(y * np.log(signmlp.forward(x, a, b, kind, alpha, beta)[2]))
    g1, g2 = signmlp.grads(x, y, w1, w2, kind, alpha, beta)
    eps = 1e-6
    for w, g, f in ((w1, g1, lambda d: loss(w1 + d, w2)), (w2, g2, lambda d: loss(w1, w2 + d))):
        for i in np.ndindex(w.shape):
            d = np.zeros_like(w)
            d[i] = eps
            assert g[i] == pytest.approx((f(d) - f(-d)) / (2 * eps), rel=1e-4, abs=1e-6)


def test_sign_mlp_one_batch_moves_against_gradient():
    """Every weight with a non-zero gradient moves by one push-pull pulse against it."""
    rng = np.random.default_rng(6)
    net = signmlp.SignMLP(_dev(levels=256), 5, 4, 3, rng, "relu")
    x = rng.uniform(-1, 1, (8, 5))
    y = np.eye(3)[rng.integers(0, 3, 8)]
    g1, _ = signmlp.grads(x, y, *net.weights(), "relu")
    before = net.l1.w.copy()
    net.batch(x, y)
    dw = net.l1.w - before
    moved = g1 != 0
    assert np.all(np.sign(dw[moved]) == -np.sign(g1[moved])) and np.all(dw[~moved] == 0)


def test_mlp_input_codings_hand_made():
    """eq. 5 maps 0 / 51 / 255 to -1 / -0.6 / +1, the unipolar diagnostic to 0 / 0.2 / 1; both end
    with the bias input +1."""
    img = np.array([[[0, 51], [255, 0]]], np.uint8)
    assert np.allclose(signmlp.inputs(img), [[-1, -0.6, 1, -1, 1]], rtol=0, atol=1e-6)
    assert np.allclose(signmlp.inputs(img, "unipolar"), [[0, 0.2, 1, 0, 1]], rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="coding"):
        signmlp.inputs(img, "bipolar")


def test_cli_small_run_and_bad_input(tmp_path, capsys):
    out = tmp_path / "r"
    assert elm.main(["--n-train", "300", "--n-test", "100", "--hidden", "40", "--epochs", "1",
                     "--seeds", "2", "--levels", "32", "--out", str(out)]) == 0
    rep = json.loads((out / "report.json").read_text())
    assert rep["device"]["levels"] == 32 and len(rep["runs"]) == 2 and rep["summary"]["acc"]["n"] == 2
    assert [r["pulse"] for r in rep["runs"]] == ["push-pull"] * 2 and [r["seed"] for r in rep["runs"]] == [0, 1]
    one = tmp_path / "one"                      # --first-seed 1 repeats seed 1 exactly; --pulse reaches the array
    assert elm.main(["--n-train", "300", "--n-test", "100", "--hidden", "40", "--epochs", "1", "--seeds", "1",
                     "--first-seed", "1", "--levels", "32", "--out", str(one)]) == 0
    assert json.loads((one / "report.json").read_text())["runs"][0]["curve"] == rep["runs"][1]["curve"]
    alt = tmp_path / "alt"
    assert elm.main(["--n-train", "300", "--n-test", "100", "--hidden", "40", "--epochs", "1", "--pulse", "alternate",
                     "--levels", "32", "--out", str(alt)]) == 0
    r0, ra = rep["runs"][0], json.loads((alt / "report.json").read_text())["runs"][0]
    assert ra["pulse"] == "alternate" and ra["pulses"] < r0["pulses"]
    assert (out / "accuracy.png").stat().st_size > 0
    assert elm.main(["--n-train", "300", "--out", str(out)]) == 2            # exists, no --force
    assert "exists" in capsys.readouterr().err
    assert elm.main(["--zeta", "-1", "--out", str(tmp_path / "z")]) == 2
    assert elm.main(["--device", "nope", "--out", str(tmp_path / "z")]) == 2
    assert elm.main(["--network", "mlp-sign", "--gains", "0", "1", "--out", str(tmp_path / "z")]) == 2
    assert elm.main(["--margin", "-1", "--out", str(tmp_path / "z")]) == 2
    assert elm.main(["--margin", "0.4", "--rule", "l1", "--out", str(tmp_path / "z")]) == 2
    assert elm.main(["--first-seed", "-1", "--out", str(tmp_path / "z")]) == 2
    assert not (tmp_path / "z").exists()


def test_sweep_stages_elm_and_mlp_sign():
    """golden/sweep.py stages elm / mlp-sign: the point's device fields (levels) and the bennett
    parameters (hidden, epochs, activation) reach the model; a bad activation is refused."""
    from golden import sweep
    from golden.fileio import InputError
    from golden.idx import default_data_dir
    spec = sweep.parse_spec({"sweep": {"stages": ["elm", "mlp-sign"]},
                             "fixed": {"device": "bennett2019-linear", "hidden": 30, "epochs": 1,
                                       "n_train": 200, "n_test": 100, "activation": "relu"},
                             "params": {"levels": [16, 64]}})
    assert [p["levels"] for p in spec.points] == [16, 64]
    m = sweep.run_point(spec.points[0], 0, spec.stages, str(default_data_dir()))
    assert {"acc_elm", "acc_elm_ridge", "elm_pulses", "acc_mlp_sign", "mlp_sign_pulses"} <= set(m)
    assert 0 <= m["acc_elm"] <= 100 and m["elm_pulses"] > 0 and m["mlp_sign_pulses"] > 0
    row = sweep.resolve(spec.points[0], spec.stages)
    assert row["levels"] == 16 and row["hidden"] == 30 and row["activation"] == "relu"
    with pytest.raises(InputError, match="activation"):
        sweep.parse_spec({"sweep": {"stages": ["elm"]}, "fixed": {"activation": "sigmoid"}})


def test_mcnn_train_insitu_routes_bennett_networks(tmp_path):
    """`mcnn train-insitu --network elm|mlp-sign` runs golden.elm with its own options; li2018 does not."""
    from sw import cli
    out = tmp_path / "r"
    assert cli.main(["train-insitu", "--network", "elm", "--n-train", "300", "--n-test", "100", "--hidden", "40",
                     "--epochs", "1", "--no-ridge", "--out", str(out)]) == 0
    assert (out / "report.json").exists()
    assert cli.main(["train-insitu", "--network", "mlp-sign", "--gains", "0", "1", "--out", str(tmp_path / "z")]) == 2
    assert not cli._bennett(["train-insitu", "--network", "li2018"]) and not cli._bennett(["sim", "--network", "elm"])
