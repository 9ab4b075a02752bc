"""golden/mapping.py (the placement of layers on PE rows) and the whole integer datapath.

Placement: the Yao 2020 layout (docs/datapath.md table), row bookkeeping, the conductance
levels (every weight exactly once as G+ - G-), other CNNs, and the error cases.
Whole network: golden.datapath.Datapath against a pure-Python loop reference of the network
(direct convolution loops, the requant formula, pooling loops, dense loops), and against
golden.model.forward in quantised mode.
"""
import json
import math
from fractions import Fraction

import numpy as np
import pytest

from golden import cnn, model
from golden import datapath as dp
from golden.cnn import Conv, Dense, Pool
from golden.mapping import YAO2020_PLACEMENT, build_mapping, conductance_levels, fanin_groups

# ================================================================ helpers


def random_int_weights(layers, seed):
    rng = np.random.default_rng(seed)
    return {L.name: rng.integers(-7, 8, size=cnn.weight_shape(L)) for L in cnn.weight_layers(layers)}


def weight_of(L, w, o, i):
    """Weight of output o, unrolled fan-in index i, read by hand from the layer's weight tensor."""
    if isinstance(L, Conv):
        kk = L.k * L.k
        c, r = divmod(i, kk)
        kh, kw = divmod(r, L.k)
        return int(w[o][c][kh][kw])
    return int(w[i][o])


def n_outputs(L):
    return L.out_ch if isinstance(L, Conv) else L.n_out


def check_mapping_invariants(m, layers):
    """No PE over its rows, no two groups on the same rows, every fan-in index in exactly one group."""
    occupied = {}
    for name, gs in m.groups.items():
        for g in gs:
            assert 0 <= g.pe < m.n_pe
            assert len(g.inputs) <= m.n_bl
            for r in range(g.row_base, g.row_base + 2 * g.n_out):
                assert 0 <= r < m.n_rows, (name, g.index, r)
                assert (g.pe, r) not in occupied, f"{name}/{g.index} overlaps {occupied.get((g.pe, r))} on PE {g.pe}"
                occupied[(g.pe, r)] = (name, g.index)
    for pe in range(m.n_pe):
        rows = sum(1 for (p, _r) in occupied if p == pe)
        assert rows <= m.n_rows
        assert m.rows_used(pe) == rows
    for L in cnn.weight_layers(layers):
        gs = m.groups[L.name]
        assert [g.index for g in gs] == list(range(len(gs)))
        seen = []
        for g in gs:
            assert g.n_out == n_outputs(L) and g.layer == L.name
            seen.extend(g.inputs)
        assert sorted(seen) == list(range(L.fan_in))


def check_levels(layers, int_w, m, lv, unused_level):
    """Every (layer, output, fan-in) weight exactly once as G+ level - G- level; the rest unused."""
    count = {}
    used = set()
    by_name = {L.name: L for L in layers}
    for name, gs in m.groups.items():
        L = by_name[name]
        for g in gs:
            for o in range(g.n_out):
                rp, rn = g.row_base + 2 * o, g.row_base + 2 * o + 1
                for j, i in enumerate(g.inputs):
                    w = weight_of(L, int_w[name], o, i)
                    lp, ln = int(lv[g.pe][rp][j]), int(lv[g.pe][rn][j])
                    assert lp - ln == w, (name, g.index, o, i)
                    assert (lp, ln) == (max(w, 0), max(-w, 0))  # one side of the pair at level 0
                    key = (name, o, i)
                    count[key] = count.get(key, 0) + 1
                    used.add((g.pe, rp, j))
                    used.add((g.pe, rn, j))
    for L in cnn.weight_layers(layers):
        for o in range(n_outputs(L)):
            for i in range(L.fan_in):
                assert count.get((L.name, o, i)) == 1, (L.name, o, i)
    assert len(count) == sum(n_outputs(L) * L.fan_in for L in cnn.weight_layers(layers))
    n_pe, n_rows, n_bl = lv.shape
    for pe in range(n_pe):
        for r in range(n_rows):
            for b in range(n_bl):
                if (pe, r, b) not in used:
                    assert int(lv[pe][r][b]) == unused_level, (pe, r, b)


