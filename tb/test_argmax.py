"""Argmax over K logits (rtl/argmax.py) against golden.datapath.argmax."""
import numpy as np

from tb import post_util

# ------------------------------------------------------------------ cocotb side
try:
    import cocotb
except ImportError:  # collected by pytest without cocotb's simulator context
    cocotb = None


def logit_vectors(k, bits, nrng, n_random):
    """(N, K) signed logits: edge cases (ties, extremes, all equal) then random ones."""
    lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    v = [np.zeros(k), np.full(k, lo), np.full(k, hi), np.full(k, -1)]
    for j in range(k):                       # a unique maximum at every position, and at extremes
        a = nrng.integers(lo, hi, k)
        a[j] = hi
        v.append(a)
        b = np.full(k, lo)
        b[j] = lo + 1
        v.append(b)
    if k > 1:
        v.append(np.arange(k) + lo)          # increasing: the last wins
        v.append(hi - np.arange(k))          # decreasing: the first wins
        for _ in range(3 * k):               # ties: the maximum repeated at 2..k random positions
            a = nrng.integers(lo, hi, k)
            pos = nrng.choice(k, size=nrng.integers(2, k + 1), replace=False)
            a[pos] = nrng.integers(a.max(), hi + 1)
            v.append(a)
    v += list(nrng.integers(lo, hi + 1, (n_random, k)))                       # full range
    scale = max(1, (1 << (bits - 1)) // 64)
    v += list(np.clip(np.round(nrng.normal(0, 3, (n_random, k)) * scale), lo, hi))  # realistic, close calls
    return np.array(v, dtype=np.int64)


async def _unit(dut, prefix, p, seed):
    from golden.datapath import argmax
    from rtl.argmax import Argmax
    blk = Argmax(**p["block"])
    nrng = np.random.default_rng(seed)
    src, sink = post_util.streams(dut, prefix, blk, seed)
    cocotb.start_soon(sink.run())
    total = 0
    for ph, (idle, bp) in enumerate(post_util.phases(p)):
        post_util.set_phase(src, sink, idle, bp)
        z = logit_vectors(blk.k, blk.logit_bits, nrng, p["random"])
        idx = argmax(z)
        expected = [{"index": int(i), "max": int(row[i])} for i, row in zip(idx, z)]
        n0 = len(sink.items)
        t0 = post_util.now_cycles()
        await src.send([{"z": int(v)} for v in z.ravel()])
        got = await post_util.collect(sink, n0, len(expected))
        cyc = post_util.now_cycles() - t0
        post_util.check(got, expected, f"{prefix} phase {ph}")
        if ph == 0:   # one logit per cycle, result one cycle after the last logit
            assert cyc <= z.size + 1, f"{prefix}: {cyc} cycles for {z.size} logits"
        total += len(expected)
        dut._log.info(f"{prefix} {p['block']} phase {ph} (idle {idle}, bp {bp}): {len(z)} vectors, "
                      f"{z.size} logits, {cyc:.0f} cycles")
    await post_util.idle_cycles(dut.clk, 5)
    assert len(sink.items) == total, f"{prefix}: extra output items"
    dut._log.info(f"{prefix}: {total} argmax results compared")


if cocotb is not None:
    @cocotb.test()
    async def argmax_random(dut):
        await post_util.run_units(dut, _unit)


# ------------------------------------------------------------------ pytest side
# One build (tb/post_util.Bundle), one unit per configuration: the FC default (K=10, s21),
# narrow logits with many ties, and the degenerate K=1.
CONFIGS = [
    dict(block=dict(k=10, logit_bits=21), idle=0.3, bp=0.5, random=300),
    dict(block=dict(k=7, logit_bits=4), idle=0.5, bp=0.3, random=300),
    dict(block=dict(k=1, logit_bits=8), idle=0.4, bp=0.6, random=100),
]


def test_argmax():
    from rtl.argmax import Argmax
    post_util.run_configs(Argmax, CONFIGS, "argmax_tb", "tb.test_argmax", seed=99)


def test_argmax_verilog():
    """The default instance alone converts and passes Verilator's lint with the harness waivers."""
    post_util.lint_default_instances("rtl.argmax")
