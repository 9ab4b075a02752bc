"""Differential pair subtraction (rtl/differential.py) against golden.datapath.differential.

Reads of random row ranges (even base, 2*n_out rows, as golden/mapping.py places them) with
random S values over the whole u(sum_bits) range plus the extremes (0 / max on either row of a
pair); the S stream is in the order rtl/shift_add.py emits it (rows ascending).
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
    async def _scenario(dut, blk, sc, nrng, seed):
        from golden.datapath import differential
        from tb import readpath_util as ru
        rng = random.Random(seed)
        top = (1 << blk.sum_bits) - 1
        npairs = blk.rows // 2
        items, expected = [], []
        for r in range(sc["reads"]):
            n_out = npairs if r % 4 == 0 else rng.randint(1, npairs)
            base = rng.randint(0, npairs - n_out)
            kind = r % 5
            if kind == 0:
                s = np.tile([top, 0], n_out)                       # largest positive D
            elif kind == 1:
                s = np.tile([0, top], n_out)                       # largest negative D
            elif kind == 2:
                s = np.full(2 * n_out, top)                        # equal: D = 0
            else:
                s = nrng.integers(0, top + 1, 2 * n_out)
            d = differential(s)                                    # golden
            items += [{"sum": int(v), "row": 2 * base + j} for j, v in enumerate(s)]
            expected += [{"d": int(v), "pair": base + o} for o, v in enumerate(d)]
        await ru.reset(dut)
        tasks = ru.Tasks()
        src = harness.StreamSource(dut, "i", dut.clk, blk.in_layout, idle=sc["idle"], rng=rng)
        sink = harness.StreamSink(dut, "o", dut.clk, blk.out_layout, backpressure=sc["bp"], rng=random.Random(seed + 1))
        tasks.start(sink.run())
        await src.send(items)
        got = await sink.wait_for(len(expected))
        tasks.cancel()
        assert len(got) == len(expected), f"{len(got)} D out, expected {len(expected)}"
        for i, (g, e) in enumerate(zip(got, expected)):
            assert g == e, f"D {i}: got {g}, expected {e}"
        dut._log.info(f"idle {sc['idle']} bp {sc['bp']}: {sc['reads']} reads, {len(expected)} D compared")

    @cocotb.test()
    async def differential_random(dut):
        from rtl.differential import Differential
        p = harness.params()
        blk = Differential(**p["block"])
        nrng = np.random.default_rng(p["seed"])
        await harness.start_clock_and_reset(dut)
        for i, sc in enumerate(p["scenarios"]):
            await _scenario(dut, blk, sc, nrng, p["seed"] + 10 * i)


SCENARIOS = [dict(idle=0.0, bp=0.0, reads=20), dict(idle=0.3, bp=0.4, reads=40)]
CONFIGS = [
    dict(block=dict(sum_bits=16, rows=128), scenarios=SCENARIOS),
    dict(block=dict(sum_bits=10, rows=20), scenarios=SCENARIOS),
]


@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: "sb{sum_bits}-r{rows}".format(**c["block"]))
def test_differential(cfg):
    from rtl.differential import Differential
    harness.run_block(Differential(**cfg["block"]), "differential", "tb.test_differential", dict(cfg, seed=31))