# ================================================================ the Yao 2020 placement

def test_yao2020_placement():
    m = build_mapping()
    assert (m.n_pe, m.n_rows, m.n_bl) == (8, 128, 16)
    c1, c3, fc = m.groups["C1"], m.groups["C3"], m.groups["FC"]
    # C1: one group (1 input channel, 9 inputs), PE index 0, rows 0..15
    assert len(c1) == 1
    assert (c1[0].pe, c1[0].row_base, c1[0].n_out, c1[0].inputs) == (0, 0, 8, tuple(range(9)))
    # C3: channels 0..3 on PE 0 rows 16..111, channels 4..7 on PE 2 rows 0..95, 24 rows each
    assert len(c3) == 8
    for c, g in enumerate(c3):
        assert g.inputs == tuple(range(9 * c, 9 * c + 9))
        assert g.n_out == 12
        if c < 4:
            assert (g.pe, g.row_base) == (0, 16 + 24 * c)
        else:
            assert (g.pe, g.row_base) == (2, 24 * (c - 4))
    assert c3[3].row_base + 24 == 112 and c3[7].row_base + 24 == 96
    # FC: 12 groups of 16 inputs, 20 rows each; 6 on PE 4 (rows 0..119), 6 on PE 6
    assert len(fc) == 12
    for gi, g in enumerate(fc):
        assert g.inputs == tuple(range(16 * gi, 16 * gi + 16))
        assert g.n_out == 10
        assert (g.pe, g.row_base) == ((4, 20 * gi) if gi < 6 else (6, 20 * (gi - 6)))
    assert [m.rows_used(pe) for pe in range(8)] == [112, 0, 96, 0, 120, 0, 120, 0]
    check_mapping_invariants(m, cnn.YAO2020)


def test_yao2020_rows_pos_neg():
    g = build_mapping().groups["C3"][1]
    assert g.rows_pos.tolist() == list(range(40, 64, 2))
    assert g.rows_neg.tolist() == list(range(41, 64, 2))


def test_table_and_json():
    m = build_mapping()
    t = m.table()
    assert len(t) == 1 + 8 + 12
    assert t[0] == {"layer": "C1", "group": 0, "pe": 0, "rows": [0, 16], "inputs": list(range(9))}
    d = json.loads(m.to_json())
    assert (d["n_pe"], d["n_rows"], d["n_bl"]) == (8, 128, 16)
    assert d["groups"] == t
    fc11 = [r for r in t if r["layer"] == "FC" and r["group"] == 11][0]
    assert fc11["pe"] == 6 and fc11["rows"] == [100, 120] and fc11["inputs"] == list(range(176, 192))


@pytest.mark.parametrize("unused_level", [0, 3, 7])
def test_yao2020_conductance_levels(unused_level):
    int_w = random_int_weights(cnn.YAO2020, seed=unused_level)
    int_w["C1"][0, 0] = [[7, -7, 0], [7, -7, 0], [0, 0, 0]]  # the extremes in there for sure
    m = build_mapping()
    lv = conductance_levels(cnn.YAO2020, int_w, m, unused_level=unused_level)
    assert lv.shape == (8, 128, 16)
    assert int(lv.min()) >= 0 and int(lv.max()) <= 7
    check_levels(cnn.YAO2020, int_w, m, lv, unused_level)
    # the paper's picture: 7 idle BLs on every conv row, PEs 1, 3, 5, 7 untouched
    for pe in (1, 3, 5, 7):
        assert all(int(v) == unused_level for v in lv[pe].ravel())


def test_conductance_levels_rejects_bad_weights():
    int_w = random_int_weights(cnn.YAO2020, seed=1)
    int_w["FC"][5, 3] = 8
    with pytest.raises(ValueError):
        conductance_levels(cnn.YAO2020, int_w, build_mapping())


# ================================================================ other networks

SMALL = (Conv("K1", 1, 4, 3, 1), Pool("P1", 2), Conv("K2", 4, 6, 2, 0), Dense("D", 6 * 4 * 4, 5))
SMALL_PLACEMENT = {"K1": (1,), "K2": (1, 3), "D": (5, 0)}


