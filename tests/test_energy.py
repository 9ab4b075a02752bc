"""golden/energy.py: Yao 2020 ED Table 2 reproduced from ED Table 1, per-operation costs against
hand-computed values, the array energy from the conductances a read drives, and the report on a
network other than the Yao CNN (layer names come from the mapping, not from the code)."""
import numpy as np
import pytest

from golden import cnn, energy
from golden.analog import IdealArray
from golden.energy import ED_TABLE1, ED_TABLE1_SUM, MACRO_BLOCKS, PERIPHERY_BLOCKS
from golden.mapping import build_mapping, conductance_levels
from golden.model import QuantConfig

TINY = (cnn.Conv("K1", 1, 2, 3, 1), cnn.Pool("P1", 2), cnn.Dense("OUT", 8, 3))


def sig4(x):
    return float(f"{x:.4g}")


def test_ed_table2_from_ed_table1():
    t = energy.ed_table2()
    assert sig4(t["gops"]) == 81.92
    assert sig4(t["power_mw"]) == 7.438
    assert sig4(t["gops_per_w"]) == sig4(11014) and round(t["gops_per_w"]) == 11014
    assert sig4(t["gops_per_mm2"]) == 1164
    assert round(t["area_mm2"], 4) == 0.0704
    # the table's Sum row
    assert sum(v[0] for v in ED_TABLE1.values()) == pytest.approx(ED_TABLE1_SUM[0], abs=1e-6)
    assert sum(v[2] for v in ED_TABLE1.values()) == pytest.approx(ED_TABLE1_SUM[1], abs=1e-9)


def test_per_operation_costs_rebuild_ed_table1():
    """One 1-bit read of the 128x128 macro (every input 1) through the per-operation costs gives back
    every block of ED Table 1, and so ED Table 2 again; the array with Yao's 22.59 pJ as a drive."""
    drive = 22.59 / energy.YAO2020.pj["array_per_us_pulse"]
    e = energy.layer_energy(energy.macro_read_activity(), drive)
    for blk in MACRO_BLOCKS:
        assert e[blk] == pytest.approx(ED_TABLE1[blk][2], rel=1e-12), blk
    assert sum(e[b] for b in MACRO_BLOCKS) == pytest.approx(371.89)
    assert all(e[b] == 0 for b in PERIPHERY_BLOCKS)
    gops = 128 * 128 * 2 / (8 * 50e-9) / 1e9
    assert round(gops / (sum(e[b] for b in MACRO_BLOCKS) / 50e-9 * 1e-12)) == 11014
    # 22.59 pJ = 0.04 V^2 x G x 50 ns -> G = 11.295 mS over the 16,384 cells
    assert drive == pytest.approx(11295.0)


def test_hand_values():
    p = energy.YAO2020.pj
    assert p["adc"] == 2.55
    assert p["set_pulse"] == pytest.approx(6.0)          # 2.0 V x 60 uA x 50 ns
    assert p["reset_pulse"] == pytest.approx(4.05)       # 1.8 V x 45 uA x 50 ns
    assert p["array_per_us_pulse"] == pytest.approx(0.002)   # 0.2^2 V^2 x 1 uS x 50 ns
    e = energy.programming_energy({"set_pulses": 3, "reset_pulses": 2, "verify_reads": 0})
    assert e == pytest.approx({"set": 18.0, "reset": 8.1, "verify": 0.0, "total": 26.1})
    # verify read: 0.2 V x 2.25 uA x 50 ns + one line of the macro periphery + one conversion
    line = (1.99 + 1.99 + 0.11 + 0.13 + 2.37 + 0.05) / 128
    assert energy.verify_read_pj() == pytest.approx(0.0225 + line + 2.55)


def test_drive_meter_counts_the_conductance_pulsed():
    levels = np.zeros((1, 4, 2), dtype=np.int8)     # 4 rows x 2 BLs at 2.5 uS
    levels[0, 1, 1] = 7                             # one cell at 20 uS: column 1 = 27.5 uS
    m = build_mapping((cnn.Dense("D", 2, 1),), placement={"D": (0,)}, n_pe=1, n_rows=4, n_bl=2)
    col = energy.column_conductance_us(energy.ideal_conductance_us(levels))
    assert col.tolist() == [[10.0, 27.5]]
    meter = energy.DriveMeter(IdealArray(levels), m, col)
    meter.read(0, np.array([[1, 0], [1, 1], [0, 1]], dtype=np.uint8), slice(0, 2))
    assert meter.drive_us == {"D": pytest.approx(10 + 37.5 + 27.5)}
    # from pulse counts alone: 4 pulses x the mean column (10 + 27.5) / 2
    assert energy.mean_pulse_conductance_us(m, col) == {"D": pytest.approx(18.75)}
    assert energy.drive_from_pulses({"D": {"bl_pulses": 4}}, m, col) == {"D": pytest.approx(75.0)}
    e = energy.layer_energy({}, meter.drive_us["D"])
    assert e["array"] == pytest.approx(75e-6 * 0.04 * 50e-9 * 1e12)     # V^2 G t


