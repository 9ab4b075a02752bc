"""In-situ backward path (rtl/insitu_path.py: ErrorCode -> 4 TransposedReads on PEs 0-3 ->
HiddenError) on 4 behavioural PEs (tb/cosim/hdl/pe_model.v, BL-side ADCs) against golden
InsituTrainer.backward on a golden li2018 Crossbar: golden runs the forward of random u8 images
(labels random) and its backward; the path gets each image's output deltas and hidden activations,
its PEs hold the same board's cell currents; every hidden delta must equal golden's deltas[0].
Two boards: the fresh one (Li's initial state), then the board after golden has trained it for 3
batches (open loop), reloaded into the PEs. Random idle on the input, back-pressure on the output.
"""
import random

import numpy as np
import pytest
from amaranth.hdl import ClockSignal, Instance, Module
from amaranth.lib import wiring
from amaranth.lib.wiring import In

from tb import harness

try:
    import cocotb
except ImportError:
    cocotb = None


class InsituTop(wiring.Component):
    def __init__(self, path, bl_shift):
        self.path, self.bl_shift = path, bl_shift
        sig = path.signature.members
        super().__init__({"i": sig["i"], "o": sig["o"], "cfg_we": In(1), "cfg_pe": In(2),
                          "cfg_addr": In(16), "cfg_data": In(18)})

    def elaborate(self, platform):
        m = Module()
        m.submodules.path = p = self.path
        wiring.connect(m, wiring.flipped(self.i), p.i)
        wiring.connect(m, p.o, wiring.flipped(self.o))
        tr = p.trs[0]
        for k in range(len(p.trs)):
            pe = getattr(p, f"pe{k}")
            m.submodules[f"pe{k}"] = Instance(
                "pe_model", p_ROWS=tr.n_rows, p_BLS=tr.n_bl, p_BL_CODE_BITS=tr.bl_code_bits,
                i_clk=ClockSignal(), i_bl=0, i_sh_sample=0, i_sh_bank=0, i_adc_start=0, i_adc_bank=0, i_adc_sel=0,
                i_adc_shift=0, o_adc_valid=pe.adc_valid, o_adc_codes=pe.adc_codes,
                i_sl_drive=pe.sl_drive, i_bl_sample=pe.bl_sample, i_bl_shift=self.bl_shift,
                o_bl_valid=pe.bl_valid, o_bl_codes=pe.bl_codes,
                i_cfg_we=self.cfg_we & (self.cfg_pe == k), i_cfg_addr=self.cfg_addr, i_cfg_data=self.cfg_data)
        return m


def _images(rng, n):
    x = rng.integers(0, 256, (n, 64))
    x[rng.random((n, 64)) < 0.4] = 0                     # sparse, as MNIST digits
    x[rng.random((n, 64)) < 0.1] = 255
    return x, rng.integers(0, 10, n)


if cocotb is not None:
    @cocotb.test()
    async def hidden_deltas_against_golden(dut):
        from golden.crossbar import Crossbar
        from golden.insitu import InsituConfig, InsituTrainer
        from rtl.insitu_path import InsituPath
        from tb.cosim.sim_top import load_cells
        p = harness.params()
        path = InsituPath()
        rng = np.random.default_rng(p["seed"])
        t = InsituTrainer(Crossbar("li2018", seed=p["seed"]), "li2018", InsituConfig(eta=0.06, batch=8))
        await harness.start_clock_and_reset(dut)
        src = harness.StreamSource(dut, "i", dut.clk, path.in_layout, idle=p["idle"], rng=random.Random(3))
        sink = harness.StreamSink(dut, "o", dut.clk, backpressure=p["bp"], rng=random.Random(4))
        cocotb.start_soon(sink.run())
        n_done, masked, nz = 0, 0, 0
        for board in range(2):
            if board:
                for _ in range(3):                       # golden trains the board: its state changes
                    t.step(*_images(rng, 8))
            await load_cells(dut, t.xb.i_units()[:len(path.trs)], dut.clk)
            x, y = _images(rng, p["images"])
            acts, logits = t.forward(x)
            deltas = t.backward(acts, logits, y)
            items = [{"d": [int(v) for v in deltas[1][i]], "h": [int(v) for v in acts[1][i]]} for i in range(len(x))]
            await src.send(items)
            await sink.wait_for(n_done + len(x), timeout_cycles=400 * len(x) + 2000)
            for i in range(len(x)):
                r = path.he.out_layout.from_bits(sink.items[n_done + i])
                got = [int(r.d[j]) for j in range(path.n_in)]
                exp = [int(v) for v in deltas[0][i]]
                assert got == exp, f"board {board} image {i}: got {got}, expected {exp}"
                h = acts[1][i]
                masked += int(((h == 0) | (h == 255)).sum())
                nz += int(np.count_nonzero(deltas[0][i]))
            n_done += len(x)
        assert len(sink.items) == n_done
        assert masked and nz, (masked, nz)                  # the cases were exercised
        dut._log.info(f"{n_done} images: hidden deltas equal; masked {masked}, nonzero {nz}")


@pytest.mark.parametrize("idle,bp", [(0.3, 0.5)])
def test_insitu_path(idle, bp):
    from golden.transposed_read import BL_ADC
    from rtl.insitu_path import InsituPath
    from tb.cosim.sim_top import PE_MODEL, adc_shift_for
    harness.run_block(InsituTop(InsituPath(), adc_shift_for(BL_ADC)), "insitu_top",
                      "tb.test_insitu_path", {"seed": 5, "images": 20, "idle": idle, "bp": bp},
                      extra_sources=[PE_MODEL])


def test_lint():
    harness.lint_default_instances("rtl.insitu_path")
