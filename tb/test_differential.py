"""Differential (rtl/differential.py, the read lane's result stage) against
golden.datapath.differential.

Per group the test holds the sums `s` (2 * max_out x u16: random, all zero, extremes 65535 / 0
in both orders for the largest |D|), pulses `group_end` with the group's tag and n_out (0 .. 12,
null groups included), groups at least input_bits * pulse_cycles cycles apart with random idle
between them, and random back-pressure on `res` (its ready is ignored by contract). Expected:
`res.valid` exactly pulse_cycles + 5 cycles after group_end, for one cycle, with d = golden
differential of the group's 2 n_out sums followed by zeros, and the tag.

Mutation seen caught: D = s[2o + 1] - s[2o] -> d mismatch.
"""
import random

import numpy as np
import pytest

from tb import harness

try:
    import cocotb
except ImportError:
    cocotb = None

if cocotb is not None:
    @cocotb.test()
    async def groups_with_idle(dut):
        from cocotb.triggers import ReadOnly, RisingEdge

        from golden.datapath import differential
        from rtl.differential import Differential
        p = harness.params()
        MO, P, B = p["max_out"], p["pulse_cycles"], p["input_bits"]
        blk = Differential(16, MO, P)
        rng = np.random.default_rng(p["seed"])
        prng = random.Random(p["seed"])
        await harness.start_clock_and_reset(dut)
        got, exp = [], []

        async def backpressure():
            while True:
                dut.res__ready.value = int(prng.random() >= p["bp"])
                await RisingEdge(dut.clk)
        cocotb.start_soon(backpressure())
        cyc, n_outs = 0, []       # n_out of every group: the activity counter diff_subs sums them
        for t in range(p["groups"]):
            n_out = [MO, 0, MO, 1][t] if t < 4 else int(rng.integers(0, MO + 1))
            n_outs.append(n_out)
            s = rng.integers(0, 1 << 16, 2 * MO)
            if t == 0:
                s[0::2], s[1::2] = 65535, 0
            elif t == 2:
                s[0::2], s[1::2] = 0, 65535
            elif t % 5 == 4:
                s[:] = 0
            dut.s.value = sum(int(v) << (16 * i) for i, v in enumerate(s))
            dut.tag.value, dut.n_out.value, dut.group_end.value = t & 0xFF, n_out, 1
            d = [int(v) for v in differential(s[:2 * n_out].astype(np.int64))] + [0] * (MO - n_out)
            exp.append((cyc + P + 5, d, t & 0xFF))
            for i in range(B * P + (prng.randrange(8) if prng.random() < p["idle"] else 0)):
                await ReadOnly()
                if int(dut.res__valid.value):
                    got.append((cyc, harness.unpack(blk.res_layout, int(dut.res__payload.value))))
                await RisingEdge(dut.clk)
                if i == 0:      # the encoder's n_out moves on (the next group): the result keeps its own
                    dut.n_out.value = 0 if n_out else MO
                dut.group_end.value = 0
                cyc += 1
        assert len(got) == len(exp), (len(got), len(exp))
        subs = sum(n_outs)
        assert int(dut.diff_subs.value) == subs, f"diff_subs {int(dut.diff_subs.value)}, expected {subs}"
        w = blk.d_bits
        for (gc, g), (ec, d, tag) in zip(got, exp):
            raw = int(g["d"])
            ds = [((raw >> (w * o)) & ((1 << w) - 1)) for o in range(MO)]
            ds = [v - (1 << w) if v >> (w - 1) else v for v in ds]
            assert gc == ec, f"tag {tag}: valid at {gc}, expected {ec}"
            assert (ds, g["tag"]) == (d, tag), f"tag {tag}: got {ds}, expected {d}"
        dut._log.info(f"{len(got)} results compared")


@pytest.mark.parametrize("idle,bp", [(0.0, 0.0), (0.5, 0.5)])
def test_differential(idle, bp):
    from rtl.differential import Differential
    harness.run_block(Differential(16, 12, 4), "differential", "tb.test_differential",
                      {"max_out": 12, "pulse_cycles": 4, "input_bits": 8, "seed": 9, "groups": 40,
                       "idle": idle, "bp": bp})
