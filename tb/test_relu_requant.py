"""Bounded ReLU + requantisation (rtl/relu_requant.py) against golden.datapath.relu_requant."""
import random

import numpy as np

from tb import post_util

# ------------------------------------------------------------------ cocotb side
try:
    import cocotb
except ImportError:  # collected by pytest without cocotb's simulator context
    cocotb = None


def _groups(blk, rng, nrng, n_random):
    """[(M, sh, [A...])]: edge cases first, then random configurations."""
    lo, hi = -(1 << (blk.acc_bits - 1)), (1 << (blk.acc_bits - 1)) - 1
    m_max, sh_max = (1 << blk.m_bits) - 1, (1 << blk.sh_bits) - 1
    fixed = [0, 1, -1, 2, lo, hi, lo + 1, hi - 1, -(1 << (blk.acc_bits - 2))]

    def boundaries(m, sh):
        """Accumulators around the points where the output steps (ties, saturation at 255/256)."""
        out = []
        if m == 0:
            return out
        for j in (1, 2, 3, 128, 255, 256):
            a0 = ((j << sh) - (1 << (sh - 1))) // m     # (a*m + 2**(sh-1)) >> sh == j from a0+1 on
            out += [a for a in range(a0 - 1, a0 + 3) if lo <= a <= hi]
        return out

    groups = []
    ms = [0, 1, 2, 3, m_max, m_max - 1, rng.randint(1, m_max)]
    shs = sorted({1, 2, 3, min(16, sh_max), min(48, sh_max), sh_max, rng.randint(1, sh_max)})
    for m in ms:
        for sh in shs:
            a = fixed + boundaries(m, sh)
            if m & 1:                                   # exact ties: a*m = odd * 2**(sh-1)
                a += [x for x in ((1 << (sh - 1)) * k for k in (1, 3, 5)) if x <= hi]
            groups.append((m, sh, a))
    for _ in range(n_random):
        m = rng.randint(1, m_max)
        sh = rng.randint(1, sh_max)
        if rng.random() < 0.7:  # realistic: outputs mostly in 0..300
            amax = max(2, min(hi, (300 << sh) // m))
            a = nrng.integers(-amax // 4, amax, 64)
        else:                   # whole accumulator range
            a = nrng.integers(lo, hi + 1, 64)
        groups.append((m, sh, [int(x) for x in a]))
    return groups


async def _unit(dut, prefix, p, seed):
    from golden.datapath import relu_requant
    from rtl.relu_requant import ReluRequant
    blk = ReluRequant(**p["block"])
    rng = random.Random(seed)
    nrng = np.random.default_rng(seed)
    u = post_util.Port(dut, prefix)
    src, sink = post_util.streams(dut, prefix, blk, seed)
    cocotb.start_soon(sink.run())

    # latency: one item into the empty pipeline
    u.m.value, u.sh.value = 1, 1
    await src.send([{"acc": 6}])
    lat = 1 + await post_util.cycles_until(dut.clk, lambda: bool(u.o__valid.value))
    assert lat == 2, f"{prefix}: latency {lat}"
    post_util.check(await post_util.collect(sink, 0, 1), [{"x": int(relu_requant(6, 1, 1))}], f"{prefix} latency")

    total = 1
    for ph, (idle, bp) in enumerate(post_util.phases(p)):
        post_util.set_phase(src, sink, idle, bp)
        groups = _groups(blk, rng, nrng, p["random_groups"])
        if ph == 0 and p.get("exhaustive"):   # every (A, M, sh) of a small block, sh = 1..max
            lo = -(1 << (blk.acc_bits - 1))
            groups += [(m, sh, list(range(lo, -lo))) for m in range(1 << blk.m_bits)
                       for sh in range(1, 1 << blk.sh_bits)]
        n0 = len(sink.items)
        expected = []
        t0 = post_util.now_cycles()
        for m, sh, a in groups:
            u.m.value, u.sh.value = m, sh          # sampled with each accepted item
            await src.send([{"acc": x} for x in a])
            expected += [{"x": int(v)} for v in relu_requant(np.array(a), m, sh)]
        # scramble the configuration after the last item: must not affect the items in flight
        u.m.value, u.sh.value = 12345 & ((1 << blk.m_bits) - 1), 1
        got = await post_util.collect(sink, n0, len(expected))
        cyc = post_util.now_cycles() - t0
        post_util.check(got, expected, f"{prefix} phase {ph}")
        if ph == 0:   # one item per cycle (the source keeps valid high across groups)
            assert cyc <= len(expected) + 2, f"{prefix}: {cyc} cycles for {len(expected)} items"
        total += len(expected)
        dut._log.info(f"{prefix} {p['block']} phase {ph} (idle {idle}, bp {bp}): "
                      f"{len(expected)} vectors in {cyc:.0f} cycles")
    await post_util.idle_cycles(dut.clk, 5)
    assert len(sink.items) == total, f"{prefix}: extra output items"
    dut._log.info(f"{prefix}: {total} vectors compared")


if cocotb is not None:
    @cocotb.test()
    async def relu_requant_random(dut):
        await post_util.run_units(dut, _unit)


# ------------------------------------------------------------------ pytest side
# One build (tb/post_util.Bundle) with one unit per configuration: the Yao default (FC accumulator
# s21, u16 M, sh up to 63) and C1's s17 with random and edge-case vectors, and a small block
# checked exhaustively (every A, M, sh) at full rate.
CONFIGS = [
    dict(block=dict(acc_bits=21, m_bits=16, sh_bits=6), idle=0.3, bp=0.4, random_groups=150),
    dict(block=dict(acc_bits=17, m_bits=16, sh_bits=6), idle=0.5, bp=0.2, random_groups=100),
    dict(block=dict(acc_bits=8, m_bits=5, sh_bits=3), idle=0.2, bp=0.6, random_groups=30, exhaustive=True),
]


def test_relu_requant():
    from rtl.relu_requant import ReluRequant
    post_util.run_configs(ReluRequant, CONFIGS, "relu_requant_tb", "tb.test_relu_requant", seed=4321)


def test_relu_requant_verilog():
    """The default instance alone converts and passes Verilator's lint with the harness waivers."""
    post_util.lint_default_instances("rtl.relu_requant")
