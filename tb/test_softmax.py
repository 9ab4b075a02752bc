"""Fixed-point softmax + delta + argmax (rtl/softmax.py; the argmax the system runs) against
golden.datapath.softmax_fixed, .delta, .argmax: the argmax of every vector, with ties (all equal,
tied maxima at random positions: the lowest index wins), increasing and decreasing vectors."""
import random

import numpy as np

from tb import harness

# ------------------------------------------------------------------ cocotb side
try:
    import cocotb
except ImportError:  # collected by pytest without cocotb's simulator context
    cocotb = None


def _realistic_mr(blk, rng):
    """(M, sh) from golden.datapath.softmax_params for a logit scale around 0.006, if it fits the ports."""
    from golden.datapath import softmax_params
    m, sh = softmax_params(rng.uniform(0.002, 0.02))
    if m < (1 << blk.m_bits) and sh < (1 << blk.sh_bits):
        return m, sh
    return rng.randint(1, (1 << blk.m_bits) - 1), rng.randint(1, (1 << blk.sh_bits) - 1)


def vectors(blk, rng, nrng, n_random):
    """[(z (K,), label, M, sh)]: edge cases, then random logits at a realistic scale."""
    k, lb = blk.k, blk.logit_bits
    lo, hi = -(1 << (lb - 1)), (1 << (lb - 1)) - 1
    m_max, sh_max = (1 << blk.m_bits) - 1, (1 << blk.sh_bits) - 1
    out = []

    def add(z, m=None, sh=None, label=None):
        mr = _realistic_mr(blk, rng)
        out.append((np.asarray(z, np.int64), rng.randrange(k) if label is None else label,
                    mr[0] if m is None else m, mr[1] if sh is None else sh))

    for v in (0, lo, hi, -1, rng.randint(lo, hi)):            # all equal: p = 32768/K rounded
        add(np.full(k, v))
    add(np.full(k, 5), m=0, sh=1)                             # M = 0: every t = 0
    for j in range(k):                                        # one-hot: huge gaps, max at every position
        z = np.full(k, lo)
        z[j] = hi
        add(z, m=m_max, sh=1, label=j)                        # max-width d, t saturates at 1023
        add(z, label=(j + 1) % k)
    z = nrng.integers(lo, 0, k)                               # all negative
    add(z)
    add(np.full(k, lo) + np.arange(k))                        # max width, small gaps (increasing: the last wins)
    add(hi - np.arange(k))                                    # decreasing: the first wins
    if k > 1:
        for _ in range(2 * k):                                # tied maxima: argmax lowest, equal p
            z = nrng.integers(lo // 2, hi // 2, k)
            pos = nrng.choice(k, size=nrng.integers(2, k + 1), replace=False)
            z[pos] = z.max() + 1
            add(z)
    for _ in range(8):                                        # extreme ports: sh = 1 / max, M max
        add(nrng.integers(lo, hi + 1, k), m=m_max, sh=rng.choice([1, sh_max]))
    for _ in range(6):                                        # around the table's end: t ~ 700..1023
        m, sh = rng.randint(1, m_max), rng.randint(1, sh_max)
        z = np.zeros(k, np.int64)
        for c in range(1, k):
            t = rng.randint(690, 1030)
            z[c] = -max(0, min(hi, ((t << sh) - (1 << (sh - 1))) // m + rng.randint(-1, 1)))
        add(z, m=m, sh=sh)
    for _ in range(n_random):                                 # realistic: float logits ~ N(0, 3) nats
        m, sh = _realistic_mr(blk, rng)
        scale = m / float(1 << sh) / 64                       # nats per logit unit
        z = np.clip(np.round(nrng.normal(0, rng.choice([1.0, 3.0, 6.0]), k) / scale), lo, hi)
        add(z, m=m, sh=sh)
    return out


async def _unit(dut, prefix, p, seed):
    from golden.datapath import argmax, delta, softmax_fixed
    from rtl.softmax import Softmax
    blk = Softmax(**p["block"])
    rng = random.Random(seed)
    nrng = np.random.default_rng(seed)
    u = harness.Port(dut, prefix)
    src, sink = harness.streams(dut, prefix, blk, seed)
    cocotb.start_soon(sink.run())
    k = blk.k

    total, lat, per_vec = 0, None, None
    for ph, (idle, bp) in enumerate(harness.phases(p)):
        harness.set_phase(src, sink, idle, bp)
        vecs = vectors(blk, rng, nrng, p["random"])
        n0 = len(sink.items)
        expected = []
        t0 = harness.now_cycles()
        for i, (z, label, m, sh) in enumerate(vecs):
            pe = softmax_fixed(z[None], m, sh)
            de = delta(pe, [label])[0]
            a = int(argmax(z))
            expected += [{"index": c, "p": int(pe[0, c]), "delta": int(de[c]), "argmax": a, "last": int(c == k - 1)}
                         for c in range(k)]
            u.m.value, u.sh.value = m, sh                    # sampled with class 0's transfer
            await src.send([{"z": int(z[c]), "label": label if c == 0 else rng.randrange(k)} for c in range(k)])
            if ph == 0 and i == 0:                           # latency: last logit -> first output
                lat = 1 + await harness.cycles_until(dut.clk, lambda: bool(u.o__valid.value))
            u.m.value, u.sh.value = rng.randrange(1 << blk.m_bits), rng.randrange(1 << blk.sh_bits)
        got = await harness.collect(sink, n0, len(expected))
        cyc = harness.now_cycles() - t0
        harness.check(got, expected, f"{prefix} phase {ph}")
        if ph == 0:
            per_vec = cyc / len(vecs)
            assert lat == k + 26, f"{prefix}: latency {lat}"
            assert cyc <= len(vecs) * (19 * k + 8) + 2, f"{prefix}: {cyc} cycles for {len(vecs)} vectors"
        total += len(expected)
        dut._log.info(f"{prefix} {p['block']} phase {ph} (idle {idle}, bp {bp}): {len(vecs)} vectors, "
                      f"{cyc:.0f} cycles")
    await harness.idle_cycles(dut.clk, 5)
    assert len(sink.items) == total, f"{prefix}: extra output items"
    # activity counter (golden/activity.py softmax_ops): one per class of every vector
    assert int(u.ops.value) == total, f"{prefix}: softmax ops {int(u.ops.value)}, expected {total}"
    dut._log.info(f"{prefix}: {total} (index, p, delta, argmax) outputs compared; latency {lat} cycles, "
                  f"{per_vec:.1f} cycles per vector at full rate")


if cocotb is not None:
    @cocotb.test()
    async def softmax_random(dut):
        await harness.run_units(dut, _unit)


# ------------------------------------------------------------------ pytest side
# One build (tb/harness.Bundle), one unit per configuration: the FC default (K=10, s21 logits,
# u16 M), K=16 (E reaches 2**19 exactly: width of the sum and the divider), and a narrow block.
CONFIGS = [
    dict(block=dict(k=10, logit_bits=21, m_bits=16, sh_bits=6), idle=0.3, bp=0.5, random=120),
    dict(block=dict(k=16, logit_bits=24, m_bits=16, sh_bits=6), idle=0.5, bp=0.3, random=40),
    dict(block=dict(k=3, logit_bits=10, m_bits=8, sh_bits=4), idle=0.4, bp=0.6, random=150),
]


def test_softmax():
    from rtl.softmax import Softmax
    harness.run_configs(Softmax, CONFIGS, "softmax_tb", "tb.test_softmax", seed=2020)


def test_softmax_verilog():
    """The default instance alone converts and passes Verilator's lint with the harness waivers."""
    harness.lint_default_instances("rtl.softmax")
