"""Shift-and-add accumulator (rtl/shift_add.py) against golden.datapath.shift_add."""
import random

import numpy as np
import pytest

from tb import harness

# ------------------------------------------------------------------ cocotb side
try:
    import cocotb
except ImportError:  # collected by pytest without cocotb's simulator context
    cocotb = None

if cocotb is not None:
    @cocotb.test()
    async def shift_add_random(dut):
        from golden.datapath import shift_add
        from rtl.shift_add import ShiftAdd
        p = harness.params()
        blk = ShiftAdd(**p["block"])
        rng = random.Random(p["seed"])
        nrng = np.random.default_rng(p["seed"])
        await harness.start_clock_and_reset(dut)
        src = harness.StreamSource(dut, "i", dut.clk, blk.in_layout, idle=p["idle"], rng=rng)
        sink = harness.StreamSink(dut, "o", dut.clk, blk.out_layout, backpressure=p["bp"], rng=random.Random(5))
        cocotb.start_soon(sink.run())
        items, expected = [], []
        maxc = (1 << blk.code_bits) - 1
        for r in range(p["reads"]):
            n_rows = blk.rows if r % 3 == 0 else rng.randint(1, blk.rows)  # max fan-out and subsets
            rows = rng.sample(range(blk.rows), n_rows)
            kind = r % 5
            if kind == 0:
                codes = np.zeros((blk.slots, n_rows), np.int64)            # all zero
            elif kind == 1:
                codes = np.full((blk.slots, n_rows), maxc, np.int64)       # all ones: largest sum
            else:
                codes = nrng.integers(0, maxc + 1, (blk.slots, n_rows))
            for k in range(blk.slots):
                order = rng.sample(range(n_rows), n_rows)  # any row order within a slot
                items += [{"code": int(codes[k, j]), "slot": k, "row": rows[j]} for j in order]
                if k == blk.slots - 1:
                    s = shift_add(codes, axis=0)
                    expected += [{"sum": int(s[j]), "row": rows[j]} for j in order]
        await src.send(items)
        got = await sink.wait_for(len(expected))
        assert len(got) == len(expected)
        for i, (g, e) in enumerate(zip(got, expected)):
            assert g == e, f"item {i}: got {g}, expected {e}"
        dut._log.info(f"{len(expected)} sums compared, {len(items)} codes in")


# ------------------------------------------------------------------ pytest side
CONFIGS = [
    dict(block=dict(code_bits=8, slots=8, rows=128), idle=0.0, bp=0.0, reads=12),
    dict(block=dict(code_bits=8, slots=8, rows=128), idle=0.3, bp=0.4, reads=12),
    dict(block=dict(code_bits=6, slots=4, rows=20), idle=0.2, bp=0.2, reads=40),
]


@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: "cb{code_bits}-s{slots}-r{rows}".format(**c["block"])
                         + f"-idle{c['idle']}-bp{c['bp']}")
def test_shift_add(cfg):
    from rtl.shift_add import ShiftAdd
    harness.run_block(ShiftAdd(**cfg["block"]), "shift_add", "tb.test_shift_add", dict(cfg, seed=1234))
