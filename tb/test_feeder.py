"""Training feeder (rtl/feeder.py): per image its deltas then its FC inputs V (golden.cnn.flatten_chw of
the last feature map: the update engine's V vector, golden.update.accumulate), a FINISH item per finish
transfer once the feed in flight has left; random deltas (with the s17 extremes), random, all-zero
and all-255 feature maps, a finish during a feed and between feeds, random back-pressure on the
output and idle on the finish stream; at full rate one item per cycle. Each image is claimed a few
cycles before its softmax outputs (`claim`, as at the controller's logits hand-over): `map_busy` must
be up from then on, and once it falls the feature map reads return other data (the next image's
map may be written): the V fed must still be the claimed image's. Every fourth image (after the
edge cases) is not claimed: its `start` must feed nothing.

Mutations seen caught: map_busy cleared when the last V item enters stage B instead of D (its map
read comes after: a wrong last V); a start feeding without a claim (items of an unclaimed image);
the V address ROM in HWC order (init `mm` instead of the channel-major
mapping) fails at the first random image (the uniform edge-case maps cannot tell the orders apart).
"""
import random

import numpy as np

from tb import harness

try:
    import cocotb
except ImportError:  # collected by pytest without cocotb's simulator context
    cocotb = None


async def _fm_port(dut, u, fm):
    """The feature-map copy: a synchronous read port (data one cycle after an enabled address);
    while `map_busy` is low the map is another image's (each value's bits flipped)."""
    from cocotb.triggers import ReadOnly, RisingEdge
    while True:
        await ReadOnly()
        en, addr, other = int(u.fm_en.value), int(u.fm_addr.value), not int(u.map_busy.value)
        await RisingEdge(dut.clk)
        if en:
            u.fm_data.value = (int(fm[0][addr]) ^ (0xA5 if other else 0)) if addr < len(fm[0]) else 0


async def _claim(dut, u, rng):
    """The image's claim (a pulse), then a few cycles to its softmax outputs; map_busy up throughout."""
    from cocotb.triggers import ReadOnly, RisingEdge
    u.claim.value = 1
    await RisingEdge(dut.clk)
    u.claim.value = 0
    for _ in range(rng.randint(1, 4)):
        await ReadOnly()
        assert int(u.map_busy.value), "map_busy low after a claim"
        await RisingEdge(dut.clk)


def _images(blk, nrng, n):
    """[(deltas, feature map HWC)]: edge cases first, then random."""
    K, (h, w, c) = blk.n_classes, blk.in_shape
    lo, hi = -(1 << (len(blk.delta) - 1)), (1 << (len(blk.delta) - 1)) - 1
    out = [(np.full(K, lo), np.zeros((h, w, c), int)), (np.full(K, hi), np.full((h, w, c), 255)),
           (np.zeros(K, int), np.zeros((h, w, c), int))]
    for _ in range(n):
        out.append((nrng.integers(lo, hi + 1, K), nrng.integers(0, 256, (h, w, c))))
    return out


async def _unit(dut, prefix, p, seed):
    from cocotb.triggers import RisingEdge
    from golden import cnn
    from rtl.feeder import Feeder
    from rtl.update_engine import Op, UpdateEngine
    blk = Feeder(**dict(p["block"], in_layout=UpdateEngine().in_layout))
    K = blk.n_classes
    nrng = np.random.default_rng(seed)
    u = harness.Port(dut, prefix)
    fm = [np.zeros(blk.n_in, dtype=np.int64)]
    cocotb.start_soon(_fm_port(dut, u, fm))
    fin = harness.StreamSource(dut, f"{prefix}__finish", dut.clk, rng=random.Random(seed + 2))
    sink = harness.StreamSink(dut, f"{prefix}__o", dut.clk, blk.in_layout, rng=random.Random(seed + 1))
    cocotb.start_soon(sink.run())
    u.start.value, u.d_load.value, u.claim.value = 0, 0, 0
    rng = random.Random(seed + 3)

    def item(op, index, value):
        return {"op": op.value, "index": index, "value": value}

    expected = []
    for ph, (idle, bp) in enumerate(harness.phases(p)):
        fin.idle, sink.bp = idle, bp
        for n, (deltas, x) in enumerate(_images(blk, nrng, p["images"])):
            # the feature map holds during the feed (the next image's post cannot reach it before)
            fm[0] = x.reshape(-1)
            n0 = len(sink.items)
            claimed = n < 3 or n % 4 != 3
            if claimed:
                await _claim(dut, u, rng)
            for o in range(K):   # the softmax's outputs, one class per cycle; the last starts the feed
                u.d_load.value, u.delta.value = 1 << o, int(deltas[o])
                u.start.value = int(o == K - 1)
                await RisingEdge(dut.clk)
            u.d_load.value, u.start.value = 0, 0
            if not claimed:       # nothing fed
                await harness.idle_cycles(dut.clk, 10)
                assert len(sink.items) == n0 and not int(u.busy.value), f"{prefix}: an unclaimed image fed"
                continue
            v = cnn.flatten_chw(x[None])[0]
            expected += [item(Op.DELTA, o, int(deltas[o])) for o in range(K)]
            expected += [item(Op.V, mm, int(v[mm])) for mm in range(blk.n_in)]
            t0 = harness.now_cycles()
            if n % 3 == 1:          # a finish during the feed: its FINISH follows the feed's items
                await fin.send([0])
            got = await harness.collect(sink, n0, K + blk.n_in)
            if ph == 0 and n % 3 != 1:
                cyc = harness.now_cycles() - t0
                assert cyc <= K + blk.n_in + 6, f"{prefix}: {cyc} cycles for {K + blk.n_in} items"
            harness.check(got, expected[n0:n0 + K + blk.n_in], f"{prefix} phase {ph} image {n}")
            if n % 3:
                if n % 3 == 2:      # a finish between feeds
                    await fin.send([0])
                [f] = await harness.collect(sink, n0 + K + blk.n_in, 1)
                assert f["op"] == Op.FINISH.value, f"{prefix}: expected FINISH, got {f}"
                expected.append(f)
            while int(u.busy.value) or int(u.fin_pending.value):
                await RisingEdge(dut.clk)
    await harness.idle_cycles(dut.clk, 20)
    assert len(sink.items) == len(expected), f"{prefix}: extra output items"
    dut._log.info(f"{prefix}: {len(expected)} items compared")


if cocotb is not None:
    @cocotb.test()
    async def feeder_random(dut):
        await harness.run_units(dut, _unit)


# ------------------------------------------------------------------ pytest side
def _configs():
    from rtl.update_engine import UpdateEngine
    upd = UpdateEngine()
    upd._MustUse__silence = True        # built for its input layout only
    lay = upd.in_layout
    return [  # the system's FC input (10 classes, 4x4x12), one class and two inputs, a small odd one
        dict(block=dict(n_classes=10, in_shape=(4, 4, 12), in_layout=lay), images=6),
        dict(block=dict(n_classes=1, in_shape=(1, 1, 2), in_layout=lay), images=6),
        dict(block=dict(n_classes=3, in_shape=(2, 3, 2), in_layout=lay), images=9),
    ]


def test_feeder():
    from rtl.feeder import Feeder
    cfgs = _configs()
    units = {f"u{k}": Feeder(**c["block"]) for k, c in enumerate(cfgs)}
    params = [dict(images=c["images"], block=dict(c["block"], in_layout=None), idle=0.4, bp=0.4) for c in cfgs]
    harness.run_block(harness.Bundle(units), "feeder_tb", "tb.test_feeder", {"configs": params, "seed": 14})
