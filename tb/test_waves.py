"""Waveforms (`make sim WAVES=1`, `mcnn sim --waves`) on a fresh machine: a small accumulator built
with tracing through the harness, its waveform read back.

The harness writes FST where Verilator's FST writer can be built (lz4.h and liblz4 present), else
VCD, which needs nothing. The test reads a VCD with its own small parser (an FST with `fst2vcd`
where GTKWave is installed) and checks the accumulator's values in the file against the sums
of the random increments the cocotb side drove.
"""
import os
import random
import shutil
import subprocess

import pytest
from amaranth.hdl import Module
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from tb import harness

try:
    import cocotb
except ImportError:
    cocotb = None

N_INC = 40


class Acc(wiring.Component):
    """acc <= acc + inc every clock (16 bits)."""
    inc: In(8)
    acc: Out(16)

    def elaborate(self, platform):
        m = Module()
        m.d.sync += self.acc.eq(self.acc + self.inc)
        return m


if cocotb is not None:
    from cocotb.triggers import RisingEdge

    @cocotb.test()
    async def drive(dut):
        p = harness.params()
        dut.inc.value = 0
        await harness.start_clock_and_reset(dut)
        for v in p["incs"]:
            dut.inc.value = v
            await RisingEdge(dut.clk)
        dut.inc.value = 0
        await harness.idle_cycles(dut.clk, 3)
        assert int(dut.acc.value) == sum(p["incs"]) % 65536


def vcd_changes(text: str, name: str) -> list[tuple[int, int]]:
    """(time, value) of every change of the first variable called `name` in a VCD (IEEE 1364 §18)."""
    head, _, body = text.partition("$enddefinitions")
    ident = None
    for decl in head.split("$var")[1:]:                # $var <type> <width> <id> <name> [range] $end
        f = decl.split()
        if f[3] == name:
            ident = f[2]
            break
    assert ident is not None, f"no variable {name!r} in the waveform"
    t, out = 0, []
    tokens = iter(body.split()[1:])                    # after $enddefinitions' $end
    for tok in tokens:
        if tok.startswith("#"):
            t = int(tok[1:])
        elif tok[0] in "bB":
            val, ref = tok[1:], next(tokens)
            if ref == ident:
                out.append((t, int(val.replace("x", "0").replace("z", "0"), 2)))
        elif tok[0] in "01xz" and tok[1:] == ident:
            out.append((t, int(tok[0]) if tok[0] in "01" else 0))
    return out


def test_waveform_read_back():
    rng = random.Random(20)
    incs = [rng.choice([0, rng.randrange(1, 256)]) for _ in range(N_INC)]
    fmt = harness.wave_format()
    for old in harness.SIM_BUILD.glob(f"waves_acc-*/run-*-{os.getpid()}/dump.*"):
        old.unlink()                                   # only this run's file may be read below
    harness.run_block(Acc(), "waves_acc", "tb.test_waves", {"incs": incs}, waves=True)
    (path,) = harness.SIM_BUILD.glob(f"waves_acc-*/run-*-{os.getpid()}/dump.{fmt}")
    if fmt == "fst":
        if not shutil.which("fst2vcd"):
            pytest.skip("FST written; reading it back needs fst2vcd (GTKWave)")
        text = subprocess.run(["fst2vcd", str(path)], capture_output=True, text=True, check=True).stdout
    else:
        text = path.read_text()
    values = [v for _, v in vcd_changes(text, "acc")]
    expected, s = [0], 0                              # the sums, each change once (an increment 0 changes nothing)
    for v in incs:
        if v:
            s += v
            expected.append(s % 65536)
    assert [v for i, v in enumerate(values) if i == 0 or v != values[i - 1]] == expected
    times = [t for t, _ in vcd_changes(text, "clk")]
    assert len(times) >= 2 * N_INC, "the clock's edges are in the waveform"
