"""Shift-and-add (rtl/shift_add.py, the read lane's per-SL accumulators) against
golden.datapath.shift_add.

The test plays the ADC side as rtl/adc_sequencer.py does: per read group (row_base, n_out) and
slot k, the conversion rounds sel = row_base // 32 .. (row_base + 2 n_out - 1) // 32, each
delivering the 32 codes of MUX input sel (ADC a: SL 32 sel + a) with adc_valid and its context
(rv_slot = k, rv_sel, rv_rot = row_base % 32), cv_row_base the group's row base from the cycle
before its first codes; random idle cycles between rounds and between groups. Codes are random,
all zero or all full scale (255: S = 255 * 255, the largest sum), max fan-in n_out = 12 straddling
two MUX inputs, the last rows, and the largest rotation (row_base % 32 = 31). Expected: 4 cycles
after a group's last codes, fin[i] = golden shift_add over the slots of SL row_base + i, for
i < 2 n_out, held until the next group's last slot.

Mutation seen caught: c_first tested as s_slot == 1 (slot 1 clears the sum, dropping slot 0) ->
fin mismatch.
"""
import random

import numpy as np
import pytest

from tb import harness

try:
    import cocotb
except ImportError:
    cocotb = None

A, ROWS = 32, 128


if cocotb is not None:
    @cocotb.test()
    async def groups_with_idle(dut):
        from cocotb.triggers import RisingEdge

        from golden.datapath import shift_add
        p = harness.params()
        B, MO = p["input_bits"], p["max_out"]
        rng = np.random.default_rng(p["seed"])
        prng = random.Random(p["seed"])
        edge = [(0, MO), (ROWS - 2 * MO, MO), (A - 1, MO), (A + 31, 1), (64, 0)]
        await harness.start_clock_and_reset(dut)
        dut.adc_valid.value = 0

        async def cycle():
            await RisingEdge(dut.clk)
            dut.adc_valid.value = 0
        for t in range(p["groups"]):
            rb, n_out = edge[t] if t < len(edge) else (0, int(rng.integers(1, MO + 1)))
            if t >= len(edge):
                rb = int(rng.integers(0, ROWS - 2 * n_out + 1))
            n_out = max(n_out, 1)
            codes = rng.integers(0, 256, (B, ROWS))
            if t % 4 == 1:
                codes[:] = 255                               # full scale
            elif t % 4 == 2:
                codes[:] = 0
            dut.cv_row_base.value = rb
            await cycle()
            for k in range(B):
                for sel in range(rb // A, (rb + 2 * n_out - 1) // A + 1):
                    while prng.random() < p["idle"]:
                        await cycle()
                    dut.adc_valid.value = 1
                    dut.adc_codes.value = sum(int(codes[k, sel * A + a]) << (8 * a) for a in range(A))
                    dut.rv_slot.value, dut.rv_sel.value, dut.rv_rot.value = k, sel, rb % A
                    await RisingEdge(dut.clk)
                    dut.adc_valid.value = 0
            for _ in range(4):
                await cycle()
            fin = int(dut.fin.value)
            exp = shift_add(codes[:, rb:rb + 2 * n_out], axis=0)
            got = [(fin >> (16 * i)) & 0xFFFF for i in range(2 * n_out)]
            assert got == [int(v) for v in exp], f"group {t} (row_base {rb}, n_out {n_out}): {got} != {list(exp)}"
        dut._log.info(f"{p['groups']} groups compared")


@pytest.mark.parametrize("idle", [0.0, 0.5])
def test_shift_add(idle):
    from rtl.shift_add import ShiftAdd
    harness.run_block(ShiftAdd(ROWS, A, 8, 8, 12), "shift_add", "tb.test_shift_add",
                      {"input_bits": 8, "max_out": 12, "seed": 3, "groups": 40, "idle": idle})