def test_report_on_hand_made_activity():
    """Two layers of a small network: every block, the two totals, the share, GOP/s/W by hand."""
    m = build_mapping(TINY, placement={"K1": (0,), "OUT": (1,)})
    act = {"K1": {"adc_conversions": np.array([10, 30]), "requant_ops": np.array([2, 2]), "bl_pulses": 4},
           "OUT": {"shift_adds": 128, "softmax_ops": 3, "fm_reads": 8},
           "total": {"adc_conversions": 999}}
    r = energy.energy_report(act, m, TINY, drive_us={"K1": 100.0, "OUT": 0.0}, input_shape=(4, 4, 1))
    bl = r["energy_breakdown"]["by_layer"]
    assert set(bl) == {"K1", "OUT"}
    assert bl["K1"]["adc"] == pytest.approx(20 * 2.55)                  # mean of 10 and 30 conversions
    assert bl["K1"]["array"] == pytest.approx(0.2)
    assert bl["K1"]["bl_driver"] == pytest.approx(4 * 1.99 / 128)
    assert bl["K1"]["requant"] == pytest.approx(2 * (3.1 + 0.1))
    assert bl["OUT"]["shift_add"] == pytest.approx(16.26)
    assert bl["OUT"]["softmax"] == pytest.approx(3 * (10 * 16 / 64 + 0.1 + 3.1))
    assert bl["OUT"]["fm_ram"] == pytest.approx(8 * 10 / 8)
    yao = 51 + 0.2 + 4 * 1.99 / 128 + 16.26
    allp = yao + 6.4 + 17.1 + 10
    assert r["energy_pj_per_image"] == pytest.approx({"yao": yao, "all": allp})
    assert r["periphery_share"] == pytest.approx((allp - yao) / allp)
    ops = 2 * (4 * 4 * 2 * 9 + 8 * 3)                                   # 624 operations per image
    assert r["ops_per_image"] == ops
    assert r["gops_per_w"]["all"] == pytest.approx(ops / (allp * 1e-12) / 1e9)
    assert r["gops_per_w"]["v100"] == 100 and r["gops_per_w"]["yao2020_macro"] == 11014
    with pytest.raises(ValueError, match="drive_us"):
        energy.energy_report(act, m, TINY)
    # counter totals over 4 images -> per image
    assert energy.per_image({"K1": {"adc_conversions": 80, "bl_pulses": 6}}, 4) == {
        "K1": {"adc_conversions": 20.0, "bl_pulses": 1.5}}
    with pytest.raises(ValueError, match="images must be >= 1"):
        energy.per_image({}, 0)


def test_pe_area_scales_the_macro():
    m = build_mapping()                      # Yao mapping: PEs 0, 2, 4, 6
    per_pe = (1107.56 + 2104.36) * 16 / 128 + 63801.94 - 1107.56 - 2104.36
    assert energy.pe_area_mm2(m) == pytest.approx(4 * per_pe / 0.9069 * 1e-6)


def test_estimate_from_pulses_is_exact_for_uniform_columns():
    """Any network: a random small CNN through measure_inference; with every weight equal, every
    column drives the same conductance, so bl_pulses x mean column = the metered drive."""
    from golden.energy_eval import measure_inference
    rng = np.random.default_rng(1)
    m = build_mapping(TINY, placement={"K1": (0,), "OUT": (1,)})
    q = QuantConfig(w_scale={"K1": 1.0, "OUT": 1.0}, requant={"K1": (1 << 12, 14)}, logit_scale=0.01)
    int_w = {"K1": np.full((2, 1, 3, 3), 3, dtype=np.int64), "OUT": np.full((8, 3), -2, dtype=np.int64)}
    x = rng.integers(0, 256, (5, 4, 4), dtype=np.uint8)
    res, act, drive = measure_inference(int_w, q, x, TINY, m)
    assert set(drive) == {"K1", "OUT"} and drive["K1"] > 0
    col = energy.column_conductance_us(energy.ideal_conductance_us(conductance_levels(TINY, int_w, m)))
    est = energy.drive_from_pulses(act, m, col)
    assert est == pytest.approx(drive, rel=1e-9)
    r = energy.energy_report(act, m, TINY, drive_us=drive, input_shape=(4, 4, 1))
    # sim's path: counts only, the board's conductances (here the ideal ones) -> the same report
    r2 = energy.energy_report(act, m, TINY, g_us=energy.ideal_conductance_us(conductance_levels(TINY, int_w, m)),
                              input_shape=(4, 4, 1))
    assert r2["energy_pj_per_image"] == pytest.approx(r["energy_pj_per_image"], rel=1e-9)
    assert set(r["energy_breakdown"]["by_layer"]) == {"K1", "OUT"}
    assert r["energy_pj_per_image"]["all"] > r["energy_pj_per_image"]["yao"] > 0
