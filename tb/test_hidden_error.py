"""Hidden-layer error (rtl/hidden_error.py) against golden.transposed_read (the groups' BL sums
placed at their fan-in indices as layer_transposed does, hidden_error's T << shift) and the relu'
mask of golden.insitu.InsituTrainer.backward: li2018's layer O groups (the unit the trainer needs)
and overlapping random groups (inputs summed over up to 4 groups, inputs in no group); groups in
random order, garbage on the BLs beyond a group's fan-in, edge cases (extreme sums, shift 0 and
max, h at 0, 1, 254, 255), full rate then with idle gaps on both inputs and back-pressure.

Mutation seen caught: the mask without its h < 255 half (u0 phase 0, item 3 differs)."""
import random

import numpy as np

from tb import harness

try:
    import cocotb
except ImportError:
    cocotb = None


def images(blk, rng, nrng, n_random):
    """[(h (n_in,), shift, T (G, n_bl))]: edge cases first."""
    N, G, nb = blk.n_in, len(blk.groups), blk.n_bl
    lo, hi = -(1 << (blk.t_bits - 1)), (1 << (blk.t_bits - 1)) - 1
    out = []
    for k in range(6 + n_random):
        h = nrng.integers(0, 256, N)
        t = nrng.integers(lo, hi + 1, (G, nb))
        shift = rng.randint(0, blk.max_shift)
        if k == 0:
            t[:], shift, h[:] = hi, blk.max_shift, 128      # largest sums, largest shift
        elif k == 1:
            t[:], shift, h[:] = lo, blk.max_shift, 1
        elif k == 2:
            t[:], shift = 0, 0
        elif k == 3:
            h = nrng.choice([0, 1, 254, 255], N)            # the mask's edges
        elif k == 4:
            h[:] = 255                                      # every unit saturated: all zero out
        elif k == 5:
            shift, h[:] = 0, 7
        elif k % 3 == 0:
            t = nrng.integers(-40, 41, (G, nb))              # small sums (realistic T)
        out.append((h, shift, t))
    return out


def golden_delta(blk, h, shift, t):
    from golden.transposed_read import hidden_error
    acc = np.zeros((1, blk.n_in), np.int64)
    for k, g in enumerate(blk.groups):
        np.add.at(acc, (slice(None), list(g)), t[k][None, :len(g)])
    return hidden_error(acc, [shift])[0] * ((h > 0) & (h < 255))


async def _unit(dut, prefix, p, seed):
    from rtl.hidden_error import HiddenError
    blk = HiddenError(**p["block"])
    rng, nrng = random.Random(seed), np.random.default_rng(seed)
    img = harness.StreamSource(dut, f"{prefix}__img", dut.clk, blk.img_layout, rng=random.Random(seed + 2))
    tsrc = harness.StreamSource(dut, f"{prefix}__t", dut.clk, blk.t_layout, rng=random.Random(seed + 3))
    sink = harness.StreamSink(dut, f"{prefix}__o", dut.clk, blk.out_layout, rng=random.Random(seed + 4))
    cocotb.start_soon(sink.run())
    total = 0
    for ph, (idle, bp) in enumerate(harness.phases(p)):
        img.idle, tsrc.idle, sink.bp = idle, idle, bp
        ims = images(blk, rng, nrng, p["random"])
        expected = [harness.unpack(blk.out_layout, harness.pack(
            blk.out_layout, d=[int(x) for x in golden_delta(blk, *im)])) for im in ims]
        tcmds = []
        for _, _, t in ims:
            for k in nrng.permutation(len(blk.groups)):
                tcmds.append({"t": [int(x) for x in t[k]], "tag": int(k)})
        n0 = len(sink.items)
        task = cocotb.start_soon(tsrc.send(tcmds))
        await img.send([{"h": [int(x) for x in h], "shift": s} for h, s, _ in ims])
        await task
        got = await harness.collect(sink, n0, len(expected), timeout_cycles=100_000)
        harness.check(got, expected, f"{prefix} phase {ph}")
        total += len(expected)
    await harness.idle_cycles(dut.clk, 10)
    assert len(sink.items) == total, f"{prefix}: extra output items"
    dut._log.info(f"{prefix}: {total} images compared ({len(blk.groups)} groups, {blk.n_in} inputs)")


if cocotb is not None:
    @cocotb.test()
    async def hidden_error_random(dut):
        await harness.run_units(dut, _unit)


def _li2018_o_groups():
    from golden.crossbar import N_PE
    from golden.mapping import build_mapping
    from golden.networks import network
    net = network("li2018")
    return [list(g.inputs) for g in build_mapping(net.layers, net.placement, n_pe=N_PE).groups["O"]]


def _overlapping_groups(seed=5, n_in=20, n_groups=5):
    """Random groups over inputs 0..n_in-1 (2 of them in no group), an input in up to 4 groups, BLs in random order."""
    rng = np.random.default_rng(seed)
    return [[int(i) for i in rng.choice(n_in - 2, rng.integers(1, 13), replace=False)] for _ in range(n_groups)]


def configs():
    return [dict(block=dict(groups=_li2018_o_groups()), idle=0.4, bp=0.5, random=60),
            dict(block=dict(groups=_overlapping_groups(), n_in=20, max_shift=5), idle=0.5, bp=0.4, random=60)]


def test_hidden_error():
    from rtl.hidden_error import HiddenError
    harness.run_configs(HiddenError, configs(), "hidden_error_tb", "tb.test_hidden_error", seed=54)


def test_hidden_error_verilog():
    harness.lint_default_instances("rtl.hidden_error")
