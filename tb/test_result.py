"""Result stage (rtl/result.py): logit vectors in, results (class, logits, p, delta) out, against
golden.datapath.argmax, .softmax_fixed and .delta; the deltas on `delta` / `delta_load` (for the
training feeder) in class order and one `done` per vector.

Units: the system's (K = 10, s24 logits, golden's softmax M and shift from the default weights), a
small one (K = 3, s10, random M and shift) and the system's with error="sign" (the deltas are
golden.update.sign_error's, rtl/sign_error.py; p and cls the softmax's). Vectors: all zero, all
equal (every class tied), tied maxima at random positions (argmax: the lowest index), one-hot extremes, decreasing,
increasing, random at a realistic scale; labels random. Random idle on the input, random
back-pressure on `result`, `feed_busy` toggled at random (a run must wait for it).

The label is sampled with the vector's transfer: right after it the port changes to another class.

Mutations seen caught: the label read by the softmax from the `label` port instead of the register
taken with the logits (the deltas of the label given after the transfer); the result registers
enabled on the class one-hot rotated once too far (`sm_oh` loaded with 2 instead of 1 at the run's
start) fails at the first vector (its deltas one class off). The sign unit (u2): the sign-error
unit's label wired from the `label` port instead of the held label (item 1, all logits positive:
the label's 0 at class 5, golden's at class 7).
"""
import random

import numpy as np

from tb import harness

try:
    import cocotb
except ImportError:  # collected by pytest without cocotb's simulator context
    cocotb = None


def _decode(layout, v):
    """A result payload (int) as {field: int or [int...]}, signed fields sign-extended."""
    from amaranth.hdl import Shape
    from amaranth.lib import data
    out = {}
    for name, f in layout:
        x = (int(v) >> f.offset) & ((1 << f.width) - 1)
        if isinstance(f.shape, data.ArrayLayout):
            ew, es = Shape.cast(f.shape.elem_shape), Shape.cast(f.shape.elem_shape).signed
            els = [(x >> (i * ew.width)) & ((1 << ew.width) - 1) for i in range(f.shape.length)]
            out[name] = [e - (1 << ew.width) if es and e >> (ew.width - 1) else e for e in els]
        else:
            out[name] = x
    return out


def _vectors(k, lb, nrng, n_random, scale):
    lo, hi = -(1 << (lb - 1)), (1 << (lb - 1)) - 1
    v = [np.zeros(k, int), np.full(k, hi), np.full(k, lo), hi - np.arange(k), lo + np.arange(k)]
    for j in range(k):                          # one-hot extremes
        z = np.full(k, lo)
        z[j] = hi
        v.append(z)
    for _ in range(2 * k):                      # tied maxima
        z = nrng.integers(lo // 2, hi // 2, k)
        z[nrng.choice(k, size=nrng.integers(2, k + 1), replace=False)] = z.max() + 1
        v.append(z)
    for _ in range(n_random):
        v.append(np.clip(np.round(nrng.normal(0, 3, k) / scale), lo, hi).astype(int))
    return v


async def _monitor(dut, u, k, seen):
    from cocotb.triggers import ReadOnly, RisingEdge
    while True:
        await ReadOnly()
        dl = int(u.delta_load.value)
        if dl:
            d = int(u.delta.value)
            seen["delta"].append((dl.bit_length() - 1, d - (1 << 17) if d >> 16 else d))
        seen["done"] += int(u.done.value)
        await RisingEdge(dut.clk)


async def _feed_busy(dut, u, rng):
    from cocotb.triggers import RisingEdge
    while True:
        u.feed_busy.value = int(rng.random() < 0.3)
        for _ in range(rng.randint(1, 40)):
            await RisingEdge(dut.clk)


async def _unit(dut, prefix, p, seed):
    from golden.datapath import argmax, delta, softmax_fixed
    from golden.update import sign_error
    from rtl.result import ResultStage
    blk = ResultStage(**p["block"])
    k, lb, (m, sh) = blk.n_classes, blk.logit_bits, (blk.softmax_m, blk.softmax_sh)
    rng, nrng = random.Random(seed), np.random.default_rng(seed)
    u = harness.Port(dut, prefix)
    src = harness.StreamSource(dut, f"{prefix}__i", dut.clk, idle=p["idle"], rng=random.Random(seed + 1))
    sink = harness.StreamSink(dut, f"{prefix}__result", dut.clk, backpressure=p["bp"], rng=random.Random(seed + 2))
    seen = {"delta": [], "done": 0}
    cocotb.start_soon(sink.run())
    cocotb.start_soon(_monitor(dut, u, k, seen))
    cocotb.start_soon(_feed_busy(dut, u, rng))
    vecs = _vectors(k, lb, nrng, p["random"], m / float(1 << sh) / 64)
    expected, exp_deltas = [], []
    for z in vecs:
        label = rng.randrange(k)
        pe = softmax_fixed(z[None], m, sh)
        de = sign_error(z[None], [label])[0] if blk.error == "sign" else delta(pe, [label])[0]
        expected.append({"cls": int(argmax(z)), "logits": [int(x) for x in z], "p": [int(x) for x in pe[0]],
                         "delta": [int(x) for x in de]})
        exp_deltas += [(o, int(de[o])) for o in range(k)]
        # the label is given with the vector and changes to another class right after its transfer
        # (as the controller's, where the next image may start before the softmax runs)
        u.label.value = label
        await src.send([sum((int(x) & ((1 << lb) - 1)) << (o * lb) for o, x in enumerate(z))])
        u.label.value = (label + rng.randrange(1, k)) % k if k > 1 else label
    await sink.wait_for(len(vecs))
    await harness.idle_cycles(dut.clk, 50)
    got = [_decode(blk.result_layout, x) for x in sink.items]
    harness.check(got, expected, f"{prefix} results")
    assert seen["delta"] == exp_deltas, f"{prefix}: deltas on delta/delta_load differ"
    assert seen["done"] == len(vecs), f"{prefix}: {seen['done']} done for {len(vecs)} vectors"
    dut._log.info(f"{prefix}: {len(vecs)} results and {len(exp_deltas)} deltas compared")


if cocotb is not None:
    @cocotb.test()
    async def result_random(dut):
        await harness.run_units(dut, _unit)


def test_result():
    from golden import weights
    from golden.datapath import softmax_params
    from rtl.result import ResultStage
    r = random.Random(3)
    sm = [int(x) for x in softmax_params(weights.load().q.logit_scale)]
    cfgs = [dict(block=dict(n_classes=10, logit_bits=24, softmax=sm),
                 idle=0.3, bp=0.5, random=40),
            dict(block=dict(n_classes=3, logit_bits=10, softmax=[r.randint(1, 255), r.randint(1, 15)]),
                 idle=0.5, bp=0.3, random=60),
            dict(block=dict(n_classes=10, logit_bits=24, softmax=sm, error="sign"), idle=0.3, bp=0.5, random=40)]
    units = {f"u{i}": ResultStage(**c["block"]) for i, c in enumerate(cfgs)}
    harness.run_block(harness.Bundle(units), "result_tb", "tb.test_result", {"configs": cfgs, "seed": 5})
