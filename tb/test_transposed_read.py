"""Transposed read (rtl/transposed_read.py) on one behavioural PE (tb/cosim/hdl/pe_model.v, its
BL-side ADCs) against golden.transposed_read.transposed_sums: random error vectors on random
groups (any row base, 1..64 outputs, garbage beyond n_out), edge cases (all zero, max magnitude,
all negative, BL saturation, a null group), on a board of arbitrary conductances (rounding of
every BL code), with idle gaps on the input stream and back-pressure on the output stream."""
import random

import numpy as np
import pytest
from amaranth.hdl import ClockSignal, Instance, Module, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from tb import harness

try:
    import cocotb
except ImportError:
    cocotb = None


class TransposedTop(wiring.Component):
    def __init__(self, unit, bl_shift):
        self.unit, self.bl_shift = unit, bl_shift
        sig = unit.signature.members
        super().__init__({"cmd": sig["cmd"], "res": sig["res"], "t_slots": Out(32), "busy": Out(1),
                          "cfg_we": In(1), "cfg_addr": In(16), "cfg_data": In(18)})

    def elaborate(self, platform):
        m = Module()
        m.submodules.unit = u = self.unit
        wiring.connect(m, wiring.flipped(self.cmd), u.cmd)
        wiring.connect(m, u.res, wiring.flipped(self.res))
        m.d.comb += [self.t_slots.eq(u.t_slots), self.busy.eq(u.busy)]
        pe = u.pe
        m.submodules.pe = Instance(
            "pe_model", p_ROWS=u.n_rows, p_BLS=u.n_bl, p_BL_CODE_BITS=u.bl_code_bits,
            i_clk=ClockSignal(), i_bl=0, i_sh_sample=0, i_sh_bank=0, i_adc_start=0, i_adc_bank=0, i_adc_sel=0,
            i_adc_shift=0, o_adc_valid=Signal(), o_adc_codes=Signal(32 * 8),
            i_sl_drive=pe.sl_drive, i_bl_sample=pe.bl_sample, i_bl_shift=self.bl_shift,
            o_bl_valid=pe.bl_valid, o_bl_codes=pe.bl_codes,
            i_cfg_we=self.cfg_we, i_cfg_addr=self.cfg_addr, i_cfg_data=self.cfg_data)
        return m


def _cases(rng, n, max_out, bits):
    """n groups: (row_base, n_out, err of max_out values); the first ones are the edge cases."""
    lim = (1 << bits) - 1
    out = []
    for t in range(n):
        n_out = int(rng.integers(1, max_out + 1)) if t % 3 else int(rng.integers(1, 13))
        err = rng.integers(-lim, lim + 1, max_out)          # garbage beyond n_out: must be ignored
        kind = t if t < 7 else int(rng.integers(7, 12))
        if kind == 0:
            err[:n_out] = 0                                  # all zero
        elif kind == 1:
            err[:n_out] = lim                                # max magnitude
        elif kind == 2:
            err[:n_out] = -rng.integers(1, lim + 1, n_out)   # all negative
        elif kind in (3, 4):
            n_out = max_out                                  # BL saturation: 64 cells per slot
            err[:] = lim if kind == 3 else -lim
        elif kind == 5:
            n_out = 0                                        # null group: T = 0
        elif kind == 6:
            err[:n_out] = rng.choice([-lim, -1, 0, 1, lim], n_out)
        elif kind == 7:
            err[:n_out] = rng.integers(-3, 4, n_out)          # small errors: high slots empty
        row_base = int(rng.integers(0, 128 - 2 * n_out + 1))
        out.append((row_base, n_out, err))
    return out


if cocotb is not None:
    @cocotb.test()
    async def groups_against_golden(dut):
        from cocotb.triggers import RisingEdge

        from golden.crossbar import Crossbar
        from golden.mapping import ReadGroup
        from golden.transposed_read import BL_ADC, ERR_BITS, transposed_sums
        from rtl.transposed_read import TransposedRead
        from tb.cosim.sim_top import load_cells
        p = harness.params()
        unit = TransposedRead()
        rng = np.random.default_rng(p["seed"])
        xb = Crossbar("ideal", seed=p["seed"])
        xb.set_conductance(rng.uniform(2.0, 20.0, xb.shape))   # arbitrary currents: every rounding
        await harness.start_clock_and_reset(dut)
        await load_cells(dut, xb.i_units()[:1], dut.clk)
        cases = _cases(rng, p["groups"], unit.max_out, ERR_BITS)
        cmds, expected = [], []
        for t, (row_base, n_out, err) in enumerate(cases):
            g = ReadGroup("L", t, 0, tuple(range(unit.n_bl)), row_base, n_out)
            expected.append([int(v) for v in transposed_sums(xb, g, err[None, :n_out], ERR_BITS, BL_ADC)[0]])
            cmds.append({"err": [int(v) for v in err], "row_base": row_base, "n_out": n_out, "tag": t & 0xFF})
        src = harness.StreamSource(dut, "cmd", dut.clk, unit.cmd_layout, idle=p["idle"], rng=random.Random(3))
        sink = harness.StreamSink(dut, "res", dut.clk, backpressure=p["bp"], rng=random.Random(4))
        cocotb.start_soon(sink.run())
        await src.send(cmds)
        await sink.wait_for(len(cmds), timeout_cycles=100 * len(cmds) + 1000)
        for _ in range(50):
            await RisingEdge(dut.clk)
        assert len(sink.items) == len(cmds), (len(sink.items), len(cmds))
        for i, raw in enumerate(sink.items):
            r = unit.res_layout.from_bits(raw)
            got = [int(r.t[j]) for j in range(unit.n_bl)]
            assert int(r.tag) == i & 0xFF, (i, int(r.tag))
            assert got == expected[i], f"group {i} (row_base {cases[i][0]}, n_out {cases[i][1]}): " \
                                       f"got {got}, expected {expected[i]}"
        # every group is 2 phases of ERR_BITS slots, no more
        assert int(dut.t_slots.value) == 2 * ERR_BITS * len(cmds) and not int(dut.busy.value)
        # the saturation cases do saturate: phase P of case 3 pulses all 64 G+ rows in every slot
        full = xb.read_t(0, np.ones((1, unit.max_out)), slice(cases[3][0], cases[3][0] + 128, 2), unit.n_bl)
        assert full.max() > BL_ADC.full_scale_ua, full.max()
        dut._log.info(f"{len(cmds)} groups compared; max |T| {max(abs(v) for e in expected for v in e)}")


@pytest.mark.parametrize("idle,bp", [(0.0, 0.0), (0.4, 0.6)])
def test_transposed_read(idle, bp):
    from golden.transposed_read import BL_ADC
    from rtl.transposed_read import TransposedRead
    from tb.cosim.sim_top import PE_MODEL, adc_shift_for
    harness.run_block(TransposedTop(TransposedRead(), adc_shift_for(BL_ADC)), "transposed_top",
                      "tb.test_transposed_read", {"seed": 11, "groups": 60, "idle": idle, "bp": bp},
                      extra_sources=[PE_MODEL])


def test_lint():
    harness.lint_default_instances("rtl.transposed_read")
