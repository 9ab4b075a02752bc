"""golden/activity.py: per-image activity counts, hand-computed on a tiny network, and the
data-dependent BL pulses of the Yao CNN against a direct count over every group patch."""
import numpy as np
import pytest

from golden import activity, cnn
from golden.activity import ACTIVITY_KEYS, conversion_rounds, inference_activity, programming_activity
from golden.datapath import bitserial_encode
from golden.mapping import build_mapping, group_patch

TINY = (cnn.Conv("C1", 1, 2, 3, 1), cnn.Pool("S2", 2), cnn.Dense("FC", 8, 3))


def _tiny():
    mapping = build_mapping(TINY, placement={"C1": (0,), "FC": (1,)})
    img = np.zeros((1, 4, 4), dtype=np.uint8)
    img[0, 0, 0] = 3          # popcount 2, read by 4 positions (pad 1)
    img[0, 1, 1] = 255        # popcount 8, read by 9 positions
    s2 = np.zeros((1, 2, 2, 2), dtype=np.uint8)
    s2[0, 0, 0, 0] = 1
    s2[0, 1, 1, 1] = 7        # FC inputs: popcounts 1 + 3
    acts = {"C1": np.zeros((1, 4, 4, 2), dtype=np.uint8), "S2": s2, "FC": np.zeros((1, 3))}
    return inference_activity(acts, img, TINY, mapping)


def test_tiny_network_by_hand():
    a = _tiny()
    c1 = activity.image_activity(a, 0, "C1")
    # 16 positions x 1 group x 8 slots; group on rows 0..3 (one round of 32 ADCs per slot)
    assert c1 == dict(read_slots=128, bl_pulses=2 * 4 + 8 * 9, wl_selections=128 * 128, sl_selections=16 * 8 * 4,
                      sh_samples=128 * 128, mux_switches=16 * 8 * 32, adc_conversions=16 * 8 * 32,
                      shift_adds=16 * 8 * 4, diff_subs=32, acc_adds=32,
                      # in-bounds taps: (3 + 4 + 3) rows x (3 + 4 + 3) columns; + 24 pooling reads
                      fm_reads=100 + 24, fm_writes=32, requant_ops=32, pool_ops=32 - 8, softmax_ops=0,
                      set_pulses=0, reset_pulses=0, verify_reads=0, link_bytes=0)
    fc = activity.image_activity(a, 0, "FC")
    assert fc == dict(read_slots=8, bl_pulses=4, wl_selections=1024, sl_selections=48, sh_samples=1024,
                      mux_switches=256, adc_conversions=256, shift_adds=48, diff_subs=3, acc_adds=3, fm_reads=8,
                      fm_writes=0, requant_ops=0, pool_ops=0, softmax_ops=3, set_pulses=0, reset_pulses=0,
                      verify_reads=0, link_bytes=0)
    tot = activity.image_activity(a, 0)
    assert tot == {k: c1[k] + fc[k] for k in ACTIVITY_KEYS}


@pytest.mark.parametrize("row_base,n_out,want", [(0, 8, 1), (16, 12, 2), (30, 1, 1), (31, 1, 2), (0, 64, 4),
                                                  (100, 10, 1), (0, 0, 0)])
def test_conversion_rounds(row_base, n_out, want):
    assert conversion_rounds(row_base, n_out) == want


def _direct_bl_pulses(layers, mapping, maps, L):
    """Every group patch of every position, bit-serial encoded, its ones counted."""
    x = maps[L.name]
    h, w, _ = x.shape
    ho, wo = (h + 2 * L.pad - L.k + 1, w + 2 * L.pad - L.k + 1) if isinstance(L, cnn.Conv) else (1, 1)
    n = 0
    for g in mapping.groups[L.name]:
        for y in range(ho):
            for z in range(wo):
                n += int(bitserial_encode(group_patch(x, L, g, y, z), 8).sum())
    return n


def test_yao_bl_pulses_equal_direct_count():
    rng = np.random.default_rng(5)
    imgs = rng.integers(0, 256, size=(2, 28, 28), dtype=np.uint8)
    imgs[1] = 0
    imgs[1, 0, :] = 255                          # an edge row, all bits set
    acts = {"C1": rng.integers(0, 256, size=(2, 26, 26, 8)).astype(np.uint8),
            "S2": rng.integers(0, 256, size=(2, 8, 8, 8)).astype(np.uint8),
            "C3": rng.integers(0, 256, size=(2, 8, 8, 12)).astype(np.uint8),
            "S4": rng.integers(0, 256, size=(2, 4, 4, 12)).astype(np.uint8)}
    acts["S4"][1] = 255
    mapping = build_mapping()
    a = inference_activity(acts, imgs, cnn.YAO2020, mapping)
    by = {L.name: L for L in cnn.YAO2020}
    for i in range(2):
        maps = {"C1": imgs[i][..., None], "C3": acts["S2"][i], "FC": acts["S4"][i]}
        for name in ("C1", "C3", "FC"):
            assert a[name]["bl_pulses"][i] == _direct_bl_pulses(cnn.YAO2020, mapping, maps, by[name]), (i, name)


