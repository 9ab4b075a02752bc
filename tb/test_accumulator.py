"""Position accumulator (rtl/accumulator.py) against golden.datapath.layer_accumulate.

The block as the controller builds it (2 lanes, 12 channels, s17 D, s24 A) runs the layers of the
Yao 2020 mapping (golden.mapping.build_mapping): C1 (1 group on 1 PE), C3 (8 groups on 2 PEs), FC
(12 groups on 2 PEs). A lane runs one PE's groups in order, a lane with fewer groups (or none:
C1's second lane) null groups (D = 0), so a position is max(groups per PE) slots. For M random u8
input vectors (positions) the D of every group come from golden.datapath.read_group_sums and the
expected A from golden.datapath.layer_accumulate, both on a golden.analog.IdealArray of random
levels (channels beyond the layer's n_out: 0). The slots come with random idle cycles; `shift` is
driven at random and `h` is checked in every cycle against a model of the holding register (a
finished position loads, wins over a shift; a shift moves the channels down by one).

Mutation seen caught: the first-slot restart `Mux(tag[0], s, A + s)` replaced by `A + s` (positions
after the first then carry the previous position's sum).
"""
import random

import numpy as np
import pytest

from tb import harness

try:
    import cocotb
except ImportError:
    cocotb = None

BLOCK = dict(n_lanes=2, max_out=12, d_bits=17, acc_bits=24)


def layer_case(layer, m, nrng, n_lanes, max_out):
    """-> (per position the slots' D [slot][lane][channel], expected A (M, max_out)), from golden/."""
    from golden.adc import ADC
    from golden.analog import IdealArray
    from golden.datapath import layer_accumulate, read_group_sums
    from golden.mapping import build_mapping
    mp = build_mapping()
    groups = mp.groups[layer]
    fan_in = max(max(g.inputs) for g in groups) + 1
    adc = ADC(8)
    cols = nrng.integers(0, 256, (m, fan_in))
    array = IdealArray(nrng.integers(0, 8, (mp.n_pe, mp.n_rows, mp.n_bl)))
    pes = list(dict.fromkeys(g.pe for g in groups))
    per = [[gi for gi, g in enumerate(groups) if g.pe == pe] for pe in pes]
    n_slots = max(len(p) for p in per)
    d = [read_group_sums(array, g, cols[:, list(g.inputs)], 8, adc) for g in groups]
    slots = []
    for v in range(m):
        pos = []
        for s in range(n_slots):
            lanes = []
            for li in range(n_lanes):
                row = [0] * max_out
                if li < len(per) and s < len(per[li]):
                    row[:groups[0].n_out] = [int(x) for x in d[per[li][s]][v]]
                lanes.append(row)
            pos.append(lanes)
        slots.append(pos)
    a = np.zeros((m, max_out), dtype=np.int64)
    a[:, :groups[0].n_out] = layer_accumulate(array, groups, cols, 8, adc)
    return slots, a


if cocotb is not None:
    async def _check_h(dut, blk, model, expected, rng, p_shift, cycles):
        """Every cycle: drive `shift` at random, compare `h` with the model of the holding register."""
        from cocotb.triggers import ReadOnly, RisingEdge
        from amaranth.lib import data
        from amaranth.hdl import signed
        hl = data.ArrayLayout(signed(blk.acc_bits), blk.max_out)
        pending, n_done = list(expected), 0
        for _ in range(cycles):
            sh = int(rng.random() < p_shift)
            dut.shift.value = sh
            await ReadOnly()
            got = [int(x) for x in hl.from_bits(int(dut.h.value))]
            assert got == model, f"h after {n_done} positions: got {got}, expected {model}"
            if int(dut.done.value):
                assert pending, "a finished position more than expected"
                model, n_done = [int(x) for x in pending.pop(0)], n_done + 1
            elif sh:
                model = model[1:] + model[-1:]
            await RisingEdge(dut.clk)
            if not pending and n_done == len(expected):
                break
        assert not pending, f"{len(pending)} positions not finished"
        return n_done, model

    @cocotb.test()
    async def accumulator_random(dut):
        from rtl.accumulator import Accumulator
        p = harness.params()
        blk = Accumulator(**p["block"])
        nrng = np.random.default_rng(p["seed"])
        await harness.start_clock_and_reset(dut)
        model = [0] * blk.max_out          # h after reset
        for i, sc in enumerate(p["scenarios"]):
            slots, a = layer_case(sc["layer"], sc["vectors"], nrng, blk.n_lanes, blk.max_out)
            items = []
            for pos in slots:
                for s, lanes in enumerate(pos):
                    tag = int(s == 0) | (int(s == len(pos) - 1) << 1)
                    items.append(blk.in_layout.const({"d": lanes, "tag": tag}).as_value().value)
            src = harness.StreamSource(dut, "i", dut.clk, None, idle=sc["idle"], rng=random.Random(p["seed"] + i))
            send = cocotb.start_soon(src.send(items))
            n, model = await _check_h(dut, blk, model, list(a), random.Random(p["seed"] + 100 + i), sc["shift"],
                               cycles=20 * len(items) + 100)
            await send
            dut._log.info(f"{sc['layer']} idle {sc['idle']}: {len(items)} slots, {n} positions compared "
                          f"(|A| max {int(np.abs(a).max())})")


SCENARIOS = [
    dict(layer="C1", vectors=20, idle=0.0, shift=0.3),
    dict(layer="C3", vectors=20, idle=0.3, shift=0.5),
    dict(layer="FC", vectors=10, idle=0.5, shift=0.2),
    dict(layer="C3", vectors=10, idle=0.0, shift=0.0),
]


@pytest.mark.parametrize("seed", [61])
def test_accumulator(seed):
    from rtl.accumulator import Accumulator
    harness.run_block(Accumulator(**BLOCK), "accumulator", "tb.test_accumulator",
                      dict(block=BLOCK, scenarios=SCENARIOS, seed=seed))
