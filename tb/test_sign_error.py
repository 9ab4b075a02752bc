"""Sign-WH error unit (rtl/sign_error.py) against golden.update.sign_error: per vector a `load`,
then the K errors read off `e` in class order, one per `next`.

Units: the system's (K = 10, s24 logits) and a small one (K = 3, s6). Vectors: random at two
scales (around 0 and full range), all zero (A = 0 counts as -1), all -1, all negative extremes,
all positive, one positive class; the label on every class in turn, random, and >= K (no class
marked). Random idle cycles before a load and between the `next` pulses (the consumer's pace), the
ports changed to garbage right after the load (they must have been sampled), a `next` asserted
with some loads (the load must win).

Mutations seen caught: `>= 0` for `> 0` (K=3, the all-zero vector, label 0: e [0, 1, 1], golden
[-1, 0, 0]); `next` winning over `load` (K=3, vector 3 loaded with next high: e [-1, -1, 1], golden
[0, 1, 1]); the shift register shifted the wrong way (K=3, the all-zero vector: e [-1, -1, -1],
golden [-1, 0, 0]).
"""
import random

import numpy as np

from tb import harness

try:
    import cocotb
except ImportError:
    cocotb = None


def _vectors(k, lb, nrng, rounds):
    lo, hi = -(1 << (lb - 1)), (1 << (lb - 1)) - 1
    v = [np.zeros(k, int), np.full(k, -1), np.full(k, lo), np.full(k, 1), np.full(k, hi)]
    for j in range(k):                      # one positive class, the others 0 / negative
        z = np.where(nrng.random(k) < 0.5, 0, -nrng.integers(1, hi, k))
        z[j] = nrng.integers(1, 4)
        v.append(z)
    for _ in range(rounds):
        v.append(nrng.integers(-3, 4, k))
        v.append(nrng.integers(lo, hi + 1, k))
    return v


async def _unit(dut, prefix, p, seed):
    from cocotb.triggers import ReadOnly, RisingEdge
    from golden.update import sign_error
    k, lb = p["k"], p["lb"]
    u = harness.Port(dut, prefix)
    rng, nrng = random.Random(seed), np.random.default_rng(seed)
    vecs = _vectors(k, lb, nrng, p["rounds"])
    # every class in turn, some random, some none (>= K)
    labels = [rng.choice([i % k, i % k, rng.randrange(k), k + rng.randrange(3)]) for i in range(len(vecs))]
    u.load.value = u.next.value = 0
    n = 0
    for z, label in zip(vecs, labels):
        exp = [int(x) for x in (sign_error(z[None], [label])[0] if label < k else (z > 0).astype(int))]
        for _ in range(rng.choice([0, 0, 1, 3])):
            await RisingEdge(dut.clk)
        u.logits.value = sum((int(x) & ((1 << lb) - 1)) << (o * lb) for o, x in enumerate(z))
        u.label.value = label
        u.load.value, u.next.value = 1, int(rng.random() < 0.3)
        await RisingEdge(dut.clk)
        u.load.value = u.next.value = 0
        u.logits.value, u.label.value = rng.getrandbits(k * lb), rng.randrange(256)   # garbage after the load
        got = []
        for _ in range(k):
            await ReadOnly()
            e = int(u.e.value)
            got.append(e - 4 if e >> 1 else e)
            await RisingEdge(dut.clk)
            for _ in range(rng.choice([0, 0, 1, 4])):
                await RisingEdge(dut.clk)
            u.next.value = 1
            await RisingEdge(dut.clk)
            u.next.value = 0
        assert got == exp, f"{prefix} vector {n} {z.tolist()} label {label}: e {got}, golden {exp}"
        n += 1
    dut._log.info(f"{prefix}: {n} vectors, {n * k} errors equal golden")


if cocotb is not None:
    @cocotb.test()
    async def sign_error_random(dut):
        await harness.run_units(dut, _unit)


def test_sign_error():
    from rtl.sign_error import SignError
    cfgs = [dict(k=10, lb=24, rounds=60), dict(k=3, lb=6, rounds=80)]
    units = {f"u{i}": SignError(c["k"], c["lb"]) for i, c in enumerate(cfgs)}
    harness.run_block(harness.Bundle(units), "sign_error_tb", "tb.test_sign_error", {"configs": cfgs, "seed": 4})


def test_sign_error_verilog():
    harness.lint_default_instances("rtl.sign_error")
