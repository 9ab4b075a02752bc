"""Weight transfer by write-verify: convergence, failure reporting, the plan of cells."""
import numpy as np
import pytest

from golden import weights
from golden.crossbar import Crossbar
from golden.mapping import build_mapping
from golden.replicate import group_mappings
from golden.transfer import format_failures, plan, transfer
from golden.write_verify import level_target_code


@pytest.fixture(scope="module")
def w():
    return weights.load()


def test_write_verify_converges(w):
    xb = Crossbar("yao2020", seed=11, p_stuck_on=0.0, p_stuck_off=0.0)
    rep = transfer(xb, build_mapping(), w.int_w)
    assert rep.ok.all() and rep.failures == []
    assert np.all(np.abs(rep.final_code - rep.target_code) <= xb.margin_code)
    assert np.array_equal(rep.target_code, [level_target_code(int(k)) for k in rep.plan.level])
    s = rep.summary()
    assert s["cells"] == 16 * 9 + 192 * 9 + 240 * 16 and s["failed"] == 0
    assert 1 < s["pulses_mean"] < 30 and s["pulses_max"] < 100
    assert sum(s["pulses_hist"]) == s["cells"]
    assert set(s["weight_error"]) == {"C1", "C3", "FC"}
    assert s["weight_error"]["C1"]["n"] == 72 and s["weight_error"]["C3"]["n"] == 864
    assert s["weight_error"]["FC"]["n"] == 1920
    for k in ("C1", "C3", "FC"):
        assert 90 < s["device_error"][k]["sd_na"] < 130            # N(0, 108 nA) per device
        assert 120 < s["weight_error"][k]["sd_na"] < 190           # ~ sqrt(2) x 108 nA per weight


def test_every_failure_is_listed(w):
    xb = Crossbar("yao2020", seed=5, p_stuck_on=0.01, p_stuck_off=0.01, max_pulses=200)
    rep = transfer(xb, build_mapping(), w.int_w)
    failed = {(f["pe"], f["row"], f["bl"]) for f in rep.failures}
    assert len(failed) == len(rep.failures) == int((~rep.ok).sum()) > 0
    p = rep.plan
    for i in np.flatnonzero(~rep.ok):
        assert (p.pe[i], p.row[i], p.bl[i]) in failed
        assert rep.pulses[i] == 200
    for f in rep.failures:   # only stuck cells fail here, and they say so
        assert xb.stuck[f["pe"], f["row"], f["bl"]] > 0 and f["state"].startswith("stuck")
        assert abs(f["final_code"] - f["target_code"]) > xb.margin_code
    txt = format_failures(rep.failures)
    assert txt.startswith(f"{len(rep.failures)} cell(s) failed to verify")
    assert all(f"PE{f['pe']} row {f['row']} BL {f['bl']} " in txt for f in rep.failures)
    assert rep.summary()["failed"] == len(rep.failures)


def test_pulse_limit_and_margin_are_configurable(w):
    xb = Crossbar("yao2020", seed=1, p_stuck_on=0.0, p_stuck_off=0.0, margin_na=0, max_pulses=3)
    rep = transfer(xb, build_mapping(), w.int_w)
    assert rep.pulses.max() == 3 and len(rep.failures) == int((~rep.ok).sum()) > 100
    assert all(f["state"] == "ok" and f["pulses"] == 3 for f in rep.failures)


def test_plan_shares_fc_cells_between_groups(w):
    maps = group_mappings()
    p = plan(maps, w.int_w)
    cells = set(zip(p.pe.tolist(), p.row.tolist(), p.bl.tolist()))
    assert len(cells) == len(p.pe) == 3 * (16 * 9 + 192 * 9) + 240 * 16
    assert set(p.weights) == {"G1/C1", "G1/C3", "G2/C1", "G2/C3", "G3/C1", "G3/C3", "FC"}
    assert list(zip(p.pe, p.row, p.bl)) == sorted(zip(p.pe, p.row, p.bl))   # row by row
    same = {"A": build_mapping(), "B": build_mapping()}
    assert len(plan(same, w.int_w).pe) == 16 * 9 + 192 * 9 + 240 * 16   # identical targets: programmed once
    with pytest.raises(ValueError, match="mapped twice"):
        plan({"A": maps["G1"], "B": build_mapping(placement={"C1": (1,), "C3": (1, 3), "FC": (6, 4)})}, w.int_w)
