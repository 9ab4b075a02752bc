"""Read path after the ADC (rtl/read_pipeline.py: shift_add -> differential -> group_accumulator)
against golden.datapath.layer_accumulate on golden.analog.IdealArray with random levels.

Whole layers of the Yao 2020 mapping (C1: 1 group, C3: 8, FC: 12) for M random input vectors:
the ADC codes the RTL receives are made by the golden analog side (bit planes of
golden.datapath.bitserial_encode, IdealArray.read, golden.adc.ADC.convert), one read group at a
time, slot by slot, rows ascending (the order of rtl/adc_sequencer.py); the expected A is
layer_accumulate on the same array, inputs and ADC. Edge cases: all-zero and all-255 inputs with
every cell at the top level (maximum fan-in sums), and an ADC with a small full scale that
saturates most codes.
"""
import random

import numpy as np
import pytest

from tb import harness

try:
    import cocotb
except ImportError:
    cocotb = None


def layer_case(layer, sc, nrng, bits=8):
    """-> (groups, codes[v][g] (B, 2*n_out), expected A (M, n_out)), all from golden/."""
    from golden.adc import ADC
    from golden.analog import IdealArray
    from golden.datapath import bitserial_encode, layer_accumulate
    from golden.mapping import build_mapping
    mp = build_mapping()
    groups = mp.groups[layer]
    m = sc["vectors"]
    fan_in = max(max(g.inputs) for g in groups) + 1
    adc = ADC(8, sc.get("full_scale_ua"))
    if sc.get("edge"):
        levels = np.full((mp.n_pe, mp.n_rows, mp.n_bl), 7)
        levels[:, 1::2, :] = nrng.integers(0, 8, (mp.n_pe, mp.n_rows // 2, mp.n_bl))
        cols = np.array([np.full(fan_in, 255 * (v % 2)) for v in range(m)])
    else:
        levels = nrng.integers(0, 8, (mp.n_pe, mp.n_rows, mp.n_bl))
        cols = nrng.integers(0, 256, (m, fan_in))
    array = IdealArray(levels)
    codes = [[adc.convert(array.read(g.pe, bitserial_encode(cols[v, list(g.inputs)], bits),
                                     slice(g.row_base, g.row_base + 2 * g.n_out))).astype(np.int64)
              for g in groups] for v in range(m)]
    return groups, codes, layer_accumulate(array, groups, cols, bits, adc)


if cocotb is not None:
    async def _scenario(dut, blk, sc, nrng, seed):
        from cocotb.triggers import ReadOnly, RisingEdge

        from tb import readpath_util as ru
        groups, codes, a = layer_case(sc["layer"], sc, nrng, blk.slots)
        cmds, items, expected = [], [], []
        for v in range(sc["vectors"]):
            for gi, g in enumerate(groups):
                cmds.append({"base": g.row_base // 2, "count": g.n_out, "first": int(gi == 0),
                             "last": int(gi == len(groups) - 1)})
                c = codes[v][gi]
                items += [{"code": int(c[k, j]), "slot": k, "row": g.row_base + j}
                          for k in range(blk.slots) for j in range(2 * g.n_out)]
            expected += [{"acc": int(a[v, o]), "out": o} for o in range(groups[0].n_out)]
        await ru.reset(dut)
        tasks = ru.Tasks()
        csrc = harness.StreamSource(dut, "cmd", dut.clk, blk.cmd_layout, idle=sc["idle"], rng=random.Random(seed))
        src = harness.StreamSource(dut, "i", dut.clk, blk.in_layout, idle=sc["idle"], rng=random.Random(seed + 1))
        sink = harness.StreamSink(dut, "o", dut.clk, blk.out_layout, backpressure=sc["bp"], rng=random.Random(seed + 2))
        cyc = {"n": 0, "first": None, "last": None}

        async def count():
            while True:
                await ReadOnly()
                if int(dut.i__valid.value) and int(dut.i__ready.value):
                    cyc["first"] = cyc["n"] if cyc["first"] is None else cyc["first"]
                    cyc["last"] = cyc["n"]
                await RisingEdge(dut.clk)
                cyc["n"] += 1

        tasks.start(sink.run())
        tasks.start(count())
        tasks.start(csrc.send(cmds))
        await src.send(items)
        got = await sink.wait_for(len(expected))
        tasks.cancel()
        assert len(got) == len(expected), f"{len(got)} A out, expected {len(expected)}"
        for i, (g, e) in enumerate(zip(got, expected)):
            assert g == e, f"A {i} (vector {i // groups[0].n_out}): got {g}, expected {e}"
        n_codes = len(items)
        span = cyc["last"] - cyc["first"] + 1
        sat = sum(int((c == 255).sum()) for cv in codes for c in cv)
        dut._log.info(f"{sc['layer']} idle {sc['idle']} bp {sc['bp']}{' edge' if sc.get('edge') else ''}"
                      f"{' fs ' + str(sc['full_scale_ua']) if sc.get('full_scale_ua') else ''}: "
                      f"{sc['vectors']} vectors, {n_codes} codes in ({sat} saturated), {len(expected)} A compared; "
                      f"{span / n_codes:.3f} cycles per code")
        if sc["idle"] == 0 and sc["bp"] == 0:
            assert span == n_codes, f"{span} cycles for {n_codes} codes: the pipeline stalled"

    @cocotb.test()
    async def read_pipeline_layers(dut):
        from golden.datapath import accumulator_bits
        from rtl.read_pipeline import ReadPipeline
        p = harness.params()
        blk = ReadPipeline(**p["block"])
        assert blk.acc_bits == max(accumulator_bits().values())
        nrng = np.random.default_rng(p["seed"])
        await harness.start_clock_and_reset(dut)
        for i, sc in enumerate(p["scenarios"]):
            await _scenario(dut, blk, sc, nrng, p["seed"] + 10 * i)


SCENARIOS = [
    dict(layer="C1", vectors=16, idle=0.0, bp=0.0),
    dict(layer="C3", vectors=3, idle=0.0, bp=0.0),
    dict(layer="FC", vectors=3, idle=0.0, bp=0.0),
    dict(layer="C3", vectors=2, idle=0.3, bp=0.4),
    dict(layer="FC", vectors=2, idle=0.2, bp=0.3, full_scale_ua=16.0),   # most codes saturate
    dict(layer="FC", vectors=2, idle=0.0, bp=0.0, edge=True),
    dict(layer="C1", vectors=4, idle=0.3, bp=0.4, edge=True),
]
CONFIGS = [dict(block=dict(code_bits=8, slots=8, rows=128, groups=12), scenarios=SCENARIOS)]


@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: "cb{code_bits}-s{slots}-r{rows}-g{groups}".format(**c["block"]))
def test_read_pipeline(cfg):
    from rtl.read_pipeline import ReadPipeline
    harness.run_block(ReadPipeline(**cfg["block"]), "read_pipeline", "tb.test_read_pipeline", dict(cfg, seed=2020))
