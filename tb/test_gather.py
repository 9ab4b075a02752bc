"""Patch gather (rtl/gather.py) against golden.mapping.group_patch on random feature maps.

The block as the controller builds it runs the three steps of golden.cnn.YAO2020 (C1 on the 28 x 28
image, C3 on an 8 x 8 x 8 map with zero padding, FC on a 4 x 4 x 12 map), each on random u8 maps
held by the testbench as the controller's RAMs (the image 4 pixels per word, the feature maps in
HWC order; a read answers a cycle later, like a block RAM read port). The step inputs follow the
order rtl/sequencer.py gives them (`restart`, then `step` / `step_oh` and `active`, then the
constants a cycle later; `active` drops after `end`); the constants come from golden/ alone
(tb/test_sequencer.py golden_steps). Expected, per position (raster order) and group slot: for each
lane (a PE of the layer, golden.mapping.build_mapping) the patch golden.mapping.group_patch of its
slot's group (0 on unused BLs), the group's row base and output count, n_out = 0 for a lane with no
group in the slot, and the first / last slot tag. The command stream sees random back-pressure.

Mutation seen caught: the in-bounds test `ys >= 0` dropped (C3's padding row then reads cells outside the map,
not 0: step 1, slot 0, lane 0 failed).
"""
import random

import numpy as np
import pytest

from tb import harness

try:
    import cocotb
except ImportError:
    cocotb = None


def make_block():
    from rtl.controller import plan
    from rtl.gather import Gather
    from tb.test_sequencer import REQUANT
    return Gather(plan(requant=REQUANT))


def expected_items(maps, n_lanes, n_bl):
    """Per step: [(tag, [(patch, row_base, n_out)] per lane)], from golden/ only."""
    from golden import cnn
    from golden.mapping import build_mapping, group_patch
    mp = build_mapping()
    out = []
    for L, x in zip(cnn.weight_layers(), maps):
        groups = mp.groups[L.name]
        pes = list(dict.fromkeys(g.pe for g in groups))
        per = [[g for g in groups if g.pe == pe] for pe in pes]
        ns = max(len(p) for p in per)
        if isinstance(L, cnn.Conv):
            oh, ow = x.shape[0] + 2 * L.pad - L.k + 1, x.shape[1] + 2 * L.pad - L.k + 1
        else:
            oh = ow = 1
        items = []
        for ho in range(oh):
            for wo in range(ow):
                for s in range(ns):
                    lanes = []
                    for li in range(n_lanes):
                        g = per[li][s] if li < len(per) and s < len(per[li]) else None
                        patch = [0] * n_bl
                        if g is not None:
                            patch[:len(g.inputs)] = [int(v) for v in group_patch(x, L, g, ho, wo)]
                        lanes.append((patch, g.row_base if g else None, g.n_out if g else 0))
                    items.append((int(s == 0) | (int(s == ns - 1) << 1), lanes))
        out.append(items)
    return out


def expected_reads(maps):
    """Per step, the map reads of its patches (golden/activity.py fm_reads, the gather's part): the
    taps of a group inside the map, counted as the group patch of an all-ones map (padding is 0)."""
    from golden import cnn
    from golden.mapping import build_mapping, group_patch
    mp = build_mapping()
    out = []
    for L, x in zip(cnn.weight_layers(), maps):
        ones = np.ones_like(x)
        oh, ow = ((x.shape[0] + 2 * L.pad - L.k + 1, x.shape[1] + 2 * L.pad - L.k + 1)
                  if isinstance(L, cnn.Conv) else (1, 1))
        out.append(sum(int(group_patch(ones, L, g, ho, wo).sum()) for g in mp.groups[L.name]
                       for ho in range(oh) for wo in range(ow)))
    return out