def test_small_cnn_maps():
    assert cnn.shapes(SMALL, (10, 10, 1))[-1] == (1, 1, 5)
    m = build_mapping(SMALL, SMALL_PLACEMENT)
    k1, k2, d = m.groups["K1"], m.groups["K2"], m.groups["D"]
    assert [(g.pe, g.row_base, g.inputs) for g in k1] == [(1, 0, tuple(range(9)))]
    assert [(g.pe, g.row_base) for g in k2] == [(1, 8 + 12 * c) for c in range(4)]
    assert [g.inputs for g in k2] == [tuple(range(4 * c, 4 * c + 4)) for c in range(4)]  # 2x2 kernels
    assert [(g.pe, g.row_base) for g in d] == [(5, 10 * i) for i in range(6)]
    assert [g.inputs for g in d] == [tuple(range(16 * i, 16 * i + 16)) for i in range(6)]
    check_mapping_invariants(m, SMALL)
    int_w = random_int_weights(SMALL, seed=3)
    lv = conductance_levels(SMALL, int_w, m, unused_level=2)
    check_levels(SMALL, int_w, m, lv, 2)


def test_dense_with_short_last_group_and_spill():
    """n_in not a multiple of 16; groups spill onto the next listed PE in order; small arrays."""
    layers = (Dense("F", 37, 7),)
    m = build_mapping(layers, {"F": (2, 0)}, n_pe=3, n_rows=30, n_bl=16)
    gs = m.groups["F"]
    assert [len(g.inputs) for g in gs] == [16, 16, 5]
    assert [(g.pe, g.row_base) for g in gs] == [(2, 0), (2, 14), (0, 0)]  # 14 rows per group, 30 rows a PE
    check_mapping_invariants(m, layers)
    int_w = random_int_weights(layers, seed=4)
    lv = conductance_levels(layers, int_w, m)
    assert lv.shape == (3, 30, 16)
    check_levels(layers, int_w, m, lv, 0)


def test_fanin_groups():
    assert fanin_groups(Conv("c", 3, 5, 3)) == [tuple(range(0, 9)), tuple(range(9, 18)), tuple(range(18, 27))]
    assert fanin_groups(Conv("c", 2, 5, 4)) == [tuple(range(16)), tuple(range(16, 32))]  # 16 = all BLs
    assert fanin_groups(Conv("c", 2, 5, 1)) == [(0,), (1,)]
    assert fanin_groups(Dense("d", 192, 10)) == [tuple(range(16 * i, 16 * i + 16)) for i in range(12)]
    assert fanin_groups(Dense("d", 20, 1), n_bl=8) == [tuple(range(8)), tuple(range(8, 16)), tuple(range(16, 20))]


def test_placement_may_share_pes_between_layers():
    layers = (Conv("A", 1, 8, 3, 0), Pool("P", 2), Dense("D", 8 * 3 * 3, 8))
    m = build_mapping(layers, {"A": (0,), "D": (0,)})
    # A takes rows 0..15 of PE 0, D's 5 groups follow at 16, 32, ... 80
    assert [(g.pe, g.row_base) for g in m.groups["D"]] == [(0, 16 + 16 * i) for i in range(5)]
    check_mapping_invariants(m, layers)


# ================================================================ errors

def test_error_placement_missing_layer():
    with pytest.raises(ValueError, match="FC"):
        build_mapping(cnn.YAO2020, {"C1": (0,), "C3": (0, 2)})


@pytest.mark.parametrize("layers,placement,what", [
    (cnn.YAO2020, {"C1": (0,), "C3": (0,), "FC": (4, 6)}, "C3"),     # 16 + 8 x 24 rows > 128
    (cnn.YAO2020, {"C1": (0,), "C3": (0, 2), "FC": (4,)}, "FC"),     # 12 x 20 rows > 128
    (cnn.YAO2020, {"C1": (0,), "C3": (1, 2), "FC": (0, 3)}, "FC"),   # FC: 5 groups after C1 on PE 0, 6 on PE 3
    ((Dense("Big", 16, 65),), {"Big": (0, 1)}, "Big"),               # one group needs 130 rows
])
def test_error_layer_does_not_fit(layers, placement, what):
    with pytest.raises(ValueError, match=what):
        build_mapping(layers, placement)


