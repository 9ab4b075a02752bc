"""sw/timing_estimate.py on small hand-made synth_ecp5 netlists, arrival times worked out by hand."""
import pytest

from sw import timing_estimate as te


def cell(typ, ins, outs, params=None):
    conns = {**{p: b for p, b in ins.items()}, **{p: b for p, b in outs.items()}}
    dirs = {**{p: "input" for p in ins}, **{p: "output" for p in outs}}
    return {"type": typ, "connections": conns, "port_directions": dirs, "parameters": params or {}}


def ff(d, q):
    return cell("TRELLIS_FF", {"DI": [d], "CLK": [1]}, {"Q": [q]})


def netlist(cells):
    return te.Netlist({"modules": {"top": {"attributes": {"top": 1}, "cells": cells}}})


def arrivals(nl):
    return {n: round(a, 3) for a, n, _, _ in nl.endpoints()}


def test_lut_chain_fanout_carry_and_bram():
    cells = {
        # a.q -> two LUTs in series -> b: 0.52 + 2 * (0.85 + 0.24) + 0.85 + 0.1
        "a": ff(101, 10), "l1": cell("LUT4", {"A": [10]}, {"Z": [11]}),
        "l2": cell("LUT4", {"A": [11]}, {"Z": [12]}), "b": ff(12, 13),
        # c.q drives 4 sinks (one more doubling than 2: +2 * 0.12 ns on that net)
        "c": ff(102, 20), **{f"s{i}": ff(20, 30 + i) for i in range(4)},
        # carry: d.q -> CCU2C A0 -> COUT -> next CCU2C CIN -> S0 -> e: 0.52 + 0.85 + 0.45 + 0.3 + 0.85 + 0.1
        "d": ff(103, 40), "k1": cell("CCU2C", {"A0": [40]}, {"COUT": [41]}),
        "k2": cell("CCU2C", {"CIN": [41]}, {"S0": [42]}), "e": ff(42, 43),
        # block RAM without output register -> f: 5.7 + 0.85 + 0.1
        "ram": cell("DP16KD", {"CLKA": [1]}, {"DOA0": [50]}, {"REGMODE_A": "NOREG"}), "f": ff(50, 51),
    }
    a = arrivals(netlist(cells))
    assert a["b"] == pytest.approx(3.65)
    assert a["s0"] == pytest.approx(0.52 + 0.85 + 0.24 + 0.1)
    assert a["e"] == pytest.approx(3.07)
    assert a["f"] == pytest.approx(6.65)
    assert a["a"] == pytest.approx(0.85 + 0.1)          # driven by nothing (a constant / input)


def test_summary_groups_and_worst_path():
    cells = {"a": ff(100, 10), "l1": cell("LUT4", {"A": [10]}, {"Z": [11]}),
             "l2": cell("LUT4", {"A": [11]}, {"Z": [12]}), "blk.sub.b_TRELLIS_FF_Q_3": ff(12, 13)}
    s = te.summary(netlist(cells), budget=3.0)
    assert s["over_budget"] == 1 and s["worst_ns"] == pytest.approx(3.65)
    (key, g), = s["groups"].items()
    assert key == "a -> blk.sub.b" and g["endpoints"] == 1
    assert [c for _, _, c in g["path"]] == ["a", "l1", "l2"]
    assert s["blocks"] == {"blk.sub": 1}


def test_missing_netlist_is_a_clear_error(tmp_path, capsys):
    assert te.main([str(tmp_path / "none.json")]) == 2
    assert "no such netlist" in capsys.readouterr().err


def test_two_tops_need_a_name():
    doc = {"modules": {"x": {"attributes": {"top": 1}, "cells": {}}, "y": {"attributes": {"top": 1}, "cells": {}}}}
    with pytest.raises(ValueError, match="one top module"):
        te.Netlist(doc)


def _report():
    """A hand-made nextpnr --detailed-timing-report: arrivals (min, max) per register input."""
    ev = "posedge clk"
    return {"detailed_net_timings": [
        {"driver": "ctrl.lane0.a_TRELLIS_FF_Q", "port": "Q", "net": "ctrl.lane0.a", "event": ev,
         "endpoints": [{"cell": "ctrl.lane0.b_TRELLIS_FF_Q_3", "port": "CE", "event": ev, "delay": [9.0, 10.5]},
                       {"cell": "ctrl.lane0.b_TRELLIS_FF_Q_4", "port": "CE", "event": ev, "delay": [8.0, 10.2]},
                       {"cell": "phy.c_TRELLIS_FF_Q", "port": "M", "event": ev, "delay": [1.0, 2.0]}]},
        {"driver": "phy.r_TRELLIS_FF_Q", "port": "Q", "net": "phy.r", "event": ev,
         "endpoints": [{"cell": "phy.c_TRELLIS_FF_Q", "port": "LSR", "event": ev, "delay": [9.5, 9.7]},
                       {"cell": "ctrl.lane0.b_TRELLIS_FF_Q_3", "port": "CE", "event": ev, "delay": [3.0, 4.0]}]},
    ]}


def test_routed_summary_counts_worst_arrival_per_pin():
    s = te.routed_summary(_report(), 10.0)
    # 4 (cell, pin) endpoints; the LSR one is 9.7 + its 0.42 ns setup = 10.12 > 10
    assert s["endpoints"] == 4 and s["over_budget"] == 3 and s["worst_ns"] == 10.5
    assert s["blocks"] == {"ctrl.lane0": 2, "phy": 1}
    g = s["groups"]
    assert g["ctrl.lane0.b.CE <- ctrl.lane0.a"] == {"ns": 10.5, "endpoints": 2}
    assert g["phy.c.LSR <- phy.r"] == {"ns": 10.12, "endpoints": 1}
    assert list(g)[0] == "ctrl.lane0.b.CE <- ctrl.lane0.a"      # worst first
    assert te.routed_summary(_report(), 11.0)["over_budget"] == 0


def test_routed_needs_the_detailed_report(tmp_path, capsys):
    f = tmp_path / "report.json"
    f.write_text('{"fmax": {}}')
    assert te.main(["--routed", str(f)]) == 2
    assert "--detailed-timing-report" in capsys.readouterr().err
    assert te.main(["--routed", str(tmp_path / "none.json")]) == 2