def test_yao_fixed_counts():
    """The Yao CNN's data-independent counts, from the mapping table by hand (golden/mapping.py)."""
    z = np.zeros((1, 28, 28), dtype=np.uint8)
    acts = {n: np.zeros((1,) + s, dtype=np.uint8) for n, s in
            zip(["C1", "S2", "C3", "S4", "FC"], cnn.shapes())}
    t = activity.image_activity(inference_activity(acts, z), 0)
    # slot reads: C1 676 x 1 x 8, C3 64 x 8 x 8, FC 12 x 8 (golden.perf slot_reads)
    assert t["read_slots"] == 5408 + 4096 + 96
    # rounds per slot (MUX selects = 32-SL blocks touched): C1 rows 0..15: 1; C3 PE1 rows 16..39,
    # 40..63, 64..87, 88..111: 2,1,1,2 and PE3 0..23, 24..47, 48..71, 72..95: 1,2,2,1; FC (20 rows
    # from 0, 20, .., 100 on each PE): 1,2,1,2,2,1
    rounds = 676 * 8 * 1 + 64 * 8 * 12 + 8 * 2 * 9
    assert t["adc_conversions"] == rounds * 32
    assert t["bl_pulses"] == 0 and t["softmax_ops"] == 10
    # C1: 26x26x8 requants, 24x24x8 writes, pooled 8x8x8; C3 8x8x12, pooled 4x4x12
    assert t["requant_ops"] == 5408 + 768
    assert t["fm_writes"] == 4608 + 768
    assert t["pool_ops"] == 4608 - 512 + 768 - 192
    # gather: C1 676 x 9 (valid conv); C3 pad 1 on 8x8: (7 + 8 + 7)^2 taps x 8 channels; FC 192
    assert t["fm_reads"] == 676 * 9 + 22 * 22 * 8 + 192 + t["pool_ops"]
    assert t["diff_subs"] == t["acc_adds"] == 676 * 8 + 64 * 8 * 12 + 12 * 10


def test_programming_activity():
    before = {"pulses": 5, "set_pulses": 2, "reset_pulses": 3, "verify_reads": 10}
    after = {"pulses": 12, "set_pulses": 6, "reset_pulses": 6, "verify_reads": 19}
    c = programming_activity(before, after)
    assert (c["set_pulses"], c["reset_pulses"], c["verify_reads"]) == (4, 3, 9)
    assert set(c) == set(ACTIVITY_KEYS) and c["bl_pulses"] == 0


def test_crossbar_counts_pulses_by_direction():
    from golden.crossbar import Crossbar
    from golden.write_verify import level_target_code
    xb = Crossbar("yao2020", seed=1)
    before = dict(xb.counters)
    for row, lv in ((0, 7), (1, 0), (2, 3)):
        xb.program_cell(0, row, 0, level_target_code(lv))
    xb.open_loop(0, 3, 0, 1, 2)                        # 2 RESET pulses (golden.devices RESET = 1)
    c = programming_activity(before, xb.counters)
    assert c["set_pulses"] + c["reset_pulses"] == xb.counters["pulses"] - before["pulses"]
    assert c["reset_pulses"] >= 2 and c["verify_reads"] == xb.counters["verify_reads"] - before["verify_reads"]


def test_from_counters_and_wrap():
    from golden.activity import counter_diff, from_counters
    raw = {"slot_reads": 3, "conv_rounds": 5, "bl_pulses": 7, "sl_selections": 24, "diff_subs": 12, "fm_reads": 9,
           "fm_writes": 4, "requant_ops": 6, "pool_ops": 2, "softmax_ops": 10, "set_pulses": 1, "reset_pulses": 2,
           "verify_reads": 4}
    c = from_counters(raw, n_rows=128, n_adc=32)
    assert (c["read_slots"], c["wl_selections"], c["sh_samples"]) == (3, 384, 384)
    assert (c["mux_switches"], c["adc_conversions"], c["shift_adds"], c["acc_adds"]) == (160, 160, 24, 12)
    assert c["bl_pulses"] == 7 and c["link_bytes"] == 0 and set(c) == set(ACTIVITY_KEYS)
    assert counter_diff({"bl_pulses": 5}, {"bl_pulses": 0xFFFFFFFE}) == {"bl_pulses": 7}
