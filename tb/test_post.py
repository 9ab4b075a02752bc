"""Post of the conv steps (rtl/post.py): bounded ReLU + requant + max-pool into the next feature map,
against golden.datapath.relu_requant and golden.datapath.maxpool.

Six images through two conv steps (5x5x3 positions pooled 2x2, the last row and column dropped;
4x4x2 not pooled) and an FC step that the post leaves alone, as the controller drives it: per
finished position its channels one per cycle (`go`), random gaps between positions (none too);
the feature maps are block RAMs modelled here (one cycle read), filled with garbage at the start
(the first visit of a pooling window must write without reading). Accumulators: all zero,
negative (ReLU), saturating (255), around the rounding steps, random; M and the shift random per
step. Checked: every map cell, `last` on each position's last channel, one `done` pulse per step
after its last write.

Mutation seen caught: the first-visit test dropped (`q_first[QL] |` removed from the write
multiplexer) fails at the first image (a cell keeps the garbage when it is larger).
"""
import random

import numpy as np

from tb import harness

try:
    import cocotb
except ImportError:  # collected by pytest without cocotb's simulator context
    cocotb = None

ACC_BITS = 24


def _steps(p):
    from rtl.controller import Step
    out = []
    for s in p["steps"]:
        rq = tuple(s["requant"]) if s["requant"] else None
        out.append(Step(s["name"], (0, 0, 0), 1, 0, tuple(s["out_hw"]), s["n_out"], [], rq, s["pool"],
                        tuple(s["out_shape"])))
    return out


async def _ram(dut, mem, k):
    """Feature map k + 1: one write port, one synchronous read port."""
    from cocotb.triggers import ReadOnly, RisingEdge
    while True:
        await ReadOnly()
        we, wa, wd = int(getattr(dut, f"wr__{k}__en").value), int(getattr(dut, f"wr__{k}__addr").value), \
            int(getattr(dut, f"wr__{k}__data").value)
        ra = int(getattr(dut, f"rd__{k}__addr").value)
        await RisingEdge(dut.clk)
        getattr(dut, f"rd__{k}__data").value = int(mem[ra]) if ra < len(mem) else 0
        if we:
            mem[wa] = wd


def _accumulators(rng, nrng, oh, ow, oc, m, sh, kind):
    lo, hi = -(1 << (ACC_BITS - 1)), (1 << (ACC_BITS - 1)) - 1
    if kind == 0:
        return np.zeros((oh, ow, oc), int)
    if kind == 1:   # edges: negative, saturation, the rounding steps
        pts = [lo, -1, 0, 1, hi, hi - 1]
        for j in (1, 2, 128, 254, 255, 256):
            a0 = ((j << sh) - (1 << (sh - 1))) // m
            pts += [a for a in range(a0 - 1, a0 + 2) if lo <= a <= hi]
        return nrng.choice(pts, (oh, ow, oc))
    amax = max(2, min(hi, (300 << sh) // m))
    return nrng.integers(-amax // 4, amax, (oh, ow, oc))


async def _post_random(dut):
    from cocotb.triggers import ReadOnly, RisingEdge
    from golden.datapath import maxpool, relu_requant
    p = harness.params()
    steps = _steps(p)
    rng, nrng = random.Random(p["seed"]), np.random.default_rng(p["seed"])
    await harness.start_clock_and_reset(dut, harness.CLK_NS)
    mems = [nrng.integers(0, 256, int(np.prod(st.out_shape))) for st in steps[:-1]]   # garbage
    for k, mem in enumerate(mems):
        cocotb.start_soon(_ram(dut, mem, k))
    dut.go.value = 0
    n_rq = n_wr = n_pool = 0      # expected activity counters (golden/activity.py), running totals
    for img in range(p["images"]):
        for si, st in enumerate(steps[:-1]):
            (oh, ow), oc, (m, sh) = st.out_hw, st.n_out, st.requant
            # the controller's step registers
            dut.step.value, dut.step_oh.value = si, 1 << si
            dut.oh1.value, dut.ow1.value, dut.no1.value, dut.no2.value, dut.m.value = oh - 1, ow - 1, oc - 1, oc - 2, m
            for _ in range(3):
                await RisingEdge(dut.clk)
            acc = _accumulators(rng, nrng, oh, ow, oc, m, sh, img if img < 2 else 2)
            dones = 0
            for y in range(oh):
                for x in range(ow):
                    while rng.random() < p["gap"]:
                        await RisingEdge(dut.clk)
                    for c in range(oc):
                        dut.go.value, dut.h0.value = 1, int(acc[y, x, c])
                        await ReadOnly()
                        assert int(dut.last.value) == (c == oc - 1), f"image {img} step {si}: last at channel {c}"
                        dones += int(dut.done.value)
                        await RisingEdge(dut.clk)
                    dut.go.value = 0
            for _ in range(12):
                await ReadOnly()
                dones += int(dut.done.value)
                await RisingEdge(dut.clk)
            assert dones == 1, f"image {img} step {si}: {dones} done pulses"
            exp = maxpool(relu_requant(acc, m, sh)[None], st.pool)[0]
            got = np.asarray(mems[si]).reshape(st.out_shape)
            assert np.array_equal(got, exp), (f"image {img} step {si}: cells differ at "
                                              f"{np.argwhere(got != exp)[:5].tolist()}")
            # every channel requantised; the values inside windows written; all but a window's first compared
            pl = st.pool
            n_in = (oh // pl * pl) * (ow // pl * pl) * oc
            n_rq, n_wr, n_pool = n_rq + oh * ow * oc, n_wr + n_in, n_pool + n_in - (oh // pl) * (ow // pl) * oc
            got_c = (int(dut.requant_ops.value), int(dut.fm_writes.value), int(dut.pool_ops.value))
            want = (n_rq, n_wr, n_pool)
            assert got_c == want, f"image {img} step {si}: requant, writes, pool counters {got_c}, expected {want}"
            dut._log.info(f"image {img} step {si}: {oh}x{ow}x{oc} -> {st.out_shape} equal golden")


if cocotb is not None:
    @cocotb.test()
    async def post_random(dut):
        await _post_random(dut)


def test_post():
    from rtl.post import Post
    r = random.Random(7)
    sa = [r.randint(1, 1 << 15), r.randint(8, 20)]
    sb = [r.randint(1 << 15, (1 << 16) - 1), r.randint(20, 30)]
    steps = [dict(name="A", out_hw=[5, 5], n_out=3, requant=sa, pool=2, out_shape=[2, 2, 3]),
             dict(name="B", out_hw=[4, 4], n_out=2, requant=sb, pool=1, out_shape=[4, 4, 2]),
             dict(name="FC", out_hw=[1, 1], n_out=4, requant=None, pool=1, out_shape=[1, 1, 4])]
    params = {"steps": steps, "images": 6, "gap": 0.4, "seed": 11}
    harness.run_block(Post(_steps(params), ACC_BITS), "post_tb", "tb.test_post", params)
