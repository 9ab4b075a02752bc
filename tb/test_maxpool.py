"""Streaming max-pool (rtl/maxpool.py) against golden.datapath.maxpool."""
import numpy as np

from tb import post_util

# ------------------------------------------------------------------ cocotb side
try:
    import cocotb
except ImportError:  # collected by pytest without cocotb's simulator context
    cocotb = None


def _images(blk, nrng, kinds):
    """Feature maps (N, H, W, C) of the requested kinds."""
    shape = (blk.h, blk.w, blk.c)
    vmax = (1 << blk.bits) - 1
    hk, wk = blk.ho * blk.p, blk.wo * blk.p
    out = []
    for k in kinds:
        if k == "zeros":
            x = np.zeros(shape, np.int64)
        elif k == "max":
            x = np.full(shape, vmax, np.int64)
        elif k == "random":
            x = nrng.integers(0, vmax + 1, shape)
        elif k == "ties":                       # few distinct values: repeated maxima in a window
            x = nrng.choice([0, 1, vmax - 1, vmax], size=shape)
        elif k == "ramp_up":                    # window max always at its last element
            x = (np.arange(np.prod(shape)).reshape(shape) * 7919) % (vmax + 1)
            x = np.sort(x.ravel()).reshape(shape)
        elif k == "ramp_down":                  # window max always at its first element
            x = np.sort(nrng.integers(0, vmax + 1, shape).ravel())[::-1].reshape(shape)
        elif k == "dropped":                    # large values only in the rows/columns that are dropped
            x = nrng.integers(0, 4, shape)
            x[hk:, :, :] = vmax
            x[:, wk:, :] = vmax
        else:
            raise ValueError(k)
        out.append(x)
    return np.stack(out)


async def _unit(dut, prefix, p, seed):
    from golden.datapath import maxpool
    from rtl.maxpool import MaxPool
    blk = MaxPool(**p["block"])
    nrng = np.random.default_rng(seed)
    src, sink = post_util.streams(dut, prefix, blk, seed)
    cocotb.start_soon(sink.run())
    total, n_in = 0, 0
    for ph, (idle, bp) in enumerate(post_util.phases(p)):
        post_util.set_phase(src, sink, idle, bp)
        x = _images(blk, nrng, p["kinds"][ph])
        exp = maxpool(x, blk.p)                                  # (N, Ho, Wo, C)
        n_out = exp[0].size
        expected = [{"x": int(v), "last": int(j % n_out == n_out - 1)} for j, v in enumerate(exp.ravel())]
        n0 = len(sink.items)
        t0 = post_util.now_cycles()
        await src.send([{"x": int(v)} for v in x.ravel()])       # NHWC raster order, maps back to back
        got = await post_util.collect(sink, n0, len(expected))
        cyc = post_util.now_cycles() - t0
        post_util.check(got, expected, f"{prefix} phase {ph}")
        if ph == 0:   # one input per cycle; the last pooled value one cycle after the last input
            assert cyc <= x.size + 1, f"{prefix}: {cyc} cycles for {x.size} inputs"
        total += len(expected)
        n_in += x.size
        dut._log.info(f"{prefix} {p['block']} phase {ph} (idle {idle}, bp {bp}): {len(x)} maps, "
                      f"{x.size} inputs, {len(expected)} pooled values, {cyc:.0f} cycles")
    await post_util.idle_cycles(dut.clk, 5)
    assert len(sink.items) == total, f"{prefix}: extra output items"
    dut._log.info(f"{prefix}: {total} pooled values compared ({n_in} inputs)")


if cocotb is not None:
    @cocotb.test()
    async def maxpool_random(dut):
        await post_util.run_units(dut, _unit)


# ------------------------------------------------------------------ pytest side
# One build (tb/post_util.Bundle), one unit per configuration.
ALL = ["random", "zeros", "max", "ties", "ramp_up", "ramp_down", "dropped"]
CONFIGS = [
    # S2 of Yao 2020: 26x26x8 -> 8x8x8 (last 2 rows/columns dropped)
    dict(block=dict(h=26, w=26, c=8, p=3), idle=0.3, bp=0.4, kinds=[ALL, ["random", "ties", "dropped"]]),
    # S4: 8x8x12 -> 4x4x12
    dict(block=dict(h=8, w=8, c=12, p=2), idle=0.5, bp=0.5, kinds=[ALL + ["random"] * 4, ALL + ["random"] * 4]),
    # odd size, one channel (read-modify-write of the same line-buffer entry on consecutive cycles)
    dict(block=dict(h=11, w=7, c=1, p=3), idle=0.2, bp=0.6, kinds=[ALL * 3 + ["random"] * 10, ALL * 3]),
]


def test_maxpool():
    from rtl.maxpool import MaxPool
    post_util.run_configs(MaxPool, CONFIGS, "maxpool_tb", "tb.test_maxpool", seed=777)


def test_maxpool_verilog():
    """The default instances (S2, S4) alone convert and pass Verilator's lint with the harness waivers."""
    post_util.lint_default_instances("rtl.maxpool")
