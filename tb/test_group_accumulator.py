"""Group accumulator (rtl/group_accumulator.py) against the group sum of golden.datapath.layer_accumulate.

The layers of the Yao 2020 mapping (golden.mapping.build_mapping): C1 (1 group), C3 (8), FC (12).
For M input vectors, the D of every read group comes from golden.datapath.read_group_sums and the
expected A from golden.datapath.layer_accumulate, both on the same array: golden.analog.IdealArray
with random levels and random u8 inputs, or a scripted array whose codes are chosen by the test
(random full-range codes; the extremes G+ = 255, G- = 0 on every slot and the reverse, which give
the largest |A| the accumulator width must hold). D is fed vector by vector, group by group,
outputs in order, with the per-group command (base pair, count, first, last).
"""
import random

import numpy as np
import pytest

from tb import harness

try:
    import cocotb
except ImportError:
    cocotb = None

LAYER_OF_GROUPS = {1: "C1", 8: "C3", 12: "FC"}


def layer_case(layer, kind, m, nrng, bits=8):
    """-> (groups, D per group (G, M, n_out), expected A (M, n_out)), all from golden/."""
    from golden.adc import ADC
    from golden.analog import IdealArray
    from golden.datapath import layer_accumulate, read_group_sums
    from golden.mapping import build_mapping
    from tb.readpath_util import ScriptedArray
    mp = build_mapping()
    groups = mp.groups[layer]
    fan_in = max(max(g.inputs) for g in groups) + 1
    adc = ADC(8)
    cols = nrng.integers(0, 256, (m, fan_in))
    if kind == "ideal":
        array = IdealArray(nrng.integers(0, 8, (mp.n_pe, mp.n_rows, mp.n_bl)))
    else:
        array = ScriptedArray(adc.lsb_ua)
        for g in groups:
            shape = (bits * m, 2 * g.n_out)
            if kind == "max":        # G+ full scale, G- zero: largest positive A
                c = np.tile([adc.max_code, 0], (bits * m, g.n_out))
            elif kind == "min":
                c = np.tile([0, adc.max_code], (bits * m, g.n_out))
            else:
                c = nrng.integers(0, adc.max_code + 1, shape)
            array.codes[(g.pe, g.row_base)] = c
    d = np.stack([read_group_sums(array, g, cols[:, list(g.inputs)], bits, adc) for g in groups])
    a = layer_accumulate(array, groups, cols, bits, adc)
    return groups, d, a


if cocotb is not None:
    async def _scenario(dut, blk, sc, nrng, seed):
        from tb import readpath_util as ru
        layer = LAYER_OF_GROUPS[blk.groups]
        groups, d, a = layer_case(layer, sc["kind"], sc["vectors"], nrng)
        cmds, items, expected = [], [], []
        for v in range(sc["vectors"]):
            for gi, g in enumerate(groups):
                b = g.row_base // 2
                cmds.append({"base": b, "count": g.n_out, "first": int(gi == 0), "last": int(gi == len(groups) - 1)})
                items += [{"d": int(d[gi, v, o]), "pair": b + o} for o in range(g.n_out)]
            expected += [{"acc": int(a[v, o]), "out": o} for o in range(groups[0].n_out)]
        await ru.reset(dut)
        tasks = ru.Tasks()
        csrc = harness.StreamSource(dut, "cmd", dut.clk, blk.cmd_layout, idle=sc["idle"], rng=random.Random(seed))
        src = harness.StreamSource(dut, "i", dut.clk, blk.in_layout, idle=sc["idle"], rng=random.Random(seed + 1))
        sink = harness.StreamSink(dut, "o", dut.clk, blk.out_layout, backpressure=sc["bp"], rng=random.Random(seed + 2))
        tasks.start(sink.run())
        tasks.start(csrc.send(cmds))
        await src.send(items)
        got = await sink.wait_for(len(expected))
        tasks.cancel()
        assert len(got) == len(expected), f"{len(got)} A out, expected {len(expected)}"
        for i, (g, e) in enumerate(zip(got, expected)):
            assert g == e, f"A {i} (vector {i // groups[0].n_out}): got {g}, expected {e}"
        dut._log.info(f"{layer} {sc['kind']} idle {sc['idle']} bp {sc['bp']}: {sc['vectors']} vectors, "
                      f"{len(items)} D in, {len(expected)} A compared (|A| max {int(np.abs(a).max())})")

    @cocotb.test()
    async def group_accumulator_random(dut):
        from golden.datapath import accumulator_bits
        from rtl.group_accumulator import GroupAccumulator
        p = harness.params()
        blk = GroupAccumulator(**p["block"])
        layer = LAYER_OF_GROUPS[blk.groups]
        assert blk.acc_bits == accumulator_bits()[layer], (blk.acc_bits, accumulator_bits())
        nrng = np.random.default_rng(p["seed"])
        await harness.start_clock_and_reset(dut)
        for i, sc in enumerate(p["scenarios"]):
            await _scenario(dut, blk, sc, nrng, p["seed"] + 10 * i)


SCENARIOS = [
    dict(kind="max", vectors=1, idle=0.0, bp=0.0),
    dict(kind="min", vectors=1, idle=0.0, bp=0.0),
    dict(kind="ideal", vectors=20, idle=0.0, bp=0.0),
    dict(kind="codes", vectors=20, idle=0.3, bp=0.4),
]
CONFIGS = [dict(block=dict(d_bits=17, groups=g, outputs=64), scenarios=SCENARIOS) for g in (12, 8, 1)]


@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: "{}-g{groups}".format(LAYER_OF_GROUPS[c["block"]["groups"]],
                                                                         **c["block"]))
def test_group_accumulator(cfg):
    from rtl.group_accumulator import GroupAccumulator
    harness.run_block(GroupAccumulator(**cfg["block"]), "group_accumulator", "tb.test_group_accumulator",
                      dict(cfg, seed=57))
