"""Read lane (rtl/read_lane.py) on one behavioural PE (tb/cosim/hdl/pe_model.v) against
golden.datapath.read_group_sums on golden.analog.IdealArray: groups back to back, any row base."""
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


class LaneTop(wiring.Component):
    def __init__(self, lane, adc_shift=10):
        self.lane, self.adc_shift = lane, adc_shift
        sig = lane.signature.members
        super().__init__({"cmd": sig["cmd"], "res": sig["res"], "slot_reads": Out(32),
                          "cfg_we": In(1), "cfg_addr": In(16), "cfg_data": In(18)})

    def elaborate(self, platform):
        m = Module()
        m.submodules.lane = lane = self.lane
        wiring.connect(m, wiring.flipped(self.cmd), lane.cmd)
        wiring.connect(m, lane.res, wiring.flipped(self.res))
        m.d.comb += self.slot_reads.eq(lane.slot_reads)
        pe = lane.pe
        m.submodules.pe = Instance("pe_model", i_clk=ClockSignal(), i_bl=pe.bl, i_sh_sample=pe.sh_sample,
                                   i_sh_bank=pe.sh_bank, i_adc_start=pe.adc_start, i_adc_bank=pe.adc_bank,
                                   i_adc_sel=pe.adc_sel, i_adc_shift=self.adc_shift, o_adc_valid=pe.adc_valid,
                                   o_adc_codes=pe.adc_codes, i_cfg_we=self.cfg_we, i_cfg_addr=self.cfg_addr,
                                   i_cfg_data=self.cfg_data, i_sl_drive=0, i_bl_sample=0, i_bl_shift=0,
                                   o_bl_valid=Signal(), o_bl_codes=Signal(16 * 8))
        return m


if cocotb is not None:
    @cocotb.test()
    async def groups_back_to_back(dut):
        from cocotb.triggers import RisingEdge

        from golden.adc import ADC
        from golden.analog import IdealArray
        from golden.datapath import read_group_sums
        from golden.mapping import ReadGroup
        from rtl.read_lane import ReadLane
        from tb.cosim.sim_top import load_cells
        p = harness.params()
        lane = ReadLane(max_out=p["max_out"])
        rng = np.random.default_rng(p["seed"])
        levels = rng.integers(0, 8, (1, 128, 16)).astype(np.int8)
        arr = IdealArray(levels)
        await harness.start_clock_and_reset(dut)
        await load_cells(dut, arr.i_units, dut.clk)
        cmds, expected = [], []
        for t in range(p["groups"]):
            n_out = int(rng.integers(1, p["max_out"] + 1))
            row_base = int(rng.integers(0, 128 - 2 * n_out + 1))
            x = rng.integers(0, 256, 16)
            if t % 7 == 0:
                x[:] = 255
            elif t % 7 == 1:
                x[:] = 0
            g = ReadGroup("L", 0, 0, tuple(range(16)), row_base, n_out)
            d = read_group_sums(arr, g, x[None], 8, ADC())[0]
            cmds.append({"patch": int(sum(int(v) << (8 * j) for j, v in enumerate(x))), "row_base": row_base,
                         "n_out": n_out, "tag": t & 0xFF})
            expected.append([int(v) for v in d] + [0] * (p["max_out"] - n_out))
        src = harness.StreamSource(dut, "cmd", dut.clk, lane.cmd_layout, idle=p["idle"], rng=random.Random(3))
        got = []

        async def collect():
            f = lane.res_layout["d"]
            w = f.shape.elem_shape.width
            while True:
                await RisingEdge(dut.clk)
                if dut.res__valid.value:
                    raw = int(dut.res__payload.value)
                    ds = [((raw >> (f.offset + i * w)) & ((1 << w) - 1)) for i in range(p["max_out"])]
                    got.append([v - (1 << w) if v >> (w - 1) else v for v in ds])
        cocotb.start_soon(collect())
        await src.send(cmds)
        for _ in range(200):
            await RisingEdge(dut.clk)
        assert len(got) == len(expected), (len(got), len(expected))
        for i, (g, e) in enumerate(zip(got, expected)):
            assert g == e, f"group {i} ({cmds[i]['row_base']}, {cmds[i]['n_out']}): got {g}, expected {e}"
        dut._log.info(f"{len(got)} groups compared")


@pytest.mark.parametrize("idle", [0.0, 0.5])
def test_read_lane(idle):
    from rtl.read_lane import ReadLane
    from tb.cosim.sim_top import PE_MODEL
    harness.run_block(LaneTop(ReadLane(max_out=12)), "lane_top", "tb.test_read_lane",
                      {"max_out": 12, "seed": 7, "groups": 40, "idle": idle}, extra_sources=[PE_MODEL])