def test_error_kernel_too_big():
    layers = (Conv("K5", 1, 4, 5, 0), Pool("P", 2), Dense("D", 4 * 12 * 12, 2))
    with pytest.raises(ValueError, match="K5"):
        build_mapping(layers, {"K5": (0,), "D": (1,)})
    with pytest.raises(ValueError):
        fanin_groups(Conv("c", 1, 1, 3), n_bl=8)  # 9 inputs on 8 BLs


def test_error_pe_negative():
    with pytest.raises(ValueError, match="out of range"):
        build_mapping(cnn.YAO2020, {"C1": (-1,), "C3": (0, 2), "FC": (4, 6)})


def test_error_pe_too_large():
    with pytest.raises(ValueError, match="out of range"):
        build_mapping(cnn.YAO2020, {"C1": (8,), "C3": (0, 2), "FC": (4, 6)})


def test_error_pe_out_of_range_unused_entry():
    with pytest.raises(ValueError, match="out of range"):
        build_mapping(cnn.YAO2020, {"C1": (0, 99), "C3": (0, 2), "FC": (4, 6)})


# ================================================================ the whole network, by hand

def ref_im2col_at(x, c_in, k, pad, oh, ow):
    """Patch of output position (oh, ow), order (c, kh, kw); x is [H][W][C] of Python ints."""
    h, w = len(x), len(x[0])
    out = []
    for c in range(c_in):
        for kh in range(k):
            for kw in range(k):
                ih, iw = oh + kh - pad, ow + kw - pad
                out.append(x[ih][iw][c] if 0 <= ih < h and 0 <= iw < w else 0)
    return out


def ref_requant(a, m, sh):
    if a < 0:
        a = 0
    return min(math.floor(Fraction(a * m, 2 ** sh) + Fraction(1, 2)), 255)