if cocotb is not None:
    async def ram(dut, blk, maps):
        """The controller's RAMs: each lane's address read back a cycle later (image words of 4 pixels)."""
        from cocotb.triggers import ReadOnly, RisingEdge
        img = maps[0].reshape(-1)
        words = [int.from_bytes(bytes(img[i:i + 4].tolist() + [0] * (4 - len(img[i:i + 4]))), "little")
                 for i in range(0, len(img), 4)]
        flat = [mp.reshape(-1) for mp in maps[1:]]
        n_img, fm_n = len(blk.steps[0].lanes), [len(st.lanes) for st in blk.steps[1:]]
        while True:
            await ReadOnly()
            a = [(int(dut.addr.value) >> (16 * li)) & 0xFFFF for li in range(blk.n_lanes)]
            await RisingEdge(dut.clk)
            dut.img_data.value = sum(words[a[li] >> 2 if (a[li] >> 2) < len(words) else 0] << (32 * li)
                                     for li in range(n_img))
            for f, n in enumerate(fm_n):
                getattr(dut, f"fm{f}_data").value = sum(int(flat[f][a[li] % len(flat[f])]) << (8 * li)
                                                        for li in range(n))

    async def run_step(dut, si, k, n_steps):
        """The sequencer's order: restart; step, step_oh, active; the constants; active low after end."""
        from cocotb.triggers import ReadOnly, RisingEdge
        from rtl.sequencer import Sequencer
        dut.restart.value = 1
        await RisingEdge(dut.clk)
        dut.restart.value = 0
        dut.step.value, dut.step_oh.value, dut.active.value = si, 1 << si, 1
        await RisingEdge(dut.clk)
        dut.sc.value = Sequencer.const_layout.const(k).as_value().value
        while True:
            await ReadOnly()
            if int(dut.end.value):
                break
            await RisingEdge(dut.clk)
        await RisingEdge(dut.clk)
        dut.active.value = 0

    @cocotb.test()
    async def gather_steps(dut):
        from cocotb.triggers import RisingEdge
        from golden import cnn
        from tb.test_sequencer import golden_steps
        p = harness.params()
        blk = make_block()
        nrng = np.random.default_rng(p["seed"])
        maps = [nrng.integers(0, 256, st.in_shape) for st in blk.steps]
        exp = expected_items(maps, blk.n_lanes, blk.n_bl)
        for s in ("restart", "active", "step", "step_oh", "sc"):
            getattr(dut, s).value = 0
        await harness.start_clock_and_reset(dut)
        cocotb.start_soon(ram(dut, blk, maps))
        sink = harness.StreamSink(dut, "cmd", dut.clk, None, backpressure=p["bp"], rng=random.Random(p["seed"]))
        cocotb.start_soon(sink.run())
        n = 0
        reads = np.cumsum(expected_reads(maps))
        for si, k in enumerate(golden_steps()):
            await run_step(dut, si, k, len(blk.steps))
            for _ in range(3):                        # the counter lags the patch writes by a cycle
                await RisingEdge(dut.clk)
            assert int(dut.fm_reads.value) == reads[si], f"step {si}: fm_reads {int(dut.fm_reads.value)}, " \
                                                         f"expected {reads[si]}"
            got = sink.items[n:]
            n += len(exp[si])
            assert len(got) == len(exp[si]), f"step {si}: {len(got)} slots, expected {len(exp[si])}"
            for i, (raw, (tag, lanes)) in enumerate(zip(got, exp[si])):
                c = blk.cmd_layout.from_bits(raw)
                assert int(c.tag) == tag, f"step {si} slot {i}: tag {int(c.tag)}, expected {tag}"
                for li, (patch, rb, no) in enumerate(lanes):
                    lc = c.lane[li]
                    gp = [int(v) for v in lc.patch]
                    assert gp == patch, f"step {si} slot {i} lane {li}: patch {gp}, expected {patch}"
                    assert int(lc.n_out) == no, f"step {si} slot {i} lane {li}: n_out {int(lc.n_out)}, expected {no}"
                    if no:
                        assert int(lc.row_base) == rb, f"step {si} slot {i} lane {li}: row base {int(lc.row_base)}"
            dut._log.info(f"{cnn.weight_layers()[si].name}: {len(exp[si])} slots compared")


@pytest.mark.parametrize("bp", [0.3])
def test_gather(bp):
    harness.run_block(make_block(), "gather", "tb.test_gather", dict(seed=11, bp=bp))
