"""Error codes of delta vectors (rtl/error_code.py) against golden.transposed_read.error_code: edge
cases (all zero, the extreme values +-2**(d_bits-1), every exact power of two of either sign, a
single non-zero, negative rounding ties at every shift, maxima that round up into the clip) and
random vectors at every bit length, full rate then with idle gaps and back-pressure.

Mutation seen caught: no rounding half (half3 = 0): "u2 phase 0: item 41: got err 23, expected 24"."""
import random

import numpy as np

from tb import harness

try:
    import cocotb
except ImportError:
    cocotb = None


def vectors(blk, rng, nrng, n_random):
    """Delta vectors (n,) int64: edge cases first, then random ones of random bit length."""
    n, D, B = blk.n, blk.d_bits, blk.err_bits
    lo, hi = -(1 << (D - 1)), (1 << (D - 1)) - 1
    out = [np.zeros(n, np.int64), np.full(n, hi), np.full(n, lo), nrng.choice([lo, hi], n)]
    for b in range(D - 1):                                   # exact powers of two, alone and with noise
        for sign in (1, -1):
            v = nrng.integers(-(1 << b) + 1, 1 << b, n) if b else np.zeros(n, np.int64)
            v[rng.randrange(n)] = sign * (1 << b)
            out.append(v)
            out.append(np.full(n, sign * (1 << b)))
    for _ in range(2 * n):                                   # a single non-zero
        v = np.zeros(n, np.int64)
        v[rng.randrange(n)] = rng.randint(lo, hi)
        out.append(v)
    for s in range(1, blk.max_shift + 1):                    # ties: -(odd) * 2**(s-1) with the shift s
        top = 1 << (B + s - 1)
        v = -(2 * nrng.integers(0, top >> s, n) + 1) * (1 << (s - 1))
        sets = [x for x in (top, -top, 2 * top - 1, -(2 * top - 1)) if lo <= x <= hi]   # set s; +-(2*top-1) clip
        v[rng.randrange(n)] = rng.choice(sets)
        out.append(v)
    for _ in range(n_random):
        b = rng.randint(0, D - 1)
        out.append(nrng.integers(-(1 << b), (1 << b), n) if b else nrng.integers(-1, 2, n))
    return out


async def _unit(dut, prefix, p, seed):
    from golden.transposed_read import error_code
    from rtl.error_code import ErrorCode
    blk = ErrorCode(**p["block"])
    rng, nrng = random.Random(seed), np.random.default_rng(seed)
    src, sink = harness.streams(dut, prefix, blk, seed)
    cocotb.start_soon(sink.run())
    total, shifts = 0, set()
    for ph, (idle, bp) in enumerate(harness.phases(p)):
        harness.set_phase(src, sink, idle, bp)
        vecs = vectors(blk, rng, nrng, p["random"])
        err, sh = error_code(np.stack(vecs), blk.err_bits)
        shifts |= set(int(s) for s in sh)
        expected = [harness.unpack(blk.out_layout, harness.pack(
            blk.out_layout, err=[int(e) for e in err[i]], shift=int(sh[i]), tag=i & 0xFF)) for i in range(len(vecs))]
        n0 = len(sink.items)
        t0 = harness.now_cycles()
        await src.send([{"d": [int(x) for x in v], "tag": i & 0xFF} for i, v in enumerate(vecs)])
        got = await harness.collect(sink, n0, len(expected))
        cyc = harness.now_cycles() - t0
        harness.check(got, expected, f"{prefix} phase {ph}")
        if ph == 0:       # full rate: one vector per cycle after the 5-stage latency
            assert cyc <= len(vecs) + 8, f"{prefix}: {cyc} cycles for {len(vecs)} vectors"
        total += len(expected)
    await harness.idle_cycles(dut.clk, 10)
    assert len(sink.items) == total, f"{prefix}: extra output items"
    assert shifts == set(range(blk.max_shift + 1)), f"{prefix}: shifts seen {sorted(shifts)}"
    dut._log.info(f"{prefix} {p['block']}: {total} vectors compared")


if cocotb is not None:
    @cocotb.test()
    async def error_code_random(dut):
        await harness.run_units(dut, _unit)


# li2018's output deltas (n = 10, s17 Q1.15), a wide hidden-layer-like delta, a narrow one (shift up to 6)
CONFIGS = [
    dict(block=dict(n=10, d_bits=17), idle=0.4, bp=0.5, random=200),
    dict(block=dict(n=54, d_bits=27), idle=0.5, bp=0.3, random=60),
    dict(block=dict(n=1, d_bits=10, err_bits=4), idle=0.3, bp=0.6, random=100),
]


def test_error_code():
    from rtl.error_code import ErrorCode
    harness.run_configs(ErrorCode, CONFIGS, "error_code_tb", "tb.test_error_code", seed=15)


def test_error_code_verilog():
    harness.lint_default_instances("rtl.error_code")