def ref_pool(x, p):
    h, w, c = len(x), len(x[0]), len(x[0][0])
    return [[[max(x[oh * p + dh][ow * p + dw][ch] for dh in range(p) for dw in range(p))
              for ch in range(c)] for ow in range(w // p)] for oh in range(h // p)]


def ref_flatten_chw(x):
    h, w, c = len(x), len(x[0]), len(x[0][0])
    return [x[i][j][ch] for ch in range(c) for i in range(h) for j in range(w)]


def ref_dot_conv(L, w):
    """Exact accumulator of a conv output: direct loops over the integer weights."""
    def acc(patch):
        out = []
        for o in range(L.out_ch):
            s = 0
            i = 0
            for c in range(L.in_ch):
                for kh in range(L.k):
                    for kw in range(L.k):
                        s += patch[i] * int(w[o][c][kh][kw])
                        i += 1
            out.append(s)
        return out
    return acc


def ref_dot_dense(L, w):
    def acc(v):
        return [sum(v[i] * int(w[i][o]) for i in range(L.n_in)) for o in range(L.n_out)]
    return acc


def ref_array_accumulate(L, w, groups, adc_bits, lsb, input_bits=8):
    """Accumulator through the array, by hand: levels from the weights, per group, slot and SL row
    I = sum V_READ * G * bit, ADC formula, shift-and-add, G+ - G-, sum over groups."""
    top = 2 ** adc_bits - 1

    def code(cur):
        return min(max(math.floor(cur / lsb + 0.5), 0), top)

    def acc(vec):
        out = [0] * n_outputs(L)
        for g in groups:
            for o in range(g.n_out):
                s = [0, 0]
                for k in range(input_bits):
                    for side in (0, 1):
                        cur = 0.0
                        for i in g.inputs:
                            wv = weight_of(L, w, o, i)
                            level = max(wv, 0) if side == 0 else max(-wv, 0)
                            bit = (vec[i] // 2 ** k) % 2
                            cur += 0.2 * (2.5 + 2.5 * level) * bit
                        s[side] += code(cur) * 2 ** k
                out[o] += s[0] - s[1]
        return out
    return acc


def ref_network(layers, int_w, q, image, accumulators=None):
    """image [H][W] ints -> (logits, activations by layer name). accumulators: name -> f(vector)."""
    x = [[[int(v)] for v in row] for row in image]
    acts = {}
    for L in layers:
        if isinstance(L, Conv):
            f = (accumulators or {}).get(L.name) or ref_dot_conv(L, int_w[L.name])
            h, w = len(x), len(x[0])
            ho, wo = h + 2 * L.pad - L.k + 1, w + 2 * L.pad - L.k + 1
            m, sh = q.requant[L.name]
            x = [[[ref_requant(a, m, sh) for a in f(ref_im2col_at(x, L.in_ch, L.k, L.pad, oh, ow))]
                  for ow in range(wo)] for oh in range(ho)]
        elif isinstance(L, Pool):
            x = ref_pool(x, L.size)
        else:
            f = (accumulators or {}).get(L.name) or ref_dot_dense(L, int_w[L.name])
            x = f(ref_flatten_chw(x))
            if L.name in q.requant:       # a hidden dense layer: ReLU + requant, a 1x1 map
                m, sh = q.requant[L.name]
                x = [[[ref_requant(a, m, sh) for a in x]]]
        acts[L.name] = x
    return x, acts


NET1 = (Conv("A", 1, 3, 3, 0), Pool("P", 2), Dense("D", 3 * 3 * 3, 4))
NET2 = (Conv("A", 1, 4, 3, 1), Pool("P", 3), Conv("B", 4, 5, 3, 1), Pool("Q", 2), Dense("D", 5 * 2 * 2, 3))
MLP = (Dense("H1", 36, 12), Dense("H2", 12, 7), Dense("O", 7, 4))          # hidden dense layers
CONVMLP = (Conv("A", 1, 3, 3, 0), Pool("P", 2), Dense("H", 27, 8), Dense("D", 8, 3))
NETS = {
    "mlp": (MLP, (6, 6), {"H1": (2,), "H2": (2, 3), "O": (3,)}, {"H1": 0.03, "H2": 0.05}, 0.01),
    "convmlp": (CONVMLP, (8, 8), {"A": (0,), "H": (1,), "D": (1,)}, {"A": 0.1, "H": 0.04}, 0.02),
    "net1": (NET1, (9, 9), {"A": (1,), "D": (3,)}, {"A": 0.1}, 0.02),
    "net2": (NET2, (12, 12), {"A": (0,), "B": (0, 1), "D": (7,)}, {"A": 0.08, "B": 0.03}, 0.005),
    "yao2020": (cnn.YAO2020, (28, 28), YAO2020_PLACEMENT, {"C1": 0.09, "C3": 0.02}, 0.01),
}


def make_net(name, seed):
    layers, hw, placement, ratios, logit_scale = NETS[name]
    int_w = random_int_weights(layers, seed)
    q = model.QuantConfig(w_scale={L.name: 1.0 for L in cnn.weight_layers(layers)},
                          requant={k: model.requant_params(r) for k, r in ratios.items()},
                          logit_scale=logit_scale)
    rng = np.random.default_rng(seed + 1)
    n_img = 2 if name == "yao2020" else 4
    imgs = rng.integers(0, 256, size=(n_img,) + hw).astype(np.uint8)
    imgs[0] = 0
    if name != "yao2020":
        imgs[1] = 255
    return layers, placement, int_w, q, imgs


@pytest.mark.parametrize("name", sorted(NETS))
def test_datapath_equals_loop_reference(name):
    layers, placement, int_w, q, imgs = make_net(name, seed=len(name))
    m = build_mapping(layers, placement)
    res = dp.Datapath(int_w, q, layers, m).run(imgs, keep=True)
    n_out = cnn.weight_layers(layers)[-1].n_out
    assert res.logits.shape == (len(imgs), n_out)
    for i, img in enumerate(imgs):
        logits, acts = ref_network(layers, int_w, q, img.tolist())
        assert res.logits[i].tolist() == logits, i
        for L in layers:
            assert res.activations[L.name][i].tolist() == acts[L.name], (i, L.name)
        # argmax: first maximum
        best = 0
        for j in range(1, n_out):
            if logits[j] > logits[best]:
                best = j
        assert int(res.classes[i]) == best
    assert res.logits[0].tolist() == [0] * n_out  # black image
    # not a degenerate test: some activations are neither 0 nor saturated
    first = cnn.weight_layers(layers)[0].name
    a = res.activations[first]
    assert (a == 0).any() and ((a > 0) & (a < 255)).any()
    # p is the fixed-point softmax of the logits
    sm, ssh = dp.softmax_params(q.logit_scale)
    assert res.p.tolist() == dp.softmax_fixed(res.logits, sm, ssh).tolist()


@pytest.mark.parametrize("name", sorted(NETS))
def test_datapath_equals_quantised_model(name):
    layers, placement, int_w, q, imgs = make_net(name, seed=10 + len(name))
    res = dp.Datapath(int_w, q, layers, build_mapping(layers, placement)).run(imgs)
    params = {k: v.astype(np.float32) for k, v in int_w.items()}
    for dtype in (np.float64, np.float32):
        logits, _ = model.forward(params, imgs, layers, q=q, dtype=dtype)
        back = np.floor(np.asarray(logits, dtype=np.float64) / q.logit_scale + 0.5).astype(np.int64)
        assert back.tolist() == res.logits.tolist(), dtype


def test_datapath_batches_agree():
    layers, placement, int_w, q, imgs = make_net("net2", seed=5)
    imgs = np.concatenate([imgs, imgs[::-1], imgs])
    d = dp.Datapath(int_w, q, layers, build_mapping(layers, placement))
    assert d.run(imgs, batch=5).logits.tolist() == d.run(imgs).logits.tolist()


@pytest.mark.parametrize("name", ["net1", "net2", "mlp"])
def test_datapath_reduced_adc_clipping(name):
    """5-bit ADC: conv A at 10 uA full scale (LSB 0.3125 uA, saturates above ~9.8 uA), other layers
    at the 5-bit default (16 uA, LSB 0.5 uA). Currents are multiples of 0.5 uA, never near a tie."""
    layers, placement, int_w, q, imgs = make_net(name, seed=7)
    cfg = dp.DatapathConfig(adc_bits=5, adc_full_scale_ua={"A": 10.0})
    m = build_mapping(layers, placement)
    res = dp.Datapath(int_w, q, layers, m, cfg=cfg).run(imgs, keep=True)
    accs = {}
    for L in cnn.weight_layers(layers):
        lsb = 10.0 / 32 if L.name == "A" else 0.5
        accs[L.name] = ref_array_accumulate(L, int_w[L.name], m.groups[L.name], 5, lsb)
    exact = dp.Datapath(int_w, q, layers, m).run(imgs)
    for i, img in enumerate(imgs):
        logits, acts = ref_network(layers, int_w, q, img.tolist(), accs)
        assert res.logits[i].tolist() == logits, i
        for L in layers:
            assert res.activations[L.name][i].tolist() == acts[L.name], (i, L.name)
    # the clipping really happened: the result differs from the exact datapath
    assert res.logits.tolist() != exact.logits.tolist()


def test_array_reference_matches_direct_loops_with_default_adc():
    """Sanity of the by-hand array reference itself: with the default ADC it is the exact dot product."""
    layers, placement, int_w, q, imgs = make_net("net1", seed=8)
    m = build_mapping(layers, placement)
    L = layers[0]
    arr_acc = ref_array_accumulate(L, int_w["A"], m.groups["A"], 8, 0.5)
    dot_acc = ref_dot_conv(L, int_w["A"])
    rng = np.random.default_rng(9)
    for _ in range(20):
        patch = [int(v) for v in rng.integers(0, 256, 9)]
        assert arr_acc(patch) == dot_acc(patch)
    assert arr_acc([255] * 9) == dot_acc([255] * 9)
