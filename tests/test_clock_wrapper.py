"""tb/harness.py clock_wrapper: the HDL-clocked top of the co-simulation builds.

Its speed rests on what Verilator may assume: the top has no ports (nothing copied in and out at
every eval), inputs are registers cocotb writes (public_flat_rw) and outputs wires cocotb only
reads (public_flat_rd), so the logic reading an output stays at clock edges. Checked on the
Verilog of a small Amaranth component with random port widths; no simulator needed.
"""
import random
import re

from amaranth.hdl import Module
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from tb import harness


def _component(widths):
    class C(wiring.Component):
        def __init__(self):
            super().__init__({**{f"i{k}": In(w) for k, w in enumerate(widths)},
                              **{f"o{k}": Out(w) for k, w in enumerate(widths)}})

        def elaborate(self, platform):
            m = Module()
            for k in range(len(widths)):
                m.d.sync += getattr(self, f"o{k}").eq(getattr(self, f"i{k}"))
            return m
    return C()


def test_wrapper_has_no_ports_inputs_writable_outputs_read_only():
    rng = random.Random(5)
    widths = [1, 7, 32, 33, 200] + [rng.randint(1, 300) for _ in range(5)]
    src = harness.to_verilog(_component(widths), "dut_x")
    top, text = harness.clock_wrapper(src, "dut_x", 10)
    assert top == "dut_x_tb"
    assert re.search(r"^module dut_x_tb;$", text, re.M)                  # no port list
    assert "input" not in text and "output" not in text
    for k, w in enumerate(widths):
        rng_txt = rf"\[{w - 1}:0\]\s*" if w > 1 else ""
        assert re.search(rf"^\s*reg\s*{rng_txt}i{k} /\*verilator public_flat_rw\*/ = 0;$", text, re.M), k
        assert re.search(rf"^\s*wire\s*{rng_txt}o{k} /\*verilator public_flat_rd\*/;$", text, re.M), k
        assert f".i{k}(i{k})" in text and f".o{k}(o{k})" in text
    assert re.search(r"reg clk /\*verilator public_flat_rd\*/ = 1'b0;", text)
    assert "always #5 clk = ~clk;" in text and "wire rst = 1'b0;" in text
    assert ".clk(clk)" in text and ".rst(rst)" in text
